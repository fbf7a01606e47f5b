#!/usr/bin/env bash
# Requests per second for a cached 1 MiB array served by corral, against
# nginx serving the same bytes as a static file (sendfile), side by side.
#
#   benches/cached-array.sh [SECONDS] [CONNECTIONS...]
#
# Each server is pinned to CPU 0 and wrk to CPU 1 (taskset), as in the
# http-peers harness, and runs alone; nginx gets one worker process, as
# corral gets one CPU. The array is /mandelbrot?width=512&height=512&format=raw:
# 512 × 512 uint32 = 1,048,576 bytes, computed once before measuring.
# Needs cargo, curl, wrk, taskset and nginx (installed with apt-get if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-8}
shift || true
conns=("${@:-16}")
[ ${#conns[@]} -gt 0 ] || conns=(16 64)

for tool in wrk nginx curl; do
    if ! command -v "$tool" >/dev/null && [ ! -x "/usr/sbin/$tool" ]; then
        apt-get update -qq && apt-get install -y -qq wrk nginx curl >/dev/null
    fi
done
cargo build --release --quiet
bin=target/release/corral
dir=$(mktemp -d)
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
pids=()
trap cleanup EXIT

path='/mandelbrot?width=512&height=512&format=raw'
taskset -c 0 "$bin" --listen 127.0.0.1:18501 --admin-listen off --access-log off \
    --log-level warn &
pids+=($!)
for _ in $(seq 100); do curl -sf http://127.0.0.1:18501/healthz >/dev/null && break; sleep 0.1; done
mkdir -p "$dir/www" "$dir/tmp"
curl -sf "http://127.0.0.1:18501$path" -o "$dir/www/array.raw"
[ "$(stat -c %s "$dir/www/array.raw")" = 1048576 ]
chmod -R a+rX "$dir"
cat >"$dir/nginx.conf" <<CONF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 100000000;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    server {
        listen 127.0.0.1:18502;
        location = /array.raw { root $dir/www; default_type application/octet-stream; }
    }
}
CONF
taskset -c 0 nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" -g 'daemon off;' &
pids+=($!)
for _ in $(seq 100); do curl -sf http://127.0.0.1:18502/array.raw -o /dev/null && break; sleep 0.1; done
cmp "$dir/www/array.raw" <(curl -sf http://127.0.0.1:18502/array.raw)

echo "| server | connections | requests/s | MB/s | p99 ms |"
echo "|---|--:|--:|--:|--:|"
for c in "${conns[@]}"; do
    for target in "corral http://127.0.0.1:18501$path" "nginx http://127.0.0.1:18502/array.raw"; do
        set -- $target
        out=$(taskset -c 1 wrk -t2 -c"$c" -d"${secs}s" --latency "$2")
        rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
        mbs=$(awk '/Transfer\/sec/ {v=$2; if (v ~ /GB/) v*=1024; else if (v ~ /KB/) v/=1024; printf "%.0f", v}' <<<"$out")
        p99=$(awk '$1=="99%" {v=$2; if (v ~ /us/) v/=1000; else if (v ~ /ms/) v+=0; else if (v ~ /s/) v*=1000; print v}' <<<"$out")
        echo "| $1 | $c | $rps | $mbs | $p99 |"
    done
done
