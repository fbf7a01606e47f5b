//! The cache's counters: atomics, so counting takes no lock, and the hit
//! counter striped over cache lines, so hits on many cores do not contend.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// The live counters: atomics, so counting takes no lock.
        #[derive(Debug, Default)]
        pub(super) struct Counters {
            $( pub(super) $name: AtomicU64, )*
        }

        /// A snapshot of a cache's counters, from
        /// [`Cache::stats`](super::Cache::stats).
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Stats {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl Counters {
            pub(super) fn snapshot(&self) -> Stats {
                Stats { $( $name: self.$name.load(Ordering::Relaxed), )* }
            }
        }

        impl Stats {
            /// Every counter as (name, value), for a text form.
            pub fn to_vec(&self) -> Vec<(&'static str, u64)> {
                vec![$( (stringify!($name), self.$name), )*]
            }
        }
    };
}

counters! {
    /// Lookups answered by a fresh stored value.
    hits,
    /// Lookups that found nothing and led or queued a computation.
    misses,
    /// Lookups that joined another caller's computation: waited for it,
    /// subscribed to it, or ran it while it was still queued.
    coalesced,
    /// Computations run, refreshes included.
    computations,
    /// Computations that returned an error or panicked.
    failures,
    /// Waiters that gave up after `wait_timeout`.
    timeouts,
    /// Computations refused: no compute permit came within
    /// `wait_timeout`, or the compute lane's queue was full.
    busy,
    /// Entries evicted to keep within the budget.
    evictions,
    /// Values returned but not stored because they were too heavy.
    not_stored,
    /// Entries stored now.
    entries,
    /// Weight of the entries stored now.
    bytes,
    /// Computations running now.
    in_flight,
    /// Time spent computing, in microseconds.
    compute_micros,
    /// Expired values served while a refresh runs.
    stale_served,
}

/// A counter split over cache lines, each thread adding to its own, so
/// threads that count at once do not contend; a read sums them.
#[derive(Default)]
pub(super) struct Striped([Padded; STRIPES]);

/// The number of stripes: enough that a few busy threads rarely share one.
/// The map's lock counts its readers in as many ([`super::brlock`]).
pub(super) const STRIPES: usize = 8;

/// One counter alone on its cache line (128 bytes covers the adjacent-line
/// prefetch of x86 and the 128-byte lines of some ARM cores).
#[derive(Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

thread_local! {
    /// This thread's stripe, handed out round-robin.
    static STRIPE: usize = {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) as usize % STRIPES
    };
}

/// This thread's stripe, below [`STRIPES`].
pub(super) fn stripe() -> usize {
    STRIPE.with(|s| *s)
}

impl Striped {
    pub(super) fn add(&self, n: u64) {
        self.0[stripe()].0.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn sum(&self) -> u64 {
        self.0.iter().map(|p| p.0.load(Ordering::Relaxed)).sum()
    }
}
