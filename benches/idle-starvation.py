#!/usr/bin/env python3
"""A fresh request while idle, silent and slowloris connections are open.

usage: benches/idle-starvation.py BINARY [WORKERS]

Starts BINARY (corral) with WORKERS workers (default 8), opens 4 x WORKERS
idle keep-alive connections (each answered once, then silent), 4 x WORKERS
connections that send nothing, and 4 x WORKERS slowloris connections that
trickle their head a byte at a time, then times 50 fresh requests, each on
a new connection. A thread-pool server whose workers wait on such clients
stops answering; corral parks them, so it answers at once.
"""
import re
import socket
import statistics
import subprocess
import sys
import time

binary = sys.argv[1]
workers = int(sys.argv[2]) if len(sys.argv) > 2 else 8
p = subprocess.Popen([binary, "--listen", "127.0.0.1:0", "--admin-listen", "off", "--access-log", "off",
                      # Silent clients must reach corral, not wait in the kernel.
                      "--defer-accept", "0",
                      "--workers", str(workers)], stderr=subprocess.PIPE, text=True)
port = None
for line in p.stderr:
    m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    if m: port = int(m.group(1)); break
def conn():
    s = socket.create_connection(("127.0.0.1", port)); s.settimeout(5); return s
def get(s):
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    buf = b""
    while b"ok\n" not in buf: buf += s.recv(4096)
n = 4 * workers
idle = [conn() for _ in range(n)]
for s in idle: get(s)
silent = [conn() for _ in range(n)]
slow = [conn() for _ in range(n)]
for s in slow: s.sendall(b"GET /healthz HTTP/1.1\r\nHo")
time.sleep(0.5)
for s in slow: s.sendall(b"s")
lat = []
for _ in range(50):
    t = time.perf_counter(); s = conn(); get(s); lat.append((time.perf_counter() - t) * 1000); s.close()
    for s2 in slow: s2.sendall(b"t")  # keep the slowloris ones trickling
print(f"fresh request with {n} idle, {n} silent, {n} slowloris open ({workers} workers): "
      f"median {statistics.median(lat):.2f} ms, max {max(lat):.2f} ms, n={len(lat)}")
p.terminate(); p.wait()
