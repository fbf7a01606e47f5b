#!/usr/bin/env python3
"""The floor of scenario (a): accepts N connections, reads a request on
each, waits as long as the upstream of (a) takes, then writes every
answer in one tight loop, and prints when the first
write began and when the last one returned (Unix ns). The load tool's last
client minus the first is what the machine and the load tool cost, with no
cache or proxy in between; the last minus the first is what the kernel
takes to send the answers, the least a server's own last write can come
after its answer is ready.

    floor.py PORT N
"""

import socket
import sys
import time

port, n = int(sys.argv[1]), int(sys.argv[2])
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", port))
listener.listen(4096)
print("ready", flush=True)
conns = [listener.accept()[0] for _ in range(n)]
for c in conns:
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += c.recv(4096)
# The proxies' clients wait for the upstream (0.5 s) before their answers
# come, and an idle CPU takes longer to wake: these wait as long.
time.sleep(0.5)
answer = b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n" + b"x" * 1024
first = time.time_ns()
for c in conns:
    c.sendall(answer)
last = time.time_ns()
print(first, last, flush=True)
time.sleep(1)
