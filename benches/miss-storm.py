#!/usr/bin/env python3
"""A storm of cold requests beside probes: misses must not hold the workers.

usage: benches/miss-storm.py BINARY [--clients 1000] [--scenario distinct|one|both]
                             [--runs 2] [--size 256] [--max-iter 5000] [--one-size 512]
                             [--probe-seconds 40] [--probe-every-ms 20] [--baseline-seconds 5]
                             [--client-timeout 120] [--label TEXT]

Starts BINARY (corral) with its default workers and compute concurrency
(only --listen 127.0.0.1:0, --admin-listen 127.0.0.1:0 and --access-log off),
a fresh server for every run of every scenario, and stops it at the end:

- distinct: fetches one small Mandelbrot array twice (X-Cache miss, then
  hit), then opens CLIENTS connections at once, each asking for a different
  cold SIZE x SIZE array at MAX_ITER iterations (about a second of CPU each).
  Meanwhile two probe processes start a GET every PROBE_EVERY_MS, each on a
  fresh connection, one for the cached array, one for /healthz, until every
  storm client has its answer or PROBE_SECONDS pass (and, for comparison,
  for BASELINE_SECONDS before the storm, alone). Probing is open loop
  (a probe starts on time even if the last is unanswered), so a server that
  stalls for ten seconds collects ten seconds' worth of stalled probes; a
  probe that fails counts as never answered (∞) in the percentiles. It
  reports probe latency, and how the storm clients ended: status (503s with
  or without Retry-After, and their reasons), reset, end of stream before a
  status line, or client timeout.
- one: CLIENTS connections at once for ONE cold ONE_SIZE x ONE_SIZE array
  (a few seconds of CPU). It reports the computations the admin /metrics
  counted, whether every client got 200 with the same bytes (compared byte
  for byte), the total time, the most threads the server had
  (/proc/PID/task every 50 ms, with their names), and its resident memory
  at rest and at peak (VmRSS before, VmHWM after).

Both sample the server's gauges from /metrics every 500 ms (a sample the
admin listener does not answer is counted as failed) and the machine's load
average before and after: the machine may be shared.

Every array is asked for as format=raw, so one key is one computation (an
encoded format would add a second, the encoding). The arrays sit inside the
main cardioid, where every pixel runs all MAX_ITER iterations, so each
distinct key costs the same. Every client, probe included, waits up to
CLIENT_TIMEOUT for its answer, so the server's own deadlines decide how a
request ends; a run lasts at most PROBE_SECONDS + CLIENT_TIMEOUT.
"""
import argparse
import asyncio
import collections
import json
import os
import platform
import re
import shlex
import socket
import statistics
import subprocess
import sys
import threading
import time

WARM_PATH = "/mandelbrot?width=64&height=64&max_iter=100&format=raw"
CENTRE = (-0.2, 0.0)  # inside the main cardioid: every pixel iterates to the end
SCALE = 1e-6


def mandelbrot_path(size, max_iter, cx, cy):
    return (f"/mandelbrot?width={size}&height={size}&max_iter={max_iter}"
            f"&cx={cx:.9f}&cy={cy:.9f}&scale={SCALE}&format=raw")


def request(path):
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode()


def parse_head(head):
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


def fetch(port, path, timeout):
    """GET on a fresh connection: (status, headers, body). Raises on failure."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request(path))
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise EOFError("end of stream before the head")
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        status, headers = parse_head(head)
        want = int(headers.get("content-length", 0))
        while len(body) < want:
            chunk = s.recv(65536)
            if not chunk:
                raise EOFError("end of stream in the body")
            body += chunk
        return status, headers, body


def metrics(admin_port, timeout=5):
    status, _, body = fetch(admin_port, "/metrics", timeout)
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def percentile(xs, q):
    """The nearest-rank percentile: a value that was measured."""
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[max(0, -(-len(xs) * q // 100) - 1)]


# ---------------------------------------------------------------------------
# The probe: a child process of its own, so that the storm's event loop and
# the samplers never delay a probe's clock (no shared GIL).

def probe_main(port, path, seconds, every_ms, timeout):
    """Starts a GET every EVERY_MS whether or not the last one was answered
    (open loop: a stalled server collects as many stalled probes as the
    time it stalls, not one), until SECONDS pass or stdin closes; then waits
    for the answers and prints [answered 200, ms, how it ended] for each."""
    async def run():
        stop = asyncio.Event()
        asyncio.get_running_loop().add_reader(0, lambda: os.read(0, 64) or stop.set())
        tasks, end, next_at = [], time.monotonic() + seconds, time.monotonic()
        while time.monotonic() < end and not stop.is_set():
            tasks.append(asyncio.create_task(get(port, path, timeout)))
            # A fixed schedule, without catching up in a burst after a lag.
            next_at = max(next_at + every_ms / 1e3, time.monotonic())
            try:
                await asyncio.wait_for(stop.wait(), next_at - time.monotonic())
            except TimeoutError:
                pass
        return await asyncio.gather(*tasks)
    ended = lambda r: f"{r['kind']} {r['reason']!r}" if "reason" in r else r["kind"]
    print(json.dumps([[r["kind"] == "200", r["secs"] * 1e3, ended(r)] for r in asyncio.run(run())]))


def start_probe(port, path, args, seconds=None):
    return subprocess.Popen([sys.executable, __file__, "--x-probe", str(port), path,
                             str(seconds or args.probe_seconds), str(args.probe_every_ms),
                             str(args.client_timeout)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def finish_probe(p, args):
    # Closing its stdin stops it; then it reports.
    out, _ = p.communicate(timeout=args.client_timeout + 10)
    return json.loads(out)


def probe_summary(results):
    """Percentiles count a probe that failed as never answered (infinite)."""
    ms = [t if good else float("inf") for good, t, _ in results]
    ok = [t for good, t, _ in results if good]
    failed = collections.Counter(what for good, _, what in results if not good)
    return {"n": len(results), "ok": sum(1 for good, _, _ in results if good), "failed": dict(failed),
            "p50": percentile(ms, 50), "p99": percentile(ms, 99), "max": max(ms, default=float("nan")),
            "p50_ok": percentile(ok, 50), "p99_ok": percentile(ok, 99), "max_ok": max(ok, default=float("nan"))}


# ---------------------------------------------------------------------------
# The server and what it uses.

class Server:
    def __init__(self, binary):
        self.p = subprocess.Popen([binary, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
                                   "--access-log", "off"], stderr=subprocess.PIPE, text=True)
        self.port = self.admin = None
        self.summary = ""
        self.log = collections.deque(maxlen=20)
        # The admin line comes before the listening line; both come at once.
        for line in self.p.stderr:
            self.log.append(line.rstrip())
            if m := re.search(r"operator endpoints .* on 127\.0\.0\.1:(\d+)", line):
                self.admin = int(m.group(1))
            if m := re.search(r"listening on 127\.0\.0\.1:(\d+); (.*)", line):
                self.port, self.summary = int(m.group(1)), m.group(2)
            if self.port and self.admin:
                break
        if not (self.port and self.admin):
            self.stop()
            sys.exit("server did not start:\n" + "\n".join(self.log))
        # Keep draining the log, so a full pipe never blocks the server.
        threading.Thread(target=lambda: [self.log.append(l.rstrip()) for l in self.p.stderr],
                         daemon=True).start()

    def setting(self, name):
        m = re.search(rf"\b{name}=(\d+)", self.summary)
        return int(m.group(1)) if m else None

    def proc(self, field):
        """A `VmRSS`-style line of /proc/PID/status, in MiB."""
        with open(f"/proc/{self.p.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(timeout=20)  # the drain is bounded by shutdown-timeout (10 s)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


class Sampler(threading.Thread):
    """The server's thread count every 50 ms (names at the peak), and its
    gauges from /metrics every 500 ms (a sample that fails is counted)."""

    GAUGES = ("corral_requests_waiting", "corral_connections_queued", "corral_workers_busy",
              "corral_cache_in_flight", "corral_connections_open")

    def __init__(self, server):
        super().__init__(daemon=True)
        self.server, self.halt = server, threading.Event()
        self.max_threads, self.names = 0, collections.Counter()
        self.gauges, self.metric_failures = {}, 0

    def run(self):
        threading.Thread(target=self.sample_metrics, daemon=True).start()
        task = f"/proc/{self.server.p.pid}/task"
        while not self.halt.wait(0.05):
            try:
                tids = os.listdir(task)
                if len(tids) > self.max_threads:
                    names = collections.Counter()
                    for tid in tids:
                        try:
                            with open(f"{task}/{tid}/comm") as f:
                                names[f.read().strip()] += 1
                        except OSError:
                            pass
                    self.max_threads, self.names = len(tids), names
            except OSError:
                return

    def sample_metrics(self):
        while not self.halt.wait(0.5):
            try:
                m = metrics(self.server.admin, timeout=2)
            except Exception:
                self.metric_failures += 1
                continue
            for g in self.GAUGES:
                if g in m:
                    self.gauges[g] = max(self.gauges.get(g, 0), m[g])


class Bodies:
    """The distinct bodies seen, compared byte for byte: hashing a thousand
    1 MiB bodies would cost the client seconds of CPU inside the storm."""

    def __init__(self):
        self.seen = []

    def index(self, body):
        for i, b in enumerate(self.seen):
            if b == body:
                return i
        if len(self.seen) < 10:
            self.seen.append(body)
        return len(self.seen) - 1


async def get(port, path, timeout, bodies=None):
    """One GET on a fresh connection: how it ended (the status, or reset,
    eof, cut, timeout), and when (seconds from its start)."""
    t = time.perf_counter()
    out = {"status": None, "kind": None, "retry_after": False, "x_cache": None, "body": None}
    try:
        async with asyncio.timeout(timeout):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            try:
                w.write(request(path))
                await w.drain()
                status, headers = parse_head(await r.readuntil(b"\r\n\r\n"))
                out.update(status=status, retry_after="retry-after" in headers,
                           x_cache=headers.get("x-cache"), head_secs=time.perf_counter() - t)
                body = await r.readexactly(int(headers.get("content-length", 0)))
                out.update(kind=str(status), body=bodies.index(body) if bodies is not None and status == 200 else None)
                if status != 200:
                    out["reason"] = body[:80].decode("utf-8", "replace").strip()
            finally:
                w.close()
    except TimeoutError:
        out["kind"] = "timeout"
    except asyncio.IncompleteReadError as e:
        out["kind"] = "cut" if out["status"] else ("eof" if not e.partial else "eof in head")
    except ConnectionResetError:
        out["kind"] = "cut" if out["status"] else "reset"
    except OSError as e:
        out["kind"] = f"connect: {e.strerror}" if out["status"] is None else "cut"
    out["secs"] = time.perf_counter() - t
    return out


async def storm(port, paths, timeout):
    # A backstop above the clients' own timeout: the storm always ends.
    async with asyncio.timeout(timeout + 30):
        bodies = Bodies()
        return await asyncio.gather(*(get(port, p, timeout, bodies) for p in paths))


def metrics_after(admin_port, seconds=15):
    """/metrics once the storm is over, retried for SECONDS: a server whose
    workers and queue are still full of the storm may not answer (or answer
    503), and then the deltas are unknown."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            return metrics(admin_port, timeout=max(0.1, end - time.monotonic()))
        except Exception:
            time.sleep(0.5)
    return {}


def load_average():
    """The 1-minute load average: the machine is shared, so say how busy it was."""
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def run_storm(server, paths, args, probes=()):
    sampler = Sampler(server)
    sampler.start()
    load = load_average()
    before = metrics(server.admin)
    probe_procs = [start_probe(server.port, p, args) for p in probes]
    try:
        t = time.perf_counter()
        results = asyncio.run(storm(server.port, paths, args.client_timeout))
        total = time.perf_counter() - t
        probe_results = [probe_summary(finish_probe(p, args)) for p in probe_procs]
    finally:
        sampler.halt.set()
        for p in probe_procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    sampler.join()
    after = metrics_after(server.admin)
    delta = lambda name: int(after[name] - before[name]) if name in after else float("nan")
    kinds = collections.Counter(r["kind"] for r in results)
    return {
        "results": results, "kinds": kinds, "total": total, "probes": probe_results,
        "computations": delta("corral_cache_computations_total"),
        "coalesced": delta("corral_cache_coalesced_total"),
        "busy": delta("corral_cache_busy_total"),
        "hits": delta("corral_cache_hits_total"),
        "max_threads": sampler.max_threads, "names": dict(sampler.names),
        "gauges": sampler.gauges, "metric_failures": sampler.metric_failures,
        "hwm": server.proc("VmHWM"), "load": (load, load_average()),
    }


# ---------------------------------------------------------------------------
# The scenarios.

def distinct(args):
    server = Server(args.binary)
    try:
        rest = server.proc("VmRSS")
        seen = [fetch(server.port, WARM_PATH, 10)[1].get("x-cache") for _ in range(2)]
        if seen != ["miss", "hit"]:
            sys.exit(f"warm-up: X-Cache {seen}, expected miss then hit")
        # The same probes with no storm: what this machine's noise alone costs.
        quiet = [start_probe(server.port, p, args, args.baseline_seconds) for p in (WARM_PATH, "/healthz")]
        time.sleep(args.baseline_seconds)  # closing their stdin would stop them at once
        baseline = [probe_summary(finish_probe(p, args)) for p in quiet]
        cx, cy = CENTRE
        paths = [mandelbrot_path(args.size, args.max_iter, cx + i * 1e-6, cy) for i in range(args.clients)]
        r = run_storm(server, paths, args, probes=(WARM_PATH, "/healthz"))
        r.update(rest=rest, server=server, baseline=baseline)
        return r
    finally:
        server.stop()


def one(args):
    server = Server(args.binary)
    try:
        rest = server.proc("VmRSS")
        path = mandelbrot_path(args.one_size, args.max_iter, CENTRE[0], CENTRE[1] + 0.01)
        r = run_storm(server, [path] * args.clients, args)
        r.update(rest=rest, server=server,
                 bodies=len({x["body"] for x in r["results"] if x["status"] == 200}),
                 x_cache=collections.Counter(x["x_cache"] for x in r["results"] if x["status"] == 200))
        return r
    finally:
        server.stop()


def time_one_key(args):
    """The cost of one distinct key on this machine, measured alone."""
    server = Server(args.binary)
    try:
        cx, cy = CENTRE
        t = time.perf_counter()
        status, _, _ = fetch(server.port, mandelbrot_path(args.size, args.max_iter, cx, cy - 0.01), 60)
        alone = time.perf_counter() - t
        t = time.perf_counter()
        fetch(server.port, mandelbrot_path(args.one_size, args.max_iter, cx, cy - 0.02), 60)
        return status, alone, time.perf_counter() - t, server.setting("workers"), \
            server.setting("compute-concurrency")
    finally:
        server.stop()


# ---------------------------------------------------------------------------
# The report.

def med(rows, key):
    xs = [key(r) for r in rows]
    xs = [x for x in xs if x == x]  # drop NaN
    return statistics.median(xs) if xs else float("nan")


def table(header, rows, cells):
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i == 0 else "--:" for i in range(len(header))) + "|")
    for i, r in enumerate(rows, 1):
        print("| " + " | ".join([str(i)] + [c(r) for c in cells]) + " |")


def num(x, fmt):
    if x != x:
        return "–"  # NaN: nothing was measured
    return "∞" if x == float("inf") else format(x, fmt)  # ∞: a probe that failed


def ms3(p):
    return f"{num(p['p50'], '.2f')} / {num(p['p99'], '.2f')} / {num(p['max'], '.1f')}"


def other_kinds(kinds, known):
    rest = {k: v for k, v in kinds.items() if k not in known and v}
    return ", ".join(f"{k} {v}" for k, v in sorted(rest.items())) or "0"


def report_distinct(runs, args):
    print(f"\n### distinct: {args.clients} cold keys at once, probes every {args.probe_every_ms} ms "
          f"on fresh connections\n")
    known = ("200", "503", "reset", "eof", "timeout")
    header = ["run", "cached p50 / p99 / max ms", "/healthz p50 / p99 / max ms", "probes ok / sent",
              "200", "503 (with Retry-After)", "reset", "EOF, no status", "client timeout", "other",
              "last answer s", "computations · busy", "max threads"]
    table(header, runs, [
        lambda r: ms3(r["probes"][0]),
        lambda r: ms3(r["probes"][1]),
        lambda r: " · ".join(f"{p['ok']}/{p['n']}" for p in r["probes"]),
        lambda r: str(r["kinds"]["200"]),
        lambda r: f"{r['kinds']['503']} ({sum(1 for x in r['results'] if x['status'] == 503 and x['retry_after'])})",
        lambda r: str(r["kinds"]["reset"]),
        lambda r: str(r["kinds"]["eof"]),
        lambda r: str(r["kinds"]["timeout"]),
        lambda r: other_kinds(r["kinds"], known),
        lambda r: f"{r['total']:.1f}",
        lambda r: f"{num(r['computations'], 'g')} · {num(r['busy'], 'g')}",
        lambda r: str(r["max_threads"]),
    ])
    if len(runs) > 1:
        m = lambda f: med(runs, f)
        probe = lambda i: ms3({q: m(lambda r: r["probes"][i][q]) for q in ("p50", "p99", "max")})
        print(f"| median | {probe(0)} | {probe(1)} | "
              f"| {m(lambda r: r['kinds']['200']):g} | {m(lambda r: r['kinds']['503']):g} "
              f"| {m(lambda r: r['kinds']['reset']):g} | {m(lambda r: r['kinds']['eof']):g} "
              f"| {m(lambda r: r['kinds']['timeout']):g} | | {m(lambda r: r['total']):.1f} "
              f"| {num(m(lambda r: r['computations']), 'g')} | {m(lambda r: r['max_threads']):g} |")
    print()
    for i, r in enumerate(runs, 1):
        quiet = " · ".join(f"{name} {ms3(p)}" for name, p in zip(("cached", "/healthz"), r["baseline"]))
        print(f"- run {i}: the same probes for {args.baseline_seconds:g} s before the storm, alone "
              f"(p50 / p99 / max ms): {quiet}")
        for name, p in zip(("cached", "/healthz"), r["probes"]):
            if p["failed"]:
                print(f"- run {i}: {name} probes that failed: {p['failed']}; answered ones took "
                      f"{num(p['p50_ok'], '.2f')} / {num(p['p99_ok'], '.2f')} / {num(p['max_ok'], '.1f')} ms "
                      f"(p50 / p99 / max)")
        secs = collections.defaultdict(list)
        for x in r["results"]:
            secs[x["kind"]].append(x["secs"])
        spread = "; ".join(f"{k}: {min(v):.1f}–{statistics.median(v):.1f}–{max(v):.1f}"
                           for k, v in sorted(secs.items()))
        print(f"- run {i}: storm clients ended after (min–median–max s) {spread}")
        reasons = collections.Counter(f"{x['status']} {x['reason']!r}" for x in r["results"] if "reason" in x)
        if reasons:
            print(f"- run {i}: bodies of the answers other than 200: {dict(reasons)}")
        print(f"- run {i}: peak gauges {fmt_gauges(r)}; threads at the peak {r['names']}")
        print(f"- run {i}: {fmt_load(r)}")


def fmt_load(r):
    return f"load average (1 min) {r['load'][0]:.1f} before the storm, {r['load'][1]:.1f} after"


def fmt_gauges(r):
    g = ", ".join(f"{k.removeprefix('corral_')} {v:g}" for k, v in r["gauges"].items()) or "none"
    return g + (f" ({r['metric_failures']} /metrics samples failed)" if r["metric_failures"] else "")


def last_head(r):
    """When the last status line came, from the start of its client."""
    return max((x["head_secs"] for x in r["results"] if "head_secs" in x), default=float("nan"))


def report_one(runs, args):
    print(f"\n### one: {args.clients} clients on one cold key at once\n")
    header = ["run", "200", "other", "distinct bodies", "computations", "X-Cache miss / coalesced / hit",
              "last status line s", "total s", "max threads", "RSS at rest MiB", "VmHWM MiB"]
    table(header, runs, [
        lambda r: str(r["kinds"]["200"]),
        lambda r: other_kinds(r["kinds"], ("200",)),
        lambda r: str(r["bodies"]),
        lambda r: str(r["computations"]),
        lambda r: " / ".join(str(r["x_cache"][k]) for k in ("miss", "coalesced", "hit")),
        lambda r: num(last_head(r), ".2f"),
        lambda r: f"{r['total']:.2f}",
        lambda r: str(r["max_threads"]),
        lambda r: f"{r['rest']:.1f}",
        lambda r: f"{r['hwm']:.1f}",
    ])
    if len(runs) > 1:
        m = lambda f: med(runs, f)
        print(f"| median | {m(lambda r: r['kinds']['200']):g} | | {m(lambda r: r['bodies']):g} "
              f"| {m(lambda r: r['computations']):g} | | {num(m(last_head), '.2f')} | {m(lambda r: r['total']):.2f} "
              f"| {m(lambda r: r['max_threads']):g} | {m(lambda r: r['rest']):.1f} | {m(lambda r: r['hwm']):.1f} |")
    print()
    for i, r in enumerate(runs, 1):
        print(f"- run {i}: peak gauges {fmt_gauges(r)}; threads at the peak {r['names']}")
        print(f"- run {i}: {fmt_load(r)}")


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {len(os.sched_getaffinity(0))} CPUs (nproc), Linux {platform.release()}"


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--x-probe":
        port, path, seconds, every, timeout = sys.argv[2:7]
        return probe_main(int(port), path, float(seconds), float(every), float(timeout))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binary")
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--scenario", choices=("distinct", "one", "both"), default="both")
    ap.add_argument("--runs", type=int, default=2, help="fresh server per run; medians over runs")
    ap.add_argument("--size", type=int, default=256, help="width and height of a distinct key")
    ap.add_argument("--max-iter", type=int, default=5000)
    ap.add_argument("--one-size", type=int, default=512, help="width and height of the one key")
    ap.add_argument("--probe-seconds", type=float, default=40)
    ap.add_argument("--probe-every-ms", type=float, default=20)
    ap.add_argument("--baseline-seconds", type=float, default=5, help="probes before the storm, alone")
    ap.add_argument("--client-timeout", type=float, default=120)
    ap.add_argument("--label", default="", help="printed in the heading, e.g. the commit")
    args = ap.parse_args()

    version = subprocess.run([args.binary, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"## miss-storm {args.label}".rstrip())
    print(f"\n- command: `{shlex.join(['python3'] + sys.argv)}`")
    print(f"- binary: {args.binary} ({version})")
    print(f"- machine: {machine()}")
    status, alone, one_alone, workers, lanes = time_one_key(args)
    print(f"- server: workers={workers} compute-concurrency={lanes} (defaults for this machine)")
    print(f"- one distinct key ({args.size}x{args.size}, max_iter {args.max_iter}) alone: "
          f"{alone:.2f} s (status {status}); the one key ({args.one_size}x{args.one_size}): {one_alone:.2f} s")
    sys.stdout.flush()

    if args.scenario in ("distinct", "both"):
        runs = []
        for _ in range(args.runs):
            runs.append(distinct(args))
            print(f"  (distinct run {len(runs)}: storm {runs[-1]['total']:.1f} s)", file=sys.stderr, flush=True)
        report_distinct(runs, args)
        sys.stdout.flush()
    if args.scenario in ("one", "both"):
        runs = []
        for _ in range(args.runs):
            runs.append(one(args))
            print(f"  (one run {len(runs)}: storm {runs[-1]['total']:.1f} s)", file=sys.stderr, flush=True)
        report_one(runs, args)
        print(f"\nThreads: {workers} corral-worker, corral-parker, corral-signals (SIGHUP), the main "
              f"thread (the acceptor, named after the binary's file), and corral-compute where the "
              f"binary has a compute lane; corral-watchdog only under systemd.")


if __name__ == "__main__":
    main()
