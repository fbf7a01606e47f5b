//! Driving [`Conn`] directly, as `conn::serve` does, checking the progress
//! rule on every poll. The fuzz targets and the table tests in
//! `src/http/tests.rs` share this one driver, so both check the same rule.

use crate::http::{Conn, Event, Head, HeadOutcome, Limits, Phase, Request, Response, Version};

/// A delivered request, reduced to what the targets and the tables compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Got {
    pub(crate) method: String,
    pub(crate) target: String,
    pub(crate) version: Version,
    pub(crate) body: Vec<u8>,
    pub(crate) keep_alive: bool,
}

impl Got {
    pub(crate) fn of(req: &Request) -> Got {
        Got {
            method: req.method().to_owned(),
            target: req.target().to_owned(),
            version: req.version(),
            body: req.body().to_vec(),
            keep_alive: req.head().keep_alive,
        }
    }
}

/// What a driver saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ev {
    Continue,
    Req(Got),
    Err(u16),
    Closed,
}

/// What a driver run saw and wrote.
#[derive(Debug, Default)]
pub(crate) struct Run {
    pub(crate) events: Vec<Ev>,
    /// Each delivered request, in order.
    pub(crate) requests: Vec<Request>,
    /// Offset in the input just past each delivered request, body included.
    pub(crate) ends: Vec<usize>,
    /// Each response head written, request or error, in order.
    pub(crate) heads: Vec<String>,
    /// What writing each of those heads decided.
    pub(crate) outcomes: Vec<HeadOutcome>,
    /// Bytes received but not consumed when the input ran out.
    pub(crate) buffered: usize,
    /// Where the connection stood at the end.
    pub(crate) phase: Option<Phase>,
}

impl Run {
    /// The events without `Continue`, which depends on how the input was
    /// split (it is sent only while the body is still missing).
    pub(crate) fn verdict(&self) -> Vec<Ev> {
        self.events
            .iter()
            .filter(|e| **e != Ev::Continue)
            .cloned()
            .collect()
    }

    fn closed(&self) -> bool {
        self.events.last() == Some(&Ev::Closed)
    }
}

/// Decisions a driver takes for its requests.
pub(crate) trait Policy {
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
pub(crate) struct Plain;

impl Policy for Plain {}

/// Feeds `pieces` to a fresh [`Conn`], one read each (several if the buffer
/// is short of room), polling until it needs more after each read, and
/// answering every request and every error as the connection loop does.
/// Bytes keep arriving after `Closed`, while they fit, to show that nothing
/// more is delivered; a response that fails to send ends the run at once.
pub(crate) fn drive(limits: Limits, pieces: &[&[u8]], policy: &mut dyn Policy) -> Run {
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
            if n == 0 {
                // A closed connection reads no more, so its buffer fills.
                assert!(
                    run.closed(),
                    "progress rule: Conn asked for more with its buffer full ({} bytes)",
                    conn.buffered()
                );
                break 'pieces;
            }
            rest = &rest[n..];
            fed += n;
            assert!(
                conn.buffered() <= max_buffered_bytes(limits),
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

/// The most bytes a receive buffer may hold: a head at its limit and the
/// bytes that show it went over, or a body-sized read.
fn max_buffered_bytes(limits: Limits) -> usize {
    (limits.max_head_bytes + 4).max(64 * 1024)
}

/// Polls until `conn` needs more input or has closed; false once a
/// response failed to send.
fn pump(
    conn: &mut Conn,
    run: &mut Run,
    limits: Limits,
    fed: usize,
    policy: &mut dyn Policy,
) -> bool {
    // Each event consumes bytes or moves the state on, and `Closed` ends the
    // loop, so a few polls per buffered byte is a generous bound.
    for _ in 0..4 * (conn.buffered() + 4) {
        let event = conn.poll();
        if !matches!(event, Event::NeedMore | Event::Closed) {
            assert!(!run.closed(), "{event:?} after Closed");
        }
        match event {
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
                run.events.push(Ev::Continue);
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
                let outcome = write_head(conn, run, &Conn::error_response(&e), false);
                assert!(!outcome.keep_alive, "an error response must close");
                conn.response_sent();
            }
            Event::Closed => {
                assert_eq!(conn.phase(), Phase::Closed);
                if !run.closed() {
                    run.events.push(Ev::Closed);
                }
                return true;
            }
        }
    }
    panic!("poll keeps returning events without progress");
}

/// Records a delivered request and answers it; false if sending fails.
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
    run.events.push(Ev::Req(Got::of(&req)));
    run.ends.push(fed - conn.buffered());
    let (resp, close, fails) = policy.respond(&req);
    run.requests.push(req);
    write_head(conn, run, &resp, close);
    if fails {
        run.events.push(Ev::Closed);
        return false;
    }
    conn.response_sent();
    true
}

/// Writes the head of `resp` and records it.
fn write_head(conn: &mut Conn, run: &mut Run, resp: &Response, close: bool) -> HeadOutcome {
    let mut out = Vec::new();
    let outcome = conn.write_head(resp, close, &mut out);
    run.heads
        .push(String::from_utf8(out).expect("a response head is ASCII"));
    run.outcomes.push(outcome);
    outcome
}

/// Cut points for `input` from two fuzzer bytes, as fractions of its length.
pub(super) fn cuts(input: &[u8], a: u8, b: u8) -> Vec<&[u8]> {
    let at = |x: u8| input.len() * usize::from(x) / 255;
    let (mut i, mut j) = (at(a), at(b));
    if i > j {
        std::mem::swap(&mut i, &mut j);
    }
    vec![&input[..i], &input[i..j], &input[j..]]
}

/// Whether two runs of the same input, split differently, agree.
pub(super) fn assert_same(whole: &Run, other: &Run, how: &str) {
    let events = whole.verdict();
    assert_eq!(events, other.verdict(), "whole vs {how}: events differ");
    assert_eq!(
        whole.ends, other.ends,
        "whole vs {how}: request ends differ"
    );
    if matches!(events.last(), None | Some(Ev::Req(_))) {
        // Both read everything and are waiting for more.
        assert_eq!(
            whole.buffered, other.buffered,
            "whole vs {how}: bytes left over"
        );
        assert_eq!(whole.phase, other.phase, "whole vs {how}: phase");
    }
}
