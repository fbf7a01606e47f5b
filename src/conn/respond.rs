//! The write side of the loop: runs the handler, and writes what it
//! answers, at once or, for an answer that comes later
//! ([`Response::later`]), when [`super::serve`] resumes the waiting
//! request (or, for many answers at once on one CPU, when the thread that
//! has them writes them: [`answer_now`]). Every path ends in [`record`],
//! which logs the request once with its final status.

use std::io::{self, IoSlice, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{peer_text, Clock, Connection, Ctx, Transport, Waiting};
use crate::access::Record;
use crate::http::date::unix_now;
use crate::http::response::{chunk_header, LAST_CHUNK};
use crate::http::{Body, BodyFraming, Request, Response};
use crate::metrics::Metrics;
use crate::poller::Interest;

/// What [`respond`] did with a request.
pub(super) enum Answered {
    /// The response went out (or failed to); whether the connection
    /// persists.
    Sent(bool),
    /// The answer comes later; the request waits until this deadline.
    Waiting(Instant),
}

/// Runs the handler and writes its response, or, if the answer comes later,
/// keeps the request in `c.waiting`.
pub(super) fn respond<T: Transport, C: Clock>(
    c: &mut Connection<T>,
    ctx: &Ctx<'_, C>,
    mut req: Request,
) -> Answered {
    let started = ctx.clock.now();
    let unix_time = unix_now();
    Metrics::inc(&ctx.metrics.requests);
    match (&c.front, req.peer_addr()) {
        (Some(front), Some(peer)) => {
            Metrics::inc(&ctx.metrics.requests_forwarded);
            let forwarded = front.resolve(peer, req.headers());
            req.set_forwarded(forwarded);
        }
        // From anyone else the header is a plain header, counted so that
        // a front left out of --trusted-proxy shows on /metrics.
        _ if req.headers().get_bytes("x-forwarded-for").is_some() => {
            Metrics::inc(&ctx.metrics.forwarded_ignored);
        }
        _ => {}
    }
    let mut resp = handle(ctx, &mut req);
    if let Some(later) = resp.take_later() {
        resp = match later.take() {
            // Answered before the handler returned: a remembered failure,
            // or a value that came in between.
            Some(resp) => resp,
            None if ctx.metrics.requests_waiting.load(Ordering::Relaxed) >= ctx.max_waiting => {
                Metrics::inc(&ctx.metrics.waits_refused);
                note(
                    &req,
                    format_args!("refused: {} wait already", ctx.max_waiting),
                );
                unavailable("too many requests are waiting (retry later)")
            }
            None => {
                // The body has served the handler; the access line and the
                // answer need only the head.
                drop(req.take_body());
                c.waiting = Some(Waiting {
                    later,
                    req,
                    started,
                    unix_time,
                });
                return Answered::Waiting(started + ctx.timeouts.wait);
            }
        };
    }
    Answered::Sent(send(c, ctx, &req, resp, started, unix_time))
}

/// `Retry-After` on a 503 for a wait that timed out or was refused: the
/// answer being computed is usually stored by then.
const RETRY_AFTER_SECS: &str = "1";

/// A 503 for a request that could not wait, or not wait longer.
fn unavailable(detail: &str) -> Response {
    Response::error(503, detail).with_header("Retry-After", RETRY_AFTER_SECS)
}

/// Logs what became of a request that waited (or wanted to) for its
/// answer. At debug: the client or the clock decided, not the operator.
fn note(req: &Request, what: std::fmt::Arguments<'_>) {
    log::debug!(
        "{}: {} {}: {what}",
        peer_text(&req.client_addr()),
        req.method(),
        req.target()
    );
}

/// Writes the answer to a request that waited for it, or a 503 if its
/// deadline passed first. Returns whether the connection persists, or
/// `None` if the client left while waiting (the parker saw it hang up).
pub(super) fn resume<T: Transport, C: Clock>(
    c: &mut Connection<T>,
    ctx: &Ctx<'_, C>,
    w: Waiting,
) -> Option<bool> {
    let resp = match w.later.take() {
        Some(resp) => resp,
        None if ctx.clock.now() >= w.started + ctx.timeouts.wait => {
            Metrics::inc(&ctx.metrics.waits_timed_out);
            let waited = ctx.timeouts.wait;
            note(&w.req, format_args!("no answer within {waited:?}; 503"));
            unavailable("timed out waiting for the answer (retry later)")
        }
        None => {
            Metrics::inc(&ctx.metrics.waiters_left);
            note(&w.req, format_args!("the client left while it waited"));
            return None;
        }
    };
    Some(send(c, ctx, &w.req, resp, w.started, w.unix_time))
}

/// Answers a waiting request 503 because the server cannot wait any
/// longer for its answer (it is shutting down), and ends the connection.
/// Does nothing to a connection with no waiting request.
pub fn give_up<T: Transport, C: Clock>(c: &mut Connection<T>, ctx: &Ctx<'_, C>) {
    let Some(w) = c.waiting.take() else { return };
    Metrics::inc(&ctx.metrics.waits_timed_out);
    note(
        &w.req,
        format_args!("no answer before the drain ended; 503"),
    );
    let resp = unavailable("the server is shutting down (retry later)").with_close();
    send(c, ctx, &w.req, resp, w.started, w.unix_time);
    c.io.close();
}

/// Runs handler code, which is the user's: a panic is counted, and its
/// message returned for the caller to log with what it was asking.
pub(super) fn catch_handler<C: Clock, R>(
    ctx: &Ctx<'_, C>,
    call: impl FnOnce() -> R,
) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(call)).map_err(|payload| {
        Metrics::inc(&ctx.metrics.handler_panics);
        crate::unwind::panic_message(payload.as_ref()).to_owned()
    })
}

/// Runs the handler; a panic becomes a 500 that closes the connection.
fn handle<C: Clock>(ctx: &Ctx<'_, C>, req: &mut Request) -> Response {
    catch_handler(ctx, || ctx.handler.handle(req)).unwrap_or_else(|message| {
        log::error!(
            "handler panicked on {} {}: {message}",
            req.method(),
            req.target()
        );
        Response::error(500, "").with_close()
    })
}

/// Writes `resp` to `req` and logs it. Returns whether the connection
/// persists.
fn send<T: Transport, C: Clock>(
    c: &mut Connection<T>,
    ctx: &Ctx<'_, C>,
    req: &Request,
    mut resp: Response,
    started: Instant,
    unix_time: i64,
) -> bool {
    let closing = closing(ctx);
    let (keep_alive, written) = with_head_buffer(|head| {
        let outcome = c.http.write_head(&resp, closing, head);
        let written = match (outcome.framing, resp.take_body()) {
            (BodyFraming::None, _) => write_all(
                &mut c.io,
                ctx,
                &mut [IoSlice::new(head)],
                ctx.timeouts.write,
            )
            .map(|()| 0),
            (framing, Body::Stream(reader)) => write_all(
                &mut c.io,
                ctx,
                &mut [IoSlice::new(head)],
                ctx.timeouts.write,
            )
            .and_then(|()| stream_body(&mut c.io, ctx, reader, framing == BodyFraming::Chunked)),
            (_, body) => {
                let bytes = body.as_slice().unwrap_or_default();
                write_all(
                    &mut c.io,
                    ctx,
                    &mut [IoSlice::new(head), IoSlice::new(bytes)],
                    ctx.timeouts.write,
                )
                .map(|()| bytes.len() as u64)
            }
        };
        (outcome.keep_alive, written)
    });
    let sent = Sent::of(&resp, keep_alive, started, unix_time);
    record(c, ctx, req, &sent, written)
}

/// Whether responses close their connections: shutdown was asked for.
fn closing<C: Clock>(ctx: &Ctx<'_, C>) -> bool {
    ctx.draining.load(Ordering::Relaxed) || ctx.shutdown.load(Ordering::Relaxed)
}

/// What is logged and counted of a response once it is out.
pub(super) struct Sent {
    status: u16,
    upstream_time: Option<Duration>,
    /// Whether the connection persists after it.
    keep_alive: bool,
    /// When its request was read, and the wall clock then.
    started: Instant,
    unix_time: i64,
}

impl Sent {
    fn of(resp: &Response, keep_alive: bool, started: Instant, unix_time: i64) -> Sent {
        Sent {
            status: resp.status(),
            upstream_time: resp.upstream_time(),
            keep_alive,
            started,
            unix_time,
        }
    }
}

/// Counts and logs a response that went out (`written`: its body's bytes)
/// or failed to, and readies the connection for its next request. Returns
/// whether the connection persists.
fn record<T: Transport, C: Clock>(
    c: &mut Connection<T>,
    ctx: &Ctx<'_, C>,
    req: &Request,
    sent: &Sent,
    written: io::Result<u64>,
) -> bool {
    ctx.metrics.count_status(sent.status);
    let done = ctx.clock.now();
    if let Some(log) = ctx.access_log {
        log.record(&Record {
            peer: req.client_addr(),
            unix_time: sent.unix_time,
            method: req.method(),
            target: req.target(),
            version: req.version().as_str(),
            status: sent.status,
            bytes: *written.as_ref().unwrap_or(&0),
            referer: req.header("referer"),
            user_agent: req.header("user-agent"),
            micros: done.saturating_duration_since(sent.started).as_micros(),
            upstream_micros: sent.upstream_time.map(|t| t.as_micros()),
        });
    }
    c.last_progress = done;
    c.head_deadline = None;
    c.body_started = None;
    c.served += 1;
    match written {
        Ok(n) => {
            ctx.metrics
                .bytes_sent
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            c.http.response_sent();
            sent.keep_alive
        }
        Err(e) => {
            if e.kind() == io::ErrorKind::TimedOut {
                Metrics::inc(&ctx.metrics.write_timeouts);
            }
            log::debug!("{}: response not sent: {e}", peer_text(&req.client_addr()));
            false
        }
    }
}

/// An answer begun by the thread that answered a waiting request
/// ([`answer_now`]), for a worker to take up.
pub(super) enum Early {
    /// Written whole, and logged; whether the connection persists.
    Whole(bool),
    /// The socket did not take all of it: the rest, for the worker to
    /// write and log.
    Part(Box<Unsent>),
}

/// An answer the socket did not take whole at once.
pub(super) struct Unsent {
    waiting: Waiting,
    /// The response, its body still in it.
    resp: Response,
    sent: Sent,
    /// The rest of the head.
    head: Vec<u8>,
    /// The body's bytes still to go (none for `HEAD`, 304 and the like).
    body: std::ops::Range<usize>,
}

/// What answers written by [`answer_now`] leave behind: their requests and
/// responses, allocated on other threads, for the thread that wrote them
/// to drop once its last answer is out. Freeing them, cold by then, between
/// two answers was a third of that thread's time (BENCHMARKS.md).
#[derive(Default)]
pub(crate) struct Spent(Vec<(Waiting, Response)>);

/// Writes the answer to a waiting request on the thread that answered it,
/// as far as the socket takes it without waiting, and leaves the rest
/// (usually nothing) and the connection's next request to a worker.
/// Returns whether it wrote: not if the answer has not come, or its body
/// is a stream (whose reads may block), which a worker then sends as
/// before.
pub(super) fn answer_now<T: Transport, C: Clock>(
    c: &mut Connection<T>,
    ctx: &Ctx<'_, C>,
    spent: &mut Spent,
) -> bool {
    let Some(waiting) = c.waiting.take() else {
        return false;
    };
    let Some(resp) = waiting.later.take_if(|r| r.body().as_slice().is_some()) else {
        c.waiting = Some(waiting);
        return false;
    };
    let closing = closing(ctx);
    let (sent, written, rest) = with_head_buffer(|head| {
        let outcome = c.http.write_head(&resp, closing, head);
        let bytes = match outcome.framing {
            BodyFraming::None => &[][..],
            _ => resp.body().as_slice().unwrap_or_default(),
        };
        let written = write_now(
            &mut c.io,
            &mut &mut [IoSlice::new(head), IoSlice::new(bytes)][..],
        );
        let rest = match written {
            Ok(n) if n < head.len() + bytes.len() => Some((
                head.get(n..).unwrap_or_default().to_vec(),
                n.saturating_sub(head.len())..bytes.len(),
            )),
            _ => None,
        };
        let sent = Sent::of(
            &resp,
            outcome.keep_alive,
            waiting.started,
            waiting.unix_time,
        );
        (sent, written.map(|_| bytes.len() as u64), rest)
    });
    c.early = Some(match rest {
        None => {
            let keep_alive = record(c, ctx, &waiting.req, &sent, written);
            spent.0.push((waiting, resp));
            Early::Whole(keep_alive)
        }
        Some((head, body)) => Early::Part(Box::new(Unsent {
            waiting,
            resp,
            sent,
            head,
            body,
        })),
    });
    true
}

/// Takes up an answer begun by [`answer_now`]: writes what is left of it,
/// waiting for room as a worker may, and logs it. Returns whether the
/// connection persists.
pub(super) fn finish_early<T: Transport, C: Clock>(
    c: &mut Connection<T>,
    ctx: &Ctx<'_, C>,
    early: Early,
) -> bool {
    let u = match early {
        Early::Whole(keep_alive) => return keep_alive,
        Early::Part(u) => u,
    };
    let bytes = u.resp.body().as_slice().unwrap_or_default();
    let rest = bytes.get(u.body.clone()).unwrap_or_default();
    let written = write_all(
        &mut c.io,
        ctx,
        &mut [IoSlice::new(&u.head), IoSlice::new(rest)],
        ctx.timeouts.write,
    )
    .map(|()| u.body.end as u64);
    record(c, ctx, &u.waiting.req, &u.sent, written)
}

/// Writes what the socket takes now of `bufs`, without waiting for room:
/// how many bytes that was.
/// `bufs` is advanced past them.
fn write_now<T: Transport>(io: &mut T, bufs: &mut &mut [IoSlice<'_>]) -> io::Result<usize> {
    IoSlice::advance_slices(bufs, 0);
    let mut total = 0;
    while !bufs.is_empty() {
        match io.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                total += n;
                IoSlice::advance_slices(bufs, n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

/// The largest head buffer a thread keeps for its next response.
const KEPT_HEAD_BYTES: usize = 16 * 1024;

thread_local! {
    /// The buffer response heads are written into: one per thread, reused,
    /// so that a response's head costs no allocation (freeing a thousand
    /// heads in a row, as a worker writing the answers of coalesced
    /// requests does, was a tenth of its time in user space).
    static HEAD: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs `f` with this thread's head buffer, empty. Taken out rather than
/// borrowed: were `f` to need another head, it would get a fresh one.
fn with_head_buffer<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut head = HEAD.with(std::cell::Cell::take);
    head.clear();
    if head.capacity() == 0 {
        head.reserve(512);
    }
    let r = f(&mut head);
    if head.capacity() <= KEPT_HEAD_BYTES {
        HEAD.with(|h| h.set(head));
    }
    r
}

/// Body bytes read from a stream per chunk.
const STREAM_CHUNK_BYTES: usize = 64 * 1024;

/// Sends a streamed body, chunked or raw. A reader that fails or panics
/// ends the connection without the last chunk, so the client sees the body
/// was cut short instead of taking a truncated body for a whole one.
fn stream_body<T: Transport, C: Clock>(
    io: &mut T,
    ctx: &Ctx<'_, C>,
    mut reader: Box<dyn Read + Send>,
    chunked: bool,
) -> io::Result<u64> {
    let mut buf = vec![0u8; STREAM_CHUNK_BYTES];
    let mut total = 0u64;
    loop {
        let n = match catch_unwind(AssertUnwindSafe(|| reader.read(&mut buf))) {
            Ok(Ok(n)) => n,
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(Err(e)) => return Err(e),
            Err(p) => {
                Metrics::inc(&ctx.metrics.handler_panics);
                log::error!(
                    "response body stream panicked: {}",
                    crate::unwind::panic_message(p.as_ref())
                );
                return Err(io::Error::other("body stream panicked"));
            }
        };
        if n == 0 {
            if chunked {
                write_all(io, ctx, &mut [IoSlice::new(LAST_CHUNK)], ctx.timeouts.write)?;
            }
            return Ok(total);
        }
        total += n as u64;
        if chunked {
            let mut size = Vec::with_capacity(18);
            chunk_header(n, &mut size);
            write_all(
                io,
                ctx,
                &mut [
                    IoSlice::new(&size),
                    IoSlice::new(&buf[..n]),
                    IoSlice::new(b"\r\n"),
                ],
                ctx.timeouts.write,
            )?;
        } else {
            write_all(io, ctx, &mut [IoSlice::new(&buf[..n])], ctx.timeouts.write)?;
        }
    }
}

/// Writes every byte of `bufs`, waiting for room as needed. Like nginx's
/// `send_timeout`, the deadline is for progress: it restarts whenever bytes
/// go out, so a large body to a slow but live client completes, and a
/// client that stops reading is dropped after `timeout`.
pub fn write_all<T: Transport, C: Clock>(
    io: &mut T,
    ctx: &Ctx<'_, C>,
    mut bufs: &mut [IoSlice<'_>],
    timeout: Duration,
) -> io::Result<()> {
    let clock = ctx.clock;
    let mut deadline = clock.now() + timeout;
    loop {
        if write_now(io, &mut bufs)? > 0 {
            deadline = clock.now() + timeout;
        }
        if bufs.is_empty() {
            return Ok(());
        }
        // The socket is full.
        let now = clock.now();
        if now >= deadline {
            return Err(io::ErrorKind::TimedOut.into());
        }
        (ctx.before_wait)();
        let writable = io.wait(Interest::Write, deadline - now)?;
        if !writable && clock.now() >= deadline {
            return Err(io::ErrorKind::TimedOut.into());
        }
    }
}
