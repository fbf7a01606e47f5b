#!/usr/bin/env python3
"""A client loop for systemd/test/run.sh, run inside the container.

usage: load.py PORT COUNT [--path P] [--agent A] [--pause S] [--progress FILE]
               [--kill UNIT --kill-after N[,N...]]

Sends COUNT requests for PATH (default /healthz), one after the other, each
on a new connection (`Connection: close`), so every one goes through the
listening socket, and checks each answer is a whole 200. A connection that
waits in the socket's backlog while corral restarts is fine; a refused,
reset or cut-short one is a failure. Prints the tally, and each failure
with its request number; exits 1 if any failed. --progress FILE gets the
number of requests done so far, for the script to time its actions by.

--kill UNIT: after each request numbered in --kill-after, SIGKILL the
unit (`systemctl kill -s KILL`), wait until systemd has seen its main
process die, and go on at once: the next requests reach the socket while
the unit waits to restart, and must be answered all the same. The kill
comes between two requests, never during one: a request corral has
accepted when it is killed dies with it, whatever holds the socket.
"""
import argparse
import socket
import subprocess
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("port", type=int)
ap.add_argument("count", type=int)
ap.add_argument("--path", default="/healthz")
ap.add_argument("--agent", default="corral-systemd-test")
ap.add_argument("--pause", type=float, default=0.0)
ap.add_argument("--progress")
ap.add_argument("--kill")
ap.add_argument("--kill-after", default="")
args = ap.parse_args()
kill_after = {int(n) for n in args.kill_after.split(",") if n}

request = (f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
           f"User-Agent: {args.agent}\r\nConnection: close\r\n\r\n").encode()


def whole(data):
    """The head of data, if data holds a head and all the body it announces."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length" and int(value) > len(body):
            return None
    return head


def one():
    """None if the answer was a whole 200, else what went wrong."""
    data = b""
    try:
        with socket.create_connection(("127.0.0.1", args.port), timeout=30) as s:
            s.sendall(request)
            while chunk := s.recv(65536):
                data += chunk
    except OSError as e:
        # A whole answer counts even if the connection then went wrong.
        if whole(data) is None:
            return f"{type(e).__name__} after {len(data)} bytes: {e}"
    head = whole(data)
    if head is None:
        return f"cut short after {len(data)} bytes"
    if not head.startswith(b"HTTP/1.1 200 "):
        return f"answer {head[:40]!r}"
    return None


def systemctl(*words):
    return subprocess.run(["systemctl", *words], check=True, capture_output=True,
                          text=True).stdout.strip()


def kill(unit):
    """SIGKILLs unit and waits until systemd has seen its main process go."""
    pid = systemctl("show", "-P", "MainPID", unit)
    systemctl("kill", "-s", "KILL", unit)
    deadline = time.monotonic() + 10
    while systemctl("show", "-P", "MainPID", unit) == pid:
        if time.monotonic() > deadline:
            sys.exit(f"{unit}: pid {pid} still there 10 s after SIGKILL")
        time.sleep(0.01)
    return pid


failures = []
killed_at = None
for i in range(args.count):
    started = time.monotonic()
    why = one()
    if why:
        failures.append((i, why))
    elif killed_at is not None:
        print(f"request {i} answered {1000 * (time.monotonic() - killed_at):.0f} ms "
              f"after the kill, {1000 * (time.monotonic() - started):.0f} ms after it was sent")
    killed_at = None
    if args.kill and i + 1 in kill_after:
        print(f"after {i + 1} requests: killed pid {kill(args.kill)}", flush=True)
        killed_at = time.monotonic()
    if args.progress:
        with open(args.progress, "w") as f:
            f.write(f"{i + 1}\n")
    if args.pause:
        time.sleep(args.pause)

print(f"{args.count - len(failures)} of {args.count} requests answered 200, "
      f"{len(failures)} failed")
for i, why in failures:
    print(f"  request {i}: {why}")
sys.exit(1 if failures else 0)
