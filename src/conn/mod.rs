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
//! wait for a worker, a keep-alive connection that was just answered goes
//! round the queue ([`Handoff::Requeue`]), up to [`MAX_TURNS`] times while
//! its next request has not come: under load the request is there by one of
//! its turns, and the parker is not involved. Deadlines:
//!
//! | phase | deadline | on expiry |
//! |---|---|---|
//! | new connection, nothing received | accept + `header_timeout` (the kernel holds it for `--defer-accept` before the accept) | close |
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

use std::io::{self, IoSlice};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::access::AccessLog;
use crate::forwarded::TrustedProxies;
use crate::http::response::CONTINUE;
use crate::http::{self, Event, Later, Phase, Request};
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
    /// A request whose handler answered [`Response::later`](crate::Response::later) waits this
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

/// Times a connection just answered goes round the queue while other
/// connections wait for a worker and its next request has not come, before
/// it is parked. Each turn costs a read that finds nothing; parking costs
/// an `epoll_ctl`, and two threads woken (the parker, then a worker) when
/// the request comes. With 16 keep-alive connections on 8 workers, one turn
/// parked a quarter of the requests; eight park one in a hundred and take
/// a fifth off the CPU per request (BENCHMARKS.md); 32 did no better.
pub const MAX_TURNS: u8 = 8;

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
    /// Called before the loop waits on its client, for bytes to read or
    /// room to write: the server lets another worker have this one's CPU
    /// meanwhile.
    pub before_wait: &'a dyn Fn(),
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
    /// How many times it went round the queue since its last request; at
    /// [`MAX_TURNS`] it is parked instead, so a quiet connection cannot
    /// cycle.
    requeued: u8,
    /// The request whose answer comes later, while it waits.
    waiting: Option<Waiting>,
    /// Its answer, begun by the thread that answered it.
    early: Option<Early>,
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
            requeued: 0,
            waiting: None,
            early: None,
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

    /// Writes the waiting request's answer now, from the thread that
    /// answered it, as far as the socket takes it without waiting; the
    /// next [`serve`] writes the rest and goes on with the connection.
    /// Returns whether it wrote: not if the answer has not come or is a
    /// stream, which [`serve`] then sends whole.
    /// What the request and its response leave behind goes to `spent`,
    /// for the caller to drop once it has written all it had to.
    pub(crate) fn answer_now<C: Clock>(&mut self, ctx: &Ctx<'_, C>, spent: &mut Spent) -> bool
    where
        T: Transport,
    {
        respond::answer_now(self, ctx, spent)
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
    /// its next request, which then costs no trip through the parker; if
    /// not, it goes round again, up to [`MAX_TURNS`] times.
    Requeue,
    /// A request waits for a later answer ([`Response::later`](crate::Response::later)): park it,
    /// watching only for the client hanging up, until the answer comes
    /// ([`Connection::on_answer`]) or this deadline passes; then serve it
    /// again, which writes the answer (or the 503, or the rest of an
    /// answer begun by the thread that had it) and goes on.
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
    if let Some(early) = c.early.take() {
        if !finish_early(c, ctx, early) {
            return close(c);
        }
        wait_first = true;
    } else if let Some(w) = c.waiting.take() {
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
                        .is_some_and(|h| wants_body(ctx, &h.method, h.path()));
                if wanted {
                    c.http.accept_body();
                    let now = ctx.clock.now();
                    if write_all(
                        &mut c.io,
                        ctx,
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
                c.requeued = 0;
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
        if others_waiting && c.requeued == 0 && c.http.phase() == Phase::Idle {
            c.requeued = 1;
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
                    // Come round the queue and found nothing yet: round
                    // again while others wait, rather than through the
                    // parker (see MAX_TURNS).
                    let turn = (1..MAX_TURNS).contains(&c.requeued);
                    if turn && c.http.phase() == Phase::Idle && c.http.buffered() == 0 {
                        c.requeued += 1;
                        return Handoff::Requeue;
                    }
                    c.http.shrink_idle();
                    return Handoff::Park(deadline);
                }
                (ctx.before_wait)();
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

/// Asks the handler whether it wants the body of a request that expects
/// `100 Continue`. It is user code: one that panics counts as a handler
/// panic and wants no body, and the handler's answer still goes out.
fn wants_body<C: Clock>(ctx: &Ctx<'_, C>, method: &str, path: &str) -> bool {
    respond::catch_handler(ctx, || ctx.handler.wants_body(method, path)).unwrap_or_else(|message| {
        log::error!(
            "handler panicked deciding whether it wants the body of {method} {path}: {message}"
        );
        false
    })
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
        ctx,
        &mut [IoSlice::new(&head), IoSlice::new(body)],
        ctx.timeouts.write,
    );
    c.http.response_sent();
}

mod respond;
#[cfg(test)]
mod tests;

pub(crate) use respond::Spent;
use respond::{finish_early, respond, resume, Answered, Early};
pub use respond::{give_up, write_all};
