//! The compute lane: a bounded set of threads, named `corral-compute`, that
//! run slow work away from the request workers, fed by a bounded FIFO queue.
//!
//! Each [`Cache`](super::Cache) owns one and runs its computations there, so
//! a request worker only parses, looks up and writes: a request whose value
//! is not ready is parked with its connection, and answered when the lane
//! has computed it. A library user can defer slow work of its own the same
//! way:
//!
//! ```
//! use corral::cache::Lane;
//! use corral::Response;
//! use once_cell::sync::Lazy;
//!
//! static LANE: Lazy<Lane> = Lazy::new(|| Lane::new(2, 64));
//!
//! fn slow() -> String {
//!     "done\n".to_string()
//! }
//!
//! fn handler() -> Response {
//!     let (placeholder, reply) = Response::later();
//!     match LANE.try_spawn(move || reply.send(Response::text(200, slow()))) {
//!         Ok(()) => placeholder,
//!         // The refused job, and the reply in it, are dropped unsent:
//!         // nobody waits for that reply once the placeholder is gone.
//!         Err(_refused) => Response::error(503, "too busy; retry later"),
//!     }
//! }
//!
//! assert!(handler().is_later());
//! ```
//!
//! # Why threads of its own
//!
//! The alternative was a reservation inside the request pool: computations
//! run as jobs on the request workers, at most `compute-concurrency` at
//! once, so the other workers stay free for requests. Both were built and
//! measured with the miss storm (BENCHMARKS.md, "Misses do not hold the
//! workers"): at the workers' priority they keep hits equally fast (probe
//! p99 3.6–5.7 ms for the reservation, 4.2–5.4 ms for the lane), and only
//! the lane takes `SCHED_IDLE` well (1.0–2.1 ms, against 1.8–4.9 ms for
//! pool workers switched to it for each computation and back). The lane
//! also leaves every request worker to requests, where the reservation
//! takes up to `compute-concurrency` of them away, and it sets its policy
//! once per thread: an unprivileged worker moved to `SCHED_IDLE` for a
//! computation could not move back (sched(7): leaving it needs
//! `CAP_SYS_NICE`, or an `RLIMIT_NICE` that allows nice 0, and that limit
//! is 0 by default; the prototype ran as root). The cost is extra threads, started as jobs
//! need them up to a fixed number (idle ones sleep on a condvar), so the
//! process's thread count stays bounded:
//! request workers, plus each lane, plus a few fixed threads.
//!
//! # Locks
//!
//! One `Mutex` over the queue, with a `Condvar` the idle threads sleep on.
//! Nothing else is locked while it is held, and no job runs under it. The
//! gauges are atomics changed under it, so they can be read without it.

use std::collections::VecDeque;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::priority::Priority;
use crate::unwind::{lock, panic_message};

/// After the OS refuses a thread, the lane waits this long before asking
/// again, so a process at its thread limit does not ask on every job (nor
/// log each refusal).
const SPAWN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Work for the lane: anything run once, on a lane thread.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// Up to a fixed number of threads running jobs from a bounded FIFO queue.
/// A thread starts when a job finds none idle, so a lane sized for a burst
/// that never comes holds only the threads it has used; the threads end
/// once the lane is dropped and its queue has drained.
pub struct Lane {
    shared: Arc<Shared>,
}

/// What the lane's threads share with its handle.
struct Shared {
    state: Mutex<State>,
    /// Signalled once per queued job, and to all threads when the lane is
    /// dropped.
    work: Condvar,
    threads: usize,
    max_queued: usize,
    /// The priority each thread takes when it starts.
    priority: Priority,
    /// The nice value of the thread that made the lane, which `Low` is
    /// counted from: a thread starts with the priority of the one that
    /// submitted the job it starts for, maybe a lane thread lowered already.
    base_nice: i32,
    /// The threads' name, as `ps -L` and `/proc` show it.
    name: &'static str,
    /// Jobs running now; changed only under `state`'s lock, so it agrees
    /// with the queue whenever the lock is free.
    busy: AtomicUsize,
    /// Jobs waiting for a thread; the queue's length, kept beside it.
    queued: AtomicUsize,
    run: AtomicU64,
    refused: AtomicU64,
}

struct State {
    queue: VecDeque<Job>,
    /// Threads started so far: 0 until the first job comes, then one more
    /// each time a job finds none idle, up to the number asked for.
    started: usize,
    /// When the OS last refused a thread: the lane makes do with those it
    /// has, and tries again a second later (at once while it has none).
    refused_at: Option<Instant>,
    /// Set when the [`Lane`] is dropped: threads exit once the queue is
    /// empty.
    closed: bool,
}

impl Lane {
    /// A lane of up to `threads` threads (at least 1), with room for
    /// `max_queued` jobs waiting beyond those the threads are running.
    /// Starts no thread yet.
    pub fn new(threads: usize, max_queued: usize) -> Lane {
        Lane {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    started: 0,
                    refused_at: None,
                    closed: false,
                }),
                work: Condvar::new(),
                threads: threads.max(1),
                max_queued,
                priority: Priority::Normal,
                base_nice: crate::priority::nice_now(),
                name: "corral-compute",
                busy: AtomicUsize::new(0),
                queued: AtomicUsize::new(0),
                run: AtomicU64::new(0),
                refused: AtomicU64::new(0),
            }),
        }
    }

    /// The same lane, whose threads run at `priority` (see
    /// [`crate::priority`]): for CPU-bound jobs, which then yield the CPU
    /// to request workers whenever one has work. Takes effect only before
    /// the first job, when the first thread starts.
    pub fn with_priority(self, priority: Priority) -> Lane {
        self.configure(|shared| shared.priority = priority)
    }

    /// The same lane, whose threads are called `name` (`corral-compute`
    /// unless set). Takes effect only before the first job.
    pub fn named(self, name: &'static str) -> Lane {
        self.configure(|shared| shared.name = name)
    }

    /// Changes what the threads start with: possible only before they
    /// start, while this handle is the only owner.
    fn configure(mut self, change: impl FnOnce(&mut Shared)) -> Lane {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => change(shared),
            None => log::warn!("a lane already running was reconfigured; nothing changed"),
        }
        self
    }

    /// Queues `job` to run on a lane thread, in order of submission. Gives
    /// it back, unrun, when `max_queued` jobs already wait for a thread (or
    /// no thread could be started): the caller decides whether to run it,
    /// drop it or answer "busy". Never blocks on a job.
    pub fn try_spawn(&self, job: impl FnOnce() + Send + 'static) -> Result<(), Job> {
        let job: Job = Box::new(job);
        let shared = &self.shared;
        let mut state = lock(&shared.state);
        let busy = shared.busy.load(Ordering::SeqCst);
        // Idle threads take the queued jobs first; a job beyond them gets a
        // thread of its own while the lane may start more.
        let idle = state.started.saturating_sub(busy);
        let may_start = state.started == 0
            || state
                .refused_at
                .is_none_or(|t| t.elapsed() >= SPAWN_RETRY_AFTER);
        if state.queue.len() >= idle && state.started < shared.threads && may_start {
            self.start_one(&mut state);
        }
        // Threads not running a job, started or still to start, take the
        // next ones at once, so only jobs beyond them wait, and those count
        // against the bound.
        let threads = if state.refused_at.is_some() {
            state.started
        } else {
            shared.threads
        };
        let free = threads.saturating_sub(busy);
        if state.started == 0 || state.queue.len() >= shared.max_queued.saturating_add(free) {
            drop(state);
            shared.refused.fetch_add(1, Ordering::Relaxed);
            return Err(job);
        }
        state.queue.push_back(job);
        shared.queued.store(state.queue.len(), Ordering::SeqCst);
        drop(state);
        shared.work.notify_one();
        Ok(())
    }

    /// Starts one more thread. One the OS refuses is logged, and the lane
    /// makes do with the threads it has; with none at all, every job is
    /// refused until a later call starts one.
    fn start_one(&self, state: &mut State) {
        let shared = Arc::clone(&self.shared);
        let spawned = thread::Builder::new()
            .name(self.shared.name.into())
            .spawn(move || work(&shared));
        match spawned {
            Ok(_) => {
                state.started += 1;
                state.refused_at = None;
            }
            Err(e) => {
                state.refused_at = Some(Instant::now());
                log::warn!(
                    "cannot start a {} thread ({} of {} running): {e}",
                    self.shared.name,
                    state.started,
                    self.shared.threads
                );
            }
        }
    }

    /// Threads started so far: those the lane has needed at once.
    pub fn threads_started(&self) -> usize {
        lock(&self.shared.state).started
    }

    /// Jobs running now.
    pub fn busy(&self) -> usize {
        self.shared.busy.load(Ordering::SeqCst)
    }

    /// Jobs waiting for a thread now.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::SeqCst)
    }

    /// Jobs run to the end (or to a caught panic) since the lane was made.
    pub fn jobs_run(&self) -> u64 {
        self.shared.run.load(Ordering::SeqCst)
    }

    /// Jobs given back by [`Lane::try_spawn`] since the lane was made.
    pub fn jobs_refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// The most threads the lane runs.
    pub fn threads(&self) -> usize {
        self.shared.threads
    }

    /// The bound on waiting jobs.
    pub fn max_queued(&self) -> usize {
        self.shared.max_queued
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        // Not joined: the last handle may be dropped by a job on one of
        // these very threads (a cache freed by its own computation).
        lock(&self.shared.state).closed = true;
        self.shared.work.notify_all();
    }
}

impl fmt::Debug for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lane")
            .field("threads", &self.threads())
            .field("busy", &self.busy())
            .field("queued", &self.queued())
            .field("max_queued", &self.max_queued())
            .finish()
    }
}

/// A lane thread: runs jobs in queue order until the lane is dropped and
/// the queue is empty. A job that panics is logged; the thread lives on.
fn work(shared: &Shared) {
    if let Err(e) = shared.priority.apply_from(shared.base_nice) {
        log::warn!(
            "cannot give a compute thread the {} priority: {e}",
            shared.priority
        );
    }
    let mut state = lock(&shared.state);
    loop {
        let Some(job) = state.queue.pop_front() else {
            if state.closed {
                return;
            }
            // The lock guards a queue whose every change is one push or
            // pop, so a panic elsewhere cannot leave it half-changed.
            state = shared
                .work
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            continue;
        };
        shared.queued.store(state.queue.len(), Ordering::SeqCst);
        shared.busy.fetch_add(1, Ordering::SeqCst);
        drop(state);
        if let Err(payload) = catch_unwind(AssertUnwindSafe(job)) {
            log::error!("compute job panicked: {}", panic_message(&*payload));
        }
        state = lock(&shared.state);
        shared.busy.fetch_sub(1, Ordering::SeqCst);
        shared.run.fetch_add(1, Ordering::SeqCst);
    }
}
