//! Fills: single flight for values that come from the caller's own I/O
//! rather than from a computation the cache runs, such as the proxy's
//! upstream responses. [`Cache::fill`] never blocks and never runs
//! anything; it says what the key holds and, on a miss, makes the key's
//! in-flight slot and hands the caller a [`Filler`] to complete it from
//! whatever thread the value arrives on. Callers that find the slot join it
//! with a [`Joiner`] and are answered the instant it completes, as
//! [`Cache::get_or_submit`]'s subscribers are.
//!
//! The difference from `get_or_submit` is who does the work and when:
//! there is no queued job, no compute permit and no compute-lane thread
//! (those are for CPU-bound work), and the caller sees an expired value
//! before deciding whether to serve it, wait for the refresh, or use it
//! to revalidate. Locks and order are those of the module doc: `step`
//! takes the map lock, and the slot is completed after it is released.

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::map::{Inner, Slot, Step};
use super::{Cache, Error, Lookup, LookupOutcome};

/// What [`Cache::fill`] found for a key.
pub enum Fill<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync,
    V: Clone + Send + Sync,
    S: BuildHasher + Clone + Send + Sync,
{
    /// A fresh stored value.
    Hit(V),
    /// The key's last fill failed moments ago (within `error_ttl`); with
    /// the expired value, if one is stored.
    Failed(Error, Option<V>),
    /// Another caller is filling the key: join with the [`Joiner`], or
    /// serve the expired value, if there is one and that is allowed.
    Join(Joiner<K, V, S>, Option<V>),
    /// Nobody is: this caller fills the key through the [`Filler`]; with
    /// the expired value, if one is stored (to serve meanwhile, or to
    /// revalidate).
    Lead(Filler<K, V, S>, Option<V>),
}

/// A handle on another caller's fill of a key.
pub struct Joiner<K, V, S> {
    inner: Arc<Inner<K, V, S>>,
    slot: Arc<Slot<V>>,
}

/// The duty to complete a key's fill: [`Filler::fill`] or
/// [`Filler::fail`]. Dropped without either, it fails the fill, so no
/// joiner waits for a value that will never come.
pub struct Filler<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync,
    V: Clone + Send + Sync,
    S: BuildHasher + Clone + Send + Sync,
{
    inner: Arc<Inner<K, V, S>>,
    key: K,
    slot: Arc<Slot<V>>,
    started: Instant,
    done: bool,
}

impl<K, V, S> Cache<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Clone + Send + Sync + 'static,
{
    /// Looks `key` up for a fill driven by the caller; see [`Fill`].
    pub fn fill(&self, key: &K) -> Fill<K, V, S> {
        // An expired value with no slot in sight is either a remembered
        // failure or a fill that completed in between; the second is
        // looked up again, which a new fill cannot keep racing for long.
        for _ in 0..4 {
            match self.inner.step(key, true, || None) {
                Step::Done(found) if found.outcome == LookupOutcome::Hit => {
                    return Fill::Hit(self.inner.served(found.value, found.outcome).value);
                }
                Step::Done(Lookup { value: stale, .. }) => {
                    let map = self.inner.map.read();
                    if let Some(slot) = map.slots.get(key) {
                        let slot = Arc::clone(slot);
                        drop(map);
                        return Fill::Join(self.joiner(slot), Some(stale));
                    }
                    // The remembered error itself, so the caller can say
                    // why (an expired entry that may not stand in for it
                    // is answered with it).
                    if let Some(failure) = map.failures.get(key) {
                        return Fill::Failed(failure.error.clone(), Some(stale));
                    }
                }
                Step::Failed(error) => return Fill::Failed(error, None),
                Step::Wait(slot) => return Fill::Join(self.joiner(slot), None),
                Step::Lead(slot) => return Fill::Lead(self.filler(key, slot), None),
                Step::Refresh(slot, stale) => {
                    return Fill::Lead(self.filler(key, slot), Some(stale))
                }
            }
        }
        Fill::Failed(Error::Busy, None)
    }

    fn joiner(&self, slot: Arc<Slot<V>>) -> Joiner<K, V, S> {
        Joiner {
            inner: Arc::clone(&self.inner),
            slot,
        }
    }

    fn filler(&self, key: &K, slot: Arc<Slot<V>>) -> Filler<K, V, S> {
        let stats = &self.inner.stats;
        stats.misses.fetch_add(1, Ordering::Relaxed);
        stats.computations.fetch_add(1, Ordering::Relaxed);
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Filler {
            inner: Arc::clone(&self.inner),
            key: key.clone(),
            slot,
            started: Instant::now(),
            done: false,
        }
    }
}

impl<K, V, S> Joiner<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync,
    V: Clone + Send + Sync,
    S: BuildHasher + Clone + Send + Sync,
{
    /// Calls `done` once with the fill's value or error
    /// ([`LookupOutcome::Coalesced`]): at once if it has completed, else
    /// on the thread that completes it.
    pub fn subscribe(self, done: impl FnOnce(Result<Lookup<V>, Error>) + Send + 'static) {
        self.inner
            .subscribe(&self.slot, LookupOutcome::Coalesced, Box::new(done));
    }
}

impl<K, V, S> Filler<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync,
    V: Clone + Send + Sync,
    S: BuildHasher + Clone + Send + Sync,
{
    /// Stores `value` (for `ttl`, or until evicted) unless the key was
    /// invalidated meanwhile, and answers every joiner with it.
    pub fn fill(mut self, value: V, ttl: Option<Duration>) {
        let weight = (self.inner.weigher)(&value);
        self.finish(Ok((value, ttl, weight)));
    }

    /// Answers every joiner with the failure, remembered for about
    /// `error_ttl` like a computation's.
    pub fn fail(mut self, error: impl fmt::Display) {
        self.inner.stats.failures.fetch_add(1, Ordering::Relaxed);
        self.finish(Err(Error::Failed(error.to_string().into())));
    }

    fn finish(&mut self, outcome: Result<(V, Option<Duration>, u64), Error>) {
        self.done = true;
        let stats = &self.inner.stats;
        stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        let micros = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        stats.compute_micros.fetch_add(micros, Ordering::Relaxed);
        let _ = self.inner.finish(&self.key, &self.slot, outcome);
    }
}

impl<K, V, S> Drop for Filler<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync,
    V: Clone + Send + Sync,
    S: BuildHasher + Clone + Send + Sync,
{
    fn drop(&mut self) {
        if !self.done {
            // A panic or a bug on the filling side: fail, not remembered,
            // rather than leave joiners to their deadlines.
            self.finish(Err(Error::Busy));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::cache::CacheConfig;

    fn cache() -> Cache<String, u32> {
        Cache::new(CacheConfig::default(), |_| 1)
    }

    fn key(k: &str) -> String {
        k.to_owned()
    }

    #[test]
    fn a_miss_leads_and_joiners_get_the_value_at_once() {
        let c = cache();
        let Fill::Lead(filler, None) = c.fill(&key("a")) else {
            panic!("expected to lead")
        };
        let (tx, rx) = mpsc::channel();
        for _ in 0..3 {
            let Fill::Join(joiner, None) = c.fill(&key("a")) else {
                panic!("expected to join")
            };
            let tx = tx.clone();
            joiner.subscribe(move |found| tx.send(found.map(|f| (f.value, f.outcome))).unwrap());
        }
        assert!(rx.try_recv().is_err(), "nobody answered before the fill");
        filler.fill(7, None);
        for _ in 0..3 {
            assert_eq!(rx.try_recv(), Ok(Ok((7, LookupOutcome::Coalesced))));
        }
        assert!(matches!(c.fill(&key("a")), Fill::Hit(7)));
        assert_eq!(c.stats().computations, 1);
    }

    #[test]
    fn an_expired_value_comes_with_the_lead_and_with_the_join() {
        let c = cache();
        c.insert_with_ttl(key("a"), 1, Duration::ZERO);
        let Fill::Lead(filler, Some(1)) = c.fill(&key("a")) else {
            panic!("expected to lead with the old value")
        };
        let Fill::Join(_joiner, Some(1)) = c.fill(&key("a")) else {
            panic!("expected to join with the old value")
        };
        filler.fill(2, Some(Duration::from_secs(60)));
        assert!(matches!(c.fill(&key("a")), Fill::Hit(2)));
    }

    #[test]
    fn a_failure_answers_joiners_and_is_remembered_with_the_old_value() {
        let c = cache();
        c.insert_with_ttl(key("a"), 1, Duration::ZERO);
        let Fill::Lead(filler, _) = c.fill(&key("a")) else {
            panic!("expected to lead")
        };
        let Fill::Join(joiner, _) = c.fill(&key("a")) else {
            panic!("expected to join")
        };
        let (tx, rx) = mpsc::channel();
        joiner.subscribe(move |found| tx.send(found.is_err()).unwrap());
        filler.fail("upstream down");
        assert_eq!(rx.try_recv(), Ok(true));
        assert!(matches!(c.fill(&key("a")), Fill::Failed(_, Some(1))));
    }

    #[test]
    fn a_dropped_filler_fails_its_joiners_without_being_remembered() {
        let c = cache();
        let Fill::Lead(filler, _) = c.fill(&key("a")) else {
            panic!("expected to lead")
        };
        let Fill::Join(joiner, _) = c.fill(&key("a")) else {
            panic!("expected to join")
        };
        let (tx, rx) = mpsc::channel();
        joiner.subscribe(move |found| tx.send(found.err()).unwrap());
        drop(filler);
        assert_eq!(rx.try_recv(), Ok(Some(Error::Busy)));
        assert!(matches!(c.fill(&key("a")), Fill::Lead(..)));
        assert_eq!(c.stats().in_flight, 0);
    }
}
