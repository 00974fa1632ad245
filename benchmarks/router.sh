#!/usr/bin/env bash
# Router throughput and tail latency against nginx proxying the same backend.
# One backend (nginx serving a small static file), two proxies in front of it
# (nginx with upstream keepalive, and kbuild's router-bench), and wrk run
# against each in turn, 3 rounds each; prints req/s and p99 per round, the
# medians and the ratios router/nginx.
# Usage: bash benchmarks/router.sh [--rounds 3] [--duration 10s]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3
duration=10s
while [ $# -gt 0 ]; do
    case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    *) echo "usage: $0 [--rounds N] [--duration 10s]" >&2; exit 2 ;;
    esac
done

if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
    apt-get install -y wrk nginx-light >/dev/null || apt-get install -y wrk nginx >/dev/null
fi
swift build -c release --product router-bench >/dev/null

work=$(mktemp -d /tmp/router-bench-XXXX)
chmod 755 "$work"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
backend_port=$(free_port)
nginx_port=$(free_port)
router_port=$(free_port)

mkdir -p "$work/www" "$work/backend" "$work/proxy"
printf 'hello from the benchmark backend\n' >"$work/www/index.html"

common="daemon off; master_process on; error_log stderr warn;"
cat >"$work/backend/nginx.conf" <<CONF
$common
worker_processes 1;
pid $work/backend/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/backend/body;
    proxy_temp_path $work/backend/proxy;
    fastcgi_temp_path $work/backend/fastcgi;
    uwsgi_temp_path $work/backend/uwsgi;
    scgi_temp_path $work/backend/scgi;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$backend_port;
        root $work/www;
    }
}
CONF
cat >"$work/proxy/nginx.conf" <<CONF
$common
worker_processes 2;
pid $work/proxy/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/proxy/body;
    proxy_temp_path $work/proxy/proxy;
    fastcgi_temp_path $work/proxy/fastcgi;
    uwsgi_temp_path $work/proxy/uwsgi;
    scgi_temp_path $work/proxy/scgi;
    keepalive_requests 1000000;
    upstream backend {
        server 127.0.0.1:$backend_port;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$nginx_port;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
        }
    }
}
CONF

nginx -c "$work/backend/nginx.conf" -p "$work/backend" 2>"$work/backend.err" &
pids+=($!)
nginx -c "$work/proxy/nginx.conf" -p "$work/proxy" 2>"$work/proxy.err" &
pids+=($!)
.build/release/router-bench "$router_port" "$backend_port" 2>"$work/router.err" &
pids+=($!)

wait_for() {
    for _ in $(seq 100); do
        if curl -fsS -o /dev/null -H 'Host: bench.localhost' "http://127.0.0.1:$1/index.html" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing answers on port $1" >&2
    cat "$work"/*.err >&2
    exit 1
}
wait_for "$backend_port"
wait_for "$nginx_port"
wait_for "$router_port"

# wrk prints "Requests/sec: N" and, with --latency, "99% 1.23ms"; p99 in ms.
run_wrk() {
    wrk -t2 -c64 -d"$duration" --latency -H 'Host: bench.localhost' "http://127.0.0.1:$1/index.html" >"$work/wrk.out"
    if grep -qE 'Socket errors|Non-2xx' "$work/wrk.out"; then grep -E 'Socket errors|Non-2xx' "$work/wrk.out" >&2; fi
    awk '
        /^Requests\/sec:/ { rps = $2 }
        $1 == "99%" {
            v = $2
            if (v ~ /us$/) { sub(/us$/, "", v); p99 = v / 1000 }
            else if (v ~ /ms$/) { sub(/ms$/, "", v); p99 = v }
            else if (v ~ /s$/) { sub(/s$/, "", v); p99 = v * 1000 }
        }
        END { printf "%.0f %.3f\n", rps, p99 }' "$work/wrk.out"
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

wrk -t2 -c64 -d2s -H 'Host: bench.localhost' "http://127.0.0.1:$nginx_port/index.html" >/dev/null
wrk -t2 -c64 -d2s -H 'Host: bench.localhost' "http://127.0.0.1:$router_port/index.html" >/dev/null

: >"$work/nginx.results"
: >"$work/router.results"
printf '%-7s %-6s %12s %10s\n' round proxy req/s p99_ms
for round in $(seq "$rounds"); do
    for proxy in nginx router; do
        port=$nginx_port
        [ "$proxy" = router ] && port=$router_port
        read -r rps p99 < <(run_wrk "$port")
        echo "$rps $p99" >>"$work/$proxy.results"
        printf '%-7s %-6s %12s %10s\n' "$round" "$proxy" "$rps" "$p99"
    done
done

nginx_rps=$(cut -d' ' -f1 "$work/nginx.results" | median)
nginx_p99=$(cut -d' ' -f2 "$work/nginx.results" | median)
router_rps=$(cut -d' ' -f1 "$work/router.results" | median)
router_p99=$(cut -d' ' -f2 "$work/router.results" | median)
echo
printf 'median nginx:  %s req/s, p99 %s ms\n' "$nginx_rps" "$nginx_p99"
printf 'median router: %s req/s, p99 %s ms\n' "$router_rps" "$router_p99"
awk -v r="$router_rps" -v n="$nginx_rps" 'BEGIN { printf "router/nginx req/s: %.2f (target >= 1.00)\n", r / n }'
awk -v r="$router_p99" -v n="$nginx_p99" 'BEGIN { printf "router/nginx p99:   %.2f (target <= 1.20)\n", r / n }'
