#!/usr/bin/env python3
"""The proxy-peers scenarios; run.sh sets up and calls this.

    bench.py DIR ROUNDS

Starts the upstream (upstream.py), corral, nginx and Varnish, runs (a) to
(d) ROUNDS times with the servers in turn, then (e) once, and prints the
medians as a Markdown table (every round's numbers go to stderr).
Servers are pinned to CPU 0, the upstream and the load to CPU 1.
"""

import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import time

DIR, ROUNDS = sys.argv[1], int(sys.argv[2])
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LOAD = os.path.join(DIR, "load")
UP = 18600
PORTS = {"corral": 18601, "nginx": 18602, "varnish": 18603}
CLIENTS = 1000
procs = {}


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def nobody(cmd):
    """Runs cmd as nobody when we are root: the peers need no privilege."""
    if os.geteuid() == 0:
        return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + cmd
    return cmd


def start(name, cmd, cpu):
    out = open(os.path.join(DIR, name + ".log"), "w")
    procs[name] = subprocess.Popen(["taskset", "-c", str(cpu)] + cmd,
                                   stdout=out, stderr=subprocess.STDOUT)


def stop(name):
    p = procs.pop(name)
    p.terminate()
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def get(port, path, timeout=10.0):
    """(status, headers, body) of GET path, or (0, {}, error)."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("GET", path, headers={"Host": "bench"})
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body
    except OSError as e:
        return 0, {}, str(e).encode()


def wait_ready(port, path):
    for _ in range(200):
        if get(port, path, 1.0)[0]:
            return
        time.sleep(0.05)
    raise SystemExit(f"nothing answers on {port}; see {DIR}/*.log")


def upstream_stats(path):
    status, _, body = get(UP, "/stats?path=" + path)
    return json.loads(body) if status == 200 else {"count": -1, "sent_ns": 0, "in_flight": -1}


def upstream_idle(within=60.0):
    end = time.time() + within
    while time.time() < end and upstream_stats("")["in_flight"] != 0:
        time.sleep(0.1)


def start_upstream():
    start("upstream", ["python3", os.path.join(HERE, "upstream.py"), str(UP)], 1)
    wait_ready(UP, "/stats")


def start_servers():
    os.chmod(DIR, 0o777)
    start("corral", [os.path.join(ROOT, "target/release/corral"),
                     "--listen", f"127.0.0.1:{PORTS['corral']}",
                     "--admin-listen", "127.0.0.1:18611",
                     "--proxy", f"/=127.0.0.1:{UP}",
                     # The upstream is threaded: let every request go at
                     # once, as the peers do (the default, 32, is for
                     # single-threaded apps).
                     "--proxy-max-connections", "1024",
                     "--queue", "4096", "--max-connections", "20000",
                     "--access-log", "off", "--log-level", "warn"], 0)
    nginx = os.path.join(DIR, "nginx")
    os.makedirs(nginx + "/cache", exist_ok=True)
    os.chmod(nginx, 0o777)
    os.chmod(nginx + "/cache", 0o777)
    with open(nginx + "/nginx.conf", "w") as f:
        f.write(f"""
worker_processes 1;
worker_rlimit_nofile 65536;
pid {nginx}/nginx.pid;
error_log {nginx}/error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {nginx}/body;
    proxy_temp_path {nginx}/proxy;
    fastcgi_temp_path {nginx}/fastcgi;
    uwsgi_temp_path {nginx}/uwsgi;
    scgi_temp_path {nginx}/scgi;
    proxy_cache_path {nginx}/cache levels=1:2 keys_zone=app:16m max_size=1g inactive=1h use_temp_path=off;
    upstream app {{ server 127.0.0.1:{UP}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{PORTS['nginx']};
        keepalive_requests 100000000;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache app;
            # Its lock timeout and age stay at their 5 s defaults: past
            # them, waiters go upstream themselves, uncached.
            proxy_cache_lock on;
            proxy_cache_use_stale error timeout updating http_500 http_502 http_503 http_504;
            proxy_read_timeout 60s;
        }}
    }}
}}
""")
    start("nginx", nobody(["nginx", "-p", nginx, "-e", nginx + "/error.log",
                           "-c", nginx + "/nginx.conf", "-g", "daemon off;"]), 0)
    vcl = os.path.join(DIR, "default.vcl")
    with open(vcl, "w") as f:
        f.write(f"""vcl 4.1;
backend app {{ .host = "127.0.0.1"; .port = "{UP}"; .first_byte_timeout = 60s; }}
""")
    # The built-in VCL: Cache-Control honoured, private responses
    # hit-for-miss, concurrent misses on the waiting list, 10 s grace.
    start("varnish", nobody(["varnishd", "-F", "-j", "none",
                             "-a", f"127.0.0.1:{PORTS['varnish']}",
                             "-T", "127.0.0.1:18613", "-f", vcl,
                             "-s", "malloc,1g", "-n", os.path.join(DIR, "varnish")]), 0)
    for port in PORTS.values():
        wait_ready(port, "/stats?path=ready")


def run(cmd, cpu=1):
    out = subprocess.run(["taskset", "-c", str(cpu)] + cmd, capture_output=True,
                         text=True, timeout=300)
    return out.stdout.strip()


def fields(line):
    return dict(kv.split("=", 1) for kv in line.split())


def scenario_a(name, rnd):
    path = f"/slow/a-{name}-{rnd}"
    out = fields(run([LOAD, "burst", f"127.0.0.1:{PORTS[name]}", path + "?d=0.5", str(CLIENTS)]))
    st = upstream_stats(path)
    after = (int(out["last_ns"]) - st["sent_ns"]) / 1e6
    delivered = (int(out["last_stamp_ns"]) - st["sent_ns"]) / 1e6
    log(f"  (a) {name}: {out} upstream={st} last answer delivered {delivered:.1f} ms after")
    return {"a_upstream": st["count"], "a_after_ms": after, "a_delivered_ms": delivered,
            "a_total_ms": float(out["total_ms"]), "a_ok": out["statuses"]}


def scenario_floor():
    """What (a) measures with no proxy: the same clients, answered by a
    loop that writes every answer at once."""
    p = subprocess.Popen(["taskset", "-c", "0", "python3", os.path.join(HERE, "floor.py"),
                          "18620", str(CLIENTS)], stdout=subprocess.PIPE, text=True)
    p.stdout.readline()
    out = fields(run([LOAD, "burst", "127.0.0.1:18620", "/", str(CLIENTS)]))
    first = int((p.stdout.readline().split() or [0])[0])
    p.wait(timeout=10)
    after = (int(out["last_ns"]) - first) / 1e6
    delivered = (int(out["last_stamp_ns"]) - first) / 1e6
    log(f"  (a) floor: {out} first write {first}: last client {after:.1f} ms, "
        f"last answer delivered {delivered:.1f} ms after")
    return after, delivered


def scenario_b(name):
    get(PORTS[name], "/big")
    get(PORTS[name], "/big")
    out = run(["wrk", "-t1", "-c16", "-d4s", f"http://127.0.0.1:{PORTS[name]}/big"])
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    log(f"  (b) {name}: {m.group(1) if m else out!r}" + (f" non-2xx={non2xx.group(1)}" if non2xx else ""))
    return {"b_rps": float(m.group(1)) if m else 0.0}


def scenario_c(name, rnd):
    hot = f"/slow/hot-{name}?d=0"
    get(PORTS[name], hot)
    out = fields(run([LOAD, "cold-and-probe", f"127.0.0.1:{PORTS[name]}",
                      f"/slow/c-{name}-{rnd}-{{i}}?d=3", str(CLIENTS), hot, "1500"]))
    log(f"  (c) {name}: {out}")
    upstream_idle()
    return {"c_p50_ms": int(out["p50_us"]) / 1000, "c_p99_ms": int(out["p99_us"]) / 1000,
            "c_errors": int(out["errors"])}


def scenario_d(name, rnd):
    path = f"/pass/d-{name}-{rnd}"
    out = fields(run([LOAD, "burst", f"127.0.0.1:{PORTS[name]}", path + "?d=0.5", "200"]))
    st = upstream_stats(path)
    log(f"  (d) {name}: {out} upstream={st['count']}")
    return {"d_total_ms": float(out["total_ms"]), "d_upstream": st["count"]}


def scenario_e():
    res = {}
    for name, port in PORTS.items():
        get(port, f"/stale/e-{name}")
    stop("upstream")
    time.sleep(2.5)  # past max-age=1: every entry is stale now
    for name, port in PORTS.items():
        s, h, _ = get(port, f"/stale/e-{name}")
        f, _, _ = get(port, f"/slow/e-fresh-{name}?d=0")
        res[name] = {"e_stale": s, "e_fresh": f}
        log(f"  (e) {name}: stale key {s} {h.get('x-cache', h.get('x-varnish', ''))}, fresh key {f}")
    start_upstream()
    restarted = time.time()
    left = set(PORTS)
    k = 0
    while left and time.time() - restarted < 30:
        for name in sorted(left):
            k += 1
            if get(PORTS[name], f"/slow/e-rec-{name}-{k}?d=0", 2.0)[0] == 200:
                res[name]["e_recovery_ms"] = (time.time() - restarted) * 1000
                left.discard(name)
        time.sleep(0.01)
    for name in left:
        res[name]["e_recovery_ms"] = float("inf")
    return res


def main():
    log(f"machine: {os.cpu_count()} CPUs; {os.uname().release}")
    start_upstream()
    start_servers()
    rounds = {name: [] for name in PORTS}
    floor = []
    try:
        for rnd in range(ROUNDS):
            floor.append(scenario_floor())
            order = list(PORTS)[rnd % 3:] + list(PORTS)[:rnd % 3]
            log(f"round {rnd + 1}: {' '.join(order)}")
            for name in order:
                r = {}
                r.update(scenario_a(name, rnd))
                upstream_idle()
                r.update(scenario_b(name))
                r.update(scenario_c(name, rnd))
                r.update(scenario_d(name, rnd))
                upstream_idle()
                rounds[name].append(r)
        e = scenario_e()
    finally:
        for name in list(procs):
            stop(name)
    med = {n: {k: statistics.median(r[k] for r in rs)
               for k in rs[0] if isinstance(rs[0][k], (int, float))}
           for n, rs in rounds.items()}
    names = list(PORTS)
    print(f"| {ROUNDS} rounds, medians | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))

    def row(label, fmt):
        print(f"| {label} | " + " | ".join(fmt(n) for n in names) + " |")

    row("(a) upstream requests for 1 000 clients", lambda n: f"{med[n]['a_upstream']:g}")
    row("(a) upstream's answer → last answer delivered, ms", lambda n: f"{med[n]['a_delivered_ms']:.1f}")
    print(f"| (a) floor: a write loop's first write → last answer delivered, ms | "
          f"{statistics.median(f[1] for f in floor):.1f} | | |")
    row("(a) upstream's answer → last client, ms", lambda n: f"{med[n]['a_after_ms']:.1f}")
    print(f"| (a) floor: the same clients answered by a write loop, ms | "
          f"{statistics.median(f[0] for f in floor):.1f} | | |")
    row("(a) all 1 000 answered, ms after sending", lambda n: f"{med[n]['a_total_ms']:.0f}")
    row("(b) hits/s, cached 1 MiB (wrk -c16)", lambda n: f"{med[n]['b_rps']:,.0f}")
    row("(b) ratio to corral", lambda n: f"{med[n]['b_rps'] / med['corral']['b_rps']:.2f}")
    row("(c) probe of a cached key, p50 / p99 ms", lambda n: f"{med[n]['c_p50_ms']:.2f} / {med[n]['c_p99_ms']:.2f}")
    row("(d) 200 clients, uncacheable: total ms", lambda n: f"{med[n]['d_total_ms']:.0f}")
    row("(d) upstream requests", lambda n: f"{med[n]['d_upstream']:g}")
    row("(e) stale key, upstream dead: status", lambda n: str(e[n]["e_stale"]))
    row("(e) fresh key, upstream dead: status", lambda n: str(e[n]["e_fresh"]))
    row("(e) first 200 after restart, ms", lambda n: f"{e[n]['e_recovery_ms']:.0f}")
    print()
    for n in names:
        print(f"<!-- {n} rounds: {json.dumps(rounds[n])} -->")


if __name__ == "__main__":
    main()
