//! Helpers shared by the black-box tests: an in-process server that stops
//! when dropped, a raw-socket client with a tiny response reader, and a
//! child-process harness for the `corral` binary.
//!
//! Every blocking call here is bounded: sockets carry read and write
//! timeouts, loops have a count and a deadline, so a hang fails the test
//! instead of stalling the run.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use corral::access::AccessLog;
use corral::cached::ResponseCache;
use corral::config::{AccessLogTarget, Config};
use corral::metrics::Metrics;
use corral::server::{RunReport, Server, ShutdownHandle};
use corral::Handler;

/// How long a client read or write may block before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The most bytes a response reader accepts, so a runaway server cannot
/// make a test loop forever.
const MAX_RESPONSE_BYTES: usize = 64 << 20;

// ---------------------------------------------------------------------------
// In-process server.

/// A server running on its own thread. Dropping it shuts the server down
/// and joins the thread (for a bounded time).
pub struct TestServer {
    pub addr: SocketAddr,
    pub handle: ShutdownHandle,
    pub metrics: Arc<Metrics>,
    join: Option<JoinHandle<io::Result<RunReport>>>,
}

/// The config every in-process test starts from: loopback, port 0, a small
/// pool, short drain, no access log, and no `--defer-accept`, so a silent
/// client reaches corral at once (the tests of the option set it).
pub fn test_config() -> Config {
    Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        defer_accept: Duration::ZERO,
        workers: 4,
        queue: 64,
        max_connections: 1000,
        shutdown_timeout: Duration::from_secs(2),
        access_log: AccessLogTarget::Off,
        ..Config::default()
    }
}

/// Starts `handler` on [`test_config`] changed by `tweak`.
pub fn start(tweak: impl FnOnce(&mut Config), handler: impl Handler) -> TestServer {
    launch(tweak, handler, |server| server)
}

/// Like [`start`], with access lines going to `log` (pass an `Arc` to
/// keep a handle).
pub fn start_logged(
    tweak: impl FnOnce(&mut Config),
    handler: impl Handler,
    log: impl Into<Arc<AccessLog>>,
) -> TestServer {
    launch(tweak, handler, |server| server.with_access_log(log))
}

/// Binds `handler` on [`test_config`] changed by `tweak`, lets `wrap` add
/// to the server, and runs it on its own thread.
fn launch(
    tweak: impl FnOnce(&mut Config),
    handler: impl Handler,
    wrap: impl FnOnce(Server) -> Server,
) -> TestServer {
    let mut config = test_config();
    tweak(&mut config);
    config.validate().expect("test config is valid");
    let server = wrap(Server::bind(config, handler).expect("bind"));
    let addr = server.local_addrs()[0];
    let handle = server.shutdown_handle();
    let metrics = server.metrics();
    let join = std::thread::Builder::new()
        .name("test-server".into())
        .spawn(move || server.run())
        .expect("spawn server thread");
    TestServer {
        addr,
        handle,
        metrics,
        join: Some(join),
    }
}

/// Starts the built-in app with a cache of its own.
pub fn start_app(tweak: impl FnOnce(&mut Config)) -> TestServer {
    start_app_with_cache(tweak).0
}

/// Starts the built-in app on [`test_config`] changed by `tweak`, and
/// returns the app's cache too, so a test can read its counters.
pub fn start_app_with_cache(tweak: impl FnOnce(&mut Config)) -> (TestServer, ResponseCache) {
    let mut config = test_config();
    tweak(&mut config);
    let cache = corral::cached::new_cache(config.cache_config());
    let app = corral::app::router(cache.clone(), corral::app::AppLimits::from(&config));
    (start(|c| *c = config, app), cache)
}

impl TestServer {
    /// A connected client.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Waits for the server thread to end by itself (after a shutdown
    /// started elsewhere).
    pub fn join(mut self, within: Duration) -> RunReport {
        let join = self.join.take().expect("server still running");
        join_bounded(join, within)
            .expect("server thread finished in time")
            .expect("server thread did not panic")
            .expect("server run returned Ok")
    }

    /// Reads a counter.
    pub fn metric(&self, which: impl Fn(&Metrics) -> &AtomicU64) -> u64 {
        which(&self.metrics).load(Ordering::SeqCst)
    }

    /// Waits until `which` equals `want`, polling for at most `within`.
    /// Returns the last value seen.
    pub fn wait_metric(
        &self,
        which: impl Fn(&Metrics) -> &AtomicU64,
        want: u64,
        within: Duration,
    ) -> u64 {
        let mut seen = 0;
        wait_until(within, || {
            seen = self.metric(&which);
            seen == want
        });
        seen
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(join) = self.join.take() {
            self.handle.shutdown();
            if join_bounded(join, Duration::from_secs(15)).is_none() && !std::thread::panicking() {
                panic!("server thread did not stop within 15s of shutdown");
            }
        }
    }
}

/// Joins `join` if the thread finishes within `within`; `None` if it does
/// not (the thread is then left running).
fn join_bounded<T>(join: JoinHandle<T>, within: Duration) -> Option<std::thread::Result<T>> {
    if wait_until(within, || join.is_finished()) {
        Some(join.join())
    } else {
        None
    }
}

/// Polls `cond` every few milliseconds until it holds or `within` passes.
/// This waits on a condition, not for time to pass: it returns as soon as
/// the condition holds.
pub fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

// ---------------------------------------------------------------------------
// Raw client and response reader.

/// A parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resp {
    pub status: u16,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// How the body was delimited.
    pub framing: Framing,
}

/// A status line and header section, without a body (a `100 Continue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub version: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

/// How a response body was delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body could follow (HEAD, 1xx, 204, 304).
    None,
    Length,
    Chunked,
    /// Read until the server closed.
    Close,
}

impl Resp {
    /// The first value of header `name`, ignoring case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the server said it closes the connection.
    pub fn says_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw TCP client with a receive buffer, so pipelined responses can be
/// read one at a time.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    /// Connects with [`IO_TIMEOUT`] on connect, reads and writes.
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
        Client::from_stream(stream)
    }

    /// Wraps an already connected stream.
    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let _ = stream.set_nodelay(true);
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes all of `bytes`.
    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream.write_all(bytes.as_ref()).expect("write");
    }

    /// Sends `GET path` on HTTP/1.1 and reads the response.
    pub fn get(&mut self, path: &str) -> Resp {
        self.get_with(path, &[])
    }

    /// Sends `GET path` with extra header fields and reads the response.
    pub fn get_with(&mut self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.send(request_head("GET", path, headers));
        self.response()
    }

    /// Sends `HEAD path` and reads the response head.
    pub fn head(&mut self, path: &str) -> Resp {
        self.send(request_head("HEAD", path, &[]));
        self.head_response()
    }

    /// Sends `POST path` with an empty body and reads the response.
    pub fn post_empty(&mut self, path: &str) -> Resp {
        self.send(request_head("POST", path, &[("Content-Length", "0")]));
        self.response()
    }

    /// Reads the next response to a request that may carry a body.
    pub fn response(&mut self) -> Resp {
        self.try_response(false).expect("read response")
    }

    /// Reads the next response to a HEAD request: a head, never a body.
    pub fn head_response(&mut self) -> Resp {
        self.try_response(true).expect("read response")
    }

    /// Reads one response; `head_only` when it answers HEAD.
    pub fn try_response(&mut self, head_only: bool) -> io::Result<Resp> {
        let Head {
            version,
            status,
            headers,
        } = self.read_head()?;
        let has_header = |name: &str| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name));
        let no_body = head_only || (100..200).contains(&status) || status == 204 || status == 304;
        let (framing, body) = if no_body {
            (Framing::None, Vec::new())
        } else if has_header("transfer-encoding")
            .is_some_and(|(_, v)| v.eq_ignore_ascii_case("chunked"))
        {
            (Framing::Chunked, self.read_chunked()?)
        } else if let Some((_, v)) = has_header("content-length") {
            let n: usize = v
                .parse()
                .map_err(|_| invalid(format!("bad Content-Length {v:?}")))?;
            (Framing::Length, self.read_exact_buffered(n)?)
        } else {
            (Framing::Close, self.read_to_eof()?)
        };
        Ok(Resp {
            status,
            version,
            headers,
            body,
            framing,
        })
    }

    /// Reads a status line and header section (also for a `100 Continue`).
    pub fn read_head(&mut self) -> io::Result<Head> {
        let head = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..i + 4).collect();
                break head;
            }
            if self.buf.len() > 64 * 1024 {
                return Err(invalid("response head over 64KiB".into()));
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "EOF before a complete response head; got {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ),
                ));
            }
        };
        let text = std::str::from_utf8(&head[..head.len() - 4])
            .map_err(|_| invalid("response head is not UTF-8".into()))?;
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_owned();
        let status = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
        if !version.starts_with("HTTP/1.") {
            return Err(invalid(format!("bad status line {status_line:?}")));
        }
        let mut headers = Vec::new();
        for line in lines {
            let (n, v) = line
                .split_once(':')
                .ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
            headers.push((n.to_owned(), v.trim().to_owned()));
        }
        Ok(Head {
            version,
            status,
            headers,
        })
    }

    fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line()?;
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| invalid(format!("bad chunk size line {line:?}")))?;
            if body.len() + size > MAX_RESPONSE_BYTES {
                return Err(invalid("chunked body too large".into()));
            }
            if size == 0 {
                // Trailer section: lines until an empty one.
                for _ in 0..100 {
                    if self.read_line()?.is_empty() {
                        return Ok(body);
                    }
                }
                return Err(invalid("too many trailer lines".into()));
            }
            body.extend(self.read_exact_buffered(size)?);
            if self.read_exact_buffered(2)? != b"\r\n" {
                return Err(invalid("chunk not followed by CRLF".into()));
            }
        }
    }

    fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                return String::from_utf8(line[..i].to_vec())
                    .map_err(|_| invalid("line is not UTF-8".into()));
            }
            if self.buf.len() > 4096 {
                return Err(invalid("line over 4KiB".into()));
            }
            if self.fill()? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    fn read_exact_buffered(&mut self, n: usize) -> io::Result<Vec<u8>> {
        if n > MAX_RESPONSE_BYTES {
            return Err(invalid(format!("body of {n} bytes is too large")));
        }
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("EOF after {} of {n} body bytes", self.buf.len()),
                ));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    fn read_to_eof(&mut self) -> io::Result<Vec<u8>> {
        while self.fill()? > 0 {
            if self.buf.len() > MAX_RESPONSE_BYTES {
                return Err(invalid("close-delimited body too large".into()));
            }
        }
        Ok(std::mem::take(&mut self.buf))
    }

    /// Reads more bytes into the buffer; 0 at end of stream.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        // A read on a socket with a timeout fails with EINTR when the
        // process is stopped and resumed, even with no signal handler
        // (signal(7)); the server has said nothing by that, so read again.
        let mut tries = 0;
        let n = loop {
            match self.stream.read(&mut chunk) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted && tries < 100 => tries += 1,
                result => break result?,
            }
        };
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Whether the server closed the connection: the next read sees EOF or
    /// a reset, with no bytes before it. A read timeout (the server kept the
    /// connection open) is `false`.
    pub fn is_closed(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        match self.fill() {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
            ),
        }
    }

    /// Like [`Client::is_closed`], but waits at most `within` for the
    /// server to act.
    pub fn closes_within(&mut self, within: Duration) -> bool {
        self.stream.set_read_timeout(Some(within)).unwrap();
        let closed = self.is_closed();
        self.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        closed
    }

    /// Buffers whatever arrives until EOF, a reset, or the read timeout,
    /// and returns how much is buffered; [`Client::response`] then parses
    /// it. For reading what a server wrote before it hung up on a client
    /// that was still sending.
    pub fn read_until_close(&mut self) -> usize {
        for _ in 0..10_000 {
            match self.fill() {
                Ok(0) | Err(_) => break,
                Ok(_) if self.buf.len() > MAX_RESPONSE_BYTES => break,
                Ok(_) => {}
            }
        }
        self.buf.len()
    }

    /// Bytes received but not yet consumed by a reader.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }
}

/// An HTTP/1.1 request head with `Host` and the given fields.
pub fn request_head(method: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

// ---------------------------------------------------------------------------
// The binary as a child process.

/// A running `corral` process, killed on drop if still running.
pub struct Proc {
    pub child: Child,
    pub addr: SocketAddr,
    /// Every stderr line, as it arrives.
    pub stderr: Receiver<String>,
    /// Lines already taken off `stderr`, for failure messages.
    pub seen: Vec<String>,
}

/// The path of the built binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_corral")
}

/// A `Command` for the binary with every `CORRAL_*` variable of the test
/// environment removed, so the tests see only what they set.
pub fn command() -> Command {
    let mut cmd = Command::new(bin());
    clean_env(&mut cmd);
    cmd
}

/// Removes inherited `CORRAL_*` variables from `cmd`.
pub fn clean_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CORRAL_") {
            cmd.env_remove(k);
        }
    }
}

/// Starts the binary on `127.0.0.1:0` (the admin listener too) with
/// `args`, and waits (at most 10 s) for its "listening on" line. `wrap` runs
/// it through a shell prefix such as `bash -c 'ulimit -n 40; exec "$0" "$@"'`.
pub fn spawn_bin(args: &[&str], wrap: Option<&[&str]>) -> Proc {
    let mut cmd = match wrap {
        Some(prefix) => {
            let mut c = Command::new(prefix[0]);
            c.args(&prefix[1..]).arg(bin());
            c
        }
        None => Command::new(bin()),
    };
    clean_env(&mut cmd);
    // The admin port's default is fixed; tests run side by side.
    cmd.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(args);
    let mut proc = start_proc(cmd);
    proc.addr = listening_addr(&mut proc);
    proc
}

/// Starts `cmd` with its stderr forwarded line by line (so the pipe never
/// fills up and stalls the server); waits for nothing.
pub fn start_proc(mut cmd: Command) -> Proc {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn corral");
    let stderr = child.stderr.take().expect("stderr pipe");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Proc {
        child,
        addr: "127.0.0.1:0".parse().unwrap(),
        stderr: rx,
        seen: Vec::new(),
    }
}

/// The public address from the "listening on" line (waited for, 10 s at
/// most).
pub fn listening_addr(proc: &mut Proc) -> SocketAddr {
    let line = proc
        .wait_line("listening on ", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no listening line; stderr so far: {:#?}", proc.seen));
    let rest = &line[line.find("listening on ").unwrap() + "listening on ".len()..];
    rest.split([';', ',', ' '])
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse address from {line:?}"))
}

impl Proc {
    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits at most `within` for a stderr line containing `needle`.
    pub fn wait_line(&mut self, needle: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// The address of the operator's listener, from the binary's
    /// "operator endpoints (...) on ADDR" line (logged before the
    /// "listening on" line, so usually seen already).
    pub fn admin_addr(&mut self) -> SocketAddr {
        const NEEDLE: &str = "operator endpoints";
        let line = match self.seen.iter().find(|l| l.contains(NEEDLE)) {
            Some(line) => line.clone(),
            None => self
                .wait_line(NEEDLE, Duration::from_secs(10))
                .unwrap_or_else(|| panic!("no operator endpoints line; stderr: {:#?}", self.seen)),
        };
        line.rsplit(" on ")
            .next()
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("cannot parse the admin address from {line:?}"))
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) takes plain integers; the pid is our own child,
        // not yet reaped (it is reaped only in `wait_exit` or on drop).
        let r = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(r, 0, "kill({}, {signal})", self.pid());
    }

    /// Waits at most `within` for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// User plus system CPU time the process has used so far.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("stat");
        // The command name is in parentheses and may hold spaces; fields
        // after it are space-separated: state is field 3, utime 14, stime 15.
        let after = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<&str> = after.split(' ').collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf(3) takes an integer and touches no memory of ours.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let hz = if hz > 0 { hz as u64 } else { 100 };
        Duration::from_nanos(ticks * 1_000_000_000 / hz)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
