#!/usr/bin/env bash
# corral, nginx (proxy_cache_lock on) and Varnish, each in front of the same
# slow upstream, measured in one run; see BENCHMARKS.md "Proxy peers".
#
#   benches/proxy-peers/run.sh [ROUNDS]      # default 3; prints a Markdown table
#
# Installs nginx, varnish and wrk from Debian's packages if missing (root),
# builds corral and the load tool, and runs everything on loopback ports
# 18600-18613 with configs in a temporary directory; nginx and varnishd run
# as nobody when this runs as root.
set -euo pipefail
cd "$(dirname "$0")/../.."
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v varnishd >/dev/null || missing+=(varnish)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || missing+=(nginx)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The Debian packages start their own services where systemd runs; those
# listen on other ports and are left alone.
cargo build --release --quiet
dir=$(mktemp -d /tmp/proxy-peers.XXXXXX)
trap 'rm -rf "$dir"' EXIT
rustc -O --edition 2021 -o "$dir/load" benches/proxy-peers/load.rs
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
python3 benches/proxy-peers/bench.py "$dir" "${1:-3}"
