// The test backend, written to a temporary file and run with python3 by TestBackend.
let backendScript = #"""
# Test backend for RouterTests: answers every request with JSON describing it,
# plus /big?n=N (N bytes, byte i = i % 251), /chunked, /close, /raw?kind=K, /status?code=N and /slow?ms=N, and /ws: a
# WebSocket that says "hello" at once, echoes each message, answers a close with
# a close, and appends each close code it gets to PORT_FILE.closes.
# Usage: python3 backend.py NAME PORT_FILE [IDLE_TIMEOUT_SECONDS]
import base64, hashlib, json, struct, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse, parse_qs

name, port_file = sys.argv[1], sys.argv[2]
idle_timeout = float(sys.argv[3]) if len(sys.argv) > 3 else None
connections = 0
lock = threading.Lock()
BLOCK = bytes(i % 251 for i in range(251 * 256))
# /raw?kind=K: bytes written as they are, then the close: a backend breaking HTTP/1.1, or an interim 103 first.
RAW = {
    "early-hints": b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "two-framings": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    "bare-lf": b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
    "bad-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\n",
    "not-http": b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
    "dribble": b"HTTP/1.1 200 OK\r\nX-Slow: 1\r\nContent-Length: 2\r\n\r\nok",
}


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

    def frame(self, opcode, payload):
        size = len(payload)
        head = bytes([0x80 | opcode])
        if size < 126:
            head += bytes([size])
        elif size < 65536:
            head += bytes([126]) + struct.pack(">H", size)
        else:
            head += bytes([127]) + struct.pack(">Q", size)
        self.wfile.write(head + payload)
        self.wfile.flush()

    def websocket(self):
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.frame(1, b"hello")
        self.close_connection = True
        self.connection.settimeout(None)
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            opcode, size = head[0] & 0x0F, head[1] & 0x7F
            if size == 126:
                size = struct.unpack(">H", self.rfile.read(2))[0]
            elif size == 127:
                size = struct.unpack(">Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(size)))
            if opcode == 8:
                with open(port_file + ".closes", "a") as f:
                    f.write("%d\n" % (struct.unpack(">H", data[:2])[0] if len(data) >= 2 else 0))
                self.frame(8, data[:2])
                return
            self.frame(opcode, data)

    def answer(self):
        with lock:
            with open(port_file + ".requests", "a") as f:
                f.write("%s %s\n" % (self.command, self.path))
        if urlparse(self.path).path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
            return self.websocket()
        count, digest = self.read_body()
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path == "/status":
            # A bodiless status (204, 304): a length header that must not be taken as a body.
            self.send_response(int(query["code"][0]))
            self.send_header("ETag", '"v1"')
            self.end_headers()
            return
        if url.path == "/raw":
            kind = query["kind"][0]
            # "dribble": a byte at a time, each in a segment of its own.
            for piece in ([bytes([b]) for b in RAW[kind]] if kind == "dribble" else [RAW[kind]]):
                self.wfile.write(piece)
                self.wfile.flush()
                if kind == "dribble":
                    time.sleep(0.002)
            self.close_connection = True
            return
        if url.path == "/close":
            # A body delimited by the close of the connection (no length, not chunked).
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"until the end " * 1000)
            self.close_connection = True
            return
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

    def do_HEAD(self):
        body = json.dumps({"backend": name}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os
os.rename(port_file + ".tmp", port_file)
server.serve_forever()
"""#
