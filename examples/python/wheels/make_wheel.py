#!/usr/bin/env python3
"""Build wheels/kbuild_greeting-1.0.0-py3-none-any.whl from wheels/src/,
reproducibly, with the Python standard library only.

    python3 wheels/make_wheel.py           # (re)write the wheel
    python3 wheels/make_wheel.py --check   # exit 1 if the committed wheel differs

Same bytes on every run: members in sorted order, fixed timestamps
(1980-01-01, the zip epoch), fixed modes, and no compression (ZIP_STORED), so
the output does not depend on the zlib version either.
"""

import base64
import hashlib
import os
import sys
import zipfile

NAME = "kbuild_greeting"          # the import name and the wheel's {dist}
DIST = "kbuild-greeting"          # the project name (PEP 503: same package)
VERSION = "1.0.0"
TAG = "py3-none-any"

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "src")
OUT = os.path.join(HERE, "%s-%s-%s.whl" % (NAME, VERSION, TAG))
DIST_INFO = "%s-%s.dist-info" % (NAME, VERSION)

METADATA = """\
Metadata-Version: 2.1
Name: %s
Version: %s
Summary: A greeting, vendored as a wheel for kbuild's python buildpack example
License: MIT
Requires-Python: >=3.7

""" % (DIST, VERSION)

WHEEL = """\
Wheel-Version: 1.0
Generator: kbuild-example-make_wheel
Root-Is-Purelib: true
Tag: %s

""" % TAG

ENTRY_POINTS = """\
[console_scripts]
kbuild-greeting = kbuild_greeting:main
"""


def record_hash(data):
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def members():
    files = []
    for root, dirs, names in os.walk(os.path.join(SRC, NAME)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for n in sorted(names):
            if n.endswith((".pyc", ".pyo")):
                continue
            path = os.path.join(root, n)
            arc = os.path.relpath(path, SRC).replace(os.sep, "/")
            with open(path, "rb") as f:
                files.append((arc, f.read()))
    files.append((DIST_INFO + "/METADATA", METADATA.encode()))
    files.append((DIST_INFO + "/WHEEL", WHEEL.encode()))
    files.append((DIST_INFO + "/entry_points.txt", ENTRY_POINTS.encode()))
    # Package files first and the .dist-info at the end (PEP 427's advice).
    files.sort(key=lambda f: (f[0].startswith(DIST_INFO + "/"), f[0]))
    record = "".join("%s,%s,%d\n" % (arc, record_hash(data), len(data)) for arc, data in files)
    record += DIST_INFO + "/RECORD,,\n"
    files.append((DIST_INFO + "/RECORD", record.encode()))  # RECORD goes last
    return files


def build():
    import io
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for arc, data in members():
            info = zipfile.ZipInfo(arc, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (0o100644 << 16)
            info.create_system = 3  # unix, whatever the host
            zf.writestr(info, data)
    return buf.getvalue()


def main():
    data = build()
    if sys.argv[1:] == ["--check"]:
        try:
            with open(OUT, "rb") as f:
                same = f.read() == data
        except OSError:
            same = False
        print("%s: %s" % (os.path.basename(OUT), "up to date" if same else "DIFFERS, run make_wheel.py"))
        return 0 if same else 1
    with open(OUT, "wb") as f:
        f.write(data)
    print("wrote %s (%d bytes, sha256 %s)" % (OUT, len(data), hashlib.sha256(data).hexdigest()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
