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
//! takes it if connections are queued; the one that waited finishes what
//! it waited for, then takes a slot again or leaves.
//!
//! A worker held up without waiting on a client (a handler that computes or
//! blocks) cannot say so. The parker notices instead: when the queue has
//! made no progress for [`STALL`], it demotes every holder at once (their
//! slots become free, counted under a new generation) and starts workers
//! on them. A demoted worker finishes its job, gives back nothing, and
//! competes for a slot like any other. The slots held never exceed the
//! CPUs, however many workers were held up. This is the concurrency value
//! of Windows' I/O completion ports, and the processors Go's scheduler
//! takes back from a thread blocked in a system call, for a thread pool.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long the queue may make no progress, every slot held, before its
/// holders are demoted and other workers serve it.
pub const STALL: Duration = Duration::from_millis(10);

thread_local! {
    /// The generation of the slot this thread holds, if it holds one.
    static HELD: Cell<Option<u32>> = const { Cell::new(None) };
}

/// A slot taken for a worker: the generation it counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u32);

/// The slots of one pool.
#[derive(Debug)]
pub struct Slots {
    /// The generation (high 32 bits) and the slots held in it (low 32):
    /// one word, so that taking a slot and demoting every holder cannot
    /// interleave.
    state: AtomicU64,
    /// One per CPU.
    cpus: u32,
    /// Slots [`Slots::take_spare`] leaves free: one, unless there are
    /// fewer slots than CPUs (fewer workers), and a thread without a slot
    /// has a CPU of its own anyway.
    spare: u32,
    /// Connections taken from the queue so far: the progress a stall lacks.
    picks: AtomicU64,
}

fn split(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

fn join(generation: u32, held: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(held)
}

impl Slots {
    /// One slot per CPU, for a pool of `workers` threads on `cpus` CPUs
    /// (never more slots than threads).
    pub fn new(cpus: usize, workers: usize) -> Slots {
        let slots = cpus.clamp(1, workers.max(1));
        Slots {
            state: AtomicU64::new(0),
            cpus: u32::try_from(slots).unwrap_or(u32::MAX),
            spare: u32::from(slots >= cpus),
            picks: AtomicU64::new(0),
        }
    }

    /// The CPUs this process may run on (its affinity and CPU quota).
    pub fn cpus() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// Takes a slot if one is free, for a worker to start with or go on.
    pub fn take(&self) -> Option<Ticket> {
        self.take_leaving(0)
    }

    /// Takes a slot if another stays free: for a worker started by a
    /// thread that keeps a CPU busy itself, and holds no slot for it.
    pub fn take_spare(&self) -> Option<Ticket> {
        self.take_leaving(self.spare)
    }

    /// Takes a slot if `free` more stay free after it.
    fn take_leaving(&self, free: u32) -> Option<Ticket> {
        let cpus = self.cpus;
        self.state
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |word| {
                let (generation, held) = split(word);
                (held + free < cpus).then(|| join(generation, held + 1))
            })
            .ok()
            .map(|word| Ticket(split(word).0))
    }

    /// Frees every slot at once: their holders are held up. A holder's
    /// later release gives nothing back.
    pub fn demote_all(&self) {
        let _ = self
            .state
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |word| {
                Some(join(split(word).0.wrapping_add(1), 0))
            });
    }

    /// This thread now holds the slot `ticket` was taken for.
    pub fn enter(&self, ticket: Ticket) {
        HELD.with(|h| h.set(Some(ticket.0)));
    }

    /// Whether this thread holds a slot that was not demoted.
    pub fn held_here(&self) -> bool {
        let generation = split(self.state.load(Ordering::SeqCst)).0;
        HELD.with(Cell::get) == Some(generation)
    }

    /// Gives this thread's slot up, if it holds one. Returns whether a
    /// slot came free (a demoted one was free already).
    pub fn release_here(&self) -> bool {
        let Some(mine) = HELD.with(Cell::take) else {
            return false;
        };
        self.state
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |word| {
                let (generation, held) = split(word);
                (generation == mine && held > 0).then(|| join(generation, held - 1))
            })
            .is_ok()
    }

    /// Counts a connection taken from the queue.
    pub fn picked(&self) {
        self.picks.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections taken from the queue so far.
    pub fn picks(&self) -> u64 {
        self.picks.load(Ordering::Relaxed)
    }

    /// Slots held now (or taken for workers about to start).
    pub fn held(&self) -> usize {
        split(self.state.load(Ordering::SeqCst)).1 as usize
    }

    /// One per CPU.
    pub fn per_cpu(&self) -> usize {
        self.cpus as usize
    }

    /// Whether the pool runs on one CPU: one slot, and no more CPUs than
    /// slots (with one worker on several CPUs, a thread without a slot has
    /// a CPU of its own).
    pub fn one_cpu(&self) -> bool {
        self.cpus == 1 && self.spare == 1
    }

    /// Whether every slot is held: the only state in which the queue can
    /// stall.
    pub fn all_held(&self) -> bool {
        self.held() >= self.per_cpu()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cpu_is_one_slot_on_one_cpu() {
        assert!(Slots::new(1, 8).one_cpu());
        assert!(
            !Slots::new(8, 1).one_cpu(),
            "one worker, the other CPUs free"
        );
        assert!(!Slots::new(2, 8).one_cpu());
    }

    #[test]
    fn one_slot_per_cpu() {
        let s = Slots::new(2, 8);
        assert!(s.take().is_some() && s.take().is_some());
        assert!(
            s.take().is_none(),
            "a third worker waits while two CPUs are busy"
        );
        assert!(s.all_held());
        assert_eq!(s.held(), 2);
    }

    #[test]
    fn a_spare_slot_leaves_one_cpu_free() {
        let s = Slots::new(2, 8);
        assert!(s.take_spare().is_some());
        assert!(s.take_spare().is_none(), "the last CPU stays free");
        assert!(s.take().is_some(), "for a plain take");
        assert!(Slots::new(1, 4).take_spare().is_none());
        // Fewer workers than CPUs: a thread without a slot has a CPU the
        // slots do not count, so every slot may go.
        let few = Slots::new(4, 2);
        assert!(few.take_spare().is_some() && few.take_spare().is_some());
        assert!(few.take_spare().is_none(), "but no more than there are");
    }

    #[test]
    fn a_thread_gives_up_only_the_slot_it_holds() {
        let s = Slots::new(1, 4);
        assert!(!s.release_here(), "this thread holds none yet");
        let t = s.take().unwrap();
        s.enter(t);
        assert!(s.held_here());
        assert!(s.release_here());
        assert!(!s.held_here());
        assert!(!s.release_here(), "a second release gives nothing back");
        assert_eq!(s.held(), 0);
        assert!(s.take().is_some(), "the slot is free again");
    }

    #[test]
    fn demoted_holders_give_back_nothing_and_the_count_stays_within_the_cpus() {
        let s = Arc::new(Slots::new(1, 4));
        let stuck = s.take().unwrap();
        // The held-up worker runs on another thread.
        let (entered, release) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
        let worker = {
            let s = s.clone();
            let (entered, release) = (entered.0, release.1);
            std::thread::spawn(move || {
                s.enter(stuck);
                entered.send(s.held_here()).unwrap();
                release.recv().unwrap();
                (s.held_here(), s.release_here())
            })
        };
        assert!(entered.1.recv().unwrap());
        assert!(s.take().is_none());
        s.demote_all();
        assert_eq!(s.held(), 0);
        let rescuer = s.take().expect("the demoted slot is free");
        s.enter(rescuer);
        assert!(s.held_here());
        release.0.send(()).unwrap();
        let (still_held, gave_back) = worker.join().unwrap();
        assert!(!still_held, "a demoted worker no longer holds its slot");
        assert!(!gave_back, "nor gives it back");
        assert_eq!(s.held(), 1, "the rescuer's slot is still counted");
        assert!(s.release_here());
        assert_eq!(s.held(), 0);
    }

    #[test]
    fn never_more_slots_than_threads() {
        let s = Slots::new(16, 2);
        assert_eq!(s.per_cpu(), 2);
        let none = Slots::new(0, 0);
        assert_eq!(none.per_cpu(), 1);
        assert!(none.take().is_some() && none.take().is_none());
    }

    #[test]
    fn generations_wrap() {
        let s = Slots::new(1, 1);
        s.state.store(join(u32::MAX, 0), Ordering::SeqCst);
        let t = s.take().unwrap();
        s.enter(t);
        s.demote_all();
        assert_eq!(split(s.state.load(Ordering::SeqCst)), (0, 0));
        assert!(!s.release_here());
        assert_eq!(s.held(), 0);
    }

    use std::sync::Arc;
}
