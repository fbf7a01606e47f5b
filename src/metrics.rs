//! Counters shared by the acceptor, the parker and the workers. Counting
//! takes no lock: each counter is an atomic, read with relaxed ordering,
//! since nothing is ordered by them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// The server's counters.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( $(#[$doc])* pub $name: AtomicU64, )*
        }

        impl Metrics {
            /// Every counter as (name, value), for the text form.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$( (stringify!($name), self.$name.load(Relaxed)), )*]
            }
        }
    };
}

counters! {
    /// Connections accepted.
    connections_accepted,
    /// Connections open now (accepted and not yet closed).
    connections_open,
    /// Connections parked now, waiting to become readable.
    connections_parked,
    /// Connections refused with 503 because the queue or the connection cap was full.
    connections_rejected,
    /// Accept calls that failed (EMFILE and the like).
    accept_errors,
    /// Requests answered by a handler.
    requests,
    /// Responses by status class.
    responses_1xx,
    /// 2xx responses.
    responses_2xx,
    /// 3xx responses.
    responses_3xx,
    /// 4xx responses.
    responses_4xx,
    /// 5xx responses.
    responses_5xx,
    /// Requests rejected for breaking the protocol.
    protocol_errors,
    /// Heads not complete before the header deadline (408).
    header_timeouts,
    /// Keep-alive connections closed after the idle timeout.
    idle_timeouts,
    /// Bodies that stopped making progress.
    body_timeouts,
    /// Responses abandoned because the client stopped reading.
    write_timeouts,
    /// Handlers that panicked.
    handler_panics,
    /// Response body bytes sent.
    bytes_sent,
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

    /// The text form: one `corral_<name> <value>` line per counter.
    pub fn render(&self) -> String {
        self.snapshot()
            .into_iter()
            .map(|(n, v)| format!("corral_{n} {v}\n"))
            .collect()
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
