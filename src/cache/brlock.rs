//! A readers-writer lock whose readers write only a cache line of their
//! own: a "big-reader" lock (Linux's old `brlock`, today's `percpu-rwsem`;
//! BRAVO, Dice and Kogan, USENIX ATC 2019, is the same idea grafted onto
//! an existing lock). The cache's map sits behind one, so a hit on one core
//! does not write the line a hit on another core reads.
//!
//! std's `RwLock` keeps one reader count: every read lock and unlock is an
//! atomic write to that word, so two cores taking read locks at once pass
//! its cache line back and forth on every hit, and a cache that only reads
//! runs at half its one-thread rate on two threads. Here each thread counts
//! itself in one of [`STRIPES`] counters, each alone on its cache line, and
//! only reads the writer's flag, which stays in every core's cache while
//! nobody writes.
//!
//! The price is paid by writers, which are rare on this cache (a miss, a
//! store, an invalidation): a writer takes the `gate` mutex (one writer at a
//! time), raises `writer`, and waits until every stripe's count is zero.
//! Readers that arrive meanwhile see the flag, take their count back and
//! wait on the gate until the writer is done, so a stream of readers cannot
//! starve a writer.
//!
//! The handshake is Dekker's: a reader adds itself, then reads the flag; a
//! writer raises the flag, then reads the counts. All four are `SeqCst`, so
//! they fall in one total order, and at least one of the two sees the
//! other: the reader backs off, or the writer waits for it. Acquire and
//! release carry the data: a reader's decrement (release) to the writer's
//! read of the count (acquire), and the writer's lowering of the flag
//! (release) to the next reader's read of it (acquire). On x86 the
//! reader's side is a locked add and a plain load; a `SeqCst` fence in
//! between instead (an `mfence`) made a read lock cost more than std's.
//!
//! What it does not do, unlike std's: it has no poisoning (the cache takes
//! every lock past poison anyway, see [`crate::unwind`]); a reader that
//! takes the lock again while a writer waits deadlocks (std's may too; the
//! cache never nests its lock); and a writer waiting for a reader spins,
//! then yields, rather than sleeping (readers hold the lock for a hash
//! lookup, or a walk of the entries for a status page).
//!
//! This is the one place in the cache below std: the guards hand out
//! references into an `UnsafeCell` that the protocol above makes safe.
//! `cargo test` stress-tests it; the model checker `loom` checks every
//! interleaving of small cases (see the tests at the end for how to run
//! them).
#![allow(unsafe_code)]

use std::ops::{Deref, DerefMut};

#[cfg(loom)]
use sync::fence;
use sync::UnsafeCell;
use sync::{yield_now, AtomicBool, AtomicUsize, ConstPtr, MutPtr, Mutex, MutexGuard};
use sync::{Ordering::Release, Ordering::SeqCst};

use super::counters::STRIPES;

/// A readers-writer lock with a reader count per stripe of threads.
pub(super) struct BrLock<T> {
    /// Raised while a writer holds the lock or waits for readers to leave.
    writer: Padded<AtomicBool>,
    /// Readers in the lock, by stripe ([`super::counters::stripe`]).
    readers: [Padded<AtomicUsize>; STRIPES],
    /// Held by the writer; readers that find `writer` raised wait on it.
    gate: Mutex<()>,
    data: UnsafeCell<T>,
}

// SAFETY: the lock hands `&T` to readers on any thread and `&mut T` to one
// writer at a time, excluding readers (see the module doc), as std's
// `RwLock` does; so it may be shared when `T` may be sent (to the writer)
// and shared (among readers), and sent when `T` may be.
unsafe impl<T: Send + Sync> Sync for BrLock<T> {}
// SAFETY: as above: moving the lock moves the `T` it owns.
unsafe impl<T: Send> Send for BrLock<T> {}

/// One value alone on its cache line (128 bytes covers x86's adjacent-line
/// prefetch and the 128-byte lines of some ARM cores).
#[repr(align(128))]
struct Padded<A>(A);

impl<T> BrLock<T> {
    pub(super) fn new(data: T) -> BrLock<T> {
        BrLock {
            writer: Padded(AtomicBool::new(false)),
            readers: std::array::from_fn(|_| Padded(AtomicUsize::new(0))),
            gate: Mutex::new(()),
            data: UnsafeCell::new(data),
        }
    }

    /// Read-locks, counting this thread in its own stripe.
    pub(super) fn read(&self) -> ReadGuard<'_, T> {
        self.read_in(super::counters::stripe())
    }

    /// Read-locks, counting in `stripe` (the tests pick it).
    pub(super) fn read_in(&self, stripe: usize) -> ReadGuard<'_, T> {
        let count = &self.readers[stripe % STRIPES].0;
        loop {
            // Dekker's handshake with `write`: a writer that raised the
            // flag before this add is seen below; one that raises it after
            // sees this count.
            count.fetch_add(1, SeqCst);
            loom_fence();
            if !self.writer.0.load(SeqCst) {
                return ReadGuard {
                    data: self.data.get(),
                    _count: Count(count),
                };
            }
            // A writer holds the lock or waits for readers: leave, and
            // come back when it has let the gate go.
            count.fetch_sub(1, Release);
            drop(lock(&self.gate));
        }
    }

    /// Write-locks: one writer at a time, and no reader.
    pub(super) fn write(&self) -> WriteGuard<'_, T> {
        let gate = lock(&self.gate);
        // The other side of the handshake in `read_in`.
        self.writer.0.store(true, SeqCst);
        loom_fence();
        for count in &self.readers {
            let mut spins = 0u32;
            while count.0.load(SeqCst) != 0 {
                backoff(&mut spins);
            }
        }
        WriteGuard {
            data: self.data.get_mut(),
            _flag: Flag {
                writer: &self.writer.0,
                _gate: gate,
            },
        }
    }
}

/// Nothing, except under loom, which models a `SeqCst` access as only
/// `AcqRel` (a limitation its documentation states) and would report a
/// race the handshake rules out; the fence gives it back what `SeqCst`
/// guarantees: one total order of the two sides' write-then-read.
#[inline(always)]
fn loom_fence() {
    #[cfg(loom)]
    fence(SeqCst);
}

/// Waits a little for readers to leave: a few spins for one that is on
/// another core, then yields, so one preempted on this core can run.
fn backoff(spins: &mut u32) {
    const SPINS: u32 = 64;
    if cfg!(loom) || *spins >= SPINS {
        yield_now();
    } else {
        *spins += 1;
        std::hint::spin_loop();
    }
}

/// Locks `m`, ignoring poison: `()` cannot be left half-changed.
fn lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Shared access to the data while the guard lives.
pub(super) struct ReadGuard<'a, T> {
    // Declared first, so it is dropped before the count: the access ends
    // before the writer can see it has.
    data: ConstPtr<T>,
    _count: Count<'a>,
}

/// A reader's place in its stripe, given back on drop.
struct Count<'a>(&'a AtomicUsize);

impl Drop for Count<'_> {
    fn drop(&mut self) {
        // Release: the reads under the lock happen before a writer that
        // sees the count fall.
        self.0.fetch_sub(1, Release);
    }
}

impl<T> Deref for ReadGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: this reader's count is up, and it saw the writer's flag
        // down after the fence, so no writer holds the lock until the count
        // falls when the guard drops (see the module doc); meanwhile only
        // shared references exist. The reference cannot outlive the guard.
        unsafe { self.data.deref() }
    }
}

/// Exclusive access to the data while the guard lives.
pub(super) struct WriteGuard<'a, T> {
    // Declared first, so it is dropped before the flag falls.
    data: MutPtr<T>,
    _flag: Flag<'a>,
}

/// The raised writer's flag and the gate, given back on drop.
struct Flag<'a> {
    writer: &'a AtomicBool,
    // Dropped after `Flag::drop` lowers the flag, so a reader waiting on
    // the gate finds it down.
    _gate: MutexGuard<'a, ()>,
}

impl Drop for Flag<'_> {
    fn drop(&mut self) {
        // Release: the writes under the lock happen before a reader that
        // sees the flag down.
        self.writer.store(false, Release);
    }
}

impl<T> Deref for WriteGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the writer holds the gate and saw every count at zero
        // with its flag raised, so no reader holds the lock and none can
        // enter until the flag falls when the guard drops; `&self` keeps
        // the guard borrowed for the reference's life.
        unsafe { self.data.deref() }
    }
}

impl<T> DerefMut for WriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference
        // for its life.
        unsafe { self.data.deref() }
    }
}

/// The atomics, mutex and cell: std's, or loom's when its model checker
/// runs the tests (`--cfg loom`).
#[cfg(not(loom))]
mod sync {
    pub(super) use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    pub(super) use std::sync::{Mutex, MutexGuard};
    pub(super) use std::thread::yield_now;

    /// std's `UnsafeCell` with loom's interface, so one body of code runs
    /// on both.
    pub(super) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    /// A pointer for shared access.
    pub(super) struct ConstPtr<T>(*const T);

    /// A pointer for exclusive access.
    pub(super) struct MutPtr<T>(*mut T);

    impl<T> UnsafeCell<T> {
        pub(super) fn new(data: T) -> UnsafeCell<T> {
            UnsafeCell(std::cell::UnsafeCell::new(data))
        }

        pub(super) fn get(&self) -> ConstPtr<T> {
            ConstPtr(self.0.get())
        }

        pub(super) fn get_mut(&self) -> MutPtr<T> {
            MutPtr(self.0.get())
        }
    }

    impl<T> ConstPtr<T> {
        /// # Safety
        ///
        /// No `&mut T` may exist while the reference lives.
        pub(super) unsafe fn deref(&self) -> &T {
            // SAFETY: the pointer comes from a live `UnsafeCell`; the
            // caller rules out a concurrent `&mut T`.
            unsafe { &*self.0 }
        }
    }

    impl<T> MutPtr<T> {
        /// # Safety
        ///
        /// No other reference to the `T` may exist while this one lives.
        #[allow(clippy::mut_from_ref)]
        pub(super) unsafe fn deref(&self) -> &mut T {
            // SAFETY: the pointer comes from a live `UnsafeCell`; the
            // caller rules out every other reference.
            unsafe { &mut *self.0 }
        }
    }
}

#[cfg(loom)]
mod sync {
    pub(super) use loom::cell::{ConstPtr, MutPtr, UnsafeCell};
    pub(super) use loom::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
    pub(super) use loom::sync::{Mutex, MutexGuard};
    pub(super) use loom::thread::yield_now;
}

/// Stress tests, run by `cargo test`: threads on both sides hammer a pair
/// of numbers that a writer keeps equal, changing them one at a time, so
/// a reader that overlapped a writer sees them differ.
#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::Arc;
    use std::time::Duration;

    /// Two numbers a writer keeps equal; between its two stores it yields,
    /// to widen the window a broken lock would let a reader into.
    #[derive(Default)]
    struct Pair {
        a: u64,
        b: u64,
    }

    /// `readers` threads read until `writers` threads have each written
    /// `writes` times; returns the reads. Fails after a minute rather
    /// than hang if the lock deadlocks.
    fn hammer(readers: usize, writers: usize, writes: u64) -> u64 {
        let lock = Arc::new(BrLock::new(Pair::default()));
        let reads = Arc::new(AtomicU64::new(0));
        let writing = Arc::new(AtomicUsize::new(writers));
        let (done, finished) = std::sync::mpsc::channel();
        for r in 0..readers {
            let (lock, reads, writing, done) =
                (lock.clone(), reads.clone(), writing.clone(), done.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                // At least one read each, however fast the writers are.
                loop {
                    let pair = lock.read_in(r);
                    assert_eq!(pair.a, pair.b, "a reader overlapped a writer");
                    drop(pair);
                    n += 1;
                    if writing.load(Relaxed) == 0 {
                        break;
                    }
                }
                reads.fetch_add(n, Relaxed);
                let _ = done.send(());
            });
        }
        for _ in 0..writers {
            let (lock, writing, done) = (lock.clone(), writing.clone(), done.clone());
            std::thread::spawn(move || {
                for _ in 0..writes {
                    let mut pair = lock.write();
                    pair.a += 1;
                    std::thread::yield_now();
                    pair.b += 1;
                }
                writing.fetch_sub(1, Relaxed);
                let _ = done.send(());
            });
        }
        drop(done);
        for i in 0..readers + writers {
            // A thread that panicked drops its sender unsent: the channel
            // then closes early, or the count falls short.
            finished
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("{i} of {} threads done: {e}", readers + writers));
        }
        let pair = lock.read();
        // No write was lost: writers excluded each other too.
        let total = writes * writers as u64;
        assert_eq!((pair.a, pair.b), (total, total));
        reads.load(Relaxed)
    }

    #[test]
    fn readers_never_overlap_a_writer() {
        // Readers in distinct stripes, and two sharing one (0 and 8);
        // each reads at least once.
        let readers = STRIPES + 1;
        let reads = hammer(readers, 2, 2000);
        assert!(reads >= readers as u64, "{reads} reads");
    }

    #[test]
    fn writers_exclude_each_other() {
        hammer(0, 4, 2000);
    }

    #[test]
    fn a_writer_waits_for_a_reader_and_readers_for_a_writer() {
        let lock = Arc::new(BrLock::new(0u32));
        let reader = lock.read_in(3);
        let writer = {
            let lock = lock.clone();
            std::thread::spawn(move || *lock.write() += 1)
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!writer.is_finished(), "the writer waits for the reader");
        assert_eq!(*reader, 0);
        drop(reader);
        writer.join().unwrap();
        assert_eq!(*lock.read(), 1);

        let guard = lock.write();
        let reader = {
            let lock = lock.clone();
            std::thread::spawn(move || *lock.read_in(5))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!reader.is_finished(), "the reader waits for the writer");
        drop(guard);
        assert_eq!(reader.join().unwrap(), 1);
    }

    #[test]
    fn readers_share() {
        let lock = BrLock::new(7);
        let (a, b, c) = (lock.read_in(0), lock.read_in(0), lock.read_in(1));
        assert_eq!(*a + *b + *c, 21);
    }

    #[test]
    fn a_panicking_writer_leaves_the_lock_usable() {
        let lock = BrLock::new(1);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut g = lock.write();
            *g = 2;
            panic!("in the writer");
        }));
        assert!(caught.is_err());
        assert_eq!(*lock.read(), 2);
        *lock.write() += 1;
        assert_eq!(*lock.read(), 3);
    }
}

/// Model-checked with loom: every interleaving (and every outcome the
/// memory model allows) of small cases, two threads exhaustively, three
/// with a bound on preemptions. Not part of a plain `cargo test`:
///
/// ```text
/// RUSTFLAGS="--cfg loom" cargo test --release --lib cache::brlock
/// ```
///
/// loom reports a reader's access that overlaps a writer's as a causality
/// violation of the `UnsafeCell`, and a lost write by the final check.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    #[test]
    fn a_reader_and_a_writer() {
        loom::model(|| {
            let lock = Arc::new(BrLock::new((0u32, 0u32)));
            let l = lock.clone();
            let w = thread::spawn(move || {
                let mut g = l.write();
                g.0 += 1;
                g.1 += 1;
            });
            let seen = *lock.read_in(1);
            assert!(seen == (0, 0) || seen == (1, 1), "{seen:?}");
            w.join().unwrap();
            assert_eq!(*lock.read_in(1), (1, 1));
        });
    }

    #[test]
    fn two_readers_in_two_stripes_and_a_writer() {
        loom::model(|| {
            let lock = Arc::new(BrLock::new(0u32));
            let readers: Vec<_> = (0..2)
                .map(|stripe| {
                    let l = lock.clone();
                    thread::spawn(move || *l.read_in(stripe))
                })
                .collect();
            *lock.write() += 1;
            for r in readers {
                assert!(r.join().unwrap() <= 1);
            }
            assert_eq!(*lock.read_in(0), 1);
        });
    }

    /// Three threads: every interleaving with up to three preemptions
    /// (loom's advice; unbounded, it runs for hours).
    #[test]
    fn two_readers_sharing_a_stripe_and_a_writer() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let lock = Arc::new(BrLock::new(0u32));
            let l = lock.clone();
            let r = thread::spawn(move || *l.read_in(2));
            let l = lock.clone();
            let w = thread::spawn(move || *l.write() += 1);
            let mine = *lock.read_in(2);
            assert!(mine <= 1);
            assert!(r.join().unwrap() <= 1);
            w.join().unwrap();
        });
    }

    #[test]
    fn two_writers() {
        loom::model(|| {
            let lock = Arc::new(BrLock::new(0u32));
            let l = lock.clone();
            let w = thread::spawn(move || *l.write() += 1);
            *lock.write() += 1;
            w.join().unwrap();
            assert_eq!(*lock.read_in(0), 2);
        });
    }
}
