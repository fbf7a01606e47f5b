//! CPU slots: how many workers serve connections at once.
//!
//! The pool has several workers per CPU, so that a worker blocked on a slow
//! client or a handler that waits does not leave the others' connections
//! unserved. But if every worker that has a connection runs at once, they
//! share the CPUs by time slices: a worker preempted while it holds a
//! connection keeps that client waiting through the others' slices, and
//! every hand-off from one to another costs a wake-up and a context switch.
//!
//! So a worker serves connections only while it holds a slot, and there is
//! one slot per CPU the process may run on. A worker with a slot serves
//! one queued connection after another, with no hand-off in between; the
//! other workers sleep. A worker gives its slot up before it waits for a
//! client (for its next request, or for room to write), and another worker
//! takes it if connections are queued. A worker that holds its slot for
//! long without waiting (a handler that computes or blocks) is not seen by
//! the code; the parker notices the queue making no progress for
//! [`STALL`] and lets one more worker in, up to the pool's size, and a
//! worker back from such a long job gives the extra slot up. This is the
//! concurrency value of Windows' I/O completion ports, and the runtime
//! "processors" of Go's scheduler, for a thread pool.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// How long the queue may make no progress, every slot held, before one
/// more worker is let in.
pub const STALL: Duration = Duration::from_millis(10);

thread_local! {
    /// Whether this thread holds a slot.
    static HELD: Cell<bool> = const { Cell::new(false) };
}

/// The slots of one pool.
#[derive(Debug)]
pub struct Slots {
    /// Slots held now (or taken for a worker about to start).
    held: AtomicUsize,
    /// One per CPU.
    cpus: usize,
    /// The most that may be held, stalls included: the pool's size.
    cap: usize,
    /// Connections taken from the queue so far: the progress a stall lacks.
    picks: AtomicU64,
}

impl Slots {
    /// Slots for a pool of `workers` threads on `cpus` CPUs.
    pub fn new(cpus: usize, workers: usize) -> Slots {
        let cap = workers.max(1);
        Slots {
            held: AtomicUsize::new(0),
            cpus: cpus.clamp(1, cap),
            cap,
            picks: AtomicU64::new(0),
        }
    }

    /// The CPUs this process may run on (its affinity and CPU quota).
    pub fn cpus() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    fn take_below(&self, limit: usize) -> bool {
        self.held
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// Takes a slot for a worker to start with, if one of the CPUs' is free.
    pub fn take(&self) -> bool {
        self.take_below(self.cpus)
    }

    /// Takes one more slot than there are CPUs, for a stall: the queue made
    /// no progress with every slot held. Up to the pool's size.
    pub fn take_extra(&self) -> bool {
        self.take_below(self.cap)
    }

    /// Whether more slots are held than there are CPUs.
    pub fn over(&self) -> bool {
        self.held.load(Ordering::SeqCst) > self.cpus
    }

    /// This thread now holds the slot taken for it.
    pub fn enter(&self) {
        HELD.with(|h| h.set(true));
    }

    /// Whether this thread holds a slot.
    pub fn held_here(&self) -> bool {
        HELD.with(Cell::get)
    }

    /// Gives this thread's slot up, if it holds one. Returns whether it did.
    pub fn release_here(&self) -> bool {
        let held = HELD.with(|h| h.replace(false));
        if held {
            self.held.fetch_sub(1, Ordering::SeqCst);
        }
        held
    }

    /// Counts a connection taken from the queue.
    pub fn picked(&self) {
        self.picks.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections taken from the queue so far.
    pub fn picks(&self) -> u64 {
        self.picks.load(Ordering::Relaxed)
    }

    /// Slots held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// One per CPU.
    pub fn per_cpu(&self) -> usize {
        self.cpus
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_slot_per_cpu_then_extras_up_to_the_pool() {
        let s = Slots::new(2, 3);
        assert!(s.take() && s.take());
        assert!(!s.take(), "a third worker waits while two CPUs are busy");
        assert!(!s.over());
        assert!(s.take_extra(), "a stall lets one more in");
        assert!(s.over());
        assert!(!s.take_extra(), "never more than the pool has threads");
        assert_eq!(s.held(), 3);
    }

    #[test]
    fn a_thread_gives_up_only_the_slot_it_holds() {
        let s = Slots::new(1, 4);
        assert!(!s.release_here(), "this thread holds none yet");
        assert!(s.take());
        s.enter();
        assert!(s.held_here());
        assert!(s.release_here());
        assert!(!s.held_here());
        assert!(!s.release_here(), "a second release gives nothing back");
        assert_eq!(s.held(), 0);
        assert!(s.take(), "the slot is free again");
    }

    #[test]
    fn never_more_cpus_than_threads() {
        let s = Slots::new(16, 2);
        assert_eq!(s.per_cpu(), 2);
        let none = Slots::new(0, 0);
        assert_eq!(none.per_cpu(), 1);
        assert!(none.take() && !none.take_extra());
    }
}
