//! One exchange with a route's upstreams: pick one, send the rebuilt
//! request, parse the response with [`ResponseParser`], retry where that is
//! safe. Blocking I/O under one deadline for the whole exchange; it runs on
//! the route's fetch threads, never on a request worker.
//!
//! # Retries
//!
//! A request goes to another upstream (each is tried at most once) when
//! its connection could not be made (nothing was sent), or when it is
//! idempotent (RFC 9110 §9.2.2) and no byte of the response arrived. A
//! connection taken from the idle list that turns out closed (the write
//! fails, or the read ends before any byte) is a different case: the
//! upstream closed it while idle, a race every keep-alive client has
//! (RFC 9112 §9.3.1), so the request is sent once more on a new connection
//! whatever its method, and the upstream is not blamed. Once a byte of the
//! response has arrived, nothing is retried.
//!
//! # Errors
//!
//! 502 for a connection that failed, a response that broke the framing
//! rules or was cut short, or no upstream left to try; 504 when the
//! deadline passed (`--proxy-timeout`, counted from the first attempt).

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pool::{Lease, RoutePool, Stream};
use crate::http::upstream::{Parsed, ResponseHead, ResponseLimits, ResponseParser};

/// Bytes read from an upstream at a time.
const READ_BYTES: usize = 64 * 1024;

/// What to send, and the rules for it.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The whole request, head and body, as built by `forward`.
    pub request: Vec<u8>,
    /// Whether it is HEAD (its response has no body).
    pub head_request: bool,
    /// Whether it may be sent to another upstream after a failure.
    pub idempotent: bool,
    /// When the whole exchange must be over.
    pub deadline: Instant,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// The response head limits.
    pub limits: ResponseLimits,
    /// Body bytes buffered before the rest is handed over as a stream.
    pub buffer: usize,
}

/// Why an exchange gave no response: the status the client gets, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError {
    /// 502 or 504.
    pub status: u16,
    /// Short and lowercase, for the client's body and the log.
    pub reason: String,
}

impl FetchError {
    fn bad(reason: impl Into<String>) -> FetchError {
        FetchError {
            status: 502,
            reason: reason.into(),
        }
    }

    fn timeout() -> FetchError {
        FetchError {
            status: 504,
            reason: "the upstream did not answer in time".into(),
        }
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.reason)
    }
}

/// A response from an upstream.
#[derive(Debug)]
pub struct Fetched {
    /// Its head.
    pub head: ResponseHead,
    /// Its body, whole unless `rest` is set.
    pub body: Vec<u8>,
    /// The rest of a body longer than the buffer, still arriving.
    pub rest: Option<BodyStream>,
    /// From the first attempt to the end of the response (or of the
    /// buffered part, when there is a `rest`).
    pub took: Duration,
    /// The upstream that answered, for the log.
    pub upstream: String,
}

/// How one attempt failed, and whether the next may go.
enum Failure {
    /// Nothing reached the upstream, or the idle connection was stale:
    /// try again (`blame`: on another upstream, and mark this one down).
    Retry { blame: bool, error: FetchError },
    /// Only an idempotent request may be sent again, elsewhere.
    RetryIfIdempotent(FetchError),
    /// Final.
    Fail(FetchError),
}

/// Runs the exchange against the route's upstreams.
pub fn fetch(route: &Arc<RoutePool>, x: &Exchange) -> Result<Fetched, FetchError> {
    let started = Instant::now();
    let mut tried: Vec<usize> = Vec::new();
    let mut stale_retries = 1;
    let mut last = FetchError::bad("no upstream is available");
    // Bounded: each pass adds an upstream to `tried`, or spends the one
    // retry on a stale idle connection, or returns.
    for _ in 0..=route.peers().len() + 1 {
        if Instant::now() >= x.deadline {
            return Err(FetchError::timeout());
        }
        let Some((i, lease)) = route.lease(&tried, x.deadline) else {
            return Err(if Instant::now() >= x.deadline {
                FetchError::timeout()
            } else {
                last
            });
        };
        match attempt(&lease, x, started) {
            Ok(mut fetched) => {
                fetched.rest = fetched.rest.map(|rest| rest.with_lease(lease));
                return Ok(fetched);
            }
            Err(Failure::Retry {
                blame: false,
                error,
            }) if stale_retries > 0 => {
                stale_retries -= 1;
                last = error;
            }
            Err(Failure::Retry { error, .. }) => {
                blame(&lease, &error);
                tried.push(i);
                last = error;
            }
            Err(Failure::RetryIfIdempotent(error)) => {
                blame(&lease, &error);
                if !x.idempotent {
                    return Err(error);
                }
                tried.push(i);
                last = error;
            }
            Err(Failure::Fail(error)) => {
                blame(&lease, &error);
                return Err(error);
            }
        }
    }
    Err(last)
}

fn blame(lease: &Lease, error: &FetchError) {
    let peer = lease.peer();
    if !peer.is_down(Instant::now()) {
        log::warn!(
            "upstream {}: {}; skipped for {:?}",
            peer.upstream,
            error.reason,
            super::pool::FAIL_TIMEOUT
        );
    }
    lease.failed();
}

fn left(deadline: Instant) -> Result<Duration, FetchError> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(FetchError::timeout()),
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// One try on one upstream.
fn attempt(lease: &Lease, x: &Exchange, started: Instant) -> Result<Fetched, Failure> {
    let connect_timeout = x
        .connect_timeout
        .min(left(x.deadline).map_err(Failure::Fail)?);
    let (mut conn, reused) = lease.connect(connect_timeout).map_err(|e| {
        let error = if is_timeout(&e) && Instant::now() >= x.deadline {
            FetchError::timeout()
        } else {
            FetchError::bad(format!("cannot connect: {e}"))
        };
        Failure::Retry { blame: true, error }
    })?;
    let sent = left(x.deadline)
        .and_then(|t| {
            conn.set_timeouts(t)
                .map_err(|e| FetchError::bad(e.to_string()))
        })
        .and_then(|()| {
            conn.write_all(&x.request).map_err(|e| {
                if is_timeout(&e) {
                    FetchError::timeout()
                } else {
                    FetchError::bad(format!("cannot send the request: {e}"))
                }
            })
        });
    if let Err(error) = sent {
        lease.discard(conn);
        return Err(match (error.status, reused) {
            (504, _) => Failure::Fail(error),
            (_, true) => Failure::Retry {
                blame: false,
                error,
            },
            (_, false) => Failure::RetryIfIdempotent(error),
        });
    }
    let mut reader = Reader {
        parser: ResponseParser::new(x.limits, x.head_request),
        raw: Vec::with_capacity(16 * 1024),
        received: 0,
        deadline: x.deadline,
    };
    let mut body = Vec::new();
    let mut head = None;
    loop {
        match reader.next(&mut conn, &mut body) {
            Ok(Step::Head(h)) => head = Some(h),
            Ok(Step::Body) => {}
            Ok(Step::Done) => break,
            Err(error) => {
                lease.discard(conn);
                return Err(match (reader.received, reused, error.status) {
                    (_, _, 504) => Failure::Fail(error),
                    (0, true, _) => Failure::Retry {
                        blame: false,
                        error,
                    },
                    (0, false, _) => Failure::RetryIfIdempotent(error),
                    _ => Failure::Fail(error),
                });
            }
        }
        if let (Some(h), false) = (&head, body.len() <= x.buffer) {
            // Too large to buffer: the rest streams through, and the
            // caller hands this attempt's lease to it.
            return Ok(Fetched {
                head: h.clone(),
                body,
                rest: Some(BodyStream {
                    keep_alive: h.keep_alive,
                    conn: Some(conn),
                    reader,
                    lease: None,
                    pending: Vec::new(),
                    at: 0,
                    started,
                }),
                took: started.elapsed(),
                upstream: lease.peer().upstream.to_string(),
            });
        }
    }
    let Some(head) = head else {
        lease.discard(conn);
        return Err(Failure::Fail(FetchError::bad("no response head")));
    };
    let took = started.elapsed();
    // Bytes after the response mean the upstream and we disagree about
    // where it ended: that connection is not reused.
    if head.keep_alive && reader.raw.is_empty() {
        lease.release(conn);
    } else {
        lease.discard(conn);
    }
    lease.succeeded(took);
    Ok(Fetched {
        head,
        body,
        rest: None,
        took,
        upstream: lease.peer().upstream.to_string(),
    })
}

/// What one turn of the read loop found.
enum Step {
    Head(ResponseHead),
    Body,
    Done,
}

/// The reading half of an exchange: raw bytes not yet parsed, the parser,
/// the deadline.
struct Reader {
    parser: ResponseParser,
    raw: Vec<u8>,
    /// Bytes received from the upstream so far.
    received: usize,
    deadline: Instant,
}

impl Reader {
    /// Parses what is buffered, reading more when the parser asks.
    fn next(&mut self, conn: &mut Stream, body: &mut Vec<u8>) -> Result<Step, FetchError> {
        // Each pass parses (consuming bytes or finding an event) or reads;
        // a read that brings nothing ends the response one way or another,
        // and the deadline bounds the reads.
        loop {
            let (n, found) = self
                .parser
                .parse(&self.raw, body)
                .map_err(|e| FetchError::bad(e.to_string()))?;
            self.raw.drain(..n);
            match found {
                Parsed::Head(head) => return Ok(Step::Head(*head)),
                Parsed::Done => return Ok(Step::Done),
                Parsed::Interim(_) => continue,
                Parsed::NeedMore if n > 0 => return Ok(Step::Body),
                Parsed::NeedMore => {}
            }
            let timeout = left(self.deadline)?;
            conn.set_timeouts(timeout)
                .map_err(|e| FetchError::bad(e.to_string()))?;
            let start = self.raw.len();
            self.raw.resize(start + READ_BYTES, 0);
            let got = conn.read(&mut self.raw[start..]);
            self.raw.truncate(start + *got.as_ref().unwrap_or(&0));
            match got {
                Ok(0) => {
                    return match self.parser.eof() {
                        Ok(_) => Ok(Step::Done),
                        Err(e) if self.received == 0 => Err(FetchError::bad(format!(
                            "the upstream closed the connection without answering ({e})"
                        ))),
                        Err(e) => Err(FetchError::bad(e.to_string())),
                    }
                }
                Ok(n) => self.received += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Err(FetchError::timeout()),
                Err(e) => return Err(FetchError::bad(format!("cannot read the response: {e}"))),
            }
        }
    }
}

/// The rest of a large response body, read from the upstream as the
/// client's connection takes it: memory stays at one read's worth. An
/// error (the upstream failed, or the deadline passed) ends the client's
/// response without its last chunk, so the client sees it cut short
/// rather than a body that looks whole.
pub struct BodyStream {
    conn: Option<Stream>,
    reader: Reader,
    keep_alive: bool,
    /// The upstream's claim, held until the body is over.
    lease: Option<Lease>,
    /// Decoded bytes not yet handed over, from `at`.
    pending: Vec<u8>,
    at: usize,
    started: Instant,
}

impl fmt::Debug for BodyStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BodyStream")
    }
}

impl BodyStream {
    /// Holds `lease` (the upstream's request in flight, and where the
    /// connection goes back) until the body ends.
    pub fn with_lease(mut self, lease: Lease) -> BodyStream {
        self.lease = Some(lease);
        self
    }

    /// The body ended cleanly: the connection goes back if it may.
    fn finish(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        let Some(lease) = &self.lease else { return };
        if self.keep_alive && self.reader.raw.is_empty() {
            lease.release(conn);
        } else {
            lease.discard(conn);
        }
        lease.succeeded(self.started.elapsed());
    }
}

impl Drop for BodyStream {
    /// A body left unread (the client went away, or asked with HEAD) ends
    /// mid-message: its connection cannot be reused, and must be counted
    /// closed.
    fn drop(&mut self) {
        if let (Some(lease), Some(conn)) = (&self.lease, self.conn.take()) {
            lease.discard(conn);
        }
    }
}

impl Read for BodyStream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        // Each pass hands bytes over, ends, or decodes more; decoding
        // consumes upstream bytes until the deadline.
        loop {
            if self.at < self.pending.len() {
                let n = out.len().min(self.pending.len() - self.at);
                out[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
                self.at += n;
                return Ok(n);
            }
            self.pending.clear();
            self.at = 0;
            let Some(conn) = self.conn.as_mut() else {
                return Ok(0);
            };
            match self.reader.next(conn, &mut self.pending) {
                Ok(Step::Done) => self.finish(),
                Ok(_) => {}
                Err(e) => {
                    if let (Some(lease), Some(conn)) = (&self.lease, self.conn.take()) {
                        lease.discard(conn);
                        lease.failed();
                    }
                    log::debug!("upstream body cut short: {e}");
                    return Err(io::Error::other(e.reason));
                }
            }
        }
    }
}
