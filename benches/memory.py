#!/usr/bin/env python3
"""Peak and settled memory of corral under large distinct arrays.

usage: benches/memory.py BINARY [--seconds 30] [--clients 8] [--runs 3]
                         [--settle 10] [--env NAME=VALUE ...] [-- SERVER ARGS]
       benches/memory.py BINARY --footprint [--env NAME=VALUE ...]

Starts BINARY with its defaults (only the listeners on free loopback
ports), then for --seconds runs --clients threads, each asking for a new
array of primes (`below` between 50 and 100 million, never the same twice)
in npy, then csv, then json, on a keep-alive connection: every request a
miss, every array computed once and encoded three times, each a few tens
of megabytes. Then it stops the clients, waits for the compute lane to go
idle, and waits --settle seconds more.

It reads /proc/PID/status every 100 ms: VmHWM (the kernel's own peak RSS)
at the end of the load, and VmRSS once settled; the cache's bytes from
/metrics. Each run is a fresh process; the summary gives the median and
range of each figure. --env sets variables for the server (for example
GLIBC_TUNABLES=glibc.malloc.mmap_threshold=131072, to compare). The
--footprint measures one computation instead: for each of the largest
arrays the default limits allow, a fresh process with one compute thread
serves one request, and the table gives the peak RSS above the process's
start (VmHWM), beside what the cache holds afterwards.

The memory formula of README "Deploying" is printed beside the figures, and
the exit status is 1 if a peak went over it or a settled RSS did not come
back under it.
"""
import argparse
import http.client
import itertools
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time

MIB = 1 << 20


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binary")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--settle", type=float, default=10)
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--footprint", action="store_true")
    ap.add_argument("server_args", nargs="*")
    return ap.parse_args()


def status(pid):
    """VmRSS and VmHWM of pid, in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, kb = line.split()[:2]
                out[name[:-1]] = int(kb) * 1024
    return out


def metric(admin, name):
    c = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def start(binary, env, server_args):
    p = subprocess.Popen(
        [binary, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", *server_args],
        env=env, stderr=subprocess.PIPE, text=True)
    port = admin = None
    for line in p.stderr:
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if m:
            port = int(m.group(1))
        m = re.search(r"operator endpoints .* on 127\.0\.0\.1:(\d+)", line)
        if m:
            admin = int(m.group(1))
        if port and admin:
            break
    if not (port and admin):
        p.kill()
        sys.exit("corral did not say where it listens")
    # The access log goes to stderr by default: keep draining it.
    threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
    return p, port, admin


def size(text):
    """A size as corral writes it: 512, 16KiB, 256MiB, 1GiB."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if text.endswith(unit):
            return int(float(text[:-len(unit)]) * factor)
    return int(text)


# README "Deploying", "Memory": what corral needs besides its cache.
FIXED_BYTES = 16 * MIB


def computation_bytes(conf):
    """The most one computation of the built-in app holds at once: 0.9
    bytes per number below max-primes-below, 9 bytes per pixel of
    max-pixels (README "Deploying")."""
    return max(int(conf["max-primes-below"]) * 9 // 10, int(conf["max-pixels"]) * 9)


def formula(binary, env, server_args, clients):
    """The bounds of README "Deploying" for this configuration: settled
    (cache and fixed overhead) and peak (plus the computations in flight,
    and one value per client still being sent after its eviction)."""
    text = subprocess.run([binary, *server_args, "--check-config"], env=env,
                          capture_output=True, text=True, check=True).stdout
    conf = dict(line.split(" = ", 1) for line in text.splitlines() if " = " in line)
    settled = size(conf["cache-bytes"]) + FIXED_BYTES
    computation = computation_bytes(conf)
    peak = settled + int(conf["compute-concurrency"]) * computation + clients * computation
    return settled, peak, conf


def run_once(args, env, below_counter):
    p, port, admin = start(args.binary, env, args.server_args)
    stop = threading.Event()
    peak = [0]
    counts = {"ok": 0, "busy": 0, "other": 0}
    lock = threading.Lock()

    def sampler():
        while p.poll() is None and not stop.is_set():
            try:
                peak[0] = max(peak[0], status(p.pid)["VmRSS"])
            except (FileNotFoundError, KeyError):
                return
            time.sleep(0.1)

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while not stop.is_set():
            below = next(below_counter)
            for fmt in ("npy", "csv", "json"):
                if stop.is_set():
                    break
                try:
                    conn.request("GET", f"/primes?below={below}&format={fmt}")
                    r = conn.getresponse()
                    while r.read(1 << 20):
                        pass
                    kind = {200: "ok", 503: "busy"}.get(r.status, "other")
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                    kind = "other"
                with lock:
                    counts[kind] += 1
        conn.close()

    threading.Thread(target=sampler, daemon=True).start()
    base = status(p.pid)["VmRSS"]
    clients = [threading.Thread(target=client) for _ in range(args.clients)]
    t0 = time.monotonic()
    for c in clients:
        c.start()
    time.sleep(args.seconds)
    stop.set()
    for c in clients:
        c.join()
    elapsed = time.monotonic() - t0
    # Computations already queued run on; wait for the lane to go idle.
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if metric(admin, "corral_compute_busy") == 0 and metric(admin, "corral_compute_queued") == 0:
            break
        time.sleep(0.5)
    hwm = status(p.pid)["VmHWM"]
    time.sleep(args.settle)
    settled = status(p.pid)["VmRSS"]
    cache = metric(admin, "corral_cache_bytes")
    p.terminate()
    p.wait()
    return {"base": base, "peak": max(hwm, peak[0]), "settled": settled,
            "cache": cache, "elapsed": elapsed, **counts}


# The largest computations of the built-in app under the default limits:
# primes below max-primes-below, mandelbrot at max-pixels.
FOOTPRINT_PATHS = [
    f"/primes?below=100000000&format={f}" for f in ("raw", "npy", "csv", "json")
] + [f"/mandelbrot?width=2048&height=2048&format={f}" for f in ("csv", "bmp")]


def footprint(args, env):
    print(f"# {args.binary} {' '.join(args.env)}: one request in a fresh process")
    print("| request | peak above start | cache after |")
    print("|---|--:|--:|")
    for path in FOOTPRINT_PATHS:
        p, port, admin = start(args.binary, env,
                               ["--compute-concurrency", "1", "--access-log", "off"])
        base = status(p.pid)["VmRSS"]
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        c.close()
        if r.status != 200:
            sys.exit(f"{path}: {r.status}")
        peak = status(p.pid)["VmHWM"] - base
        cache = metric(admin, "corral_cache_bytes")
        p.terminate()
        p.wait()
        print(f"| `{path}` | {peak / MIB:.1f} MiB | {cache / MIB:.1f} MiB |", flush=True)


def main():
    args = parse_args()
    env = dict(os.environ)
    for kv in args.env:
        name, value = kv.split("=", 1)
        env[name] = value
    if args.footprint:
        footprint(args, env)
        return
    settled_bound, peak_bound, conf = formula(args.binary, env, args.server_args, args.clients)
    print(f"# {args.binary} {' '.join(args.server_args)} {' '.join(args.env)}")
    print(f"# {args.clients} clients, {args.seconds:g} s, settle {args.settle:g} s, "
          f"cache-bytes {conf['cache-bytes']}, compute-concurrency "
          f"{conf['compute-concurrency']}; README's bounds: peak {peak_bound / MIB:.0f} MiB, "
          f"settled {settled_bound / MIB:.0f} MiB")
    # Distinct arrays across runs too: nothing is ever served from the
    # kernel's or the process's memory of an earlier one.
    below_counter = itertools.count(100_000_000, -1_009)
    rows = []
    for i in range(args.runs):
        r = run_once(args, env, below_counter)
        rows.append(r)
        print(f"run {i + 1}: start {r['base'] / MIB:.0f} MiB, peak {r['peak'] / MIB:.0f} MiB, "
              f"settled {r['settled'] / MIB:.0f} MiB, cache {r['cache'] / MIB:.0f} MiB; "
              f"{r['ok']} ok, {r['busy']} busy, {r['other']} other in {r['elapsed']:.0f} s",
              flush=True)

    def summary(key):
        xs = [r[key] / MIB for r in rows]
        return f"{statistics.median(xs):.0f} MiB (range {min(xs):.0f}-{max(xs):.0f})"
    print(f"median peak    {summary('peak')}")
    print(f"median settled {summary('settled')}")
    print(f"median cache   {summary('cache')}")
    failed = False
    if any(r["other"] for r in rows):
        print("FAIL: some requests got neither 200 nor 503")
        failed = True
    for key, bound in (("peak", peak_bound), ("settled", settled_bound)):
        over = [r for r in rows if r[key] > bound]
        if over:
            print(f"FAIL: {len(over)} of {len(rows)} runs went over the {key} bound of "
                  f"{bound / MIB:.0f} MiB")
            failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
