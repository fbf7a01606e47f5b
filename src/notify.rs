//! systemd integration: the ready, status, stopping and watchdog messages of
//! `sd_notify(3)`, the heartbeats the watchdog is tied to, and socket
//! activation (`sd_listen_fds(3)`). A no-op outside systemd: without
//! `NOTIFY_SOCKET` a [`Notifier`] sends nothing, and without `LISTEN_FDS`
//! [`take_listen_fds`] adopts nothing.
//!
//! Both protocols are small enough to speak with std: a notification is one
//! datagram of `NAME=value` lines sent to the `AF_UNIX` socket named by
//! `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace), and
//! passed sockets are descriptors `3..3+LISTEN_FDS`. libsystemd would add a
//! C dependency for a dozen lines.
//!
//! The watchdog pings only while the server makes progress, not while a
//! thread merely exists: the acceptor and the parker beat each loop turn
//! (they wake at least every [`beat_interval`] even when idle), and the pool
//! counts jobs queued and started. [`Health::check`] calls the server stuck
//! when a heartbeat is older than the watchdog period, or when work queued a
//! period ago has still not been picked up by a worker. A stuck server stops
//! pinging, and systemd kills and restarts it one period later.
//!
//! The one place this module steps below std is adopting inherited sockets;
//! each `unsafe` block says why it is sound.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The first descriptor a service manager passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// The most sockets we adopt: far more than any unit declares, and a bound
/// on the loop over descriptor numbers should `LISTEN_FDS` be garbage.
const MAX_LISTEN_FDS: usize = 64;

/// Heartbeats are at least this often, watchdog or not: the acceptor's and
/// the parker's longest sleep.
const MAX_BEAT_INTERVAL: Duration = Duration::from_secs(1);

/// Heartbeats are never more often than this, whatever the period: a loop
/// that wakes every millisecond would cost more than it proves.
const MIN_BEAT_INTERVAL: Duration = Duration::from_millis(10);

// ---------------------------------------------------------------------------
// Notifications.

/// Sends `sd_notify` messages to the service manager, if there is one.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// A notifier that sends nothing: not under systemd, or not wanted.
    pub fn disabled() -> Notifier {
        Notifier {
            target: None,
            watchdog: None,
        }
    }

    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`. Without
    /// `NOTIFY_SOCKET` the notifier is disabled. An address we cannot use
    /// (say a `vsock:` one) is logged and disables it too: the server must
    /// run anyway, and systemd will report the missing `READY=1`.
    pub fn from_env() -> Notifier {
        let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
            return Notifier::disabled();
        };
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        let watchdog = watchdog_period(usec.as_deref(), pid.as_deref(), std::process::id());
        match Notifier::to(&socket) {
            Ok(mut n) => {
                n.watchdog = watchdog;
                n
            }
            Err(e) => {
                log::warn!("NOTIFY_SOCKET {socket:?}: {e}; not notifying systemd");
                Notifier::disabled()
            }
        }
    }

    /// A notifier for the socket named as in `NOTIFY_SOCKET`: an absolute
    /// path, or `@` and an abstract name. No watchdog.
    pub fn to(socket: &OsStr) -> io::Result<Notifier> {
        let bytes = socket.as_bytes();
        let addr = match bytes.first() {
            Some(b'/') => SocketAddr::from_pathname(socket)?,
            Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..])?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "expected an absolute path or @abstract-name",
                ))
            }
        };
        // One end of a pair, not `UnixDatagram::unbound()`: socketpair(2)
        // is not subject to the unit's RestrictAddressFamilies=, so the
        // units can forbid AF_UNIX in socket(2) and still be notified. A
        // datagram socket may send to any address; its peer is never used.
        let (socket, _peer) = UnixDatagram::pair()?;
        Ok(Notifier {
            target: Some((socket, addr)),
            watchdog: None,
        })
    }

    /// Whether messages go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// The watchdog period systemd asked for (`WatchdogSec=`), if any.
    pub fn watchdog_period(&self) -> Option<Duration> {
        self.watchdog.filter(|_| self.is_enabled())
    }

    /// Sends one message (lines of `NAME=value`). A failure is logged and
    /// otherwise ignored: serving matters more than reporting.
    pub fn send(&self, message: &str) {
        if let Some((socket, addr)) = &self.target {
            if let Err(e) = socket.send_to_addr(message.as_bytes(), addr) {
                let what = message.split('\n').next().unwrap_or_default();
                log::warn!("sd_notify {what}: {e}");
            }
        }
    }

    /// `READY=1`, with the first status line. Send it only once every
    /// listener is bound: systemd starts units ordered after this one, and
    /// their first connection must find a socket that accepts.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `STATUS=`: a line `systemctl status` shows.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    /// `STOPPING=1`: shutdown has begun.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// `EXTEND_TIMEOUT_USEC=`: the stop (or start) timeout must not run out
    /// within `by` from now; send another before then.
    pub fn extend_timeout(&self, by: Duration) {
        self.send(&format!("EXTEND_TIMEOUT_USEC={}", by.as_micros()));
    }

    /// `WATCHDOG=1`: a ping. Send it only while [`Health::check`] passes.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }
}

/// A status line must stay one line: a newline would start a new field.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// The watchdog period from `WATCHDOG_USEC`, if it is meant for us: systemd
/// sets `WATCHDOG_PID` to the main process, and a child that inherited the
/// variables must not ping on its parent's behalf. Garbage or zero means no
/// watchdog (as `sd_watchdog_enabled` does).
pub fn watchdog_period(usec: Option<&str>, pid: Option<&str>, our_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(our_pid) {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// How often the acceptor and the parker must wake, and so beat, even when
/// idle: a quarter of the watchdog period, so a beat is never more than a
/// period old while they run; at most a second.
pub fn beat_interval(watchdog: Option<Duration>) -> Duration {
    watchdog.map_or(MAX_BEAT_INTERVAL, |p| {
        (p / 4).clamp(MIN_BEAT_INTERVAL, MAX_BEAT_INTERVAL)
    })
}

// ---------------------------------------------------------------------------
// Heartbeats.

/// A part of the server whose progress the watchdog checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// The thread that accepts connections.
    Acceptor,
    /// The thread that watches parked connections.
    Parker,
    /// The worker pool.
    Pool,
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Component::Acceptor => "acceptor",
            Component::Parker => "parker",
            Component::Pool => "worker pool",
        })
    }
}

/// Progress marks, written by the server's threads without a lock and read
/// by the watchdog.
#[derive(Debug)]
pub struct Health {
    epoch: Instant,
    /// Milliseconds since `epoch` of the acceptor's last loop turn.
    acceptor: AtomicU64,
    /// Milliseconds since `epoch` of the parker's last loop turn.
    parker: AtomicU64,
    /// Jobs handed to the pool so far.
    queued: AtomicU64,
    /// Jobs a worker has picked up so far. The pool's queue is first in,
    /// first out, so the first `started` jobs queued are the ones started.
    started: AtomicU64,
    /// Test hook: components told to hang. Only in the builds that have
    /// the hooks (see [`Health::wedge`]).
    #[cfg(any(debug_assertions, feature = "test-hooks"))]
    wedged: [std::sync::atomic::AtomicBool; 2],
}

impl Default for Health {
    fn default() -> Health {
        Health {
            epoch: Instant::now(),
            acceptor: AtomicU64::new(0),
            parker: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            started: AtomicU64::new(0),
            #[cfg(any(debug_assertions, feature = "test-hooks"))]
            wedged: Default::default(),
        }
    }
}

/// Why the server is not healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    /// What stopped.
    pub component: Component,
    /// For how long, at least.
    pub for_ms: u64,
}

impl fmt::Display for Stall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.for_ms as f64 / 1000.0;
        match self.component {
            Component::Pool => write!(f, "no worker has picked up queued work for {secs:.1}s"),
            c => write!(f, "the {c} has made no progress for {secs:.1}s"),
        }
    }
}

/// What the watchdog remembers between checks: how many jobs had been
/// queued at each recent check, oldest first.
#[derive(Debug, Default)]
pub struct PoolSamples(VecDeque<(u64, u64)>);

impl Health {
    /// Fresh marks, as if every component had just beaten.
    pub fn new() -> Health {
        Health::default()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Marks a loop turn of the acceptor or the parker.
    pub fn beat(&self, c: Component) {
        self.beat_at(c, self.now_ms());
    }

    /// [`Health::beat`] at `now`, in milliseconds since the epoch: the
    /// tests drive the watchdog on a virtual clock through it.
    fn beat_at(&self, c: Component, now: u64) {
        match c {
            Component::Acceptor => self.acceptor.store(now, Relaxed),
            Component::Parker => self.parker.store(now, Relaxed),
            Component::Pool => {}
        }
    }

    /// A job was handed to the pool.
    pub fn job_queued(&self) {
        self.queued.fetch_add(1, Relaxed);
    }

    /// A worker picked up a job.
    pub fn job_started(&self) {
        self.started.fetch_add(1, Relaxed);
    }

    /// Whether the server makes progress, judged over `period`: each loop
    /// beat within the period, and every job queued at least a period ago has
    /// been picked up. Called at each ping; `samples` carries the queue
    /// counts between calls, so the pool's verdict needs no lock on the
    /// job path and no timestamp per job.
    pub fn check(&self, samples: &mut PoolSamples, period: Duration) -> Result<(), Stall> {
        self.check_at(samples, period, self.now_ms())
    }

    /// [`Health::check`] at `now`, in milliseconds since the epoch (see
    /// [`Health::beat_at`]).
    fn check_at(&self, samples: &mut PoolSamples, period: Duration, now: u64) -> Result<(), Stall> {
        let period_ms = period.as_millis() as u64;
        // Read `started` before `queued`: a job counted in between is one
        // more queued, never one more started than queued.
        let started = self.started.load(Relaxed);
        let queued = self.queued.load(Relaxed);
        let verdict = self.judge(samples, now, period_ms, started);
        samples.0.push_back((now, queued));
        verdict
    }

    fn judge(
        &self,
        samples: &mut PoolSamples,
        now: u64,
        period_ms: u64,
        started: u64,
    ) -> Result<(), Stall> {
        // Keep only the newest sample at least a period old, and newer ones.
        let due = now.saturating_sub(period_ms);
        while samples.0.len() > 1 && samples.0[1].0 <= due {
            samples.0.pop_front();
        }
        for (c, beat) in [
            (Component::Acceptor, &self.acceptor),
            (Component::Parker, &self.parker),
        ] {
            let age = now.saturating_sub(beat.load(Relaxed));
            if age > period_ms {
                return Err(Stall {
                    component: c,
                    for_ms: age,
                });
            }
        }
        match samples.0.front() {
            // Jobs up to `queued` had been queued by `at`, a period ago or
            // more; the queue is FIFO, so if fewer have started, the oldest
            // waiting job has waited at least that long.
            Some(&(at, queued)) if at <= due && started < queued => Err(Stall {
                component: Component::Pool,
                for_ms: now - at,
            }),
            _ => Ok(()),
        }
    }

    /// Test hook, reachable only through the binary's hidden `--x-wedge`
    /// flag: makes the acceptor or the parker hang at its next loop turn,
    /// as a deadlock would, so a test can watch the pings stop. (The pool
    /// needs no hook: a handler that never returns wedges a worker.) Only
    /// debug builds and builds with the `test-hooks` feature have it: a
    /// server that can be told to hang must not ship.
    #[doc(hidden)]
    #[cfg(any(debug_assertions, feature = "test-hooks"))]
    pub fn wedge(&self, c: Component) {
        match c {
            Component::Acceptor => self.wedged[0].store(true, Relaxed),
            Component::Parker => self.wedged[1].store(true, Relaxed),
            Component::Pool => {}
        }
    }

    /// Hangs the calling thread for good if [`Health::wedge`] named `c`.
    /// Without the hooks it does nothing, and inlining makes it vanish, so
    /// the loops that call it need no `cfg` of their own.
    #[inline(always)]
    pub(crate) fn hold_if_wedged(&self, c: Component) {
        #[cfg(any(debug_assertions, feature = "test-hooks"))]
        {
            let i = match c {
                Component::Acceptor => 0,
                Component::Parker => 1,
                Component::Pool => return,
            };
            if self.wedged[i].load(Relaxed) {
                log::warn!("test hook: the {c} hangs now");
                loop {
                    std::thread::park();
                }
            }
        }
        #[cfg(not(any(debug_assertions, feature = "test-hooks")))]
        let _ = c;
    }
}

// ---------------------------------------------------------------------------
// Socket activation.

/// A socket the service manager passed, with its name from
/// `LISTEN_FDNAMES` (`FileDescriptorName=` in the `.socket` unit; the
/// socket unit's own name when unset).
#[derive(Debug)]
pub struct Activated {
    /// The descriptor's name.
    pub name: String,
    /// The listening socket.
    pub listener: TcpListener,
}

/// Which descriptors the environment passes us, and their names: `None`
/// when `LISTEN_PID` or `LISTEN_FDS` is unset, or `LISTEN_PID` names
/// another process (the variables were inherited, not meant for us).
pub fn parse_listen_env(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    our_pid: u32,
) -> Result<Option<Vec<String>>, String> {
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(our_pid) {
        return Ok(None);
    }
    let n: usize = fds
        .trim()
        .parse()
        .map_err(|_| format!("LISTEN_FDS={fds:?} is not a count"))?;
    if n > MAX_LISTEN_FDS {
        return Err(format!("LISTEN_FDS={n}: at most {MAX_LISTEN_FDS} sockets"));
    }
    let names: Vec<String> = match names {
        None | Some("") => vec!["unknown".to_owned(); n],
        Some(names) => names.split(':').map(str::to_owned).collect(),
    };
    if names.len() != n {
        return Err(format!(
            "LISTEN_FDNAMES has {} names for LISTEN_FDS={n} sockets",
            names.len()
        ));
    }
    Ok(Some(names))
}

/// Adopts the sockets a service manager passed (`sd_listen_fds(3)`), and
/// unsets `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` so nothing we
/// start takes them for its own. Call it first thing in `main`, before any
/// thread starts (changing the environment is not thread-safe) and before
/// anything opens a file (the passed descriptors are ours from `3` on).
///
/// Each must be a listening TCP socket; anything else is an error rather
/// than a guess. The server closes its copies when it stops and never
/// calls `shutdown(2)` on them: the service manager holds the same socket,
/// and connections that arrive while we restart wait in its backlog.
pub fn take_listen_fds() -> io::Result<Vec<Activated>> {
    let var = |name| std::env::var(name).ok();
    let parsed = parse_listen_env(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    );
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(name);
    }
    let names = parsed
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
        .unwrap_or_default();
    let mut adopted = Vec::with_capacity(names.len());
    for (fd, name) in (LISTEN_FDS_START..).zip(names) {
        check_listening_tcp(fd).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("passed socket {fd} ({name}) is not usable: {e}"),
            )
        })?;
        // SAFETY: the service manager passed descriptors 3..3+LISTEN_FDS to
        // this process, which has not opened anything of its own yet (see
        // the doc comment), and each number is adopted once by this loop, so
        // nothing else owns `fd`. `check_listening_tcp` has just shown it is
        // open and a listening TCP socket, which is what TcpListener wraps.
        let listener = unsafe { TcpListener::from_raw_fd(fd) };
        adopted.push(Activated { name, listener });
    }
    Ok(adopted)
}

/// Fails unless `fd` is an open, listening IPv4 or IPv6 stream socket, and
/// marks it close-on-exec (inherited descriptors are not).
fn check_listening_tcp(fd: RawFd) -> io::Result<()> {
    let int_opt = |opt| -> io::Result<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` are live locals of the sizes passed;
        // getsockopt writes at most `len` bytes to `value`. A bad `fd` is
        // reported as EBADF or ENOTSOCK, not undefined behaviour.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(value)
    };
    let domain = int_opt(libc::SO_DOMAIN)?;
    if !matches!(domain, libc::AF_INET | libc::AF_INET6) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an IPv4 or IPv6 socket (use ListenStream=ADDRESS:PORT)",
        ));
    }
    if int_opt(libc::SO_TYPE)? != libc::SOCK_STREAM {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a stream socket (use ListenStream=)",
        ));
    }
    if int_opt(libc::SO_ACCEPTCONN)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not listening (use Accept=no)",
        ));
    }
    // SAFETY: fcntl with F_SETFD and an integer flag touches no memory; the
    // descriptor was shown open above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn watchdog_period_is_for_our_pid_only() {
        let ms = Duration::from_millis;
        assert_eq!(watchdog_period(Some("200000"), None, 7), Some(ms(200)));
        assert_eq!(watchdog_period(Some("200000"), Some("7"), 7), Some(ms(200)));
        assert_eq!(watchdog_period(Some("200000"), Some("8"), 7), None);
        assert_eq!(watchdog_period(Some("200000"), Some("x"), 7), None);
        assert_eq!(watchdog_period(Some("0"), None, 7), None);
        assert_eq!(watchdog_period(Some("-5"), None, 7), None);
        assert_eq!(watchdog_period(None, Some("7"), 7), None);
    }

    #[test]
    fn beats_come_four_times_a_period_at_most_a_second_apart() {
        let ms = Duration::from_millis;
        assert_eq!(beat_interval(None), ms(1000));
        assert_eq!(beat_interval(Some(ms(200))), ms(50));
        assert_eq!(beat_interval(Some(ms(30_000))), ms(1000));
        assert_eq!(beat_interval(Some(ms(1))), ms(10));
    }

    #[test]
    fn listen_env() {
        let names = |v: &[&str]| Ok(Some(v.iter().map(|s| s.to_string()).collect()));
        assert_eq!(parse_listen_env(None, None, None, 7), Ok(None));
        assert_eq!(parse_listen_env(Some("7"), None, None, 7), Ok(None));
        assert_eq!(parse_listen_env(Some("8"), Some("1"), None, 7), Ok(None));
        assert_eq!(
            parse_listen_env(Some("7"), Some("2"), Some("http:admin"), 7),
            names(&["http", "admin"])
        );
        assert_eq!(
            parse_listen_env(Some("7"), Some("1"), None, 7),
            names(&["unknown"])
        );
        assert_eq!(parse_listen_env(Some("7"), Some("0"), None, 7), names(&[]));
        assert!(parse_listen_env(Some("7"), Some("2"), Some("http"), 7).is_err());
        assert!(parse_listen_env(Some("7"), Some("two"), None, 7).is_err());
        assert!(parse_listen_env(Some("7"), Some("100000"), None, 7).is_err());
    }

    fn health_at(acceptor: u64, parker: u64, queued: u64, started: u64) -> Health {
        let h = Health::new();
        h.acceptor.store(acceptor, Relaxed);
        h.parker.store(parker, Relaxed);
        h.queued.store(queued, Relaxed);
        h.started.store(started, Relaxed);
        h
    }

    #[test]
    fn stale_beats_are_stalls() {
        let mut s = PoolSamples::default();
        let h = health_at(900, 950, 0, 0);
        assert_eq!(h.judge(&mut s, 1000, 200, 0), Ok(()));
        let h = health_at(700, 950, 0, 0);
        assert_eq!(
            h.judge(&mut s, 1000, 200, 0),
            Err(Stall {
                component: Component::Acceptor,
                for_ms: 300
            })
        );
        let h = health_at(990, 790, 0, 0);
        assert_eq!(
            h.judge(&mut s, 1000, 200, 0).map_err(|s| s.component),
            Err(Component::Parker)
        );
    }

    #[test]
    fn queued_work_older_than_a_period_is_a_stall() {
        // Beats from the future never look stale, so only the pool counts.
        let h = health_at(u64::MAX, u64::MAX, 0, 0);
        let mut s = PoolSamples::default();
        // Checks every 100ms with a 200ms period. Five jobs queued by t=100.
        s.0.extend([(0, 0), (100, 5), (200, 5)]);
        // At t=250 the t=100 sample is not yet a period old: fine.
        assert_eq!(h.judge(&mut s, 250, 200, 0), Ok(()));
        // At t=300 it is; all five started: fine, and old samples go.
        assert_eq!(h.judge(&mut s, 300, 200, 5), Ok(()));
        assert_eq!(s.0.front(), Some(&(100, 5)));
        // One of the five never started: stuck, and it stays stuck.
        assert_eq!(
            h.judge(&mut s, 300, 200, 4),
            Err(Stall {
                component: Component::Pool,
                for_ms: 200
            })
        );
        s.0.extend([(300, 5), (400, 5)]);
        assert_eq!(
            h.judge(&mut s, 500, 200, 4).map_err(|s| s.component),
            Err(Component::Pool)
        );
        // Busy workers with work queued only just now: not a stall.
        let mut s = PoolSamples::default();
        s.0.extend([(0, 5), (100, 5), (200, 6)]);
        assert_eq!(h.judge(&mut s, 300, 200, 5), Ok(()));
    }

    /// The watchdog on a virtual clock, in milliseconds: the acceptor and
    /// the parker beat every quarter period from `beat_phase` on, a job is
    /// queued every 10 ms and picked up at once, and checks run every half
    /// period from `check_phase` on, as `server::supervise` runs them. At
    /// `wedge_at`, `wedged` stops: its loop beats no more, or, for the pool,
    /// every worker is taken and no job queued from then on is picked up. Returns the times of the
    /// checks that passed (the pings) and of those that failed.
    fn simulate(
        wedged: Component,
        wedge_at: u64,
        beat_phase: u64,
        check_phase: u64,
    ) -> (Vec<u64>, Vec<u64>) {
        let period = Duration::from_millis(PERIOD_MS);
        let h = Health::new();
        let mut samples = PoolSamples::default();
        let (mut pings, mut stalls) = (Vec::new(), Vec::new());
        for t in 0..=wedge_at + 4 * PERIOD_MS {
            if t % (PERIOD_MS / 4) == beat_phase {
                for c in [Component::Acceptor, Component::Parker] {
                    if c != wedged || t <= wedge_at {
                        h.beat_at(c, t);
                    }
                }
            }
            // Jobs come every 10 ms, and one at the wedge: the request
            // that finds every worker taken.
            if t % 10 == 0 || t == wedge_at {
                h.job_queued();
                if wedged != Component::Pool || t < wedge_at {
                    h.job_started();
                }
            }
            if t % (PERIOD_MS / 2) == check_phase {
                match h.check_at(&mut samples, period, t) {
                    Ok(()) => pings.push(t),
                    Err(stall) => {
                        assert_eq!(stall.component, wedged, "at {t}: {stall}");
                        stalls.push(t);
                    }
                }
            }
        }
        (pings, stalls)
    }

    const PERIOD_MS: u64 = 200;

    /// What the deploy tests check on the real binary, here exactly and
    /// for every phase of beats, checks and wedge: pings while healthy,
    /// none from at most one and a half periods after a wedge on, and none
    /// again. A stale beat is a period old at the latest check before, and
    /// the pool's stuck job is in the sample taken at the first check after
    /// the wedge, which is judged a period later; the next check, at most
    /// half a period on, sees either.
    #[test]
    fn pings_stop_within_one_and_a_half_periods_of_a_wedge_and_stay_stopped() {
        for wedged in [Component::Acceptor, Component::Parker, Component::Pool] {
            for beat_phase in (0..PERIOD_MS / 4).step_by(7) {
                for check_phase in (0..PERIOD_MS / 2).step_by(9) {
                    for wedge_at in (1000..1000 + PERIOD_MS).step_by(13) {
                        let case = format!(
                            "{wedged} wedged at {wedge_at}, beats at {beat_phase}, checks at {check_phase}"
                        );
                        let (pings, stalls) = simulate(wedged, wedge_at, beat_phase, check_phase);
                        let Some(&stopped) = stalls.first() else {
                            panic!("{case}: pings never stopped")
                        };
                        assert!(stopped > wedge_at, "{case}: a stall at {stopped} before");
                        assert!(
                            stopped <= wedge_at + PERIOD_MS * 3 / 2,
                            "{case}: pings stopped only at {stopped}"
                        );
                        assert!(
                            pings.last() < Some(&stopped),
                            "{case}: pings came back after {stopped}: {pings:?}"
                        );
                        // Every check before the wedge passed: no false alarm.
                        let checks = (check_phase..wedge_at).step_by(PERIOD_MS as usize / 2);
                        let healthy = pings.iter().filter(|&&t| t < wedge_at).count();
                        assert_eq!(healthy, checks.count(), "{case}: {pings:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn check_records_samples() {
        let h = Health::new();
        let mut s = PoolSamples::default();
        h.job_queued();
        assert_eq!(h.check(&mut s, Duration::from_secs(60)), Ok(()));
        assert_eq!(s.0.len(), 1);
        assert_eq!(s.0[0].1, 1);
    }

    #[test]
    fn notifier_sends_to_path_and_abstract_sockets() {
        let dir = std::env::temp_dir().join(format!("corral-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        // A lost message fails the test instead of hanging it.
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::to(path.as_os_str()).unwrap();
        n.ready("serving\nnow");
        let mut buf = [0u8; 256];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=serving now");
        std::fs::remove_dir_all(&dir).unwrap();

        let name = format!("corral-notify-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::to(OsStr::new(&format!("@{name}"))).unwrap();
        n.extend_timeout(Duration::from_secs(5));
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"EXTEND_TIMEOUT_USEC=5000000");

        assert!(Notifier::to(OsStr::new("relative/path")).is_err());
        let off = Notifier::disabled();
        assert!(!off.is_enabled());
        off.stopping();
    }

    #[test]
    fn only_listening_tcp_sockets_are_adopted() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(check_listening_tcp(listener.as_raw_fd()).is_ok());
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert!(check_listening_tcp(stream.as_raw_fd()).is_err());
        let (unix, _) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(check_listening_tcp(unix.as_raw_fd()).is_err());
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(check_listening_tcp(file.as_raw_fd()).is_err());
    }
}
