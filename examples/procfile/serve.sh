#!/bin/sh
# kbuild's procfile example: the app brings its own server command.
# Serves www/ on $PORT with what any stack has: busybox httpd, else python3.
set -eu
port=${PORT:-5000}
root=$(cd "$(dirname "$0")" && pwd)/www

if command -v busybox >/dev/null 2>&1; then
  echo "serve.sh: busybox httpd serving $root on 0.0.0.0:$port"
  exec busybox httpd -f -v -p "0.0.0.0:$port" -h "$root"
fi
if command -v python3 >/dev/null 2>&1; then
  echo "serve.sh: python3 http.server serving $root on 0.0.0.0:$port"
  exec python3 -m http.server "$port" --bind 0.0.0.0 --directory "$root"
fi
echo "serve.sh: no busybox and no python3 in this stack" >&2
exit 1
