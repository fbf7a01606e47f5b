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
//! # What a lookup does
//!
//! [`Cache::get_or_compute`] returns the value and how it was obtained, a
//! [`LookupOutcome`]:
//!
//! - `Hit`: a fresh entry was found under the read lock. A hit takes no write
//!   lock and moves nothing; it only sets the entry's visited bit, and only
//!   if it was clear, so a hot entry's cache line is not written on every hit.
//! - `Miss`: nothing was there, so this caller became the key's leader. It put
//!   an in-flight slot in the map under a brief write lock, computed with no
//!   lock held, then stored the value and removed the slot under the write
//!   lock, and woke that key's waiters (only them).
//! - `Coalesced`: another caller was already computing the key, so this one
//!   waited on that slot and got the same value. Concurrent misses of one key
//!   run the computation once; misses of different keys run in parallel.
//! - `Stale`: from [`Cache::get_or_compute_swr`] only. The entry had expired,
//!   so its old value was served at once while one background thread
//!   recomputes it (stale-while-revalidate, as in RFC 5861).
//!
//! # Deadlines and failures
//!
//! A waiter gives up after `wait_timeout` with [`Error::Timeout`]; the leader
//! keeps computing and still stores its value. At most `compute_concurrency`
//! computations run at once. A leader waits for a permit under the same
//! deadline, and if none comes it removes its slot and fails itself and its
//! waiters with [`Error::Busy`].
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
//! `get_or_compute_swr` serves it as `Stale` and starts one background
//! refresh, which needs a `Send + 'static` closure. If that refresh fails,
//! the stale value keeps being served until `error_ttl` runs out and another
//! refresh is tried.
//!
//! [`Cache::invalidate`], [`Cache::invalidate_prefix`] and [`Cache::clear`]
//! drop entries and remembered failures, and detach in-flight slots: their
//! computations finish and answer their waiters, but their values (computed
//! from what was just invalidated) are not stored, and the next lookup
//! computes afresh.
//!
//! # Locks
//!
//! - `map`: one `RwLock` over the entries, the in-flight slots and the
//!   remembered failures.
//! - each slot's `Mutex` and `Condvar`: the result, and its waiters.
//! - the compute permits' `Mutex` and `Condvar`.
//! - the process-wide waits-for table's `Mutex`.
//!
//! Lock order: none of these is taken while another is held, so there is no
//! order to get wrong and no lock is held while waiting or computing. The
//! map lock is released before a slot is completed, before anyone waits on a
//! slot or for a permit, and before any computation runs. If a change ever
//! needs two at once, take the map lock before a slot's, never the reverse,
//! and never wait or compute while holding the map lock.

use std::borrow::Borrow;
use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, RwLock};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use once_cell::sync::Lazy;

use crate::unwind::{lock, panic_message, read, write};

/// Remembered failures kept at most, so that a stream of distinct failing
/// keys cannot grow the table without bound. Past it, expired ones are
/// purged, and if none has expired the new failure is not remembered.
const MAX_FAILURES: usize = 4096;

/// The end of the SIEVE list.
const NIL: usize = usize::MAX;

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
    /// Computations running at once, at least 1. Default the number of CPUs
    /// (`available_parallelism`): computations are CPU-bound, and more only
    /// adds switching.
    pub compute_concurrency: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_bytes: 256 << 20,
            max_entry_bytes: 64 << 20,
            wait_timeout: Duration::from_secs(30),
            error_ttl: Duration::from_secs(1),
            compute_concurrency: thread::available_parallelism().map_or(1, |n| n.get()),
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
    /// No compute permit came free within `wait_timeout`.
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

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// The live counters: atomics, so counting takes no lock.
        #[derive(Debug, Default)]
        struct Counters {
            $( $name: AtomicU64, )*
        }

        /// A snapshot of a cache's counters, from [`Cache::stats`].
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Stats {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl Counters {
            fn snapshot(&self) -> Stats {
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
    /// Lookups that found nothing and led a computation.
    misses,
    /// Lookups that waited for another caller's computation.
    coalesced,
    /// Computations run, refreshes included.
    computations,
    /// Computations that returned an error or panicked.
    failures,
    /// Waiters that gave up after `wait_timeout`.
    timeouts,
    /// Leaders that got no compute permit within `wait_timeout`.
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

struct Inner<K, V, S> {
    config: CacheConfig,
    weigher: fn(&V) -> u64,
    hasher: S,
    map: RwLock<Map<K, V, S>>,
    permits: Permits,
    stats: Counters,
    /// Hits, counted apart: every hit would otherwise write the same cache
    /// line from every core.
    hits: Striped,
}

/// What a lookup does next, decided under the map lock and done after it is
/// released.
enum Step<V> {
    /// A hit, or a stale value while a refresh already runs or recently
    /// failed.
    Done(Lookup<V>),
    /// A remembered failure.
    Failed(Error),
    /// Wait for another caller's computation.
    Wait(Arc<Slot<V>>),
    /// Compute, store, and answer the slot's waiters.
    Lead(Arc<Slot<V>>),
    /// Serve the stale value and refresh it in the background.
    Refresh(Arc<Slot<V>>, V),
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
                permits: Permits {
                    holders: Mutex::new(Vec::new()),
                    freed: Condvar::new(),
                    waiting: AtomicU64::new(0),
                    max: config.compute_concurrency,
                },
                config,
                weigher,
                map: RwLock::new(Map::new(hasher.clone())),
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
        let step = self.inner.step(key, false);
        let result = self.inner.resolve(key, step, compute);
        if result.as_ref().is_err_and(|e| *e == Error::Recursive) {
            // Seen by the computation this lookup may be part of.
            REFUSED.with(|r| r.set(true));
        }
        result
    }

    /// Like [`get_or_compute_ttl`](Self::get_or_compute_ttl), but an
    /// expired value is served at once as [`LookupOutcome::Stale`] while one
    /// background thread recomputes it; concurrent stale lookups share that
    /// refresh. With nothing stored at all, this computes like a miss.
    pub fn get_or_compute_swr<E, F>(&self, key: &K, compute: F) -> Result<Lookup<V>, Error>
    where
        K: 'static,
        V: 'static,
        S: 'static,
        E: fmt::Display,
        F: FnOnce() -> Result<(V, Option<Duration>), E> + Send + 'static,
    {
        let (slot, stale) = match self.inner.step(key, true) {
            Step::Refresh(slot, stale) => (slot, stale),
            step => return self.inner.resolve(key, step, compute),
        };
        let inner = Arc::clone(&self.inner);
        let (owned_key, owned_slot) = (key.clone(), Arc::clone(&slot));
        let spawned = thread::Builder::new()
            .name("cache-refresh".into())
            .spawn(move || {
                // Its waiters and the map get the outcome; nobody else wants it.
                let _ = inner.lead(&owned_key, &owned_slot, compute);
            });
        if let Err(e) = spawned {
            log::warn!("cannot start a cache refresh thread: {e}");
            let _ = self.inner.finish(key, &slot, Err(Error::Busy));
        }
        Ok(self.inner.served(stale, LookupOutcome::Stale))
    }

    /// The fresh stored value for `key`, if any. Never computes or waits.
    pub fn get(&self, key: &K) -> Option<V> {
        let now = Now::default();
        let map = read(&self.inner.map);
        let entry = map.entry(key).filter(|e| e.is_fresh(&now))?;
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
        let mut map = write(&self.inner.map);
        map.failures.remove(key);
        map.slots.remove(key);
        let removed = map.remove(key).is_some();
        self.inner.sync(&map);
        removed
    }

    /// Drops everything: values, remembered failures, and the in-flight
    /// slots (their computations finish but are not stored).
    pub fn clear(&self) {
        let mut map = write(&self.inner.map);
        let old = std::mem::replace(&mut *map, Map::new(self.inner.hasher.clone()));
        self.inner.sync(&map);
        drop(map);
        // Freeing megabytes takes a while; readers need not wait for it.
        drop(old);
    }

    /// Number of stored values.
    pub fn len(&self) -> usize {
        read(&self.inner.map).index.len()
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
        let map = read(&self.inner.map);
        let mut weights: Vec<(u64, usize)> = map
            .slab
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (e.weight, i)))
            .collect();
        weights.sort_unstable_by_key(|&(w, _)| std::cmp::Reverse(w));
        weights
            .iter()
            .take(n)
            .filter_map(|&(w, i)| map.at(i).map(|e| (e.key.clone(), w)))
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
        let mut map = write(&self.inner.map);
        map.failures.retain(|k, _| !matches(k));
        map.slots.retain(|k, _| !matches(k));
        let doomed: Vec<K> = map.index.keys().filter(|k| matches(k)).cloned().collect();
        for key in &doomed {
            map.remove(key);
        }
        self.inner.sync(&map);
        doomed.len()
    }
}

impl<K, V, S> Inner<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync,
    V: Clone + Send + Sync,
    S: BuildHasher + Clone + Send + Sync,
{
    /// Decides what a lookup does: under the read lock if that settles it
    /// (a hit must not take the write lock), else under the write lock,
    /// where a lookup that finds nothing puts in a slot and leads.
    fn step(&self, key: &K, swr: bool) -> Step<V> {
        let now = Now::default();
        if let Some(step) = read(&self.map).probe(key, swr, &now) {
            return step;
        }
        let mut map = write(&self.map);
        // Another caller may have stored, failed or started in between.
        if let Some(step) = map.probe(key, swr, &now) {
            return step;
        }
        let stale = match map.entry(key) {
            Some(e) if swr => Some(e.value.clone()),
            _ => None,
        };
        map.failures.remove(key); // expired, or probe would have returned it
        let slot = Arc::new(Slot::new());
        map.slots.insert(key.clone(), Arc::clone(&slot));
        match stale {
            Some(value) => Step::Refresh(slot, value),
            None => Step::Lead(slot),
        }
    }

    /// Carries out a step in the caller's thread.
    fn resolve<E: fmt::Display>(
        &self,
        key: &K,
        step: Step<V>,
        compute: impl FnOnce() -> Result<(V, Option<Duration>), E>,
    ) -> Result<Lookup<V>, Error> {
        match step {
            Step::Done(lookup) => Ok(self.served(lookup.value, lookup.outcome)),
            Step::Failed(error) => Err(error),
            Step::Wait(slot) => self.wait(&slot),
            // A refresh is only asked for by `get_or_compute_swr`, which
            // runs it on its own thread; computing here is still right.
            Step::Lead(slot) | Step::Refresh(slot, _) => {
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                let value = self.lead(key, &slot, compute)?;
                Ok(Lookup {
                    value,
                    outcome: LookupOutcome::Miss,
                })
            }
        }
    }

    /// Counts a value served without computing.
    fn served(&self, value: V, outcome: LookupOutcome) -> Lookup<V> {
        match outcome {
            LookupOutcome::Stale => {
                self.stats.stale_served.fetch_add(1, Ordering::Relaxed);
            }
            _ => self.hits.add(1),
        }
        Lookup { value, outcome }
    }

    /// Waits, up to `wait_timeout`, for the leader of `slot` to finish.
    fn wait(&self, slot: &Slot<V>) -> Result<Lookup<V>, Error> {
        let _edge = Edge::add(&slot.claim)?;
        self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
        let result = lock(&slot.result);
        slot.waiters.fetch_add(1, Ordering::Relaxed);
        let (result, _) = slot
            .ready
            .wait_timeout_while(result, self.config.wait_timeout, |r| r.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        slot.waiters.fetch_sub(1, Ordering::Relaxed);
        match &*result {
            Some(Ok(value)) => Ok(Lookup {
                value: value.clone(),
                outcome: LookupOutcome::Coalesced,
            }),
            Some(Err(error)) => Err(error.clone()),
            None => {
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                log::debug!(
                    "cache waiter timed out after {:?}",
                    self.config.wait_timeout
                );
                Err(Error::Timeout)
            }
        }
    }

    /// Computes the value for the slot this thread leads, under a compute
    /// permit and with no lock held, then stores it and answers the waiters.
    fn lead<E: fmt::Display>(
        &self,
        key: &K,
        slot: &Slot<V>,
        compute: impl FnOnce() -> Result<(V, Option<Duration>), E>,
    ) -> Result<V, Error> {
        // Set before computing, so that a nested lookup of this key, or of
        // one waiting on it, walks back to this thread.
        let _ = slot.claim.leader.set(thread::current().id());
        let outcome = match self.permits.acquire(self.config.wait_timeout) {
            Some(_permit) => self.compute(compute),
            None => {
                self.stats.busy.fetch_add(1, Ordering::Relaxed);
                log::debug!("no compute permit within {:?}", self.config.wait_timeout);
                Err(Error::Busy)
            }
        };
        self.finish(key, slot, outcome)
    }

    /// Runs the user's code: the computation, the weigher, and the error's
    /// `Display`, all inside `catch_unwind`.
    fn compute<E: fmt::Display>(
        &self,
        compute: impl FnOnce() -> Result<(V, Option<Duration>), E>,
    ) -> Result<(V, Option<Duration>, u64), Error> {
        self.stats.computations.fetch_add(1, Ordering::Relaxed);
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let outer_refused = REFUSED.with(|r| r.replace(false));
        let outcome = catch_unwind(AssertUnwindSafe(|| match compute() {
            Ok((value, ttl)) => {
                let weight = (self.weigher)(&value);
                Ok((value, ttl, weight))
            }
            Err(e) => Err(e.to_string()),
        }));
        let refused = REFUSED.with(|r| r.replace(outer_refused));
        let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.stats
            .compute_micros
            .fetch_add(micros, Ordering::Relaxed);
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        let error = match outcome {
            Ok(Ok(done)) => return Ok(done),
            // The computation failed after one of its own lookups was
            // refused as a cycle: report the cycle, not whatever error
            // the computation made of it, so the caller sees a bug to fix
            // rather than a failure to retry.
            Ok(Err(msg)) if refused => {
                log::error!("cache computation depends on itself: {msg}");
                Error::Recursive
            }
            Ok(Err(msg)) => {
                log::warn!("cache computation failed: {msg}");
                Error::Failed(msg.into())
            }
            Err(payload) => {
                let msg = panic_message(&*payload);
                log::error!("cache computation panicked: {msg}");
                Error::Panicked(msg.into())
            }
        };
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        Err(error)
    }

    /// Ends the slot's computation: stores the value or remembers the
    /// failure (unless the slot was detached meanwhile), removes the slot,
    /// then wakes its waiters with the result.
    fn finish(
        &self,
        key: &K,
        slot: &Slot<V>,
        outcome: Result<(V, Option<Duration>, u64), Error>,
    ) -> Result<V, Error> {
        let result = {
            let mut map = write(&self.map);
            let attached = map.detach(key, slot);
            match outcome {
                Ok((value, ttl, weight)) => {
                    if attached {
                        let expires = ttl.and_then(|ttl| Instant::now().checked_add(ttl));
                        map.failures.remove(key);
                        self.store(&mut map, key.clone(), value.clone(), weight, expires);
                    }
                    Ok(value)
                }
                Err(error) => {
                    let computed = matches!(error, Error::Failed(_) | Error::Panicked(_));
                    if attached && computed {
                        self.remember(&mut map, key, &error);
                    }
                    Err(error)
                }
            }
        };
        slot.complete(result.clone());
        result
    }

    /// Remembers a failed computation for about `error_ttl`.
    fn remember(&self, map: &mut Map<K, V, S>, key: &K, error: &Error) {
        if self.config.error_ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        if map.failures.len() >= MAX_FAILURES {
            map.failures.retain(|_, f| f.is_fresh(now));
        }
        if map.failures.len() >= MAX_FAILURES {
            log::debug!("{MAX_FAILURES} failures remembered already; not this one");
            return;
        }
        let failure = Failure {
            error: error.clone(),
            expires: now.checked_add(jitter(self.config.error_ttl)),
        };
        map.failures.insert(key.clone(), failure);
    }

    fn insert(&self, key: K, value: V, ttl: Option<Duration>) -> bool {
        let weight = (self.weigher)(&value);
        let expires = ttl.and_then(|ttl| Instant::now().checked_add(ttl));
        let mut map = write(&self.map);
        map.failures.remove(&key);
        self.store(&mut map, key, value, weight, expires)
    }

    /// Stores an entry, replacing the key's old one, after evicting until it
    /// fits: the budget holds at every moment the lock can be observed.
    /// Returns false if it is too heavy to store at all.
    fn store(
        &self,
        map: &mut Map<K, V, S>,
        key: K,
        value: V,
        weight: u64,
        expires: Option<Instant>,
    ) -> bool {
        map.remove(&key);
        let max = self.config.max_bytes;
        let stored = weight <= self.config.max_entry_bytes.min(max);
        if stored {
            while map.bytes.saturating_add(weight) > max && map.evict().is_some() {
                self.stats.evictions.fetch_add(1, Ordering::Relaxed);
            }
            map.push(key, value, weight, expires);
        } else {
            self.stats.not_stored.fetch_add(1, Ordering::Relaxed);
        }
        self.sync(map);
        stored
    }

    /// Copies the map's size into the counters; called under the write lock
    /// after every change, so the two agree whenever the lock is free.
    fn sync(&self, map: &Map<K, V, S>) {
        self.stats
            .entries
            .store(map.index.len() as u64, Ordering::Relaxed);
        self.stats.bytes.store(map.bytes, Ordering::Relaxed);
    }
}

/// An in-flight computation of one key: its result, once there is one, and
/// the condvar its waiters sleep on.
struct Slot<V> {
    claim: Arc<Claim>,
    result: Mutex<Option<Result<V, Error>>>,
    ready: Condvar,
    /// Threads waiting on `ready`; changed only under `result`'s lock.
    /// Most misses have no waiter, and a notify costs a system call even
    /// then.
    waiters: AtomicU64,
}

impl<V> Slot<V> {
    fn new() -> Slot<V> {
        Slot {
            claim: Arc::new(Claim::default()),
            result: Mutex::new(None),
            ready: Condvar::new(),
            waiters: AtomicU64::new(0),
        }
    }

    /// Sets the result and wakes every waiter of this key, at once.
    fn complete(&self, result: Result<V, Error>) {
        let mut guard = lock(&self.result);
        *guard = Some(result);
        self.claim.done.store(true, Ordering::Release);
        let waiting = self.waiters.load(Ordering::Relaxed) > 0;
        drop(guard);
        if waiting {
            self.ready.notify_all();
        }
    }
}

/// The part of a slot the waits-for walk needs, free of the cache's types so
/// that one table serves every cache.
#[derive(Default)]
struct Claim {
    /// The thread computing the value; set when its computation is about to
    /// start (a refresh thread sets it itself).
    leader: OnceLock<ThreadId>,
    /// Whether the result is in. A finished slot ends a walk: its waiters are
    /// about to wake.
    done: AtomicBool,
}

/// Which claim each blocked thread waits on: the edges of the waits-for
/// graph, for every cache in the process.
static WAITS_FOR: Lazy<Mutex<HashMap<ThreadId, Arc<Claim>>>> = Lazy::new(Default::default);

/// This thread's entry in [`WAITS_FOR`], removed when dropped.
struct Edge(ThreadId);

impl Edge {
    /// Records that this thread is about to wait on `claim`, unless that
    /// would close a cycle.
    fn add(claim: &Arc<Claim>) -> Result<Edge, Error> {
        let me = thread::current().id();
        let mut waits_for = lock(&WAITS_FOR);
        let mut next = Some(claim);
        // Each hop moves to a different blocked thread, and the table held
        // no cycle before this call (whoever closed one was refused), so the
        // walk ends; the bound is a second guard.
        for _ in 0..=waits_for.len() {
            let Some(claim) = next else { break };
            if claim.done.load(Ordering::Acquire) {
                break;
            }
            match claim.leader.get() {
                Some(&leader) if leader == me => {
                    log::debug!("recursive cache computation refused");
                    return Err(Error::Recursive);
                }
                Some(leader) => next = waits_for.get(leader),
                None => break,
            }
        }
        waits_for.insert(me, Arc::clone(claim));
        Ok(Edge(me))
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        lock(&WAITS_FOR).remove(&self.0);
    }
}

/// A counting semaphore for computations that knows its holders, so that a
/// computation nested in another on the same thread reuses the outer one's
/// permit.
struct Permits {
    holders: Mutex<Vec<ThreadId>>,
    freed: Condvar,
    /// Threads waiting on `freed`; changed only under `holders`' lock, so
    /// a permit given back with nobody waiting costs no wake-up call.
    waiting: AtomicU64,
    max: usize,
}

/// A held compute permit, given back when dropped.
struct Permit<'a> {
    permits: &'a Permits,
    /// False for a nested computation, which holds no permit of its own.
    owned: bool,
}

impl Permits {
    fn acquire(&self, timeout: Duration) -> Option<Permit<'_>> {
        let me = thread::current().id();
        let holders = lock(&self.holders);
        if holders.contains(&me) {
            return Some(Permit {
                permits: self,
                owned: false,
            });
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let (mut holders, _) = self
            .freed
            .wait_timeout_while(holders, timeout, |h| h.len() >= self.max)
            .unwrap_or_else(PoisonError::into_inner);
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        if holders.len() >= self.max {
            return None;
        }
        holders.push(me);
        Some(Permit {
            permits: self,
            owned: true,
        })
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.owned {
            let me = thread::current().id();
            let mut holders = lock(&self.permits.holders);
            holders.retain(|&t| t != me);
            let waiting = self.permits.waiting.load(Ordering::Relaxed) > 0;
            drop(holders);
            if waiting {
                self.permits.freed.notify_one();
            }
        }
    }
}

thread_local! {
    /// Whether a lookup made by the computation running on this thread was
    /// refused as a cycle.
    static REFUSED: Cell<bool> = const { Cell::new(false) };
}

/// A counter split over cache lines, each thread adding to its own, so
/// threads that count at once do not contend; a read sums them.
#[derive(Default)]
struct Striped([Padded; STRIPES]);

/// The number of stripes: enough that a few busy threads rarely share one.
const STRIPES: usize = 8;

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

impl Striped {
    fn add(&self, n: u64) {
        let i = STRIPE.with(|s| *s);
        self.0[i].0.fetch_add(n, Ordering::Relaxed);
    }

    fn sum(&self) -> u64 {
        self.0.iter().map(|p| p.0.load(Ordering::Relaxed)).sum()
    }
}

/// A remembered failure.
struct Failure {
    error: Error,
    /// `None` if `error_ttl` is too long to add to now: never.
    expires: Option<Instant>,
}

impl Failure {
    fn is_fresh(&self, now: Instant) -> bool {
        self.expires.is_none_or(|t| now < t)
    }
}

/// The current time, read at most once and only if asked for: most entries
/// never expire, and a clock read on every hit costs more than the rest of
/// the hit (it also stops the CPU overlapping one lookup's cache misses
/// with the next one's).
#[derive(Default)]
struct Now(std::cell::OnceCell<Instant>);

impl Now {
    fn get(&self) -> Instant {
        *self.0.get_or_init(Instant::now)
    }
}

/// A stored value, linked into the SIEVE list.
struct Entry<K, V> {
    key: K,
    value: V,
    weight: u64,
    /// `None`: lives until evicted or invalidated.
    expires: Option<Instant>,
    /// Set by hits under the read lock, cleared by the eviction hand under
    /// the write lock. Relaxed: it is a hint, and orders nothing.
    visited: AtomicBool,
    /// Neighbours in insertion order, [`NIL`] at the ends.
    newer: usize,
    older: usize,
}

impl<K, V> Entry<K, V> {
    fn is_fresh(&self, now: &Now) -> bool {
        self.expires.is_none_or(|t| now.get() < t)
    }

    /// Marks a hit, writing only if the bit is clear so that hits on a hot
    /// entry from many cores do not bounce its cache line.
    fn visit(&self) {
        if !self.visited.load(Ordering::Relaxed) {
            self.visited.store(true, Ordering::Relaxed);
        }
    }
}

/// Everything under the map lock. The stored entries live in a slab and
/// form a doubly linked list in insertion order (the SIEVE queue), so an
/// entry is unlinked in O(1) wherever it is.
struct Map<K, V, S> {
    index: HashMap<K, usize, S>,
    slab: Vec<Option<Entry<K, V>>>,
    free: Vec<usize>,
    newest: usize,
    oldest: usize,
    /// Where the next eviction starts looking; [`NIL`] means the oldest.
    hand: usize,
    /// Sum of the stored weights.
    bytes: u64,
    slots: HashMap<K, Arc<Slot<V>>, S>,
    failures: HashMap<K, Failure, S>,
}

impl<K: Hash + Eq + Clone, V: Clone, S: BuildHasher + Clone> Map<K, V, S> {
    fn new(hasher: S) -> Self {
        Map {
            index: HashMap::with_hasher(hasher.clone()),
            slab: Vec::new(),
            free: Vec::new(),
            newest: NIL,
            oldest: NIL,
            hand: NIL,
            bytes: 0,
            slots: HashMap::with_hasher(hasher.clone()),
            failures: HashMap::with_hasher(hasher),
        }
    }

    fn at(&self, i: usize) -> Option<&Entry<K, V>> {
        self.slab.get(i)?.as_ref()
    }

    fn entry(&self, key: &K) -> Option<&Entry<K, V>> {
        self.at(*self.index.get(key)?)
    }

    /// The step for `key` if what is stored settles it; `None` means a new
    /// slot is needed. Takes `&self`, so it runs under either lock.
    fn probe(&self, key: &K, swr: bool, now: &Now) -> Option<Step<V>> {
        let entry = self.entry(key);
        if let Some(e) = entry.filter(|e| e.is_fresh(now)) {
            e.visit();
            return Some(Step::Done(Lookup {
                value: e.value.clone(),
                outcome: LookupOutcome::Hit,
            }));
        }
        let stale = || match entry {
            Some(e) if swr => Some(Step::Done(Lookup {
                value: e.value.clone(),
                outcome: LookupOutcome::Stale,
            })),
            _ => None,
        };
        if let Some(f) = self.failures.get(key).filter(|f| f.is_fresh(now.get())) {
            return Some(stale().unwrap_or_else(|| Step::Failed(f.error.clone())));
        }
        let slot = self.slots.get(key)?;
        Some(stale().unwrap_or_else(|| Step::Wait(Arc::clone(slot))))
    }

    /// Removes `slot` from the in-flight slots if it is still the key's.
    /// False means it was detached by an invalidation.
    fn detach(&mut self, key: &K, slot: &Slot<V>) -> bool {
        let ours = self
            .slots
            .get(key)
            .is_some_and(|s| std::ptr::eq(Arc::as_ptr(s), slot));
        if ours {
            self.slots.remove(key);
        }
        ours
    }

    /// Links a new entry in as the newest. The caller has made room.
    fn push(&mut self, key: K, value: V, weight: u64, expires: Option<Instant>) {
        let entry = Entry {
            key: key.clone(),
            value,
            weight,
            expires,
            visited: AtomicBool::new(false),
            newer: NIL,
            older: self.newest,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slab[i] = Some(entry);
                i
            }
            None => {
                self.slab.push(Some(entry));
                self.slab.len() - 1
            }
        };
        match self.slab.get_mut(self.newest).and_then(Option::as_mut) {
            Some(newest) => newest.newer = i,
            None => self.oldest = i,
        }
        self.newest = i;
        self.index.insert(key, i);
        self.bytes += weight;
    }

    fn remove(&mut self, key: &K) -> Option<Entry<K, V>> {
        let i = *self.index.get(key)?;
        self.unlink(i)
    }

    fn unlink(&mut self, i: usize) -> Option<Entry<K, V>> {
        let e = self.slab.get_mut(i)?.take()?;
        match self.slab.get_mut(e.newer).and_then(Option::as_mut) {
            Some(newer) => newer.older = e.older,
            None => self.newest = e.older,
        }
        match self.slab.get_mut(e.older).and_then(Option::as_mut) {
            Some(older) => older.newer = e.newer,
            None => self.oldest = e.newer,
        }
        if self.hand == i {
            self.hand = e.newer;
        }
        self.free.push(i);
        self.index.remove(&e.key);
        self.bytes -= e.weight;
        Some(e)
    }

    /// Evicts one entry, SIEVE's way: from the hand towards the newest
    /// (wrapping to the oldest), clear visited bits and take the first entry
    /// whose bit was clear. One lap clears every bit, so this ends within
    /// `len + 1` steps. `None` if empty.
    fn evict(&mut self) -> Option<Entry<K, V>> {
        let mut i = if self.hand == NIL {
            self.oldest
        } else {
            self.hand
        };
        loop {
            let e = self.slab.get_mut(i)?.as_mut()?;
            if !*e.visited.get_mut() {
                break;
            }
            *e.visited.get_mut() = false;
            i = if e.newer == NIL { self.oldest } else { e.newer };
        }
        // Unlinking the entry under the hand moves the hand to its newer
        // neighbour, where the next eviction resumes.
        self.hand = i;
        self.unlink(i)
    }
}

/// `d` scaled by a random factor in [0.75, 1.25], so that failures
/// remembered together do not all expire together.
fn jitter(d: Duration) -> Duration {
    let quarter = d / 4;
    // step * 1024 <= d / 2, so this cannot overflow.
    let step = quarter / 512;
    let n = (random() % 1025) as u32;
    (d - quarter).saturating_add(step * n)
}

/// A random number from a per-thread SplitMix64 stream, seeded from std's
/// per-process random hash keys. Good enough for jitter; not for secrets.
fn random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> =
            Cell::new(RandomState::new().hash_one(thread::current().id()));
    }
    STATE.with(|state| {
        let mut s = state.get();
        let x = splitmix64(&mut s);
        state.set(s);
        x
    })
}

/// SplitMix64 (Steele, Lea and Flood, OOPSLA 2014): a tiny generator whose
/// whole state is one counter.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;

    type Bytes = Arc<Vec<u8>>;

    /// How long any test waits for anything before calling it a hang.
    const HANG: Duration = Duration::from_secs(5);

    fn weigh(v: &Bytes) -> u64 {
        v.len() as u64
    }

    /// Waits are longer than [`HANG`]: a waiter that is only woken by its
    /// deadline fails the test instead of passing slowly.
    fn config() -> CacheConfig {
        CacheConfig {
            max_bytes: 1 << 20,
            max_entry_bytes: 1 << 20,
            wait_timeout: Duration::from_secs(60),
            error_ttl: Duration::from_secs(60),
            compute_concurrency: 8,
        }
    }

    fn cache(config: CacheConfig) -> Cache<String, Bytes> {
        Cache::new(config, weigh)
    }

    fn bytes(n: usize) -> Result<Bytes, String> {
        Ok(Arc::new(vec![7; n]))
    }

    fn key(s: &str) -> String {
        s.to_string()
    }

    /// Polls `done` until it holds; panics after [`HANG`]. For conditions
    /// only visible in counters, such as "every other thread is waiting".
    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + HANG;
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// A barrier that panics instead of hanging.
    struct Latch {
        arrived: Mutex<usize>,
        all: Condvar,
        n: usize,
    }

    impl Latch {
        fn new(n: usize) -> Arc<Latch> {
            Arc::new(Latch {
                arrived: Mutex::new(0),
                all: Condvar::new(),
                n,
            })
        }

        fn arrive_and_wait(&self) {
            let mut arrived = self.arrived.lock().unwrap();
            *arrived += 1;
            self.all.notify_all();
            let (arrived, _) = self
                .all
                .wait_timeout_while(arrived, HANG, |a| *a < self.n)
                .unwrap();
            assert!(
                *arrived >= self.n,
                "only {} of {} arrived",
                *arrived,
                self.n
            );
        }
    }

    /// Runs `f` on its own thread and returns its result, or panics if it
    /// takes longer than [`HANG`].
    fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || tx.send(f()));
        rx.recv_timeout(HANG).expect("hung")
    }

    /// Runs `f(0)` to `f(n - 1)` on threads of their own and returns their
    /// results in order, or panics if they take longer than [`HANG`] in all.
    /// Also returns the threads' ids.
    fn run_threads<T: Send + 'static>(
        n: usize,
        f: impl Fn(usize) -> T + Send + Sync + 'static,
    ) -> (Vec<T>, Vec<ThreadId>) {
        let (f, (tx, rx)) = (Arc::new(f), mpsc::channel());
        let ids = (0..n)
            .map(|i| {
                let (f, tx) = (f.clone(), tx.clone());
                let t = thread::spawn(move || tx.send((i, f(i))));
                t.thread().id()
            })
            .collect();
        let deadline = Instant::now() + HANG;
        let mut results: Vec<Option<T>> = (0..n).map(|_| None).collect();
        for _ in 0..n {
            let left = deadline.saturating_duration_since(Instant::now());
            let (i, result) = rx.recv_timeout(left).expect("hung");
            results[i] = Some(result);
        }
        (results.into_iter().flatten().collect(), ids)
    }

    /// The sum of the stored weights, counted entry by entry.
    fn weight_of_entries(cache: &Cache<String, Bytes>) -> u64 {
        cache.largest(usize::MAX).iter().map(|(_, w)| w).sum()
    }

    #[test]
    fn is_send_sync_and_fits_a_static() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Cache<String, Bytes>>();
        static GLOBAL: Lazy<Cache<String, Bytes>> = Lazy::new(|| cache(config()));
        let got = GLOBAL.get_or_compute(&key("a"), || bytes(3)).unwrap();
        assert_eq!((got.outcome, got.value.len()), (LookupOutcome::Miss, 3));
    }

    #[test]
    fn stampede_of_one_key_computes_once() {
        const N: usize = 200;
        let cache = cache(config());
        let start = Latch::new(N);
        let computed = Arc::new(AtomicUsize::new(0));
        let (got, ids) = run_threads(N, {
            let (cache, computed) = (cache.clone(), computed.clone());
            move |_| {
                start.arrive_and_wait();
                cache
                    .get_or_compute(&key("k"), || {
                        computed.fetch_add(1, Ordering::SeqCst);
                        // Hold the value back until everyone else waits
                        // for it, so that every other lookup coalesces.
                        let others = (N - 1) as u64;
                        wait_until("all wait", || cache.stats().coalesced == others);
                        bytes(1 << 10)
                    })
                    .unwrap()
            }
        });
        assert_eq!(computed.load(Ordering::SeqCst), 1);
        assert!(got.iter().all(|l| Arc::ptr_eq(&l.value, &got[0].value)));
        let count = |o| got.iter().filter(|l| l.outcome == o).count();
        assert_eq!(
            (count(LookupOutcome::Miss), count(LookupOutcome::Coalesced)),
            (1, N - 1)
        );
        let stats = cache.stats();
        assert_eq!((stats.misses, stats.computations, stats.entries), (1, 1, 1));
        assert_eq!(stats.in_flight, 0);
        // Every waiter took its edge out of the waits-for table.
        let waits_for = lock(&WAITS_FOR);
        assert!(ids.iter().all(|id| !waits_for.contains_key(id)));
    }

    #[test]
    fn distinct_keys_compute_in_parallel() {
        let cache = cache(config());
        // Every computation waits for all eight to start: serialised
        // computations would time out here instead.
        let started = Latch::new(8);
        let (got, _) = run_threads(8, {
            let cache = cache.clone();
            move |i| {
                cache.get_or_compute(&format!("k{i}"), || {
                    started.arrive_and_wait();
                    bytes(i)
                })
            }
        });
        assert!(got
            .iter()
            .all(|l| l.as_ref().unwrap().outcome == LookupOutcome::Miss));
        assert_eq!(cache.stats().computations, 8);
    }

    #[test]
    fn compute_concurrency_caps_running_computations() {
        let cache = cache(CacheConfig {
            compute_concurrency: 2,
            ..config()
        });
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let go = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let (cache, running, most, go) =
                    (cache.clone(), running.clone(), most.clone(), go.clone());
                thread::spawn(move || {
                    cache.get_or_compute(&format!("k{i}"), || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        wait_until("released", || go.load(Ordering::SeqCst));
                        running.fetch_sub(1, Ordering::SeqCst);
                        bytes(i)
                    })
                })
            })
            .collect();
        // All four lead; two compute and two wait for a permit.
        wait_until("four leaders, two running", || {
            let s = cache.stats();
            s.misses == 4 && s.in_flight == 2
        });
        assert_eq!(running.load(Ordering::SeqCst), 2);
        go.store(true, Ordering::SeqCst);
        for t in threads {
            assert_eq!(t.join().unwrap().unwrap().outcome, LookupOutcome::Miss);
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
        assert_eq!(cache.stats().computations, 4);
    }

    #[test]
    fn nested_computation_runs_under_the_outer_permit() {
        let cache = cache(CacheConfig {
            compute_concurrency: 1,
            ..config()
        });
        let c = cache.clone();
        let got = bounded(move || {
            let inner = c.clone();
            c.get_or_compute(&key("outer"), move || {
                let part = inner.get_or_compute(&key("inner"), || bytes(2));
                part.map(|l| Arc::new(vec![0; l.value.len() + 1]))
            })
        });
        assert_eq!(got.unwrap().value.len(), 3);
        assert_eq!(cache.stats().computations, 2);
    }

    #[test]
    fn permit_timeout_fails_and_frees_the_key() {
        let cache = cache(CacheConfig {
            compute_concurrency: 1,
            wait_timeout: Duration::from_millis(50),
            ..config()
        });
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let holder = {
            let cache = cache.clone();
            thread::spawn(move || {
                cache.get_or_compute(&key("slow"), || {
                    started_tx.send(()).unwrap();
                    release_rx.recv_timeout(HANG).unwrap();
                    bytes(1)
                })
            })
        };
        started.recv_timeout(HANG).unwrap();
        let got = cache.get_or_compute(&key("other"), || bytes(2));
        assert_eq!(got.unwrap_err(), Error::Busy);
        assert_eq!(cache.stats().busy, 1);
        release.send(()).unwrap();
        assert!(holder.join().unwrap().is_ok());
        // Busy is not remembered, and the slot is gone: this computes.
        let got = cache.get_or_compute(&key("other"), || bytes(2)).unwrap();
        assert_eq!(got.outcome, LookupOutcome::Miss);
    }

    /// The leader fails (`panic` or an error) once three waiters wait; all
    /// of them get the same error at once.
    fn leader_failure_reaches_every_waiter(panic: bool) {
        let cache = cache(CacheConfig {
            error_ttl: Duration::from_millis(200),
            ..config()
        });
        let computed = Arc::new(AtomicUsize::new(0));
        let compute = {
            let (watcher, computed) = (cache.clone(), computed.clone());
            move || -> Result<Bytes, String> {
                computed.fetch_add(1, Ordering::SeqCst);
                wait_until("three wait", || watcher.stats().coalesced == 3);
                if panic {
                    panic!("boom");
                }
                Err("no data".into())
            }
        };
        let before = Instant::now();
        let (got, _) = run_threads(4, {
            let (cache, compute) = (cache.clone(), compute.clone());
            move |_| cache.get_or_compute(&key("k"), compute.clone())
        });
        let expected = if panic {
            Error::Panicked("boom".into())
        } else {
            Error::Failed("no data".into())
        };
        assert!(got.iter().all(|l| l.as_ref().unwrap_err() == &expected));
        assert_eq!(computed.load(Ordering::SeqCst), 1);
        let stats = cache.stats();
        assert_eq!((stats.failures, stats.in_flight, stats.entries), (1, 0, 0));

        // Remembered: no computation within error_ttl (at least 150 ms).
        // Under heavy load that may have passed already, and the same
        // computation then fails the same way.
        let got = cache.get_or_compute(&key("k"), compute);
        if before.elapsed() < Duration::from_millis(150) {
            assert_eq!(computed.load(Ordering::SeqCst), 1);
        }
        assert_eq!(got.unwrap_err(), expected);

        // Recomputed once it runs out, not before.
        let deadline = Instant::now() + HANG;
        let got = loop {
            match cache.get_or_compute(&key("k"), || bytes(1)) {
                Ok(got) => break got,
                Err(e) => assert_eq!(e, expected),
            }
            assert!(Instant::now() < deadline, "failure never expired");
            thread::sleep(Duration::from_millis(5));
        };
        assert!(before.elapsed() >= Duration::from_millis(150));
        assert_eq!(got.outcome, LookupOutcome::Miss);
    }

    #[test]
    fn leader_panic_reaches_every_waiter_and_is_remembered() {
        leader_failure_reaches_every_waiter(true);
    }

    #[test]
    fn leader_error_reaches_every_waiter_and_is_remembered() {
        leader_failure_reaches_every_waiter(false);
    }

    #[test]
    fn waiter_times_out_and_leader_still_publishes() {
        let cache = cache(CacheConfig {
            wait_timeout: Duration::from_millis(50),
            ..config()
        });
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let leader = {
            let cache = cache.clone();
            thread::spawn(move || {
                cache.get_or_compute(&key("k"), || {
                    started_tx.send(()).unwrap();
                    release_rx.recv_timeout(HANG).unwrap();
                    bytes(5)
                })
            })
        };
        started.recv_timeout(HANG).unwrap();
        let got = cache.get_or_compute(&key("k"), || -> Result<Bytes, String> {
            panic!("a waiter must not compute")
        });
        assert_eq!(got.unwrap_err(), Error::Timeout);
        assert_eq!(cache.stats().timeouts, 1);
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap().unwrap().outcome, LookupOutcome::Miss);
        let got = cache.get_or_compute(&key("k"), || bytes(0)).unwrap();
        assert_eq!((got.outcome, got.value.len()), (LookupOutcome::Hit, 5));
    }

    #[test]
    fn direct_recursion_errors() {
        let cache = cache(config());
        let inner = bounded({
            let cache = cache.clone();
            move || {
                let c = cache.clone();
                cache.get_or_compute(&key("a"), move || {
                    let inner = c.get_or_compute(&key("a"), || bytes(1));
                    Err::<Bytes, _>(inner.unwrap_err())
                })
            }
        });
        // The computation turned the refusal into an error of its own; the
        // caller still learns it was a cycle.
        assert_eq!(inner.unwrap_err(), Error::Recursive);
        // Not remembered as in flight: the key works afterwards.
        cache.invalidate(&key("a"));
        assert!(cache.get_or_compute(&key("a"), || bytes(1)).is_ok());
    }

    #[test]
    fn recursion_through_another_key_on_one_thread_errors() {
        let cache = cache(config());
        let c = cache.clone();
        let got = bounded(move || {
            let (c1, c2) = (c.clone(), c.clone());
            c.get_or_compute(&key("a"), move || {
                c1.get_or_compute(&key("b"), move || {
                    c2.get_or_compute(&key("a"), || bytes(1))
                        .map(|l| l.value)
                        .map_err(|e| e.to_string())
                })
                .map(|l| l.value)
                .map_err(|e| e.to_string())
            })
        });
        let msg = got.unwrap_err().to_string();
        assert!(msg.contains("recursive"), "{msg}");
    }

    #[test]
    fn recursion_across_threads_errors() {
        // Thread 1 computes a and asks for b; thread 2 computes b and asks
        // for a. Both computations start before either asks.
        let cache = cache(config());
        let both_started = Latch::new(2);
        let run = |mine: &'static str, theirs: &'static str| {
            let (cache, both_started) = (cache.clone(), both_started.clone());
            move || {
                let c = cache.clone();
                cache.get_or_compute(&key(mine), move || {
                    both_started.arrive_and_wait();
                    c.get_or_compute(&key(theirs), || bytes(1))
                        .map(|l| l.value)
                        .map_err(|e| e.to_string())
                })
            }
        };
        let one = thread::spawn(run("a", "b"));
        let two = bounded(run("b", "a"));
        let one = bounded(move || one.join().unwrap());
        let (one, two) = (one.unwrap_err(), two.unwrap_err());
        assert!(one.to_string().contains("recursive"), "{one}");
        assert!(two.to_string().contains("recursive"), "{two}");
    }

    #[test]
    fn budget_holds_under_a_random_workload() {
        let cache = cache(CacheConfig {
            max_bytes: 10_000,
            max_entry_bytes: 4_000,
            ..config()
        });
        let mut seed = 42;
        let mut oversize = 0;
        for _ in 0..3_000 {
            let r = splitmix64(&mut seed);
            let k = format!("k{}", r % 40);
            let size = (r >> 8) as usize % 5_000;
            match (r >> 32) % 8 {
                0 => {
                    assert_eq!(cache.insert(k.clone(), bytes(size).unwrap()), size <= 4_000);
                }
                1 => {
                    cache.invalidate(&k);
                }
                _ => {
                    let got = cache.get_or_compute(&k, || bytes(size)).unwrap();
                    if got.outcome == LookupOutcome::Miss {
                        assert_eq!(got.value.len(), size);
                        if size > 4_000 {
                            oversize += 1;
                            assert!(cache.get(&k).is_none(), "oversize value stored");
                        }
                    }
                }
            }
            assert!(cache.bytes() <= 10_000, "over budget: {}", cache.bytes());
            assert_eq!(cache.bytes(), weight_of_entries(&cache));
            assert_eq!(cache.stats().entries, cache.len() as u64);
        }
        let stats = cache.stats();
        assert!(oversize > 0 && stats.not_stored >= oversize);
        assert!(stats.evictions > 0);
    }

    #[test]
    fn hit_proceeds_while_another_key_computes() {
        let cache = cache(config());
        cache.insert(key("ready"), bytes(3).unwrap());
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let slow = {
            let cache = cache.clone();
            thread::spawn(move || {
                cache.get_or_compute(&key("slow"), || {
                    started_tx.send(()).unwrap();
                    release_rx.recv_timeout(HANG).unwrap();
                    bytes(1)
                })
            })
        };
        started.recv_timeout(HANG).unwrap();
        let c = cache.clone();
        let got = bounded(move || c.get_or_compute(&key("ready"), || bytes(0)).unwrap());
        assert_eq!((got.outcome, got.value.len()), (LookupOutcome::Hit, 3));
        release.send(()).unwrap();
        assert!(slow.join().unwrap().is_ok());
    }

    #[test]
    fn entries_expire_after_their_ttl() {
        let cache = cache(config());
        let ttl = |t| move || Ok::<_, String>((Arc::new(vec![1]), Some(t)));
        let got = cache.get_or_compute_ttl(&key("long"), ttl(HANG)).unwrap();
        assert_eq!(got.outcome, LookupOutcome::Miss);
        assert_eq!(
            cache
                .get_or_compute_ttl(&key("long"), ttl(HANG))
                .unwrap()
                .outcome,
            LookupOutcome::Hit
        );
        cache
            .get_or_compute_ttl(&key("short"), ttl(Duration::from_millis(20)))
            .unwrap();
        wait_until("expired", || cache.get(&key("short")).is_none());
        // Expired: a plain lookup recomputes, and the new value replaces the
        // old one.
        let got = cache.get_or_compute_ttl(&key("short"), ttl(HANG)).unwrap();
        assert_eq!(got.outcome, LookupOutcome::Miss);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.bytes(), 2);
    }

    #[test]
    fn stale_while_revalidate_refreshes_once() {
        let cache = cache(config());
        // Expired as soon as stored.
        cache.insert_with_ttl(key("k"), bytes(1).unwrap(), Duration::ZERO);
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let got = cache
            .get_or_compute_swr(&key("k"), move || {
                started_tx.send(()).unwrap();
                release_rx.recv_timeout(HANG).unwrap();
                Ok::<_, String>((Arc::new(vec![2; 2]), None))
            })
            .unwrap();
        assert_eq!((got.outcome, got.value.len()), (LookupOutcome::Stale, 1));
        started.recv_timeout(HANG).unwrap();
        // The refresh is running: served stale again, no second refresh.
        let got = cache
            .get_or_compute_swr(
                &key("k"),
                || -> Result<(Bytes, Option<Duration>), String> { panic!("a second refresh ran") },
            )
            .unwrap();
        assert_eq!((got.outcome, got.value.len()), (LookupOutcome::Stale, 1));
        release.send(()).unwrap();
        wait_until("refreshed", || cache.get(&key("k")).is_some());
        let got = cache
            .get_or_compute_swr(
                &key("k"),
                || -> Result<(Bytes, Option<Duration>), String> {
                    panic!("refreshed value not hit")
                },
            )
            .unwrap();
        assert_eq!((got.outcome, got.value.len()), (LookupOutcome::Hit, 2));
        let stats = cache.stats();
        assert_eq!(
            (stats.computations, stats.stale_served, stats.bytes),
            (1, 2, 2)
        );
    }

    #[test]
    fn failed_refresh_keeps_serving_stale() {
        let cache = cache(config());
        cache.insert_with_ttl(key("k"), bytes(1).unwrap(), Duration::ZERO);
        let got = cache
            .get_or_compute_swr(&key("k"), || Err::<(Bytes, Option<Duration>), _>("down"))
            .unwrap();
        assert_eq!(got.outcome, LookupOutcome::Stale);
        wait_until("refresh failed", || cache.stats().failures == 1);
        let got = cache
            .get_or_compute_swr(
                &key("k"),
                || -> Result<(Bytes, Option<Duration>), String> {
                    panic!("retried within error_ttl")
                },
            )
            .unwrap();
        assert_eq!(got.outcome, LookupOutcome::Stale);
        // A plain lookup gets the remembered failure.
        let got = cache.get_or_compute(&key("k"), || bytes(1));
        assert_eq!(got.unwrap_err(), Error::Failed("down".into()));
    }

    #[test]
    fn swr_without_a_value_computes_inline() {
        let cache = cache(config());
        let got = cache
            .get_or_compute_swr(&key("k"), || Ok::<_, String>((Arc::new(vec![0; 4]), None)))
            .unwrap();
        assert_eq!(got.outcome, LookupOutcome::Miss);
        assert_eq!(cache.get(&key("k")).map(|v| v.len()), Some(4));
    }

    #[test]
    fn invalidation_updates_the_counters() {
        let cache = cache(config());
        for k in ["user/1", "user/2", "team/1"] {
            cache.insert(key(k), bytes(10).unwrap());
        }
        assert_eq!((cache.len(), cache.bytes()), (3, 30));
        assert!(cache.invalidate(&key("user/1")));
        assert!(!cache.invalidate(&key("user/1")));
        assert_eq!((cache.stats().entries, cache.bytes()), (2, 20));
        assert_eq!(cache.invalidate_prefix("user/"), 1);
        assert_eq!((cache.stats().entries, cache.bytes()), (1, 10));
        cache.insert(key("user/3"), bytes(10).unwrap());
        cache.clear();
        assert_eq!((cache.stats().entries, cache.bytes()), (0, 0));
        assert!(cache.is_empty() && cache.get(&key("team/1")).is_none());
        // A remembered failure goes too.
        let _ = cache.get_or_compute(&key("bad"), || Err::<Bytes, _>("no"));
        assert!(cache.get_or_compute(&key("bad"), || bytes(1)).is_err());
        cache.invalidate(&key("bad"));
        assert!(cache.get_or_compute(&key("bad"), || bytes(1)).is_ok());
    }

    #[test]
    fn value_computed_across_an_invalidation_is_not_stored() {
        let cache = cache(config());
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let leader = {
            let cache = cache.clone();
            thread::spawn(move || {
                cache.get_or_compute(&key("k"), || {
                    started_tx.send(()).unwrap();
                    release_rx.recv_timeout(HANG).unwrap();
                    bytes(1)
                })
            })
        };
        started.recv_timeout(HANG).unwrap();
        cache.invalidate(&key("k"));
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap().unwrap().value.len(), 1);
        assert!(cache.get(&key("k")).is_none());
    }

    #[test]
    fn sieve_keeps_a_hot_key_and_evicts_cold_ones() {
        let cache: Cache<String, u64> = Cache::new(
            CacheConfig {
                max_bytes: 10,
                ..config()
            },
            |_| 1,
        );
        cache.insert(key("hot"), 0);
        for i in 0..100 {
            assert_eq!(cache.get(&key("hot")), Some(0), "evicted at {i}");
            cache.insert(format!("cold{i}"), i);
            assert!(cache.len() <= 10);
        }
        assert_eq!(cache.stats().evictions, 91);
        // Without hits the oldest goes first.
        assert!(cache.get(&key("cold89")).is_none());
        assert!(cache.get(&key("cold99")).is_some());
    }

    #[test]
    fn largest_lists_the_heaviest_first() {
        let cache = cache(config());
        for (k, n) in [("a", 5), ("b", 50), ("c", 20)] {
            cache.insert(key(k), bytes(n).unwrap());
        }
        assert_eq!(cache.largest(2), vec![(key("b"), 50), (key("c"), 20)]);
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        let d = Duration::from_millis(1000);
        for _ in 0..1000 {
            let j = jitter(d);
            assert!(j >= d * 3 / 4 && j <= d * 5 / 4, "{j:?}");
        }
        // No overflow at the extreme; the top of the range saturates.
        assert!(jitter(Duration::MAX) >= Duration::MAX / 4 * 3);
    }
}
