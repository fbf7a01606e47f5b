//! Request heads: the request line checked by the `line` module, the
//! field lines parsed with `httparse` into an owned [`Head`], then checked
//! against the rules for Host (RFC 9112 §3.2) and framing (§6). Pure: bytes
//! in, a verdict out.

use std::fmt;
use std::net::SocketAddr;

use super::line::{request_line, LineSpan, RequestLine};
use super::uri::{self, Use};
use super::Error;
use crate::forwarded::Forwarded;

/// The protocol version of a request. Only HTTP/1.0 and HTTP/1.1 are served
/// (a later HTTP/1.x as HTTP/1.1); another major version is answered with
/// 505.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: close after each response unless the client asks to keep alive.
    Http10,
    /// HTTP/1.1: persistent by default.
    Http11,
}

impl Version {
    /// The version as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// How the body of a request is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: neither Content-Length nor Transfer-Encoding was sent.
    None,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// A chunked body follows the head.
    Chunked,
}

/// Limits applied while parsing a head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// The most header field lines accepted.
    pub max_headers: usize,
}

/// The header fields of a request, in the order received. Lookups ignore
/// ASCII case, as field names are case-insensitive (RFC 9110 §5.1).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// Every name and value, back to back: one allocation for a head's
    /// fields, where a `String` and a `Vec` each took two a field.
    bytes: Vec<u8>,
    /// Each field line's place in `bytes`.
    spans: Vec<Span>,
}

/// A field line in [`Headers::bytes`]: its name at `name..value`, its
/// value at `value..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    name: usize,
    value: usize,
    end: usize,
}

impl Headers {
    /// An empty set of fields.
    pub fn new() -> Headers {
        Headers::default()
    }

    /// Appends a field line.
    pub fn push(&mut self, name: &str, value: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.extend_from_slice(value);
        self.spans.push(Span {
            name: start,
            value: start + name.len(),
            end: self.bytes.len(),
        });
    }

    /// The first value of `name` as text, or `None` if absent or not UTF-8.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_bytes(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The first value of `name` as raw bytes.
    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        self.spans
            .iter()
            .find(|s| self.name_bytes(s).eq_ignore_ascii_case(name.as_bytes()))
            .map(|s| &self.bytes[s.value..s.end])
    }

    /// Every value of `name`, in the order received.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.spans
            .iter()
            .filter(move |s| self.name_bytes(s).eq_ignore_ascii_case(name.as_bytes()))
            .map(|s| &self.bytes[s.value..s.end])
    }

    /// Whether any field line named `name` contains `token` in its
    /// comma-separated list, ignoring case (as for `Connection: close`).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name)
            .flat_map(|v| v.split(|&b| b == b','))
            .any(|t| trim_ows(t).eq_ignore_ascii_case(token.as_bytes()))
    }

    /// All field lines as (name, value) pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.spans.iter().map(|s| {
            // A name went in as a `&str` and is sliced at its own bounds.
            let name = std::str::from_utf8(self.name_bytes(s)).unwrap_or_default();
            (name, &self.bytes[s.value..s.end])
        })
    }

    /// The number of field lines.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are no field lines.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    fn name_bytes(&self, s: &Span) -> &[u8] {
        &self.bytes[s.name..s.value]
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(n, v)| (n, String::from_utf8_lossy(v))))
            .finish()
    }
}

/// A parsed and validated request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The method token, case-sensitive (RFC 9110 §9.1).
    pub method: String,
    /// The request target exactly as sent.
    pub target: String,
    /// The protocol version.
    pub version: Version,
    /// The header fields.
    pub headers: Headers,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the client allows the connection to persist after this request.
    pub keep_alive: bool,
    /// Whether the client sent `Expect: 100-continue`.
    pub expect_continue: bool,
}

impl Head {
    /// The path part of the target (for absolute-form, the path after the
    /// authority; for asterisk-form, `*`), not percent-decoded.
    pub fn path(&self) -> &str {
        self.split_target().0
    }

    /// The query part of the target, without the `?`.
    pub fn query(&self) -> Option<&str> {
        self.split_target().1
    }

    /// The host the request is for, port included if sent: the authority
    /// of an absolute-form target, which wins over the Host field (RFC 9112
    /// §3.2.2), or else the Host field, which may be empty. `None` only
    /// for an HTTP/1.0 request without Host.
    pub fn host(&self) -> Option<&str> {
        match uri::split_absolute(&self.target) {
            Some((authority, _)) => Some(authority),
            None => self.headers.get("host"),
        }
    }

    /// Splits the target into its raw path and query.
    fn split_target(&self) -> (&str, Option<&str>) {
        let target = self.target.as_str();
        let rest = match uri::split_absolute(target) {
            // RFC 9112 §3.2.4: an OPTIONS with an absolute-form target
            // that has no path and no query asks about the server as a
            // whole, as `OPTIONS *` does (the last proxy would send that).
            Some((_, "")) if self.method == "OPTIONS" => "*",
            Some((_, rest)) => rest,
            None => target,
        };
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        (if path.is_empty() { "/" } else { path }, query)
    }
}

/// Optional whitespace (SP / HTAB) trimmed from both ends (RFC 9110 §5.6.3).
pub(crate) fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Parses a complete request head: `buf` holds any empty lines, the request
/// line, the field lines and the empty line that ends them, and nothing
/// else. The request line is judged first, as [`Conn`](super::Conn) judges
/// it as soon as it arrives.
pub fn parse_head(buf: &[u8], limits: HeadLimits) -> Result<Head, Error> {
    let (line, fields_at) = request_line(buf)?;
    head_from(buf, line, fields_at, limits)
}

/// [`parse_head`] for a head whose request line [`Conn`](super::Conn)
/// already scanned and judged as it arrived: `span` says where it lies.
pub(crate) fn parse_head_after(
    buf: &[u8],
    span: &LineSpan,
    limits: HeadLimits,
) -> Result<Head, Error> {
    head_from(buf, span.line(buf)?, span.next, limits)
}

/// The rest of [`parse_head`], once the request line is known.
fn head_from(
    buf: &[u8],
    line: RequestLine<'_>,
    fields_at: usize,
    limits: HeadLimits,
) -> Result<Head, Error> {
    let headers = parse_fields(&buf[fields_at..], limits.max_headers)?;
    let version = line.version;
    check_host(version, &headers)?;
    let framing = framing(version, &headers)?;

    let expect_continue = match headers.get_all("expect").next() {
        None => false,
        Some(v) if trim_ows(v).eq_ignore_ascii_case(b"100-continue") => {
            if headers.get_all("expect").count() > 1 {
                return Err(Error::ExpectationFailed);
            }
            // RFC 9110 §10.1.1: a server that receives 100-continue in an
            // HTTP/1.0 request MUST ignore it.
            version == Version::Http11
        }
        Some(_) => return Err(Error::ExpectationFailed),
    };
    let keep_alive = match version {
        Version::Http11 => !headers.has_token("connection", "close"),
        Version::Http10 => {
            headers.has_token("connection", "keep-alive")
                && !headers.has_token("connection", "close")
        }
    };
    Ok(Head {
        method: line.method.to_owned(),
        target: line.target.to_owned(),
        version,
        headers,
        framing,
        keep_alive,
        expect_continue,
    })
}

/// Parses the field lines and the empty line after them. Most requests
/// carry a handful of fields: parse into slots on the stack, and parse
/// again into slots for the configured maximum only when more than fit
/// there.
fn parse_fields(buf: &[u8], max_headers: usize) -> Result<Headers, Error> {
    let mut stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
    match fields_into(buf, &mut stack[..max_headers.min(STACK_HEADERS)]) {
        Err(Error::TooManyHeaders) if max_headers > STACK_HEADERS => {
            fields_into(buf, &mut vec![httparse::EMPTY_HEADER; max_headers])
        }
        result => result,
    }
}

/// Header slots kept on the stack while parsing.
const STACK_HEADERS: usize = 32;

fn fields_into<'b>(buf: &'b [u8], slots: &mut [httparse::Header<'b>]) -> Result<Headers, Error> {
    let (len, fields) = match httparse::parse_headers(buf, slots) {
        Ok(httparse::Status::Complete(done)) => done,
        // The caller found the blank line, so httparse saw it too unless
        // the head is not what it seemed.
        Ok(httparse::Status::Partial) => return Err(Error::Malformed("incomplete head")),
        Err(e) => return Err(map_httparse(e)),
    };
    if len != buf.len() {
        return Err(Error::Malformed("incomplete head"));
    }
    let mut headers = Headers {
        bytes: Vec::with_capacity(fields.iter().map(|h| h.name.len() + h.value.len()).sum()),
        spans: Vec::with_capacity(fields.len()),
    };
    for h in fields.iter() {
        // httparse rejects whitespace before the colon, obs-fold and bare
        // control bytes in requests; a NUL or DEL it lets through is checked
        // here, since a value is handed to handlers as text.
        if h.value.iter().any(|&b| b == 0 || b == 0x7f) {
            return Err(Error::Malformed("control character in field value"));
        }
        headers.push(h.name, trim_ows(h.value));
    }
    Ok(headers)
}

fn map_httparse(e: httparse::Error) -> Error {
    match e {
        httparse::Error::TooManyHeaders => Error::TooManyHeaders,
        httparse::Error::HeaderName => Error::Malformed("invalid field name"),
        httparse::Error::HeaderValue => Error::Malformed("invalid field value"),
        httparse::Error::NewLine => Error::Malformed("invalid line ending"),
        // The request line is not httparse's to parse here.
        httparse::Error::Version | httparse::Error::Token | httparse::Error::Status => {
            Error::Malformed("invalid field line")
        }
    }
}

/// Whether `v` is a valid Host value, `uri-host [ ":" port ]` (RFC 9110
/// §7.2): the one judge of it, for `X-Forwarded-Host` too.
pub(crate) fn is_valid_host(v: &[u8]) -> bool {
    uri::check_authority(v, Use::HostField).is_ok()
}

/// RFC 9112 §3.2: a server MUST respond 400 to an HTTP/1.1 request that
/// lacks Host, and to any request with more than one Host line or an
/// invalid value. Valid is `uri-host [ ":" port ]` (RFC 9110 §7.2), or
/// empty for a target without an authority; see [`uri::check_authority`].
/// It is checked even when an absolute-form target makes us ignore it
/// (§3.2.2). nginx refuses an empty Host (which §7.2 allows) but takes a
/// port of letters and most other bytes; hyper does not look at Host.
fn check_host(version: Version, headers: &Headers) -> Result<(), Error> {
    let mut hosts = headers.get_all("host");
    match (hosts.next(), hosts.next()) {
        (None, _) if version == Version::Http11 => Err(Error::Malformed("missing Host")),
        (None, _) => Ok(()),
        (Some(_), Some(_)) => Err(Error::Malformed("repeated Host")),
        (Some(v), None) => uri::check_authority(v, Use::HostField).map_err(Error::Malformed),
    }
}

/// The most digits a Content-Length may have: 10^19 - 1 still fits in u64.
const MAX_LENGTH_DIGITS: usize = 19;

/// Decides how the body is delimited, rejecting every ambiguous combination
/// that could let two parsers disagree about where the body ends (request
/// smuggling, RFC 9112 §6.3 and §11.2).
fn framing(version: Version, headers: &Headers) -> Result<Framing, Error> {
    let has_te = headers.get_all("transfer-encoding").next().is_some();
    let has_cl = headers.get_all("content-length").next().is_some();
    if has_te {
        // §6.1: a server MAY reject TE with CL outright; we must, for we
        // cannot know which one an upstream intermediary obeyed.
        if has_cl {
            return Err(Error::Malformed(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        // §6.1: TE in a 1.0 message means the framing is faulty.
        if version == Version::Http10 {
            return Err(Error::Malformed("Transfer-Encoding in an HTTP/1.0 request"));
        }
        let mut codings = headers
            .get_all("transfer-encoding")
            .flat_map(|v| v.split(|&b| b == b','))
            .map(trim_ows);
        return match (codings.next(), codings.next()) {
            (Some(c), None) if c.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
            _ => Err(Error::UnsupportedTransferCoding),
        };
    }
    if !has_cl {
        return Ok(Framing::None);
    }
    Ok(Framing::Length(content_length(headers)?.unwrap_or(0)))
}

/// The Content-Length of a message, if it has one; responses from
/// upstreams are checked by this same function.
pub(crate) fn content_length(headers: &Headers) -> Result<Option<u64>, Error> {
    // §6.3 rule 5: a list of identical values may be taken as one; anything
    // else is unrecoverable.
    let mut length = None;
    for item in headers
        .get_all("content-length")
        .flat_map(|v| v.split(|&b| b == b','))
    {
        let item = trim_ows(item);
        if item.is_empty() || item.len() > MAX_LENGTH_DIGITS || !item.iter().all(u8::is_ascii_digit)
        {
            return Err(Error::Malformed("invalid Content-Length"));
        }
        let n = item
            .iter()
            .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
        match length {
            Some(prev) if prev != n => return Err(Error::Malformed("conflicting Content-Length")),
            _ => length = Some(n),
        }
    }
    Ok(length)
}

/// A complete request: head, body and where it came from. Handlers receive it.
#[derive(Debug, Clone)]
pub struct Request {
    head: Head,
    body: Vec<u8>,
    peer: Option<SocketAddr>,
    /// What a trusted front said about the client, if the peer is one.
    forwarded: Option<Forwarded>,
}

impl Request {
    /// Assembles a request from its parts.
    pub fn new(head: Head, body: Vec<u8>, peer: Option<SocketAddr>) -> Request {
        Request {
            head,
            body,
            peer,
            forwarded: None,
        }
    }

    /// The method token, such as `GET`.
    pub fn method(&self) -> &str {
        &self.head.method
    }

    /// The request target exactly as received.
    pub fn target(&self) -> &str {
        &self.head.target
    }

    /// The path of the target, not percent-decoded (see [`Request::segments`]).
    pub fn path(&self) -> &str {
        self.head.path()
    }

    /// The raw query string, without `?`.
    pub fn query_string(&self) -> Option<&str> {
        self.head.query()
    }

    /// The path's segments, percent-decoded; `None` if a segment decodes to
    /// invalid UTF-8 or has a bad escape. `/a/b%20c` gives `["a", "b c"]`.
    pub fn segments(&self) -> Option<Vec<String>> {
        let path = self.path().strip_prefix('/').unwrap_or(self.path());
        if path.is_empty() {
            return Some(Vec::new());
        }
        path.split('/').map(|s| percent_decode(s, false)).collect()
    }

    /// Query parameters as decoded (name, value) pairs, in order. Pairs that
    /// do not decode are skipped. `+` stands for a space, as in HTML forms.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        let Some(q) = self.query_string() else {
            return Vec::new();
        };
        q.split('&')
            .filter(|p| !p.is_empty())
            .filter_map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                Some((percent_decode(k, true)?, percent_decode(v, true)?))
            })
            .collect()
    }

    /// The first value of the query parameter `name`.
    pub fn query(&self, name: &str) -> Option<String> {
        self.query_pairs()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The protocol version.
    pub fn version(&self) -> Version {
        self.head.version
    }

    /// The header fields (case-insensitive lookups).
    pub fn headers(&self) -> &Headers {
        &self.head.headers
    }

    /// The host the request is for; see [`Head::host`].
    pub fn host(&self) -> Option<&str> {
        self.head.host()
    }

    /// The first value of header `name` as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.headers.get(name)
    }

    /// The body, complete and within `--max-body-bytes`: it is read before
    /// the handler runs, so a slow sender never holds a worker.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as a reader.
    pub fn body_reader(&self) -> std::io::Cursor<&[u8]> {
        std::io::Cursor::new(&self.body)
    }

    /// Takes the body out of the request, leaving it empty.
    pub fn take_body(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.body)
    }

    /// The address of the socket's other end, when the request came over
    /// one: behind a front, the front's. See [`Request::client_addr`].
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The client's address: the peer's, unless the peer is a trusted
    /// front (`--trusted-proxy`) whose `X-Forwarded-For` names the client
    /// (see [`crate::forwarded`]; the port is then 0 unless the front gave
    /// one). What the access log records.
    pub fn client_addr(&self) -> Option<SocketAddr> {
        self.forwarded.as_ref().map(|f| f.client).or(self.peer)
    }

    /// What a trusted front said about the client (address, scheme, host),
    /// or `None` if the peer is not one: the `X-Forwarded-*` headers of
    /// anyone else are plain headers, never believed.
    pub fn forwarded(&self) -> Option<&Forwarded> {
        self.forwarded.as_ref()
    }

    /// Records what the peer, a trusted front, said about the client. The
    /// connection loop calls it before the handler runs.
    pub(crate) fn set_forwarded(&mut self, forwarded: Option<Forwarded>) {
        self.forwarded = forwarded;
    }

    /// The parsed head.
    pub fn head(&self) -> &Head {
        &self.head
    }
}

/// Decodes `%XX` escapes (and `+` as space when `plus` is set).
pub fn percent_decode(s: &str, plus: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hi = (hex[0] as char).to_digit(16)?;
                let lo = (hex[1] as char).to_digit(16)?;
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_with_fields(n: usize) -> Vec<u8> {
        let mut h = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 1..n {
            h.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        h.extend_from_slice(b"\r\n");
        h
    }

    #[test]
    fn more_fields_than_fit_on_the_stack() {
        let limits = HeadLimits { max_headers: 100 };
        for n in [1, STACK_HEADERS, STACK_HEADERS + 1, 100] {
            let head = parse_head(&head_with_fields(n), limits).expect("within the limit");
            assert_eq!(head.headers.len(), n);
        }
        assert_eq!(
            parse_head(&head_with_fields(101), limits),
            Err(Error::TooManyHeaders)
        );
        let small = HeadLimits { max_headers: 3 };
        assert_eq!(
            parse_head(&head_with_fields(4), small),
            Err(Error::TooManyHeaders)
        );
    }
}
