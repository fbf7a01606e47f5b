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
//! find every answer queued, and write them back to back.
//!
//! Only the thread that gathers defers anything; every other thread hands
//! off as always. A `SCHED_IDLE` thread (the compute lane's default) does
//! not gather: any busy thread on the machine may hold it off the CPU in
//! the middle of its answers, which must not wait for it. A worker woken
//! by its first hand-off preempts it at once anyway.

use std::cell::RefCell;

/// What runs when a gathered run ends: a key, so that one server's
/// hand-off is kicked once however many answers it took.
type Kick = (usize, Box<dyn FnOnce()>);

thread_local! {
    /// The kicks of the run this thread is in, if it is in one.
    static KICKS: RefCell<Option<Vec<Kick>>> = const { RefCell::new(None) };
}

/// Runs `f` as one gathered run: kicks deferred inside it run when it
/// returns (or unwinds). A run inside a run is part of the outer one.
pub(crate) fn gathered<R>(f: impl FnOnce() -> R) -> R {
    if active() || crate::priority::idle_here() {
        return f();
    }
    KICKS.with(|k| *k.borrow_mut() = Some(Vec::new()));
    let _end = End;
    f()
}

/// Whether this thread is in a gathered run.
pub(crate) fn active() -> bool {
    KICKS.with(|k| k.borrow().is_some())
}

/// Leaves `kick` to the end of this thread's gathered run, unless one with
/// the same `key` is left already. Returns `false`, doing nothing, if the
/// thread is in no run: the caller kicks now.
pub(crate) fn defer(key: usize, kick: impl FnOnce() + 'static) -> bool {
    KICKS.with(|k| match &mut *k.borrow_mut() {
        Some(kicks) => {
            if !kicks.iter().any(|(k, _)| *k == key) {
                kicks.push((key, Box::new(kick)));
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
        let kicks = KICKS.with(|k| k.borrow_mut().take()).unwrap_or_default();
        for (_, kick) in kicks {
            kick();
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
    fn an_idle_thread_does_not_gather() {
        let gathers = std::thread::spawn(|| {
            crate::priority::Priority::Idle
                .apply_to_this_thread()
                .expect("lowering needs no privilege");
            gathered(active)
        })
        .join()
        .expect("thread");
        assert!(!gathers);
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
