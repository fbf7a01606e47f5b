#!/usr/bin/env bash
# System calls, context switches and CPU time per request of one HTTP server
# under wrk, in the peers harness's shape: the server pinned to CPU 0, wrk
# to CPU 1, `GET PATH` on CONNS keep-alive connections. Counted by the
# kernel's tracepoints (perf stat), so no PMU is needed, as in a VM.
#
#   benches/per-request.sh 'COMMAND {port}' [CONNS] [PATH]
#   benches/per-request.sh './target/release/examples/hello {port}' 16 /plaintext
#
# WRK_ARGS adds wrk options, e.g. WRK_ARGS="-H 'Connection: close'" for a
# new connection per request (the harness's S3).
#
# Requests are wrk's count over its window; the counters cover the middle
# 8 s of wrk's 10, so "per request" uses wrk's rate times 8 s.
set -euo pipefail

CMD=${1:?usage: per-request.sh 'COMMAND {port}' [CONNS] [PATH]}
CONNS=${2:-16}
URLPATH=${3:-/plaintext}
PORT=${PORT:-18999}

need() {  # COMMAND PACKAGE
  command -v "$1" >/dev/null && return
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
need wrk wrk
need perf linux-perf
need taskset util-linux

OUT=$(mktemp -d)
trap 'kill "$SERVER" 2>/dev/null || true; rm -rf "$OUT"' EXIT

# shellcheck disable=SC2086 # the command is split into its words on purpose
taskset -c 0 ${CMD//\{port\}/$PORT} >/dev/null 2>&1 &
SERVER=$!
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break
  sleep 0.05
done
URL="http://127.0.0.1:$PORT$URLPATH"
eval "EXTRA=(${WRK_ARGS:-})"
taskset -c 1 wrk -t2 -c"$CONNS" -d2s "${EXTRA[@]}" "$URL" >/dev/null
taskset -c 1 wrk -t2 -c"$CONNS" -d10s "${EXTRA[@]}" "$URL" >"$OUT/wrk" &
WRK=$!
sleep 1
EVENTS=syscalls:sys_enter_writev,syscalls:sys_enter_write,syscalls:sys_enter_sendto
EVENTS+=,syscalls:sys_enter_recvfrom,syscalls:sys_enter_read
EVENTS+=,syscalls:sys_enter_poll,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_ctl
EVENTS+=,syscalls:sys_enter_accept4,syscalls:sys_enter_close
EVENTS+=,syscalls:sys_enter_futex,syscalls:sys_enter_sched_yield,context-switches,task-clock
perf stat -x, -e "$EVENTS" -p "$SERVER" -o "$OUT/stat" -- sleep 8
wait "$WRK"

python3 - "$OUT/wrk" "$OUT/stat" <<'PY'
import re, sys
wrk, stat = open(sys.argv[1]).read(), open(sys.argv[2]).read()
n, secs = re.search(r"(\d+) requests in ([\d.]+)s", wrk).groups()
rate = int(n) / float(secs)
per = rate * 8
print(f"requests/s {rate:,.0f}")
for line in stat.splitlines():
    f = line.split(",")
    if len(f) < 3 or not f[0].replace(".", "").isdigit():
        continue
    value, event = float(f[0]), f[2]
    if event == "task-clock":  # milliseconds of CPU
        print(f"  {'CPU per request':34} {value * 1000 / per:8.2f} us")
    else:
        print(f"  {event.replace('syscalls:sys_enter_', ''):34} {value / per:8.3f}")
PY
