//! The operator's endpoints, served on their own listener
//! (`--admin-listen`) and never on the public port:
//!
//! - `GET /metrics`: the Prometheus text exposition format (0.0.4): server,
//!   pool, connection and cache counters, handler time per route, and the
//!   proxy's upstreams;
//! - `GET /status`: a page for people: uptime, traffic, workers, connections,
//!   the cache and its largest entries, the upstreams;
//! - `POST /cache/purge`: drops every entry, `?key=K` one, or `?prefix=P`
//!   those that start with P.
//!
//! A request in, a response out. No sockets, no threads.

use std::fmt::Write as _;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use crate::cached::ResponseCache;
use crate::http::{Request, Response};
use crate::metrics::{write_family, Metrics};
use crate::proxy::UpstreamStats;
use crate::router::{RouteStats, Router};

/// What the operator's endpoints report on.
#[derive(Clone)]
pub struct AdminState {
    /// The server's counters.
    pub metrics: Arc<Metrics>,
    /// The shared cache.
    pub cache: ResponseCache,
    /// Handler time per route of the public router.
    pub routes: RouteStats,
    /// When the server started.
    pub started: Instant,
    /// The size of the worker pool.
    pub workers: usize,
    /// The proxy's upstreams (empty when nothing is proxied).
    pub upstreams: UpstreamStats,
    /// The server's shutdown flag: set while it drains.
    pub draining: Arc<AtomicBool>,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    let s1 = state.clone();
    let s2 = state.clone();
    Router::new()
        .get("/", |_: &mut Request| {
            Response::text(
                200,
                "GET /metrics, GET /status, POST /cache/purge[?key=K|?prefix=P]\n",
            )
        })
        .get("/metrics", move |_: &mut Request| {
            Response::new(200)
                .with_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                .with_header("Cache-Control", "no-store")
                .with_body(prometheus(&s1))
        })
        .get("/status", move |_: &mut Request| {
            Response::new(200)
                .with_header("Content-Type", "text/html; charset=utf-8")
                .with_header("Cache-Control", "no-store")
                .with_body(status_page(&s2))
        })
        .post("/cache/purge", move |req: &mut Request| {
            purge(req, &state.cache)
        })
}

/// The whole `/metrics` text.
pub fn prometheus(s: &AdminState) -> String {
    let mut out = String::with_capacity(8 * 1024);
    s.metrics.render_prometheus(&mut out);
    write_family(
        &mut out,
        "corral_workers",
        "gauge",
        "Size of the worker pool.",
    );
    let _ = writeln!(out, "corral_workers {}", s.workers);
    write_family(
        &mut out,
        "corral_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
    );
    let _ = writeln!(
        out,
        "corral_uptime_seconds {}",
        s.started.elapsed().as_secs()
    );
    write_family(
        &mut out,
        "corral_draining",
        "gauge",
        "1 once shutdown has begun (/healthz answers 503), else 0.",
    );
    let _ = writeln!(
        out,
        "corral_draining {}",
        u8::from(s.draining.load(Relaxed))
    );
    let stats = s.cache.stats();
    for (name, value) in stats.to_vec() {
        let (full, kind, help, value) = match name {
            "entries" | "bytes" | "in_flight" => (
                format!("corral_cache_{name}"),
                "gauge",
                cache_help(name),
                value.to_string(),
            ),
            "compute_micros" => (
                "corral_cache_compute_seconds_total".to_owned(),
                "counter",
                "Time spent computing values.",
                (value as f64 / 1e6).to_string(),
            ),
            _ => (
                format!("corral_cache_{name}_total"),
                "counter",
                cache_help(name),
                value.to_string(),
            ),
        };
        write_family(&mut out, &full, kind, help);
        let _ = writeln!(out, "{full} {value}");
    }
    write_family(
        &mut out,
        "corral_cache_max_bytes",
        "gauge",
        "Byte budget of the cache.",
    );
    let _ = writeln!(out, "corral_cache_max_bytes {}", s.cache.config().max_bytes);
    let lane = s.cache.lane();
    let lane_metrics = [
        (
            "corral_compute_threads",
            "gauge",
            "Threads the compute lane may run.",
            lane.threads() as u64,
        ),
        (
            "corral_compute_threads_started",
            "gauge",
            "Compute-lane threads started so far: they start as computations need them.",
            lane.threads_started() as u64,
        ),
        (
            "corral_compute_busy",
            "gauge",
            "Compute-lane threads running a computation now.",
            lane.busy() as u64,
        ),
        (
            "corral_compute_queued",
            "gauge",
            "Computations waiting for a compute-lane thread now.",
            lane.queued() as u64,
        ),
        (
            "corral_compute_queue_max",
            "gauge",
            "Computations that may wait for a compute-lane thread.",
            lane.max_queued() as u64,
        ),
        (
            "corral_compute_jobs_total",
            "counter",
            "Jobs the compute lane has run.",
            lane.jobs_run(),
        ),
        (
            "corral_compute_refused_total",
            "counter",
            "Jobs refused because the compute queue was full.",
            lane.jobs_refused(),
        ),
    ];
    for (name, kind, help, value) in lane_metrics {
        write_family(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
    s.routes.render_prometheus(&mut out);
    s.upstreams.render_prometheus(&mut out);
    out
}

fn cache_help(name: &str) -> &'static str {
    match name {
        "hits" => "Lookups answered by a stored value.",
        "misses" => "Lookups that computed the value.",
        "coalesced" => "Lookups that waited for another request's computation.",
        "computations" => "Computations run.",
        "failures" => "Computations that failed or panicked.",
        "timeouts" => "Waiters that gave up.",
        "busy" => "Computations refused for want of a compute slot.",
        "evictions" => "Entries evicted to stay within the budget.",
        "not_stored" => "Values served but too large to store.",
        "entries" => "Entries stored.",
        "bytes" => "Bytes stored.",
        "in_flight" => "Computations running.",
        "stale_served" => "Expired values served while a refresh ran.",
        _ => "Cache counter.",
    }
}

/// Escapes text for HTML.
fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn status_page(s: &AdminState) -> String {
    let m = &s.metrics;
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Relaxed);
    let up = s.started.elapsed().as_secs();
    let stats = s.cache.stats();
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0));
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>corral status</title>\
         <style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 12px;text-align:left}}\
         td.n{{text-align:right}}</style></head><body><h1>corral {}</h1><table>",
        env!("CARGO_PKG_VERSION")
    );
    let rows = [
        (
            "uptime",
            format!(
                "{}d {}h {}m {}s",
                up / 86400,
                up / 3600 % 24,
                up / 60 % 60,
                up % 60
            ),
        ),
        ("requests", get(&m.requests).to_string()),
        (
            "workers busy",
            format!("{} of {}", get(&m.workers_busy), s.workers),
        ),
        ("connections open", get(&m.connections_open).to_string()),
        ("connections parked", get(&m.connections_parked).to_string()),
        ("connections queued", get(&m.connections_queued).to_string()),
        (
            "requests waiting for an answer",
            format!(
                "{} ({} timed out, {} clients left, {} refused)",
                get(&m.requests_waiting),
                get(&m.waits_timed_out),
                get(&m.waiters_left),
                get(&m.waits_refused)
            ),
        ),
        (
            "connections refused (503)",
            get(&m.connections_rejected).to_string(),
        ),
        (
            "cache",
            format!(
                "{} entries, {} of {}",
                stats.entries,
                mib(stats.bytes),
                mib(s.cache.config().max_bytes)
            ),
        ),
        (
            "cache lookups",
            format!(
                "{} hits, {} misses, {} coalesced, {} failures, {} evictions",
                stats.hits, stats.misses, stats.coalesced, stats.failures, stats.evictions
            ),
        ),
        (
            "compute lane",
            format!(
                "{} of {} threads busy ({} started), {} queued (at most {}), {} refused",
                s.cache.lane().busy(),
                s.cache.lane().threads(),
                s.cache.lane().threads_started(),
                s.cache.lane().queued(),
                s.cache.lane().max_queued(),
                s.cache.lane().jobs_refused()
            ),
        ),
    ];
    for (k, v) in rows {
        let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", html(k), html(&v));
    }
    out.push_str("</table><h2>Largest entries</h2><table><tr><th>key</th><th>size</th></tr>");
    for (key, bytes) in s.cache.largest(10) {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"n\">{}</td></tr>",
            html(&key),
            mib(bytes)
        );
    }
    out.push_str("</table>");
    let upstreams = s.upstreams.rows();
    if !upstreams.is_empty() {
        out.push_str(
            "<h2>Upstreams</h2><table><tr><th>route</th><th>upstream</th><th>state</th>\
             <th>requests</th><th>failures</th><th>in flight</th><th>connections</th>\
             <th>mean response</th></tr>",
        );
        for u in upstreams {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{:.1} ms</td></tr>",
                html(&u.route),
                html(&u.upstream),
                if u.down {
                    "skipped after a failure"
                } else {
                    "up"
                },
                u.requests,
                u.failures,
                u.in_flight,
                u.connections,
                u.mean_seconds * 1000.0
            );
        }
        out.push_str("</table>");
    }
    out.push_str("</body></html>\n");
    out
}

fn purge(req: &Request, cache: &ResponseCache) -> Response {
    let pairs = req.query_pairs();
    let purged = match pairs.as_slice() {
        [] => {
            let n = cache.len();
            cache.clear();
            n
        }
        [(k, key)] if k == "key" => usize::from(cache.invalidate(key)),
        [(k, prefix)] if k == "prefix" => cache.invalidate_prefix(prefix),
        _ => {
            return Response::error(400, "give nothing (purge all), key=K, or prefix=P");
        }
    };
    log::info!(
        "cache purge {:?}: {purged} entries dropped",
        req.query_string().unwrap_or("")
    );
    Response::text(200, format!("purged {purged}\n"))
}
