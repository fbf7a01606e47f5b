//! Upstream responses: the client side of the sans-IO core, for the proxy.
//! A [`ResponseParser`] takes the bytes an upstream sent and says what they
//! are: an interim response skipped, the head of the final response, body
//! bytes, or the end. It never sees a socket.
//!
//! ```text
//!            bytes              1xx head (skipped, counted)
//!   ────────► RecvHead ◄──────────────────┐
//!               │ │ └───────────────────────┘
//!               │ │ final head, no body (HEAD, 204, 304)
//!               │ └─────────────────────────────────────► Done
//!               │ final head with a body
//!               ▼            body complete
//!            RecvBody ──────────────────────────────────► Done
//!               │ read until close: the end of input completes it
//!               └────────────────────────────────────────► Done
//!
//!   any framing error ──► Failed (502 upstream, the connection closed)
//! ```
//!
//! Upstream bytes are parsed as strictly as a client's (RFC 9112 §6.3):
//!
//! - The head is found like a request's and is bounded by the same limits:
//!   bytes (`--max-head-bytes`) and field lines (`--max-headers`). httparse
//!   refuses obs-fold and whitespace before a colon in responses too; a NUL
//!   or DEL in a value is refused here.
//! - `Content-Length` together with `Transfer-Encoding` is an error, not
//!   "TE wins" (§6.3 rule 3 allows the recovery but warns it may be a
//!   response-splitting attempt; a proxy that guesses passes the guess on).
//!   So are a bad or conflicting `Content-Length`, any transfer coding but
//!   `chunked` alone, `Transfer-Encoding` in an HTTP/1.0 response (§6.1),
//!   and in a 1xx or 204 (§6.1: a server MUST NOT send it there).
//! - The body of a response to HEAD, and of any 1xx, 204 or 304, is empty
//!   whatever the fields say (§6.3 rule 1): what follows is not body.
//! - Chunked bodies go through the request decoder ([`Decoder`]), with its
//!   grammar and limits; trailers are checked and dropped.
//! - A response with neither field is read until the connection closes
//!   (§6.3 rule 8), and its connection is not reused.
//! - `101 Switching Protocols` is an error: corral never asks to upgrade.
//!   Other 1xx responses are skipped (RFC 9110 §15.2 requires a client to
//!   parse them), at most [`MAX_INTERIM`] of them.
//!
//! Progress rule, as for [`super::Conn`]: every call to
//! [`ResponseParser::parse`] consumes at least one byte, returns an event
//! other than [`Parsed::NeedMore`], or finds the input an incomplete head
//! under its limit. The fuzz target `upstream_response` checks it.

use std::fmt;

use super::body::{BodyLimits, Decoder};
use super::request::{content_length, trim_ows, Headers, Version};
use super::{find_head_end, Error};

/// Interim (1xx) responses skipped before the final one at most. An
/// upstream that sends them without end would otherwise be stopped only by
/// the proxy's deadline; a real one sends one or two (100, 103).
pub const MAX_INTERIM: usize = 8;

/// Limits on an upstream response's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseLimits {
    /// Status line plus header section, in bytes; each head on its own.
    pub max_head_bytes: usize,
    /// Header field lines (and chunked trailer lines).
    pub max_headers: usize,
}

/// How the body of a response is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body (HEAD, 1xx, 204, 304, or `Content-Length: 0`).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked.
    Chunked,
    /// Until the upstream closes the connection.
    UntilClose,
}

/// The head of an upstream's final response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code, 200 to 599.
    pub status: u16,
    /// The response's version.
    pub version: Version,
    /// The header fields, values trimmed.
    pub headers: Headers,
    /// How the body is delimited.
    pub framing: ResponseFraming,
    /// Whether the upstream lets the connection persist after this body
    /// (never for a body read until close).
    pub keep_alive: bool,
}

/// What a call to [`ResponseParser::parse`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// All it could use is consumed: read more.
    NeedMore,
    /// An interim response with this status was skipped.
    Interim(u16),
    /// The final response's head; its body follows (if it has one).
    Head(Box<ResponseHead>),
    /// The response is complete. Bytes after it are not part of it.
    Done,
}

/// Why an upstream's response is refused: always 502 to the client, and
/// the upstream connection closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadResponse {
    /// Not valid HTTP/1.1 framing; the text says what.
    Malformed(&'static str),
    /// The head is larger than the limit.
    HeadTooLarge,
    /// More header (or trailer) lines than the limit.
    TooManyHeaders,
    /// A transfer coding other than `chunked`.
    UnsupportedTransferCoding,
    /// A version other than HTTP/1.0 or 1.1.
    UnsupportedVersion,
    /// The connection ended before the response did.
    Truncated,
}

impl fmt::Display for BadResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadResponse::Malformed(what) => write!(f, "malformed response: {what}"),
            BadResponse::HeadTooLarge => f.write_str("response head too large"),
            BadResponse::TooManyHeaders => f.write_str("too many header fields in the response"),
            BadResponse::UnsupportedTransferCoding => {
                f.write_str("unsupported transfer coding in the response")
            }
            BadResponse::UnsupportedVersion => f.write_str("unsupported HTTP version"),
            BadResponse::Truncated => f.write_str("the response was cut short"),
        }
    }
}

impl std::error::Error for BadResponse {}

impl From<Error> for BadResponse {
    /// The chunked decoder's errors, in the response's terms.
    fn from(e: Error) -> BadResponse {
        match e {
            Error::Malformed(what) => BadResponse::Malformed(what),
            Error::HeadTooLarge | Error::UriTooLong => BadResponse::HeadTooLarge,
            Error::TooManyHeaders => BadResponse::TooManyHeaders,
            Error::UnsupportedTransferCoding => BadResponse::UnsupportedTransferCoding,
            Error::UnsupportedVersion => BadResponse::UnsupportedVersion,
            _ => BadResponse::Malformed("invalid body"),
        }
    }
}

enum State {
    RecvHead,
    RecvBody(Decoder),
    UntilClose,
    Done,
    Failed(BadResponse),
}

/// Parses one upstream response, for a request that was HEAD or not.
pub struct ResponseParser {
    limits: ResponseLimits,
    head_request: bool,
    state: State,
    /// Where the search for the end of the head resumes, so a head that
    /// trickles in is scanned once.
    scan: usize,
    interim: usize,
}

impl ResponseParser {
    /// A parser for the response to a request (`head_request` if it was
    /// HEAD, whose response has no body).
    pub fn new(limits: ResponseLimits, head_request: bool) -> ResponseParser {
        ResponseParser {
            limits,
            head_request,
            state: State::RecvHead,
            scan: 0,
            interim: 0,
        }
    }

    /// Whether the response is complete.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Parses what it can of `input`, appending body bytes to `body`.
    /// Returns how many bytes it consumed and what it found. Once done,
    /// it consumes nothing and says [`Parsed::Done`] again; once failed, it
    /// returns the same error again.
    pub fn parse(
        &mut self,
        input: &[u8],
        body: &mut Vec<u8>,
    ) -> Result<(usize, Parsed), BadResponse> {
        match self.step(input, body) {
            Ok(found) => Ok(found),
            Err(e) => {
                self.state = State::Failed(e.clone());
                Err(e)
            }
        }
    }

    fn step(&mut self, input: &[u8], body: &mut Vec<u8>) -> Result<(usize, Parsed), BadResponse> {
        match &mut self.state {
            State::RecvHead => self.head(input),
            State::RecvBody(decoder) => {
                let progress = decoder.decode(input, body)?;
                if progress.done {
                    self.state = State::Done;
                    return Ok((progress.consumed, Parsed::Done));
                }
                Ok((progress.consumed, Parsed::NeedMore))
            }
            State::UntilClose => {
                body.extend_from_slice(input);
                Ok((input.len(), Parsed::NeedMore))
            }
            State::Done => Ok((0, Parsed::Done)),
            State::Failed(e) => Err(e.clone()),
        }
    }

    /// The upstream closed the connection: that ends a body read until
    /// close, and cuts anything else short.
    pub fn eof(&mut self) -> Result<Parsed, BadResponse> {
        match &self.state {
            State::UntilClose | State::Done => {
                self.state = State::Done;
                Ok(Parsed::Done)
            }
            State::Failed(e) => Err(e.clone()),
            _ => {
                self.state = State::Failed(BadResponse::Truncated);
                Err(BadResponse::Truncated)
            }
        }
    }

    fn head(&mut self, input: &[u8]) -> Result<(usize, Parsed), BadResponse> {
        // A status line starts at once: the empty lines a server skips
        // before a request line (RFC 9112 §2.2) are not allowed here.
        if matches!(input.first(), Some(b'\r' | b'\n')) {
            return Err(BadResponse::Malformed("empty line before the status line"));
        }
        let len = match find_head_end(input, self.scan) {
            Ok(len) => len,
            Err(_) if input.len() > self.limits.max_head_bytes => {
                return Err(BadResponse::HeadTooLarge)
            }
            Err(resume) => {
                self.scan = resume;
                return Ok((0, Parsed::NeedMore));
            }
        };
        if len > self.limits.max_head_bytes {
            return Err(BadResponse::HeadTooLarge);
        }
        self.scan = 0;
        let head = parse_head(&input[..len], self.limits.max_headers, self.head_request)?;
        if head.status < 200 {
            self.interim += 1;
            if self.interim > MAX_INTERIM {
                return Err(BadResponse::Malformed("too many interim responses"));
            }
            return Ok((len, Parsed::Interim(head.status)));
        }
        self.state = match head.framing {
            ResponseFraming::None | ResponseFraming::Length(0) => State::Done,
            ResponseFraming::Length(n) => State::RecvBody(Decoder::length(n)),
            ResponseFraming::Chunked => State::RecvBody(Decoder::chunked(BodyLimits {
                // The proxy streams what it cannot store, so the body has
                // no limit of its own here; the trailers have the head's.
                max_body_bytes: u64::MAX,
                max_trailer_bytes: self.limits.max_head_bytes,
                max_trailers: self.limits.max_headers,
            })),
            ResponseFraming::UntilClose => State::UntilClose,
        };
        Ok((len, Parsed::Head(Box::new(head))))
    }
}

/// Header slots on the stack; more are allocated only for a head that
/// needs them, as for requests.
const STACK_HEADERS: usize = 32;

/// Parses a complete response head: `buf` holds the status line, the field
/// lines and the empty line that ends them.
pub fn parse_head(
    buf: &[u8],
    max_headers: usize,
    head_request: bool,
) -> Result<ResponseHead, BadResponse> {
    let mut stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
    match parse_into(
        buf,
        &mut stack[..max_headers.min(STACK_HEADERS)],
        head_request,
    ) {
        Err(BadResponse::TooManyHeaders) if max_headers > STACK_HEADERS => parse_into(
            buf,
            &mut vec![httparse::EMPTY_HEADER; max_headers],
            head_request,
        ),
        result => result,
    }
}

fn parse_into<'b>(
    buf: &'b [u8],
    slots: &mut [httparse::Header<'b>],
    head_request: bool,
) -> Result<ResponseHead, BadResponse> {
    let mut resp = httparse::Response::new(slots);
    let status = resp.parse(buf).map_err(|e| match e {
        httparse::Error::Version => BadResponse::UnsupportedVersion,
        httparse::Error::TooManyHeaders => BadResponse::TooManyHeaders,
        httparse::Error::HeaderName => BadResponse::Malformed("invalid field name"),
        httparse::Error::HeaderValue => BadResponse::Malformed("invalid field value"),
        httparse::Error::NewLine => BadResponse::Malformed("invalid line ending"),
        httparse::Error::Status | httparse::Error::Token => {
            BadResponse::Malformed("invalid status line")
        }
    })?;
    if status.is_partial() {
        return Err(BadResponse::Malformed("incomplete head"));
    }
    let version = match resp.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => return Err(BadResponse::UnsupportedVersion),
    };
    let code = resp.code.unwrap_or_default();
    // RFC 9110 §15: three digits, the first 1 to 5.
    if !(100..600).contains(&code) {
        return Err(BadResponse::Malformed("status code out of range"));
    }
    if code == 101 {
        return Err(BadResponse::Malformed("101 Switching Protocols unasked"));
    }
    let mut headers = Headers::new();
    for h in resp.headers.iter() {
        if h.value.iter().any(|&b| b == 0 || b == 0x7f) {
            return Err(BadResponse::Malformed("control character in field value"));
        }
        headers.push(h.name, trim_ows(h.value));
    }
    let framing = framing(code, version, &headers, head_request)?;
    let keep_alive = framing != ResponseFraming::UntilClose
        && match version {
            Version::Http11 => !headers.has_token("connection", "close"),
            Version::Http10 => {
                headers.has_token("connection", "keep-alive")
                    && !headers.has_token("connection", "close")
            }
        };
    Ok(ResponseHead {
        status: code,
        version,
        headers,
        framing,
        keep_alive,
    })
}

/// RFC 9112 §6.3, for a response, refusing every ambiguous combination.
fn framing(
    status: u16,
    version: Version,
    headers: &Headers,
    head_request: bool,
) -> Result<ResponseFraming, BadResponse> {
    let has_te = headers.get_all("transfer-encoding").next().is_some();
    let has_cl = headers.get_all("content-length").next().is_some();
    if has_te && ((100..200).contains(&status) || status == 204) {
        return Err(BadResponse::Malformed("Transfer-Encoding in a 1xx or 204"));
    }
    if has_te && has_cl {
        return Err(BadResponse::Malformed(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    if has_te && version == Version::Http10 {
        return Err(BadResponse::Malformed("Transfer-Encoding in HTTP/1.0"));
    }
    // Checked even where it does not frame the body (HEAD, 304), so a
    // broken upstream shows up the same whatever the request was.
    // The same check as a request's (§6.3 rule 5: identical values may
    // count as one; anything else is an error).
    let length = content_length(headers)?;
    let te = if has_te {
        let mut codings = headers
            .get_all("transfer-encoding")
            .flat_map(|v| v.split(|&b| b == b','))
            .map(trim_ows);
        match (codings.next(), codings.next()) {
            (Some(c), None) if c.eq_ignore_ascii_case(b"chunked") => true,
            _ => return Err(BadResponse::UnsupportedTransferCoding),
        }
    } else {
        false
    };
    // Rule 1: these never have a body, whatever the fields say.
    if head_request || status < 200 || status == 204 || status == 304 {
        return Ok(ResponseFraming::None);
    }
    Ok(match (te, length) {
        (true, _) => ResponseFraming::Chunked,
        (false, Some(0)) => ResponseFraming::None,
        (false, Some(n)) => ResponseFraming::Length(n),
        (false, None) => ResponseFraming::UntilClose,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::upstream::{drive, Outcome};

    const LIMITS: ResponseLimits = ResponseLimits {
        max_head_bytes: 128,
        max_headers: 4,
    };

    /// Appended in the third run: must change nothing, or, for a body read
    /// until close, be part of it.
    const NEXT: &[u8] = b"HTTP/1.1 200 OK\r\n\r\n";

    enum Want {
        /// A final response: status, framing, keep-alive, body.
        Resp(u16, ResponseFraming, bool, &'static [u8]),
        /// Complete, after `n` interim responses.
        AfterInterim(usize, u16, &'static [u8]),
        /// Not complete yet, this much body so far.
        Partial(&'static [u8]),
        Fail(BadResponse),
    }
    use Want::*;

    /// Runs one case whole, one byte at a time, and with [`NEXT`]
    /// appended; all three must give what it wants.
    fn check(name: &str, head_request: bool, input: &[u8], want: &Want) {
        // The connection ends after the input, except for a response that
        // is to stay incomplete.
        let eof = !matches!(want, Partial(_));
        let run = |pieces: &[&[u8]]| drive(LIMITS, head_request, pieces, eof);
        let whole = run(&[input]);
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        let each = run(&bytes);
        assert_eq!(whole, each, "{name}: whole and byte by byte differ");
        let with = [input, NEXT].concat();
        let trailing = run(&[&with]);
        match want {
            Resp(status, framing, keep_alive, body) => {
                let head = whole
                    .head
                    .as_ref()
                    .unwrap_or_else(|| panic!("{name}: {whole:?}"));
                assert_eq!(
                    (head.status, head.framing, head.keep_alive),
                    (*status, *framing, *keep_alive),
                    "{name}"
                );
                assert_eq!(whole.body, *body, "{name}: body");
                assert_eq!(whole.error, None, "{name}");
                assert!(whole.done, "{name}: not done");
                assert_eq!(whole.interim, 0, "{name}");
                if *framing == ResponseFraming::UntilClose {
                    assert_eq!(trailing.body, [*body, NEXT].concat(), "{name}: trailing");
                } else {
                    assert_eq!(trailing.body, *body, "{name}: trailing");
                    assert_eq!(trailing.left, NEXT.len(), "{name}: trailing left over");
                }
            }
            AfterInterim(n, status, body) => {
                assert_eq!(whole.interim, *n, "{name}");
                assert_eq!(
                    whole.head.as_ref().map(|h| h.status),
                    Some(*status),
                    "{name}"
                );
                assert_eq!(whole.body, *body, "{name}");
                assert!(whole.done, "{name}");
                assert_eq!(trailing.left, NEXT.len(), "{name}: trailing");
            }
            Partial(body) => {
                assert!(!whole.done && whole.error.is_none(), "{name}: {whole:?}");
                assert_eq!(whole.body, *body, "{name}");
            }
            Fail(e) => {
                assert_eq!(whole.error.as_ref(), Some(e), "{name}: {whole:?}");
                assert_eq!(trailing.error.as_ref(), Some(e), "{name}: trailing");
            }
        }
    }

    fn check_all(head_request: bool, cases: &[(&str, &[u8], Want)]) {
        for (name, input, want) in cases {
            check(name, head_request, input, want);
        }
    }

    use ResponseFraming::{Chunked, Length, UntilClose};

    #[rustfmt::skip]
    const VALID: &[(&str, &[u8], Want)] = &[
        ("length", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", Resp(200, Length(5), true, b"hello")),
        ("zero length", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", Resp(200, ResponseFraming::None, true, b"")),
        ("same length twice", b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nhi", Resp(200, Length(2), true, b"hi")),
        ("chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nT: x\r\n\r\n", Resp(200, Chunked, true, b"hello")),
        ("chunked, any case", b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n0\r\n\r\n", Resp(200, Chunked, true, b"")),
        ("until close", b"HTTP/1.1 200 OK\r\n\r\nall of it", Resp(200, UntilClose, false, b"all of it")),
        ("close", b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx", Resp(404, Length(1), false, b"x")),
        ("1.0 closes", b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", Resp(200, Length(1), false, b"x")),
        ("1.0 keep-alive", b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx", Resp(200, Length(1), true, b"x")),
        ("204 ignores length", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", Resp(204, ResponseFraming::None, true, b"")),
        ("304 keeps length", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: \"a\"\r\n\r\n", Resp(304, ResponseFraming::None, true, b"")),
        ("304 chunked field", b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", Resp(304, ResponseFraming::None, true, b"")),
        ("no reason phrase", b"HTTP/1.1 503 \r\nContent-Length: 0\r\n\r\n", Resp(503, ResponseFraming::None, true, b"")),
        ("bare LF lines", b"HTTP/1.1 200 OK\nContent-Length: 1\n\nx", Resp(200, Length(1), true, b"x")),
        ("599", b"HTTP/1.1 599 Odd\r\nContent-Length: 0\r\n\r\n", Resp(599, ResponseFraming::None, true, b"")),
    ];

    #[rustfmt::skip]
    const INTERIM: &[(&str, &[u8], Want)] = &[
        ("100 then 200", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", AfterInterim(1, 200, b"x")),
        ("103 with fields", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", AfterInterim(1, 204, b"")),
    ];

    #[rustfmt::skip]
    const INVALID: &[(&str, &[u8], Want)] = &[
        ("CL and TE", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", Fail(BadResponse::Malformed("both Content-Length and Transfer-Encoding"))),
        ("conflicting CL", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", Fail(BadResponse::Malformed("conflicting Content-Length"))),
        ("signed CL", b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello", Fail(BadResponse::Malformed("invalid Content-Length"))),
        ("empty CL", b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n", Fail(BadResponse::Malformed("invalid Content-Length"))),
        ("bad CL on 304", b"HTTP/1.1 304 Not Modified\r\nContent-Length: x\r\n\r\n", Fail(BadResponse::Malformed("invalid Content-Length"))),
        ("gzip coding", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Fail(BadResponse::UnsupportedTransferCoding)),
        ("TE in 1.0", b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", Fail(BadResponse::Malformed("Transfer-Encoding in HTTP/1.0"))),
        ("TE in 204", b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n", Fail(BadResponse::Malformed("Transfer-Encoding in a 1xx or 204"))),
        ("bad chunk", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", Fail(BadResponse::Malformed("chunk size line must end with CRLF"))),
        ("101", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", Fail(BadResponse::Malformed("101 Switching Protocols unasked"))),
        ("HTTP/2", b"HTTP/2.0 200 OK\r\n\r\n", Fail(BadResponse::UnsupportedVersion)),
        ("status 600", b"HTTP/1.1 600 No\r\n\r\n", Fail(BadResponse::Malformed("status code out of range"))),
        ("status 099", b"HTTP/1.1 099 No\r\n\r\n", Fail(BadResponse::Malformed("status code out of range"))),
        ("two-digit status", b"HTTP/1.1 20 OK\r\n\r\n", Fail(BadResponse::Malformed("invalid status line"))),
        ("obs-fold", b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n", Fail(BadResponse::Malformed("invalid field name"))),
        ("space before colon", b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n", Fail(BadResponse::Malformed("invalid field name"))),
        ("NUL in value", b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n", Fail(BadResponse::Malformed("invalid field value"))),
        ("DEL in value", b"HTTP/1.1 200 OK\r\nX: a\x7fb\r\n\r\n", Fail(BadResponse::Malformed("invalid field value"))),
        ("leading empty line", b"\r\nHTTP/1.1 200 OK\r\n\r\n", Fail(BadResponse::Malformed("empty line before the status line"))),
        ("too many fields", b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n", Fail(BadResponse::TooManyHeaders)),
        ("too many interim", b"HTTP/1.1 100 A\r\n\r\nHTTP/1.1 100 A\r\n\r\nHTTP/1.1 100 A\r\n\r\nHTTP/1.1 100 A\r\n\r\nHTTP/1.1 100 A\r\n\r\nHTTP/1.1 100 A\r\n\r\nHTTP/1.1 100 A\r\n\r\nHTTP/1.1 100 A\r\n\r\nHTTP/1.1 100 A\r\n\r\n", Fail(BadResponse::Malformed("too many interim responses"))),
        ("not HTTP", b"SSH-2.0-OpenSSH_9.6\r\n\r\n", Fail(BadResponse::UnsupportedVersion)),
    ];

    #[rustfmt::skip]
    const CUT: &[(&str, &[u8], Want)] = &[
        ("partial head", b"HTTP/1.1 200 OK\r\nContent-Le", Partial(b"")),
        ("partial length body", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", Partial(b"hel")),
        ("partial chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", Partial(b"hel")),
    ];

    #[test]
    fn valid_responses() {
        check_all(false, VALID);
    }

    #[test]
    fn interim_responses_are_skipped() {
        check_all(false, INTERIM);
    }

    #[test]
    fn invalid_responses() {
        check_all(false, INVALID);
    }

    #[test]
    fn responses_cut_short() {
        check_all(false, CUT);
        // The end of the connection makes them errors, and ends a body
        // read until close.
        for (name, input, _) in CUT {
            let run = drive(LIMITS, false, &[input], true);
            assert_eq!(run.error, Some(BadResponse::Truncated), "{name}");
        }
        let run = drive(LIMITS, false, &[b"HTTP/1.1 200 OK\r\n\r\nab"], true);
        assert!(run.done && run.error.is_none() && run.body == b"ab");
        let nothing = drive(LIMITS, false, &[b""], true);
        assert_eq!(nothing.error, Some(BadResponse::Truncated));
    }

    #[test]
    fn head_requests_have_no_body() {
        check_all(
            true,
            &[
                (
                    "length",
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                    Resp(200, ResponseFraming::None, true, b""),
                ),
                (
                    "chunked",
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                    Resp(200, ResponseFraming::None, true, b""),
                ),
                (
                    "neither",
                    b"HTTP/1.1 200 OK\r\n\r\n",
                    Resp(200, ResponseFraming::None, true, b""),
                ),
            ],
        );
    }

    #[test]
    fn head_limit() {
        let head = |len: usize| {
            let start = "HTTP/1.1 200 OK\r\nX: ";
            let end = "\r\nContent-Length: 0\r\n\r\n";
            format!("{start}{}{end}", "p".repeat(len - start.len() - end.len()))
        };
        let at = head(LIMITS.max_head_bytes);
        let over = head(LIMITS.max_head_bytes + 1);
        check(
            "at limit",
            false,
            at.as_bytes(),
            &Resp(200, ResponseFraming::None, true, b""),
        );
        check(
            "over",
            false,
            over.as_bytes(),
            &Fail(BadResponse::HeadTooLarge),
        );
        // An endless line fails once past the limit, not at the end.
        let endless = vec![b'H'; LIMITS.max_head_bytes + 1];
        let run: Outcome = drive(LIMITS, false, &[&endless], true);
        assert_eq!(run.error, Some(BadResponse::HeadTooLarge));
    }

    #[test]
    fn more_fields_than_fit_on_the_stack() {
        let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..40 {
            head.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        assert_eq!(
            parse_head(&head, 40, false).map(|h| h.headers.len()),
            Ok(40)
        );
        assert_eq!(
            parse_head(&head, 39, false),
            Err(BadResponse::TooManyHeaders)
        );
    }
}
