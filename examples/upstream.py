#!/usr/bin/env python3
"""A slow array service, the situation corral's proxy is for: one Python
process, one request at a time, every request recomputed.

    python3 examples/upstream.py [PORT]        # default 8000

GET /primes?below=N   the primes below N as text, one per line
GET /count            how many computations ran so far

Standard library only; numpy is used for the sieve when it is installed.
Single-threaded, HTTP/1.0: one connection at a time, closed after each
response (see Handler).
Each computation also sleeps --delay seconds (default 1), standing in for a
real model or simulation, and says so on stderr.
"""

import argparse
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

try:
    import numpy
except ImportError:  # the plain-Python sieve below does the same, slower
    numpy = None

COMPUTATIONS = 0
DELAY = 1.0


def primes_below(n):
    if n < 3:
        return []
    if numpy is not None:
        sieve = numpy.ones(n, dtype=bool)
        sieve[:2] = False
        for i in range(2, int(n**0.5) + 1):
            if sieve[i]:
                sieve[i * i :: i] = False
        return numpy.flatnonzero(sieve).tolist()
    sieve = bytearray([1]) * n
    sieve[0] = sieve[1] = 0
    for i in range(2, int(n**0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytearray(len(range(i * i, n, i)))
    return [i for i, is_prime in enumerate(sieve) if is_prime]


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.0, http.server's default: one request per connection, closed
    # after the response. This server is single-threaded and serves one
    # connection at a time, so a keep-alive connection left idle in a
    # proxy's pool would hold it and starve every other connection until
    # it timed out. corral opens a connection per request to such an app.
    protocol_version = "HTTP/1.0"

    def reply(self, status, body, cache_control):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if cache_control:
            self.send_header("Cache-Control", cache_control)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        global COMPUTATIONS
        url = urlparse(self.path)
        if url.path == "/count":
            return self.reply(200, f"{COMPUTATIONS}\n", "no-store")
        if url.path != "/primes":
            return self.reply(404, "not found\n", None)
        try:
            below = int(parse_qs(url.query).get("below", ["1000"])[0])
        except ValueError:
            return self.reply(400, "below must be a whole number\n", None)
        if not 0 <= below <= 10_000_000:
            return self.reply(400, "below must be 0 to 10000000\n", None)
        COMPUTATIONS += 1
        started = time.monotonic()
        time.sleep(DELAY)
        body = "".join(f"{p}\n" for p in primes_below(below))
        took = time.monotonic() - started
        # The answer never changes: say so, and corral keeps it.
        self.reply(200, body, "public, max-age=3600")
        # After the answer, and never fatal: with stderr gone (a closed
        # pipe) the print would raise and the client would get nothing.
        try:
            print(f"computed primes below {below} in {took:.2f}s "
                  f"(computation {COMPUTATIONS})", file=sys.stderr, flush=True)
        except OSError:
            pass

    def log_message(self, fmt, *args):
        pass


class Server(HTTPServer):
    # Connections wait in the listen backlog while one is served; the
    # default of 5 would drop the SYNs of a burst of distinct requests.
    request_queue_size = 1024


def main():
    global DELAY
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", nargs="?", type=int, default=8000)
    parser.add_argument("--delay", type=float, default=1.0)
    args = parser.parse_args()
    DELAY = args.delay
    server = Server(("127.0.0.1", args.port), Handler)
    print(f"upstream listening on 127.0.0.1:{server.server_address[1]}",
          file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
