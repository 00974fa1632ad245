"""kbuild's python example: a web app on the standard library, using a
package installed from a vendored wheel (wheels/, see requirements.txt)."""

import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kbuild_greeting import greeting


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/":
            body = "hello from python\n%s\n" % greeting()
        elif self.path == "/healthz":
            body = "ok\n"
        else:
            self.send_error(404)
            return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main():
    port = int(os.environ.get("PORT", "5000"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    print("listening on 0.0.0.0:%d" % port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
