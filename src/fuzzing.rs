//! The bodies of the fuzz targets in `fuzz/`, kept in the library so that a
//! plain `cargo test` replays every committed corpus file through the same
//! functions (see the tests at the bottom), without nightly.
//!
//! Each target takes arbitrary bytes and panics when a property fails:
//!
//! - [`request_head`]: any bytes into [`Conn`], fed whole, split in two and
//!   one byte at a time. The events agree, the progress rule holds on every
//!   poll, every head is consumed exactly (its end found by an independent
//!   search, its verdict the one [`request::parse_head`] gives), and the
//!   buffer stays within its limits.
//! - [`chunked_body`]: any bytes into the chunked [`Decoder`], whole and
//!   split at fuzzer-chosen points: the same body and verdict, never more
//!   bytes out than in, and the same answer as a reference decoder written
//!   here from RFC 9112 §7.1.
//! - [`connection`]: the real connection loop, [`conn::serve`], over an
//!   in-memory transport that hands the input over in fuzzer-chosen pieces,
//!   with pauses, would-block results, interrupted calls, resets and end of
//!   stream, under a virtual clock, with a simulated parker. It ends within a
//!   number of transport calls proportional to the input, never spins, and
//!   writes a well-formed response per request, in order, the requests being
//!   the ones a plain [`Conn`] finds in the same bytes (fed whole, and one
//!   byte at a time with the progress rule checked on every poll); after an
//!   error response nothing more is read.
//! - [`differential`]: requests built from a grammar (odd whitespace, case,
//!   duplicated and folded fields, every Content-Length and
//!   Transfer-Encoding combination, bodies right and wrong), framed by
//!   [`Conn`] and by a plain reference decoder written here; any
//!   disagreement about where a request ends, what its body is, or whether
//!   it is rejected, is a crash. This is how smuggling bugs show up.
//!
//! Nothing here is part of the server: it is public, and hidden, only so the
//! fuzz crate can call it.

use std::cell::Cell;
use std::io::{self, IoSlice, Read};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::conn::{self, Clock, Connection, Ctx, Handoff, Timeouts, Transport};
use crate::http::body::MAX_CHUNK_EXT_BYTES;
use crate::http::request::{self, Framing};
use crate::http::response::reason;
use crate::http::{
    Body, BodyLimits, Conn, Decoder, Event, Head, HeadLimits, Limits, Phase, Request, Response,
    Version,
};
use crate::metrics::Metrics;
use crate::poller::Interest;
use crate::router::Handler;

// ---------------------------------------------------------------------------
// Reading the fuzz input as choices

/// Fuzz input read as a stream of choices; past its end every choice is 0,
/// so the first entry of each list is the plain, valid one.
struct Choices<'a> {
    data: &'a [u8],
}

impl<'a> Choices<'a> {
    fn new(data: &'a [u8]) -> Choices<'a> {
        Choices { data }
    }

    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        taken
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// The limits of `src/http/tests.rs`: small enough to reach with short inputs.
const SMALL: Limits = Limits {
    max_head_bytes: 256,
    max_headers: 8,
    max_body_bytes: 64,
};

/// Smaller still, so that the limits are hit all the time.
const TINY: Limits = Limits {
    max_head_bytes: 64,
    max_headers: 2,
    max_body_bytes: 8,
};

fn pick_limits(b: u8) -> Limits {
    match b % 3 {
        0 => SMALL,
        1 => TINY,
        _ => Limits::default(),
    }
}

/// The most bytes a receive buffer may hold: a head at its limit and the
/// bytes that show it went over, or a body-sized read.
fn max_buffered(limits: Limits) -> usize {
    (limits.max_head_bytes + 4).max(64 * 1024)
}

/// The body limits [`Conn`] gives a chunked decoder.
fn chunked_limits(limits: Limits) -> BodyLimits {
    BodyLimits {
        max_body_bytes: limits.max_body_bytes,
        max_trailer_bytes: limits.max_head_bytes,
        max_trailers: limits.max_headers,
    }
}

// ---------------------------------------------------------------------------
// Driving `Conn` directly, as `conn::serve` does, checking the progress rule

/// A delivered request, reduced to what the targets compare.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    method: String,
    target: String,
    version: Version,
    body: Vec<u8>,
    keep_alive: bool,
    /// Offset in the input just past the request, body included.
    end: usize,
}

/// What a driver saw, in order. `Continue` is left out: whether it comes
/// depends on how the input was split.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Req(Got),
    Err(u16),
    Closed,
}

/// What a driver run saw.
#[derive(Debug, Default)]
struct Run {
    events: Vec<Ev>,
    /// The head of each delivered request.
    heads: Vec<Head>,
    /// Bytes received but not consumed when the input ran out.
    buffered: usize,
    /// Where the connection stood at the end.
    phase: Option<Phase>,
}

/// Decisions a driver takes for its requests.
trait Policy {
    /// Whether a body announced with `100-continue` is wanted.
    fn wants_body(&mut self, _head: &Head) -> bool {
        true
    }

    /// The response to `req`, whether to force `Connection: close`, and
    /// whether sending it fails (which ends the connection).
    fn respond(&mut self, _req: &Request) -> (Response, bool, bool) {
        (Response::text(200, "ok"), false, false)
    }
}

/// Wants every body, answers everything with a small 200.
struct Plain;

impl Policy for Plain {}

/// Feeds `pieces` to a fresh [`Conn`], one read each (several if the buffer
/// is short of room), polling until it needs more after each read, and
/// answering every request. Stops reading once the connection closes.
fn drive(limits: Limits, pieces: &[&[u8]], policy: &mut dyn Policy) -> Run {
    let mut conn = Conn::new(limits, None);
    let mut run = Run::default();
    let mut fed = 0;
    'pieces: for piece in pieces {
        let mut rest = *piece;
        while !rest.is_empty() {
            let n = conn
                .read_with(|buf| {
                    let n = buf.len().min(rest.len());
                    buf[..n].copy_from_slice(&rest[..n]);
                    Ok::<usize, ()>(n)
                })
                .unwrap_or(0);
            assert!(
                n > 0,
                "progress rule: Conn asked for more with its buffer full ({} bytes)",
                conn.buffered()
            );
            rest = &rest[n..];
            fed += n;
            assert!(
                conn.buffered() <= max_buffered(limits),
                "buffer over its limit"
            );
            if !pump(&mut conn, &mut run, limits, fed, policy) {
                break 'pieces;
            }
        }
    }
    run.buffered = conn.buffered();
    run.phase = Some(conn.phase());
    run
}

/// Polls until `conn` needs more input; false once it has closed.
fn pump(
    conn: &mut Conn,
    run: &mut Run,
    limits: Limits,
    fed: usize,
    policy: &mut dyn Policy,
) -> bool {
    // Each event consumes bytes or moves the state on, so a few polls per
    // buffered byte is a generous bound.
    for _ in 0..4 * (conn.buffered() + 4) {
        match conn.poll() {
            Event::NeedMore => {
                // The progress rule: asking for more is only allowed while
                // the head is under its limit, and a body decoder takes
                // every byte it is given before asking.
                match conn.phase() {
                    Phase::Idle | Phase::Head => assert!(
                        conn.buffered() <= limits.max_head_bytes,
                        "NeedMore with {} bytes of head buffered",
                        conn.buffered()
                    ),
                    Phase::Body => {
                        assert_eq!(conn.buffered(), 0, "NeedMore with body bytes unread")
                    }
                    phase => panic!("NeedMore in phase {phase:?}"),
                }
                return true;
            }
            Event::Continue => {
                assert_eq!(conn.phase(), Phase::Body, "Continue outside a body");
                let head = conn
                    .pending_head()
                    .expect("Continue without a pending head");
                if policy.wants_body(head) {
                    conn.accept_body();
                } else {
                    let req = conn.reject_body().expect("reject_body without a request");
                    if !deliver(conn, run, fed, req, policy) {
                        return false;
                    }
                }
            }
            Event::Request(req) => {
                if !deliver(conn, run, fed, req, policy) {
                    return false;
                }
            }
            Event::Error(e) => {
                assert_eq!(conn.phase(), Phase::Closed, "an error must close");
                run.events.push(Ev::Err(e.status()));
                let mut out = Vec::new();
                let outcome = conn.write_head(&Conn::error_response(&e), false, &mut out);
                assert!(!outcome.keep_alive, "an error response must close");
                conn.response_sent();
                return false;
            }
            Event::Closed => {
                assert_eq!(conn.phase(), Phase::Closed);
                run.events.push(Ev::Closed);
                return false;
            }
        }
    }
    panic!("poll keeps returning events without progress");
}

/// Records a delivered request and answers it; false if the connection ends.
fn deliver(
    conn: &mut Conn,
    run: &mut Run,
    fed: usize,
    req: Request,
    policy: &mut dyn Policy,
) -> bool {
    assert_eq!(
        conn.phase(),
        Phase::Response,
        "a request awaits its response"
    );
    run.events.push(Ev::Req(Got {
        method: req.method().to_owned(),
        target: req.target().to_owned(),
        version: req.version(),
        body: req.body().to_vec(),
        keep_alive: req.head().keep_alive,
        end: fed - conn.buffered(),
    }));
    run.heads.push(req.head().clone());
    let (resp, close, fails) = policy.respond(&req);
    let mut out = Vec::new();
    conn.write_head(&resp, close, &mut out);
    if fails {
        run.events.push(Ev::Closed);
        return false;
    }
    conn.response_sent();
    true
}

/// Cut points for `input` from two fuzzer bytes, as fractions of its length.
fn cuts(input: &[u8], a: u8, b: u8) -> Vec<&[u8]> {
    let at = |x: u8| input.len() * usize::from(x) / 255;
    let (mut i, mut j) = (at(a), at(b));
    if i > j {
        std::mem::swap(&mut i, &mut j);
    }
    vec![&input[..i], &input[i..j], &input[j..]]
}

/// Whether two runs of the same input, split differently, agree.
fn assert_same(whole: &Run, other: &Run, how: &str) {
    assert_eq!(whole.events, other.events, "whole vs {how}: events differ");
    if whole.events.is_empty() || matches!(whole.events.last(), Some(Ev::Req(_))) {
        // Both read everything and are waiting for more.
        assert_eq!(
            whole.buffered, other.buffered,
            "whole vs {how}: bytes left over"
        );
        assert_eq!(whole.phase, other.phase, "whole vs {how}: phase");
    }
}

// ---------------------------------------------------------------------------
// Target: request_head

/// Arbitrary bytes into the head path of [`Conn`]: the first byte picks the
/// limits, the second where the input is split, the rest is the input.
pub fn request_head(data: &[u8]) {
    let mut c = Choices::new(data);
    let limits = pick_limits(c.byte());
    let (a, b) = (c.byte(), c.byte());
    let input = c.rest();

    // The parser alone must not panic on anything.
    let head_limits = HeadLimits {
        max_headers: limits.max_headers,
    };
    if let Ok(head) = request::parse_head(input, head_limits) {
        check_head(&head);
    }

    let whole = drive(limits, &[input], &mut Plain);
    assert_same(
        &whole,
        &drive(limits, &cuts(input, a, b), &mut Plain),
        "split",
    );
    if input.len() <= 1024 {
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_same(
            &whole,
            &drive(limits, &bytes, &mut Plain),
            "one byte at a time",
        );
    }
    check_heads(input, limits, &whole);
}

/// What a parsed head must satisfy whatever the bytes were.
fn check_head(head: &Head) {
    let has = |name: &str| head.headers.get_all(name).next().is_some();
    match head.framing {
        Framing::None => assert!(!has("content-length") && !has("transfer-encoding")),
        Framing::Length(_) => assert!(has("content-length") && !has("transfer-encoding")),
        Framing::Chunked => {
            assert!(has("transfer-encoding") && !has("content-length"));
            assert_eq!(head.version, Version::Http11, "chunked on HTTP/1.0");
        }
    }
    assert!(!head.expect_continue || head.version == Version::Http11);
    assert!(!head.method.is_empty() && !head.target.is_empty());
    if head.version == Version::Http11 {
        assert_eq!(
            head.headers.get_all("host").count(),
            1,
            "HTTP/1.1 needs one Host"
        );
    }
}

/// Walks the requests `run` delivered, checking that each consumed exactly
/// its head (whose end an independent line-by-line search finds, and whose
/// verdict is the one `parse_head` gives on exactly those bytes) and then
/// exactly its body.
fn check_heads(input: &[u8], limits: Limits, run: &Run) {
    let mut pos = 0;
    let mut events = run.events.iter();
    let mut heads = run.heads.iter();
    loop {
        let rest = &input[pos..];
        let event = events.next();
        let Some(len) = head_end(rest) else {
            if rest.len() > limits.max_head_bytes {
                assert!(
                    matches!(event, Some(Ev::Err(414 | 431))),
                    "an unfinished head over the limit: {event:?}"
                );
            } else {
                assert_eq!(event, None, "no complete head, yet {event:?}");
                assert_eq!(
                    run.buffered,
                    rest.len(),
                    "a partial head must stay buffered"
                );
            }
            return;
        };
        if len > limits.max_head_bytes {
            assert!(
                matches!(event, Some(Ev::Err(414 | 431))),
                "a head of {len} bytes over the limit: {event:?}"
            );
            return;
        }
        let head_limits = HeadLimits {
            max_headers: limits.max_headers,
        };
        let head = match request::parse_head(&rest[..len], head_limits) {
            Err(e) => {
                assert_eq!(event, Some(&Ev::Err(e.status())), "head {:?}", &rest[..len]);
                return;
            }
            Ok(head) => head,
        };
        let body = &rest[len..];
        let (want_body, body_len) = match head.framing {
            Framing::None => (Ok(Vec::new()), 0),
            Framing::Length(n) if n > limits.max_body_bytes => (Err(Stop::Reject(413)), 0),
            Framing::Length(n) if (body.len() as u64) < n => (Err(Stop::Incomplete), 0),
            Framing::Length(n) => (Ok(body[..n as usize].to_vec()), n as usize),
            Framing::Chunked => match ref_chunked(body, chunked_limits(limits)) {
                Ok((b, n)) => (Ok(b), n),
                Err(stop) => (Err(stop), 0),
            },
        };
        match (want_body, event) {
            (Ok(want), Some(Ev::Req(got))) => {
                assert_eq!(got.body, want, "body");
                assert_eq!(got.end, pos + len + body_len, "where the request ends");
                assert_eq!(heads.next(), Some(&head), "head");
                if !got.keep_alive {
                    assert_eq!(events.next(), Some(&Ev::Closed));
                    return;
                }
                pos = got.end;
            }
            (Err(Stop::Incomplete), None) => {
                assert_eq!(run.phase, Some(Phase::Body), "an unfinished body");
                return;
            }
            (Err(Stop::Reject(status)), Some(Ev::Err(got))) => {
                assert_eq!(status, *got, "body rejected with another status");
                return;
            }
            (want, event) => panic!("head {head:?}: expected {want:?}, got {event:?}"),
        }
    }
}

/// The length of the head at the start of `data`, found line by line: the
/// empty lines before the request line are skipped (as any CR and LF
/// bytes), and the head ends with the first empty line after it (LF or
/// CRLF). `None` while that line has not arrived.
fn head_end(data: &[u8]) -> Option<usize> {
    let lead = data
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let mut line_start = lead;
    for (i, &b) in data.iter().enumerate().skip(lead) {
        if b == b'\n' {
            let line = &data[line_start..i];
            if line_start > lead && (line.is_empty() || line == b"\r") {
                return Some(i + 1);
            }
            line_start = i + 1;
        }
    }
    None
}

// ---------------------------------------------------------------------------
// Target: chunked_body

/// Arbitrary bytes into the chunked decoder: the first byte picks the
/// limits, the next two where the input is split, the rest is the body.
pub fn chunked_body(data: &[u8]) {
    let mut c = Choices::new(data);
    let limits = match c.byte() % 4 {
        // The limits of the unit tables in src/http/body.rs.
        0 => BodyLimits {
            max_body_bytes: 64,
            max_trailer_bytes: 64,
            max_trailers: 4,
        },
        1 => BodyLimits {
            max_body_bytes: 10,
            max_trailer_bytes: 16,
            max_trailers: 2,
        },
        2 => chunked_limits(Limits::default()),
        _ => BodyLimits {
            max_body_bytes: u64::MAX,
            max_trailer_bytes: usize::MAX,
            max_trailers: usize::MAX,
        },
    };
    let (a, b) = (c.byte(), c.byte());
    let input = c.rest();

    let whole = decode_pieces(limits, &[input]);
    assert_eq!(
        decode_pieces(limits, &cuts(input, a, b)),
        whole,
        "whole vs split"
    );
    if input.len() <= 1024 {
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(
            decode_pieces(limits, &bytes),
            whole,
            "whole vs one byte at a time"
        );
    }

    let reference = ref_chunked(input, limits);
    match (&whole, &reference) {
        (Ok((body, n, true)), Ok((want, m))) => {
            assert_eq!(body, want, "body");
            assert_eq!(n, m, "where the body ends");
        }
        (Ok((_, n, false)), Err(Stop::Incomplete)) => assert_eq!(*n, input.len()),
        (Err(status), Err(Stop::Reject(want))) => assert_eq!(status, want, "status"),
        _ => panic!("decoder {whole:?}, reference {reference:?}"),
    }
}

/// Body bytes, bytes consumed and done; or the error's status.
type Decoded = Result<(Vec<u8>, usize, bool), u16>;

/// Feeds `pieces` to a chunked decoder until each is used up or the body is
/// done, checking on every call the progress rule, that no more bytes come
/// out than went in, the body limit, and that errors are sticky.
fn decode_pieces(limits: BodyLimits, pieces: &[&[u8]]) -> Decoded {
    let mut dec = Decoder::chunked(limits);
    let mut out = Vec::new();
    let mut consumed = 0;
    for piece in pieces {
        let mut rest = *piece;
        while !rest.is_empty() && !dec.is_done() {
            let before = out.len();
            let progress = match dec.decode(rest, &mut out) {
                Ok(p) => p,
                Err(e) => {
                    let again = dec.decode(b"0\r\n\r\n", &mut Vec::new());
                    assert_eq!(again, Err(e.clone()), "errors are sticky");
                    return Err(e.status());
                }
            };
            assert!(progress.consumed <= rest.len(), "consumed more than given");
            assert!(progress.consumed > 0 || progress.done, "progress rule");
            assert!(
                out.len() - before <= progress.consumed,
                "more bytes out than in"
            );
            assert_eq!(progress.done, dec.is_done());
            assert_eq!(dec.decoded(), out.len() as u64);
            assert!(
                dec.decoded() <= limits.max_body_bytes,
                "body over its limit"
            );
            consumed += progress.consumed;
            rest = &rest[progress.consumed..];
        }
    }
    if dec.is_done() {
        let again = dec
            .decode(b"GET / HTTP/1.1\r\n", &mut out)
            .map(|p| (p.consumed, p.done));
        assert_eq!(
            again,
            Ok((0, true)),
            "a finished decoder takes nothing more"
        );
    }
    Ok((out, consumed, dec.is_done()))
}

// ---------------------------------------------------------------------------
// Reference decoders: RFC 9112 written out as plainly as possible, sharing
// no code with src/http/, for the differential checks.

/// Why a reference decoder stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The input ended first; more may make it complete.
    Incomplete,
    /// The message is rejected with this status.
    Reject(u16),
}

const BAD: Stop = Stop::Reject(400);

/// A position in the input; running off its end is [`Stop::Incomplete`].
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Result<u8, Stop> {
        self.data.get(self.pos).copied().ok_or(Stop::Incomplete)
    }

    fn expect(&mut self, want: u8) -> Result<(), Stop> {
        if self.peek()? != want {
            return Err(BAD);
        }
        self.pos += 1;
        Ok(())
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// HTAB, SP, VCHAR, obs-text: field-value and quoted-string bytes.
fn is_text(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = v {
        if !is_ws(*first) {
            break;
        }
        v = rest;
    }
    while let [rest @ .., last] = v {
        if !is_ws(*last) {
            break;
        }
        v = rest;
    }
    v
}

/// A chunked body (RFC 9112 §7.1) at the start of `data`: its bytes and
/// length on the wire. Strict as our core intends: CRLF only, 1 to 16 hex
/// digits, extensions checked against their grammar and capped at
/// [`MAX_CHUNK_EXT_BYTES`] per body, trailer fields checked like header
/// fields; the body limit applies as soon as a chunk's size is known.
fn ref_chunked(data: &[u8], limits: BodyLimits) -> Result<(Vec<u8>, usize), Stop> {
    let mut cur = Cursor { data, pos: 0 };
    let mut body = Vec::new();
    let mut ext_bytes = 0;
    loop {
        let mut size: u64 = 0;
        let mut digits = 0;
        while let Some(d) = (cur.peek()? as char).to_digit(16) {
            if digits == 16 {
                return Err(BAD);
            }
            size = size * 16 + u64::from(d);
            digits += 1;
            cur.pos += 1;
        }
        if digits == 0 || !matches!(cur.peek()?, b' ' | b'\t' | b';' | b'\r') {
            return Err(BAD);
        }
        if (body.len() as u64)
            .checked_add(size)
            .is_none_or(|total| total > limits.max_body_bytes)
        {
            return Err(Stop::Reject(413));
        }
        ref_extensions(&mut cur, &mut ext_bytes)?;
        cur.expect(b'\n')?;
        if size == 0 {
            break;
        }
        if ((data.len() - cur.pos) as u64) < size {
            return Err(Stop::Incomplete);
        }
        body.extend_from_slice(&data[cur.pos..cur.pos + size as usize]);
        cur.pos += size as usize;
        cur.expect(b'\r')?;
        cur.expect(b'\n')?;
    }
    // The trailer section: field lines, then an empty line.
    let mut lines = 0;
    let mut bytes = 0;
    let mut take = |cur: &mut Cursor| {
        cur.pos += 1;
        bytes += 1;
        if bytes > limits.max_trailer_bytes {
            return Err(Stop::Reject(431));
        }
        Ok(())
    };
    loop {
        let b = cur.peek()?;
        if b == b'\r' {
            cur.pos += 1;
            cur.expect(b'\n')?;
            return Ok((body, cur.pos));
        }
        if !is_tchar(b) {
            return Err(BAD);
        }
        lines += 1;
        if lines > limits.max_trailers {
            return Err(Stop::Reject(431));
        }
        while is_tchar(cur.peek()?) {
            take(&mut cur)?;
        }
        if cur.peek()? != b':' {
            return Err(BAD);
        }
        take(&mut cur)?;
        loop {
            let b = cur.peek()?;
            if b == b'\r' {
                break;
            }
            if !is_text(b) {
                return Err(BAD);
            }
            take(&mut cur)?;
        }
        take(&mut cur)?;
        if cur.peek()? != b'\n' {
            return Err(BAD);
        }
        take(&mut cur)?;
    }
}

/// The rest of a chunk-size line after its digits, through its CR:
///
/// ```text
/// chunk-ext     = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
/// chunk-ext-val = token / quoted-string
/// ```
///
/// BWS is allowed only where the grammar puts it, so whitespace before the
/// CR is an error. Every byte before the CR counts against the body's cap.
fn ref_extensions(cur: &mut Cursor, count: &mut usize) -> Result<(), Stop> {
    let mut take = |cur: &mut Cursor| {
        cur.pos += 1;
        *count += 1;
        if *count > MAX_CHUNK_EXT_BYTES {
            return Err(BAD);
        }
        Ok(())
    };
    let mut ws = false;
    loop {
        while is_ws(cur.peek()?) {
            take(cur)?;
            ws = true;
        }
        match cur.peek()? {
            b'\r' if !ws => {
                cur.pos += 1;
                return Ok(());
            }
            b';' => take(cur)?,
            _ => return Err(BAD),
        }
        while is_ws(cur.peek()?) {
            take(cur)?;
        }
        if !is_tchar(cur.peek()?) {
            return Err(BAD);
        }
        while is_tchar(cur.peek()?) {
            take(cur)?;
        }
        ws = false;
        while is_ws(cur.peek()?) {
            take(cur)?;
            ws = true;
        }
        if cur.peek()? != b'=' {
            continue;
        }
        take(cur)?;
        while is_ws(cur.peek()?) {
            take(cur)?;
        }
        match cur.peek()? {
            b'"' => {
                take(cur)?;
                loop {
                    match cur.peek()? {
                        b'"' => break,
                        b'\\' => {
                            take(cur)?;
                            if !is_text(cur.peek()?) {
                                return Err(BAD);
                            }
                        }
                        b if is_text(b) => {}
                        _ => return Err(BAD),
                    }
                    take(cur)?;
                }
                take(cur)?;
            }
            b if is_tchar(b) => {
                while is_tchar(cur.peek()?) {
                    take(cur)?;
                }
            }
            _ => return Err(BAD),
        }
        ws = false;
    }
}

/// One request as the reference decoder frames it.
#[derive(Debug)]
struct RefRequest {
    method: String,
    target: String,
    version: Version,
    body: Vec<u8>,
    keep_alive: bool,
    /// Head and body, in bytes.
    len: usize,
}

/// What the reference decoder makes of a whole input, for comparison with
/// [`Run::events`]: each request, then a rejection, a close (after a request
/// that does not keep the connection alive), or nothing (more is needed).
fn reference(input: &[u8], limits: Limits) -> Vec<Ev> {
    let mut events = Vec::new();
    let mut pos = 0;
    loop {
        match ref_request(&input[pos..], limits) {
            Err(Stop::Incomplete) => break,
            Err(Stop::Reject(status)) => {
                events.push(Ev::Err(status));
                break;
            }
            Ok(r) => {
                pos += r.len;
                events.push(Ev::Req(Got {
                    method: r.method,
                    target: r.target,
                    version: r.version,
                    body: r.body,
                    keep_alive: r.keep_alive,
                    end: pos,
                }));
                if !r.keep_alive {
                    events.push(Ev::Closed);
                    break;
                }
            }
        }
    }
    events
}

/// The request at the start of `data` (RFC 9112 §2 to §7 and RFC 9110 as
/// our core reads them), written with no shared code and no cleverness:
/// find the head's end, split it into lines, check each line, then decide
/// the framing.
fn ref_request(data: &[u8], limits: Limits) -> Result<RefRequest, Stop> {
    let Some(head_len) = head_end(data) else {
        return Err(if data.len() > limits.max_head_bytes {
            Stop::Reject(431)
        } else {
            Stop::Incomplete
        });
    };
    if head_len > limits.max_head_bytes {
        return Err(Stop::Reject(431));
    }
    // Empty lines before the request line: each an LF or a CRLF.
    let mut head = &data[..head_len];
    loop {
        match head {
            [b'\n', rest @ ..] | [b'\r', b'\n', rest @ ..] => head = rest,
            [b'\r', ..] => return Err(BAD),
            _ => break,
        }
    }
    // Lines end in LF, or CRLF; any other CR is an error. The last two
    // pieces are the empty line and what follows its LF (nothing).
    let mut lines = Vec::new();
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.contains(&b'\r') {
            return Err(BAD);
        }
        lines.push(line);
    }
    lines.truncate(lines.len() - 2);
    let (request_line, field_lines) = lines.split_first().ok_or(BAD)?;

    // method SP request-target SP HTTP-version, single spaces.
    let mut parts = request_line.splitn(3, |&b| b == b' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v)) => (m, t, v),
        _ => return Err(BAD),
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(BAD);
    }
    let target_ok = |b: u8| (0x21..=0x7e).contains(&b) || b >= 0x80;
    if target.is_empty() || !target.iter().all(|&b| target_ok(b)) {
        return Err(BAD);
    }
    let target = std::str::from_utf8(target).map_err(|_| BAD)?;
    let method = std::str::from_utf8(method).map_err(|_| BAD)?;
    let version = match version {
        b"HTTP/1.1" => Version::Http11,
        b"HTTP/1.0" => Version::Http10,
        _ => return Err(Stop::Reject(505)),
    };
    if !ref_target_ok(method, target) {
        return Err(BAD);
    }

    // name ":" OWS value OWS; no whitespace before the colon, no obs-fold
    // (a line starting with whitespace has no valid name either).
    if field_lines.len() > limits.max_headers {
        return Err(Stop::Reject(431));
    }
    let mut fields: Vec<(String, &[u8])> = Vec::new();
    for line in field_lines {
        let colon = line.iter().position(|&b| b == b':').ok_or(BAD)?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(BAD);
        }
        if !value.iter().all(|&b| is_text(b)) {
            return Err(BAD);
        }
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        fields.push((name, trim(value)));
    }
    let all = |name: &str| -> Vec<&[u8]> {
        fields
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .collect()
    };
    let items = |name: &str| -> Vec<Vec<u8>> {
        all(name)
            .iter()
            .flat_map(|v| v.split(|&b| b == b','))
            .map(|item| trim(item).to_ascii_lowercase())
            .collect()
    };

    // Exactly one valid Host in HTTP/1.1, at most one in HTTP/1.0.
    let hosts = all("host");
    let host_byte = |b: &u8| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:[]".contains(b);
    match hosts.as_slice() {
        [] if version == Version::Http10 => {}
        [host] if host.iter().all(host_byte) => {}
        _ => return Err(BAD),
    }

    // Framing: Transfer-Encoding, only "chunked", only on HTTP/1.1, never
    // with Content-Length; or Content-Length, all values equal.
    let te = all("transfer-encoding");
    let cl = all("content-length");
    let framing = if !te.is_empty() {
        if !cl.is_empty() || version == Version::Http10 {
            return Err(BAD);
        }
        if items("transfer-encoding") != [b"chunked".to_vec()] {
            return Err(Stop::Reject(501));
        }
        Framing::Chunked
    } else if !cl.is_empty() {
        let mut length = None;
        for item in items("content-length") {
            if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
                return Err(BAD);
            }
            let n: u64 = std::str::from_utf8(&item)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(BAD)?;
            if length.is_some_and(|l| l != n) {
                return Err(BAD);
            }
            length = Some(n);
        }
        Framing::Length(length.unwrap_or(0))
    } else {
        Framing::None
    };

    // Expect: only a single 100-continue.
    let expects = all("expect");
    if !expects.is_empty()
        && (expects.len() > 1 || !expects[0].eq_ignore_ascii_case(b"100-continue"))
    {
        return Err(Stop::Reject(417));
    }

    let connection = items("connection");
    let has = |token: &[u8]| connection.iter().any(|t| t == token);
    let keep_alive = match version {
        Version::Http11 => !has(b"close"),
        Version::Http10 => has(b"keep-alive") && !has(b"close"),
    };

    let rest = &data[head_len..];
    let (body, body_len) = match framing {
        Framing::None => (Vec::new(), 0),
        Framing::Length(n) if n > limits.max_body_bytes => return Err(Stop::Reject(413)),
        Framing::Length(n) if (rest.len() as u64) < n => return Err(Stop::Incomplete),
        Framing::Length(n) => (rest[..n as usize].to_vec(), n as usize),
        Framing::Chunked => ref_chunked(rest, chunked_limits(limits))?,
    };
    Ok(RefRequest {
        method: method.to_owned(),
        target: target.to_owned(),
        version,
        body,
        keep_alive,
        len: head_len + body_len,
    })
}

/// RFC 9112 §3.2: origin-form for any method but CONNECT (which we do not
/// serve), absolute-form (http or https, with an authority), asterisk-form
/// only for OPTIONS.
fn ref_target_ok(method: &str, target: &str) -> bool {
    if method == "CONNECT" {
        return false;
    }
    if target.starts_with('/') {
        return true;
    }
    if target == "*" {
        return method == "OPTIONS";
    }
    let lower = target.to_ascii_lowercase();
    let Some(rest) = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"))
    else {
        return false;
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    !authority.is_empty()
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:[]".contains(&b))
}

// ---------------------------------------------------------------------------
// Target: differential

const METHODS: &[&[u8]] = &[
    b"GET", b"POST", b"POST", b"PUT", b"HEAD", b"OPTIONS", b"DELETE", b"CONNECT", b"get", b"G(T",
    b"",
];
const TARGETS: &[&[u8]] = &[
    b"/",
    b"/a?b=c",
    b"/nobody",
    b"*",
    b"http://h/p",
    b"HTTPS://h:1",
    b"http:///x",
    b"h:80",
    b"a/b",
    b"/\xc3\xa9",
    b"/\xff",
    b"/a\x7f",
];
const VERSIONS: &[&[u8]] = &[
    b"HTTP/1.1",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"HTTP/1.2",
    b"HTTP/2.0",
    b"http/1.1",
    b"HTTP/1.1 ",
    b"HTTP/1.10",
    b"HTTP/1",
];
const SPACES: &[&[u8]] = &[b" ", b" ", b" ", b"  ", b"\t", b""];
const EOLS: &[&[u8]] = &[b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"\r\r\n", b"\n\r"];
const NAMES: &[&[u8]] = &[
    b"Content-Length",
    b"Transfer-Encoding",
    b"content-length",
    b"transfer-encoding",
    b"CONTENT-LENGTH",
    b"TRANSFER-ENCODING",
    b"Host",
    b"host",
    b"Connection",
    b"Expect",
    b"X-A",
    b"Content_Length",
    b"Transfer_Encoding",
    b"Content-Length ",
    b"Transfer-Encoding\t",
    b" Transfer-Encoding",
    b"Content-Length\x0b",
    b"",
    b"X(Y)",
];
const SEPARATORS: &[&[u8]] = &[b": ", b":", b":\t", b":  ", b" :", b"\t:", b""];
const VALUES: &[&[u8]] = &[
    b"chunked",
    b"0",
    b"5",
    b"a",
    b"Chunked",
    b"CHUNKED",
    b"chunked ",
    b"\tchunked",
    b"chunked,",
    b",chunked",
    b"chunked, chunked",
    b"gzip, chunked",
    b"chunked, gzip",
    b"identity",
    b"chunked;q=1",
    b"\"chunked\"",
    b"chunk",
    b"chunked\x00",
    b"6",
    b"05",
    b"5, 5",
    b"5,5",
    b"5 ,5",
    b"5, 6",
    b"5 5",
    b"+5",
    b"-5",
    b"0x5",
    b"5a",
    b"",
    b",",
    b"8",
    b"9",
    b"17",
    b"64",
    b"65",
    b"0000000000000000005",
    b"00000000000000000005",
    b"99999999999999999999",
    b"18446744073709551615",
    b"a:80",
    b"[::1]",
    b"a b",
    b"a/b",
    b"close",
    b"Close",
    b"keep-alive",
    b"keep-alive, close",
    b"upgrade",
    b"100-continue",
    b"100-Continue",
    b"200-ok",
    b"x\x7fy",
    b"x\x01",
    b"\xe9",
];
const CHUNK_EXTS: &[&[u8]] = &[
    b"",
    b"",
    b"",
    b";a",
    b";a=b",
    b" ;a",
    b";a=\"q\\\"\"",
    b";",
    b"; a",
    b";a ",
    b" ",
    b";a=",
    b";a=\"\r\n\"",
    b";a\n",
];
const TRAILERS: &[&[u8]] = &[
    b"T: v",
    b"T:",
    b"T-2: v w",
    b" T: v",
    b"T : v",
    b": v",
    b"T",
    b"T: a\x00",
    b"T: \x7f",
    b"Long-Trailer: vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv",
];

/// Requests built from a grammar of request lines, header fields and
/// bodies, framed by [`Conn`] (whole and split) and by the reference
/// decoder: they must agree on every request, its body and where it ends,
/// and on rejection.
pub fn differential(data: &[u8]) {
    let mut c = Choices::new(data);
    let limits = pick_limits(c.byte());
    let (a, b) = (c.byte(), c.byte());
    let input = generate(&mut c);

    let whole = drive(limits, &[&input], &mut Plain);
    assert_same(
        &whole,
        &drive(limits, &cuts(&input, a, b), &mut Plain),
        "split",
    );
    let want = reference(&input, limits);
    let verdicts = |events: &[Ev]| -> Vec<Ev> {
        // The status of a rejection depends on which check comes first;
        // only the framing verdict must agree.
        events
            .iter()
            .map(|e| match e {
                Ev::Err(_) => Ev::Err(0),
                e => e.clone(),
            })
            .collect()
    };
    assert_eq!(
        verdicts(&whole.events),
        verdicts(&want),
        "Conn and the reference disagree on {:?}",
        String::from_utf8_lossy(&input)
    );
}

/// Builds one to three requests from the choices.
fn generate(c: &mut Choices) -> Vec<u8> {
    let mut w = Vec::new();
    for _ in 0..1 + c.below(3) {
        if c.below(8) == 7 {
            w.extend_from_slice(c.pick(&[b"\r\n" as &[u8], b"\n", b"\r\n\r\n", b"\r", b"\n\r\n"]));
        }
        w.extend_from_slice(c.pick(METHODS));
        w.extend_from_slice(c.pick(SPACES));
        w.extend_from_slice(c.pick(TARGETS));
        w.extend_from_slice(c.pick(SPACES));
        w.extend_from_slice(c.pick(VERSIONS));
        w.extend_from_slice(c.pick(EOLS));

        // The body comes first so that a Content-Length can match it.
        let body = generate_body(c);
        if c.below(4) != 3 {
            w.extend_from_slice(b"Host: h\r\n");
        }
        for _ in 0..c.below(6) {
            let name = c.pick(NAMES);
            w.extend_from_slice(name);
            w.extend_from_slice(c.pick(SEPARATORS));
            match c.below(8) {
                0 => w.extend_from_slice(body.len().to_string().as_bytes()),
                1 => {
                    let n = c.below(8);
                    w.extend_from_slice(c.take(n));
                }
                _ => w.extend_from_slice(c.pick(VALUES)),
            }
            w.extend_from_slice(c.pick(&[b"" as &[u8], b"", b"", b" ", b"\t"]));
            w.extend_from_slice(c.pick(EOLS));
            if c.below(16) == 15 {
                // obs-fold
                w.extend_from_slice(c.pick(&[b" chunked" as &[u8], b"\t5", b" x"]));
                w.extend_from_slice(c.pick(EOLS));
            }
        }
        w.extend_from_slice(c.pick(EOLS));
        w.extend_from_slice(&body);
    }
    if c.below(4) == 3 {
        let n = c.below(32);
        w.extend_from_slice(c.take(n));
    }
    w
}

/// A body: none, some bytes, a chunked encoding (mostly right), or raw
/// fuzz bytes.
fn generate_body(c: &mut Choices) -> Vec<u8> {
    let mut w = Vec::new();
    match c.below(4) {
        0 => {}
        1 => {
            let n = c.pick(&[5, 0, 1, 6, 8, 9, 16, 17, 64, 65]);
            w.extend((0..n).map(|i| b'a' + (i % 26) as u8));
        }
        2 => {
            for i in 0..c.below(4) {
                let size = 1 + c.below(20);
                chunk_size_line(c, &mut w, size);
                let data = match c.below(8) {
                    0 => size + 1,
                    1 => size - 1,
                    _ => size,
                };
                w.extend((0..data).map(|j| b'A' + ((i + j) % 26) as u8));
                w.extend_from_slice(c.pick(&[
                    b"\r\n" as &[u8],
                    b"\r\n",
                    b"\r\n",
                    b"\n",
                    b"",
                    b"\r",
                ]));
            }
            chunk_size_line(c, &mut w, 0);
            for _ in 0..c.below(3) {
                w.extend_from_slice(c.pick(TRAILERS));
                w.extend_from_slice(c.pick(EOLS));
            }
            w.extend_from_slice(c.pick(&[b"\r\n" as &[u8], b"\r\n", b"\r\n", b"\n", b""]));
        }
        _ => {
            let n = c.below(24);
            w.extend_from_slice(c.take(n));
        }
    }
    w
}

fn chunk_size_line(c: &mut Choices, w: &mut Vec<u8>, size: usize) {
    let line = match c.below(8) {
        0 => format!("{size:X}"),
        1 => format!("000{size:x}"),
        2 => format!("{size:016x}"),
        3 => format!("{size:017x}"),
        4 => format!("+{size:x}"),
        5 => format!(" {size:x}"),
        _ => format!("{size:x}"),
    };
    w.extend_from_slice(line.as_bytes());
    w.extend_from_slice(c.pick(CHUNK_EXTS));
    w.extend_from_slice(c.pick(&[b"\r\n" as &[u8], b"\r\n", b"\r\n", b"\n", b"\r"]));
}

// ---------------------------------------------------------------------------
// Target: connection

/// How long the peer pauses, indexed by a control byte: around the park
/// linger (5 ms) and the timeouts below (0.5 s idle, 1 s otherwise).
const PAUSES_MS: [u64; 16] = [
    1, 2, 4, 6, 10, 50, 200, 400, 499, 501, 900, 999, 1001, 1500, 3000, 60_000,
];

const TIMEOUTS: Timeouts = Timeouts {
    header: Duration::from_secs(1),
    idle: Duration::from_millis(500),
    read: Duration::from_secs(1),
    write: Duration::from_secs(1),
    park: Duration::from_millis(5),
    wait: Duration::from_secs(1),
};

/// A clock that only moves when the transport says time passed.
#[derive(Clone)]
struct VirtualClock {
    base: Instant,
    offset: Rc<Cell<Duration>>,
}

impl Clock for VirtualClock {
    fn now(&self) -> Instant {
        self.base + self.offset.get()
    }
}

impl VirtualClock {
    /// Moves the clock to `t`, if that is later; whether it moved.
    fn advance_to(&self, t: Instant) -> bool {
        let moved = t > self.now();
        if moved {
            self.offset.set(t - self.base);
        }
        moved
    }
}

/// The peer, scripted: `payload` is what it sends, handed over in pieces
/// whose sizes, and the pauses and failures between them, come from `ctl`,
/// one control byte per read or write call. When the control bytes run out,
/// reads get everything left and writes take everything.
///
/// A control byte `b` means, by `b >> 5`: 0 to 3, a piece of a size from
/// 1 byte to everything (for a write, room for that much); 4 and 5, a pause
/// from [`PAUSES_MS`] (for a write, the peer stops reading for that long);
/// 6, an interrupted call; 7, end of stream or a reset (for a write, a
/// broken pipe).
struct Script<'a> {
    ctl: &'a [u8],
    payload: &'a [u8],
    /// Whether the peer closes once the payload is sent, or stays silent.
    eof_at_end: bool,
    clock: VirtualClock,
    /// Reads would block until then.
    quiet_until: Option<Instant>,
    /// Writes would block until then.
    full_until: Option<Instant>,
    /// Bytes left in the piece being read.
    piece: usize,
    /// The peer has closed its side.
    eof: bool,
    /// Payload bytes read so far.
    delivered: Vec<u8>,
    /// Bytes written so far.
    out: Vec<u8>,
    /// `out.len()` at the last read call.
    out_at_last_read: usize,
    /// Calls made, and the most allowed.
    calls: usize,
    budget: usize,
    /// Calls in a row that changed nothing.
    stalls: usize,
    closed: bool,
    /// The last write would block or failed, so the writer may have given
    /// up: the last response may be cut short. (A writer that goes on
    /// makes another call.)
    write_failed: bool,
}

impl Script<'_> {
    fn call(&mut self, what: &str) {
        assert!(!self.closed, "{what} after close");
        self.calls += 1;
        assert!(
            self.calls <= self.budget,
            "no end in sight: {} transport calls, over the budget of {} (8 per input byte)",
            self.calls,
            self.budget
        );
    }

    /// Notes whether a call made progress: the progress rule, seen from the
    /// transport. A few calls in a row may change nothing (a read that
    /// would block, then the wait that lets time pass), never more.
    fn progress(&mut self, made: bool) {
        if made {
            self.stalls = 0;
        } else {
            self.stalls += 1;
            assert!(
                self.stalls <= 4,
                "the loop spins: {} calls without progress",
                self.stalls
            );
        }
    }

    fn next_ctl(&mut self) -> Option<u8> {
        let (&b, rest) = self.ctl.split_first()?;
        self.ctl = rest;
        Some(b)
    }

    fn piece_len(b: u8) -> usize {
        let n = usize::from(b & 31) + 1;
        match b >> 5 {
            0 => n,
            1 => n * 16,
            2 => n * 512,
            _ => usize::MAX,
        }
    }

    fn pause(b: u8) -> Duration {
        Duration::from_millis(PAUSES_MS[usize::from(b & 15)])
    }

    /// When the peer will next have something to read (data or end of
    /// stream); `None` if never.
    fn readable_at(&self) -> Option<Instant> {
        let now = self.clock.now();
        match self.quiet_until {
            Some(t) if t > now => Some(t),
            _ if self.eof || !self.payload.is_empty() || !self.ctl.is_empty() => Some(now),
            _ if self.eof_at_end => Some(now),
            _ => None,
        }
    }
}

impl Script<'_> {
    /// A write as the script has it.
    fn write_script(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let now = self.clock.now();
        if let Some(t) = self.full_until {
            if now < t {
                self.progress(false);
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.full_until = None;
        }
        let room = match self.next_ctl() {
            None => usize::MAX,
            Some(b) => match b >> 5 {
                0..=3 => Script::piece_len(b),
                4 | 5 => {
                    self.progress(true);
                    self.full_until = Some(now + Script::pause(b));
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                6 => {
                    self.progress(true);
                    return Err(io::ErrorKind::Interrupted.into());
                }
                _ => {
                    self.progress(true);
                    return Err(io::ErrorKind::BrokenPipe.into());
                }
            },
        };
        let mut n = 0;
        for buf in bufs {
            let take = buf.len().min(room - n);
            self.out.extend_from_slice(&buf[..take]);
            n += take;
            if n == room {
                break;
            }
        }
        self.progress(n > 0);
        Ok(n)
    }
}

impl Transport for Script<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.call("read");
        assert!(
            !buf.is_empty(),
            "progress rule: a read with the receive buffer full"
        );
        self.out_at_last_read = self.out.len();
        let now = self.clock.now();
        if let Some(t) = self.quiet_until {
            if now < t {
                self.progress(false);
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.quiet_until = None;
        }
        if self.eof {
            self.progress(true);
            return Ok(0);
        }
        if self.piece == 0 {
            match self.next_ctl() {
                None => self.piece = usize::MAX,
                Some(b) => {
                    self.progress(true);
                    match b >> 5 {
                        0..=3 => self.piece = Script::piece_len(b),
                        4 | 5 => {
                            self.quiet_until = Some(now + Script::pause(b));
                            return Err(io::ErrorKind::WouldBlock.into());
                        }
                        6 => return Err(io::ErrorKind::Interrupted.into()),
                        _ if b & 1 == 0 => {
                            self.eof = true;
                            return Ok(0);
                        }
                        _ => return Err(io::ErrorKind::ConnectionReset.into()),
                    }
                }
            }
        }
        if self.payload.is_empty() {
            self.piece = 0;
            if self.eof_at_end {
                self.eof = true;
                self.progress(true);
                return Ok(0);
            }
            // The peer stays connected and says nothing more.
            self.progress(false);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.piece.min(buf.len()).min(self.payload.len());
        buf[..n].copy_from_slice(&self.payload[..n]);
        self.delivered.extend_from_slice(&self.payload[..n]);
        self.payload = &self.payload[n..];
        self.piece -= n;
        self.progress(true);
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.call("write");
        let result = self.write_script(bufs);
        self.write_failed = result
            .as_ref()
            .is_err_and(|e| e.kind() != io::ErrorKind::Interrupted);
        result
    }

    fn wait(&mut self, interest: Interest, timeout: Duration) -> io::Result<bool> {
        self.call("wait");
        let now = self.clock.now();
        let ready_at = match interest {
            Interest::Read => self.readable_at(),
            Interest::Write => Some(self.full_until.map_or(now, |t| t.max(now))),
        };
        let ready = ready_at.is_some_and(|t| t <= now + timeout);
        let until = if ready {
            ready_at.unwrap_or(now)
        } else {
            now + timeout
        };
        let moved = self.clock.advance_to(until);
        self.progress(moved);
        Ok(ready)
    }

    fn close(&mut self) {
        assert!(!self.closed, "closed twice");
        self.closed = true;
    }
}

/// The handler: answers with a body naming the request, a stream (chunked,
/// or close-delimited for HTTP/1.0), a 204, or a closing response,
/// depending on the path, and records what it saw. It may begin shutdown.
struct FuzzHandler {
    seen: Mutex<Vec<Request>>,
    shutdown: Arc<AtomicBool>,
    shutdown_after: Option<usize>,
}

impl Handler for FuzzHandler {
    fn handle(&self, req: &mut Request) -> Response {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let seq = seen.len();
        seen.push(req.clone());
        if self.shutdown_after == Some(seq) {
            self.shutdown.store(true, Ordering::Relaxed);
        }
        reply(req, seq)
    }

    fn wants_body(&self, _method: &str, path: &str) -> bool {
        wants_body(path)
    }
}

fn wants_body(path: &str) -> bool {
    !path.starts_with("/nobody")
}

/// What [`FuzzHandler`] answers to request number `seq`.
fn reply(req: &Request, seq: usize) -> Response {
    let path = req.path();
    let resp = if let Some(rest) = path.strip_prefix("/stream") {
        let digits: String = rest.chars().filter(char::is_ascii_digit).take(6).collect();
        let len = digits.parse().unwrap_or(100).min(70_000);
        Response::new(200).with_body(Body::Stream(Box::new(Pattern {
            at: 0,
            len,
            fail: rest.starts_with("err"),
        })))
    } else if path.starts_with("/empty") {
        Response::new(204)
    } else {
        let text = format!("{seq} {} {}\n", req.method(), req.body().len());
        Response::text(200, text)
    };
    let resp = resp.with_header("X-Seq", &seq.to_string());
    if path.starts_with("/close") {
        resp.with_close()
    } else {
        resp
    }
}

/// Whether sending [`reply`]'s response fails: a stream that errors, when
/// its body is sent at all.
fn reply_fails(req: &Request) -> bool {
    req.path().starts_with("/streamerr") && req.method() != "HEAD"
}

/// A streamed body: `len` bytes of the alphabet, or an error half way.
struct Pattern {
    at: usize,
    len: usize,
    fail: bool,
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // A failing stream stops at half its length, whatever the sizes of
        // the reads, so the bytes before the failure are known.
        let end = if self.fail { self.len / 2 } else { self.len };
        if self.fail && self.at == end {
            return Err(io::Error::other("the stream fails"));
        }
        let n = buf.len().min(end - self.at);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = b'a' + ((self.at + i) % 26) as u8;
        }
        self.at += n;
        Ok(n)
    }
}

/// The driver decisions that mirror [`FuzzHandler`] and the loop, for
/// replaying the delivered bytes through a plain [`Conn`].
struct Replay {
    seq: usize,
    shutdown_after: Option<usize>,
    shutdown: bool,
    /// Whether to refuse `100-continue` bodies as the handler does (else
    /// every body is wanted, which makes runs split differently comparable).
    refuse: bool,
}

impl Replay {
    fn new(shutdown_after: Option<usize>, refuse: bool) -> Replay {
        Replay {
            seq: 0,
            shutdown_after,
            shutdown: false,
            refuse,
        }
    }
}

impl Policy for Replay {
    fn wants_body(&mut self, head: &Head) -> bool {
        !self.refuse || (!self.shutdown && wants_body(head.path()))
    }

    fn respond(&mut self, req: &Request) -> (Response, bool, bool) {
        let resp = reply(req, self.seq);
        if self.shutdown_after == Some(self.seq) {
            self.shutdown = true;
        }
        self.seq += 1;
        (resp, self.shutdown, reply_fails(req))
    }
}

/// Statuses only the protocol layer sends (the handler sends 200 and 204).
const ERROR_STATUSES: [u16; 8] = [400, 408, 413, 414, 417, 431, 501, 505];

/// The real connection loop over a scripted peer. Input: a configuration
/// byte, the number of control bytes, the control bytes (see `Script`),
/// then what the peer sends.
///
/// The configuration byte: bits 0-1 pick the limits, bit 2 whether the peer
/// closes after sending everything (else it stays silent), bit 3 whether
/// other connections wait for a worker (so the loop parks at once), bits
/// 4-5 after which request shutdown begins (never, or the first to third),
/// bit 6 a zero park linger.
pub fn connection(data: &[u8]) {
    serve_script(data);
}

/// Runs [`connection`] and returns the requests served and the bytes
/// written, for the tests.
fn serve_script(data: &[u8]) -> (usize, usize) {
    let mut c = Choices::new(data);
    let config = c.byte();
    let n_ctl = usize::from(c.byte());
    let ctl = c.take(n_ctl);
    let payload = c.rest();

    let limits = pick_limits(config & 3);
    let shutdown_after = match (config >> 4) & 3 {
        0 => None,
        n => Some(usize::from(n) - 1),
    };
    let others_waiting = config & 8 != 0;
    let mut timeouts = TIMEOUTS;
    if config & 64 != 0 {
        timeouts.park = Duration::ZERO;
    }

    let clock = VirtualClock {
        base: Instant::now(),
        offset: Rc::new(Cell::new(Duration::ZERO)),
    };
    let shutdown = Arc::new(AtomicBool::new(false));
    let handler = FuzzHandler {
        seen: Mutex::new(Vec::new()),
        shutdown: shutdown.clone(),
        shutdown_after,
    };
    let metrics = Metrics::default();
    let waiting = move || others_waiting;
    let ctx = Ctx {
        handler: &handler,
        clock: &clock,
        timeouts,
        shutdown: &shutdown,
        others_waiting: &waiting,
        access_log: None,
        metrics: &metrics,
        max_waiting: u64::MAX,
    };
    let script = Script {
        ctl,
        payload,
        eof_at_end: config & 4 != 0,
        clock: clock.clone(),
        quiet_until: None,
        full_until: None,
        piece: 0,
        eof: false,
        delivered: Vec::new(),
        out: Vec::new(),
        out_at_last_read: 0,
        calls: 0,
        budget: 8 * data.len() + 64,
        stalls: 0,
        closed: false,
        write_failed: false,
    };
    let mut conn = Connection::new(script, None, limits, &timeouts, clock.now());

    // The worker serves; the parker waits for the peer or the deadline, as
    // `server.rs` does.
    loop {
        conn.io.call("serve");
        match conn::serve(&mut conn, &ctx) {
            Handoff::Close => break,
            // Back of the queue: the next worker serves it again.
            Handoff::Requeue => {}
            Handoff::Wait(_) => panic!("the fuzz handler never answers later"),
            Handoff::Park(deadline) => {
                assert!(deadline > clock.now(), "parked past its deadline");
                match conn.io.readable_at() {
                    Some(t) if t <= deadline => {
                        clock.advance_to(t);
                    }
                    _ => {
                        clock.advance_to(deadline);
                        let (_, expiry) = conn.deadline(&timeouts);
                        let parker_waiting = || true;
                        let mut parker = Ctx {
                            others_waiting: &parker_waiting,
                            ..ctx
                        };
                        parker.timeouts.write = Duration::from_millis(1);
                        conn::expire(&mut conn, &parker, expiry);
                        break;
                    }
                }
            }
        }
    }

    let seen = handler
        .seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let io = &conn.io;
    let replay = drive(
        limits,
        &[&io.delivered],
        &mut Replay::new(shutdown_after, true),
    );
    check_served(&seen, &replay, io, &metrics);

    // The same bytes one at a time: every byte is at the front of the
    // buffer at some point, so the progress rule is checked everywhere, not
    // only where the script's pieces happened to end.
    if io.delivered.len() <= 2048 {
        let whole = drive(
            limits,
            &[&io.delivered],
            &mut Replay::new(shutdown_after, false),
        );
        let bytes: Vec<&[u8]> = io.delivered.chunks(1).collect();
        let each = drive(limits, &bytes, &mut Replay::new(shutdown_after, false));
        assert_same(&whole, &each, "one byte at a time");
    }
    (seen.len(), io.out.len())
}

/// Compares what the loop did with what a plain [`Conn`] makes of the same
/// bytes, and parses what the loop wrote.
fn check_served(seen: &[Request], replay: &Run, io: &Script, metrics: &Metrics) {
    let failed = io.write_failed || metrics.write_timeouts.load(Ordering::Relaxed) > 0;
    let want: Vec<&Got> = replay
        .events
        .iter()
        .filter_map(|e| match e {
            Ev::Req(g) => Some(g),
            _ => None,
        })
        .collect();
    let last = seen.len().wrapping_sub(1);

    // The requests the handler saw are those the bytes hold, in order. The
    // last may have been answered without its body (100-continue refused),
    // and a failed write ends the connection early.
    assert!(
        seen.len() <= want.len(),
        "the handler saw requests the bytes do not hold"
    );
    let mut body_refused = false;
    for (k, (req, got)) in seen.iter().zip(&want).enumerate() {
        let same = (req.method(), req.target(), req.version())
            == (&*got.method, &*got.target, got.version);
        assert!(same, "request {k}: handler saw {req:?}, replay {got:?}");
        if req.body() != got.body {
            assert!(
                k == last && req.body().is_empty() && req.head().expect_continue,
                "request {k}: body differs"
            );
            body_refused = true;
        }
    }
    let complete = seen.len() == want.len() && !body_refused;
    if !complete {
        assert!(
            failed || body_refused || seen.last().is_some_and(reply_fails),
            "{} requests served of {}",
            seen.len(),
            want.len()
        );
    }

    // The output: per request, maybe a 100 Continue, then its response;
    // then maybe one error response; nothing else.
    let out = &io.out;
    let mut pos = 0;
    for (k, req) in seen.iter().enumerate() {
        let head_only = req.method() == "HEAD";
        let mut resp = match parse_response(&out[pos..], head_only) {
            Ok(Some(r)) => r,
            Ok(None) => {
                let cut = failed || reply_fails(req);
                assert!(cut, "response {k} cut short without cause");
                return;
            }
            Err(e) => panic!(
                "response {k}: {e}: {:?}",
                String::from_utf8_lossy(&out[pos..])
            ),
        };
        if resp.status == 100 {
            assert!(req.head().expect_continue, "100 Continue unasked");
            pos += resp.len;
            resp = match parse_response(&out[pos..], head_only) {
                Ok(Some(r)) => r,
                Ok(None) => {
                    assert!(
                        failed || reply_fails(req),
                        "response {k} cut short without cause"
                    );
                    return;
                }
                Err(e) => panic!("response {k}: {e}"),
            };
        }
        let mut want_resp = reply(req, k);
        assert_eq!(resp.status, want_resp.status(), "response {k}: status");
        assert_eq!(resp.seq, Some(k), "response {k}: out of order");
        if !head_only && resp.status != 204 {
            let want_body = match want_resp.take_body() {
                Body::Stream(mut r) => {
                    let mut v = Vec::new();
                    let _ = r.read_to_end(&mut v);
                    v
                }
                b => b.as_slice().unwrap_or_default().to_vec(),
            };
            if resp.until_close && failed {
                // Only the close says where such a body ends, so a failed
                // write looks like a short body.
                assert!(want_body.starts_with(&resp.body), "response {k}: body");
            } else {
                assert_eq!(resp.body, want_body, "response {k}: body");
            }
        }
        pos += resp.len;
        if resp.close {
            assert_eq!(k, last, "response {k} closes, yet more followed");
            assert_eq!(pos, out.len(), "bytes after a closing response");
            assert!(
                io.out_at_last_read <= pos - resp.len,
                "read after a closing response"
            );
        }
    }
    // A 100 Continue for a body that never came, or broke the protocol.
    if let Ok(Some(resp)) = parse_response(&out[pos..], false) {
        if resp.status == 100 {
            assert!(
                complete && replay.phase != Some(Phase::Idle),
                "100 Continue out of place"
            );
            pos += resp.len;
        }
    }
    if pos == out.len() {
        return;
    }
    let resp = match parse_response(&out[pos..], false) {
        Ok(Some(r)) => r,
        Ok(None) => {
            assert!(failed, "error response cut short without cause");
            return;
        }
        Err(e) => panic!("error response: {e}"),
    };
    assert!(
        ERROR_STATUSES.contains(&resp.status),
        "unexpected response {}",
        resp.status
    );
    assert!(resp.close, "an error response must close");
    assert_eq!(pos + resp.len, out.len(), "bytes after an error response");
    assert!(io.out_at_last_read <= pos, "read after an error response");
    assert!(io.closed, "not closed after an error response");
    assert!(complete, "an error response after requests were dropped");
    match (replay.events.last(), resp.status) {
        (Some(Ev::Err(status)), got) => assert_eq!(*status, got, "error status"),
        (_, 408) => assert_eq!(
            replay.phase,
            Some(Phase::Head),
            "408 without a partial head"
        ),
        (last, got) => panic!("error response {got} after {last:?}"),
    }
}

/// A parsed response: its status, whether it closes, its `X-Seq`, its body
/// and its length on the wire.
#[derive(Debug)]
struct Parsed {
    status: u16,
    close: bool,
    seq: Option<usize>,
    body: Vec<u8>,
    /// The body is delimited by the end of the connection.
    until_close: bool,
    len: usize,
}

/// Parses the response at the start of `out` as an HTTP/1.1 client would,
/// strictly: `Ok(None)` if it is cut short, `Err` if it is malformed.
fn parse_response(out: &[u8], head_only: bool) -> Result<Option<Parsed>, String> {
    let Some(head_len) = out.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4) else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&out[..head_len - 4]).map_err(|_| "head not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    if status_line != format!("HTTP/1.1 {status} {}", reason(status)) {
        return Err(format!("bad status line {status_line:?}"));
    }
    let mut close = false;
    let mut seq = None;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line
            .split_once(": ")
            .ok_or_else(|| format!("bad field {line:?}"))?;
        if name.is_empty()
            || !name.bytes().all(is_tchar)
            || value.bytes().any(|b| b < 0x20 && b != b'\t')
        {
            return Err(format!("bad field {line:?}"));
        }
        match name.to_ascii_lowercase().as_str() {
            "connection" if value == "close" => close = true,
            "connection" if value == "keep-alive" => {}
            "connection" => return Err(format!("Connection: {value}")),
            "x-seq" => seq = value.parse().ok(),
            "content-length" if length.is_none() => {
                length = Some(value.parse::<usize>().map_err(|_| "bad Content-Length")?);
            }
            "transfer-encoding" if value == "chunked" && !chunked => chunked = true,
            "content-length" | "transfer-encoding" => {
                return Err(format!("framing field {line:?}"))
            }
            _ => {}
        }
    }
    if chunked && length.is_some() {
        return Err("both Content-Length and chunked".into());
    }
    let rest = &out[head_len..];
    let no_body = head_only || (100..200).contains(&status) || status == 204 || status == 304;
    let (body, body_len) = if no_body {
        (Vec::new(), 0)
    } else if chunked {
        let mut body = Vec::new();
        let mut at = 0;
        loop {
            let Some(eol) = rest[at..].windows(2).position(|w| w == b"\r\n") else {
                return Ok(None);
            };
            let size_hex =
                std::str::from_utf8(&rest[at..at + eol]).map_err(|_| "bad chunk size")?;
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| format!("chunk size {size_hex:?}"))?;
            at += eol + 2;
            if rest.len() < at + size + 2 {
                return Ok(None);
            }
            if size == 0 {
                if &rest[at..at + 2] != b"\r\n" {
                    return Err("no final CRLF".into());
                }
                break (body, at + 2);
            }
            body.extend_from_slice(&rest[at..at + size]);
            if &rest[at + size..at + size + 2] != b"\r\n" {
                return Err("no CRLF after chunk".into());
            }
            at += size + 2;
        }
    } else if let Some(n) = length {
        if rest.len() < n {
            return Ok(None);
        }
        (rest[..n].to_vec(), n)
    } else {
        // Close-delimited: everything that follows, and the connection ends.
        if !close {
            return Err("no framing, yet the connection persists".into());
        }
        (rest.to_vec(), rest.len())
    };
    Ok(Some(Parsed {
        status,
        close,
        seq,
        body,
        until_close: !no_body && !chunked && length.is_none(),
        len: head_len + body_len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Runs every file in `fuzz/corpus/<name>/` through `target`, naming
    /// the file that fails.
    fn replay(name: &str, target: fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("corpus entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{}: no seeds", dir.display());
        for file in files {
            let data = std::fs::read(&file).expect("read a corpus file");
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                panic!("{} fails", file.display());
            }
        }
    }

    #[test]
    fn replay_request_head() {
        replay("request_head", request_head);
    }

    #[test]
    fn replay_chunked_body() {
        replay("chunked_body", chunked_body);
    }

    #[test]
    fn replay_connection() {
        replay("connection", connection);
    }

    #[test]
    fn replay_differential() {
        replay("differential", differential);
    }

    /// The all-zero input of the grammar is a plain valid request.
    #[test]
    fn zero_choices_make_a_valid_request() {
        let input = generate(&mut Choices::new(&[]));
        assert_eq!(input, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        let events = reference(&input, SMALL);
        assert!(matches!(events.as_slice(), [Ev::Req(_)]), "{events:?}");
    }

    /// The reference agrees with the unit tables' verdicts on a few classics.
    #[test]
    fn reference_classics() {
        let cases: &[(&[u8], bool)] = &[
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", false),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", false),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello", true),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", false),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n", false),
            (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", false),
            (b"GET / HTTP/1.1\nHost: a\n\n", true),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", false),
        ];
        for (input, ok) in cases {
            let events = reference(input, SMALL);
            assert_eq!(
                matches!(events.first(), Some(Ev::Req(_))),
                *ok,
                "{:?}",
                String::from_utf8_lossy(input)
            );
            let run = drive(SMALL, &[input], &mut Plain);
            assert_eq!(run.events.len(), events.len());
        }
    }

    /// A few connection scripts: whole, byte by byte, with pauses past the
    /// deadlines, with writes that stall, parking at once, and shutdown.
    #[test]
    fn connection_scripts() {
        let requests = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
            POST /stream/70000 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi\
            GET /x HTTP/1.0\r\n\r\n";
        let with = |config: u8, ctl: &[u8]| {
            let mut data = vec![config, ctl.len() as u8];
            data.extend_from_slice(ctl);
            data.extend_from_slice(requests);
            data
        };
        let served = |config, ctl| serve_script(&with(config, ctl)).0;
        assert_eq!(served(4, &[]), 3, "all at once, then EOF");
        assert_eq!(served(0, &[]), 3, "all at once, then silence");
        assert_eq!(served(4, &[0; 200]), 3, "one byte per read");
        assert_eq!(served(8, &[0x03, 0xa0, 0x0f]), 3, "parking at once");
        assert_eq!(served(0x14, &[]), 1, "shutdown during the first");
        // A pause longer than the header timeout after 4 bytes: 408.
        let (n, written) = serve_script(&with(4, &[0x03, 0x8f]));
        assert_eq!(n, 0);
        assert!(written > 0, "a 408 is sent");
        // A pause longer than the idle timeout after the first request.
        assert_eq!(served(4, &[0x1a, 0x8e]), 1, "idle timeout");
        // The peer stops reading for longer than the write timeout.
        assert_eq!(served(4, &[0x7f, 0x8e, 0x8e]), 1, "write timeout");
        assert_eq!(serve_script(&[0x44, 0, b'G']).0, 0);
    }
}
