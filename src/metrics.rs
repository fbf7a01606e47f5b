//! Counters shared by the acceptor, the parker and the workers. Counting
//! takes no lock: each counter is an atomic, read with relaxed ordering,
//! since nothing is ordered by them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident: $kind:ident ),* $(,)?) => {
        /// The server's counters and gauges.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( $(#[$doc])* pub $name: AtomicU64, )*
        }

        impl Metrics {
            /// Every metric as (name, kind, help, value), in declaration order.
            pub fn snapshot(&self) -> Vec<(&'static str, Kind, &'static str, u64)> {
                vec![$( (
                    stringify!($name),
                    Kind::$kind,
                    concat!($( stringify!($doc), )*),
                    self.$name.load(Relaxed),
                ), )*]
            }
        }
    };
}

/// Whether a metric only grows or goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only grows; exposed with a `_total` suffix.
    Counter,
    /// Goes up and down.
    Gauge,
}

counters! {
    /// Connections accepted.
    connections_accepted: Counter,
    /// Connections open now (accepted and not yet closed).
    connections_open: Gauge,
    /// Connections parked now, waiting to become readable.
    connections_parked: Gauge,
    /// Connections waiting for a worker now.
    connections_queued: Gauge,
    /// Of those, answered keep-alive connections gone round the queue while
    /// their next request has not come (up to 8 times before parking); they
    /// do not count against the queue limit.
    connections_requeued: Gauge,
    /// Connections refused with 503 because the queue or the connection cap was full.
    connections_rejected: Counter,
    /// Workers serving a connection now.
    workers_busy: Gauge,
    /// Times the queue made no progress for 10ms with every CPU's worker
    /// busy (handlers that compute or block), and other workers took their
    /// CPUs to serve it.
    worker_stalls: Counter,
    /// Requests parked now, waiting for an answer that comes later (a
    /// value being computed, a compute permit).
    requests_waiting: Gauge,
    /// Requests answered 503 because `max-waiting` requests waited already.
    waits_refused: Counter,
    /// Waiting requests answered 503 because no answer came in time: by
    /// `cache-wait-timeout`, or by the end of the shutdown drain.
    waits_timed_out: Counter,
    /// Waiting requests whose client was seen to hang up before the answer
    /// came. The parker watches a waiter once it has waited a second: one
    /// that leaves sooner and whose answer comes first is a response not
    /// sent instead.
    waiters_left: Counter,
    /// Accept calls that failed (EMFILE and the like).
    accept_errors: Counter,
    /// Requests answered by a handler.
    requests: Counter,
    /// Of those, requests from a trusted front (`--trusted-proxy`), whose
    /// client address came from its `X-Forwarded-For`.
    requests_forwarded: Counter,
    /// Requests with an `X-Forwarded-For` from a peer not trusted, so not
    /// believed: spoofing, or a front missing from `--trusted-proxy`.
    forwarded_ignored: Counter,
    /// 1xx responses.
    responses_1xx: Counter,
    /// 2xx responses.
    responses_2xx: Counter,
    /// 3xx responses.
    responses_3xx: Counter,
    /// 4xx responses.
    responses_4xx: Counter,
    /// 5xx responses.
    responses_5xx: Counter,
    /// Requests rejected for breaking the protocol.
    protocol_errors: Counter,
    /// Heads not complete before the header deadline.
    header_timeouts: Counter,
    /// Keep-alive connections closed after the idle timeout.
    idle_timeouts: Counter,
    /// Bodies that stopped making progress, or came slower than the
    /// minimum rate.
    body_timeouts: Counter,
    /// Responses abandoned because the client stopped reading.
    write_timeouts: Counter,
    /// Handlers that panicked.
    handler_panics: Counter,
    /// Response body bytes sent.
    bytes_sent: Counter,
    /// Access log lines dropped because its writer could not keep up (its
    /// file or pipe stalled), or lost to a failed write. Never a wait:
    /// requests are not slowed down by the log.
    access_log_dropped: Counter,
}

impl Metrics {
    /// Adds one to `counter`.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// Subtracts one from a gauge.
    pub fn dec(counter: &AtomicU64) {
        counter.fetch_sub(1, Relaxed);
    }

    /// Counts a response by its status class.
    pub fn count_status(&self, status: u16) {
        let c = match status {
            100..=199 => &self.responses_1xx,
            200..=299 => &self.responses_2xx,
            300..=399 => &self.responses_3xx,
            400..=499 => &self.responses_4xx,
            _ => &self.responses_5xx,
        };
        Metrics::inc(c);
    }

    /// Appends every metric in the Prometheus text exposition format
    /// (version 0.0.4), named `corral_<name>` (`_total` for counters).
    pub fn render_prometheus(&self, out: &mut String) {
        for (name, kind, help, value) in self.snapshot() {
            let (suffix, kind) = match kind {
                Kind::Counter => ("_total", "counter"),
                Kind::Gauge => ("", "gauge"),
            };
            write_family(
                out,
                &format!("corral_{name}{suffix}"),
                kind,
                &doc_text(help),
            );
            let _ = writeln!(out, "corral_{name}{suffix} {value}");
        }
    }
}

/// Holds one unit of a gauge (an open or parked connection) and gives it
/// back when dropped, so no exit path can leak the count.
#[derive(Debug)]
pub struct GaugeGuard {
    metrics: Arc<Metrics>,
    which: fn(&Metrics) -> &AtomicU64,
}

impl GaugeGuard {
    /// Adds one to the gauge `which` until the guard drops.
    pub fn new(metrics: Arc<Metrics>, which: fn(&Metrics) -> &AtomicU64) -> GaugeGuard {
        which(&metrics).fetch_add(1, Relaxed);
        GaugeGuard { metrics, which }
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        (self.which)(&self.metrics).fetch_sub(1, Relaxed);
    }
}

/// The `# HELP` and `# TYPE` lines of a metric family.
pub fn write_family(out: &mut String, name: &str, kind: &str, help: &str) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The text of a metric's doc comment as `stringify!` gives it, one
/// `doc = r" text"` per line, run together: the lines joined by spaces.
fn doc_text(raw: &'static str) -> String {
    raw.split("doc =")
        .map(|line| line.trim().trim_start_matches('r').trim_matches('"').trim())
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Upper bounds of the duration buckets, in seconds: from a cache hit
/// (well under a millisecond) to a cold computation (seconds).
pub const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0,
];

/// A latency histogram whose recording takes no lock.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros().min(u128::from(u64::MAX)) as u64, Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// The observations added up.
    pub fn sum(&self) -> Duration {
        Duration::from_micros(self.sum_micros.load(Relaxed))
    }

    /// Appends the `_bucket`, `_sum` and `_count` lines of `name` with the
    /// given label set (`route="GET /"`), buckets cumulative as the format
    /// requires.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// A label value escaped for the text format.
pub fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text() {
        let m = Metrics::default();
        Metrics::inc(&m.requests);
        let mut out = String::new();
        m.render_prometheus(&mut out);
        assert!(out.contains("# HELP corral_requests_total Requests answered by a handler.\n"));
        assert!(out.contains("# TYPE corral_requests_total counter\ncorral_requests_total 1\n"));
        assert!(out.contains("# TYPE corral_connections_open gauge\ncorral_connections_open 0\n"));
        // A doc comment of several lines is one help line.
        assert!(out.contains(
            "# HELP corral_waits_timed_out_total Waiting requests answered 503 because no \
             answer came in time: by `cache-wait-timeout`, or by the end of the shutdown drain.\n"
        ));
        assert!(!out.contains("doc ="), "{out}");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(20));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.render(&mut out, "x", "route=\"a\"");
        assert!(
            out.contains("x_bucket{route=\"a\",le=\"0.0005\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{route=\"a\",le=\"0.025\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("x_bucket{route=\"a\",le=\"30\"} 2\n"), "{out}");
        assert!(
            out.contains("x_bucket{route=\"a\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("x_count{route=\"a\"} 3\n"), "{out}");
        assert_eq!(label_value("a\"b"), "a\\\"b");
    }
}
