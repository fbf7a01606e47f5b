//! The bodies of the fuzz targets in `fuzz/`, kept in the library so that a
//! plain `cargo test` replays every committed corpus file through the same
//! functions (see `tests.rs`), without nightly.
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
//!   stream, under a virtual clock, with a simulated parker. The handler
//!   answers some requests later (the path says so, and how the wait ends:
//!   the answer comes, the deadline passes, the reply is dropped, the client
//!   hangs up, the drain ends, or no waiting slot is free), and the parker
//!   plays each wait out on the virtual clock. It ends within a number of
//!   transport calls proportional to the input, never spins, and writes a
//!   well-formed response per request, in order, with the status the path
//!   predicts, the requests being the ones a plain [`Conn`] finds in the
//!   same bytes (fed whole, and one byte at a time with the progress rule
//!   checked on every poll); nothing is read or written while a request
//!   waits, nor read after it until its response is out; after an error
//!   response nothing more is read.
//! - [`differential`]: requests built from a grammar (odd whitespace, case,
//!   duplicated and folded fields, every Content-Length and
//!   Transfer-Encoding combination, bodies right and wrong), framed by
//!   [`Conn`] and by a plain reference decoder written here; any
//!   disagreement about where a request ends, what its body is, or whether
//!   it is rejected, is a crash. This is how smuggling bugs show up.
//! - [`upstream_response`]: any bytes as an upstream's response into the
//!   proxy's parser, whole, split and one byte at a time: the same
//!   verdict, the progress rule on every call, bounded buffering (in
//!   `upstream`, beside its driver).
//!
//! The targets are here; their parts beside them: `choices` (the input read
//! as choices), `driver` (a plain [`Conn`] driven as the connection loop
//! does, shared with the table tests in `src/http/tests.rs`), `reference`
//! (the reference decoders), `grammar` (the request grammar), `transport`
//! (the scripted peer and its virtual clock), `serve` (the handler and the
//! checks on what the loop wrote), `wait` (answers that come later, and the
//! parker's part in them) and `response` (a strict response parser). The
//! table tests of `conn::serve` on the same driver are in `wait_tests`.
//!
//! Nothing here is part of the server. It is compiled for the tests and
//! behind the `fuzzing` feature, which only the fuzz crate turns on; it is
//! public, and hidden, only so that crate can call it.
//!
//! [`Conn`]: crate::http::Conn
//! [`Decoder`]: crate::http::Decoder
//! [`conn::serve`]: crate::conn::serve

mod choices;
pub(crate) mod driver;
mod grammar;
mod reference;
mod response;
mod serve;
#[cfg(test)]
mod tests;
mod transport;
pub(crate) mod upstream;
mod wait;
#[cfg(test)]
mod wait_tests;

pub use upstream::upstream_response;

use crate::http::request::{self, Framing};
use crate::http::{BodyLimits, Decoder, Head, HeadLimits, Limits, Phase, Version};
use choices::Choices;
use driver::{assert_same, cuts, drive, Ev, Plain, Run};
use grammar::generate;
use reference::{head_end, line_verdict, ref_chunked, reference, Stop};
use serve::serve_script;

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

/// The body limits [`Conn`](crate::http::Conn) gives a chunked decoder.
fn chunked_limits(limits: Limits) -> BodyLimits {
    BodyLimits {
        max_body_bytes: limits.max_body_bytes,
        max_trailer_bytes: limits.max_head_bytes,
        max_trailers: limits.max_headers,
    }
}

// ---------------------------------------------------------------------------
// Target: request_head

/// Arbitrary bytes into the head path of [`Conn`](crate::http::Conn): the first byte picks the
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
/// its head (whose request line is refused as soon as an independent
/// reference can tell, whose end an independent line-by-line search finds,
/// and whose verdict is the one `parse_head` gives on exactly those bytes)
/// and then exactly its body.
fn check_heads(input: &[u8], limits: Limits, run: &Run) {
    let mut pos = 0;
    let verdict = run.verdict();
    let mut events = verdict.iter();
    let mut delivered = run.requests.iter().zip(&run.ends);
    loop {
        let rest = &input[pos..];
        let event = events.next();
        if let Some(status) = line_verdict(rest, limits.max_head_bytes) {
            assert_eq!(
                event,
                Some(&Ev::Err(status)),
                "request line {:?}",
                String::from_utf8_lossy(&rest[..rest.len().min(200)])
            );
            return;
        }
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
                let (req, &end) = delivered.next().expect("each request recorded");
                assert_eq!(got.body, want, "body");
                assert_eq!(end, pos + len + body_len, "where the request ends");
                assert_eq!(req.head(), &head, "head");
                if !got.keep_alive {
                    assert_eq!(events.next(), Some(&Ev::Closed));
                    return;
                }
                pos = end;
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
// Target: differential

/// Requests built from a grammar of request lines, header fields and
/// bodies, framed by [`Conn`](crate::http::Conn) (whole and split) and by the reference
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
    let (want, want_ends) = reference(&input, limits);
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
        (verdicts(&whole.verdict()), &whole.ends),
        (verdicts(&want), &want_ends),
        "Conn and the reference disagree on {:?}",
        String::from_utf8_lossy(&input)
    );
}

// ---------------------------------------------------------------------------
// Target: connection

/// The real connection loop over a scripted peer. Input: a configuration
/// byte, the number of control bytes, the control bytes (see `Script`),
/// then what the peer sends.
///
/// The configuration byte: bits 0-1 pick the limits, bit 2 whether the peer
/// closes after sending everything (else it stays silent), bit 3 whether
/// other connections wait for a worker (so the loop parks at once), bits
/// 4-5 after which request shutdown begins (never, or the first to third),
/// bit 6 a zero park linger, bit 7 no request may wait for a later answer
/// (`max_waiting` 0). Paths with a `/later/` segment are answered later;
/// `wait.rs` lists how.
pub fn connection(data: &[u8]) {
    serve_script(data);
}
