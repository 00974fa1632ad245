#!/usr/bin/env bash
# kbuild's router against nginx proxying the same backends, same run, medians of rounds that
# alternate the two. The router is router-bench: the router as `kbuild up` runs it (request log
# and metrics on, two event loops); nginx runs benchmarks/nginx/proxy.conf (two workers, upstream
# keepalive, a buffered access log, the same certificate). The backend is nginx serving a small
# file (benchmarks/nginx/backend.conf), and benchmarks/ws_echo.py for WebSockets.
#
# Rows:
#   keepalive   wrk -c64, HTTP/1.1 keep-alive: req/s (target >= 1.0x nginx) and p99 (<= 1.2x)
#   newconn     wrk -c64 with Connection: close, a new connection per request: the same targets
#   tls         wrk -c64 over HTTPS (keep-alive): req/s (target >= 0.9x)
#   websocket   1,000 idle WebSockets plus 100 echoing 10 messages a second (benchmarks/ws_load.py):
#               resident memory per connection and p99 echo latency
# Each wrk row also gives each proxy's CPU time (user + system, all threads, from /proc around the
# run) per request, in microseconds: the cost behind the req/s when both share the machine's cores.
# Usage: bash benchmarks/router.sh [--rounds 3] [--duration 10s] [--ws-seconds 20] [--rows 'keepalive newconn tls websocket']
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3
duration=10s
ws_seconds=20
rows="keepalive newconn tls websocket"
while [ $# -gt 0 ]; do
    case "$1" in
    --rows) rows=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --ws-seconds) ws_seconds=$2; shift 2 ;;
    *) echo "usage: $0 [--rounds N] [--duration 10s] [--ws-seconds 20] [--rows 'keepalive newconn tls websocket']" >&2; exit 2 ;;
    esac
done

if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null || ! command -v openssl >/dev/null; then
    apt-get install -y wrk nginx-light openssl >/dev/null
fi
swift build -c release --product router-bench >/dev/null
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

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
ws_backend_port=$(free_port)
nginx_port=$(free_port)
nginx_tls_port=$(free_port)
router_port=$(free_port)
router_tls_port=$(free_port)

mkdir -p "$work/www" "$work/backend" "$work/proxy" "$work/routerlog"
printf 'hello from the benchmark backend\n' >"$work/www/index.html"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/key.pem" -out "$work/cert.pem" \
    -days 2 -subj /CN=bench.localhost -addext "subjectAltName=DNS:bench.localhost,DNS:localhost" 2>/dev/null
for conf in backend proxy; do
    sed -e "s|@WORK@|$work|g" -e "s|@BACKEND_PORT@|$backend_port|g" -e "s|@WS_BACKEND_PORT@|$ws_backend_port|g" \
        -e "s|@PORT@|$nginx_port|g" -e "s|@TLS_PORT@|$nginx_tls_port|g" "benchmarks/nginx/$conf.conf" >"$work/$conf/nginx.conf"
done

nginx -c "$work/backend/nginx.conf" -p "$work/backend" 2>"$work/backend.err" &
pids+=($!)
python3 benchmarks/ws_echo.py "$ws_backend_port" 2>"$work/ws.err" &
pids+=($!)
# The two proxies; started again, fresh, before each WebSocket round (resident memory is only measured
# right on processes whose allocator has not kept the last round's connections).
start_proxies() {
    nginx -c "$work/proxy/nginx.conf" -p "$work/proxy" 2>>"$work/proxy.err" &
    nginx_pid=$!
    pids+=($nginx_pid)
    ROUTER_LOG_DIR="$work/routerlog" .build/release/router-bench "$router_port" "$backend_port" --ws-backend "$ws_backend_port" \
        --https "$router_tls_port" "$work/cert.pem" "$work/key.pem" 2>>"$work/router.err" &
    router_pid=$!
    pids+=($router_pid)
}
stop_proxies() {
    kill "$nginx_pid" "$router_pid" 2>/dev/null || true
    wait "$nginx_pid" "$router_pid" 2>/dev/null || true
}
start_proxies

wait_for() {
    for _ in $(seq 100); do
        if curl -fsSk -o /dev/null -H 'Host: bench.localhost' "$1/index.html" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing answers at $1" >&2
    cat "$work"/*.err >&2
    exit 1
}
wait_for "http://127.0.0.1:$backend_port"
wait_for "http://127.0.0.1:$nginx_port"
wait_for "https://localhost:$nginx_tls_port"
wait_for "http://127.0.0.1:$router_port"
wait_for "https://localhost:$router_tls_port"

# wrk prints "Requests/sec: N" and, with --latency, "99% 1.23ms"; p99 in ms.
run_wrk() {
    wrk -t2 -c64 -d"$duration" --latency -H 'Host: bench.localhost' "$@" >"$work/wrk.out"
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

# The proxy's processes: nginx's master and workers; the router's one.
proxy_pids() {
    if [ "$1" = nginx ]; then echo "$nginx_pid $(pgrep -P "$nginx_pid" | tr '\n' ' ')"; else echo "$router_pid"; fi
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# CPU time (user + system, in clock ticks of 10 ms) of every thread of the given processes.
cpu_ticks() {
    local total=0 pid stat
    for pid in "$@"; do
        for stat in /proc/"$pid"/task/*/stat; do
            total=$((total + $(awk '{ print $14 + $15 }' "$stat" 2>/dev/null || echo 0)))
        done
    done
    echo "$total"
}

# One measurement of ROW for PROXY: req/s (or bytes per connection), p99, and the proxy's CPU
# microseconds per request (from /proc, around the wrk run; "-" for WebSockets).
measure() {
    local row=$1 proxy=$2 port tls before rps p99 requests
    port=$nginx_port tls=$nginx_tls_port
    [ "$proxy" = router ] && port=$router_port tls=$router_tls_port
    # shellcheck disable=SC2046
    before=$(cpu_ticks $(proxy_pids "$proxy"))
    case "$row" in
    keepalive) read -r rps p99 < <(run_wrk "http://127.0.0.1:$port/index.html") ;;
    newconn) read -r rps p99 < <(run_wrk -H 'Connection: close' "http://127.0.0.1:$port/index.html") ;;
    tls) read -r rps p99 < <(run_wrk "https://localhost:$tls/index.html") ;;
    websocket)
        # shellcheck disable=SC2046
        read -r per_connection p99 echoes failures < <(python3 benchmarks/ws_load.py "$port" ws.localhost 1000 100 10 "$ws_seconds" $(proxy_pids "$proxy"))
        [ "$failures" = 0 ] || echo "$proxy: $failures WebSockets failed ($echoes echoes)" >&2
        echo "$per_connection $p99 -"
        return
        ;;
    esac
    # shellcheck disable=SC2046
    requests=$(awk '/ requests in / { print $1 }' "$work/wrk.out")
    echo "$rps $p99 $(( ($(cpu_ticks $(proxy_pids "$proxy")) - before) * 10000 / (requests > 0 ? requests : 1) ))"
}

# Warm both up.
for port in "$nginx_port" "$router_port"; do
    wrk -t2 -c64 -d2s -H 'Host: bench.localhost' "http://127.0.0.1:$port/index.html" >/dev/null
done

printf '%-10s %-6s %-6s %14s %10s %8s\n' row round proxy 'req/s|B/conn' p99_ms cpu_us
for row in $rows; do
    : >"$work/$row.nginx"
    : >"$work/$row.router"
    for round in $(seq "$rounds"); do
        if [ "$row" = websocket ]; then
            stop_proxies
            start_proxies
            wait_for "http://127.0.0.1:$nginx_port"
            wait_for "http://127.0.0.1:$router_port"
        fi
        for proxy in nginx router; do
            read -r value p99 cpu < <(measure "$row" "$proxy")
            echo "$value $p99 $cpu" >>"$work/$row.$proxy"
            printf '%-10s %-6s %-6s %14s %10s %8s\n' "$row" "$round" "$proxy" "$value" "$p99" "$cpu"
        done
    done
done

echo
printf '%-10s %14s %14s %8s %10s %10s %8s %9s %9s  %s\n' row nginx router ratio nginx_p99 router_p99 ratio nginx_cpu router_cpu target
for row in $rows; do
    n=$(cut -d' ' -f1 "$work/$row.nginx" | median)
    r=$(cut -d' ' -f1 "$work/$row.router" | median)
    np=$(cut -d' ' -f2 "$work/$row.nginx" | median)
    rp=$(cut -d' ' -f2 "$work/$row.router" | median)
    nc=-
    rc=-
    if [ "$row" != websocket ]; then
        nc=$(cut -d' ' -f3 "$work/$row.nginx" | median)
        rc=$(cut -d' ' -f3 "$work/$row.router" | median)
    fi
    case "$row" in
    keepalive | newconn) target="req/s >= 1.00, p99 <= 1.20" ;;
    tls) target="req/s >= 0.90" ;;
    websocket) target="bytes/connection and p99 echo ms (lower is better)" ;;
    esac
    awk -v row="$row" -v n="$n" -v r="$r" -v np="$np" -v rp="$rp" -v nc="$nc" -v rc="$rc" -v t="$target" \
        'BEGIN { printf "%-10s %14.0f %14.0f %8.2f %10.3f %10.3f %8.2f %9s %9s  %s\n", row, n, r, r / n, np, rp, rp / np, nc, rc, t }'
done
