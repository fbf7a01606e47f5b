//! Unit tests of the compute lane and of lookups that never block
//! (`get_or_submit`): every wait bounded, so a hang fails instead of
//! stalling.

use std::sync::atomic::AtomicUsize;
use std::sync::mpsc::{self, RecvTimeoutError};

use super::tests::*;
use super::*;

type Answer = Result<Lookup<Bytes>, Error>;

/// `get_or_submit` with a `done` that sends its answer down the returned
/// channel.
fn submit(
    cache: &Cache<String, Bytes>,
    k: &str,
    compute: impl FnOnce() -> Result<Bytes, String> + Send + 'static,
) -> mpsc::Receiver<Answer> {
    let (tx, rx) = mpsc::channel();
    cache.get_or_submit(
        &key(k),
        move || compute().map(|v| (v, None)),
        move |answer| tx.send(answer).unwrap(),
    );
    rx
}

/// The answer `done` sent, or a panic after [`HANG`].
fn answer(rx: &mpsc::Receiver<Answer>) -> Answer {
    rx.recv_timeout(HANG).expect("done was never called")
}

/// The answer `done` sent before `get_or_submit` returned; panics if it
/// has not been called yet.
fn answered_at_once(rx: &mpsc::Receiver<Answer>) -> Answer {
    rx.try_recv().expect("done was not called at once")
}

fn thread_name() -> String {
    thread::current().name().unwrap_or("").to_owned()
}

#[test]
#[cfg(target_os = "linux")]
fn lane_threads_take_the_priority_they_are_given() {
    use crate::priority::{self, Priority};
    // The cache's own lane, with the default configuration.
    let cache = Cache::<String, Bytes>::new(CacheConfig::default(), weigh);
    let (normal, low) = (
        Lane::new(1, 1),
        Lane::new(1, 1).with_priority(Priority::Low),
    );
    let cases = [
        (&normal, Priority::Normal),
        (&low, Priority::Low),
        (cache.lane(), Priority::Idle),
    ];
    // Lane threads start from the nice value of the thread that starts them.
    let base = priority::nice_now();
    for (lane, want) in cases {
        let (tx, rx) = mpsc::channel();
        assert!(lane
            .try_spawn(move || tx.send(priority::current(base).unwrap()).unwrap())
            .is_ok());
        assert_eq!(rx.recv_timeout(HANG).unwrap(), want);
    }
}

/// A thread started for a job that a lane thread submitted inherits that
/// thread's lowered nice value; `Low` is counted from the lane's maker, so
/// it is not lowered twice.
#[test]
#[cfg(target_os = "linux")]
fn a_low_lane_thread_started_by_another_is_not_lowered_twice() {
    use crate::priority::{self, Priority};
    let base = priority::nice_now();
    let lane = Arc::new(Lane::new(2, 4).with_priority(Priority::Low));
    let (tx, rx) = mpsc::channel();
    let inner = lane.clone();
    assert!(lane
        .try_spawn(move || {
            let (release, held) = mpsc::channel::<()>();
            let tx2 = tx.clone();
            // Submitted while this job holds the only thread: it starts the
            // second, from this lowered one.
            let queued = inner.try_spawn(move || {
                tx2.send(priority::nice_now()).unwrap();
                release.send(()).unwrap();
            });
            assert!(queued.is_ok());
            held.recv_timeout(HANG).unwrap();
            tx.send(priority::nice_now()).unwrap();
        })
        .is_ok());
    let want = (base + 10).min(19);
    assert_eq!(rx.recv_timeout(HANG), Ok(want), "the second thread");
    assert_eq!(rx.recv_timeout(HANG), Ok(want), "the first thread");
    assert_eq!(lane.threads_started(), 2);
}

#[test]
fn lane_runs_in_order_refuses_past_its_bound_and_reports_gauges() {
    let lane = Lane::new(1, 2);
    let (started_tx, started) = mpsc::channel();
    let (release, held) = mpsc::channel::<()>();
    let (ran_tx, ran) = mpsc::channel();
    let blocker = move || {
        started_tx.send(thread_name()).unwrap();
        held.recv_timeout(HANG).unwrap();
    };
    assert!(lane.try_spawn(blocker).is_ok());
    // Counted busy before the job is called, so this is exact.
    assert_eq!(started.recv_timeout(HANG).unwrap(), "corral-compute");
    assert_eq!((lane.busy(), lane.queued()), (1, 0));
    for i in 0..2 {
        let ran_tx = ran_tx.clone();
        assert!(lane.try_spawn(move || ran_tx.send(i).unwrap()).is_ok());
    }
    assert_eq!((lane.busy(), lane.queued()), (1, 2));
    // The thread is busy and two wait: the third is given back unrun.
    let refused = lane.try_spawn(move || ran_tx.send(2).unwrap());
    let Err(job) = refused else {
        panic!("a job past the bound was queued")
    };
    assert_eq!((lane.jobs_refused(), lane.queued()), (1, 2));
    job();
    assert_eq!(ran.try_recv(), Ok(2), "the refused job comes back whole");
    release.send(()).unwrap();
    let order: Vec<i32> = (0..2).map(|_| ran.recv_timeout(HANG).unwrap()).collect();
    assert_eq!(order, [0, 1]);
    wait_until("the lane is idle", || {
        lane.busy() == 0 && lane.jobs_run() == 3
    });
    assert_eq!((lane.queued(), lane.jobs_refused()), (0, 1));
}

#[test]
fn lane_thread_survives_a_panicking_job() {
    let lane = Lane::new(1, 4);
    assert!(lane.try_spawn(|| panic!("a job fell over")).is_ok());
    let (tx, rx) = mpsc::channel();
    assert!(lane
        .try_spawn(move || tx.send(thread_name()).unwrap())
        .is_ok());
    // One thread, so the job after the panic ran on the same one.
    assert_eq!(rx.recv_timeout(HANG).unwrap(), "corral-compute");
    wait_until("both counted", || lane.jobs_run() == 2);
}

/// Threads start as jobs need them: one job at a time runs on one thread,
/// jobs at once get a thread each, up to the lane's size.
#[test]
fn lane_starts_a_thread_only_for_a_job_no_idle_one_takes() {
    let lane = Lane::new(4, 8);
    assert_eq!(lane.threads_started(), 0);
    for i in 0..5 {
        let (tx, rx) = mpsc::channel();
        assert!(lane.try_spawn(move || tx.send(i).unwrap()).is_ok());
        assert_eq!(rx.recv_timeout(HANG), Ok(i));
        wait_until("the job counted", || {
            lane.jobs_run() == i + 1 && lane.busy() == 0
        });
    }
    assert_eq!(
        lane.threads_started(),
        1,
        "one job at a time needs one thread"
    );

    // Six jobs held at once: four run, each on a thread of its own, two
    // wait, and no fifth thread starts.
    let (release, held) = mpsc::channel::<()>();
    let held = Arc::new(std::sync::Mutex::new(held));
    let (started_tx, started) = mpsc::channel();
    for _ in 0..6 {
        let (held, started_tx) = (held.clone(), started_tx.clone());
        assert!(lane
            .try_spawn(move || {
                started_tx.send(()).unwrap();
                held.lock().unwrap().recv_timeout(HANG).unwrap();
            })
            .is_ok());
    }
    for _ in 0..4 {
        started.recv_timeout(HANG).unwrap();
    }
    wait_until("four running", || lane.busy() == 4);
    assert_eq!((lane.threads_started(), lane.queued()), (4, 2));
    for _ in 0..6 {
        release.send(()).unwrap();
    }
    wait_until("all run", || lane.jobs_run() == 11);
    assert_eq!(lane.threads_started(), 4);
}

#[test]
fn lane_dropped_still_runs_what_it_queued() {
    let lane = Lane::new(1, 4);
    let (release, held) = mpsc::channel::<()>();
    let (tx, rx) = mpsc::channel();
    let (started_tx, started) = mpsc::channel();
    assert!(lane
        .try_spawn(move || {
            started_tx.send(()).unwrap();
            held.recv_timeout(HANG).unwrap();
        })
        .is_ok());
    started.recv_timeout(HANG).unwrap();
    assert!(lane.try_spawn(move || tx.send("ran").unwrap()).is_ok());
    drop(lane);
    release.send(()).unwrap();
    assert_eq!(rx.recv_timeout(HANG), Ok("ran"));
}

#[test]
fn submitted_miss_computes_on_the_lane_and_a_hit_answers_at_once() {
    let cache = cache(config());
    let (name_tx, name) = mpsc::channel();
    let rx = submit(&cache, "k", move || {
        name_tx.send(thread_name()).unwrap();
        bytes(3)
    });
    let miss = answer(&rx).unwrap();
    assert_eq!((miss.outcome, miss.value.len()), (LookupOutcome::Miss, 3));
    assert_eq!(name.recv_timeout(HANG).unwrap(), "corral-compute");
    let rx = submit(&cache, "k", || panic!("a hit computed"));
    let hit = answered_at_once(&rx).unwrap();
    assert_eq!(hit.outcome, LookupOutcome::Hit);
    assert!(Arc::ptr_eq(&hit.value, &miss.value));
    // The `done` ran and is gone, its sender with it.
    assert!(matches!(
        rx.recv_timeout(HANG),
        Err(RecvTimeoutError::Disconnected)
    ));
    let stats = cache.stats();
    assert_eq!(
        (
            stats.misses,
            stats.hits,
            stats.computations,
            stats.in_flight
        ),
        (1, 1, 1, 0)
    );
}

/// A submitted computation that fails (`panic` or an error) answers its
/// `done` with the error, which is remembered and then answered at once.
fn submitted_failure_is_answered_and_remembered(panic: bool) {
    let cache = cache(config());
    let rx = submit(&cache, "k", move || {
        if panic {
            panic!("boom");
        }
        Err("no data".into())
    });
    let expected = if panic {
        Error::Panicked("boom".into())
    } else {
        Error::Failed("no data".into())
    };
    assert_eq!(answer(&rx).unwrap_err(), expected);
    let rx = submit(&cache, "k", || panic!("recomputed within error_ttl"));
    assert_eq!(answered_at_once(&rx).unwrap_err(), expected);
    let stats = cache.stats();
    assert_eq!((stats.computations, stats.failures), (1, 1));
    // The lane thread lived through it.
    let rx = submit(&cache, "other", || bytes(1));
    assert_eq!(answer(&rx).unwrap().outcome, LookupOutcome::Miss);
}

#[test]
fn submitted_error_is_answered_and_remembered() {
    submitted_failure_is_answered_and_remembered(false);
}

#[test]
fn submitted_panic_is_answered_and_remembered() {
    submitted_failure_is_answered_and_remembered(true);
}

#[test]
fn submit_joins_a_computation_in_flight() {
    let cache = cache(config());
    let leader = Held::start(&cache, "k", 4);
    let rx = submit(&cache, "k", || panic!("a second computation ran"));
    assert!(rx.try_recv().is_err(), "answered before the value existed");
    assert_eq!(cache.stats().coalesced, 1);
    let led = leader.release().unwrap();
    let joined = answer(&rx).unwrap();
    assert_eq!(joined.outcome, LookupOutcome::Coalesced);
    assert!(Arc::ptr_eq(&joined.value, &led.value));
}

#[test]
fn many_submitters_of_one_key_share_one_computation() {
    const N: usize = 100;
    let cache = cache(config());
    let computed = Arc::new(AtomicUsize::new(0));
    let start = Latch::new(N);
    let (tx, rx) = mpsc::channel();
    run_threads(N, {
        let (cache, computed) = (cache.clone(), computed.clone());
        move |_| {
            let (watcher, computed, tx) = (cache.clone(), computed.clone(), tx.clone());
            start.arrive_and_wait();
            cache.get_or_submit(
                &key("k"),
                move || {
                    computed.fetch_add(1, Ordering::SeqCst);
                    // Held until every lookup has joined, so none is a hit.
                    let all = N as u64;
                    wait_until("all joined", || {
                        let s = watcher.stats();
                        s.misses + s.coalesced == all
                    });
                    bytes(8).map(|v| (v, None))
                },
                move |answer| tx.send(answer).unwrap(),
            );
        }
    });
    let got: Vec<Lookup<Bytes>> = (0..N).map(|_| answer(&rx).unwrap()).collect();
    assert_eq!(computed.load(Ordering::SeqCst), 1);
    assert_one_led_and_the_rest_joined(&got);
    // Every `done` was called once: no more answers, the senders are gone.
    assert!(matches!(
        rx.recv_timeout(HANG),
        Err(RecvTimeoutError::Disconnected)
    ));
}

/// A cache whose one lane thread runs a computation of "slow" until it is
/// sent the go-ahead, with no room to queue another; the sender, and the
/// channel the slow key's answer comes down.
fn full_lane() -> (
    Cache<String, Bytes>,
    mpsc::Sender<()>,
    mpsc::Receiver<Answer>,
) {
    let cache = cache(CacheConfig {
        compute_concurrency: 1,
        max_queued: 0,
        ..config()
    });
    let (started_tx, started) = mpsc::channel();
    let (release, held) = mpsc::channel::<()>();
    let slow = submit(&cache, "slow", move || {
        started_tx.send(()).unwrap();
        held.recv_timeout(HANG).unwrap();
        bytes(1)
    });
    started.recv_timeout(HANG).unwrap();
    (cache, release, slow)
}

#[test]
fn full_compute_queue_answers_busy_at_once_and_forgets_it() {
    let (cache, release, slow) = full_lane();
    // The only lane thread is busy and nothing may wait for it.
    let refused = submit(&cache, "other", || panic!("a refused computation ran"));
    assert_eq!(answered_at_once(&refused).unwrap_err(), Error::Busy);
    assert_eq!((cache.stats().busy, cache.lane().jobs_refused()), (1, 1));
    release.send(()).unwrap();
    assert_eq!(answer(&slow).unwrap().outcome, LookupOutcome::Miss);
    // Not remembered: once the lane is free, the key computes.
    wait_until("the lane is free", || cache.lane().busy() == 0);
    let again = submit(&cache, "other", || bytes(2));
    assert_eq!(answer(&again).unwrap().outcome, LookupOutcome::Miss);
}

#[test]
fn blocking_lookup_runs_a_queued_computation_instead_of_waiting_for_the_lane() {
    // One lane thread, running "outer", whose computation looks up "inner"
    // while inner's computation is queued behind it. Waiting for the lane
    // would deadlock until `wait_timeout` (a minute, past HANG).
    let cache = cache(CacheConfig {
        compute_concurrency: 1,
        ..config()
    });
    let (started_tx, started) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    let lookup = cache.clone();
    let outer = submit(&cache, "outer", move || {
        started_tx.send(()).unwrap();
        go_rx.recv_timeout(HANG).unwrap();
        let inner = lookup
            .get_or_compute(&key("inner"), || -> Result<Bytes, String> {
                panic!("the queued computation was not the one run")
            })
            .map_err(|e| e.to_string())?;
        assert_eq!(inner.outcome, LookupOutcome::Coalesced);
        bytes(inner.value.len() + 1)
    });
    started.recv_timeout(HANG).unwrap();
    let (name_tx, name) = mpsc::channel();
    let inner = submit(&cache, "inner", move || {
        name_tx.send(thread_name()).unwrap();
        bytes(2)
    });
    assert_eq!(cache.lane().queued(), 1, "inner waits behind outer");
    go.send(()).unwrap();
    let inner = answer(&inner).unwrap();
    assert_eq!((inner.outcome, inner.value.len()), (LookupOutcome::Miss, 2));
    assert_eq!(answer(&outer).unwrap().value.len(), 3);
    // Run on the one lane thread, inside outer's computation.
    assert_eq!(name.recv_timeout(HANG).unwrap(), "corral-compute");
    // The lane's task for inner found the computation gone.
    wait_until("both tasks ran", || cache.lane().jobs_run() == 2);
    let stats = cache.stats();
    assert_eq!((stats.computations, stats.timeouts), (2, 0));
}

#[test]
fn a_panicking_done_does_not_keep_the_others_from_their_answers() {
    let cache = cache(config());
    let leader = Held::start(&cache, "k", 1);
    cache.get_or_submit(
        &key("k"),
        || bytes(0).map(|v| (v, None)),
        |_| panic!("a subscriber fell over"),
    );
    let rx = submit(&cache, "k", || bytes(0));
    assert_eq!(leader.release().unwrap().outcome, LookupOutcome::Miss);
    assert_eq!(answer(&rx).unwrap().outcome, LookupOutcome::Coalesced);
}

#[test]
fn stale_refresh_runs_on_the_lane() {
    let cache = cache(config());
    cache.insert_with_ttl(key("k"), bytes(1).unwrap(), Duration::ZERO);
    let (name_tx, name) = mpsc::channel();
    let got = cache
        .get_or_compute_swr(&key("k"), move || {
            name_tx.send(thread_name()).unwrap();
            Ok::<_, String>((Arc::new(vec![2; 2]), None))
        })
        .unwrap();
    assert_eq!(got.outcome, LookupOutcome::Stale);
    assert_eq!(name.recv_timeout(HANG).unwrap(), "corral-compute");
    wait_until("refreshed", || cache.get(&key("k")).is_some());
}

#[test]
fn full_compute_queue_keeps_serving_stale() {
    let (cache, release, slow) = full_lane();
    cache.insert_with_ttl(key("k"), bytes(1).unwrap(), Duration::ZERO);
    let refresh = || Ok::<_, String>((Arc::new(vec![2; 2]), None));
    let got = cache.get_or_compute_swr(&key("k"), refresh).unwrap();
    assert_eq!((got.outcome, got.value.len()), (LookupOutcome::Stale, 1));
    // Refused, not remembered: the slot is gone, and the next stale lookup
    // tries again.
    assert_eq!((cache.stats().busy, cache.lane().jobs_refused()), (1, 1));
    release.send(()).unwrap();
    answer(&slow).unwrap();
    wait_until("the lane is free", || cache.lane().busy() == 0);
    let got = cache.get_or_compute_swr(&key("k"), refresh).unwrap();
    assert_eq!(got.outcome, LookupOutcome::Stale);
    wait_until("refreshed", || cache.get(&key("k")).is_some());
    assert_eq!(cache.get(&key("k")).map(|v| v.len()), Some(2));
}
