//! The connection loop: the only code that reads or writes a connection.
//! It feeds [`http::Conn`], runs the handler, writes what comes back, and
//! enforces the deadlines. It never decides framing.
//!
//! It is generic over a [`Transport`] and a [`Clock`], so tests and fuzz
//! targets drive this same loop over memory with a virtual clock.
//!
//! Sockets are non-blocking. A worker waits on a quiet connection for at
//! most `park_timeout` (and not at all while other work is queued); then
//! [`serve`] returns [`Handoff::Park`] and the connection, partial request
//! and all, waits in the parker without a thread. When other connections
//! wait for a worker, a keep-alive connection that was just answered first
//! goes once round the queue ([`Handoff::Requeue`]): under load its next
//! request is there by its turn, and the parker is not involved. Deadlines:
//!
//! | phase | deadline | on expiry |
//! |---|---|---|
//! | new connection, nothing received | accept + `header_timeout` | close |
//! | idle between requests | last response + `idle_timeout` | close |
//! | head arriving | its first byte + `header_timeout` (total) | 408, close |
//! | body arriving | last progress + `read_timeout`, and its head + `body_timeout` + bytes received / `min_body_rate` (total) | 408, close |
//! | response being written | last progress + `write_timeout` | close |
//!
//! The body has two deadlines because each alone can be outlasted: a
//! per-read one by a client that sends a byte just in time, forever (a
//! 1MiB body at 10 bytes a second keeps the connection 29 hours: the
//! R-U-Dead-Yet attack), and a fixed total one by a large body on a slow
//! but honest link. So the total grows with the bytes received, as
//! Apache's mod_reqtimeout does (`body=20,MinRate=500`). The head needs no
//! rate: its total deadline is fixed and its size is bounded, so
//! `header_timeout` alone bounds how long it can take.

use std::io::{self, IoSlice, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::access::{AccessLog, Record};
use crate::forwarded::TrustedProxies;
use crate::http::date::unix_now;
use crate::http::response::{chunk_header, CONTINUE, LAST_CHUNK};
use crate::http::{self, Body, BodyFraming, Event, Later, Phase, Request, Response};
use crate::metrics::{GaugeGuard, Metrics};
use crate::poller::{self, Interest};
use crate::router::Handler;

/// A byte stream the loop can drive. Reads and writes never block: they
/// return `WouldBlock`, and [`Transport::wait`] waits for readiness.
pub trait Transport {
    /// Reads into `buf`; `Ok(0)` is end of stream.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes some of `bufs`.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Waits until reading (or writing) can make progress, or `timeout`
    /// passes; `Ok(false)` on timeout.
    fn wait(&mut self, interest: Interest, timeout: Duration) -> io::Result<bool>;
    /// Ends the connection after a final response: stop sending, and
    /// discard what the peer already sent, so the close does not turn into
    /// a reset that destroys the response in flight.
    fn close(&mut self) {}
}

/// The loop's notion of now.
pub trait Clock {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

impl Transport for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        io::Read::read(self, buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        io::Write::write_vectored(self, bufs)
    }

    fn wait(&mut self, interest: Interest, timeout: Duration) -> io::Result<bool> {
        Ok(poller::wait(&[self.as_raw_fd()], interest, Some(timeout))?[0])
    }

    fn close(&mut self) {
        // Closing with unread bytes makes the kernel send a reset, which
        // can destroy the response still in flight (RFC 9112 §9.6). Drain
        // what has arrived; the close that follows sends the FIN.
        let mut sink = [0u8; 4096];
        for _ in 0..16 {
            match io::Read::read(self, &mut sink) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
    }
}

/// Every timeout the loop enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The whole head must arrive within this.
    pub header: Duration,
    /// A keep-alive connection may stay idle this long.
    pub idle: Duration,
    /// A body must make progress within this.
    pub read: Duration,
    /// The whole body must arrive within this after its head, plus the
    /// time `min_body_rate` allows for the bytes received so far.
    pub body: Duration,
    /// Bytes per second: each that arrives extends `body` by
    /// `1 / min_body_rate` seconds, so a body is cut once it has averaged
    /// less than this (after `body` of slack). At least 1.
    pub min_body_rate: u64,
    /// A response must make progress within this.
    pub write: Duration,
    /// A worker waits this long on a quiet connection before parking it.
    pub park: Duration,
    /// A request whose handler answered [`Response::later`] waits this
    /// long for the answer, parked, before it gets 503 with `Retry-After`.
    pub wait: Duration,
}

impl Default for Timeouts {
    /// The deadlines corral ships with (`--header-timeout` and the rest),
    /// each after other servers' choices.
    fn default() -> Timeouts {
        Timeouts {
            // Measured from the first wait, not per read: a per-read timeout
            // resets on every byte and lets a slowloris client trickle
            // forever. nginx allows 60s (`client_header_timeout`), hyper 30s
            // (`header_read_timeout`), Apache's mod_reqtimeout 20s extended
            // up to 40s while data flows. We take Cheroot's 10s socket
            // timeout: a real client sends its head in one round trip, and
            // 10s still covers a poor mobile link.
            header: Duration::from_secs(10),
            // Apache's `KeepAliveTimeout` and Node's `keepAliveTimeout` are
            // both 5s (nginx keeps 75s). Short, because a parked connection
            // still costs a descriptor, and reconnecting costs the client one
            // round trip.
            idle: Duration::from_secs(5),
            // nginx's `client_body_timeout` is 60s between two reads,
            // Apache's mod_reqtimeout gives the body 20s; we match `header`:
            // same client, same link.
            read: Duration::from_secs(10),
            // Apache's mod_reqtimeout, whose default is `body=20,MinRate=500`:
            // 20s of slack, then at least 500 bytes a second on average. That
            // is 4kbit/s, under any real link (GPRS carries ten times as
            // much), so no honest client is cut, while a client trickling
            // 10 bytes a second is cut after some 20s instead of keeping a
            // 1MiB body's connection for 29 hours. The largest body at the
            // default `max_body_bytes` may take 20s + 1MiB / 500 B/s, about
            // 35 minutes. nginx has no rate, only `client_body_timeout`
            // between reads; hyper has neither.
            body: Duration::from_secs(20),
            min_body_rate: 500,
            // nginx's `send_timeout` is 60s between two writes; Cheroot's 10s
            // socket timeout covers both directions. A client that stops
            // reading must not pin a worker for a minute.
            write: Duration::from_secs(10),
            // No other server has this knob; it exists because corral parks
            // idle connections. On loopback or a LAN a pipelined or follow-up
            // request arrives within a round trip, well under a millisecond,
            // so 5ms catches it without a trip through the poller, while a
            // worker never sits more than 5ms on a client that has gone quiet.
            park: Duration::from_millis(5),
            // The same wait a blocking cache lookup is allowed.
            wait: crate::cache::CacheConfig::default().wait_timeout,
        }
    }
}

/// What the loop needs from the server around it.
pub struct Ctx<'a, C: Clock> {
    /// Answers requests.
    pub handler: &'a dyn Handler,
    /// Now.
    pub clock: &'a C,
    /// The deadlines.
    pub timeouts: Timeouts,
    /// Set when the listeners close: idle connections end, the parker is
    /// gone.
    pub shutdown: &'a AtomicBool,
    /// Set when shutdown is asked for, which may be `--drain-delay` before
    /// the listeners close: from then on every response closes its
    /// connection, so a front opens fresh ones (to another instance, once
    /// its health check sees the 503) and holds none that corral might
    /// close under a request it is about to send.
    pub draining: &'a AtomicBool,
    /// Whether other connections wait for a worker; if so, never linger.
    pub others_waiting: &'a dyn Fn() -> bool,
    /// Where access lines go, if anywhere.
    pub access_log: Option<&'a AccessLog>,
    /// Counters.
    pub metrics: &'a Metrics,
    /// Requests that may wait for a later answer at once (the
    /// `requests_waiting` gauge, kept by the server); past it, a request
    /// whose answer is not ready gets 503 with `Retry-After`.
    pub max_waiting: u64,
}

/// Why a parked connection will be woken if nothing arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Close without a word.
    Close,
    /// Answer 408, then close.
    RequestTimeout,
}

/// One client connection: its transport, its protocol state and its clocks.
pub struct Connection<T> {
    /// The transport.
    pub io: T,
    http: http::Conn,
    /// When the current head must be complete.
    head_deadline: Option<Instant>,
    /// When the body being received began: its head's arrival.
    body_started: Option<Instant>,
    /// The last time bytes moved, for idle and body deadlines.
    last_progress: Instant,
    served: u64,
    /// Whether it went round the queue since its last request; a second
    /// time it is parked instead, so a quiet connection cannot cycle.
    requeued: bool,
    /// The request whose answer comes later, while it waits.
    waiting: Option<Waiting>,
    /// The fronts to believe about the client, if the peer is one of them.
    front: Option<Arc<TrustedProxies>>,
    _open: Option<GaugeGuard>,
}

/// A request waiting for its answer, with what its access line needs.
struct Waiting {
    later: Later,
    /// The request without its body, which the handler has had.
    req: Request,
    started: Instant,
    unix_time: i64,
}

impl<T> Connection<T> {
    /// A connection accepted at `now`.
    pub fn new(
        io: T,
        peer: Option<SocketAddr>,
        limits: http::Limits,
        timeouts: &Timeouts,
        now: Instant,
    ) -> Connection<T> {
        Connection {
            io,
            http: http::Conn::new(limits, peer),
            head_deadline: Some(now + timeouts.header),
            body_started: None,
            last_progress: now,
            served: 0,
            requeued: false,
            waiting: None,
            front: None,
            _open: None,
        }
    }

    /// Believes the forwarding headers of this connection's requests if its
    /// peer is in `proxies` (see [`crate::forwarded`]). Decided once, here:
    /// a request from anyone else costs nothing more.
    pub fn trusting(mut self, proxies: &Arc<TrustedProxies>) -> Connection<T> {
        let trusted = self.http.peer().is_some_and(|p| proxies.trusts(p.ip()));
        self.front = trusted.then(|| proxies.clone());
        self
    }

    /// Ties an open-connection gauge to this connection's life.
    pub fn with_gauge(mut self, guard: GaugeGuard) -> Connection<T> {
        self._open = Some(guard);
        self
    }

    /// Requests answered on this connection.
    pub fn served(&self) -> u64 {
        self.served
    }

    /// The protocol phase.
    pub fn phase(&self) -> Phase {
        self.http.phase()
    }

    /// Whether a request waits for a later answer ([`Handoff::Wait`]).
    pub fn is_waiting(&self) -> bool {
        self.waiting.is_some()
    }

    /// Runs `wake` once the waiting request's answer is there: at once if
    /// it is there already (or nothing waits), else on the thread that
    /// sends it. See [`Later::on_ready`].
    pub fn on_answer(&self, wake: crate::http::later::Wake) {
        match &self.waiting {
            Some(w) => w.later.on_ready(wake),
            None => wake(),
        }
    }

    /// When this connection gives up waiting, and how. The parker and the
    /// worker's loop both go by it.
    pub fn deadline(&self, t: &Timeouts) -> (Instant, Expiry) {
        let head = self.head_deadline.unwrap_or(self.last_progress + t.header);
        match self.http.phase() {
            Phase::Idle if self.served == 0 => (head, Expiry::Close),
            Phase::Idle => (self.last_progress + t.idle, Expiry::Close),
            Phase::Head => (head, Expiry::RequestTimeout),
            Phase::Body => {
                let stalled = self.last_progress + t.read;
                let started = self.body_started.unwrap_or(self.last_progress);
                let slow = body_deadline(started, t, self.http.body_received());
                (
                    slow.map_or(stalled, |slow| slow.min(stalled)),
                    Expiry::RequestTimeout,
                )
            }
            Phase::Response | Phase::Closed => (self.last_progress, Expiry::Close),
        }
    }
}

/// When a body that began at `started` and has brought `received` bytes
/// so far must be complete: `body` after its start, plus a second per
/// `min_body_rate` bytes. `None` if that is past what an `Instant` can
/// hold, when only the progress deadline applies.
fn body_deadline(started: Instant, t: &Timeouts, received: u64) -> Option<Instant> {
    let nanos = u128::from(received) * 1_000_000_000 / u128::from(t.min_body_rate.max(1));
    let earned = Duration::from_nanos(u64::try_from(nanos).ok()?);
    started.checked_add(t.body)?.checked_add(earned)
}

impl<T: AsRawFd> AsRawFd for Connection<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.io.as_raw_fd()
    }
}

/// Where [`serve`] hands the connection when it returns: to the parker,
/// back to the queue, or to the drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handoff {
    /// Quiet: park it until readable or until this deadline.
    Park(Instant),
    /// A response went out while other connections wait for a worker: put
    /// it at the back of the queue. By its turn the client has usually sent
    /// its next request, which then costs no trip through the parker.
    Requeue,
    /// A request waits for a later answer ([`Response::later`]): park it,
    /// watching only for the client hanging up, until the answer comes
    /// ([`Connection::on_answer`]) or this deadline passes; then serve it
    /// again, which writes the answer (or the 503) and goes on.
    Wait(Instant),
    /// Done: drop it.
    Close,
}

/// Serves requests on `c` until it goes quiet or must close.
pub fn serve<T: Transport, C: Clock>(c: &mut Connection<T>, ctx: &Ctx<'_, C>) -> Handoff {
    // How long this call may still wait for a slow sender before parking.
    let mut linger = ctx.timeouts.park;
    // Right after a response the next request has rarely arrived yet, so a
    // read would only say so; wait for readiness first instead.
    let mut wait_first = false;
    if let Some(w) = c.waiting.take() {
        match resume(c, ctx, w) {
            Some(true) => wait_first = true,
            Some(false) => return close(c),
            None => return Handoff::Close,
        }
    }
    loop {
        match c.http.poll() {
            Event::NeedMore => {}
            Event::Continue => {
                let wanted = !ctx.shutdown.load(Ordering::Relaxed)
                    && c.http
                        .pending_head()
                        .is_some_and(|h| ctx.handler.wants_body(&h.method, h.path()));
                if wanted {
                    c.http.accept_body();
                    let now = ctx.clock.now();
                    if write_all(
                        &mut c.io,
                        ctx.clock,
                        &mut [IoSlice::new(CONTINUE)],
                        ctx.timeouts.write,
                    )
                    .is_err()
                    {
                        return Handoff::Close;
                    }
                    c.last_progress = now;
                    continue;
                }
                match c.http.reject_body() {
                    Some(req) => {
                        if let Answered::Waiting(deadline) = respond(c, ctx, req) {
                            return Handoff::Wait(deadline);
                        }
                        return close(c);
                    }
                    None => return Handoff::Close,
                }
            }
            Event::Request(req) => {
                // A client that asked to close sends nothing more (RFC 9112
                // §9.6), so there is nothing to drain before closing.
                let client_closes = !req.head().keep_alive;
                match respond(c, ctx, req) {
                    Answered::Waiting(deadline) => return Handoff::Wait(deadline),
                    Answered::Sent(true) => {}
                    Answered::Sent(false) => {
                        if client_closes && c.http.buffered() == 0 {
                            return Handoff::Close;
                        }
                        return close(c);
                    }
                }
                linger = ctx.timeouts.park;
                wait_first = true;
                c.requeued = false;
                continue;
            }
            Event::Error(e) => {
                log::debug!("{}: {e}", peer_text(&c.http_peer()));
                Metrics::inc(&ctx.metrics.protocol_errors);
                send_error(c, ctx, &e);
                return close(c);
            }
            Event::Closed => return close(c),
        }

        let phase = c.http.phase();
        // Between requests, shutdown closes. A connection never read yet is
        // read once first: it may carry a request sent before the listener
        // closed (a front opening connections through the drain delay),
        // which a close would reset unanswered.
        if phase == Phase::Idle && ctx.shutdown.load(Ordering::Relaxed) && c.served > 0 {
            return Handoff::Close;
        }
        if phase == Phase::Body && c.body_started.is_none() {
            // The read that completed the head was the last progress.
            c.body_started = Some(c.last_progress);
        }
        let now = ctx.clock.now();
        let (deadline, expiry) = c.deadline(&ctx.timeouts);
        if now >= deadline {
            // The deadline may have passed while the connection waited for
            // a worker, which is the server's delay, not the client's: read
            // what has arrived before judging. Each turn here consumes
            // bytes or ends the connection, and the head limit bounds them.
            match c.http.read_with(|buf| c.io.read(buf)) {
                Ok(0) => return Handoff::Close,
                Ok(_) => {
                    c.last_progress = now;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    expire(c, ctx, expiry);
                    return Handoff::Close;
                }
            }
        }
        let others_waiting = wait_first && (ctx.others_waiting)();
        if others_waiting && !c.requeued && c.http.phase() == Phase::Idle {
            c.requeued = true;
            return Handoff::Requeue;
        }
        let result = if wait_first && !others_waiting {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            c.http.read_with(|buf| c.io.read(buf))
        };
        let waited_first = std::mem::take(&mut wait_first);
        match result {
            Ok(0) => return Handoff::Close,
            Ok(_) => {
                if phase == Phase::Idle {
                    c.head_deadline = Some(now + ctx.timeouts.header);
                }
                c.last_progress = now;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Once shutdown begins the parker is gone, so a request under
                // way keeps its worker until it completes or its deadline
                // passes (idle connections were closed above, and a fresh
                // one with nothing to read closes here).
                let draining = ctx.shutdown.load(Ordering::Relaxed);
                if draining && c.http.phase() == Phase::Idle {
                    return Handoff::Close;
                }
                let wait = if draining {
                    deadline - now
                } else {
                    linger.min(deadline - now)
                };
                if !draining && (wait.is_zero() || (ctx.others_waiting)()) {
                    c.http.shrink_idle();
                    return Handoff::Park(deadline);
                }
                match c.io.wait(Interest::Read, wait) {
                    // Nothing came while waiting, and no read has been
                    // tried: park, and the parker's epoll settles it.
                    Ok(false) if waited_first && !draining => {
                        c.http.shrink_idle();
                        return Handoff::Park(deadline);
                    }
                    Ok(_) => {
                        let waited = ctx.clock.now().saturating_duration_since(now);
                        linger = linger.saturating_sub(waited.max(Duration::from_micros(1)));
                    }
                    Err(_) => return Handoff::Close,
                }
            }
            Err(_) => return Handoff::Close,
        }
    }
}

impl<T> Connection<T> {
    fn http_peer(&self) -> Option<SocketAddr> {
        self.http.peer()
    }
}

fn peer_text(peer: &Option<SocketAddr>) -> String {
    peer.map_or_else(|| "-".to_owned(), |p| p.to_string())
}

fn close<T: Transport>(c: &mut Connection<T>) -> Handoff {
    c.io.close();
    Handoff::Close
}

/// Ends a connection whose deadline passed: a partial request (a head, or
/// a body that stalled or came too slowly) gets 408 (RFC 9110 §15.5.9), as
/// no response has started; anything else closes silently.
pub fn expire<T: Transport, C: Clock>(c: &mut Connection<T>, ctx: &Ctx<'_, C>, expiry: Expiry) {
    match (expiry, c.http.phase()) {
        (Expiry::RequestTimeout, Phase::Body) => {
            Metrics::inc(&ctx.metrics.body_timeouts);
            log::debug!(
                "{}: request body timed out after {} bytes",
                peer_text(&c.http_peer()),
                c.http.body_received()
            );
            send_error(c, ctx, &http::Error::BodyTimeout);
            c.io.close();
        }
        (Expiry::RequestTimeout, _) => {
            Metrics::inc(&ctx.metrics.header_timeouts);
            log::debug!("{}: request head timed out", peer_text(&c.http_peer()));
            send_error(c, ctx, &http::Error::HeadTimeout);
            c.io.close();
        }
        (_, Phase::Body) => Metrics::inc(&ctx.metrics.body_timeouts),
        (_, Phase::Idle) if c.served > 0 => Metrics::inc(&ctx.metrics.idle_timeouts),
        _ => Metrics::inc(&ctx.metrics.header_timeouts),
    }
}

fn send_error<T: Transport, C: Clock>(c: &mut Connection<T>, ctx: &Ctx<'_, C>, e: &http::Error) {
    let resp = http::Conn::error_response(e);
    let mut head = Vec::with_capacity(256);
    c.http.write_head(&resp, true, &mut head);
    let body = resp.body().as_slice().unwrap_or_default();
    ctx.metrics.count_status(resp.status());
    let _ = write_all(
        &mut c.io,
        ctx.clock,
        &mut [IoSlice::new(&head), IoSlice::new(body)],
        ctx.timeouts.write,
    );
    c.http.response_sent();
}

/// What [`respond`] did with a request.
enum Answered {
    /// The response went out (or failed to); whether the connection
    /// persists.
    Sent(bool),
    /// The answer comes later; the request waits until this deadline.
    Waiting(Instant),
}

/// Runs the handler and writes its response, or, if the answer comes later,
/// keeps the request in `c.waiting`.
fn respond<T: Transport, C: Clock>(
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
fn resume<T: Transport, C: Clock>(
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

/// Runs the handler; a panic becomes a 500 that closes the connection.
fn handle<C: Clock>(ctx: &Ctx<'_, C>, req: &mut Request) -> Response {
    match catch_unwind(AssertUnwindSafe(|| ctx.handler.handle(req))) {
        Ok(resp) => resp,
        Err(payload) => {
            Metrics::inc(&ctx.metrics.handler_panics);
            log::error!(
                "handler panicked on {} {}: {}",
                req.method(),
                req.target(),
                crate::unwind::panic_message(payload.as_ref())
            );
            Response::error(500, "").with_close()
        }
    }
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
    let closing = ctx.draining.load(Ordering::Relaxed) || ctx.shutdown.load(Ordering::Relaxed);
    let mut head = Vec::with_capacity(256);
    let outcome = c.http.write_head(&resp, closing, &mut head);
    let body = resp.take_body();
    let sent = match (outcome.framing, &body) {
        (BodyFraming::None, _) => write_all(
            &mut c.io,
            ctx.clock,
            &mut [IoSlice::new(&head)],
            ctx.timeouts.write,
        )
        .map(|()| 0),
        (_, Body::Stream(_)) => {
            let Body::Stream(reader) = body else {
                return false;
            };
            let chunked = outcome.framing == BodyFraming::Chunked;
            write_all(
                &mut c.io,
                ctx.clock,
                &mut [IoSlice::new(&head)],
                ctx.timeouts.write,
            )
            .and_then(|()| stream_body(&mut c.io, ctx, reader, chunked))
        }
        (_, body) => {
            let bytes = body.as_slice().unwrap_or_default();
            write_all(
                &mut c.io,
                ctx.clock,
                &mut [IoSlice::new(&head), IoSlice::new(bytes)],
                ctx.timeouts.write,
            )
            .map(|()| bytes.len() as u64)
        }
    };
    ctx.metrics.count_status(resp.status());
    let done = ctx.clock.now();
    if let Some(log) = ctx.access_log {
        log.record(&Record {
            peer: req.client_addr(),
            unix_time,
            method: req.method(),
            target: req.target(),
            version: req.version().as_str(),
            status: resp.status(),
            bytes: *sent.as_ref().unwrap_or(&0),
            referer: req.header("referer"),
            user_agent: req.header("user-agent"),
            micros: done.saturating_duration_since(started).as_micros(),
            upstream_micros: resp.upstream_time().map(|t| t.as_micros()),
        });
    }
    c.last_progress = done;
    c.head_deadline = None;
    c.body_started = None;
    c.served += 1;
    match sent {
        Ok(n) => {
            ctx.metrics
                .bytes_sent
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            c.http.response_sent();
            outcome.keep_alive
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
                write_all(
                    io,
                    ctx.clock,
                    &mut [IoSlice::new(LAST_CHUNK)],
                    ctx.timeouts.write,
                )?;
            }
            return Ok(total);
        }
        total += n as u64;
        if chunked {
            let mut size = Vec::with_capacity(18);
            chunk_header(n, &mut size);
            write_all(
                io,
                ctx.clock,
                &mut [
                    IoSlice::new(&size),
                    IoSlice::new(&buf[..n]),
                    IoSlice::new(b"\r\n"),
                ],
                ctx.timeouts.write,
            )?;
        } else {
            write_all(
                io,
                ctx.clock,
                &mut [IoSlice::new(&buf[..n])],
                ctx.timeouts.write,
            )?;
        }
    }
}

/// Writes every byte of `bufs`, waiting for room as needed. Like nginx's
/// `send_timeout`, the deadline is for progress: it restarts whenever bytes
/// go out, so a large body to a slow but live client completes, and a
/// client that stops reading is dropped after `timeout`.
pub fn write_all<T: Transport, C: Clock>(
    io: &mut T,
    clock: &C,
    mut bufs: &mut [IoSlice<'_>],
    timeout: Duration,
) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    let mut deadline = clock.now() + timeout;
    while !bufs.is_empty() {
        match io.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                IoSlice::advance_slices(&mut bufs, n);
                deadline = clock.now() + timeout;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let now = clock.now();
                if now >= deadline {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                let writable = io.wait(Interest::Write, deadline - now)?;
                if !writable && clock.now() >= deadline {
                    return Err(io::ErrorKind::TimedOut.into());
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection whose body has brought `received` bytes, begun at
    /// `started`, last read at `last`.
    fn receiving(started: Instant, last: Instant, received: usize) -> Connection<()> {
        let t = Timeouts::default();
        let mut c = Connection::new((), None, http::Limits::default(), &t, started);
        let mut input = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n".to_vec();
        input.resize(input.len() + received, b'x');
        let mut rest = input.as_slice();
        while !rest.is_empty() {
            let n = c
                .http
                .read_with(|buf| {
                    let n = buf.len().min(rest.len());
                    buf[..n].copy_from_slice(&rest[..n]);
                    Ok::<usize, ()>(n)
                })
                .unwrap_or(0);
            rest = &rest[n..];
            assert!(matches!(c.http.poll(), Event::NeedMore));
        }
        assert_eq!(c.phase(), Phase::Body);
        assert_eq!(c.http.body_received(), received as u64);
        c.body_started = Some(started);
        c.last_progress = last;
        c
    }

    #[test]
    fn body_deadline_grows_with_the_bytes_received() {
        let t = Timeouts::default();
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        // 1000 bytes at 500 B/s earn 2s on top of the 20s: the total
        // deadline is t0 + 22s, unless the body stalls first (10s after
        // the last read).
        let c = receiving(t0, t0 + secs(1), 1000);
        assert_eq!(c.deadline(&t), (t0 + secs(11), Expiry::RequestTimeout));
        let c = receiving(t0, t0 + secs(15), 1000);
        assert_eq!(c.deadline(&t), (t0 + secs(22), Expiry::RequestTimeout));
        let c = receiving(t0, t0 + secs(15), 0);
        assert_eq!(c.deadline(&t), (t0 + secs(20), Expiry::RequestTimeout));
        // A fraction of a second: 250 bytes earn half of one.
        let c = receiving(t0, t0 + secs(15), 250);
        assert_eq!(
            c.deadline(&t),
            (t0 + Duration::from_millis(20_500), Expiry::RequestTimeout)
        );
    }

    #[test]
    fn body_deadline_past_any_instant_leaves_the_progress_deadline() {
        let t = Timeouts {
            min_body_rate: 1,
            ..Timeouts::default()
        };
        let t0 = Instant::now();
        assert_eq!(body_deadline(t0, &t, u64::MAX), None);
        assert_eq!(
            body_deadline(t0, &t, 3),
            Some(t0 + t.body + Duration::from_secs(3))
        );
    }
}
