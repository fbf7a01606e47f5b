//! The access log: one line per response in the Combined Log Format, plus
//! the time taken in microseconds (Apache's `%D`), and for a response an
//! upstream produced, the upstream's time in microseconds after it
//! (nginx's `$upstream_response_time`), written to stderr or a file. Each line goes out in one `write` under a short lock, so lines from
//! different workers never interleave.
//!
//! A line that cannot be written (a full disk, a removed device) is
//! dropped: the access log never stops a response. The server log says so
//! at once, then at most once a second with the count dropped meanwhile,
//! and once more when lines go through again, as the accept loop does for
//! its own errors: a failing disk must not flood the journal.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::http::date::{Civil, MONTHS};

/// Where access lines go.
pub struct AccessLog {
    sink: Mutex<(Sink, Failures)>,
}

enum Sink {
    Stderr,
    File(PathBuf, File),
}

/// Failed writes, for reporting them at most once a second.
#[derive(Debug, Default)]
struct Failures {
    /// Lines dropped since writes last went through.
    dropped: u64,
    /// Lines dropped since the last report.
    unreported: u64,
    last_report: Option<Instant>,
}

/// What the server log should say after a write.
#[derive(Debug, PartialEq, Eq)]
enum Report {
    /// Writes fail: this many lines dropped since the last report,
    /// this one included.
    Failing(u64),
    /// Writes go through again, after this many lines were dropped.
    Recovered(u64),
}

/// The least time between two reports of failing writes.
const REPORT_EVERY: Duration = Duration::from_secs(1);

impl Failures {
    /// Records a write's outcome at `now`; returns what to report, if
    /// anything.
    fn record(&mut self, ok: bool, now: Instant) -> Option<Report> {
        if ok {
            let dropped = std::mem::take(&mut self.dropped);
            self.unreported = 0;
            self.last_report = None;
            return (dropped > 0).then_some(Report::Recovered(dropped));
        }
        self.dropped += 1;
        self.unreported += 1;
        if self
            .last_report
            .is_some_and(|t| now.duration_since(t) < REPORT_EVERY)
        {
            return None;
        }
        self.last_report = Some(now);
        Some(Report::Failing(std::mem::take(&mut self.unreported)))
    }
}

impl Sink {
    fn name(&self) -> String {
        match self {
            Sink::Stderr => "stderr".to_owned(),
            Sink::File(path, _) => path.display().to_string(),
        }
    }
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
        AccessLog {
            sink: Mutex::new((Sink::Stderr, Failures::default())),
        }
    }

    /// Logs to `path`, appending.
    pub fn file(path: &Path) -> io::Result<AccessLog> {
        let f = open_append(path)?;
        Ok(AccessLog {
            sink: Mutex::new((Sink::File(path.to_owned(), f), Failures::default())),
        })
    }

    /// Reopens the file (after logrotate moved it); a no-op for stderr.
    pub fn reopen(&self) -> io::Result<()> {
        let mut sink = crate::unwind::lock(&self.sink);
        if let (Sink::File(path, file), _) = &mut *sink {
            *file = open_append(path)?;
        }
        Ok(())
    }

    /// Writes one line. A failed write is dropped: the access log must never
    /// stop a response. The server log says so at most once a second (see
    /// the module doc).
    pub fn record(&self, r: &Record<'_>) {
        let line = format_line(r);
        let (result, report, name) = {
            let mut guard = crate::unwind::lock(&self.sink);
            let (sink, failures) = &mut *guard;
            let result = match sink {
                Sink::Stderr => io::stderr().write_all(line.as_bytes()),
                Sink::File(_, f) => f.write_all(line.as_bytes()),
            };
            let report = failures.record(result.is_ok(), Instant::now());
            let name = report.as_ref().map(|_| sink.name());
            (result, report, name)
        };
        // Logged with the lock released: the server log may be slow too.
        let name = name.unwrap_or_default();
        match (report, result) {
            (Some(Report::Failing(n)), Err(e)) => log::error!(
                "access log {name}: cannot write: {e}; {n} line(s) dropped since the last \
                 report (reported at most once a second)"
            ),
            (Some(Report::Recovered(n)), _) => {
                log::warn!("access log {name}: writing again; {n} line(s) were dropped")
            }
            _ => {}
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Quotes a header for a log line: `"` and `\` and control bytes escaped, as
/// Apache does, so a client cannot forge log lines.
fn quoted(out: &mut String, v: Option<&str>) {
    out.push('"');
    match v {
        None => out.push('-'),
        Some(v) => {
            for c in v.chars() {
                match c {
                    '"' | '\\' => {
                        out.push('\\');
                        out.push(c);
                    }
                    c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
                    c => out.push(c),
                }
            }
        }
    }
    out.push('"');
}

/// `127.0.0.1 - - [10/Oct/2000:13:55:36 +0000] "GET / HTTP/1.1" 200 2326 "-" "curl/8" 153`
pub fn format_line(r: &Record<'_>) -> String {
    let t = Civil::from_unix(r.unix_time);
    let host = r
        .peer
        .map_or_else(|| "-".to_owned(), |p| p.ip().to_string());
    let mut line = format!(
        "{host} - - [{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000] ",
        t.day,
        MONTHS[t.month as usize - 1],
        t.year,
        t.hour,
        t.minute,
        t.second
    );
    let request = format!("{} {} {}", r.method, r.target, r.version);
    quoted(&mut line, Some(&request));
    line.push_str(&format!(" {} {} ", r.status, r.bytes));
    quoted(&mut line, r.referer);
    line.push(' ');
    quoted(&mut line, r.user_agent);
    line.push_str(&format!(" {}", r.micros));
    if let Some(upstream) = r.upstream_micros {
        line.push_str(&format!(" {upstream}"));
    }
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_writes_are_reported_at_most_once_a_second_and_recovery_once() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut f = Failures::default();
        assert_eq!(f.record(true, ms(0)), None);
        assert_eq!(f.record(false, ms(0)), Some(Report::Failing(1)));
        for t in [1, 500, 999] {
            assert_eq!(f.record(false, ms(t)), None, "at {t} ms");
        }
        assert_eq!(f.record(false, ms(1000)), Some(Report::Failing(4)));
        assert_eq!(f.record(false, ms(1500)), None);
        assert_eq!(f.record(true, ms(1600)), Some(Report::Recovered(6)));
        assert_eq!(f.record(true, ms(1700)), None);
        // A new spell of failures is reported at once.
        assert_eq!(f.record(false, ms(1800)), Some(Report::Failing(1)));
    }

    /// Writes to a full device fail; each is dropped, and the line after
    /// it goes out whole. /dev/full answers every write with ENOSPC.
    #[test]
    fn a_full_disk_drops_lines_and_keeps_going() {
        let Ok(log) = AccessLog::file(Path::new("/dev/full")) else {
            return; // no /dev/full here
        };
        let r = Record {
            peer: None,
            unix_time: 0,
            method: "GET",
            target: "/",
            version: "HTTP/1.1",
            status: 200,
            bytes: 0,
            referer: None,
            user_agent: None,
            micros: 0,
            upstream_micros: None,
        };
        for _ in 0..3 {
            log.record(&r);
        }
        let guard = crate::unwind::lock(&log.sink);
        assert_eq!(guard.1.dropped, 3);
    }

    #[test]
    fn combined_format_with_duration() {
        let line = format_line(&Record {
            peer: "127.0.0.1:5000".parse().ok(),
            unix_time: 971_186_136,
            method: "GET",
            target: "/a?b=\"c\"",
            version: "HTTP/1.1",
            status: 200,
            bytes: 2326,
            referer: None,
            user_agent: Some("curl/8\n"),
            micros: 153,
            upstream_micros: None,
        });
        assert_eq!(
            line,
            "127.0.0.1 - - [10/Oct/2000:13:55:36 +0000] \"GET /a?b=\\\"c\\\" HTTP/1.1\" 200 2326 \"-\" \"curl/8\\x0a\" 153\n"
        );
    }

    #[test]
    fn an_upstream_time_comes_last() {
        let line = format_line(&Record {
            peer: None,
            unix_time: 971_186_136,
            method: "GET",
            target: "/p",
            version: "HTTP/1.1",
            status: 200,
            bytes: 5,
            referer: None,
            user_agent: None,
            micros: 503_210,
            upstream_micros: Some(501_007),
        });
        assert!(line.ends_with("\"-\" \"-\" 503210 501007\n"), "{line}");
    }
}
