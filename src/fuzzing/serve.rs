//! The `connection` target's far side and its verdict: a handler for the
//! real connection loop to serve, the same decisions replayed through a
//! plain `Conn`, and the checks on what the loop wrote to the scripted peer.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::choices::Choices;
use super::driver::{assert_same, drive, Ev, Got, Policy, Run};
use super::pick_limits;
use super::response::parse_response;
use super::transport::{Script, VirtualClock, TIMEOUTS};
use crate::conn::{self, Clock, Connection, Ctx, Handoff};
use crate::http::{Body, Head, Phase, Request, Response};
use crate::metrics::Metrics;
use crate::router::Handler;

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
/// replaying the delivered bytes through a plain [`Conn`](crate::http::Conn).
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

/// Runs [`connection`](super::connection) and returns the requests served and the bytes
/// written, for the tests.
pub(super) fn serve_script(data: &[u8]) -> (usize, usize) {
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

    let clock = VirtualClock::new();
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
    let script = Script::new(
        ctl,
        payload,
        config & 4 != 0,
        clock.clone(),
        8 * data.len() + 64,
    );
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

/// Compares what the loop did with what a plain [`Conn`](crate::http::Conn) makes of the same
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
    // The driver follows an error with the close, and nothing else.
    match (replay.events.as_slice(), resp.status) {
        ([.., Ev::Err(status), Ev::Closed], got) => assert_eq!(*status, got, "error status"),
        (_, 408) => assert!(
            matches!(replay.phase, Some(Phase::Head | Phase::Body)),
            "408 without a partial request"
        ),
        (events, got) => panic!("error response {got} after {:?}", events.last()),
    }
}
