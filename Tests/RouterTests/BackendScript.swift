// The test backend, written to a temporary file and run with python3 by TestBackend.
let backendScript = #"""
# Test backend for RouterTests: answers every request with JSON describing it,
# plus /big?n=N (N bytes, byte i = i % 251), /chunked and /slow?ms=N.
# Usage: python3 backend.py NAME PORT_FILE [IDLE_TIMEOUT_SECONDS]
import hashlib, json, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse, parse_qs

name, port_file = sys.argv[1], sys.argv[2]
idle_timeout = float(sys.argv[3]) if len(sys.argv) > 3 else None
connections = 0
lock = threading.Lock()
BLOCK = bytes(i % 251 for i in range(251 * 256))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = idle_timeout
    disable_nagle_algorithm = True

    def setup(self):
        global connections
        with lock:
            connections += 1
        super().setup()

    def log_message(self, *args):
        pass

    def read_body(self):
        digest, count = hashlib.sha256(), 0
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    break
                left = size
                while left:
                    data = self.rfile.read(min(left, 65536))
                    digest.update(data)
                    count += len(data)
                    left -= len(data)
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                data = self.rfile.read(min(left, 65536))
                digest.update(data)
                count += len(data)
                left -= len(data)
        return count, digest.hexdigest()

    def answer(self):
        count, digest = self.read_body()
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path == "/big":
            size = int(query["n"][0])
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            while size:
                part = BLOCK[: min(size, len(BLOCK))]
                self.wfile.write(part)
                size -= len(part)
            return
        if url.path == "/slow":
            time.sleep(int(query["ms"][0]) / 1000)
        with lock:
            seen = connections
        body = json.dumps({
            "backend": name, "method": self.command, "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "bodyBytes": count, "bodySHA256": digest, "connections": seen,
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if url.path == "/chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(body), 7):
                piece = body[start:start + 7]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = answer


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os
os.rename(port_file + ".tmp", port_file)
server.serve_forever()
"""#
