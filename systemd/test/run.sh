#!/usr/bin/env bash
# The units in systemd/ under a real systemd: .ci/run's "systemd" stage.
#
#   systemd/test/run.sh [BINARY]
#
# Boots the host's systemd as PID 1 of a throw-away container, installs
# BINARY, corral.conf and the units the way README "Deploying" says (its
# install commands are read from the README and run as they stand), and
# checks what the protocol tests cannot: socket activation, restarts that
# lose no request, the watchdog, log rotation, a drain on stop, the
# self-binding unit, the sandbox in force and a journal with no warning
# from systemd about the units. Each check is a named step; the first that
# fails stops the run with a line saying what was expected, and the units'
# status and journal. The container is torn down whatever happens.
#
# BINARY is a static corral built with `--features test-hooks`: the
# watchdog step wedges it on purpose through the hidden `--x-wedge` flag,
# which a shipped build lacks. Without BINARY it is built into
# target/systemd-test, apart from the release binary.
#
# The container: systemd-nspawn, extracted from Debian's systemd-container
# package of the host's systemd version into target/systemd-test (never
# installed: the package's postinst would change the host's /etc/systemd),
# with private pid, mount, network, uts, ipc and cgroup namespaces, the
# host's / as the read-only lower layer of an overlay whose upper layer is
# a tmpfs, and this run's files bound read-only at /opt/corral. Nothing
# reaches the host: its network is its own loopback, and every write is
# thrown away with the tmpfs. Booting takes about a second.
#
# Run as root (CI does). Missing tools come from apt-get.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

if [ "$(id -u)" -ne 0 ]; then
    echo "systemd/test/run.sh: run it as root: it boots a container" >&2
    exit 1
fi

# --- Bookkeeping: named steps, their times, and the summary ---------------

current="set-up"
step_started=0
run_started=$(date +%s%N)
summary=()
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
step() {
    current=$1
    step_started=$(date +%s%N)
    echo "--- systemd: $current"
}
pass() {
    local ms
    ms=$(ms_since "$step_started")
    summary+=("ok      $current ($(awk -v m="$ms" 'BEGIN { printf "%.1f s", m / 1000 }'))")
    echo "ok: $current"
}
# note TEXT: what this step could not check here, and why.
note() {
    echo "  not checked: $*"
    summary+=("  not checked: $*")
}
fail() {
    echo "FAILED: $current: $*" >&2
    summary+=("FAILED  $current: $*")
    if [ -n "${leader:-}" ]; then
        echo "--- the units and their journal, as the step failed" >&2
        C systemctl --no-pager status 'corral*' >&2 || true
        C journalctl --no-pager -b -n 60 -u 'corral*' >&2 || true
    fi
    exit 1
}
# expect MESSAGE COMMAND...: fails the step with MESSAGE unless COMMAND
# succeeds.
expect() {
    local message=$1
    shift
    "$@" || fail "$message"
}
# Inside a function (C, most often), the line that called it.
trap 'fail "command failed at line ${BASH_LINENO[0]:-$LINENO}: $BASH_COMMAND"' ERR
set -E

# --- The container --------------------------------------------------------

name=corral-ci-$$
scratch=$(mktemp -d /tmp/corral-systemd.XXXXXX)
# The container's cgroup: under the cgroup2 hierarchy, which a hybrid host
# like these mounts at /sys/fs/cgroup/unified.
if [ -e /sys/fs/cgroup/unified/cgroup.procs ]; then
    cg=/sys/fs/cgroup/unified/$name
else
    cg=/sys/fs/cgroup/$name
fi
nspawn_pid=""
leader=""

# C COMMAND...: runs COMMAND inside the container, as root, in a plain
# environment.
C() {
    nsenter -t "$leader" -a env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        LANG=C.UTF-8 SYSTEMD_COLORS=0 "$@"
}

down() {
    if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        # nspawn turns SIGTERM into a clean power-off; a second one is
        # immediate.
        kill -TERM "$nspawn_pid"
        for _ in $(seq 100); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$nspawn_pid" 2>/dev/null && kill -TERM "$nspawn_pid" && sleep 1
        kill -0 "$nspawn_pid" 2>/dev/null && kill -KILL "$nspawn_pid"
    fi
    # Whatever is left in our cgroups is the container's, so ours: by pid,
    # then the cgroups themselves.
    for d in "$cg" "/sys/fs/cgroup/systemd/$name"; do
        [ -d "$d" ] || continue
        find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | while read -r pid; do
            kill -KILL "$pid" 2>/dev/null || true
        done
    done
    sleep 0.2
    for d in "$cg" "/sys/fs/cgroup/systemd/$name"; do
        [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
    if [ -d "$cg" ]; then echo "warning: $cg is still there" >&2; fi
}

finish() {
    local status=$?
    trap - ERR
    set +e
    down
    rm -rf "$scratch"
    echo "--- systemd: summary ($(( $(ms_since "$run_started") / 1000 )) s in all)"
    printf '%s\n' "${summary[@]}"
    exit "$status"
}
trap finish EXIT

apt_updated=""
# need FILE PACKAGE: installs PACKAGE unless FILE (a command or a path) is
# there already.
need() {
    if command -v "$1" >/dev/null 2>&1 || [ -e "$1" ]; then return 0; fi
    if [ -z "$apt_updated" ]; then
        apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

step "tools"
need /lib/systemd/systemd systemd
need nsenter util-linux
need pgrep procps
need /bin/kill procps
need /usr/bin/python3 python3
need dpkg-deb dpkg
need file file
systemd_version=$(dpkg-query -W -f='${Version}' systemd)
nspawn_dir=$repo/target/systemd-test/nspawn-$systemd_version
nspawn=$nspawn_dir/usr/bin/systemd-nspawn
if [ ! -x "$nspawn" ]; then
    # Its version must match the host's libsystemd-shared.
    if [ -z "$apt_updated" ]; then apt-get update -qq; apt_updated=1; fi
    (cd "$scratch" && apt-get download -qq "systemd-container=$systemd_version")
    mkdir -p "$nspawn_dir"
    dpkg-deb -x "$scratch"/systemd-container_*.deb "$nspawn_dir"
fi
expect "systemd-nspawn does not run" "$nspawn" --version >/dev/null
echo "systemd $systemd_version; $("$nspawn" --version | head -1)"
pass

step "static test binary"
bin=${1:-}
if [ -z "$bin" ]; then
    RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR=target/systemd-test \
        cargo build --release --target x86_64-unknown-linux-gnu --features test-hooks
    bin=target/systemd-test/x86_64-unknown-linux-gnu/release/corral
fi
expect "$bin is not a static binary" \
    sh -c "file '$bin' | grep -Eq 'static(-pie)? linked'"
expect "$bin lacks the test hooks: build it with --features test-hooks" \
    "$bin" --x-wedge=acceptor --check-config >/dev/null
# Laid out as the repository is, so the README's install commands run as
# they are written.
stage=$scratch/stage
mkdir -p "$stage/target/x86_64-unknown-linux-gnu/release"
cp "$bin" "$stage/target/x86_64-unknown-linux-gnu/release/corral"
cp -r systemd README.md "$stage/"
pass

step "boot systemd as PID 1 in a container"
mkdir -p "$cg"
export nspawn name cg scratch
# In a private mount namespace, so the overlay and nspawn's scratch mounts
# never show in the host's mount table. nspawn and everything in the
# container live in $cg.
SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 setsid unshare --mount --propagation private -- bash -c '
    set -e
    echo $$ > "$cg/cgroup.procs"
    mount -t tmpfs -o mode=755 corral-ci-run /run/systemd
    mkdir -p "$scratch/root"
    mount -t tmpfs -o mode=755 corral-ci-root "$scratch/root"
    cd "$scratch/root" && mkdir upper work merged
    mount -t overlay corral-ci -o lowerdir=/,upperdir=upper,workdir=work merged
    exec "$nspawn" -D "$scratch/root/merged" -M "$name" --register=no --keep-unit \
        --private-network --console=pipe --system-call-filter=bpf \
        --bind-ro="$scratch/stage:/opt/corral" \
        -b -- --unit=basic.target </dev/null' >"$scratch/console.log" 2>&1 &
nspawn_pid=$!
# --system-call-filter=bpf: without it IPAddressAllow=/IPAddressDeny= are
# accepted and silently do nothing.
for _ in $(seq 100); do
    leader=$(pgrep -P "$nspawn_pid" -x systemd || true)
    [ -n "$leader" ] && break
    sleep 0.1
done
[ -n "$leader" ] || { cat "$scratch/console.log" >&2; fail "no systemd started in the container"; }
for _ in $(seq 100); do C test -S /run/systemd/private 2>/dev/null && break; sleep 0.1; done
state=$(C timeout 60 systemctl is-system-running --wait || true)
echo "is-system-running: $state"
case $state in
    running) ;;
    degraded) C systemctl --no-pager --failed --plain --no-legend ;;
    *) cat "$scratch/console.log" >&2; fail "the container did not boot (state: $state)" ;;
esac
pass

# What systemd (PID 1) logged at warning or worse about our units.
unit_warnings() {
    C journalctl --no-pager -b -q _PID=1 -p warning -o cat | grep -i corral || true
}

step "install as README \"Deploying\" says"
# The README's block of install commands, without sudo, from the staged
# copy of the repository.
install_cmds=$(awk '/^Install the binary/ { f = 1 } f && /^```sh/ { p = 1; next } p && /^```/ { exit } p' README.md |
    sed 's/^sudo //')
expect "README \"Deploying\" has no install commands" grep -q 'systemctl daemon-reload' <<<"$install_cmds"
echo "$install_cmds" | sed 's/^/  # /'
C sh -euc "cd /opt/corral; $install_cmds"
for f in /usr/local/bin/corral /etc/corral/corral.conf /etc/systemd/system/corral.service \
    /etc/systemd/system/corral-activated.service /etc/systemd/system/corral.socket \
    /etc/systemd/system/corral-admin.socket; do
    expect "$f was not installed" C test -s "$f"
done
warnings=$(unit_warnings)
[ -z "$warnings" ] || { echo "$warnings" | sed 's/^/  /' >&2; fail "systemd warned about the units as it loaded them"; }
pass

step "socket activation on the first connection"
expect "README does not say to enable the two sockets" \
    grep -q '^  sudo systemctl enable --now corral.socket corral-admin.socket$' README.md
C systemctl enable --now corral.socket corral-admin.socket
expect "corral.socket is not listening" C systemctl -q is-active corral.socket
expect "corral-admin.socket is not listening" C systemctl -q is-active corral-admin.socket
expect "corral-activated.service runs before any connection" \
    test "$(C systemctl is-active corral-activated.service || true)" = inactive
C python3 /opt/corral/systemd/test/load.py 8080 1 ||
    fail "the first request through corral.socket was not answered 200"
expect "corral-activated.service did not start on the first connection" \
    C systemctl -q is-active corral-activated.service
C python3 /opt/corral/systemd/test/load.py 9090 1 --path /metrics ||
    fail "the operator's socket did not answer /metrics"
status_line=$(C systemctl --no-pager status corral-activated.service | grep 'Status: "' || true)
echo "  $status_line"
expect "systemctl status shows no STATUS= line from corral" \
    grep -q 'requests; .* connections open' <<<"$status_line"
pass

# online_matches_offline UNIT: the exposure score of the running UNIT is
# the one `--offline=true` gives for its file (what the deploy stage keeps
# in bounds).
online_matches_offline() {
    local online offline
    online=$(C systemd-analyze security --no-pager "$1" | sed -n 's/.*Overall exposure level for [^:]*: //p')
    offline=$(C systemd-analyze security --no-pager --offline=true "/etc/systemd/system/$1" |
        sed -n 's/.*Overall exposure level for [^:]*: //p')
    echo "  $1: online $online, offline $offline"
    [ -n "$online" ] && [ "$online" = "$offline" ]
}

step "corral-activated.service: online security score matches offline"
expect "the running unit's exposure differs from its file's" \
    online_matches_offline corral-activated.service
pass

main_pid() { C systemctl show -P MainPID "$1"; }

step "limits and sandbox in force"
pid=$(main_pid corral-activated.service)
limits=$(C cat "/proc/$pid/limits")
status=$(C cat "/proc/$pid/status")
expect "LimitNOFILE=16384 is not the process's limit" \
    grep -Eq '^Max open files +16384 +16384 ' <<<"$limits"
expect "NoNewPrivileges= is not in force" grep -Eq '^NoNewPrivs:\s+1$' <<<"$status"
expect "SystemCallFilter= is not in force (no seccomp filter)" grep -Eq '^Seccomp:\s+2$' <<<"$status"
expect "the process has capabilities" grep -Eq '^CapEff:\s+0+$' <<<"$status"
uid=$(awk '/^Uid:/ { print $2 }' <<<"$status")
# systemd's range for dynamic users.
expect "DynamicUser= gave uid $uid" test "$uid" -ge 61184 -a "$uid" -le 65519
echo "  pid $pid: uid $uid (dynamic), no new privileges, seccomp filter, no capabilities, 16384 files"
controllers=$(C cat /sys/fs/cgroup/cgroup.controllers)
for pair in memory:MemoryMax:memory.max:1073741824 pids:TasksMax:pids.max:1024; do
    IFS=: read -r controller setting file want <<<"$pair"
    shown=$(C systemctl show -P "$setting" corral-activated.service)
    expect "$setting= reads $shown, not $want" test "$shown" = "$want"
    if grep -qw "$controller" <<<"$controllers"; then
        cgroup=$(C systemctl show -P ControlGroup corral-activated.service)
        got=$(C cat "/sys/fs/cgroup$cgroup/$file")
        expect "$setting= is not the cgroup's $file ($got)" test "$got" = "$want"
        echo "  $setting=$want enforced ($file)"
    else
        note "$setting=$want is accepted but not enforced: the container's cgroup has no" \
            "$controller controller (the host keeps it on cgroup v1)"
    fi
done
pass

step "SIGKILL twice during 400 requests: none lost"
restarts_before=$(C systemctl show -P NRestarts corral-activated.service)
# One request after another, each on a new connection, 10 ms apart; the
# client kills the unit after the 100th and the 250th and carries on at
# once, so its next requests wait in the socket's backlog while systemd
# restarts corral (RestartSec=). A request corral had accepted when killed
# would die with it whatever holds the socket, so the kills fall between
# requests: what this checks is that no connection is refused or dropped
# while corral is down.
C python3 /opt/corral/systemd/test/load.py 8080 400 --pause 0.01 \
    --kill corral-activated.service --kill-after 100,250 >"$scratch/load.out" 2>&1 && load_ok=1 ||
    load_ok=""
sed 's/^/  /' "$scratch/load.out"
[ -n "$load_ok" ] || fail "requests failed across the restarts (above)"
restarts=$(( $(C systemctl show -P NRestarts corral-activated.service) - restarts_before ))
expect "NRestarts went up by $restarts, not 2" test "$restarts" -eq 2
expect "corral-activated.service is not running after the kills" \
    C systemctl -q is-active corral-activated.service
echo "  NRestarts +2"
pass

step "watchdog: a wedged server is killed and restarted"
# A drop-in adds the test hook's flag and a short period, so the step
# takes seconds, not minutes: the mechanism is the same at 30 s.
watchdog_s=3
restart_s=$(C systemctl show -P RestartUSec corral-activated.service | sed 's/s$//')
C mkdir -p /etc/systemd/system/corral-activated.service.d
C sh -c "cat >/etc/systemd/system/corral-activated.service.d/wedge.conf" <<EOF
[Service]
ExecStart=
ExecStart=/usr/local/bin/corral --config /etc/corral/corral.conf --x-wedge=acceptor
WatchdogSec=${watchdog_s}s
EOF
C systemctl daemon-reload
C systemctl restart corral-activated.service
old=$(main_pid corral-activated.service)
restarts_before=$(C systemctl show -P NRestarts corral-activated.service)
since=$(C date '+%Y-%m-%d %H:%M:%S')
C python3 /opt/corral/systemd/test/load.py 8080 1 --path /x-wedge ||
    fail "the wedge hook did not answer (is BINARY built with --features test-hooks?)"
wedged_at=$(date +%s%N)
# A heartbeat may be up to a period old when the acceptor hangs, so corral
# pings for up to one more period; then systemd waits a period, kills it
# and restarts it RestartSec= later. Two periods, the restart delay and
# 5 s for a loaded machine.
limit_ms=$(awk -v w="$watchdog_s" -v r="$restart_s" 'BEGIN { printf "%d", (2 * w + r + 5) * 1000 }')
new=$old
while [ "$(ms_since "$wedged_at")" -lt "$limit_ms" ]; do
    new=$(main_pid corral-activated.service)
    [ "$new" != "$old" ] && [ "$new" != 0 ] && C systemctl -q is-active corral-activated.service && break
    sleep 0.1
done
took=$(ms_since "$wedged_at")
[ "$new" != "$old" ] && [ "$new" != 0 ] ||
    fail "the wedged server (pid $old) was not restarted within $limit_ms ms (WatchdogSec=${watchdog_s}s)"
echo "  wedged pid $old; pid $new serving $took ms later (limit $limit_ms ms)"
journal=$(C journalctl --no-pager -q -o cat --since "$since" -u corral-activated.service)
grep -E 'Watchdog timeout|SIGABRT|withholding WATCHDOG' <<<"$journal" | sed 's/^/  journal: /'
expect "the journal has no watchdog timeout from systemd" grep -q 'Watchdog timeout' <<<"$journal"
expect "the journal does not say corral was killed with SIGABRT" grep -q 'SIGABRT' <<<"$journal"
expect "corral did not log why it withheld its pings" grep -q 'withholding WATCHDOG=1' <<<"$journal"
restarts=$(( $(C systemctl show -P NRestarts corral-activated.service) - restarts_before ))
expect "NRestarts went up by $restarts, not 1" test "$restarts" -eq 1
C rm -r /etc/systemd/system/corral-activated.service.d
C systemctl daemon-reload
C systemctl restart corral-activated.service
C python3 /opt/corral/systemd/test/load.py 8080 1 || fail "no answer after the drop-in was removed"
pass

step "logrotate: move the access log aside, reload, none lost"
C sed -i 's|^#access-log = stderr$|access-log = /var/log/corral/access.log|' /etc/corral/corral.conf
expect "corral.conf has no access-log line to set" \
    C grep -q '^access-log = /var/log/corral/access.log$' /etc/corral/corral.conf
C systemctl restart corral-activated.service
agent=rotate-$$
(
    trap - ERR
    C python3 /opt/corral/systemd/test/load.py 8080 300 --pause 0.005 --agent "$agent" \
        --progress /run/corral-load.progress >"$scratch/load.out" 2>&1
) &
load_pid=$!
progress() { C cat /run/corral-load.progress 2>/dev/null || echo 0; }
for _ in $(seq 300); do [ "$(progress)" -ge 100 ] && break; sleep 0.05; done
# What logrotate does (without copytruncate), then its postrotate.
C mv /var/log/corral/access.log /var/log/corral/access.log.1
C systemctl reload corral-activated.service
moved_at=$(progress)
wait "$load_pid" && load_ok=1 || load_ok=""
sed 's/^/  /' "$scratch/load.out"
[ -n "$load_ok" ] || fail "requests failed during the rotation (above)"
count() { C grep -c -- "$agent" "$1" || true; }
for _ in $(seq 50); do
    old=$(count /var/log/corral/access.log.1) new=$(count /var/log/corral/access.log)
    [ $((old + new)) -ge 300 ] && break
    sleep 0.1
done
echo "  moved after $moved_at requests: $old lines in access.log.1, $new in the new access.log"
expect "$((old + new)) of 300 requests were logged" test $((old + new)) -eq 300
expect "no request was logged in the new file after the reload" test "$new" -gt 0
expect "the moved file has no request" test "$old" -gt 0
journal=$(C journalctl --no-pager -q -o cat -u corral-activated.service)
expect "corral did not log that it reopened the file" \
    grep -q 'SIGHUP: reopened access log' <<<"$journal"
pass

step "stop during an in-flight slow request"
# About 1.5 s of computing on an idle machine of this kind, a few seconds
# on a busy one: well inside shutdown-timeout (10 s), after which a
# request still waiting gets 503.
slow='/mandelbrot?width=512&height=512&max_iter=5000&format=raw'
(
    trap - ERR
    C python3 /opt/corral/systemd/test/load.py 8080 1 --path "$slow" >"$scratch/load.out" 2>&1
) &
load_pid=$!
metric() {
    C python3 -c 'import sys, urllib.request
for line in urllib.request.urlopen("http://127.0.0.1:9090/metrics").read().decode().splitlines():
    if line.startswith(sys.argv[1] + " "): print(line.split()[1])' "$1"
}
for _ in $(seq 100); do [ "$(metric corral_compute_busy)" -ge 1 ] && break; sleep 0.05; done
expect "the slow request never started computing" test "$(metric corral_compute_busy)" -ge 1
# The compute lane lowers its threads to SCHED_IDLE (compute-priority), which
# the unit's system call filter must let through: field 41 of a thread's
# stat is its policy, 5 for SCHED_IDLE.
policies=$(C sh -c 'pid=$(systemctl show -P MainPID corral-activated.service)
    for t in /proc/$pid/task/*; do
        [ "$(cat "$t/comm")" = corral-compute ] && sed "s/.*) //" "$t/stat" | cut -d" " -f39
    done; true' | sort -u | tr '\n' ' ')
echo "  compute threads' scheduling policies: $policies(5 is SCHED_IDLE)"
expect "the compute threads do not run at SCHED_IDLE under the unit: $policies" test "$policies" = "5 "
stop_at=$(date +%s%N)
C systemctl stop corral-activated.service
echo "  systemctl stop returned after $(ms_since "$stop_at") ms"
wait "$load_pid" && load_ok=1 || load_ok=""
sed 's/^/  /' "$scratch/load.out"
[ -n "$load_ok" ] || fail "the in-flight request did not complete"
result=$(C systemctl show -P Result corral-activated.service)
code=$(C systemctl show -P ExecMainStatus corral-activated.service)
echo "  Result=$result ExecMainStatus=$code"
expect "Result=$result, not success" test "$result" = success
expect "corral exited $code, not 0" test "$code" = 0
pass

step "self-binding corral.service starts and serves"
C systemctl disable --now corral.socket corral-admin.socket
C systemctl stop corral-activated.service
expect "README does not say to enable corral.service" \
    grep -q '^  sudo systemctl enable --now corral.service$' README.md
C systemctl enable --now corral.service
expect "corral.service is not active" C systemctl -q is-active corral.service
C python3 /opt/corral/systemd/test/load.py 8080 1 || fail "corral.service did not answer on 127.0.0.1:8080"
C python3 /opt/corral/systemd/test/load.py 9090 1 --path /metrics ||
    fail "corral.service did not answer /metrics on 127.0.0.1:9090"
expect "the running unit's exposure differs from its file's" online_matches_offline corral.service
pass

step "no warning from systemd about the units"
# Expected, and only from the steps that killed corral on purpose: the
# watchdog's timeout and SIGABRT, and the failed results they leave.
deliberate="Watchdog timeout|with signal SIGABRT|Failed with result '(signal|watchdog)'|Main process exited, code=(killed|dumped)"
warnings=$(unit_warnings | grep -Ev "$deliberate" || true)
if [ -n "$warnings" ]; then
    echo "$warnings" | sed 's/^/  /' >&2
    fail "systemd logged the warnings above about the units"
fi
echo "  only these, from the steps that killed corral on purpose:"
unit_warnings | sed 's/^/    /'
pass
