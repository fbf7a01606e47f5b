//! The upstreams as the operator sees them: per route and upstream, the
//! attempts, failures, requests in flight and response time; per upstream,
//! its open connections and whether it is skipped after a failure. Read
//! live from the pools on each scrape; nothing here counts.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use super::pool::{Peer, RoutePool, Traffic};
use crate::metrics::{label_value, write_family};

/// A live view of every route's upstreams, cheap to clone; empty when
/// nothing is proxied.
#[derive(Clone, Default)]
pub struct UpstreamStats {
    routes: Vec<(String, Arc<RoutePool>)>,
}

/// One row of the view: a route's upstream, as numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamRow {
    /// The route's prefix.
    pub route: String,
    /// The upstream, as configured (`IP:PORT` or `unix:/path`).
    pub upstream: String,
    /// Attempts this route sent it.
    pub requests: u64,
    /// Those that failed.
    pub failures: u64,
    /// Requests of this route in flight to it now.
    pub in_flight: usize,
    /// Responses completed.
    pub responses: u64,
    /// The mean time of those responses, in seconds (0 before the first).
    pub mean_seconds: f64,
    /// Its connections open now, idle ones included, for every route.
    pub connections: usize,
    /// Whether it is skipped now after a failure.
    pub down: bool,
}

impl UpstreamStats {
    pub(super) fn new(routes: Vec<(String, Arc<RoutePool>)>) -> UpstreamStats {
        UpstreamStats { routes }
    }

    fn each(&self) -> impl Iterator<Item = (&str, &Arc<Peer>, &Traffic)> {
        self.routes.iter().flat_map(|(prefix, pool)| {
            pool.traffic()
                .map(move |(peer, traffic)| (prefix.as_str(), peer, traffic))
        })
    }

    /// The rows, route by route in configuration order.
    pub fn rows(&self) -> Vec<UpstreamRow> {
        let now = Instant::now();
        self.each()
            .map(|(route, peer, t)| {
                let responses = t.latency.count();
                UpstreamRow {
                    route: route.to_owned(),
                    upstream: peer.upstream.to_string(),
                    requests: t.requests.load(Relaxed),
                    failures: t.failures.load(Relaxed),
                    in_flight: t.in_flight(),
                    responses,
                    mean_seconds: if responses == 0 {
                        0.0
                    } else {
                        t.latency.sum().as_secs_f64() / responses as f64
                    },
                    connections: peer.open_connections(),
                    down: peer.is_down(now),
                }
            })
            .collect()
    }

    /// Appends the upstream families in the Prometheus text format, with
    /// `route` and `upstream` labels (nothing when nothing is proxied).
    pub fn render_prometheus(&self, out: &mut String) {
        if self.routes.is_empty() {
            return;
        }
        let labels = |route: &str, peer: &Peer| {
            format!(
                "route=\"{}\",upstream=\"{}\"",
                label_value(route),
                label_value(&peer.upstream.to_string())
            )
        };
        type Value = fn(&Traffic) -> u64;
        let counts: [(&str, &str, &str, Value); 3] = [
            (
                "corral_upstream_requests_total",
                "counter",
                "Attempts sent to the upstream by the route (a retry counts again).",
                |t| t.requests.load(Relaxed),
            ),
            (
                "corral_upstream_failures_total",
                "counter",
                "Attempts that failed: no connection, a timeout, a malformed or cut-short response.",
                |t| t.failures.load(Relaxed),
            ),
            (
                "corral_upstream_in_flight",
                "gauge",
                "Requests of the route in flight to the upstream now.",
                |t| t.in_flight() as u64,
            ),
        ];
        for (name, kind, help, value) in counts {
            write_family(out, name, kind, help);
            for (route, peer, t) in self.each() {
                let _ = writeln!(out, "{name}{{{}}} {}", labels(route, peer), value(t));
            }
        }
        let name = "corral_upstream_response_seconds";
        write_family(
            out,
            name,
            "histogram",
            "Time from the first attempt to the end of the upstream's response.",
        );
        for (route, peer, t) in self.each() {
            t.latency.render(out, name, &labels(route, peer));
        }
        // Per upstream, once, however many routes name it.
        let mut seen: Vec<&Arc<Peer>> = Vec::new();
        for (_, peer, _) in self.each() {
            if !seen.iter().any(|p| Arc::ptr_eq(p, peer)) {
                seen.push(peer);
            }
        }
        let now = Instant::now();
        type PeerValue = fn(&Peer, Instant) -> u64;
        let per_peer: [(&str, &str, PeerValue); 2] = [
            (
                "corral_upstream_connections",
                "Connections open to the upstream now, idle ones included.",
                |p, _| p.open_connections() as u64,
            ),
            (
                "corral_upstream_up",
                "0 while the upstream is skipped after a failure, else 1.",
                |p, now| u64::from(!p.is_down(now)),
            ),
        ];
        for (name, help, value) in per_peer {
            write_family(out, name, "gauge", help);
            for peer in &seen {
                let upstream = label_value(&peer.upstream.to_string());
                let _ = writeln!(
                    out,
                    "{name}{{upstream=\"{upstream}\"}} {}",
                    value(peer, now)
                );
            }
        }
    }
}
