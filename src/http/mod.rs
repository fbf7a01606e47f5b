//! The sans-IO HTTP/1.1 core. Nothing here sees a socket, a thread or a
//! clock: [`Conn`] takes received bytes and says what happened, and the
//! server, the tests and the fuzz targets all drive this same code.
//!
//! ```text
//!            bytes                         head complete, no body
//!   ┌──────► RecvHead ─────────────────────────────────────────┐
//!   │            │ head complete, body follows                  ▼
//!   │            ▼                   body complete        SendResponse
//!   │        RecvBody ────────────────────────────────────────► │
//!   │                                                           │
//!   └────────────── response sent, connection persists ◄────────┘
//!
//!   any protocol error ──► MustClose (reply with the error, then close)
//!   response sent, not persistent ──► MustClose
//! ```
//!
//! Progress rule: every call to [`Conn::poll`] either consumes buffered
//! bytes, returns an event, or asks for more while the buffer is under its
//! limit. Anything else is an error, so a driver loop cannot spin.

pub mod body;
pub mod date;
mod error;
pub mod later;
mod line;
pub mod request;
pub mod response;
pub mod upstream;
mod uri;

use std::net::SocketAddr;

use line::LineScan;

pub use body::{BodyLimits, Decoder};
pub use error::Error;
pub use later::{Later, Reply};
pub use request::{Framing, Head, HeadLimits, Headers, Request, Version};
pub use response::{Body, BodyFraming, Fields, HeadLength, HeadOutcome, RequestInfo, Response};

/// Limits for one connection's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus header section, in bytes (431, or 414 for the line).
    /// Empty lines before the request line count too.
    pub max_head_bytes: usize,
    /// Header field lines (431).
    pub max_headers: usize,
    /// Decoded body bytes (413).
    pub max_body_bytes: u64,
}

impl Default for Limits {
    /// The limits corral ships with (`--max-head-bytes`, `--max-headers`,
    /// `--max-body-bytes`), each after other servers' choices.
    fn default() -> Limits {
        Limits {
            // Request line plus header lines. Node's default `maxHeaderSize`
            // is 16KiB; nginx allows four 8KiB buffers
            // (`large_client_header_buffers 4 8k`), Apache 8190 bytes a line
            // (`LimitRequestLine`). 16KiB holds the cookies of real sites and
            // the 8000-octet request line RFC 9112 section 3 recommends
            // supporting.
            max_head_bytes: 16 * 1024,
            // Apache's `LimitRequestFields`, gunicorn's
            // `limit_request_fields` and hyper's default are all 100 (Node
            // allows 2000).
            max_headers: 100,
            // nginx's `client_max_body_size` default. Unlike nginx and
            // Apache, 0 means "no body at all", not "unlimited": a limit
            // copied from their configs fails closed.
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// What [`Conn::poll`] found.
// A request is moved out once per request; boxing it would add the
// allocation its parsing works to avoid.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Event {
    /// Nothing complete yet: read more bytes (see [`Conn::read_with`]).
    NeedMore,
    /// The head asked for `100-continue` and its body has not all arrived.
    /// The driver calls [`Conn::accept_body`] (and sends
    /// [`response::CONTINUE`]) if the body is wanted, or
    /// [`Conn::reject_body`] to answer without reading it.
    Continue,
    /// A complete request, body included.
    Request(Request),
    /// The peer broke the protocol: send [`Conn::error_response`] and close.
    Error(Error),
    /// The connection must close; nothing more will be read.
    Closed,
}

/// Where the connection is, for deadlines and parking decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Between requests with nothing buffered.
    Idle,
    /// Some bytes of a head have arrived.
    Head,
    /// The head is in; its body is arriving.
    Body,
    /// A request was delivered and awaits its response.
    Response,
    /// Nothing more will be read.
    Closed,
}

enum State {
    RecvHead,
    RecvBody {
        head: Box<Head>,
        decoder: Decoder,
        body: Vec<u8>,
        expect_pending: bool,
        /// Body bytes received so far, framing included.
        received: u64,
    },
    SendResponse {
        info: RequestInfo,
    },
    MustClose {
        error_info: Option<RequestInfo>,
    },
}

/// The receive buffer's first size: a typical head (a few hundred bytes)
/// or a short pipelined burst fits. It grows, by doubling, only for larger
/// heads or for bodies, so a connection that sends small requests never
/// pays for zeroing a large buffer.
const MIN_BUF_BYTES: usize = 4 * 1024;

/// How far the buffer grows while a body arrives: reads this large keep the
/// syscalls per megabyte few.
const BODY_BUF_BYTES: usize = 64 * 1024;

/// One connection's protocol state: the receive buffer and where the current
/// request stands.
pub struct Conn {
    limits: Limits,
    peer: Option<SocketAddr>,
    state: State,
    buf: Vec<u8>,
    /// `buf[start..end]` holds received bytes not yet consumed.
    start: usize,
    end: usize,
    /// How far the request line of the head arriving has been checked.
    line: LineScan,
    /// Offset from `start` where the search for the end of the head resumes,
    /// once the request line is in, so a head trickling in byte by byte is
    /// scanned once, not once a byte.
    scan: usize,
    /// The outcome of the head being sent, until [`Conn::response_sent`].
    sending: Option<HeadOutcome>,
}

impl Conn {
    /// A connection from `peer`, awaiting its first request.
    pub fn new(limits: Limits, peer: Option<SocketAddr>) -> Conn {
        Conn {
            limits,
            peer,
            state: State::RecvHead,
            buf: Vec::new(),
            start: 0,
            end: 0,
            line: LineScan::default(),
            scan: 0,
            sending: None,
        }
    }

    /// The peer's address, if known.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Where the connection stands.
    pub fn phase(&self) -> Phase {
        match self.state {
            State::RecvHead if self.start == self.end => Phase::Idle,
            State::RecvHead => Phase::Head,
            State::RecvBody { .. } => Phase::Body,
            State::SendResponse { .. } => Phase::Response,
            State::MustClose { .. } => Phase::Closed,
        }
    }

    /// Received bytes not yet consumed.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Bytes of the body being received that have arrived so far, chunk
    /// framing included; 0 outside a body. The connection loop's minimum
    /// body rate is measured with it.
    pub fn body_received(&self) -> u64 {
        match self.state {
            State::RecvBody { received, .. } => received,
            _ => 0,
        }
    }

    /// Lets `read` fill the free part of the receive buffer, and records the
    /// bytes it reports. The buffer never holds more than a head's limit plus
    /// one read, so memory per connection is bounded.
    pub fn read_with<E>(
        &mut self,
        read: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<usize, E> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let len = self.buf.len();
        if self.start > 0 && len - self.end < len / 4 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let cap = self.buf_capacity();
            let grown = (self.buf.len() * 2).clamp(MIN_BUF_BYTES, cap.max(MIN_BUF_BYTES));
            if grown > self.buf.len() {
                self.buf.resize(grown, 0);
            }
        }
        let n = read(&mut self.buf[self.end..])?;
        self.end += n.min(self.buf.len() - self.end);
        Ok(n)
    }

    /// The most the buffer may grow to: a whole head at its limit plus the
    /// 4 bytes that show it went over, or a body-sized read.
    fn buf_capacity(&self) -> usize {
        let head = self.limits.max_head_bytes + 4;
        match self.state {
            State::RecvBody { .. } => head.max(BODY_BUF_BYTES),
            _ => head,
        }
    }

    /// Frees the receive buffer while the connection is idle, so a parked
    /// keep-alive connection costs a file descriptor and a few words.
    pub fn shrink_idle(&mut self) {
        if self.start == self.end {
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
        }
    }

    /// Processes buffered bytes; see [`Event`].
    pub fn poll(&mut self) -> Event {
        match &mut self.state {
            State::RecvHead => self.poll_head(),
            State::RecvBody { .. } => self.poll_body(),
            State::SendResponse { .. } => Event::NeedMore,
            State::MustClose { .. } => Event::Closed,
        }
    }

    fn fail(&mut self, e: Error) -> Event {
        self.state = State::MustClose {
            error_info: Some(RequestInfo {
                version: Version::Http11,
                head_only: false,
                keep_alive: false,
            }),
        };
        Event::Error(e)
    }

    fn poll_head(&mut self) -> Event {
        let data = &self.buf[self.start..self.end];
        let max = self.limits.max_head_bytes;
        // The request line first, as far as it has come: bytes that cannot
        // begin one are refused at once, and a complete line is judged
        // before any field line arrives. Only the bytes within the head
        // limit are looked at, so that the verdict on a head that overflows
        // it is the same however its bytes arrive.
        let line = match self.line.scan(&data[..data.len().min(max)]) {
            Ok(Some(line)) => line,
            Ok(None) if data.len() > max => return self.fail(Error::UriTooLong),
            Ok(None) => return Event::NeedMore,
            Err(e) => return self.fail(e),
        };
        // Then the blank line that ends the head, searched for from the
        // request line's LF on.
        match find_head_end(data, self.scan.max(line.next - 1)) {
            Ok(len) if len > max => self.fail(Error::HeadTooLarge),
            Ok(len) => {
                let parsed = request::parse_head_after(
                    &data[..len],
                    &line,
                    HeadLimits {
                        max_headers: self.limits.max_headers,
                    },
                );
                self.start += len;
                self.reset_head();
                match parsed {
                    Ok(head) => self.start_body(head),
                    Err(e) => self.fail(e),
                }
            }
            Err(_) if data.len() > max => self.fail(Error::HeadTooLarge),
            Err(resume) => {
                self.scan = resume;
                Event::NeedMore
            }
        }
    }

    /// Forgets the head just parsed (or abandoned), for the next one.
    fn reset_head(&mut self) {
        self.line = LineScan::default();
        self.scan = 0;
    }

    fn start_body(&mut self, head: Head) -> Event {
        let decoder = match head.framing {
            Framing::None | Framing::Length(0) => return self.deliver(head, Vec::new()),
            // Refuse before reading: 413 and close (RFC 9110 §15.5.14).
            Framing::Length(n) if n > self.limits.max_body_bytes => {
                return self.fail(Error::BodyTooLarge)
            }
            Framing::Length(n) => Decoder::length(n),
            Framing::Chunked => Decoder::chunked(BodyLimits {
                max_body_bytes: self.limits.max_body_bytes,
                max_trailer_bytes: self.limits.max_head_bytes,
                max_trailers: self.limits.max_headers,
            }),
        };
        let expect_pending = head.expect_continue;
        // Reserve for a small body only: a client that announces a large
        // one and sends nothing must not make us allocate it.
        let capacity = match head.framing {
            Framing::Length(n) => n.min(64 * 1024) as usize,
            _ => 0,
        };
        self.state = State::RecvBody {
            head: Box::new(head),
            decoder,
            body: Vec::with_capacity(capacity),
            expect_pending,
            received: 0,
        };
        self.poll_body()
    }

    fn poll_body(&mut self) -> Event {
        let State::RecvBody {
            decoder,
            body,
            expect_pending,
            received,
            ..
        } = &mut self.state
        else {
            return Event::NeedMore;
        };
        let progress = match decoder.decode(&self.buf[self.start..self.end], body) {
            Ok(p) => p,
            Err(e) => return self.fail(e),
        };
        self.start += progress.consumed;
        *received += progress.consumed as u64;
        if !progress.done {
            if *expect_pending {
                *expect_pending = false;
                return Event::Continue;
            }
            return Event::NeedMore;
        }
        let State::RecvBody { head, body, .. } =
            std::mem::replace(&mut self.state, State::RecvHead)
        else {
            return Event::NeedMore;
        };
        self.deliver(*head, body)
    }

    fn deliver(&mut self, head: Head, body: Vec<u8>) -> Event {
        let info = RequestInfo {
            version: head.version,
            head_only: head.method == "HEAD",
            keep_alive: head.keep_alive,
        };
        self.state = State::SendResponse { info };
        Event::Request(Request::new(head, body, self.peer))
    }

    /// The head waiting on a `100-continue` decision, if any.
    pub fn pending_head(&self) -> Option<&Head> {
        match &self.state {
            State::RecvBody { head, .. } => Some(head),
            _ => None,
        }
    }

    /// The body is wanted: keep reading it. The driver sends
    /// [`response::CONTINUE`].
    pub fn accept_body(&mut self) {}

    /// The body is not wanted (the route does not exist, say): hand back the
    /// request without its body, to be answered and then closed, since the
    /// client may send the body anyway (RFC 9110 §10.1.1).
    pub fn reject_body(&mut self) -> Option<Request> {
        let State::RecvBody { head, .. } =
            std::mem::replace(&mut self.state, State::MustClose { error_info: None })
        else {
            return None;
        };
        let Event::Request(req) = self.deliver(*head, Vec::new()) else {
            return None;
        };
        if let State::SendResponse { info } = &mut self.state {
            info.keep_alive = false;
        }
        Some(req)
    }

    /// Serializes the head of the response to the request just delivered
    /// (or to the protocol error just reported) into `out`. `close` forces
    /// `Connection: close`, as during shutdown.
    pub fn write_head(&mut self, resp: &Response, close: bool, out: &mut Vec<u8>) -> HeadOutcome {
        let mut info = match &self.state {
            State::SendResponse { info } => *info,
            State::MustClose {
                error_info: Some(info),
            } => *info,
            _ => RequestInfo {
                version: Version::Http11,
                head_only: false,
                keep_alive: false,
            },
        };
        info.keep_alive &= !close;
        let outcome = response::write_head(resp, info, out);
        self.sending = Some(outcome);
        outcome
    }

    /// The response (head and body) has been written: start on the next
    /// request if the connection persists.
    pub fn response_sent(&mut self) {
        let keep_alive = self.sending.take().is_some_and(|o| o.keep_alive);
        self.state = match self.state {
            State::SendResponse { .. } if keep_alive => State::RecvHead,
            _ => State::MustClose { error_info: None },
        };
        self.reset_head();
    }

    /// The response that reports `e` to the peer.
    pub fn error_response(e: &Error) -> Response {
        Response::error(e.status(), &e.to_string()).with_close()
    }
}

/// Looks for the blank line that ends a head, starting at `from`. Returns
/// the head's length, or the offset to resume from once more bytes arrive.
/// Accepts LF as well as CRLF line ends (RFC 9112 §2.2), as httparse does.
fn find_head_end(data: &[u8], from: usize) -> Result<usize, usize> {
    let mut i = from;
    while let Some(off) = data
        .get(i..)
        .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
    {
        let lf = i + off;
        match (data.get(lf + 1), data.get(lf + 2)) {
            (Some(b'\n'), _) => return Ok(lf + 2),
            (Some(b'\r'), Some(b'\n')) => return Ok(lf + 3),
            (None, _) | (Some(b'\r'), None) => return Err(lf),
            _ => i = lf + 1,
        }
    }
    Err(data.len().max(from))
}

#[cfg(test)]
mod tests;
