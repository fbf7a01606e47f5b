//! Hand-offs gathered while one thread answers many waiting requests at
//! once.
//!
//! When a fill completes, the thread that completed it answers every
//! request that waited for it, one after another: a thousand clients
//! coalesced on one key are a thousand answers handed to the workers in a
//! row. If each hand-off woke a worker on the answering thread's own CPU,
//! the two would take turns: the worker writes one answer, finds the queue
//! empty, sleeps, and is woken again by the next hand-off, a pair of
//! context switches per answer, and between its turns it does the
//! bookkeeping of the connections it already answered (their next reads,
//! their closes) while answers wait to be handed over. So the answering
//! thread marks the run ([`gathered`]), and a hand-off made inside it may
//! leave the start of a worker to its end ([`defer`]): the workers then
//! find every answer queued, and write them back to back. (On one CPU the
//! answering thread keeps the answers and writes them itself when the run
//! ends: see `server::answer_at_end_of_run`.)
//!
//! Only the thread that gathers defers anything, and for at most
//! [`MAX_DEFER`] from its first hand-off: past it, hand-offs go out as
//! they come, so that a long run (tens of thousands of waiters, or a
//! subscriber that blocks) does not hold the first answers back. A
//! subscriber that blocks still holds back the answers handed over before
//! it until the next hand-off, as it always held back those after it.
//! Every other thread hands off as always. A `SCHED_IDLE` thread (the
//! compute lane's default) does not gather: any busy thread on the machine
//! may hold it off the CPU in the middle of its answers, which must not
//! wait for it. A worker woken
//! by its first hand-off preempts it at once anyway.

use std::cell::RefCell;
use std::time::{Duration, Instant};

/// How long from its first hand-off a run may defer them. A thousand waiters
/// are handed over in about 3 ms on a slow virtual CPU (BENCHMARKS.md).
pub(crate) const MAX_DEFER: Duration = Duration::from_millis(5);

/// What runs when a gathered run ends: a key, so that one server's
/// hand-off is kicked once however many answers it took.
type Kick = (usize, Box<dyn FnOnce()>);

/// The run this thread is in.
struct Run {
    /// When it first deferred a hand-off: a run may begin long before its
    /// answers do (a fetch's run spans the fetch).
    started: Option<Instant>,
    kicks: Vec<Kick>,
}

thread_local! {
    static RUN: RefCell<Option<Run>> = const { RefCell::new(None) };
}

/// Runs `f` as one gathered run: kicks deferred inside it run when it
/// returns (or unwinds). A run inside a run is part of the outer one.
pub(crate) fn gathered<R>(f: impl FnOnce() -> R) -> R {
    if active() || crate::priority::idle_here() {
        return f();
    }
    RUN.with(|r| {
        *r.borrow_mut() = Some(Run {
            started: None,
            kicks: Vec::new(),
        })
    });
    let _end = End;
    f()
}

/// Whether this thread is in a gathered run.
pub(crate) fn active() -> bool {
    RUN.with(|r| r.borrow().is_some())
}

/// Whether a hand-off made now may be left to the end of this thread's
/// run: it is in one, and asked this first less than [`MAX_DEFER`] ago.
pub(crate) fn deferring() -> bool {
    RUN.with(|r| match &mut *r.borrow_mut() {
        Some(run) => {
            let now = Instant::now();
            now.duration_since(*run.started.get_or_insert(now)) < MAX_DEFER
        }
        None => false,
    })
}

/// Leaves `kick` to the end of this thread's gathered run, unless one with
/// the same `key` is left already. Returns `false`, doing nothing, if the
/// thread is in no run: the caller kicks now.
pub(crate) fn defer(key: usize, kick: impl FnOnce() + 'static) -> bool {
    RUN.with(|r| match &mut *r.borrow_mut() {
        Some(run) => {
            if !run.kicks.iter().any(|(k, _)| *k == key) {
                run.kicks.push((key, Box::new(kick)));
            }
            true
        }
        None => false,
    })
}

/// Ends the run: takes its kicks first, so that a kick which hands off
/// again hands off at once.
struct End;

impl Drop for End {
    fn drop(&mut self) {
        let run = RUN.with(|r| r.borrow_mut().take());
        // Each on its own: one that panics must not keep the others (which
        // may answer another server's clients) from running.
        for (_, kick) in run.map(|r| r.kicks).unwrap_or_default() {
            if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(kick)) {
                log::error!(
                    "a hand-off at the end of a run panicked: {}",
                    crate::unwind::panic_message(p.as_ref())
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    #[test]
    fn outside_a_run_nothing_is_deferred() {
        assert!(!active());
        assert!(!defer(1, || panic!("not deferred, so not run")));
    }

    #[test]
    fn kicks_run_once_per_key_when_the_run_ends() {
        let ran = Rc::new(Cell::new(0));
        gathered(|| {
            for _ in 0..3 {
                let ran = ran.clone();
                assert!(defer(7, move || ran.set(ran.get() + 1)));
            }
            let ran2 = ran.clone();
            assert!(defer(8, move || ran2.set(ran2.get() + 10)));
            gathered(|| assert!(active(), "an inner run is the outer one"));
            assert_eq!(ran.get(), 0, "nothing runs before the end");
        });
        assert_eq!(ran.get(), 11);
        assert!(!active());
    }

    #[test]
    fn a_run_defers_for_a_while_only() {
        assert!(!deferring(), "not in a run");
        gathered(|| {
            assert!(deferring());
            let until = Instant::now() + MAX_DEFER;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            assert!(!deferring(), "past the bound, hand-offs go out");
            assert!(active(), "still in the run");
        });
    }

    #[test]
    fn a_kick_that_hands_off_again_is_not_deferred() {
        let inner = Rc::new(Cell::new(false));
        let seen = inner.clone();
        gathered(|| {
            defer(1, move || seen.set(!defer(2, || {})));
        });
        assert!(inner.get());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_idle_thread_does_not_gather_nor_do_the_threads_it_starts() {
        let (own, inherited) = std::thread::spawn(|| {
            crate::priority::Priority::Idle
                .apply_to_this_thread()
                .expect("lowering needs no privilege");
            // A thread inherits its creator's policy.
            let child = std::thread::spawn(|| gathered(active));
            (gathered(active), child.join().expect("child"))
        })
        .join()
        .expect("thread");
        assert!(!own);
        assert!(!inherited);
        assert!(gathered(active), "a normal thread does");
    }

    #[test]
    fn a_panicking_run_still_kicks() {
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r = ran.clone();
        let result = std::panic::catch_unwind(move || {
            gathered(|| {
                defer(1, move || {
                    r.store(true, std::sync::atomic::Ordering::SeqCst)
                });
                panic!("a subscriber's panic");
            })
        });
        assert!(result.is_err());
        assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
        assert!(!active());
    }
}
