//! The map and its slots: what a lookup decides under the map lock, and
//! how a leader computes its value, stores it or remembers its failure, and
//! answers the key's waiters and subscribers. The module doc of
//! [`cache`](super) says what each step means for a caller, and which locks
//! it takes.

use std::cell::{Cell, OnceCell};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use super::brlock::BrLock;
use super::counters::{Counters, Striped};
use super::lane::Lane;
use super::permits::Permits;
use super::sieve::Sieve;
use super::waits_for::{Claim, Edge, REFUSED};
use super::{CacheConfig, Error, Lookup, LookupOutcome};
use crate::unwind::{lock, panic_message};

/// Remembered failures kept at most, so that a stream of distinct failing
/// keys cannot grow the table without bound. Past it, expired ones are
/// purged, and if none has expired the new failure is not remembered.
const MAX_FAILURES: usize = 4096;

/// What every handle of one cache shares.
pub(super) struct Inner<K, V, S> {
    pub(super) config: CacheConfig,
    pub(super) weigher: fn(&V) -> u64,
    pub(super) hasher: S,
    /// The one lock over the map: see [`BrLock`] for why not std's.
    pub(super) map: BrLock<Map<K, V, S>>,
    pub(super) permits: Permits,
    /// Where queued computations and refreshes run.
    pub(super) lane: Lane,
    pub(super) stats: Counters,
    /// Hits, counted apart: every hit would otherwise write the same cache
    /// line from every core.
    pub(super) hits: Striped,
}

/// A computation waiting in its slot to be run, its error already turned
/// into text (inside the `catch_unwind` it runs in).
pub(super) type Queued<V> = Box<dyn FnOnce() -> Result<(V, Option<Duration>), String> + Send>;

/// What a caller that does not block is called with, once, when the value
/// or the error is there.
pub(super) type Done<V> = Box<dyn FnOnce(Result<Lookup<V>, Error>) + Send>;

/// Boxes `compute` to be stored in a slot.
pub(super) fn queued<V, E: fmt::Display>(
    compute: impl FnOnce() -> Result<(V, Option<Duration>), E> + Send + 'static,
) -> Queued<V> {
    Box::new(move || compute().map_err(|e| e.to_string()))
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
    /// where a lookup that finds nothing puts in a slot and leads. `queue`
    /// is called only then, still under the lock, for a computation to
    /// store in the new slot: one that anybody who finds the slot may take
    /// and run (see [`Slot::take_job`]), there from the moment the slot can
    /// be seen.
    pub(super) fn step(
        &self,
        key: &K,
        swr: bool,
        queue: impl FnOnce() -> Option<Queued<V>>,
    ) -> Step<V> {
        let now = Now::default();
        if let Some(step) = self.map.read().probe(key, swr, &now) {
            return step;
        }
        let mut map = self.map.write();
        // Another caller may have stored, failed or started in between.
        if let Some(step) = map.probe(key, swr, &now) {
            return step;
        }
        let stale = match map.entries.get(key) {
            Some(e) if swr => Some(e.value.clone()),
            _ => None,
        };
        map.failures.remove(key); // expired, or probe would have returned it
        let slot = Arc::new(Slot::new(queue()));
        map.slots.insert(key.clone(), Arc::clone(&slot));
        match stale {
            Some(value) => Step::Refresh(slot, value),
            None => Step::Lead(slot),
        }
    }

    /// Carries out a step in the caller's thread, leading with `compute`
    /// if the step leads (the slot was made with no job in it).
    pub(super) fn resolve<E: fmt::Display>(
        &self,
        key: &K,
        step: Step<V>,
        compute: impl FnOnce() -> Result<(V, Option<Duration>), E>,
    ) -> Result<Lookup<V>, Error> {
        match step {
            Step::Lead(slot) => {
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                let value = self.lead(key, &slot, compute)?;
                Ok(Lookup {
                    value,
                    outcome: LookupOutcome::Miss,
                })
            }
            step => self.settle(key, step),
        }
    }

    /// Carries out a step in the caller's thread; a step that leads runs
    /// the job its slot was made with.
    pub(super) fn settle(&self, key: &K, step: Step<V>) -> Result<Lookup<V>, Error> {
        match step {
            Step::Done(lookup) => Ok(self.served(lookup.value, lookup.outcome)),
            Step::Failed(error) => Err(error),
            Step::Wait(slot) => self.wait(key, &slot),
            // A refresh is only asked for by `get_or_compute_swr`, which
            // runs it on the lane; computing here is still right.
            Step::Lead(slot) | Step::Refresh(slot, _) => match slot.take_job() {
                Some(job) => {
                    self.stats.misses.fetch_add(1, Ordering::Relaxed);
                    let value = self.lead(key, &slot, job)?;
                    Ok(Lookup {
                        value,
                        outcome: LookupOutcome::Miss,
                    })
                }
                // A lookup that found the slot took the job first, to run
                // it itself; wait for it like any other caller.
                None => self.wait(key, &slot),
            },
        }
    }

    /// Answers `done` when the slot completes (at once if it has): the
    /// non-blocking way to join a computation.
    pub(super) fn subscribe(&self, slot: &Slot<V>, outcome: LookupOutcome, done: Done<V>) {
        let counter = match outcome {
            LookupOutcome::Miss => &self.stats.misses,
            _ => &self.stats.coalesced,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        slot.subscribe(outcome, done);
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

    /// Waits, up to `wait_timeout`, for the leader of `slot` to finish; or,
    /// if its computation is still queued, runs it here.
    fn wait(&self, key: &K, slot: &Slot<V>) -> Result<Lookup<V>, Error> {
        // Waiting for a lane thread to start it could deadlock: this may be
        // a lane thread itself (a computation looking up another key), and
        // the job may sit in the queue behind every lane thread, all
        // blocked the same way. Taken under the slot's lock, so the lane's
        // task, or another caller, finds it gone and does not run it twice.
        if let Some(job) = slot.take_job() {
            self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
            let value = self.lead(key, slot, job)?;
            return Ok(Lookup {
                value,
                outcome: LookupOutcome::Coalesced,
            });
        }
        let _edge = Edge::add(&slot.claim)?;
        self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
        let state = lock(&slot.state);
        slot.waiters.fetch_add(1, Ordering::Relaxed);
        let (state, _) = slot
            .ready
            .wait_timeout_while(state, self.config.wait_timeout, |s| s.result.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        slot.waiters.fetch_sub(1, Ordering::Relaxed);
        match &state.result {
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
    /// permit and with no lock held, then stores it and answers the waiters
    /// and subscribers.
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
    /// then wakes its waiters and calls its subscribers with the result.
    pub(super) fn finish(
        &self,
        key: &K,
        slot: &Slot<V>,
        outcome: Result<(V, Option<Duration>, u64), Error>,
    ) -> Result<V, Error> {
        let result = {
            let mut map = self.map.write();
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
        slot.complete(&result);
        result
    }

    /// Queues a lane task that leads the slot with its job, unless somebody
    /// has taken the job by then. If the lane's queue is full, the slot
    /// fails with [`Error::Busy`] at once, for its waiters and subscribers
    /// alike; it is not remembered, so the next lookup tries again.
    pub(super) fn submit(self: &Arc<Self>, key: &K, slot: &Arc<Slot<V>>)
    where
        K: 'static,
        V: 'static,
        S: 'static,
    {
        let (inner, owned_key, owned_slot) = (Arc::clone(self), key.clone(), Arc::clone(slot));
        let task = move || {
            if let Some(job) = owned_slot.take_job() {
                // Its waiters, subscribers and the map get the outcome.
                let _ = inner.lead(&owned_key, &owned_slot, job);
            }
        };
        // A refused job that is gone from the slot was taken by a lookup,
        // which runs it and completes the slot.
        if self.lane.try_spawn(task).is_err() && slot.take_job().is_some() {
            self.stats.busy.fetch_add(1, Ordering::Relaxed);
            log::debug!(
                "compute queue full ({} waiting); computation refused",
                self.lane.max_queued()
            );
            let _ = self.finish(key, slot, Err(Error::Busy));
        }
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
        let mut map = self.map.write();
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

/// An in-flight computation of one key: the job while it is queued, the
/// result once there is one, the condvar its waiters sleep on, and the
/// callers to call back.
pub(super) struct Slot<V> {
    claim: Arc<Claim>,
    state: Mutex<SlotState<V>>,
    ready: Condvar,
    /// Threads waiting on `ready`; changed only under `state`'s lock.
    /// Most misses have no waiter, and a notify costs a system call even
    /// then.
    waiters: AtomicU64,
}

/// What a slot's lock guards. Every change is one assignment, push or
/// take, so a panic cannot leave it half-changed.
struct SlotState<V> {
    result: Option<Result<V, Error>>,
    /// The computation, from when the slot is made until someone takes it
    /// to run it: the lane's task, or a lookup that would otherwise wait.
    /// `None` for a slot whose creator computes at once.
    job: Option<Queued<V>>,
    /// Callers that do not block, with the outcome each reports. They stay
    /// until the slot completes, even if whoever they answer has gone.
    subscribers: Vec<(LookupOutcome, Done<V>)>,
}

impl<V: Clone> Slot<V> {
    fn new(job: Option<Queued<V>>) -> Slot<V> {
        Slot {
            claim: Arc::new(Claim::default()),
            state: Mutex::new(SlotState {
                result: None,
                job,
                subscribers: Vec::new(),
            }),
            ready: Condvar::new(),
            waiters: AtomicU64::new(0),
        }
    }

    /// The queued computation, if nobody has taken it yet; whoever gets it
    /// leads the slot.
    fn take_job(&self) -> Option<Queued<V>> {
        lock(&self.state).job.take()
    }

    /// Calls `done` with the result: now, on this thread, if it is there,
    /// else on the thread that completes the slot.
    fn subscribe(&self, outcome: LookupOutcome, done: Done<V>) {
        let mut state = lock(&self.state);
        let Some(result) = &state.result else {
            state.subscribers.push((outcome, done));
            return;
        };
        let result = result.clone();
        drop(state);
        answer(done, result, outcome);
    }

    /// Sets the result, wakes every waiter of this key at once, then calls
    /// the subscribers, with no lock held.
    fn complete(&self, result: &Result<V, Error>) {
        let mut state = lock(&self.state);
        state.result = Some(result.clone());
        let subscribers = std::mem::take(&mut state.subscribers);
        self.claim.done.store(true, Ordering::Release);
        let waiting = self.waiters.load(Ordering::Relaxed) > 0;
        drop(state);
        if waiting {
            self.ready.notify_all();
        }
        let several = subscribers.len() > 1;
        let answer_all = || {
            for (outcome, done) in subscribers {
                answer(done, result.clone(), outcome);
            }
        };
        // Several answers go to the workers together, as one run (see
        // `crate::gather`); a single one has nothing to wait for.
        if several {
            crate::gather::gathered(answer_all);
        } else {
            answer_all();
        }
    }
}

/// Calls a subscriber. Inside `catch_unwind`: it is user code, and one that
/// panics must not keep the others from their answers, nor unwind into
/// the computation that completed the slot.
fn answer<V>(done: Done<V>, result: Result<V, Error>, outcome: LookupOutcome) {
    let lookup = result.map(|value| Lookup { value, outcome });
    if let Err(payload) = catch_unwind(AssertUnwindSafe(move || done(lookup))) {
        log::error!("cache subscriber panicked: {}", panic_message(&*payload));
    }
}

/// A remembered failure.
pub(super) struct Failure {
    pub(super) error: Error,
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
