//! Responses: what a handler builds, and its serialization. The serializer
//! alone decides framing (`Content-Length`, chunked, or close-delimited) and
//! `Connection`; handlers cannot set those, so a handler cannot desynchronize
//! the connection. Pure.

use std::borrow::Cow;
use std::fmt;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use super::date::with_http_date;
use super::later::{self, Later, Reply};
use super::request::Version;

/// The `Server` header value.
pub const SERVER: &str = concat!("corral/", env!("CARGO_PKG_VERSION"));

/// A response body.
pub enum Body {
    /// No body.
    Empty,
    /// Owned bytes.
    Bytes(Vec<u8>),
    /// Shared bytes, written without copying (a cached value).
    Shared(Arc<[u8]>),
    /// A range of shared bytes, written without copying (a `Range`
    /// request for part of a cached value). A range outside the bytes is
    /// sent as an empty body.
    SharedRange(Arc<[u8]>, std::ops::Range<usize>),
    /// Bytes that live for the whole program.
    Static(&'static [u8]),
    /// Bytes produced as they are read, sent chunked to HTTP/1.1 clients.
    Stream(Box<dyn Read + Send>),
}

impl Body {
    /// The length, when known before sending.
    pub fn len(&self) -> Option<u64> {
        self.as_slice().map(|b| b.len() as u64)
    }

    /// Whether the body is known to be empty.
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    /// The bytes, unless the body is a stream.
    pub fn as_slice(&self) -> Option<&[u8]> {
        match self {
            Body::Empty => Some(&[]),
            Body::Bytes(b) => Some(b),
            Body::Shared(b) => Some(b),
            Body::SharedRange(b, r) => Some(b.get(r.clone()).unwrap_or_default()),
            Body::Static(b) => Some(b),
            Body::Stream(_) => None,
        }
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.len() {
            Some(n) => write!(f, "Body({n} bytes)"),
            None => f.write_str("Body(stream)"),
        }
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Body {
        Body::Bytes(v)
    }
}

impl From<String> for Body {
    fn from(s: String) -> Body {
        Body::Bytes(s.into_bytes())
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Body {
        Body::Static(s.as_bytes())
    }
}

impl From<&'static [u8]> for Body {
    fn from(s: &'static [u8]) -> Body {
        Body::Static(s)
    }
}

impl From<Arc<[u8]>> for Body {
    fn from(s: Arc<[u8]>) -> Body {
        Body::Shared(s)
    }
}

/// A header field's name or value: most are literals, or built for one
/// response.
type Text = Cow<'static, str>;

/// Header fields checked once and shared by many responses: what a cached
/// entry sends on every hit, so that a hit neither copies nor checks them
/// again. The same fields as [`Response::add_header`] would keep.
#[derive(Debug, Default)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    /// Keeps the fields `add_header` would keep, in order, and drops the
    /// rest (`Connection` included: a shared field cannot close).
    pub fn new<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> Fields {
        let mut checked = Response::new(200);
        for (name, value) in fields {
            checked.add_header(name, value);
        }
        Fields(
            checked
                .headers
                .into_iter()
                .map(|(n, v)| (n.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The fields, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

/// An HTTP response built by a handler.
#[derive(Debug)]
pub struct Response {
    status: u16,
    /// Sent before `headers`.
    shared: Option<Arc<Fields>>,
    headers: Vec<(Text, Text)>,
    body: Body,
    close: bool,
    /// Set on a placeholder from [`Response::later`].
    later: Option<Later>,
    /// What a response to HEAD declares of the body it does not carry.
    head_length: HeadLength,
    /// Time spent on an upstream for it, for the access log.
    upstream_time: Option<Duration>,
}

/// The `Content-Length` of a response to HEAD, which carries no body to
/// measure: RFC 9110 §9.3.2 asks for the fields a GET would have had, so a
/// relayed HEAD must not claim `Content-Length: 0` for a body it never saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeadLength {
    /// The body's length, as for any response (the default).
    #[default]
    OfBody,
    /// This many bytes, the length the GET's body has.
    Known(u64),
    /// Not known: no `Content-Length` at all.
    Unknown,
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            shared: None,
            headers: Vec::new(),
            body: Body::Empty,
            close: false,
            later: None,
            head_length: HeadLength::OfBody,
            upstream_time: None,
        }
    }

    /// A placeholder to return from a handler whose answer comes later,
    /// and the [`Reply`] to send the answer through, from any thread. The
    /// server parks the connection until the answer comes (it holds no
    /// worker meanwhile), or until `--cache-wait-timeout` passes, when the
    /// client gets 503 with `Retry-After`. See [`super::later`].
    pub fn later() -> (Response, Reply) {
        let (waiting, reply) = later::pair();
        let mut placeholder = Response::new(0);
        placeholder.later = Some(waiting);
        (placeholder, reply)
    }

    /// The waiting side of a placeholder from [`Response::later`]; `None`
    /// for a response that is already whole.
    pub fn take_later(&mut self) -> Option<Later> {
        self.later.take()
    }

    /// Whether this is a placeholder from [`Response::later`].
    pub fn is_later(&self) -> bool {
        self.later.is_some()
    }

    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<Body>) -> Response {
        Response::new(status)
            .with_header("Content-Type", "text/plain; charset=utf-8")
            .with_body(body)
    }

    /// A short plain-text error: the reason phrase and an optional detail
    /// line, so a client sees why without reading logs.
    pub fn error(status: u16, detail: &str) -> Response {
        let mut text = format!("{status} {}\n", reason(status));
        if !detail.is_empty() {
            text.push_str(detail);
            text.push('\n');
        }
        Response::text(status, text)
    }

    /// Replaces the status code.
    pub fn with_status(mut self, status: u16) -> Response {
        self.status = status;
        self
    }

    /// Replaces the body.
    pub fn with_body(mut self, body: impl Into<Body>) -> Response {
        self.body = body.into();
        self
    }

    /// Adds a header field. Framing fields (`Content-Length`,
    /// `Transfer-Encoding`, `Connection`) are decided by the server and
    /// ignored here, except that `Connection: close` closes after sending.
    /// A name that is not a token or a value with CR, LF or NUL is dropped
    /// (and logged), so request data echoed into a header cannot split the
    /// response.
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.add_header(name, value);
        self
    }

    /// Adds a header field in place; see [`Response::with_header`].
    pub fn add_header(&mut self, name: &str, value: &str) {
        if name.is_empty() || !name.bytes().all(is_tchar) {
            log::warn!("dropping response header with invalid name {name:?}");
            return;
        }
        if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            log::warn!("dropping response header {name} with CR, LF or NUL in its value");
            return;
        }
        if name.eq_ignore_ascii_case("connection") {
            self.close |= value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"));
            return;
        }
        if name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
        {
            return;
        }
        self.headers
            .push((Cow::Owned(name.to_owned()), Cow::Owned(value.to_owned())));
    }

    /// Sends `fields` ahead of the fields added one by one (in place of any
    /// shared fields set before).
    pub fn with_fields(mut self, fields: Arc<Fields>) -> Response {
        self.shared = Some(fields);
        self
    }

    /// Adds a field the server itself makes, which needs no check: a
    /// literal name, and a literal or computed value free of CR, LF and NUL
    /// that is not a framing field.
    pub(crate) fn add_trusted(&mut self, name: &'static str, value: impl Into<Text>) {
        let value = value.into();
        debug_assert!(name.bytes().all(is_tchar));
        debug_assert!(!value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)));
        self.headers.push((Cow::Borrowed(name), value));
    }

    /// Sets the `Content-Length` this response declares when it answers a
    /// HEAD, in place of its body's length; ignored for other methods.
    pub fn with_head_length(mut self, length: HeadLength) -> Response {
        self.head_length = length;
        self
    }

    /// Records the time an upstream took to produce this response, which
    /// the access log shows (a proxied miss; a hit has none).
    pub fn with_upstream_time(mut self, took: Duration) -> Response {
        self.upstream_time = Some(took);
        self
    }

    /// The time an upstream took to produce it, if one did.
    pub fn upstream_time(&self) -> Option<Duration> {
        self.upstream_time
    }

    /// Asks for the connection to close after this response.
    pub fn with_close(mut self) -> Response {
        self.close = true;
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first value of header `name`, ignoring case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The header fields set by the handler, shared ones first.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        let shared = self.shared.iter().flat_map(|f| f.iter());
        shared.chain(self.headers.iter().map(|(n, v)| (&**n, &**v)))
    }

    /// The body.
    pub fn body(&self) -> &Body {
        &self.body
    }

    /// Takes the body out, leaving it empty.
    pub fn take_body(&mut self) -> Body {
        std::mem::replace(&mut self.body, Body::Empty)
    }

    /// Whether the handler asked to close the connection.
    pub fn wants_close(&self) -> bool {
        self.close
    }
}

/// `tchar` of RFC 9110 §5.6.2.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The reason phrase for a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// How the body that follows a serialized head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// Nothing follows the head.
    None,
    /// Exactly the body's bytes follow.
    Sized,
    /// The body follows in chunks, then a last chunk.
    Chunked,
    /// The body follows until the connection closes (streams to HTTP/1.0).
    UntilClose,
}

/// What the request said that shapes the response head.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo {
    /// The request's version.
    pub version: Version,
    /// Whether the request was HEAD (head only, no body).
    pub head_only: bool,
    /// Whether the connection may persist after this response.
    pub keep_alive: bool,
}

/// The serialized head and the decisions made while writing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadOutcome {
    /// How the body is sent.
    pub framing: BodyFraming,
    /// Whether the connection persists after the response.
    pub keep_alive: bool,
}

/// Appends the status line and header section of `resp` to `out`.
pub fn write_head(resp: &Response, req: RequestInfo, out: &mut Vec<u8>) -> HeadOutcome {
    let status = resp.status;
    // RFC 9110 §6.4.1: 1xx, 204 and 304 never carry content; HEAD gets the
    // fields a GET would have had, without the content (§9.3.2).
    let no_content = (100..200).contains(&status) || status == 204 || status == 304;
    let len = match (req.head_only, resp.head_length) {
        (true, HeadLength::Known(n)) => Some(n),
        (true, HeadLength::Unknown) => None,
        _ => resp.body.len(),
    };
    let mut framing = if no_content || req.head_only {
        BodyFraming::None
    } else {
        match len {
            Some(_) => BodyFraming::Sized,
            None if req.version == Version::Http11 => BodyFraming::Chunked,
            None => BodyFraming::UntilClose,
        }
    };
    let keep_alive = req.keep_alive && !resp.close && framing != BodyFraming::UntilClose;
    if framing == BodyFraming::UntilClose && req.head_only {
        framing = BodyFraming::None;
    }

    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut has_date = false;
    let mut has_server = false;
    for (n, v) in resp.headers() {
        has_date |= n.eq_ignore_ascii_case("date");
        has_server |= n.eq_ignore_ascii_case("server");
        push_field(out, n, v);
    }
    if !has_date {
        with_http_date(|d| push_field(out, "Date", d));
    }
    if !has_server {
        push_field(out, "Server", SERVER);
    }
    if !no_content {
        match (framing, len) {
            (BodyFraming::Chunked, _) => push_field(out, "Transfer-Encoding", "chunked"),
            (_, Some(n)) => {
                out.extend_from_slice(b"Content-Length: ");
                push_u64(out, n);
                out.extend_from_slice(b"\r\n");
            }
            (_, None) => {}
        }
    }
    if !keep_alive {
        push_field(out, "Connection", "close");
    } else if req.version == Version::Http10 {
        push_field(out, "Connection", "keep-alive");
    }
    out.extend_from_slice(b"\r\n");
    HeadOutcome {
        framing,
        keep_alive,
    }
}

fn push_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal (the access log's lines use it too).
pub(crate) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends the size line of a chunk of `len` bytes.
pub fn chunk_header(len: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(format!("{len:X}\r\n").as_bytes());
}

/// The last chunk and the empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The interim response sent when a client waits for `100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn head(
        resp: &Response,
        version: Version,
        head_only: bool,
        keep_alive: bool,
    ) -> (String, HeadOutcome) {
        let mut out = Vec::new();
        let o = write_head(
            resp,
            RequestInfo {
                version,
                head_only,
                keep_alive,
            },
            &mut out,
        );
        (String::from_utf8(out).unwrap(), o)
    }

    #[test]
    fn shared_fields_are_checked_once_and_sent_first() {
        let fields = Arc::new(Fields::new([
            ("Cache-Control", "max-age=60"),
            ("Bad Name", "x"),
            ("X-Split", "a\r\nSet-Cookie: b"),
            ("Content-Length", "9"),
            ("Connection", "close"),
            ("ETag", "\"e\""),
        ]));
        let kept: Vec<_> = fields.iter().collect();
        assert_eq!(kept, [("Cache-Control", "max-age=60"), ("ETag", "\"e\"")]);
        let mut resp = Response::text(200, "hello").with_fields(fields.clone());
        resp.add_header("X-Own", "1");
        assert_eq!(resp.header("etag"), Some("\"e\""));
        assert!(!resp.wants_close(), "a shared field cannot close");
        let names: Vec<_> = resp.headers().map(|(n, _)| n).collect();
        assert_eq!(names, ["Cache-Control", "ETag", "Content-Type", "X-Own"]);
        let (h, _) = head(&resp, Version::Http11, false, true);
        let at = |s: &str| h.find(s).unwrap_or_else(|| panic!("{s} in {h}"));
        assert!(at("Cache-Control: max-age=60\r\n") < at("X-Own: 1\r\n"));
        assert!(h.contains("\r\nContent-Length: 5\r\n"), "{h}");
        // Two responses, one copy of the fields.
        let again = Response::new(304).with_fields(fields.clone());
        assert_eq!(Arc::strong_count(&fields), 3);
        drop((resp, again));
    }

    #[test]
    fn sized_body_gets_content_length() {
        let (h, o) = head(&Response::text(200, "hello"), Version::Http11, false, true);
        assert!(h.starts_with("HTTP/1.1 200 OK\r\n"), "{h}");
        assert!(h.contains("\r\nContent-Length: 5\r\n"), "{h}");
        assert!(h.contains("\r\nDate: "), "{h}");
        assert!(h.contains("\r\nServer: corral/"), "{h}");
        assert!(!h.contains("Connection"), "{h}");
        assert!(h.ends_with("\r\n\r\n"));
        assert_eq!(
            o,
            HeadOutcome {
                framing: BodyFraming::Sized,
                keep_alive: true
            }
        );
    }

    #[test]
    fn head_request_keeps_length_but_no_body() {
        let (h, o) = head(&Response::text(200, "hello"), Version::Http11, true, true);
        assert!(h.contains("Content-Length: 5\r\n"));
        assert_eq!(o.framing, BodyFraming::None);
    }

    #[test]
    fn a_head_length_stands_in_for_the_body_only_for_head() {
        let relayed = |length| Response::new(200).with_head_length(length);
        let (h, o) = head(&relayed(HeadLength::Known(70)), Version::Http11, true, true);
        assert!(h.contains("Content-Length: 70\r\n"), "{h}");
        assert_eq!((o.framing, o.keep_alive), (BodyFraming::None, true));
        let (h, o) = head(&relayed(HeadLength::Unknown), Version::Http11, true, true);
        assert!(!h.contains("Content-Length") && !h.contains("Transfer-Encoding"));
        assert_eq!((o.framing, o.keep_alive), (BodyFraming::None, true));
        let (h, _) = head(
            &relayed(HeadLength::Known(70)),
            Version::Http11,
            false,
            true,
        );
        assert!(
            h.contains("Content-Length: 0\r\n"),
            "a GET sends its body: {h}"
        );
    }

    #[test]
    fn no_content_statuses_have_no_length() {
        for status in [204, 304] {
            let (h, o) = head(
                &Response::new(status).with_body("x"),
                Version::Http11,
                false,
                true,
            );
            assert!(!h.contains("Content-Length"), "{h}");
            assert_eq!(o.framing, BodyFraming::None);
        }
    }

    #[test]
    fn stream_is_chunked_for_11_and_close_delimited_for_10() {
        let r = Response::new(200).with_body(Body::Stream(Box::new(std::io::empty())));
        let (h, o) = head(&r, Version::Http11, false, true);
        assert!(h.contains("Transfer-Encoding: chunked\r\n"));
        assert_eq!(
            o,
            HeadOutcome {
                framing: BodyFraming::Chunked,
                keep_alive: true
            }
        );
        let (h, o) = head(&r, Version::Http10, false, true);
        assert!(h.contains("Connection: close\r\n") && !h.contains("Transfer-Encoding"));
        assert_eq!(
            o,
            HeadOutcome {
                framing: BodyFraming::UntilClose,
                keep_alive: false
            }
        );
    }

    #[test]
    fn close_and_keep_alive_headers() {
        let (h, o) = head(&Response::text(200, "x"), Version::Http11, false, false);
        assert!(h.contains("Connection: close\r\n") && !o.keep_alive);
        let (h, o) = head(&Response::text(200, "x"), Version::Http10, false, true);
        assert!(h.contains("Connection: keep-alive\r\n") && o.keep_alive);
        let r = Response::text(200, "x").with_header("Connection", "close");
        let (h, o) = head(&r, Version::Http11, false, true);
        assert!(h.contains("Connection: close\r\n") && !o.keep_alive);
    }

    #[test]
    fn handler_cannot_set_framing_or_split_the_response() {
        let r = Response::text(200, "abc")
            .with_header("Content-Length", "99")
            .with_header("Transfer-Encoding", "chunked")
            .with_header("X-Evil", "a\r\nSet-Cookie: x=1")
            .with_header("Bad Name", "v")
            .with_header("X-Ok", "fine");
        let (h, _) = head(&r, Version::Http11, false, true);
        assert!(h.contains("Content-Length: 3\r\n"), "{h}");
        assert!(!h.contains("99") && !h.contains("chunked") && !h.contains("Set-Cookie"));
        assert!(!h.contains("Bad Name") && h.contains("X-Ok: fine\r\n"));
    }

    #[test]
    fn numbers_format() {
        let mut v = Vec::new();
        push_u64(&mut v, 0);
        v.push(b' ');
        push_u64(&mut v, u64::MAX);
        assert_eq!(v, b"0 18446744073709551615");
        let mut c = Vec::new();
        chunk_header(255, &mut c);
        assert_eq!(c, b"FF\r\n");
    }
}
