//! The single-flight cache. A value that takes seconds to compute is
//! computed once, kept in memory within a byte budget, and handed to every
//! later request on any thread as a clone of the same value (an `Arc`, so no
//! bytes are copied).
//!
//! This module knows nothing of HTTP: the app maps its [`Error`]s to
//! statuses, and the server keeps the global instance in a `Lazy` static.
//!
//! ```
//! use std::sync::Arc;
//! use corral::cache::{Cache, CacheConfig, LookupOutcome};
//! use once_cell::sync::Lazy;
//!
//! static SQUARES: Lazy<Cache<String, Arc<Vec<u64>>>> = Lazy::new(|| {
//!     Cache::new(CacheConfig::default(), |v: &Arc<Vec<u64>>| 8 * v.len() as u64)
//! });
//!
//! let key = "squares/1000".to_string();
//! let first = SQUARES
//!     .get_or_compute(&key, || Ok::<_, String>(Arc::new((0..1000u64).map(|i| i * i).collect())))
//!     .unwrap();
//! assert_eq!(first.outcome, LookupOutcome::Miss);
//! let again = SQUARES
//!     .get_or_compute(&key, || Err::<Arc<Vec<u64>>, _>("not called on a hit"))
//!     .unwrap();
//! assert_eq!(again.outcome, LookupOutcome::Hit);
//! assert!(Arc::ptr_eq(&first.value, &again.value));
//! assert_eq!(SQUARES.bytes(), 8000);
//! ```
//!
//! # Locks
//!
//! - `map`: one readers-writer lock over the entries, the in-flight slots
//!   and the remembered failures: not std's `RwLock` but a big-reader lock
//!   (`brlock`, see below), the same for the order of locks.
//! - each slot's `Mutex` and `Condvar`: the result, its waiters, the
//!   computation while it is queued, and the subscribers of
//!   [`Cache::get_or_submit`].
//! - the compute permits' `Mutex` and `Condvar`.
//! - the process-wide waits-for table's `Mutex`.
//! - the compute lane's `Mutex` and `Condvar`: its queue of jobs.
//!
//! Lock order: none of these is taken while another is held, so there is no
//! order to get wrong and no lock is held while waiting or computing. The
//! map lock is released before a slot is completed, before anyone waits on a
//! slot or for a permit, before a job is handed to the lane, and before any
//! computation runs. A new slot gets its queued computation under the map's
//! write lock, but that is a move into a box: no lock, no user code. A
//! slot's subscribers are called after its lock is released (they are user
//! code, and may look keys up themselves), and a lane job runs with the
//! lane's lock released. If a change ever needs two at once, take the map
//! lock before a slot's, never the reverse, and never wait or compute while
//! holding the map lock. Never take the map lock while holding it: a
//! second read lock on a thread that holds one deadlocks once a writer
//! waits (with std's `RwLock` it may too).
//!
//! Every hit takes the map's read lock, so that lock must cost a hit on one
//! core nothing on another. std's `RwLock` keeps one reader count, written
//! by every read lock and unlock: on two cores that word's cache line moves
//! between them on every hit, and two threads served about as many hits as
//! one. The map's lock is instead a big-reader lock (`brlock`, in the
//! spirit of BRAVO, Dice and Kogan 2019, and of Linux's `percpu-rwsem`):
//! each thread counts itself in one of eight reader counters, each on its
//! own cache line (the stripe its hits are counted in), and only reads the
//! writer's flag. A writer raises the flag and waits for every count to
//! fall to zero; readers that come meanwhile step back and wait for it. It
//! is still one lock, with the same semantics: what a lookup decides under
//! the read lock it decides on one consistent map, and the write lock
//! excludes every reader. Writers (misses, stores, invalidations) pay a
//! walk over the eight counters, well under a microsecond beside the
//! computation a miss runs. The alternatives lost: a map sharded by key
//! (quick_cache's way) gives up the one consistent map that
//! `invalidate_prefix`, `clear` and the budget rely on; serving hits from
//! a snapshot outside the lock (RCU) needs a copy of the map per write, or
//! `unsafe` memory reclamation, where this needs one small module below
//! std. The lock is model-checked with `loom` and stress-tested (see
//! `brlock`).
//!
//! # What a lookup does
//!
//! [`Cache::get_or_compute`] returns the value and how it was obtained, a
//! [`LookupOutcome`]:
//!
//! - `Hit`: a fresh entry was found under the read lock. A hit takes no write
//!   lock and moves nothing; it only sets the entry's visited bit, and only
//!   if it was clear, so a hot entry's cache line is not written on every hit.
//!   The read lock itself writes only this thread's reader counter.
//! - `Miss`: nothing was there, so this caller became the key's leader. It put
//!   an in-flight slot in the map under a brief write lock, computed with no
//!   lock held, then stored the value and removed the slot under the write
//!   lock, and woke that key's waiters (only them).
//! - `Coalesced`: another caller was already computing the key, so this one
//!   waited on that slot and got the same value. Concurrent misses of one key
//!   run the computation once; misses of different keys run in parallel.
//! - `Stale`: from [`Cache::get_or_compute_swr`] only. The entry had expired,
//!   so its old value was served at once while the compute lane recomputes
//!   it (stale-while-revalidate, as in RFC 5861).
//!
//! # The compute lane
//!
//! A request worker must not hold its thread while a value is computed:
//! with a few workers, a handful of cold keys would stall every other
//! request, hits included. So each cache owns a [`Lane`]:
//! `compute_concurrency` threads, started on first use, and a FIFO queue of
//! at most `max_queued` computations waiting for one.
//! [`Cache::get_or_submit`] never blocks and never computes on its caller's
//! thread; it calls its `done` exactly once:
//!
//! - a hit or a remembered failure: at once, before it returns;
//! - a key in flight: `done` is subscribed to the slot (`Coalesced`);
//! - a miss: it makes the slot with the computation stored in it,
//!   subscribes `done` (`Miss`), and queues a lane task that takes the
//!   computation out of the slot and leads it like any leader (permit,
//!   `catch_unwind`, store, answer). If the queue is full, the slot fails
//!   with [`Error::Busy`] at once, for every subscriber and waiter.
//!
//! Stale-while-revalidate refreshes run on the lane the same way, so the
//! process's threads stay bounded: request workers, each cache's lane, and
//! a few fixed threads.
//!
//! A queued computation is run by whoever takes it out of its slot first.
//! A blocking lookup that finds a slot whose computation is still queued
//! takes it and runs it itself, as the slot's leader, instead of waiting.
//! It may itself be running on a lane thread (a computation that looks up
//! the key it is built from), and the queued job may sit behind every lane
//! thread, all blocked the same way: waiting would deadlock the lane. The
//! lane's task then finds the slot's computation gone and does nothing.
//! The computation is taken under the slot's lock, so it runs once.
//!
//! Subscribers are called on the thread that completes the slot (a lane
//! thread, or one that ran the computation itself), after its lock is
//! released, each inside `catch_unwind`, with a clone of the value. Unlike
//! waiters, they are not timed out by the cache: whoever waits for `done`
//! keeps its own deadline (the server parks a request for a bounded
//! time). A subscriber whose client has gone stays in the slot until the
//! slot completes; that is bounded by the computation, and each costs a
//! boxed closure.
//!
//! # Deadlines and failures
//!
//! A waiter gives up after `wait_timeout` with [`Error::Timeout`]; the leader
//! keeps computing and still stores its value. (A subscriber has no such
//! deadline; see above.) At most `compute_concurrency` computations run at
//! once. A leader waits for a permit under the same deadline, and if none
//! comes it removes its slot and fails itself, its waiters and its
//! subscribers with [`Error::Busy`].
//!
//! A computation that returns an error or panics (caught with
//! `catch_unwind`) fails every current waiter at once with the same error;
//! none of them retries in turn. The failure is remembered for `error_ttl`,
//! ±25% so that keys that failed together do not retry together, and
//! lookups in that window get it at once without computing. The error is
//! kept as its `Display` text: waiters may pass closures with other error
//! types, and a remembered failure outlives the closure.
//!
//! No lock is held while user code runs (the computation, the weigher, the
//! error's `Display`), all of which runs inside `catch_unwind`, so a panic
//! poisons nothing. Locks are still taken through `into_inner` on poison.
//! The key's `Hash`, `Eq` and `Clone` and the value's `Clone` do run under
//! the map lock and must not panic (an `Arc`'s clone cannot).
//!
//! # Recursion
//!
//! A computation that asks for its own key, directly or through other keys
//! (A computes, asks for B, B computes, asks for A), gets
//! [`Error::Recursive`] at once instead of waiting for itself. Each in-flight
//! slot records its leader thread, and a process-wide table records the slot
//! each blocked thread waits on: the edges of a waits-for graph. Before
//! waiting, a thread follows slot → its leader → the slot that leader waits
//! on → and so on. If the walk comes back to this thread, waiting would
//! deadlock. The walk and the thread's own entry in the table are made under
//! one mutex, so of two threads closing a cycle at the same moment, the
//! second sees the first. The same walk catches the direct case (the slot's
//! leader is this thread) and cycles through several caches. The
//! alternatives lost: a thread-local stack of keys finds cycles on one thread
//! only, and the wait deadline alone finds them `wait_timeout` late.
//!
//! A computation that fails after one of its own lookups was refused this
//! way fails with [`Error::Recursive`] too, whatever error it made of the
//! refusal, so the HTTP layer answers 500 (a bug) rather than 503 (retry).
//!
//! A subscriber does not block, so it closes no cycle and is not checked.
//! A slot whose computation is still queued has no leader yet; a lookup
//! that finds it runs the computation instead of waiting, and becomes the
//! leader the walk finds.
//!
//! A computation nested in another on the same thread runs under the outer
//! one's compute permit. Asking for a second permit would deadlock a cache
//! with one, and the outer computation is not running meanwhile. A thread
//! waiting for another thread's computation does keep its permit, so when
//! every permit is held by a computation waiting for a key whose leader waits
//! for a permit, that leader gives up after `wait_timeout` with
//! [`Error::Busy`], and the error travels back up the chain. Keep
//! `compute_concurrency` above the depth of such chains.
//!
//! # Budget and eviction
//!
//! Each value is weighed once, by the weigher given to [`Cache::new`], and
//! the sum of the stored weights never exceeds `max_bytes`: room is made by
//! evicting, under the same write lock, before a value goes in. A value
//! heavier than `max_entry_bytes` (or `max_bytes`) is returned to its leader
//! and waiters but not stored, and counted in `not_stored`.
//!
//! Eviction is SIEVE (Zhang et al., NSDI 2024): entries sit in insertion
//! order; a hand moves from the oldest towards the newest, clearing visited
//! bits, and evicts the first entry whose bit was already clear. Survivors
//! stay where they are. It matches or beats LRU's miss ratio on most of the
//! paper's traces while a hit stays a read: LRU moves the entry to the front
//! on every hit, which needs the write lock. CLOCK would also do; SIEVE evicts new, never-hit entries
//! sooner.
//!
//! # Expiry and invalidation
//!
//! An entry lives until it is evicted or invalidated, unless its computation
//! gave it a time to live ([`Cache::get_or_compute_ttl`]). An expired entry
//! is not a hit: `get_or_compute` recomputes it like a miss, while
//! `get_or_compute_swr` serves it as `Stale` and queues one refresh on the
//! lane, which needs a `Send + 'static` closure. If that refresh fails, the
//! stale value keeps being served until `error_ttl` runs out and another
//! refresh is tried. If the lane's queue is full, the stale value is served
//! all the same, and the next lookup tries again.
//!
//! [`Cache::invalidate`], [`Cache::invalidate_prefix`] and [`Cache::clear`]
//! drop entries and remembered failures, and detach in-flight slots: their
//! computations finish and answer their waiters, but their values (computed
//! from what was just invalidated) are not stored, and the next lookup
//! computes afresh.
//!
//! # Where the parts live
//!
//! This file holds the public types and [`Cache`]'s methods. Beside it:
//! `map` (the map, its in-flight slots and remembered failures, and what a
//! lookup decides and does), `brlock` (the map's lock), `sieve` (the stored entries in SIEVE's
//! queue), `waits_for` (cycle detection), `permits` (compute permits),
//! `lane` (the compute lane's threads and queue), `fill` (single flight for
//! values from the caller's own I/O: [`Cache::fill`]), `counters`
//! ([`Stats`] and the striped hit counter) and `tests`.

mod brlock;
mod counters;
mod fill;
mod lane;
mod map;
mod permits;
mod sieve;
#[cfg(test)]
mod submit_tests;
#[cfg(test)]
mod tests;
mod waits_for;

use crate::priority::Priority;
use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

pub use counters::Stats;
pub use fill::{Fill, Filler, Joiner};
pub use lane::{Job, Lane};

use brlock::BrLock;
use counters::{Counters, Striped};
use map::{queued, Inner, Map, Now, Step};
use permits::Permits;
use waits_for::REFUSED;

/// Limits and timeouts for one cache.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Budget for the weights of all stored values. Default 256 MiB: room for
    /// dozens of the multi-megabyte arrays this cache exists for on a modest
    /// machine; size it to yours.
    pub max_bytes: u64,
    /// Heavier values are returned but not stored. Default a quarter of the
    /// default budget, so one value cannot flush most of the cache. memcached
    /// caps items at 1 MB (`-I`); our values are larger, so the cap follows
    /// the budget instead.
    pub max_entry_bytes: u64,
    /// How long a caller waits for another caller's computation, or for a
    /// compute permit, before giving up. Default 30 s. nginx's
    /// `proxy_cache_lock_timeout` is 5 s, but then nginx asks the upstream
    /// itself; a waiter here has no such fallback and our values take
    /// seconds. 30 s stays under the 60 s `proxy_read_timeout` of an nginx in
    /// front.
    pub wait_timeout: Duration,
    /// How long a failed computation is remembered (±25%). Default 1 s:
    /// a failing key is tried about once a second instead of in a hot loop,
    /// and a transient failure clears before a client's retry. Zero
    /// remembers nothing.
    pub error_ttl: Duration,
    /// Computations running at once, at least 1, and the number of the
    /// cache's compute-lane threads. Default the number of CPUs
    /// (`available_parallelism`): computations are CPU-bound, and more only
    /// adds switching.
    pub compute_concurrency: usize,
    /// Computations waiting for a compute-lane thread, beyond those
    /// running; past it, a lookup that would queue one gets
    /// [`Error::Busy`] at once instead.
    pub max_queued: usize,
    /// How the compute lane's threads are scheduled beside the request
    /// workers. Default [`Priority::Idle`]: a hit or a health check does
    /// not wait behind a computation for a CPU.
    pub compute_priority: Priority,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_bytes: 256 << 20,
            max_entry_bytes: 64 << 20,
            wait_timeout: Duration::from_secs(30),
            error_ttl: Duration::from_secs(1),
            compute_concurrency: thread::available_parallelism().map_or(1, |n| n.get()),
            // A backstop against memory, not a tuning knob: a queued
            // computation is a boxed closure and a slot, and each stands for
            // parked requests whose own deadline already bounds how long
            // they wait. 1024 matches the request queue's default (Puma's
            // backlog), so by default neither queue is the tighter one.
            max_queued: 1024,
            compute_priority: Priority::default(),
        }
    }
}

/// Why a lookup has no value. Cheap to clone: every waiter of a failed
/// computation gets the same one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The computation returned an error; this is its `Display` text.
    Failed(Arc<str>),
    /// The computation panicked; this is the panic message.
    Panicked(Arc<str>),
    /// Another caller's computation did not finish within `wait_timeout`.
    Timeout,
    /// The computation asked, directly or through other keys, for the key it
    /// is computing.
    Recursive,
    /// No compute permit came free within `wait_timeout`, or the compute
    /// lane's queue was full.
    Busy,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Failed(msg) => write!(f, "computation failed: {msg}"),
            Error::Panicked(msg) => write!(f, "computation panicked: {msg}"),
            Error::Timeout => f.write_str("timed out waiting for the value (retry later)"),
            Error::Recursive => f.write_str("recursive computation: the value depends on itself"),
            Error::Busy => f.write_str("too many computations running (retry later)"),
        }
    }
}

impl std::error::Error for Error {}

/// How a lookup got its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupOutcome {
    /// A fresh stored value.
    Hit,
    /// This caller computed the value.
    Miss,
    /// This caller waited for another caller's computation.
    Coalesced,
    /// An expired value, served while one refresh runs.
    Stale,
}

/// A value and how it was obtained.
#[derive(Clone, Debug)]
pub struct Lookup<V> {
    /// The value; a clone of the one stored.
    pub value: V,
    /// Where it came from.
    pub outcome: LookupOutcome,
}

/// A shared, byte-budgeted, single-flight cache. Cloning it is cheap and
/// gives another handle to the same cache.
///
/// Keys are hashed with `S`, by default std's `RandomState` (SipHash with
/// random keys), which resists collision floods from keys that clients
/// choose; [`Cache::with_hasher`] takes a faster one for trusted keys.
pub struct Cache<K, V, S = RandomState> {
    inner: Arc<Inner<K, V, S>>,
}

impl<K, V, S> Clone for Cache<K, V, S> {
    fn clone(&self) -> Self {
        Cache {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, V> Cache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync,
    V: Clone + Send + Sync,
{
    /// An empty cache. `weigher` gives the bytes a value counts against the
    /// budget; it is called once per computed or inserted value, with no
    /// lock held.
    pub fn new(config: CacheConfig, weigher: fn(&V) -> u64) -> Self {
        Cache::with_hasher(config, weigher, RandomState::new())
    }
}

impl<K, V, S> Cache<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync,
    V: Clone + Send + Sync,
    S: BuildHasher + Clone + Send + Sync,
{
    /// An empty cache whose keys are hashed by `hasher`.
    pub fn with_hasher(mut config: CacheConfig, weigher: fn(&V) -> u64, hasher: S) -> Self {
        config.compute_concurrency = config.compute_concurrency.max(1);
        Cache {
            inner: Arc::new(Inner {
                permits: Permits::new(config.compute_concurrency),
                lane: Lane::new(config.compute_concurrency, config.max_queued)
                    .with_priority(config.compute_priority),
                config,
                weigher,
                map: BrLock::new(Map::new(hasher.clone())),
                hasher,
                stats: Counters::default(),
                hits: Striped::default(),
            }),
        }
    }

    /// The value for `key`: stored, computed by `compute` (once, however
    /// many callers miss at the same time), or an error. The value is kept
    /// until evicted or invalidated.
    pub fn get_or_compute<E: fmt::Display>(
        &self,
        key: &K,
        compute: impl FnOnce() -> Result<V, E>,
    ) -> Result<Lookup<V>, Error> {
        self.get_or_compute_ttl(key, || compute().map(|value| (value, None)))
    }

    /// Like [`get_or_compute`](Self::get_or_compute), but the computation
    /// also says how long its value lives: `Some(ttl)`, or `None` for
    /// until evicted.
    pub fn get_or_compute_ttl<E: fmt::Display>(
        &self,
        key: &K,
        compute: impl FnOnce() -> Result<(V, Option<Duration>), E>,
    ) -> Result<Lookup<V>, Error> {
        let step = self.inner.step(key, false, || None);
        let result = self.inner.resolve(key, step, compute);
        if result.as_ref().is_err_and(|e| *e == Error::Recursive) {
            // Seen by the computation this lookup may be part of.
            REFUSED.with(|r| r.set(true));
        }
        result
    }

    /// Like [`get_or_compute_ttl`](Self::get_or_compute_ttl), but an
    /// expired value is served at once as [`LookupOutcome::Stale`] while the
    /// cache's compute lane recomputes it; concurrent stale lookups share
    /// that refresh. With nothing stored at all, this computes like a miss.
    pub fn get_or_compute_swr<E, F>(&self, key: &K, compute: F) -> Result<Lookup<V>, Error>
    where
        K: 'static,
        V: 'static,
        S: 'static,
        E: fmt::Display,
        F: FnOnce() -> Result<(V, Option<Duration>), E> + Send + 'static,
    {
        // Stored in the slot, so that a lookup which must not wait for the
        // lane can run it (see "The compute lane" in the module doc).
        match self.inner.step(key, true, || Some(queued(compute))) {
            Step::Refresh(slot, stale) => {
                self.inner.submit(key, &slot);
                Ok(self.inner.served(stale, LookupOutcome::Stale))
            }
            step => self.inner.settle(key, step),
        }
    }

    /// Looks `key` up without blocking and without computing on this
    /// thread, and calls `done` exactly once with the outcome: before this
    /// returns for a hit, a remembered failure, or a computation the lane
    /// refused ([`Error::Busy`]); otherwise later, on the thread that
    /// completes the key's computation (a compute-lane thread, or a caller
    /// that ran the queued computation itself). A miss queues `compute` on
    /// the cache's compute lane; a key already being computed shares that
    /// computation, as [`LookupOutcome::Coalesced`].
    ///
    /// `done` should be quick: it runs on the computing thread, with no
    /// lock held. The cache does not time it out; the caller's own deadline
    /// does (the server's, for a parked request).
    pub fn get_or_submit<E, F, D>(&self, key: &K, compute: F, done: D)
    where
        K: 'static,
        V: 'static,
        S: 'static,
        E: fmt::Display,
        F: FnOnce() -> Result<(V, Option<Duration>), E> + Send + 'static,
        D: FnOnce(Result<Lookup<V>, Error>) + Send + 'static,
    {
        match self.inner.step(key, false, || Some(queued(compute))) {
            Step::Done(found) => done(Ok(self.inner.served(found.value, found.outcome))),
            Step::Failed(error) => done(Err(error)),
            // This thread does not wait, so it cannot close a cycle.
            Step::Wait(slot) => {
                self.inner
                    .subscribe(&slot, LookupOutcome::Coalesced, Box::new(done));
            }
            Step::Lead(slot) | Step::Refresh(slot, _) => {
                self.inner
                    .subscribe(&slot, LookupOutcome::Miss, Box::new(done));
                self.inner.submit(key, &slot);
            }
        }
    }

    /// The cache's compute lane, for its gauges and counters.
    pub fn lane(&self) -> &Lane {
        &self.inner.lane
    }

    /// The fresh stored value for `key`, if any. Never computes or waits.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let now = Now::default();
        let map = self.inner.map.read();
        let entry = map.entries.get(key).filter(|e| e.is_fresh(&now))?;
        entry.visit();
        self.inner.hits.add(1);
        Some(entry.value.clone())
    }

    /// Stores `value` for `key` until evicted, replacing any stored value,
    /// within the budget. Returns false if it was too heavy to store.
    pub fn insert(&self, key: K, value: V) -> bool {
        self.inner.insert(key, value, None)
    }

    /// Stores `value` for `key` for `ttl`, like [`insert`](Self::insert).
    pub fn insert_with_ttl(&self, key: K, value: V, ttl: Duration) -> bool {
        self.inner.insert(key, value, Some(ttl))
    }

    /// Drops the value and any remembered failure for `key`, and detaches
    /// its computation if one runs (see the module doc). Returns whether a
    /// value was stored.
    pub fn invalidate(&self, key: &K) -> bool {
        let mut map = self.inner.map.write();
        map.failures.remove(key);
        map.slots.remove(key);
        let removed = map.entries.remove(key).is_some();
        self.inner.sync(&map);
        removed
    }

    /// Drops everything: values, remembered failures, and the in-flight
    /// slots (their computations finish but are not stored).
    pub fn clear(&self) {
        let mut map = self.inner.map.write();
        let old = std::mem::replace(&mut *map, Map::new(self.inner.hasher.clone()));
        self.inner.sync(&map);
        drop(map);
        // Freeing megabytes takes a while; readers need not wait for it.
        drop(old);
    }

    /// Number of stored values.
    pub fn len(&self) -> usize {
        self.inner.map.read().entries.len()
    }

    /// Whether no value is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Weight of the stored values, never more than `max_bytes`.
    pub fn bytes(&self) -> u64 {
        self.inner.stats.bytes.load(Ordering::Relaxed)
    }

    /// The `n` heaviest stored values' keys and weights, heaviest first, for
    /// a status page.
    pub fn largest(&self, n: usize) -> Vec<(K, u64)> {
        let map = self.inner.map.read();
        let mut weights: Vec<(u64, &K)> = map.entries.iter().map(|e| (e.weight, &e.key)).collect();
        weights.sort_unstable_by_key(|&(w, _)| std::cmp::Reverse(w));
        weights
            .into_iter()
            .take(n)
            .map(|(w, k)| (k.clone(), w))
            .collect()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let mut stats = self.inner.stats.snapshot();
        stats.hits = self.inner.hits.sum();
        stats
    }

    /// The configuration in force.
    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }
}

impl<K, V, S> Cache<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + Borrow<str>,
    V: Clone + Send + Sync,
    S: BuildHasher + Clone + Send + Sync,
{
    /// Like [`invalidate`](Self::invalidate) for every key that starts with
    /// `prefix`. Returns how many values were dropped. It visits every key.
    pub fn invalidate_prefix(&self, prefix: &str) -> usize {
        let matches = |k: &K| k.borrow().starts_with(prefix);
        let mut map = self.inner.map.write();
        map.failures.retain(|k, _| !matches(k));
        map.slots.retain(|k, _| !matches(k));
        let doomed: Vec<K> = map.entries.keys().filter(|k| matches(k)).cloned().collect();
        for key in &doomed {
            map.entries.remove(key);
        }
        self.inner.sync(&map);
        doomed.len()
    }
}
