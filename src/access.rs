//! The access log: one line per response in the Combined Log Format, plus
//! the time taken in microseconds (Apache's `%D`), and for a response an
//! upstream produced, the upstream's time in microseconds after it
//! (nginx's `$upstream_response_time`), written to stderr or a file. Each line goes out in one `write` under a short lock, so lines from
//! different workers never interleave.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::http::date::{Civil, MONTHS};

/// Where access lines go.
pub struct AccessLog {
    sink: Mutex<Sink>,
}

enum Sink {
    Stderr,
    File(PathBuf, File),
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
            sink: Mutex::new(Sink::Stderr),
        }
    }

    /// Logs to `path`, appending.
    pub fn file(path: &Path) -> io::Result<AccessLog> {
        let f = open_append(path)?;
        Ok(AccessLog {
            sink: Mutex::new(Sink::File(path.to_owned(), f)),
        })
    }

    /// Reopens the file (after logrotate moved it); a no-op for stderr.
    pub fn reopen(&self) -> io::Result<()> {
        let mut sink = crate::unwind::lock(&self.sink);
        if let Sink::File(path, file) = &mut *sink {
            *file = open_append(path)?;
        }
        Ok(())
    }

    /// Writes one line. A failed write is dropped: the access log must never
    /// stop a response.
    pub fn record(&self, r: &Record<'_>) {
        let line = format_line(r);
        let mut sink = crate::unwind::lock(&self.sink);
        let _ = match &mut *sink {
            Sink::Stderr => io::stderr().write_all(line.as_bytes()),
            Sink::File(_, f) => f.write_all(line.as_bytes()),
        };
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
