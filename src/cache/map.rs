//! The map and its slots: what a lookup decides under the map lock, and
//! how a leader computes its value, stores it or remembers its failure, and
//! answers the key's waiters. The module doc of [`cache`](super) says what
//! each step means for a caller, and which locks it takes.

use std::cell::{Cell, OnceCell};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use super::counters::{Counters, Striped};
use super::permits::Permits;
use super::sieve::Sieve;
use super::waits_for::{Claim, Edge, REFUSED};
use super::{CacheConfig, Error, Lookup, LookupOutcome};
use crate::unwind::{lock, panic_message, read, write};

/// Remembered failures kept at most, so that a stream of distinct failing
/// keys cannot grow the table without bound. Past it, expired ones are
/// purged, and if none has expired the new failure is not remembered.
const MAX_FAILURES: usize = 4096;

/// What every handle of one cache shares.
pub(super) struct Inner<K, V, S> {
    pub(super) config: CacheConfig,
    pub(super) weigher: fn(&V) -> u64,
    pub(super) hasher: S,
    pub(super) map: RwLock<Map<K, V, S>>,
    pub(super) permits: Permits,
    pub(super) stats: Counters,
    /// Hits, counted apart: every hit would otherwise write the same cache
    /// line from every core.
    pub(super) hits: Striped,
}

/// What a lookup does next, decided under the map lock and done after it is
/// released.
pub(super) enum Step<V> {
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

impl<K, V, S> Inner<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync,
    V: Clone + Send + Sync,
    S: BuildHasher + Clone + Send + Sync,
{
    /// Decides what a lookup does: under the read lock if that settles it
    /// (a hit must not take the write lock), else under the write lock,
    /// where a lookup that finds nothing puts in a slot and leads.
    pub(super) fn step(&self, key: &K, swr: bool) -> Step<V> {
        let now = Now::default();
        if let Some(step) = read(&self.map).probe(key, swr, &now) {
            return step;
        }
        let mut map = write(&self.map);
        // Another caller may have stored, failed or started in between.
        if let Some(step) = map.probe(key, swr, &now) {
            return step;
        }
        let stale = match map.entries.get(key) {
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
    pub(super) fn resolve<E: fmt::Display>(
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
    pub(super) fn served(&self, value: V, outcome: LookupOutcome) -> Lookup<V> {
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
    pub(super) fn lead<E: fmt::Display>(
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
    pub(super) fn finish(
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
            expires: now.checked_add(jitter(self.config.error_ttl, random())),
        };
        map.failures.insert(key.clone(), failure);
    }

    pub(super) fn insert(&self, key: K, value: V, ttl: Option<Duration>) -> bool {
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
        map.entries.remove(&key);
        let max = self.config.max_bytes;
        let stored = weight <= self.config.max_entry_bytes.min(max);
        if stored {
            while map.entries.bytes().saturating_add(weight) > max && map.entries.evict().is_some()
            {
                self.stats.evictions.fetch_add(1, Ordering::Relaxed);
            }
            map.entries.push(key, value, weight, expires);
        } else {
            self.stats.not_stored.fetch_add(1, Ordering::Relaxed);
        }
        self.sync(map);
        stored
    }

    /// Copies the map's size into the counters; called under the write lock
    /// after every change, so the two agree whenever the lock is free.
    pub(super) fn sync(&self, map: &Map<K, V, S>) {
        self.stats
            .entries
            .store(map.entries.len() as u64, Ordering::Relaxed);
        self.stats
            .bytes
            .store(map.entries.bytes(), Ordering::Relaxed);
    }
}

/// An in-flight computation of one key: its result, once there is one, and
/// the condvar its waiters sleep on.
pub(super) struct Slot<V> {
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

/// A remembered failure.
pub(super) struct Failure {
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
pub(super) struct Now(OnceCell<Instant>);

impl Now {
    pub(super) fn get(&self) -> Instant {
        *self.0.get_or_init(Instant::now)
    }
}

/// Everything under the map lock.
pub(super) struct Map<K, V, S> {
    /// The stored values, in SIEVE's queue.
    pub(super) entries: Sieve<K, V, S>,
    /// The computations in flight, by key.
    pub(super) slots: HashMap<K, Arc<Slot<V>>, S>,
    /// The remembered failures.
    pub(super) failures: HashMap<K, Failure, S>,
}

impl<K: Hash + Eq + Clone, V: Clone, S: BuildHasher + Clone> Map<K, V, S> {
    pub(super) fn new(hasher: S) -> Self {
        Map {
            entries: Sieve::new(hasher.clone()),
            slots: HashMap::with_hasher(hasher.clone()),
            failures: HashMap::with_hasher(hasher),
        }
    }

    /// The step for `key` if what is stored settles it; `None` means a new
    /// slot is needed. Takes `&self`, so it runs under either lock.
    pub(super) fn probe(&self, key: &K, swr: bool, now: &Now) -> Option<Step<V>> {
        let entry = self.entries.get(key);
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
}

/// `d` scaled by a factor in [0.75, 1.25] picked by `random`, so that
/// failures remembered together do not all expire together. The random
/// number comes in as an argument so that tests can pick it.
pub(super) fn jitter(d: Duration, random: u64) -> Duration {
    let quarter = d / 4;
    // step * 1024 <= d / 2, so this cannot overflow.
    let step = quarter / 512;
    let n = (random % 1025) as u32;
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
pub(super) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
