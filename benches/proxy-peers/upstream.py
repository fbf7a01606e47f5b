#!/usr/bin/env python3
"""The slow upstream every proxy of the proxy-peers benchmark stands in
front of. Threaded (each request sleeps on its own, so distinct keys are in
flight at once), keep-alive, standard library only.

    upstream.py PORT

GET /slow/KEY?d=SECONDS  sleeps d (default 0.5), then 1 KiB, max-age=600
GET /pass/KEY?d=SECONDS  the same, but Cache-Control: private (never shared)
GET /stale/KEY           1 KiB, max-age=1, stale-if-error=60
GET /big                 1 MiB, max-age=600
GET /stats?path=P        {"count": requests for P, "sent_ns": when the
                         last answer to P was written (Unix ns),
                         "in_flight": requests being answered}
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

LOCK = threading.Lock()
COUNTS = {}
SENT = {}
IN_FLIGHT = [0]
SMALL = b"x" * 1023 + b"\n"
BIG = b"y" * (1024 * 1024)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def send(self, body, cache_control):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache_control)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def do_GET(self):
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path == "/stats":
            path = query.get("path", [""])[0]
            with LOCK:
                body = json.dumps({"count": COUNTS.get(path, 0),
                                   "sent_ns": SENT.get(path, 0),
                                   "in_flight": IN_FLIGHT[0]})
            return self.send(body.encode(), "no-store")
        with LOCK:
            COUNTS[url.path] = COUNTS.get(url.path, 0) + 1
            IN_FLIGHT[0] += 1
        try:
            delay = float(query.get("d", ["0.5"])[0])
            if url.path.startswith("/slow/"):
                time.sleep(delay)
                self.send(SMALL, "public, max-age=600")
            elif url.path.startswith("/pass/"):
                time.sleep(delay)
                self.send(SMALL, "private")
            elif url.path.startswith("/stale/"):
                self.send(SMALL, "max-age=1, stale-if-error=60")
            elif url.path == "/big":
                self.send(BIG, "public, max-age=600")
            else:
                self.send_error(404)
            with LOCK:
                SENT[url.path] = time.time_ns()
        finally:
            with LOCK:
                IN_FLIGHT[0] -= 1

    def log_message(self, fmt, *args):
        pass


class Server(ThreadingHTTPServer):
    request_queue_size = 4096
    daemon_threads = True


if __name__ == "__main__":
    Server(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
