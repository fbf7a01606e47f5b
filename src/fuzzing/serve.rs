//! The `connection` target's far side and its verdict: a handler for the
//! real connection loop to serve, the same decisions replayed through a
//! plain `Conn`, and the checks on what the loop wrote to the scripted peer.
//! Requests the handler answers later, and the parker's part in them, are
//! in `wait.rs`.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::choices::Choices;
use super::driver::{assert_same, drive, Ev, Got, Policy, Run};
use super::pick_limits;
use super::response::{parse_response, Parsed};
use super::transport::{Script, VirtualClock, TIMEOUTS};
use super::wait::{self, After, Check, Deferred, Expect};
use crate::conn::{self, Clock, Connection, Ctx, Handoff};
use crate::http::{Body, Head, Phase, Request, Response};
use crate::metrics::Metrics;
use crate::router::Handler;

/// The handler: answers with a body naming the request, a stream (chunked,
/// or close-delimited for HTTP/1.0), a 204, or a closing response,
/// depending on the path, now or later, and records what it saw. It may
/// begin shutdown.
struct FuzzHandler {
    seen: Mutex<Vec<Request>>,
    shutdown: Arc<AtomicBool>,
    shutdown_after: Option<usize>,
    deferred: Deferred,
}

impl Handler for FuzzHandler {
    fn handle(&self, req: &mut Request) -> Response {
        let seq = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.push(req.clone());
            seen.len() - 1
        };
        if self.shutdown_after == Some(seq) {
            self.shutdown.store(true, Ordering::Relaxed);
        }
        let resp = reply(req, seq);
        match wait::fate(req.path()) {
            Some(fate) => self.deferred.answer(seq, fate, resp),
            None => resp,
        }
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

/// What decides the answer to a request besides its path.
#[derive(Debug, Clone, Copy)]
struct Rules {
    /// [`Ctx::max_waiting`].
    max_waiting: u64,
    /// How long a request may wait for its answer.
    wait: Duration,
}

impl Rules {
    /// What the client must get for `req`.
    fn expect(&self, req: &Request) -> Expect {
        wait::expect(req.path(), self.max_waiting, self.wait)
    }

    /// Whether sending the response to `req` fails.
    fn fails(&self, req: &Request) -> bool {
        self.expect(req) == Expect::Answer && reply_fails(req)
    }
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
/// replaying the delivered bytes through a plain [`Conn`](crate::http::Conn).
struct Replay {
    seq: usize,
    shutdown_after: Option<usize>,
    shutdown: bool,
    /// Whether to refuse `100-continue` bodies as the handler does (else
    /// every body is wanted, which makes runs split differently comparable).
    refuse: bool,
    rules: Rules,
}

impl Replay {
    fn new(shutdown_after: Option<usize>, refuse: bool, rules: Rules) -> Replay {
        Replay {
            seq: 0,
            shutdown_after,
            shutdown: false,
            refuse,
            rules,
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
        // The loop's own answers to a wait; only their framing matters here.
        let unavailable = Response::error(503, "").with_header("Retry-After", "1");
        match self.rules.expect(req) {
            Expect::Answer => (resp, self.shutdown, reply_fails(req)),
            Expect::Unavailable => (unavailable, self.shutdown, false),
            Expect::Dropped => (Response::error(500, ""), self.shutdown, false),
            Expect::GivenUp => (unavailable, true, false),
            // Nothing is sent, and nothing more read.
            Expect::Gone => (resp, true, true),
        }
    }
}

/// Statuses only the protocol layer sends (the handler sends 200 and 204).
const ERROR_STATUSES: [u16; 8] = [400, 408, 413, 414, 417, 431, 501, 505];

/// One run of the `connection` target, laid out.
pub(super) struct Setup<'a> {
    /// The configuration byte (see [`connection`](super::connection)).
    pub(super) config: u8,
    /// The script's control bytes.
    pub(super) ctl: &'a [u8],
    /// What the peer sends.
    pub(super) payload: &'a [u8],
    /// How long the new connection waits for a worker before `serve` first
    /// runs: past its header deadline, what has arrived is still read.
    pub(super) queued: Duration,
}

/// What a run did, for the tests.
#[cfg_attr(not(test), allow(dead_code))]
pub(super) struct Outcome {
    /// Requests the handler saw.
    pub(super) served: usize,
    /// Bytes written.
    pub(super) written: usize,
    /// The status of each final response written, in order.
    pub(super) statuses: Vec<u16>,
    /// Times `serve` returned [`Handoff::Wait`].
    pub(super) waits: usize,
    /// The counters.
    pub(super) metrics: Arc<Metrics>,
}

/// Runs [`connection`](super::connection) on `data`.
pub(super) fn serve_script(data: &[u8]) -> Outcome {
    let mut c = Choices::new(data);
    let config = c.byte();
    let n_ctl = usize::from(c.byte());
    let ctl = c.take(n_ctl);
    let payload = c.rest();
    run(&Setup {
        config,
        ctl,
        payload,
        queued: Duration::ZERO,
    })
}

/// Runs the real connection loop on `setup` and checks what it did.
pub(super) fn run(setup: &Setup<'_>) -> Outcome {
    let Setup {
        config,
        ctl,
        payload,
        queued,
    } = *setup;
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
    // One slot is enough for this connection's waits (the handler says how
    // many other connections hold one); none refuses every wait.
    let rules = Rules {
        max_waiting: u64::from(config & 128 == 0),
        wait: timeouts.wait,
    };

    let clock = VirtualClock::new();
    let shutdown = Arc::new(AtomicBool::new(false));
    let metrics = Arc::new(Metrics::default());
    let handler = FuzzHandler {
        seen: Mutex::new(Vec::new()),
        shutdown: shutdown.clone(),
        shutdown_after,
        deferred: Deferred::new(rules.max_waiting, metrics.clone()),
    };
    let waiting = move || others_waiting;
    let ctx = Ctx {
        handler: &handler,
        clock: &clock,
        timeouts,
        shutdown: &shutdown,
        // As in the server: a drain closes responses before it closes the
        // listeners; here both begin together.
        draining: &shutdown,
        others_waiting: &waiting,
        before_wait: &|| {},
        access_log: None,
        metrics: &metrics,
        max_waiting: rules.max_waiting,
    };
    let script = Script::new(
        ctl,
        payload,
        config & 4 != 0,
        clock.clone(),
        8 * (2 + ctl.len() + payload.len()) + 64,
    );
    let mut conn = Connection::new(script, None, limits, &timeouts, clock.now());
    clock.advance_to(clock.now() + queued);

    // The worker serves; the parker waits for the peer, the answer or the
    // deadline, as `server.rs` does.
    let mut waited = Vec::new();
    let mut check = Check::None;
    loop {
        conn.io.call("serve");
        let handoff = conn::serve(&mut conn, &ctx);
        std::mem::replace(&mut check, Check::None).after(handoff, &conn.io);
        if let Handoff::Wait(deadline) = handoff {
            assert!(deadline > clock.now(), "waits past its deadline");
        } else {
            handler.deferred.check_refused();
        }
        match handoff {
            Handoff::Close => break,
            // Back of the queue: the next worker serves it again.
            Handoff::Requeue => conn.io.requeued(),
            Handoff::Wait(deadline) => {
                let (seq, after) =
                    wait::park(&handler.deferred, &mut conn, &ctx, &shutdown, deadline);
                waited.push(seq);
                match after {
                    After::Resume(next) => check = next,
                    After::Ended => break,
                }
            }
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
                            before_wait: &|| {},
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
        &mut Replay::new(shutdown_after, true, rules),
    );
    let statuses = check_served(&seen, &replay, io, &metrics, rules, &waited);
    wait::check_counts(&seen, &waited, &metrics, rules.max_waiting, rules.wait);

    // The same bytes one at a time: every byte is at the front of the
    // buffer at some point, so the progress rule is checked everywhere, not
    // only where the script's pieces happened to end.
    if io.delivered.len() <= 2048 {
        let whole = drive(
            limits,
            &[&io.delivered],
            &mut Replay::new(shutdown_after, false, rules),
        );
        let bytes: Vec<&[u8]> = io.delivered.chunks(1).collect();
        let each = drive(
            limits,
            &bytes,
            &mut Replay::new(shutdown_after, false, rules),
        );
        assert_same(&whole, &each, "one byte at a time");
    }
    Outcome {
        served: seen.len(),
        written: io.out.len(),
        statuses,
        waits: waited.len(),
        metrics: metrics.clone(),
    }
}

/// Compares what the loop did with what a plain [`Conn`](crate::http::Conn)
/// makes of the same bytes, and parses what the loop wrote. Returns the
/// status of each final response.
fn check_served(
    seen: &[Request],
    replay: &Run,
    io: &Script,
    metrics: &Metrics,
    rules: Rules,
    waited: &[usize],
) -> Vec<u16> {
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
            failed || body_refused || seen.last().is_some_and(|r| rules.fails(r)),
            "{} requests served of {}",
            seen.len(),
            want.len()
        );
    }

    // The output: per request, maybe a 100 Continue, then its response
    // (none for a client that left while it waited); then maybe one error
    // response; nothing else.
    let out = &io.out;
    let mut pos = 0;
    let mut statuses = Vec::new();
    for (k, req) in seen.iter().enumerate() {
        let head_only = req.method() == "HEAD";
        let expect = rules.expect(req);
        let parse = |pos: usize| match parse_response(&out[pos..], head_only) {
            Ok(Some(r)) => Some(r),
            Ok(None) if expect == Expect::Gone => {
                assert_eq!(k, last, "request {k} read after its client left");
                assert_eq!(pos, out.len(), "response {k} sent to a client that left");
                None
            }
            Ok(None) => {
                assert!(
                    failed || rules.fails(req),
                    "response {k} cut short without cause"
                );
                None
            }
            Err(e) => panic!(
                "response {k}: {e}: {:?}",
                String::from_utf8_lossy(&out[pos..])
            ),
        };
        let Some(mut resp) = parse(pos) else {
            return statuses;
        };
        if resp.status == 100 {
            assert!(req.head().expect_continue, "100 Continue unasked");
            pos += resp.len;
            let Some(r) = parse(pos) else {
                return statuses;
            };
            resp = r;
        }
        statuses.push(resp.status);
        // A request that waited: nothing was written while it waited, and
        // nothing read before its response was written out.
        let mark = waited.iter().position(|&s| s == k).map(|i| io.waits[i]);
        if let Some((at_wait, first_read)) = mark {
            assert_eq!(at_wait, pos, "response {k}: written to while it waited");
            assert!(
                first_read.is_none_or(|at| at >= pos + resp.len),
                "response {k}: read pipelined bytes before the answer to a waiting request"
            );
        }
        match expect {
            Expect::Answer => check_answer(k, req, &resp, failed),
            Expect::Unavailable | Expect::GivenUp | Expect::Dropped => {
                let status = if expect == Expect::Dropped { 500 } else { 503 };
                assert_eq!(resp.status, status, "response {k}: status");
                assert_eq!(
                    resp.seq, None,
                    "response {k}: the handler's, not the loop's"
                );
                assert_eq!(resp.retry_after, status == 503, "response {k}: Retry-After");
                if expect == Expect::GivenUp {
                    assert!(
                        resp.close,
                        "response {k}: the drain is over, yet it persists"
                    );
                }
            }
            Expect::Gone => panic!("response {k} sent to a client that left"),
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
        return statuses;
    }
    let resp = match parse_response(&out[pos..], false) {
        Ok(Some(r)) => r,
        Ok(None) => {
            assert!(failed, "error response cut short without cause");
            return statuses;
        }
        Err(e) => panic!("error response: {e}"),
    };
    statuses.push(resp.status);
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
    // The driver follows an error with the close, and nothing else.
    match (replay.events.as_slice(), resp.status) {
        ([.., Ev::Err(status), Ev::Closed], got) => assert_eq!(*status, got, "error status"),
        (_, 408) => assert!(
            matches!(replay.phase, Some(Phase::Head | Phase::Body)),
            "408 without a partial request"
        ),
        (events, got) => panic!("error response {got} after {:?}", events.last()),
    }
    statuses
}

/// Checks response `k`, which carries the handler's answer to `req`.
fn check_answer(k: usize, req: &Request, resp: &Parsed, failed: bool) {
    let mut want_resp = reply(req, k);
    assert_eq!(resp.status, want_resp.status(), "response {k}: status");
    assert_eq!(resp.seq, Some(k), "response {k}: out of order");
    if req.method() != "HEAD" && resp.status != 204 {
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
}
