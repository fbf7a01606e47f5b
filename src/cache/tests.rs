//! The cache's unit tests: many threads on one cache, with every wait
//! bounded so that a hang fails instead of stalling.

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::mpsc;
use std::sync::{Condvar, Mutex};
use std::thread::ThreadId;
use std::time::Instant;

use once_cell::sync::Lazy;

use super::map::{jitter, splitmix64};
use super::waits_for::WAITS_FOR;
use super::*;
use crate::unwind::lock;

pub(super) type Bytes = Arc<Vec<u8>>;

/// How long any test waits for anything before calling it a hang.
pub(super) const HANG: Duration = Duration::from_secs(5);

pub(super) fn weigh(v: &Bytes) -> u64 {
    v.len() as u64
}

/// Waits are longer than [`HANG`]: a waiter that is only woken by its
/// deadline fails the test instead of passing slowly.
pub(super) fn config() -> CacheConfig {
    CacheConfig {
        max_bytes: 1 << 20,
        max_entry_bytes: 1 << 20,
        wait_timeout: Duration::from_secs(60),
        error_ttl: Duration::from_secs(60),
        compute_concurrency: 8,
        max_queued: 1024,
        compute_priority: Default::default(),
    }
}

pub(super) fn cache(config: CacheConfig) -> Cache<String, Bytes> {
    Cache::new(config, weigh)
}

pub(super) fn bytes(n: usize) -> Result<Bytes, String> {
    Ok(Arc::new(vec![7; n]))
}

pub(super) fn key(s: &str) -> String {
    s.to_string()
}

/// Polls `done` until it holds; panics after [`HANG`]. For conditions
/// only visible in counters, such as "every other thread is waiting".
pub(super) fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + HANG;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// A barrier that panics instead of hanging.
pub(super) struct Latch {
    arrived: Mutex<usize>,
    all: Condvar,
    n: usize,
}

impl Latch {
    pub(super) fn new(n: usize) -> Arc<Latch> {
        Arc::new(Latch {
            arrived: Mutex::new(0),
            all: Condvar::new(),
            n,
        })
    }

    pub(super) fn arrive_and_wait(&self) {
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
pub(super) fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || tx.send(f()));
    rx.recv_timeout(HANG).expect("hung")
}

/// Runs `f(0)` to `f(n - 1)` on threads of their own and returns their
/// results in order, or panics if they take longer than [`HANG`] in all.
/// Also returns the threads' ids.
pub(super) fn run_threads<T: Send + 'static>(
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

/// A leader computing a key on a thread of its own, held inside its
/// computation until [`Held::release`].
pub(super) struct Held {
    release: mpsc::Sender<()>,
    thread: thread::JoinHandle<Result<Lookup<Bytes>, Error>>,
}

impl Held {
    /// Starts computing `k` (a value of `n` bytes) and returns once the
    /// computation runs, holding its slot and a compute permit.
    pub(super) fn start(cache: &Cache<String, Bytes>, k: &str, n: usize) -> Held {
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let (cache, k) = (cache.clone(), key(k));
        let thread = thread::spawn(move || {
            cache.get_or_compute(&k, || {
                started_tx.send(()).unwrap();
                release_rx.recv_timeout(HANG).unwrap();
                bytes(n)
            })
        });
        started
            .recv_timeout(HANG)
            .expect("the held computation never started");
        Held { release, thread }
    }

    /// Lets the computation finish; returns the leader's lookup.
    pub(super) fn release(self) -> Result<Lookup<Bytes>, Error> {
        self.release.send(()).unwrap();
        bounded(move || self.thread.join().unwrap())
    }
}

/// The sum of the stored weights, counted entry by entry.
pub(super) fn weight_of_entries(cache: &Cache<String, Bytes>) -> u64 {
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

/// Every lookup got the same value; one of them led, the rest joined it.
pub(super) fn assert_one_led_and_the_rest_joined(got: &[Lookup<Bytes>]) {
    assert!(got.iter().all(|l| Arc::ptr_eq(&l.value, &got[0].value)));
    let count = |o| got.iter().filter(|l| l.outcome == o).count();
    assert_eq!(
        (count(LookupOutcome::Miss), count(LookupOutcome::Coalesced)),
        (1, got.len() - 1)
    );
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
    assert_one_led_and_the_rest_joined(&got);
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
    // All four lead; two compute and two wait for a permit. Waiting on
    // `running` rather than on `in_flight`: a computation counts itself in
    // flight just before it calls the closure that bumps `running`.
    wait_until("two running, two waiting for a permit", || {
        running.load(Ordering::SeqCst) == 2 && cache.inner.permits.waiting() == 2
    });
    let stats = cache.stats();
    assert_eq!((stats.misses, stats.in_flight), (4, 2));
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
    let holder = Held::start(&cache, "slow", 1);
    let got = cache.get_or_compute(&key("other"), || bytes(2));
    assert_eq!(got.unwrap_err(), Error::Busy);
    assert_eq!(cache.stats().busy, 1);
    assert_eq!(holder.release().unwrap().outcome, LookupOutcome::Miss);
    // Busy is not remembered, and the slot is gone: this computes.
    let got = cache.get_or_compute(&key("other"), || bytes(2)).unwrap();
    assert_eq!(got.outcome, LookupOutcome::Miss);
}

/// The leader fails (`panic` or an error) once three waiters wait; all
/// of them get the same error at once, and it is remembered. The error TTL
/// is a minute (at least 45 s with jitter), so the test cannot outlive it;
/// expiry has a test of its own.
fn leader_failure_reaches_every_waiter(panic: bool) {
    let cache = cache(config());
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

    // Remembered: the next lookup gets the same error without computing.
    let got = cache.get_or_compute(&key("k"), || -> Result<Bytes, String> {
        panic!("recomputed within error_ttl")
    });
    assert_eq!(got.unwrap_err(), expected);
    assert_eq!(computed.load(Ordering::SeqCst), 1);
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
fn remembered_failure_expires_after_error_ttl() {
    const ERROR_TTL: Duration = Duration::from_millis(40);
    let cache = cache(CacheConfig {
        error_ttl: ERROR_TTL,
        ..config()
    });
    let expected = Error::Failed("no data".into());
    // Taken before the failure is stored, so the time since is at least
    // the time the failure has been remembered.
    let before = Instant::now();
    let got = cache.get_or_compute(&key("k"), || Err::<Bytes, _>("no data"));
    assert_eq!(got.unwrap_err(), expected);
    // Polled: recomputed once the failure expires and not before, however
    // slowly this thread runs.
    let deadline = Instant::now() + HANG;
    let got = loop {
        match cache.get_or_compute(&key("k"), || bytes(1)) {
            Ok(got) => break got,
            Err(e) => assert_eq!(e, expected),
        }
        assert!(Instant::now() < deadline, "failure never expired");
        thread::sleep(Duration::from_millis(5));
    };
    let waited = before.elapsed();
    assert!(waited >= ERROR_TTL * 3 / 4, "forgotten after {waited:?}");
    assert_eq!(got.outcome, LookupOutcome::Miss);
    assert_eq!(cache.stats().computations, 2);
}

#[test]
fn waiter_times_out_and_leader_still_publishes() {
    let cache = cache(CacheConfig {
        wait_timeout: Duration::from_millis(50),
        ..config()
    });
    let leader = Held::start(&cache, "k", 5);
    let got = cache.get_or_compute(&key("k"), || -> Result<Bytes, String> {
        panic!("a waiter must not compute")
    });
    assert_eq!(got.unwrap_err(), Error::Timeout);
    assert_eq!(cache.stats().timeouts, 1);
    assert_eq!(leader.release().unwrap().outcome, LookupOutcome::Miss);
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
    // Neither remembered as a failure nor left in flight: the next lookup
    // computes.
    let got = cache.get_or_compute(&key("a"), || bytes(1)).unwrap();
    assert_eq!(got.outcome, LookupOutcome::Miss);
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
    // Both computations turned the refusal into a string; each is still
    // reported as the cycle it was.
    assert_eq!(got.unwrap_err(), Error::Recursive);
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
    // Whichever closed the cycle was refused; the other was waiting on it
    // and gets its failure, which is the cycle too.
    assert_eq!(
        (one.unwrap_err(), two.unwrap_err()),
        (Error::Recursive, Error::Recursive)
    );
    assert_eq!(cache.stats().timeouts, 0);
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
    let slow = Held::start(&cache, "slow", 1);
    let c = cache.clone();
    let got = bounded(move || c.get_or_compute(&key("ready"), || bytes(0)).unwrap());
    assert_eq!((got.outcome, got.value.len()), (LookupOutcome::Hit, 3));
    assert_eq!(slow.release().unwrap().outcome, LookupOutcome::Miss);
}

#[test]
fn entries_expire_after_their_ttl() {
    let cache = cache(config());
    // Far longer than the test can take, so "long" stays fresh throughout.
    const LONG: Duration = Duration::from_secs(3600);
    let ttl = |t| move || Ok::<_, String>((Arc::new(vec![1]), Some(t)));
    let got = cache.get_or_compute_ttl(&key("long"), ttl(LONG)).unwrap();
    assert_eq!(got.outcome, LookupOutcome::Miss);
    assert_eq!(
        cache
            .get_or_compute_ttl(&key("long"), ttl(LONG))
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
    let got = cache.get_or_compute_ttl(&key("short"), ttl(LONG)).unwrap();
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
            || -> Result<(Bytes, Option<Duration>), String> { panic!("refreshed value not hit") },
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
            || -> Result<(Bytes, Option<Duration>), String> { panic!("retried within error_ttl") },
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
    let no = Error::Failed("no".into());
    let got = cache.get_or_compute(&key("bad"), || Err::<Bytes, _>("no"));
    assert_eq!(got.unwrap_err(), no);
    let got = cache.get_or_compute(&key("bad"), || bytes(1));
    assert_eq!(got.unwrap_err(), no, "the failure is remembered");
    cache.invalidate(&key("bad"));
    let got = cache.get_or_compute(&key("bad"), || bytes(1)).unwrap();
    assert_eq!(got.outcome, LookupOutcome::Miss);
}

#[test]
fn value_computed_across_an_invalidation_is_not_stored() {
    let cache = cache(config());
    let leader = Held::start(&cache, "k", 1);
    cache.invalidate(&key("k"));
    assert_eq!(leader.release().unwrap().value.len(), 1);
    assert!(cache.get(&key("k")).is_none());
    assert_eq!(cache.stats().entries, 0);
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
fn jitter_spans_a_quarter_either_way() {
    let d = Duration::from_millis(1000);
    // Every factor the random number can pick, in order: from 3/4 of `d`
    // up to (within one step) 5/4 of it, never outside.
    let all: Vec<Duration> = (0..1025).map(|r| jitter(d, r)).collect();
    assert_eq!(all[0], d * 3 / 4);
    assert!(all.windows(2).all(|w| w[0] < w[1]));
    assert!(d * 5 / 4 - all[1024] < d / 2048, "{:?}", all[1024]);
    // The random number is taken modulo the number of steps.
    assert_eq!(jitter(d, 1025 + 7), all[7]);
    // No overflow at the extreme; the top of the range saturates.
    assert!(jitter(Duration::MAX, 0) >= Duration::MAX / 4 * 3);
    assert!(jitter(Duration::MAX, 1024) >= Duration::MAX / 4 * 3);
}
