//! The access log: one line per response in the Combined Log Format, plus
//! the time taken in microseconds (Apache's `%D`), and for a response an
//! upstream produced, the upstream's time in microseconds after it
//! (nginx's `$upstream_response_time`), written to stderr, a file, or any
//! writer.
//!
//! A worker never writes to the sink itself. It formats its line into a
//! buffer of its thread's, then appends it to one shared buffer under a
//! short lock (a copy of a hundred-odd bytes); one writer thread
//! (`corral-access`) takes the whole buffer at once and writes it with no
//! lock held. So a line costs a worker no system call, and a slow disk or a
//! full journald pipe stalls only the writer:
//!
//! - **Flushed by size and by time.** The writer takes the buffer when it
//!   holds [`FLUSH_BYTES`], or [`FLUSH_INTERVAL`] after the first line in
//!   it, whichever comes first; an idle log costs no wake-ups.
//! - **Bounded, and dropping rather than blocking.** While the writer is
//!   stuck, lines pile up to [`MAX_PENDING_BYTES`]; past that a line is
//!   dropped and counted ([`AccessLog::dropped`], and the server's
//!   `access_log_dropped` metric). The writer says how many it dropped,
//!   at most once a second, once it can write again. Lines that a write
//!   fails on (a full disk) are counted the same way, and the error logged.
//! - **Lossless on reopen and at exit.** [`AccessLog::reopen`] hands the
//!   writer a newly opened file: it writes what is buffered to the old file,
//!   then switches, before `reopen` returns. The server flushes at the end
//!   of its drain ([`AccessLog::flush`]).
//!
//! The alternatives lost: a channel of lines moves an allocated `String`
//! per line and wakes its receiver per line unless it polls; per-worker
//! buffers save the shared lock (a line uncontended on one CPU, rarely
//! contended on two) but need the writer's timer, a reopen and the exit
//! flush to visit every worker's buffer, and mix lines out of time order by
//! up to a flush interval. A line is at most a few hundred bytes and the
//! lock is held for its copy, so one shared buffer costs about what a
//! per-worker one would.
//!
//! Lines from different workers never interleave: each is appended whole.
//! To stderr a batch goes out under std's stderr lock, so the server's own
//! log lines cannot land inside it either.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::http::date::{Civil, MONTHS};
use crate::http::response::push_u64;
use crate::metrics::Metrics;
use crate::unwind::lock;

/// The writer takes the buffer once it holds this much: big enough that a
/// busy server writes a few hundred times a second, not per line (about
/// 500 lines of 130 bytes); small enough to stay in the CPU's cache.
pub const FLUSH_BYTES: usize = 64 << 10;

/// The longest a line waits in the buffer before the writer takes it, so
/// that `tail -f` and journald see a quiet server's lines at once, as far
/// as a person can tell. nginx's `flush=` is typically seconds; Apache's
/// `BufferedLogs` has no timer at all.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// The most bytes waiting for the writer: past it, lines are dropped. At
/// 200,000 lines a second this is 150 ms of lines, far longer than a write
/// of a batch takes on a healthy disk, even when the writer has to wait for
/// the CPU behind busy workers.
pub const MAX_PENDING_BYTES: usize = 4 << 20;

/// The longest [`AccessLog::reopen`] waits for the writer to switch files,
/// and the longest the server's exit waits for the last lines to be
/// written, when the sink blocks.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where access lines go: a handle to the buffer and its writer thread.
/// The thread writes what is left and ends when the handle is dropped.
pub struct AccessLog {
    shared: Arc<Shared>,
    /// The file, if the sink is one, for [`AccessLog::reopen`].
    path: Option<PathBuf>,
}

/// What the workers, the writer and the flushers share.
struct Shared {
    state: Mutex<State>,
    /// The writer waits on it for lines, a request or the end.
    wake: Condvar,
    /// Flushers wait on it for the writer to finish a batch.
    written: Condvar,
    /// Lines lost: dropped while the writer was stuck, or failed to write.
    dropped: AtomicU64,
    /// Also counted here, once a server takes the log.
    metrics: OnceLock<Arc<Metrics>>,
}

/// The buffer and the writer's orders. Every change is an assignment or an
/// append of whole lines, so a panic cannot leave it half-changed.
struct State {
    /// Lines not yet taken by the writer.
    buf: Vec<u8>,
    /// How many lines `buf` holds.
    lines: u64,
    /// Batches taken by the writer so far, and written (or failed) so far.
    /// A flush waits for the batch that holds its lines to be written.
    taken: u64,
    done: u64,
    /// Take the buffer now, without waiting for it to fill.
    urgent: bool,
    /// A file to switch to once the buffer taken with it is written.
    reopened: Option<File>,
    /// The last handle is gone: write what is left and end.
    closing: bool,
}

/// What the writer writes to.
enum Sink {
    Stderr,
    Writer(Box<dyn Write + Send>),
}

/// What one access line records.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// The client's address.
    pub peer: Option<SocketAddr>,
    /// Seconds since the Unix epoch when the request was received.
    pub unix_time: i64,
    /// Method, target and version.
    pub method: &'a str,
    /// The request target.
    pub target: &'a str,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: &'a str,
    /// The response status.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    /// The `Referer` header.
    pub referer: Option<&'a str>,
    /// The `User-Agent` header.
    pub user_agent: Option<&'a str>,
    /// Microseconds from the complete request to the last byte written.
    pub micros: u128,
    /// Microseconds the upstream took, for a proxied response that went
    /// upstream; the field is left out otherwise, so other lines keep
    /// their shape.
    pub upstream_micros: Option<u128>,
}

impl AccessLog {
    /// Logs to standard error.
    pub fn stderr() -> AccessLog {
        AccessLog::start(Sink::Stderr, None)
    }

    /// Logs to `path`, appending.
    pub fn file(path: &Path) -> io::Result<AccessLog> {
        let f = open_append(path)?;
        Ok(AccessLog::start(
            Sink::Writer(Box::new(f)),
            Some(path.to_owned()),
        ))
    }

    /// Logs to `w`, such as a pipe; [`AccessLog::reopen`] keeps it.
    pub fn writer(w: impl Write + Send + 'static) -> AccessLog {
        AccessLog::start(Sink::Writer(Box::new(w)), None)
    }

    fn start(sink: Sink, path: Option<PathBuf>) -> AccessLog {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                buf: Vec::new(),
                lines: 0,
                taken: 0,
                done: 0,
                urgent: false,
                reopened: None,
                closing: false,
            }),
            wake: Condvar::new(),
            written: Condvar::new(),
            dropped: AtomicU64::new(0),
            metrics: OnceLock::new(),
        });
        let name = match (&path, &sink) {
            (Some(path), _) => path.display().to_string(),
            (None, Sink::Stderr) => "stderr".to_owned(),
            (None, Sink::Writer(_)) => "writer".to_owned(),
        };
        let writer = Writer {
            shared: shared.clone(),
            sink,
            name,
            spare: Vec::new(),
            report: Report::default(),
        };
        // Without its thread the log would drop every line once the buffer
        // is full; a process that cannot start one thread is not serving.
        std::thread::Builder::new()
            .name("corral-access".into())
            .spawn(move || writer.run())
            .expect("start the access log's writer thread");
        AccessLog { shared, path }
    }

    /// Counts dropped lines in `metrics` too (`access_log_dropped`); the
    /// server calls it when it takes the log. Only the first call counts.
    pub fn count_in(&self, metrics: Arc<Metrics>) {
        let _ = self.shared.metrics.set(metrics);
    }

    /// Reopens the file (after logrotate moved it); a no-op for other
    /// sinks. The lines logged before the call are written to the old file
    /// first; it returns once the writer has switched, or with an error
    /// after [`FLUSH_TIMEOUT`] if the writer is stuck in a write (it then
    /// switches after that write).
    pub fn reopen(&self) -> io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let file = open_append(path)?;
        let mut state = self.shared.lock();
        state.reopened = Some(file);
        if self.shared.wait_written(state, FLUSH_TIMEOUT) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the writer is stuck writing the old file; it switches after that write",
            ))
        }
    }

    /// Writes every line logged before the call, waiting at most `timeout`
    /// for the writer. False if it did not finish in time.
    pub fn flush(&self, timeout: Duration) -> bool {
        let state = self.shared.lock();
        self.shared.wait_written(state, timeout)
    }

    /// Lines lost so far: dropped because the writer could not keep up, or
    /// failed to write.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Relaxed)
    }

    /// Logs one line. Never blocks on the sink: if the writer is stuck and
    /// [`MAX_PENDING_BYTES`] wait already, the line is dropped, counted, and
    /// false returned.
    pub fn record(&self, r: &Record<'_>) -> bool {
        thread_local! {
            static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            write_line(&mut line, r);
            self.append(&line)
        })
    }

    /// Appends one whole line to the buffer, waking the writer when the
    /// buffer was empty (so the timer starts) or has just filled.
    fn append(&self, line: &[u8]) -> bool {
        let shared = &*self.shared;
        let mut state = shared.lock();
        let before = state.buf.len();
        if before + line.len() > MAX_PENDING_BYTES {
            drop(state);
            shared.lost(1);
            return false;
        }
        state.buf.extend_from_slice(line);
        state.lines += 1;
        let kick = before == 0 || (before < FLUSH_BYTES && state.buf.len() >= FLUSH_BYTES);
        drop(state);
        if kick {
            shared.wake.notify_one();
        }
        true
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.closing = true;
        drop(state);
        self.shared.wake.notify_one();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Ignoring poison is sound: see `State`.
        lock(&self.state)
    }

    /// Asks the writer for what is buffered now (and any file handed over
    /// with it), and waits at most `timeout` until it is written.
    fn wait_written(&self, mut state: MutexGuard<'_, State>, timeout: Duration) -> bool {
        // The batch the writer takes next holds what is buffered now; with
        // nothing buffered and no file to switch to, the batch being
        // written, if any, is the last to wait for.
        let target = if state.buf.is_empty() && state.reopened.is_none() {
            state.taken
        } else {
            state.urgent = true;
            self.wake.notify_one();
            state.taken + 1
        };
        let (state, _) = self
            .written
            .wait_timeout_while(state, timeout, |s| s.done < target)
            .unwrap_or_else(PoisonError::into_inner);
        state.done >= target
    }

    fn lost(&self, lines: u64) {
        self.dropped.fetch_add(lines, Relaxed);
        if let Some(m) = self.metrics.get() {
            m.access_log_dropped.fetch_add(lines, Relaxed);
        }
    }
}

/// The writer thread's own state.
struct Writer {
    shared: Arc<Shared>,
    sink: Sink,
    /// What the sink is, for the server log: its path, or `stderr`.
    name: String,
    /// The last batch's buffer, emptied, to swap in for the next.
    spare: Vec<u8>,
    report: Report,
}

impl Writer {
    fn run(mut self) {
        let shared = self.shared.clone();
        let mut state = shared.lock();
        loop {
            // Idle: sleep until a line, a request or the end comes, or
            // until drops are due to be reported.
            while state.buf.is_empty() && !state.urgent && !state.closing {
                let lost = shared.dropped.load(Relaxed);
                let pending = self.report.pending(Instant::now(), lost);
                state = match pending {
                    None => shared
                        .wake
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner),
                    Some(wait) => {
                        let waited = shared.wake.wait_timeout(state, wait);
                        waited.unwrap_or_else(PoisonError::into_inner).0
                    }
                };
                if pending.is_some() {
                    drop(state);
                    self.report_drops();
                    state = shared.lock();
                }
            }
            // Lines are waiting: give the batch up to the interval to fill.
            if !state.urgent && !state.closing && state.buf.len() < FLUSH_BYTES {
                state = shared
                    .wake
                    .wait_timeout_while(state, FLUSH_INTERVAL, |s| {
                        !s.urgent && !s.closing && s.buf.len() < FLUSH_BYTES
                    })
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            let mut batch = std::mem::replace(&mut state.buf, std::mem::take(&mut self.spare));
            let lines = std::mem::take(&mut state.lines);
            let reopened = state.reopened.take();
            state.urgent = false;
            state.taken += 1;
            let closing = state.closing;
            drop(state);

            self.write(&batch, lines);
            if let Some(file) = reopened {
                self.sink = Sink::Writer(Box::new(file));
            }
            self.report_drops();
            batch.clear();
            // A burst may have grown it; keep no more than a batch's worth.
            batch.shrink_to(2 * FLUSH_BYTES);
            self.spare = batch;

            state = shared.lock();
            state.done = state.taken;
            shared.written.notify_all();
            if closing && state.buf.is_empty() {
                return;
            }
        }
    }

    /// Writes a batch of whole lines, counting those a failed write loses.
    fn write(&mut self, batch: &[u8], lines: u64) {
        if batch.is_empty() {
            return;
        }
        let result = match &mut self.sink {
            Sink::Stderr => write_some(&mut io::stderr().lock(), batch),
            Sink::Writer(w) => {
                write_some(w, batch).and_then(|n| w.flush().map(|()| n).map_err(|e| (n, e)))
            }
        };
        match result {
            Err((written, e)) => {
                // A line cut short counts as lost, so count the line ends
                // that were not written.
                let lost = batch[written..].iter().filter(|&&b| b == b'\n').count() as u64;
                self.shared.lost(lost.min(lines));
                self.report.failed(e);
            }
            // The lines lost while it failed are reported now, whatever
            // the rate limit: told later, after "writing again", they
            // would read as a fault that goes on.
            Ok(_) if self.report.recovered() => {
                let lost = self.shared.dropped.load(Relaxed);
                if let Some(message) = self.report.due_by(Instant::now(), lost, true) {
                    log::warn!("access log {}: {message}", self.name);
                }
                log::warn!("access log {}: writing again", self.name);
            }
            Ok(_) => {}
        }
    }

    /// Logs the drops and failed writes since the last report, at most
    /// once a second.
    fn report_drops(&mut self) {
        let lost = self.shared.dropped.load(Relaxed);
        if let Some(message) = self.report.due(Instant::now(), lost) {
            log::warn!("access log {}: {message}", self.name);
        }
    }
}

/// Writes all of `buf`, or says how much was written before the error.
fn write_some(w: &mut impl Write, buf: &[u8]) -> Result<usize, (usize, io::Error)> {
    let mut written = 0;
    while written < buf.len() {
        match w.write(&buf[written..]) {
            Ok(0) => return Err((written, io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((written, e)),
        }
    }
    Ok(written)
}

/// When to tell the operator about lost lines: at most once a second, with
/// how many since the last report and the last write error, if any.
#[derive(Debug, Default)]
struct Report {
    /// The lost-lines count at the last report.
    reported: u64,
    last: Option<Instant>,
    error: Option<io::Error>,
    /// Whether the last write failed.
    failing: bool,
}

/// The least time between two reports.
const REPORT_EVERY: Duration = Duration::from_secs(1);

impl Report {
    fn failed(&mut self, e: io::Error) {
        self.error = Some(e);
        self.failing = true;
    }

    /// Whether a write went through after failed ones: true once per
    /// recovery, so the operator hears that the fault ended.
    fn recovered(&mut self) -> bool {
        std::mem::take(&mut self.failing)
    }

    /// How long until lines lost since the last report may be reported;
    /// `None` if none were.
    fn pending(&self, now: Instant, lost: u64) -> Option<Duration> {
        if lost == self.reported {
            return None;
        }
        Some(self.last.map_or(Duration::ZERO, |t| {
            (t + REPORT_EVERY).saturating_duration_since(now)
        }))
    }

    /// The line to log now, if lines were lost since the last report and
    /// that was a second ago or more.
    fn due(&mut self, now: Instant, lost: u64) -> Option<String> {
        self.due_by(now, lost, false)
    }

    /// [`Report::due`], or with `now_anyway` as soon as lines were lost,
    /// however recent the last report.
    fn due_by(&mut self, now: Instant, lost: u64, now_anyway: bool) -> Option<String> {
        if self.pending(now, lost)? > Duration::ZERO && !now_anyway {
            return None;
        }
        let n = lost - self.reported;
        let since = match self.last {
            Some(t) => format!(" in the last {:.1}s", now.duration_since(t).as_secs_f64()),
            None => String::new(),
        };
        self.reported = lost;
        self.last = Some(now);
        Some(match self.error.take() {
            Some(e) => format!("cannot write: {e}; {n} lines lost{since}"),
            None => {
                format!("{n} lines dropped{since}: its file or pipe is not keeping up")
            }
        })
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Quotes a header for a log line: see [`escaped`].
fn quoted(out: &mut Vec<u8>, v: Option<&str>) {
    out.push(b'"');
    match v {
        None => out.push(b'-'),
        Some(v) => escaped(out, v),
    }
    out.push(b'"');
}

/// Appends `v` with `"` and `\` and control characters escaped, as Apache
/// does, so a client cannot forge log lines.
fn escaped(out: &mut Vec<u8>, v: &str) {
    // Most values are plain printable ASCII: copied whole.
    if v.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.extend_from_slice(v.as_bytes());
        return;
    }
    for c in v.chars() {
        match c {
            '"' | '\\' => out.extend_from_slice(&[b'\\', c as u8]),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
}

/// Appends ` - - [10/Oct/2000:13:55:36 +0000] "` for `unix_time`: made once
/// a second per thread, as the `Date` header is.
fn timestamp(out: &mut Vec<u8>, unix_time: i64) {
    thread_local! {
        static CACHED: RefCell<(i64, String)> = const { RefCell::new((0, String::new())) };
    }
    CACHED.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != unix_time || cached.1.is_empty() {
            let t = Civil::from_unix(unix_time);
            cached.1.clear();
            let _ = write!(
                cached.1,
                " - - [{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000] \"",
                t.day,
                MONTHS[t.month as usize - 1],
                t.year,
                t.hour,
                t.minute,
                t.second
            );
            cached.0 = unix_time;
        }
        out.extend_from_slice(cached.1.as_bytes());
    });
}

/// `127.0.0.1 - - [10/Oct/2000:13:55:36 +0000] "GET / HTTP/1.1" 200 2326 "-" "curl/8" 153`
pub fn format_line(r: &Record<'_>) -> String {
    let mut line = Vec::new();
    write_line(&mut line, r);
    // Whole `&str`s and ASCII went in: valid UTF-8, so nothing is replaced.
    String::from_utf8_lossy(&line).into_owned()
}

/// Appends the line for `r` to `out`, without allocating beyond `out`.
/// Numbers go through the response writer's [`push_u64`], not `write!`: a
/// line has up to seven, and the formatting machinery costs tens of
/// nanoseconds each.
fn write_line(out: &mut Vec<u8>, r: &Record<'_>) {
    match r.peer.map(|p| p.ip()) {
        Some(IpAddr::V4(ip)) => {
            for (i, octet) in ip.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, octet.into());
            }
        }
        Some(ip) => {
            let _ = write!(out, "{ip}");
        }
        None => out.push(b'-'),
    }
    timestamp(out, r.unix_time);
    escaped(out, r.method);
    out.push(b' ');
    escaped(out, r.target);
    out.push(b' ');
    escaped(out, r.version);
    out.extend_from_slice(b"\" ");
    push_u64(out, r.status.into());
    out.push(b' ');
    push_u64(out, r.bytes);
    out.push(b' ');
    quoted(out, r.referer);
    out.push(b' ');
    quoted(out, r.user_agent);
    out.push(b' ');
    // u64 division is several times faster than u128's; 2^64 microseconds
    // is half a million years.
    push_micros(out, r.micros);
    if let Some(upstream) = r.upstream_micros {
        out.push(b' ');
        push_micros(out, upstream);
    }
    out.push(b'\n');
}

/// A duration in microseconds. u64 division is several times faster than
/// u128's, and 2^64 microseconds is half a million years.
fn push_micros(out: &mut Vec<u8>, micros: u128) {
    match u64::try_from(micros) {
        Ok(micros) => push_u64(out, micros),
        Err(_) => {
            let _ = write!(out, "{micros}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(target: &str) -> Record<'_> {
        Record {
            peer: "127.0.0.1:5000".parse().ok(),
            unix_time: 971_186_136,
            method: "GET",
            target,
            version: "HTTP/1.1",
            status: 200,
            bytes: 2326,
            referer: None,
            user_agent: Some("curl/8\n"),
            micros: 153,
            upstream_micros: None,
        }
    }

    /// A sink the test can read, and hold shut: while shut, a write
    /// blocks, as on a pipe nobody reads.
    #[derive(Clone, Default)]
    struct Tap(Arc<TapState>);

    #[derive(Default)]
    struct TapState {
        /// What was written, and whether writes block.
        bytes: Mutex<(Vec<u8>, bool)>,
        opened: Condvar,
    }

    impl Tap {
        fn shut(&self, shut: bool) {
            lock(&self.0.bytes).1 = shut;
            self.0.opened.notify_all();
        }

        fn text(&self) -> String {
            String::from_utf8(lock(&self.0.bytes).0.clone()).unwrap()
        }
    }

    impl Write for Tap {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let state = lock(&self.0.bytes);
            let mut tap = self.0.opened.wait_while(state, |t| t.1).unwrap();
            tap.0.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    const WITHIN: Duration = Duration::from_secs(10);

    #[test]
    fn a_flush_writes_every_line_before_it() {
        let tap = Tap::default();
        let log = AccessLog::writer(tap.clone());
        for i in 0..1000 {
            assert!(log.record(&record(&format!("/{i}"))));
        }
        assert!(log.flush(WITHIN));
        let text = tap.text();
        assert_eq!(text.lines().count(), 1000);
        assert!(text
            .lines()
            .enumerate()
            .all(|(i, l)| l.contains(&format!(" /{i} "))));
        assert_eq!(log.dropped(), 0);
    }

    #[test]
    fn a_quiet_log_is_written_within_the_interval_and_at_the_end() {
        let tap = Tap::default();
        let log = AccessLog::writer(tap.clone());
        let start = Instant::now();
        log.record(&record("/timer"));
        while !tap.text().contains("/timer") {
            assert!(start.elapsed() < WITHIN, "never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Not before the interval: the writer waited for more lines.
        assert!(start.elapsed() >= FLUSH_INTERVAL);

        log.record(&record("/last"));
        drop(log);
        let start = Instant::now();
        while !tap.text().contains("/last") {
            assert!(start.elapsed() < WITHIN, "the last line was lost");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_stuck_sink_drops_and_counts_lines_and_never_blocks() {
        let tap = Tap::default();
        tap.shut(true);
        let log = AccessLog::writer(tap.clone());
        let metrics = Arc::new(Metrics::default());
        log.count_in(metrics.clone());
        let target = "x".repeat(1000);
        let (mut kept, mut dropped) = (0u64, 0u64);
        let start = Instant::now();
        // Enough to fill the buffer twice over, whatever the writer took
        // before it got stuck.
        for _ in 0..2 * MAX_PENDING_BYTES / 1000 {
            if log.record(&record(&target)) {
                kept += 1;
            } else {
                dropped += 1;
            }
        }
        assert!(start.elapsed() < WITHIN, "recording blocked");
        assert!(dropped > 0, "nothing dropped");
        assert_eq!(log.dropped(), dropped);
        assert_eq!(metrics.access_log_dropped.load(Relaxed), dropped);
        // Stuck, a flush gives up; unstuck, every line kept is written.
        assert!(!log.flush(Duration::from_millis(50)));
        tap.shut(false);
        assert!(log.flush(WITHIN));
        assert_eq!(tap.text().lines().count() as u64, kept);
        assert_eq!(log.dropped(), dropped);
    }

    #[test]
    fn a_failed_write_counts_the_lines_it_lost() {
        /// Takes 10 bytes, then fails.
        struct Full(usize);
        impl Write for Full {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("no space left"));
                }
                let n = buf.len().min(self.0);
                self.0 -= n;
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let log = AccessLog::writer(Full(10));
        for _ in 0..3 {
            log.record(&record("/"));
        }
        assert!(log.flush(WITHIN));
        // The first line was cut short: all three are lost.
        assert_eq!(log.dropped(), 3);
    }

    #[test]
    fn reopen_writes_the_old_file_first_then_switches() {
        let dir = std::env::temp_dir().join(format!("corral-access-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (path, rotated) = (dir.join("access.log"), dir.join("access.log.1"));
        let log = AccessLog::file(&path).unwrap();
        for i in 0..100 {
            log.record(&record(&format!("/old/{i}")));
        }
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen().unwrap();
        for i in 0..50 {
            log.record(&record(&format!("/new/{i}")));
        }
        assert!(log.flush(WITHIN));
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        let (old, new) = (read(&rotated), read(&path));
        assert_eq!(old.lines().count(), 100);
        assert!(old.lines().all(|l| l.contains("/old/")));
        assert_eq!(new.lines().count(), 50);
        assert!(new.lines().all(|l| l.contains("/new/")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn lost_lines_are_reported_at_most_once_a_second() {
        let mut report = Report::default();
        let t = Instant::now();
        assert_eq!(report.pending(t, 0), None);
        assert_eq!(report.due(t, 0), None);
        let first = report.due(t, 5).expect("the first drops at once");
        assert!(first.contains("5 lines dropped"), "{first}");
        assert_eq!(report.due(t + Duration::from_millis(500), 9), None);
        assert_eq!(
            report.pending(t + Duration::from_millis(500), 9),
            Some(Duration::from_millis(500))
        );
        report.failed(io::Error::other("disk full"));
        let second = report.due(t + REPORT_EVERY, 9).expect("a second later");
        assert!(second.contains("4 lines lost in the last 1.0s"), "{second}");
        assert!(second.contains("disk full"), "{second}");
        assert_eq!(report.pending(t + 2 * REPORT_EVERY, 9), None);
    }

    #[test]
    fn lines_lost_before_a_recovery_are_reported_with_it_not_after() {
        let mut report = Report::default();
        let t = Instant::now();
        report.failed(io::Error::other("disk full"));
        assert!(report.due(t, 3).is_some(), "the first loss at once");
        report.failed(io::Error::other("disk full"));
        // 200 ms later the disk has room: the 4 lines lost since the last
        // report are told with the recovery, not a second later.
        assert!(report.recovered());
        let later = t + Duration::from_millis(200);
        let flushed = report.due_by(later, 7, true).expect("told at once");
        assert!(flushed.contains("4 lines lost"), "{flushed}");
        assert_eq!(
            report.pending(later + REPORT_EVERY, 7),
            None,
            "nothing left"
        );
        assert!(!report.recovered(), "one recovery, told once");
    }

    #[test]
    fn format_edge_cases() {
        let mut r = record("/caf\u{e9}\u{85}");
        r.peer = "[::1]:80".parse().ok();
        (r.status, r.bytes, r.micros, r.unix_time) = (404, 0, 0, 0);
        r.referer = Some("a\\b");
        assert_eq!(
            format_line(&r),
            "::1 - - [01/Jan/1970:00:00:00 +0000] \"GET /caf\u{e9}\\x85 HTTP/1.1\" 404 0 \"a\\\\b\" \"curl/8\\x0a\" 0\n"
        );
        r.peer = None;
        r.micros = u128::MAX;
        let line = format_line(&r);
        assert!(line.starts_with("- - - [01/Jan/1970"), "{line}");
        assert!(line.ends_with(&format!(" {}\n", u128::MAX)), "{line}");
        // The cached timestamp follows the clock.
        r.unix_time = 971_186_136;
        assert!(format_line(&r).contains("[10/Oct/2000:13:55:36 +0000]"));
    }

    #[test]
    fn combined_format_with_duration() {
        assert_eq!(
            format_line(&record("/a?b=\"c\"")),
            "127.0.0.1 - - [10/Oct/2000:13:55:36 +0000] \"GET /a?b=\\\"c\\\" HTTP/1.1\" 200 2326 \"-\" \"curl/8\\x0a\" 153\n"
        );
    }
}
