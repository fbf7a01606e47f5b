#!/usr/bin/env python3
"""Soak: the corral binary under ordinary and hostile traffic for a long
time, with faults, checking nothing leaks and every answer is right.

usage: benches/soak.py BINARY [--minutes 60] [--warmup 5] [--sample 5]
                       [--out DIR] [--no-faults]

BINARY runs with its defaults, the listeners on free loopback ports and
the access log in a file. After --warmup minutes (ordinary traffic, and
the cache filled to its budget) the run lasts --minutes more, then the
clients stop. All the while, each in its own threads:

  keep-alive clients      small arrays and /healthz, bodies checked
                          byte for byte against arrays computed here
  connection per request  the same, each on a new connection
  pipelined floods        32 requests in one write, 32 answers
  slowloris heads         a byte a second; corral must answer 408, close
  trickled bodies         POST /echo, 40 bytes every 50 ms, echoed whole
  silent connections      nothing sent; corral must close them
  binary garbage          random bytes; corral must close
  oversize heads, bodies  must get 431 and 413
  misses                  distinct arrays, never asked before
  stampedes               16 clients at once on one new key: one miss,
                          the rest share it, one ETag
  purges                  POST /cache/purge?prefix=mandelbrot (admin port),
                          after each stampede
  SIGHUP                  with the access log moved aside first
  large-array bursts      8 clients, distinct arrays of primes below 10^8
                          as csv and json (issue 12), now and then

and, with faults (the middle of the run): the open-files limit lowered to
just above what corral holds while new connections flood in (EMFILE),
the access log's file system full (a 64 MiB tmpfs, when run as root), and
clients that reset the connection in the middle of a response. corral
must keep serving the connections it has, log each condition at most
once a second, and recover when the fault ends.

Every --sample seconds it records RSS, open descriptors, threads, open
connections and cache bytes (samples.csv) and draws them (soak.svg) in
--out (default target/soak). It fails (exit 1) if:

  - a well-formed request got anything but its expected answer (a 503
    with Retry-After is expected of a miss while the compute lane is
    saturated, and counted apart);
  - a hostile connection was not answered or closed in time;
  - RSS, outside the bursts and faults, grew by more than 5 % from the
    first sixth of the run to the last;
  - RSS during a burst went over README's memory formula ("Sizing
    MemoryMax="), or did not come back under its settled part after;
  - descriptors or threads did not come back to their baseline once the
    clients stopped (threads other than the compute threads, which start
    as computations need them and stay);
  - a fault was not logged, was logged more than once a second, or was
    not recovered from;
  - corral logged an error outside the faults.
"""
import argparse
import csv
import http.client
import itertools
import json
import os
import random
import re
import resource
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time

MIB = 1 << 20
# README "Deploying", "Sizing MemoryMax=".
FIXED_BYTES = 16 * MIB
# A connection's buffers at most, with the default limits: a head
# (max-head-bytes) and a 64 KiB body read.
CONNECTION_BYTES = 16 * 1024 + 64 * 1024
# What the ordinary traffic has in flight besides connections: small arrays
# being computed and sent (a few MiB), with room to spare.
ORDINARY_BYTES = 16 * MIB
# Clients of a large-array burst.
BURST_CLIENTS = 8
SMALL_BELOWS = [1_000, 5_000, 20_000, 100_000]
FORMATS = ["raw", "npy", "csv", "json"]


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binary")
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--warmup", type=float, default=5, help="minutes")
    ap.add_argument("--sample", type=float, default=5, help="seconds")
    ap.add_argument("--out", default="target/soak")
    ap.add_argument("--no-faults", action="store_true")
    return ap.parse_args()


# --- What the answers must be -----------------------------------------------

def odd_sieve(n):
    """For n >= 3: sieve[i] is 1 if 2i + 1 is a prime below n, as corral's
    own sieve has it."""
    sieve = bytearray([1]) * (n // 2)
    sieve[0] = 0
    for i in range(1, int(n ** 0.5) // 2 + 1):
        if sieve[i]:
            p = 2 * i + 1
            start = p * p // 2
            sieve[start::p] = bytes(len(range(start, n // 2, p)))
    return sieve


def primes_below(n):
    if n < 3:
        return []
    return [2] + [2 * i + 1 for i, v in enumerate(odd_sieve(n)) if v]


def prime_count(n):
    """How many primes are below n, without a list of them."""
    return 1 + odd_sieve(n).count(1) if n >= 3 else 0


def encodings(primes):
    """The bytes corral sends for a 1-D array, by format."""
    raw = struct.pack(f"<{len(primes)}I", *primes)
    header = f"{{'descr': '<u4', 'fortran_order': False, 'shape': ({len(primes)},), }}"
    pad = (10 + len(header) + 1 + 63) // 64 * 64 - (10 + len(header) + 1)
    header = header + " " * pad + "\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + raw
    text = "".join(f"{p}\n" for p in primes).encode()
    js = (f'{{"dtype":"uint32","shape":[{len(primes)}],"data":['
          + ",".join(map(str, primes)) + "]}\n").encode()
    return {"raw": raw, "npy": npy, "csv": text, "json": js}


EXPECTED = {"/healthz": b"ok\n"}
for _below in SMALL_BELOWS:
    for _fmt, _body in encodings(primes_below(_below)).items():
        EXPECTED[f"/primes?below={_below}&format={_fmt}"] = _body
SMALL_PATHS = sorted(EXPECTED)


# --- A plain HTTP/1.1 client ------------------------------------------------

class Closed(Exception):
    pass


def read_response(f):
    """(status, headers, body) from a buffered socket file."""
    line = f.readline()
    if not line:
        raise Closed("closed before a status line")
    parts = line.split(b" ", 2)
    status = int(parts[1])
    headers = {}
    while True:
        line = f.readline()
        if not line:
            raise Closed("closed in the head")
        if line in (b"\r\n", b"\n"):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        n = int(headers["content-length"])
        body = f.read(n)
        if len(body) != n:
            raise Closed(f"body cut short at {len(body)} of {n} bytes")
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int(f.readline().split(b";")[0], 16)
            if size == 0:
                while f.readline() not in (b"\r\n", b"\n", b""):
                    pass
                break
            body += f.read(size)
            f.readline()
    else:
        body = b""
    return status, headers, body


def request_bytes(method, path, headers=(), body=b""):
    head = f"{method} {path} HTTP/1.1\r\nHost: soak\r\n"
    for name, value in headers:
        head += f"{name}: {value}\r\n"
    return head.encode() + b"\r\n" + body


def connect(port, timeout=60):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


# --- The run's shared state -------------------------------------------------

class Run:
    def __init__(self, args):
        self.args = args
        self.stop = threading.Event()      # clients end
        self.quiet = threading.Event()     # new connections pause (EMFILE)
        self.faulting = threading.Event()  # no log rotation meanwhile
        self.lock = threading.Lock()
        self.counts = {}
        self.unexpected = []
        self.failures = []                 # checks that failed, in words
        self.windows = []                  # (start, end, label) of bursts and faults
        self.started = time.monotonic()
        self.log_lines = []                # (monotonic time, server log line)

    def count(self, what, n=1):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + n

    def wrong(self, who, what):
        with self.lock:
            self.counts["unexpected"] = self.counts.get("unexpected", 0) + 1
            if len(self.unexpected) < 50:
                self.unexpected.append(f"{time.monotonic() - self.started:7.1f}s {who}: {what}")

    def fail(self, what):
        print(f"FAIL: {what}", flush=True)
        with self.lock:
            self.failures.append(what)

    def sleep(self, seconds):
        """Sleeps unless the run stops first; False once it has."""
        return not self.stop.wait(seconds)

    def log_since(self, t, pattern):
        with self.lock:
            return [line for (when, line) in self.log_lines if when >= t and re.search(pattern, line)]


def answer_ok(run, who, status, headers, body, path):
    """Checks a small array's or /healthz's answer; counts it."""
    if status == 503 and "retry-after" in headers:
        run.count("busy")
        return
    if status != 200:
        run.wrong(who, f"{path}: status {status}")
    elif body != EXPECTED[path]:
        run.wrong(who, f"{path}: body of {len(body)} bytes differs")
    else:
        run.count("ok")


# --- The clients ------------------------------------------------------------

def keepalive_client(run, port):
    rng = random.Random()
    while not run.stop.is_set():
        try:
            with connect(port) as s, s.makefile("rb") as f:
                for _ in range(200):
                    if run.stop.is_set():
                        return
                    path = rng.choice(SMALL_PATHS)
                    s.sendall(request_bytes("GET", path))
                    answer_ok(run, "keep-alive", *read_response(f), path)
                    time.sleep(0.002)
        except (OSError, Closed) as e:
            run.wrong("keep-alive", repr(e))
            run.sleep(1)


def every(run, pause, who, step):
    """Calls step() every `pause` seconds until the run ends, not while
    new connections are held back (EMFILE); a connection that fails or an
    answer cut short is unexpected."""
    while run.sleep(pause):
        if run.quiet.is_set():
            continue
        try:
            step()
        except (OSError, Closed) as e:
            run.wrong(who, repr(e))


def per_request_client(run, port):
    rng = random.Random()

    def step():
        path = rng.choice(SMALL_PATHS)
        with connect(port) as s, s.makefile("rb") as f:
            s.sendall(request_bytes("GET", path, [("Connection", "close")]))
            answer_ok(run, "per-request", *read_response(f), path)
    every(run, 0.01, "per-request", step)


def pipeliner(run, port):
    def step():
        with connect(port) as s, s.makefile("rb") as f:
            s.sendall(request_bytes("GET", "/healthz") * 32)
            for _ in range(32):
                answer_ok(run, "pipelined", *read_response(f), "/healthz")
    every(run, 0.2, "pipelined", step)


def hostile(run, port, name, act, within):
    """Over and over, a tenth of a second apart: runs act(socket) on a new
    connection, then expects corral to close it within `within` seconds,
    having answered what HOSTILE_ANSWERS says, if anything."""
    while run.sleep(0.1):
        if run.quiet.is_set():
            continue
        t0 = time.monotonic()
        try:
            s = connect(port, timeout=within)
        except OSError as e:
            run.wrong(name, f"connect: {e!r}")
            continue
        data = b""
        try:
            with s:
                act(s)
                while chunk := s.recv(65536):
                    data += chunk
        except socket.timeout:
            run.wrong(name, f"still open after {time.monotonic() - t0:.0f} s")
            continue
        except OSError:
            pass  # reset, or closed while we still wrote: a close all the same
        run.count(f"hostile {name} closed")
        check = HOSTILE_ANSWERS.get(name)
        if check and data and not data.startswith(check):
            run.wrong(name, f"answered {data[:30]!r}")


HOSTILE_ANSWERS = {"slowloris": b"HTTP/1.1 408 ", "oversize head": b"HTTP/1.1 431 ",
                   "oversize body": b"HTTP/1.1 413 "}


def slowloris_act(run):
    def act(s):
        for byte in b"GET / HTTP/1.1\r\nHost: soak\r\nX-Slow: " + b"a" * 100:
            s.sendall(bytes([byte]))
            # A byte a second, until corral answers (its 408) or the run ends.
            if select.select([s], [], [], 1)[0] or run.stop.is_set():
                return
    return act


def silent_act(s):
    pass


def garbage_act(s):
    s.sendall(random.randbytes(512))


def oversize_head_act(s):
    s.sendall(request_bytes("GET", "/", [("X-Big", "a" * 20_000)]))


def oversize_body_act(s):
    s.sendall(request_bytes("POST", "/echo", [("Content-Length", "2000000")]))


def trickler(run, port):
    rng = random.Random()

    def step():
        body = rng.randbytes(4000)
        with connect(port) as s, s.makefile("rb") as f:
            s.sendall(request_bytes("POST", "/echo", [("Content-Length", "4000"),
                                                      ("Content-Type", "application/x-soak")]))
            for i in range(0, 4000, 40):
                s.sendall(body[i:i + 40])
                time.sleep(0.05)
            status, headers, got = read_response(f)
        if status != 200 or got != body:
            run.wrong("trickled body", f"status {status}, {len(got)} bytes")
        else:
            run.count("ok")
    every(run, 0.1, "trickled body", step)


def misser(run, port, counter):
    def step():
        below = next(counter)
        path = f"/primes?below={below}&format=raw"
        with connect(port, timeout=120) as s, s.makefile("rb") as f:
            s.sendall(request_bytes("GET", path))
            status, headers, body = read_response(f)
        if status == 503 and "retry-after" in headers:
            run.count("busy")
        elif status != 200 or len(body) != 4 * prime_count(below):
            run.wrong("miss", f"{path}: status {status}, {len(body)} bytes")
        else:
            run.count("ok")
    every(run, 0.2, "miss", step)


def stampede(run, port, admin):
    """16 clients at once on a new key, then a purge of such keys from the
    admin port (after, never during: a purge detaches a computation in
    flight, and a late client would rightly miss again)."""
    rng = random.Random()
    while run.sleep(10):
        if run.quiet.is_set():
            continue
        cx = rng.uniform(-1.5, 0.5)
        path = f"/mandelbrot?width=300&height=200&max_iter=500&cx={cx:.12f}&format=raw"
        answers = []
        gate = threading.Barrier(16)

        def one():
            try:
                with connect(port, timeout=120) as s, s.makefile("rb") as f:
                    gate.wait(timeout=60)
                    s.sendall(request_bytes("GET", path))
                    answers.append(read_response(f))
            except (OSError, Closed, threading.BrokenBarrierError) as e:
                gate.abort()
                answers.append((0, {}, repr(e).encode()))
        threads = [threading.Thread(target=one) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses = {a[0] for a in answers}
        etags = {a[1].get("etag") for a in answers}
        misses = sum(a[1].get("x-cache") == "miss" for a in answers)
        if any(a[0] == 503 and "retry-after" in a[1] for a in answers):
            run.count("busy")
        elif statuses != {200} or len(etags) != 1 or misses != 1 or \
                any(len(a[2]) != 300 * 200 * 4 for a in answers):
            run.wrong("stampede", f"statuses {statuses}, {len(etags)} ETags, {misses} misses")
        else:
            run.count("ok", 16)
        try:
            c = http.client.HTTPConnection("127.0.0.1", admin, timeout=30)
            c.request("POST", "/cache/purge?prefix=mandelbrot")
            r = c.getresponse()
            text = r.read()
            c.close()
            if r.status != 200 or not text.startswith(b"purged "):
                run.wrong("purge", f"status {r.status} {text[:40]!r}")
            else:
                run.count("ok")
        except (OSError, http.client.HTTPException) as e:
            run.wrong("purge", repr(e))


def hangups(run, server):
    while run.sleep(20):
        if run.faulting.is_set():
            continue
        # What logrotate does: move the file aside, then ask for a reopen.
        try:
            os.replace(server.log_path, server.log_path + ".1")
        except OSError as e:
            run.wrong("rotate", repr(e))
        os.kill(server.pid, signal.SIGHUP)
        run.count("sighup")
        # Lines still going to the moved file are done within a second;
        # then it goes, as logrotate's "rotate 0" would have it.
        if run.sleep(1):
            try:
                os.unlink(server.log_path + ".1")
            except OSError as e:
                run.wrong("rotate", repr(e))


def burst(run, port, seconds, counter):
    """Issue 12's workload: 8 clients, distinct arrays of primes below
    10^8 as csv and json."""
    until = time.monotonic() + seconds

    def client():
        while time.monotonic() < until and not run.stop.is_set():
            below = next(counter)
            for fmt in ("csv", "json"):
                try:
                    with connect(port, timeout=300) as s, s.makefile("rb") as f:
                        s.sendall(request_bytes("GET", f"/primes?below={below}&format={fmt}"))
                        status, headers, body = read_response(f)
                except (OSError, Closed) as e:
                    run.wrong("burst", repr(e))
                    continue
                if status == 503 and "retry-after" in headers:
                    run.count("busy")
                elif status != 200 or len(body) < 40 * MIB:
                    run.wrong("burst", f"below={below} {fmt}: status {status}, {len(body)} bytes")
                else:
                    run.count("ok")
    threads = [threading.Thread(target=client) for _ in range(BURST_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# --- The server and what it looks like from outside -------------------------

class Server:
    def __init__(self, binary, out, run):
        self.out = out
        self.run = run
        log_dir = os.path.abspath(os.path.join(out, "logs"))
        os.makedirs(log_dir, exist_ok=True)
        args = ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
                "--access-log", os.path.join(log_dir, "access.log")]
        # As root: the access log on a 64 MiB tmpfs of the server's own
        # mount namespace, so the disk-full fault can fill it and nothing
        # is left mounted whatever happens. The script reaches it through
        # /proc/PID/root.
        self.tmpfs = os.geteuid() == 0 and subprocess.run(
            ["unshare", "--version"], capture_output=True).returncode == 0
        if self.tmpfs:
            cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                   'mount -t tmpfs -o size=64m corral-soak "$0" && exec "$@"',
                   log_dir, binary, *args]
        else:
            cmd = [binary, *args]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        self.log_dir = f"/proc/{self.pid}/root{log_dir}" if self.tmpfs else log_dir
        self.log_path = os.path.join(self.log_dir, "access.log")
        self.port = self.admin = None
        self.log = open(os.path.join(out, "server.log"), "w")
        for line in self.proc.stderr:
            self.log.write(line)
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
            m = re.search(r"operator endpoints .* on 127\.0\.0\.1:(\d+)", line)
            if m:
                self.admin = int(m.group(1))
            if self.port and self.admin:
                break
        if not (self.port and self.admin):
            self.proc.kill()
            sys.exit("corral did not say where it listens")
        threading.Thread(target=self.drain, daemon=True).start()

    def drain(self):
        for line in self.proc.stderr:
            self.log.write(line)
            with self.run.lock:
                self.run.log_lines.append((time.monotonic(), line.rstrip("\n")))

    def status(self):
        out = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    out[name] = int(value.split()[0]) * 1024
                elif name == "Threads":
                    out[name] = int(value)
        out["fds"] = len(os.listdir(f"/proc/{self.pid}/fd"))
        return out

    def metrics(self):
        c = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=30)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        c.close()
        return {m.group(1): float(m.group(2))
                for m in re.finditer(r"^(corral_\w+) (\S+)$", text, re.M)}

    def connections(self):
        """Open connections, not counting the one asking."""
        return int(self.metrics()["corral_connections_open"]) - 1

    def config(self):
        text = subprocess.run([self.run.args.binary, "--check-config"], capture_output=True,
                              text=True, check=True).stdout
        return dict(line.split(" = ", 1) for line in text.splitlines() if " = " in line)

    def wait_idle(self, within=300):
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            m = self.metrics()
            if m["corral_compute_busy"] == 0 and m["corral_compute_queued"] == 0:
                return True
            time.sleep(0.5)
        return False


def size(text):
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if text.endswith(unit):
            return int(float(text[:-len(unit)]) * factor)
    return int(text)


def bounds(conf, connections):
    """README's formula, for a burst amid the ordinary traffic: settled
    (cache, fixed, connection buffers, the ordinary traffic's small
    arrays) and peak (plus the computations in flight, and a value per
    burst client still being sent after its eviction)."""
    computation = max(int(conf["max-primes-below"]) * 9 // 10, int(conf["max-pixels"]) * 9)
    settled = (size(conf["cache-bytes"]) + FIXED_BYTES + connections * CONNECTION_BYTES
               + ORDINARY_BYTES)
    peak = settled + (int(conf["compute-concurrency"]) + BURST_CLIENTS) * computation
    return settled, peak


# --- Sampling and the plot --------------------------------------------------

FIELDS = ["seconds", "phase", "rss_mib", "fds", "threads", "connections", "cache_mib",
          "requests"]


def sampler(run, server, samples, phase):
    while True:
        try:
            st = server.status()
        except OSError:
            return  # the process is gone
        try:
            m = server.metrics()
        except (OSError, http.client.HTTPException):
            continue  # the admin port cannot accept now (EMFILE)
        samples.append({
            "seconds": round(time.monotonic() - run.started, 1), "phase": phase[0],
            "rss_mib": round(st["VmRSS"] / MIB, 1), "fds": st["fds"], "threads": st["Threads"],
            "connections": int(m["corral_connections_open"]) - 1,
            "cache_mib": round(m["corral_cache_bytes"] / MIB, 1),
            "requests": int(m["corral_requests_total"])})
        if phase[0] == "done":
            return
        time.sleep(run.args.sample)


def plot(samples, windows, path):
    """Two panels, time across: RSS and cache bytes; fds, threads and
    connections. Bursts and faults are shaded. Plain SVG."""
    w, h, left, right, top, gap = 900, 560, 60, 20, 30, 50
    panel = (h - top - gap - 40) // 2
    t_max = max(s["seconds"] for s in samples) or 1
    x = lambda t: left + (w - left - right) * t / t_max

    def panel_svg(y0, series, unit):
        v_max = max(max(s[k] for s in samples) for k, _ in series) * 1.1 or 1
        y = lambda v: y0 + panel - panel * v / v_max
        out = [f'<rect x="{left}" y="{y0}" width="{w - left - right}" height="{panel}" '
               'fill="none" stroke="#999"/>']
        for start, end, label in windows:
            out.append(f'<rect x="{x(start):.1f}" y="{y0}" width="{max(x(end) - x(start), 1):.1f}" '
                       f'height="{panel}" fill="#f3e3c3"><title>{label}</title></rect>')
        for i in range(5):
            v = v_max * i / 4
            out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" '
                       f'font-size="11">{v:.0f}</text>')
        for n, (key, colour) in enumerate(series):
            pts = " ".join(f"{x(s['seconds']):.1f},{y(s[key]):.1f}" for s in samples)
            out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" '
                       'stroke-width="1.5"/>')
            out.append(f'<text x="{left + 10 + 150 * n}" y="{y0 - 6}" fill="{colour}" '
                       f'font-size="12">{key} ({unit})</text>')
        return out

    body = panel_svg(top, [("rss_mib", "#c0392b"), ("cache_mib", "#2471a3")], "MiB")
    body += panel_svg(top + panel + gap,
                      [("fds", "#27ae60"), ("threads", "#8e44ad"), ("connections", "#d68910")],
                      "count")
    for i in range(6):
        t = t_max * i / 5
        label = f"{t / 60:.0f}" if t_max >= 600 else f"{t / 60:.1f}"
        body.append(f'<text x="{x(t):.1f}" y="{h - 14}" text-anchor="middle" '
                    f'font-size="11">{label} min</text>')
    with open(path, "w") as f:
        f.write(f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
                f'font-family="sans-serif"><rect width="{w}" height="{h}" fill="white"/>'
                + "".join(body) + "</svg>\n")


# --- Faults -----------------------------------------------------------------

def fault_emfile(run, server, seconds):
    """The open-files limit just above what corral holds, while new
    connections flood in. Connections it has go on being served."""
    t0 = time.monotonic()
    run.quiet.set()
    time.sleep(1)
    soft, hard = resource.prlimit(server.pid, resource.RLIMIT_NOFILE)
    held = server.status()["fds"]
    resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (held + 8, hard))
    ok_before = run.counts.get("ok", 0)
    flood = []
    try:
        for _ in range(64):
            flood.append(connect(server.port, timeout=5))
        time.sleep(seconds)
    finally:
        resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (soft, hard))
        for s in flood:
            s.close()
    served = run.counts.get("ok", 0) - ok_before
    lines = run.log_since(t0, r"accept failed")
    recovered = False
    for _ in range(50):
        try:
            with connect(server.port, timeout=5) as s, s.makefile("rb") as f:
                s.sendall(request_bytes("GET", "/healthz", [("Connection", "close")]))
                recovered = read_response(f)[0] == 200
                break
        except (OSError, Closed):
            time.sleep(0.1)
    run.quiet.clear()
    return verdict(run, "EMFILE", seconds, t0, lines, "accept failed", served,
                   "on open connections", recovered, "serving new connections again")


def verdict(run, name, seconds, t0, lines, logged, served, where, recovered, recovery):
    """What every fault must show: logged, at most once a second, answers
    meanwhile, and the recovery. Records the fault's window; returns its
    line for the summary."""
    t1 = time.monotonic()
    run.windows.append((t0 - run.started, t1 - run.started, name))
    report = (f"{name} for {seconds:.0f} s: {len(lines)} '{logged}' line(s), {served} answers "
              f"{where} meanwhile, {recovery if recovered else 'NOT ' + recovery}")
    print(f"  fault: {report}", flush=True)
    if not lines:
        run.fail(f"{name}: corral did not log it")
    if len(lines) > (t1 - t0) + 1:
        run.fail(f"{name}: {len(lines)} lines in {t1 - t0:.0f} s, more than one a second")
    if served == 0:
        run.fail(f"{name}: no answer {where} meanwhile")
    if not recovered:
        run.fail(f"{name}: not {recovery}")
    return report


def fault_disk_full(run, server, seconds):
    """The access log's file system full; requests go on being answered,
    and the log is written again once there is room."""
    if not server.tmpfs:
        report = "disk full: skipped (needs root, for a tmpfs of its own)"
        print(f"  fault: {report}", flush=True)
        return report
    t0 = time.monotonic()
    filler = os.path.join(server.log_dir, "filler")
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
        except OSError:
            pass  # full
    ok_before = run.counts.get("ok", 0)
    time.sleep(seconds)
    served = run.counts.get("ok", 0) - ok_before
    lines = run.log_since(t0, r"access log .*cannot write")
    before = os.path.getsize(server.log_path) if os.path.exists(server.log_path) else 0
    os.unlink(filler)
    recovered = False
    for _ in range(50):
        time.sleep(0.1)
        if run.log_since(t0, r"access log .*writing again") and \
                os.path.exists(server.log_path) and os.path.getsize(server.log_path) > before:
            recovered = True
            break
    return verdict(run, "access log disk full", seconds, t0, lines, "cannot write", served,
                   "to any client", recovered, "writing the access log again")


def fault_resets(run, server, count):
    """Clients that reset the connection in the middle of a response."""
    t0 = time.monotonic()
    path = "/primes?below=3000000&format=csv"  # 2 MiB of text
    for _ in range(count):
        try:
            s = connect(server.port)
            s.sendall(request_bytes("GET", path))
            s.recv(16 * 1024)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()  # with linger 0: RST
        except OSError as e:
            run.wrong("reset", repr(e))
    ok = False
    with connect(server.port) as s, s.makefile("rb") as f:
        s.sendall(request_bytes("GET", "/healthz"))
        ok = read_response(f)[0] == 200
    errors = run.log_since(t0, r"\[(ERROR|WARN)\]")
    t1 = time.monotonic()
    run.windows.append((t0 - run.started, t1 - run.started, "resets"))
    report = (f"{count} resets mid-response: {len(errors)} warning/error line(s), "
              f"{'serving' if ok else 'NOT serving'} after")
    print(f"  fault: {report}", flush=True)
    if errors:
        run.fail(f"resets: corral logged {errors[:2]}")
    if not ok:
        run.fail("resets: corral stopped serving")
    return report


# --- The run ----------------------------------------------------------------

def main():
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    run = Run(args)
    server = Server(args.binary, args.out, run)
    try:
        soak(args, run, server)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
        server.log.close()


def soak(args, run, server):
    conf = server.config()
    samples, phase = [], ["warm-up"]
    print(f"# soak: {args.binary}, pid {server.pid}, warm-up {args.warmup:g} min, "
          f"run {args.minutes:g} min, sampled every {args.sample:g} s; out {args.out}", flush=True)

    # Baseline: the compute lane started, no connection open.
    with connect(server.port) as s, s.makefile("rb") as f:
        s.sendall(request_bytes("GET", "/primes?below=1000&format=raw",
                                [("Connection", "close")]))
        read_response(f)
    for _ in range(100):
        if server.connections() == 0:
            break
        time.sleep(0.1)
    # The least of a few looks: the admin connection just closed may not
    # be gone from the table yet.
    base = server.status()
    for _ in range(5):
        time.sleep(0.1)
        base["fds"] = min(base["fds"], server.status()["fds"])
    # Compute threads start as computations need them, up to the lane's
    # size, and stay: the threads that must come back are the others.
    def other_threads(st):
        return st["Threads"] - int(server.metrics()["corral_compute_threads_started"])
    base_other = other_threads(base)
    print(f"  baseline: {base['fds']} descriptors, {base['Threads']} threads "
          f"({base_other} besides the compute threads), "
          f"RSS {base['VmRSS'] / MIB:.0f} MiB", flush=True)
    threading.Thread(target=sampler, args=(run, server, samples, phase), daemon=True).start()

    miss_counter = itertools.count(2_000_000, -7)
    burst_counter = itertools.count(100_000_000, -1_009)
    workers = (
        [(keepalive_client, (run, server.port))] * 4
        + [(per_request_client, (run, server.port))] * 2
        + [(pipeliner, (run, server.port))]
        + [(trickler, (run, server.port))] * 2
        + [(misser, (run, server.port, miss_counter))] * 2
        + [(stampede, (run, server.port, server.admin))]
        + [(hangups, (run, server))]
        + [(hostile, (run, server.port, "slowloris", slowloris_act(run), 20))] * 8
        + [(hostile, (run, server.port, "silent", silent_act, 20))] * 8
        + [(hostile, (run, server.port, "garbage", garbage_act, 20))] * 2
        + [(hostile, (run, server.port, "oversize head", oversize_head_act, 20))]
        + [(hostile, (run, server.port, "oversize body", oversize_body_act, 20))]
    )
    threads = [threading.Thread(target=f, args=a, daemon=True) for f, a in workers]
    for t in threads:
        t.start()

    # Warm-up: fill the cache to its budget, so RSS has its level.
    warm_until = time.monotonic() + args.warmup * 60
    fill = itertools.count(10_000_000, -1_013)
    cache_bytes = size(conf["cache-bytes"])
    while time.monotonic() < warm_until:
        if server.metrics()["corral_cache_bytes"] < 0.95 * cache_bytes:
            with connect(server.port, timeout=120) as s, s.makefile("rb") as f:
                s.sendall(request_bytes("GET", f"/primes?below={next(fill)}&format=raw",
                                        [("Connection", "close")]))
                read_response(f)
        else:
            time.sleep(1)
    phase[0] = "run"
    run_start = time.monotonic()
    run_seconds = args.minutes * 60
    print(f"  warm-up done: cache {server.metrics()['corral_cache_bytes'] / MIB:.0f} MiB, "
          f"RSS {server.status()['VmRSS'] / MIB:.0f} MiB", flush=True)

    # The schedule: bursts through the run, faults in the middle.
    long_run = args.minutes >= 10
    burst_at = [0.15, 0.4, 0.85] if long_run else [0.1]
    burst_seconds = 20 if long_run else 10
    fault_at = 0.55 if long_run else 0.45
    fault_seconds = 10 if long_run else 5
    reports = []
    burst_reports = []
    events = sorted([(f, "burst") for f in burst_at]
                    + ([] if args.no_faults else [(fault_at, "faults")]))
    for at, what in events:
        wait = run_start + at * run_seconds - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        if what == "burst":
            t0 = time.monotonic()
            phase[0] = "burst"
            # Resets VmHWM to the present RSS, so it gives this burst's peak.
            with open(f"/proc/{server.pid}/clear_refs", "w") as f:
                f.write("5")
            burst(run, server.port, burst_seconds, burst_counter)
            idle = server.wait_idle()
            time.sleep(10)
            st = server.status()
            m = server.metrics()
            phase[0] = "run"
            t1 = time.monotonic()
            run.windows.append((t0 - run.started, t1 - run.started, "burst"))
            settled_bound, peak_bound = bounds(conf, server.connections())
            peak = st["VmHWM"]
            text = (f"burst of {burst_seconds} s: peak {peak / MIB:.0f} MiB "
                    f"(bound {peak_bound / MIB:.0f}), then {st['VmRSS'] / MIB:.0f} MiB "
                    f"(bound {settled_bound / MIB:.0f}) with the cache at "
                    f"{m['corral_cache_bytes'] / MIB:.0f} MiB")
            print(f"  {text}", flush=True)
            burst_reports.append(text)
            if peak > peak_bound:
                run.fail(f"burst: peak RSS {peak / MIB:.0f} MiB over {peak_bound / MIB:.0f}")
            if not idle or st["VmRSS"] > settled_bound:
                run.fail(f"burst: RSS {st['VmRSS'] / MIB:.0f} MiB after it, over "
                         f"{settled_bound / MIB:.0f}")
        else:
            phase[0] = "fault"
            run.faulting.set()
            reports.append(fault_emfile(run, server, fault_seconds))
            reports.append(fault_disk_full(run, server, fault_seconds))
            reports.append(fault_resets(run, server, 20))
            run.faulting.clear()
            phase[0] = "run"
    wait = run_start + run_seconds - time.monotonic()
    if wait > 0:
        time.sleep(wait)

    # Cool-down: clients stop; connections, descriptors and threads must
    # come back to the baseline.
    phase[0] = "cool-down"
    run.stop.set()
    for t in threads:
        t.join(timeout=60)
    back = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        st, open_now = server.status(), server.connections()
        # At most: the sampler's own admin connection may come and go.
        if open_now == 0 and st["fds"] <= base["fds"] and other_threads(st) <= base_other:
            back = st
            break
        time.sleep(0.5)
    phase[0] = "done"
    time.sleep(args.sample + 1)
    final = server.status()
    final_other = other_threads(final)
    if back is None:
        run.fail(f"after the clients stopped: {final['fds']} descriptors (baseline "
                 f"{base['fds']}), {final_other} threads besides the compute threads (baseline {base_other}), "
                 f"{server.connections()} connections")

    # RSS growth, outside bursts and faults and the 30 s after each.
    def quiet(s):
        return s["phase"] == "run" and not any(
            a <= s["seconds"] <= b + 30 for a, b, _ in run.windows)
    steady = [s for s in samples if quiet(s)]
    growth = None
    if len(steady) >= 6:
        sixth = max(len(steady) // 6, 1)
        first = statistics.median(s["rss_mib"] for s in steady[:sixth])
        last = statistics.median(s["rss_mib"] for s in steady[-sixth:])
        growth = (last - first) / first
        if growth > 0.05:
            run.fail(f"RSS grew {100 * growth:.1f} % ({first:.0f} to {last:.0f} MiB)")
    else:
        print("  (too few steady samples to measure RSS growth)")

    # Errors corral logged outside the faults (and the bursts' 503s are
    # not errors).
    fault_spans = [(a, b) for a, b, label in run.windows if label != "burst"]
    errors = [line for when, line in run.log_lines if "[ERROR]" in line and not any(
        a <= when - run.started <= b + 2 for a, b in fault_spans)]
    if errors:
        run.fail(f"corral logged {len(errors)} error(s) outside the faults: {errors[:3]}")
    if run.counts.get("unexpected"):
        run.fail(f"{run.counts['unexpected']} unexpected answer(s)")

    server.proc.terminate()
    if server.proc.wait(timeout=60) != 0:
        run.fail(f"corral exited {server.proc.returncode} on SIGTERM")
    with open(os.path.join(args.out, "samples.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        w.writerows(samples)
    plot(samples, run.windows, os.path.join(args.out, "soak.svg"))
    with open(os.path.join(args.out, "counts.json"), "w") as f:
        json.dump(run.counts, f, indent=1, sort_keys=True)

    steady_rss = [s["rss_mib"] for s in steady] or [0]
    print(f"\n| measure | value |\n|---|---|")
    print(f"| run | {args.minutes:g} min after {args.warmup:g} min warm-up |")
    print(f"| requests answered as expected | {run.counts.get('ok', 0)} |")
    print(f"| 503 with Retry-After (misses while the lane was saturated) | "
          f"{run.counts.get('busy', 0)} |")
    print(f"| unexpected answers | {run.counts.get('unexpected', 0)} |")
    closed = ", ".join(f"{k[len('hostile '):-len(' closed')]} {v}"
                       for k, v in sorted(run.counts.items()) if k.startswith("hostile"))
    print(f"| hostile connections, closed by corral | {closed} |")
    print(f"| SIGHUPs (access log moved aside first) | {run.counts.get('sighup', 0)} |")
    print(f"| RSS outside bursts and faults | {min(steady_rss):.0f} to {max(steady_rss):.0f} MiB"
          + (f", {100 * growth:+.1f} % first sixth to last" if growth is not None else "")
          + " |")
    print(f"| descriptors, threads besides the compute threads: baseline, after | "
          f"{base['fds']}, {base_other}; {final['fds']}, {final_other} |")
    for text in burst_reports:
        print(f"| large-array burst | {text} |")
    for text in reports:
        print(f"| fault | {text} |")
    for line in run.unexpected[:20]:
        print(f"  unexpected: {line}")
    if run.failures:
        print(f"\nFAILED: {len(run.failures)} check(s): " + "; ".join(run.failures))
        sys.exit(1)
    print("\nsoak passed")


if __name__ == "__main__":
    main()
