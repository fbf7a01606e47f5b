//! Scheduling priority of the calling thread: the one place corral asks the
//! OS to run some of its threads behind the others.
//!
//! The compute lane's threads run seconds-long computations on every CPU
//! they can get, while request workers need a CPU for microseconds at a
//! time to answer hits and health checks. At equal priority a worker that
//! wakes with a request competes as an equal with the computations, and a
//! hit can wait a scheduler slice (milliseconds) behind each of them.
//! Under `SCHED_IDLE` the lane runs only when no worker wants the CPU, and
//! a waking worker preempts it at once; the computations still get every
//! cycle the workers leave, so on a machine with CPU to spare they run as
//! fast as before (BENCHMARKS.md, "Misses do not hold the workers", has
//! the three choices measured).
//!
//! Lowering a priority needs no privilege. On Linux the nice value belongs
//! to the thread (`setpriority(2)`, "Bugs"), so `who = 0` changes the
//! calling thread only; `sched_setscheduler(0, ...)` likewise. Elsewhere
//! nothing is changed.
#![allow(unsafe_code)]

use std::fmt;
use std::io;
use std::str::FromStr;

/// How a thread is scheduled beside the request workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// As the workers: computations and requests share the CPUs equally.
    Normal,
    /// Nice +10: a tenth of a worker's weight when both want a CPU, so
    /// computations keep a share under any load. A waking worker still
    /// waits for the running computation's time slice to end (Linux's
    /// EEVDF scheduler protects it whatever its weight), so hits gain
    /// little over `Normal`.
    Low,
    /// `SCHED_IDLE`: every waking thread preempts the computation at once,
    /// so a hit or a health check waits for no computation. The default.
    /// The cost: computations run only on CPU time no normal thread wants.
    /// Hits alone saturating every CPU, or another busy process on the
    /// machine (unless a cgroup with its own CPU weight, such as a systemd
    /// unit's, separates them), slow computations to a crawl; their
    /// waiters then get 503 at `cache-wait-timeout`. Choose `Low` on a
    /// machine shared with other busy work.
    #[default]
    Idle,
}

impl Priority {
    /// Applies this priority to the calling thread: `Low` is ten nice
    /// levels below where the thread is now.
    pub fn apply_to_this_thread(self) -> io::Result<()> {
        self.apply_from(nice_now())
    }

    /// Applies this priority to the calling thread, `Low` counted from
    /// `base`, the nice value of whoever set the work up: a lane thread
    /// started by another thread inherits that thread's priority, which may
    /// be lowered already, and must not be lowered twice. A thread already
    /// lower stays where it is (raising it back needs privilege).
    pub(crate) fn apply_from(self, base: i32) -> io::Result<()> {
        // A `Normal` thread started by a lowered one keeps that one's nice
        // value, which it cannot raise back: behind all the same.
        let behind = self != Priority::Normal || nice_now() > base;
        BEHIND.with(|b| b.set(behind));
        match self {
            Priority::Normal => Ok(()),
            Priority::Low => os::nice_at_least(base.saturating_add(10)),
            Priority::Idle => os::sched_idle(),
        }
    }
}

thread_local! {
    /// Whether [`Priority::apply_from`] put this thread behind the workers.
    static BEHIND: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread was asked to run behind the request workers (`Low`
/// or `Idle`): a compute lane's thread, unless its priority is `Normal`.
pub(crate) fn behind_here() -> bool {
    BEHIND.with(std::cell::Cell::get)
}

/// Whether the calling thread runs at `SCHED_IDLE`, however it came to
/// (made so here, inherited from the thread that started it, or the whole
/// process started so): it may be held off the CPU for as long as other
/// threads want it. Asks the kernel each time.
pub(crate) fn idle_here() -> bool {
    os::is_idle()
}

impl FromStr for Priority {
    type Err = String;

    fn from_str(s: &str) -> Result<Priority, String> {
        match s.trim() {
            "normal" => Ok(Priority::Normal),
            "low" => Ok(Priority::Low),
            "idle" => Ok(Priority::Idle),
            _ => Err("expected normal, low or idle".to_string()),
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Priority::Normal => "normal",
            Priority::Low => "low",
            Priority::Idle => "idle",
        })
    }
}

/// The calling thread's nice value (0 where it cannot be read).
pub(crate) fn nice_now() -> i32 {
    os::nice().unwrap_or(0)
}

/// The calling thread's priority, as far as [`Priority`] can say, given
/// the nice value `base` it started from (tests may run under `nice`).
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn current(base: i32) -> io::Result<Priority> {
    if os::policy() == libc::SCHED_IDLE {
        return Ok(Priority::Idle);
    }
    Ok(match os::nice()? {
        n if n > base => Priority::Low,
        _ => Priority::Normal,
    })
}

#[cfg(target_os = "linux")]
mod os {
    use std::io;

    /// The calling thread's nice value.
    pub(super) fn nice() -> io::Result<i32> {
        // `getpriority` can return -1 as a value, so errno tells an error
        // apart.
        // SAFETY: `__errno_location` returns this thread's errno, valid for
        // the thread's life; `getpriority` takes plain integers and touches
        // no memory of ours. Nothing runs between clearing errno and
        // reading it back.
        let value = unsafe {
            *libc::__errno_location() = 0;
            libc::getpriority(libc::PRIO_PROCESS, 0)
        };
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(code) if value == -1 && code != 0 => Err(err),
            _ => Ok(value),
        }
    }

    /// Lowers the calling thread to nice `wanted` (at most 19), unless it
    /// is that low already.
    pub(super) fn nice_at_least(wanted: i32) -> io::Result<()> {
        let wanted = wanted.min(19);
        if nice()? >= wanted {
            return Ok(());
        }
        // SAFETY: plain integers in, no memory touched; `who = 0` names the
        // calling thread on Linux.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, wanted) } == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub(super) fn sched_idle() -> io::Result<()> {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid `sched_param` that outlives the call,
        // which only reads it; pid 0 names the calling thread.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The calling thread's scheduling policy.
    pub(super) fn policy() -> i32 {
        // SAFETY: plain integer in; pid 0 names the calling thread.
        unsafe { libc::sched_getscheduler(0) }
    }

    pub(super) fn is_idle() -> bool {
        policy() == libc::SCHED_IDLE
    }
}

#[cfg(not(target_os = "linux"))]
mod os {
    use std::io;

    pub(super) fn nice() -> io::Result<i32> {
        Ok(0)
    }

    pub(super) fn nice_at_least(_wanted: i32) -> io::Result<()> {
        Ok(())
    }

    pub(super) fn sched_idle() -> io::Result<()> {
        Ok(())
    }

    pub(super) fn is_idle() -> bool {
        false
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Runs `f` on a thread of its own after applying `p`.
    fn on_thread<T: Send + 'static>(p: Priority, f: fn() -> T) -> T {
        std::thread::spawn(move || {
            p.apply_to_this_thread()
                .expect("lowering needs no privilege");
            f()
        })
        .join()
        .expect("thread")
    }

    #[test]
    fn low_lowers_only_the_calling_thread() {
        let before = os::nice().expect("nice");
        let inside = on_thread(Priority::Low, || os::nice().expect("nice"));
        assert_eq!(inside, (before + 10).min(19));
        assert_eq!(os::nice().expect("nice"), before, "others keep theirs");
    }

    #[test]
    fn idle_sets_the_idle_policy_on_the_calling_thread_only() {
        let before = os::policy();
        assert_eq!(on_thread(Priority::Idle, os::policy), libc::SCHED_IDLE);
        assert_eq!(os::policy(), before);
    }

    #[test]
    fn normal_changes_nothing() {
        let before = (os::nice().expect("nice"), os::policy());
        let inside = on_thread(Priority::Normal, || {
            (os::nice().expect("nice"), os::policy())
        });
        assert_eq!(inside, before);
    }

    #[test]
    fn a_thread_is_behind_once_lowered_even_when_asked_for_normal() {
        let base = nice_now();
        assert!(
            !behind_here(),
            "a test thread runs at the workers' priority"
        );
        let (low, normal_child) = std::thread::spawn(move || {
            Priority::Low
                .apply_from(base)
                .expect("lowering needs no privilege");
            // A thread started here inherits nice +10.
            let child = std::thread::spawn(move || {
                Priority::Normal.apply_from(base).expect("normal");
                behind_here()
            });
            (behind_here(), child.join().expect("child"))
        })
        .join()
        .expect("thread");
        assert!(low);
        // Under `nice -n 19` there is nothing lower to inherit.
        assert!(normal_child || base >= 19, "nice +10 inherited is behind");
        let normal = std::thread::spawn(move || {
            Priority::Normal.apply_from(base).expect("normal");
            behind_here()
        })
        .join()
        .expect("thread");
        assert!(!normal);
    }

    #[test]
    fn names_round_trip() {
        for p in [Priority::Normal, Priority::Low, Priority::Idle] {
            assert_eq!(p.to_string().parse::<Priority>(), Ok(p));
        }
        assert!("lowest".parse::<Priority>().is_err());
    }
}
