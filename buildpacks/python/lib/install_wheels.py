"""Install requirements.txt from vendored wheels: no pip, no network, stdlib only.

Used by the kbuild python buildpack's bin/compile:

    python3 -B install_wheels.py --requirements /app/requirements.txt \
        --find /app/wheels --find /app/vendor --prefix /app/.kbuild \
        [--cache /cache/wheels]

For each requirement (a distribution name, optionally `==VERSION`) one wheel
(PEP 427) is picked from the --find directories (top level only) and
installed under PREFIX:

    root of the wheel, *.data/purelib, *.data/platlib  -> PREFIX/python
    *.data/scripts, console_scripts entry points       -> PREFIX/bin
    *.data/data                                        -> PREFIX
    *.data/headers                                     -> PREFIX/include/DIST

Only wheels this interpreter can load are considered: pure ones
(`py3-none-any`, `py2.py3-none-any`, ...) and ones for this CPython, ABI and
platform (including abi3 and manylinux). Dependencies are not resolved:
requirements.txt must list everything (as `pip freeze` does); a wheel whose
declared dependencies are not installed gets a warning.

With --cache, the installed tree of each wheel is kept in CACHE/<wheel
file name>-<sha256 prefix>/ and reused by later builds; entries a build does
not use are removed. The result is the same with or without the cache.

Exit status 1, with a message naming the requirement and the places searched,
when a requirement cannot be met.
"""

import argparse
import base64
import csv
import hashlib
import io
import os
import platform
import re
import shutil
import sys
import sysconfig
import tempfile
import zipfile

INDENT = "       "
# Scripts run on the same stack they are built on: name its interpreter.
PYTHON = sys.executable or "/usr/bin/python3"


def say(msg=""):
    print(INDENT + msg, flush=True)


def fail(msg):
    # stdout, like every other line of the build log, so the order is kept.
    print(" !     " + msg.replace("\n", "\n !     "), flush=True)
    sys.exit(1)


def canonical_name(name):
    """PEP 503 normalisation: lower case, runs of -_. become one -."""
    return re.sub(r"[-_.]+", "-", name).lower()


# ---------------------------------------------------------------- versions

_RELEASE = re.compile(r"^v?(\d+(?:\.\d+)*)(.*)$")


def version_key(v):
    """A sort key for PEP 440 versions, good enough to pick the newest of a
    few vendored wheels and to compare `==` pins (1.0 == 1.0.0, 1.0RC1 ==
    1.0rc1). Pre-releases sort below their release."""
    v = v.strip().lower()
    m = _RELEASE.match(v)
    if not m:
        return ((), 0, v)
    release = [int(p) for p in m.group(1).split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    rest = m.group(2).lstrip(".-_")
    # final release (no suffix) above a pre-release, below a post-release
    if rest == "":
        rank = 1
    elif rest.startswith(("post", "rev", "r")) and not rest.startswith("rc"):
        rank = 2
    elif rest.startswith("dev"):
        rank = -1
    else:
        rank = 0
    return (tuple(release), rank, re.sub(r"[-_.]", "", rest))


# ------------------------------------------------------------ requirements

_REQ = re.compile(
    r"^(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*"
    r"(?:\[(?P<extras>[^\]]*)\])?\s*"
    r"(?:==\s*(?P<version>[A-Za-z0-9._+!-]+))?\s*$"
)


class Requirement:
    def __init__(self, name, version, line, lineno, source):
        self.name = name
        self.key = canonical_name(name)
        self.version = version
        self.line = line
        self.lineno = lineno
        self.source = source

    def where(self):
        return "%r (%s line %d)" % (self.line, self.source, self.lineno)


def read_requirements(path):
    reqs = []
    label = os.path.basename(path)
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        # Full-line comments, and ` #` comments after a requirement.
        if line.startswith("#"):
            continue
        line = re.split(r"\s+#", line, 1)[0].strip()
        if not line:
            continue
        if line.startswith("-"):
            say("Warning: ignoring option line %d of %s: %s (only `name` and "
                "`name==version` lines are read; wheels come from wheels/ or "
                "vendor/)" % (lineno, label, line))
            continue
        req, _, marker = line.partition(";")
        req = req.strip()
        if marker.strip():
            say("Warning: ignoring environment marker on line %d of %s: %s"
                % (lineno, label, marker.strip()))
        m = _REQ.match(req)
        if not m:
            fail("Unsupported requirement %r (%s line %d).\n"
                 "Only `name` and `name==version` are supported: pin the "
                 "version you vendored with ==." % (line, label, lineno))
        if m.group("extras"):
            say("Warning: extras [%s] of %s are ignored: list the packages "
                "they need in requirements.txt" % (m.group("extras"), m.group("name")))
        reqs.append(Requirement(m.group("name"), m.group("version"), line, lineno, label))

    seen = {}
    unique = []
    for r in reqs:
        if r.key in seen:
            prev = seen[r.key]
            if prev.version and r.version and version_key(prev.version) != version_key(r.version):
                fail("Conflicting requirements %s and %s" % (prev.where(), r.where()))
            if r.version and not prev.version:
                prev.version = r.version
            continue
        seen[r.key] = r
        unique.append(r)
    return unique


# ------------------------------------------------------------------ tags

def _glibc_version():
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):
        libc = ""
    m = re.match(r"glibc (\d+)\.(\d+)", libc)
    return (int(m.group(1)), int(m.group(2))) if m else None


class Interpreter:
    """What wheels this interpreter can load (a small subset of
    packaging.tags: CPython or any interpreter for pure wheels; linux,
    manylinux and musllinux platforms)."""

    def __init__(self):
        self.major, self.minor = sys.version_info[:2]
        self.impl = sys.implementation.name  # cpython, pypy, ...
        self.cp = self.impl == "cpython"
        self.arch = platform.machine()
        plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
        self.platforms = {plat}
        if sys.platform.startswith("linux"):
            self.platforms.add("linux_" + self.arch)
        self.glibc = _glibc_version() if sys.platform.startswith("linux") else None
        self.abi = None
        if self.cp:
            soabi = sysconfig.get_config_var("SOABI") or ""
            m = re.match(r"cpython-(\d+)(\w*)", soabi)
            self.abi = "cp" + (m.group(1) + m.group(2) if m else "%d%d" % (self.major, self.minor))

    def describe(self):
        bits = ["%s %d.%d" % (self.impl, self.major, self.minor)]
        if self.abi:
            bits.append("abi " + self.abi)
        bits.append(", ".join(sorted(self.platforms)))
        if self.glibc:
            bits.append("glibc %d.%d" % self.glibc)
        return "; ".join(bits)

    def python_ok(self, tag):
        m = re.match(r"^(py|cp)(\d)(\d*)$", tag)
        if not m:
            return False
        kind, major, minor = m.group(1), int(m.group(2)), m.group(3)
        if kind == "cp" and not self.cp:
            return False
        if major != self.major:
            return False
        return minor == "" or int(minor) <= self.minor

    def platform_ok(self, plat):
        if plat == "any" or plat in self.platforms:
            return True
        if self.glibc:
            legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
            m = re.match(r"^(manylinux1|manylinux2010|manylinux2014)_(\w+)$", plat)
            if m:
                return m.group(2) == self.arch and legacy[m.group(1)] <= self.glibc
            m = re.match(r"^manylinux_(\d+)_(\d+)_(\w+)$", plat)
            if m:
                return m.group(3) == self.arch and (int(m.group(1)), int(m.group(2))) <= self.glibc
        return False

    def tag_ok(self, py, abi, plat):
        if not self.python_ok(py) or not self.platform_ok(plat):
            return False
        if abi == "none":
            # py3-none-any, cp311-none-linux_x86_64, ... but a py3X tag with
            # a platform is still fine (pure code shipped per platform).
            return True
        if not self.cp:
            return False
        if abi == "abi3":
            return py.startswith("cp")
        return abi == self.abi and py == "cp%d%d" % (self.major, self.minor)

    def wheel_ok(self, w):
        return any(self.tag_ok(py, abi, plat)
                   for py in w.pythons for abi in w.abis for plat in w.plats)


# ---------------------------------------------------------------- wheels

class Wheel:
    """A wheel file, by its PEP 427 name
    {dist}-{version}(-{build})?-{python}-{abi}-{platform}.whl."""

    def __init__(self, path):
        self.path = path
        self.filename = os.path.basename(path)
        parts = self.filename[:-len(".whl")].split("-")
        if len(parts) not in (5, 6):
            raise ValueError("not a PEP 427 wheel file name")
        self.dist, self.version = parts[0], parts[1]
        self.build = parts[2] if len(parts) == 6 else ""
        py, abi, plat = parts[-3:]
        self.pythons, self.abis, self.plats = py.split("."), abi.split("."), plat.split(".")
        self.key = canonical_name(self.dist)
        self.pure = self.abis == ["none"] and self.plats == ["any"]

    def sort_key(self):
        m = re.match(r"^(\d*)(.*)$", self.build)
        build = (int(m.group(1)) if m.group(1) else -1, m.group(2))
        # newest version, then newest build, then platform wheels over pure
        # ones (as pip does), then the file name for a total order.
        return (version_key(self.version), build, not self.pure, self.filename)


def scan(find_dirs):
    wheels = []
    for d in find_dirs:
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            if not name.endswith(".whl"):
                continue
            path = os.path.join(d, name)
            if not os.path.isfile(path):
                continue
            try:
                wheels.append(Wheel(path))
            except ValueError:
                say("Warning: ignoring %s: not a PEP 427 wheel file name" % path)
    return wheels


def choose(req, wheels, interp, find_dirs):
    named = [w for w in wheels if w.key == req.key]
    if req.version:
        want = version_key(req.version)
        pinned = [w for w in named if version_key(w.version) == want]
    else:
        pinned = named
    usable = [w for w in pinned if interp.wheel_ok(w)]
    if usable:
        return max(usable, key=Wheel.sort_key)

    looked = ", ".join(d + "/*.whl" for d in find_dirs)
    lines = ["No wheel for requirement %s." % req.where(),
             "Looked in: %s" % looked]
    if pinned:
        lines.append("Found only wheels for another interpreter or platform: "
                     + ", ".join(w.filename for w in pinned))
        lines.append("This interpreter: " + interp.describe())
    elif named:
        lines.append("Found other versions only: "
                     + ", ".join(sorted(w.filename for w in named)))
    lines.append("There is no pip and no network: build the wheel (e.g. "
                 "`pip wheel --no-deps -w wheels/ '%s'`) and commit it." % req.line)
    fail("\n".join(lines))


# ------------------------------------------------------------- install

def _safe_path(name):
    """A zip member name as a relative path, or None if it would escape."""
    if name.startswith("/") or "\\" in name:
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return parts


def _record_hashes(zf, dist_info):
    rec = dist_info + "/RECORD"
    try:
        data = zf.read(rec).decode("utf-8")
    except KeyError:
        return None
    hashes = {}
    for row in csv.reader(io.StringIO(data)):
        if len(row) >= 2 and row[1]:
            algo, _, digest = row[1].partition("=")
            hashes[row[0]] = (algo, digest)
    return hashes


def _check_hash(name, data, expected, filename):
    algo, digest = expected
    if algo not in ("sha256", "sha384", "sha512"):
        fail("%s: RECORD uses hash %s for %s (need sha256 or stronger)" % (filename, algo, name))
    got = base64.urlsafe_b64encode(hashlib.new(algo, data).digest()).rstrip(b"=").decode()
    if got != digest.rstrip("="):
        fail("%s: %s does not match its RECORD hash: the wheel is corrupt" % (filename, name))


_ENTRY = re.compile(r"^([\w.]+)\s*(?::\s*([\w.]+))?\s*(?:\[.*\])?$")


def _console_scripts(text):
    scripts = []
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        if section in ("console_scripts", "gui_scripts") and "=" in line:
            name, _, target = line.partition("=")
            scripts.append((name.strip(), target.strip()))
    return scripts


def extract(wheel, dest):
    """Lay the wheel out under dest as an install prefix: python/, bin/, ..."""
    pylib = os.path.join(dest, "python")
    bindir = os.path.join(dest, "bin")
    with zipfile.ZipFile(wheel.path) as zf:
        names = zf.namelist()
        dist_infos = sorted({n.split("/", 1)[0] for n in names
                             if n.split("/", 1)[0].endswith(".dist-info")})
        dist_info = None
        for d in dist_infos:
            if canonical_name(d[:-len(".dist-info")].rsplit("-", 1)[0]) == wheel.key:
                dist_info = d
        if dist_info is None:
            fail("%s: no %s-*.dist-info directory inside" % (wheel.filename, wheel.dist))
        data_dir = dist_info[:-len(".dist-info")] + ".data"

        try:
            meta = zf.read(dist_info + "/WHEEL").decode("utf-8")
        except KeyError:
            fail("%s: no %s/WHEEL inside" % (wheel.filename, dist_info))
        wv = re.search(r"^Wheel-Version:\s*(\d+)", meta, re.M)
        if not wv or wv.group(1) != "1":
            fail("%s: unsupported Wheel-Version (need 1.x)" % wheel.filename)

        hashes = _record_hashes(zf, dist_info)
        if hashes is None:
            fail("%s: no %s/RECORD inside" % (wheel.filename, dist_info))

        for info in zf.infolist():
            name = info.filename
            if name.endswith("/"):
                continue
            parts = _safe_path(name)
            if parts is None:
                fail("%s: refusing unsafe path %r" % (wheel.filename, name))
            data = zf.read(info)
            if name in hashes:
                _check_hash(name, data, hashes[name], wheel.filename)
            elif not name.endswith((".dist-info/RECORD", ".dist-info/RECORD.jws",
                                    ".dist-info/RECORD.p7s")):
                fail("%s: %s is not listed in RECORD" % (wheel.filename, name))
            if parts[0] == data_dir:
                if len(parts) < 3:
                    continue
                kind, rest = parts[1], parts[2:]
                if kind in ("purelib", "platlib"):
                    target = os.path.join(pylib, *rest)
                elif kind == "scripts":
                    target = os.path.join(bindir, *rest)
                    first, nl, body = data.partition(b"\n")
                    if first.startswith(b"#!python"):
                        # PEP 427: #!python means "this interpreter"
                        first = first[len(b"#!pythonw" if first.startswith(b"#!pythonw") else b"#!python"):]
                        data = b"#!" + PYTHON.encode() + first + nl + body
                elif kind == "data":
                    target = os.path.join(dest, *rest)
                elif kind == "headers":
                    target = os.path.join(dest, "include", wheel.dist, *rest)
                else:
                    say("Warning: %s: ignoring %s (unknown .data kind %r)" % (wheel.filename, name, kind))
                    continue
                mode = 0o755 if kind == "scripts" else None
            else:
                target = os.path.join(pylib, *parts)
                mode = None
            if mode is None:
                mode = 0o755 if (info.external_attr >> 16) & 0o111 else 0o644
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as out:
                out.write(data)
            os.chmod(target, mode)

        with open(os.path.join(pylib, dist_info, "INSTALLER"), "w") as out:
            out.write("kbuild\n")

        try:
            eps = zf.read(dist_info + "/entry_points.txt").decode("utf-8")
        except KeyError:
            eps = ""
    for script, target in _console_scripts(eps):
        m = _ENTRY.match(target)
        if not m or not re.match(r"^[\w.-]+$", script):
            say("Warning: %s: ignoring entry point %s = %s" % (wheel.filename, script, target))
            continue
        module, attr = m.group(1), m.group(2)
        os.makedirs(bindir, exist_ok=True)
        path = os.path.join(bindir, script)
        if attr:
            call = "from %s import %s\nsys.exit(%s())\n" % (module, attr.split(".")[0], attr)
        else:
            call = "import runpy\nrunpy.run_module(%r, run_name='__main__')\n" % module
        with open(path, "w") as out:
            out.write("#!%s\n# entry point of %s, written by kbuild\nimport sys\n%s"
                      % (PYTHON, wheel.filename, call))
        os.chmod(path, 0o755)
    return dist_info


def _metadata_requires(pylib, dist_info):
    try:
        with open(os.path.join(pylib, dist_info, "METADATA"), encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return []
    text = text.split("\n\n", 1)[0]
    out = []
    for m in re.finditer(r"^Requires-Dist:\s*(.+)$", text, re.M):
        spec, _, marker = m.group(1).partition(";")
        if "extra" in marker:
            continue  # an optional extra's dependency
        nm = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
        if nm:
            out.append((canonical_name(nm.group(1)), m.group(1).strip(), marker.strip()))
    return out


def merge(src, dest, owners, owner):
    """Copy the tree src into dest, warning when a file is overwritten."""
    for root, dirs, files in os.walk(src):
        dirs.sort()
        rel = os.path.relpath(root, src)
        outdir = dest if rel == "." else os.path.join(dest, rel)
        os.makedirs(outdir, exist_ok=True)
        for f in sorted(files):
            relf = os.path.normpath(os.path.join(rel, f))
            if relf == ".complete":
                continue
            if relf in owners and owners[relf] != owner:
                say("Warning: %s from %s overwrites the one from %s" % (relf, owner, owners[relf]))
            owners[relf] = owner
            shutil.copy2(os.path.join(root, f), os.path.join(outdir, f))


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requirements", required=True)
    ap.add_argument("--find", action="append", default=[], help="a directory of .whl files")
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--cache", help="a directory to keep installed wheels in between builds")
    args = ap.parse_args()

    interp = Interpreter()
    reqs = read_requirements(args.requirements)
    if not reqs:
        say("requirements.txt lists nothing to install")
        return
    wheels = scan(args.find)
    chosen = [(r, choose(r, wheels, interp, args.find)) for r in reqs]

    cache = args.cache
    if cache:
        try:
            os.makedirs(cache, exist_ok=True)
        except OSError as e:
            say("Warning: not caching wheels: %s" % e)
            cache = None

    os.makedirs(os.path.join(args.prefix, "python"), exist_ok=True)
    owners = {}
    used = set()
    installed = {}
    scratch = tempfile.mkdtemp(prefix="kbuild-wheels-")
    try:
        for req, wheel in chosen:
            digest = sha256_file(wheel.path)
            entry = "%s-%s" % (wheel.filename, digest[:16])
            src = None
            hit = False
            if cache:
                src = os.path.join(cache, entry)
                if os.path.isfile(os.path.join(src, ".complete")):
                    hit = True
                else:
                    shutil.rmtree(src, ignore_errors=True)
                    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=cache)
                    try:
                        dist_info = extract(wheel, tmp)
                        with open(os.path.join(tmp, ".complete"), "w") as f:
                            f.write(dist_info + "\n")
                        os.rename(tmp, src)
                    except BaseException:
                        shutil.rmtree(tmp, ignore_errors=True)
                        raise
            else:
                src = os.path.join(scratch, entry)
                os.makedirs(src)
                extract(wheel, src)
            used.add(entry)
            merge(src, args.prefix, owners, wheel.filename)
            dist_info = [d for d in os.listdir(os.path.join(src, "python"))
                         if d.endswith(".dist-info")
                         and canonical_name(d[:-10].rsplit("-", 1)[0]) == wheel.key]
            installed[wheel.key] = (wheel, dist_info[0] if dist_info else None)
            rel = os.path.relpath(wheel.path, os.path.dirname(os.path.abspath(args.requirements)))
            say("%s %s from %s%s" % (wheel.dist.replace("_", "-"), wheel.version, rel,
                                     " (cached)" if hit else ""))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    if cache:
        for name in sorted(os.listdir(cache)):
            if name not in used:
                shutil.rmtree(os.path.join(cache, name), ignore_errors=True)

    pylib = os.path.join(args.prefix, "python")
    for key, (wheel, dist_info) in sorted(installed.items()):
        if not dist_info:
            continue
        for dep, spec, marker in _metadata_requires(pylib, dist_info):
            if dep not in installed:
                say("Warning: %s needs %s%s, which requirements.txt does not list"
                    % (wheel.dist, spec.split(";")[0].strip(), " (if %s)" % marker if marker else ""))
    say("Installed %d package%s into %s" % (len(installed), "" if len(installed) == 1 else "s", pylib))


if __name__ == "__main__":
    main()
