//! Deployment under systemd, black-box: the sd_notify protocol over path and
//! abstract sockets (`READY=1` only once the port accepts, `STATUS=`
//! refreshed, watchdog pings every half period that stop when a part of the
//! server is wedged, `STOPPING=1` and `EXTEND_TIMEOUT_USEC=` on SIGTERM),
//! socket activation (a connection that waited in the backlog before the
//! server started is served, and so is one that arrived while it
//! restarted), and SIGHUP reopening the access log.
//!
//! Each test owns the `UnixDatagram` systemd would own, so nothing here
//! needs systemd itself; `systemd-socket-activate` is used in one more
//! check when it is installed.
//!
//! The clock here is real and the machine may be loaded, so no check
//! depends on how soon something happens: each waits generously for an
//! event, and judges timing only by what load cannot fake (the typical gap
//! between pings, a long spell with none). How soon the watchdog reacts is
//! checked exactly, on a virtual clock, by the unit tests in `notify`.
//!
//! The wedge tests need the binary's test hooks, which only debug builds
//! and builds with `--features test-hooks` have; elsewhere they are ignored.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{
    bin, clean_env, listening_addr, spawn_bin, start_proc, wait_until, Client, Proc,
};

/// The watchdog period the tests ask for: short, so a test takes a few
/// seconds.
const PERIOD: Duration = Duration::from_millis(200);

/// How long to wait for something the server does promptly (start, answer,
/// notify): only a broken server, not a busy machine, takes this long.
const PROMPTLY: Duration = Duration::from_secs(10);

/// A spell this long without a ping means the pings have stopped: a server
/// that pings, every half period, sends ten in it.
const QUIET: Duration = PERIOD.saturating_mul(5);

/// Whether the binary has the test hooks (see `hooks` in `main.rs`).
const HOOKS: bool = cfg!(any(debug_assertions, feature = "test-hooks"));

/// The receiving end of `NOTIFY_SOCKET`, as systemd holds it.
struct NotifySocket {
    socket: UnixDatagram,
    /// The variable's value: a path or `@name`.
    env: String,
    dir: Option<PathBuf>,
}

impl NotifySocket {
    /// A socket bound to a path in a fresh directory.
    fn path(tag: &str) -> NotifySocket {
        let dir = scratch_dir(tag);
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        NotifySocket {
            socket,
            env: path.to_str().unwrap().to_owned(),
            dir: Some(dir),
        }
    }

    /// A socket in the abstract namespace.
    fn abstract_name(tag: &str) -> NotifySocket {
        let name = format!("corral-test-{tag}-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).expect("bind abstract notify socket");
        NotifySocket {
            socket,
            env: format!("@{name}"),
            dir: None,
        }
    }

    /// The next message, if one comes within `within`.
    fn recv(&self, within: Duration) -> Option<(Instant, String)> {
        let within = within.max(Duration::from_millis(1));
        self.socket.set_read_timeout(Some(within)).unwrap();
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some((
            Instant::now(),
            String::from_utf8_lossy(&buf[..n]).into_owned(),
        ))
    }

    /// Skips messages until one with a line starting with `field`; returns
    /// it and the skipped ones.
    fn wait_for(&self, field: &str, within: Duration) -> (Option<(Instant, String)>, Vec<String>) {
        let deadline = Instant::now() + within;
        let mut skipped = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.recv(left) {
                Some((t, m)) if m.lines().any(|l| l.starts_with(field)) => {
                    return (Some((t, m)), skipped)
                }
                Some((_, m)) => skipped.push(m),
                None => break,
            }
        }
        (None, skipped)
    }

    /// When the next `n` watchdog pings came, or as many as come within
    /// `within`.
    fn pings(&self, n: usize, within: Duration) -> Vec<Instant> {
        let deadline = Instant::now() + within;
        let mut pings = Vec::new();
        while pings.len() < n {
            match self.wait_for(
                "WATCHDOG=1",
                deadline.saturating_duration_since(Instant::now()),
            ) {
                (Some((t, _)), _) => pings.push(t),
                (None, _) => break,
            }
        }
        pings
    }

    /// Waits, at most `within`, for a spell of `quiet` without a watchdog
    /// ping; returns the times of the pings that came before it, or, when
    /// no such spell came, `Err` with them.
    fn until_quiet(&self, quiet: Duration, within: Duration) -> Result<Vec<Instant>, Vec<Instant>> {
        let deadline = Instant::now() + within;
        let mut pings = Vec::new();
        let mut spell_from = Instant::now();
        // Each turn takes a message or waits out the spell, and the spell
        // must end by the deadline; the count bounds it too, against a
        // socket that fails at once instead of waiting.
        for _ in 0..100_000 {
            let spell_to = spell_from + quiet;
            if spell_to > deadline {
                return Err(pings);
            }
            let Some(left) = spell_to.checked_duration_since(Instant::now()) else {
                return Ok(pings);
            };
            if let Some((t, m)) = self.recv(left) {
                if m.lines().any(|l| l == "WATCHDOG=1") {
                    pings.push(t);
                    spell_from = t;
                }
            }
        }
        Err(pings)
    }

    /// Like [`NotifySocket::wait_for`], failing the test when nothing comes.
    fn expect(&self, field: &str, within: Duration) -> (Instant, String) {
        let (found, skipped) = self.wait_for(field, within);
        found.unwrap_or_else(|| panic!("no {field} within {within:?}; got {skipped:?}"))
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A fresh, empty directory under the system's temporary directory.
fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("corral-deploy-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// The binary with loopback listeners and no access log, under `notify`
/// with a watchdog of [`PERIOD`].
fn notified(notify: &NotifySocket, listen: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    clean_env(&mut cmd);
    for var in ["WATCHDOG_PID", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        cmd.env_remove(var);
    }
    cmd.env("NOTIFY_SOCKET", &notify.env)
        .env("WATCHDOG_USEC", PERIOD.as_micros().to_string())
        .args(["--listen", listen, "--admin-listen", "127.0.0.1:0"])
        .args(["--access-log", "off"])
        .args(args);
    cmd
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("probe a free port")
        .port()
}

/// A client for a server that may still be starting: its reads wait
/// [`PROMPTLY`] rather than the usual few seconds.
fn patient_client(addr: SocketAddr) -> Client {
    let c = Client::connect(addr);
    c.stream
        .set_read_timeout(Some(PROMPTLY))
        .expect("set read timeout");
    c
}

fn assert_exits_0(proc: &mut Proc) {
    let status = proc
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("did not exit; stderr: {:#?}", proc.seen));
    assert!(status.success(), "exit {status}; stderr: {:#?}", proc.seen);
}

#[test]
fn notify_path_socket_ready_when_accepting_pings_status_stopping() {
    let notify = NotifySocket::path("ready");
    // A port chosen up front, so the test can connect the moment READY
    // arrives without first reading the log.
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut proc = start_proc(notified(&notify, &addr.to_string(), &[]));
    let (_, ready) = notify.expect("READY=1", PROMPTLY);
    // The port accepts and serves as soon as READY has been sent.
    let mut c = Client::connect(addr);
    let r = c.get("/healthz");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok\n"[..]));
    assert!(
        ready.lines().any(|l| l.starts_with("STATUS=0 requests;")),
        "{ready:?}"
    );
    // READY came after the log line that announces the listeners.
    assert!(
        proc.wait_line("listening on ", PROMPTLY).is_some(),
        "{:#?}",
        proc.seen
    );

    // Pings every half period. On a loaded machine one can come late, or
    // be withheld while a starved thread misses its beat, but the server
    // keeps to a fixed schedule, so the typical gap stays half a period: a
    // server that pinged only once a period, or not at all, fails here.
    let pings = notify.pings(21, 3 * PROMPTLY);
    assert_eq!(pings.len(), 21, "pings: {pings:?}");
    let mut gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort();
    let median = gaps[gaps.len() / 2];
    assert!(
        median < PERIOD * 3 / 4,
        "a median gap of {median:?} between pings (period {PERIOD:?}); gaps {gaps:?}"
    );

    // The status line is refreshed and counts the request made above.
    let (_, status) = notify.expect("STATUS=1 requests;", PROMPTLY);
    assert!(status.contains("connections open"), "{status:?}");
    assert!(status.contains("cache 0 entries"), "{status:?}");

    proc.signal(libc::SIGTERM);
    notify.expect("STOPPING=1", PROMPTLY);
    assert_exits_0(&mut proc);
}

#[test]
fn notify_abstract_socket_stopping_then_extend_timeout_while_draining() {
    let notify = NotifySocket::abstract_name("drain");
    let mut proc = start_proc(notified(&notify, "127.0.0.1:0", &[]));
    notify.expect("READY=1", PROMPTLY);
    let addr = listening_addr(&mut proc);
    notify.expect("WATCHDOG=1", PROMPTLY);

    // An upload under way: the server has the head and wants the body.
    let mut c = Client::connect(addr);
    c.send("POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n");
    assert_eq!(c.read_head().expect("100 Continue").status, 100);
    c.send("12345");

    proc.signal(libc::SIGTERM);
    let (stopping_at, _) = notify.expect("STOPPING=1", PROMPTLY);
    let (extend_at, extend) = notify.expect("EXTEND_TIMEOUT_USEC=", PROMPTLY);
    assert!(extend_at >= stopping_at);
    let usec: u64 = extend
        .trim()
        .strip_prefix("EXTEND_TIMEOUT_USEC=")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{extend:?}"));
    assert!(usec >= 1_000_000, "{extend:?}");

    c.send("67890");
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"1234567890"[..]));
    assert_exits_0(&mut proc);
}

/// Starts the binary with `--x-wedge=component`, checks it pings while
/// healthy, wedges it with `wedge` (which returns once the wedge is asked
/// for, with the clients to keep open), and checks that the pings stop and
/// stay stopped, and that the log says why with a line containing `stall`.
///
/// A wedged server never pings again, so a long spell without pings is
/// what to wait for, and load can only delay it, never fake pings. How
/// soon the spell starts (within one and a half periods) is what the
/// `notify` unit tests check on a virtual clock.
fn pings_stop_when_wedged(
    component: &str,
    args: &[&str],
    wedge: impl FnOnce(SocketAddr) -> Vec<Client>,
    stall: &str,
) {
    let notify = NotifySocket::path(&format!("wedge-{component}"));
    let flag = format!("--x-wedge={component}");
    let mut all = vec![flag.as_str()];
    all.extend_from_slice(args);
    let mut proc = start_proc(notified(&notify, "127.0.0.1:0", &all));
    notify.expect("READY=1", PROMPTLY);
    let addr = listening_addr(&mut proc);
    notify.expect("WATCHDOG=1", PROMPTLY);
    notify.expect("WATCHDOG=1", PROMPTLY);

    let _clients = wedge(addr);
    // A server that keeps pinging (every half period) never leaves a spell
    // of QUIET, so this fails it; one that stops passes once it has.
    if let Err(pings) = notify.until_quiet(QUIET, 2 * PROMPTLY) {
        panic!(
            "pings went on after wedging the {component}: {} of them; stderr: {:#?}",
            pings.len(),
            proc.seen
        );
    }
    let line = proc.wait_line(stall, PROMPTLY);
    let line = line.unwrap_or_else(|| panic!("no {stall:?} line; stderr: {:#?}", proc.seen));
    assert!(line.contains("withholding WATCHDOG=1"), "{line}");
}

#[test]
#[cfg_attr(
    not(any(debug_assertions, feature = "test-hooks")),
    ignore = "needs the test hooks: a debug build, or --features test-hooks"
)]
fn watchdog_pings_stop_when_the_pool_is_wedged() {
    pings_stop_when_wedged(
        "pool",
        &["--workers", "2"],
        |addr| {
            // Each request takes a worker for good: two take both, and the
            // third waits in the queue from now on, whichever order they
            // are picked up in.
            let mut clients: Vec<Client> = (0..3).map(|_| Client::connect(addr)).collect();
            for c in &mut clients {
                c.send("GET /x-wedge HTTP/1.1\r\nHost: t\r\n\r\n");
            }
            clients
        },
        "watchdog: no worker has picked up queued work",
    );
}

/// Asks the server to wedge the component its `--x-wedge` names.
fn wedge_by_request(addr: SocketAddr) -> Vec<Client> {
    let mut c = Client::connect(addr);
    assert_eq!(c.get("/x-wedge").status, 200);
    vec![c]
}

#[test]
#[cfg_attr(
    not(any(debug_assertions, feature = "test-hooks")),
    ignore = "needs the test hooks: a debug build, or --features test-hooks"
)]
fn watchdog_pings_stop_when_the_acceptor_is_wedged() {
    pings_stop_when_wedged(
        "acceptor",
        &[],
        wedge_by_request,
        "watchdog: the acceptor has made no progress",
    );
}

#[test]
#[cfg_attr(
    not(any(debug_assertions, feature = "test-hooks")),
    ignore = "needs the test hooks: a debug build, or --features test-hooks"
)]
fn watchdog_pings_stop_when_the_parker_is_wedged() {
    pings_stop_when_wedged(
        "parker",
        &[],
        wedge_by_request,
        "watchdog: the parker has made no progress",
    );
}

/// The hook is in the builds meant to have it and in no other: without
/// it, `--x-wedge` is an unknown option like any other.
#[test]
fn wedge_flag_only_with_the_test_hooks() {
    let out = crate::support::command()
        .args(["--x-wedge=pool", "--check-config"])
        .output()
        .expect("run corral");
    let err = String::from_utf8_lossy(&out.stderr);
    if HOOKS {
        assert!(out.status.success(), "{}: {err}", out.status);
    } else {
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("unknown option --x-wedge"), "{err}");
    }
}

#[test]
fn wedge_flag_is_hidden() {
    let out = crate::support::command()
        .arg("--help")
        .output()
        .expect("run corral");
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("wedge"));
}

/// Starts the binary the way systemd starts a socket-activated service:
/// `sockets` on descriptors 3, 4, ... with their names in
/// `LISTEN_FDNAMES`, and `LISTEN_PID` set to the binary's own pid (a shell
/// learns it with `$$` and then `exec`s, keeping it).
fn spawn_activated(sockets: &[(RawFd, &str)], args: &[&str]) -> Proc {
    assert!(sockets.len() <= 4);
    let names: Vec<&str> = sockets.iter().map(|(_, n)| *n).collect();
    let script = format!(
        "export LISTEN_PID=$$ LISTEN_FDS={} LISTEN_FDNAMES={}; exec \"$0\" \"$@\"",
        sockets.len(),
        names.join(":")
    );
    let mut cmd = Command::new("sh");
    clean_env(&mut cmd);
    cmd.arg("-c")
        .arg(script)
        .arg(bin())
        .args(["--access-log", "off"])
        .args(args);
    let mut fds = [-1 as RawFd; 4];
    for (slot, (fd, _)) in fds.iter_mut().zip(sockets) {
        *slot = *fd;
    }
    let n = sockets.len();
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe calls are allowed: it calls fcntl, dup2 and
    // close on plain integers, and reads a copied array; it allocates
    // nothing. Each socket is first copied above 100, so moving one onto
    // 3, 4, ... cannot clobber another still to be moved; dup2 leaves the
    // new descriptor without close-on-exec, so it survives the exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut high = [-1 as RawFd; 4];
            for i in 0..n {
                high[i] = libc::fcntl(fds[i], libc::F_DUPFD_CLOEXEC, 100);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, &fd) in high.iter().enumerate().take(n) {
                if libc::dup2(fd, 3 + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
            }
            Ok(())
        });
    }
    start_proc(cmd)
}

#[test]
fn socket_activation_serves_the_waiting_connection_and_survives_a_restart() {
    let public = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = public.local_addr().unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let sockets = [(public.as_raw_fd(), "http"), (admin.as_raw_fd(), "admin")];

    // Connected and sent before any server runs: the kernel holds both in
    // the listen backlog.
    let mut early = patient_client(addr);
    early.send("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    // --listen and --admin-listen are ignored for the passed sockets.
    let ignored = ["--listen", "127.0.0.1:1", "--admin-listen", "127.0.0.1:2"];
    let mut first = spawn_activated(&sockets, &ignored);
    let r = early.response();
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"ok\n"[..]),
        "{:#?}",
        first.seen
    );
    assert_eq!(listening_addr(&mut first), addr);
    assert!(
        first.seen.iter().any(|l| l.contains("socket activation")),
        "{:#?}",
        first.seen
    );
    // The admin socket serves the operator's endpoints, the public one not.
    assert_eq!(Client::connect(admin_addr).get("/metrics").status, 200);
    assert_eq!(Client::connect(addr).get("/metrics").status, 404);

    // A restart: the old process closes its copies without shutting the
    // sockets down, so a client arriving in between waits for the next one.
    first.signal(libc::SIGTERM);
    assert_exits_0(&mut first);
    let mut waiting = patient_client(addr);
    waiting.send("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut second = spawn_activated(&sockets, &[]);
    let r = waiting.response();
    assert_eq!(r.status, 200, "{:#?}", second.seen);
    second.signal(libc::SIGTERM);
    assert_exits_0(&mut second);
}

#[test]
fn socket_activation_refuses_a_descriptor_that_is_not_a_listening_socket() {
    let file = std::fs::File::open("/dev/null").unwrap();
    let mut proc = spawn_activated(&[(file.as_raw_fd(), "http")], &[]);
    let status = proc
        .wait_exit(Duration::from_secs(10))
        .expect("exits at once");
    assert!(!status.success());
    let line = proc.wait_line("passed socket 3", Duration::from_secs(5));
    assert!(line.is_some(), "{:#?}", proc.seen);
}

/// `systemd-socket-activate` binds, waits for the first connection, and
/// only then starts the program: the served request is one that arrived
/// before corral existed.
#[test]
fn socket_activation_with_systemd_socket_activate() {
    let tool = "systemd-socket-activate";
    if Command::new(tool).arg("--version").output().is_err() {
        eprintln!("{tool} not installed; skipped");
        return;
    }
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut cmd = Command::new(tool);
    clean_env(&mut cmd);
    cmd.args(["-l", &addr.to_string(), "--fdname=http", bin()])
        .args(["--admin-listen", "off", "--access-log", "off"]);
    let mut proc = start_proc(cmd);
    assert!(
        proc.wait_line("Listening on", Duration::from_secs(10))
            .is_some(),
        "{:#?}",
        proc.seen
    );
    let mut c = Client::connect(addr);
    let r = c.get("/healthz");
    assert_eq!(r.status, 200);
    assert_eq!(listening_addr(&mut proc), addr);
    proc.signal(libc::SIGTERM);
    assert_exits_0(&mut proc);
}

#[test]
fn sighup_reopens_the_access_log() {
    let dir = scratch_dir("sighup");
    let log = dir.join("access.log");
    let mut proc = spawn_bin(&["--access-log", log.to_str().unwrap()], None);
    let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    let mut c = Client::connect(proc.addr);
    assert_eq!(c.get("/healthz?before").status, 200);
    assert!(wait_until(Duration::from_secs(5), || read(&log)
        .contains("/healthz?before")));

    // What logrotate does: move the file, then signal.
    let rotated = dir.join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    proc.signal(libc::SIGHUP);
    let line = proc.wait_line("SIGHUP: reopened access log", Duration::from_secs(5));
    let line = line.unwrap_or_else(|| panic!("{:#?}", proc.seen));
    assert!(line.contains("1 requests;"), "{line}");

    assert_eq!(c.get("/healthz?after").status, 200);
    assert!(
        wait_until(Duration::from_secs(5), || read(&log)
            .contains("/healthz?after")),
        "new file: {:?}",
        read(&log)
    );
    assert!(!read(&log).contains("/healthz?before"));
    assert!(!read(&rotated).contains("/healthz?after"));
    proc.signal(libc::SIGTERM);
    assert_exits_0(&mut proc);
    let _ = std::fs::remove_dir_all(&dir);
}
