//! The server shell: listeners, the worker pool, the parker and shutdown.
//! It accepts, sets up sockets, hands connections to workers, and answers
//! 503 when the queue or the connection cap is full. It never parses bytes.
//!
//! Threads: one acceptor (the thread that calls [`Server::run`]), one parker
//! and `workers` pool threads. A new connection goes straight to the pool;
//! a worker serves it until it goes quiet, then parks it; the parker hands
//! it back to the pool when it is readable again, or ends it at its
//! deadline. Idle and slow clients therefore hold no worker.
//!
//! Queued connections are served by one worker per CPU at a time, each
//! taking one after another; the other workers sleep until one of those
//! waits on a client or is held up by a handler (see [`crate::slots`]).
//!
//! Under systemd (see [`crate::notify`]) the run also sends `READY=1` once
//! serving, a `STATUS=` line every few seconds and `WATCHDOG=1` pings from a
//! fourth thread while the acceptor, the parker and the pool show progress,
//! then `STOPPING=1` and `EXTEND_TIMEOUT_USEC=` while draining.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use threadpool::ThreadPool;

use crate::access::{self, AccessLog};
use crate::config::Config;
use crate::conn::{self, Connection, Ctx, Handoff, SystemClock, Timeouts};
use crate::forwarded::TrustedProxies;
use crate::http::{Limits, Phase};
use crate::metrics::{GaugeGuard, Metrics};
use crate::notify::{self, Component, Health, Notifier, PoolSamples};
use crate::poller::{self, Dispatch, Interest, Parker, Token, Watch};
use crate::router::Handler;
use crate::slots::{Slots, Ticket, STALL};

/// The reply to a connection the server has no room for. Sent in one write
/// on a fresh socket, whose send buffer is empty, so it cannot block.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 21\r\nRetry-After: 1\r\nConnection: close\r\n\r\nserver is busy, retry";

/// How often `STATUS=` is refreshed under systemd: often enough for
/// `systemctl status` to look live, a datagram each time.
const STATUS_INTERVAL: Duration = Duration::from_secs(2);

/// While draining, `EXTEND_TIMEOUT_USEC=` goes out this often ...
const DRAIN_EXTEND_EVERY: Duration = Duration::from_secs(1);

/// ... each promising the next within this, so the stop timeout cannot run
/// out while connections still finish (the drain itself is bounded by
/// `shutdown_timeout`).
const DRAIN_EXTEND_BY: Duration = Duration::from_secs(5);

/// The one-line `STATUS=` text.
type StatusFn = Box<dyn Fn() -> String + Send + Sync>;

/// How long a request waits for its answer before the parker watches for
/// its client leaving (see [`Watch::HangUp`]). A client gone sooner is
/// seen then: it holds its descriptor and its place among
/// `--max-waiting` that much longer, while every wait shorter than this,
/// the usual one, costs no system call for its watch.
const WATCH_WAITERS_AFTER: Duration = Duration::from_secs(1);

/// The longest pause after accept fails for lack of descriptors or memory.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// A connection and the index of the handler of the listener that
/// accepted it.
struct Client {
    /// Boxed: a client moves between the queue, a worker and the parker
    /// several times per request, and a connection is some 700 bytes.
    conn: Box<Connection<TcpStream>>,
    site: usize,
    /// Whether it waits in the queue after a requeue.
    requeued: bool,
    /// Counts it in `requests_waiting` while a request waits for its answer.
    waiting: Option<GaugeGuard>,
}

impl AsRawFd for Client {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.conn.as_raw_fd()
    }
}

/// A handle that stops a running server gracefully, from any thread.
#[derive(Clone)]
pub struct ShutdownHandle {
    flag: Arc<AtomicBool>,
    waker: Arc<UnixStream>,
}

impl ShutdownHandle {
    /// Begins graceful shutdown: responses close their connections, and
    /// after `drain_delay` (during which a health check can see the flag
    /// and answer 503) the listeners close, idle connections end and
    /// in-flight requests finish.
    pub fn shutdown(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = (&*self.waker).write(&[1]);
    }

    /// The flag that [`ShutdownHandle::shutdown`] sets, for signal handlers
    /// (which may only store to it; see `signal_hook::flag`) and for a
    /// health check that must fail while the server drains.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }

    /// A socket whose every byte wakes the acceptor, for signal handlers
    /// (see `signal_hook::low_level::pipe`).
    pub fn waker(&self) -> io::Result<UnixStream> {
        self.waker.try_clone()
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunReport {
    /// Connections still open when the shutdown timeout passed.
    pub abandoned: u64,
}

struct Shared {
    /// One per site; a connection carries the index of its own.
    handlers: Vec<Arc<dyn Handler>>,
    limits: Limits,
    timeouts: Timeouts,
    max_waiting: u64,
    /// Shutdown asked for: responses close (see [`Ctx::draining`]).
    draining: Arc<AtomicBool>,
    /// The listeners are closed: idle connections end, nothing parks.
    shutdown: Arc<AtomicBool>,
    /// Whose forwarding headers are believed.
    trusted: Arc<TrustedProxies>,
    metrics: Arc<Metrics>,
    access_log: Option<Arc<AccessLog>>,
    pool: ThreadPool,
    /// Connections waiting for a worker, in order.
    queue: Mutex<VecDeque<Client>>,
    /// Which workers may serve the queue now.
    slots: Slots,
    parker: Parker<Client>,
    health: Arc<Health>,
}

/// A bound, not yet running server.
pub struct Server {
    /// Each listener with the index of its handler.
    listeners: Vec<(TcpListener, usize)>,
    config: Config,
    handlers: Vec<Arc<dyn Handler>>,
    metrics: Arc<Metrics>,
    access_log: Option<Arc<AccessLog>>,
    handle: ShutdownHandle,
    waker_rx: UnixStream,
    notifier: Notifier,
    status: Option<StatusFn>,
    health: Arc<Health>,
}

impl Server {
    /// Binds every listen address in `config`. Nothing is served until
    /// [`Server::run`].
    pub fn bind(config: Config, handler: impl Handler) -> io::Result<Server> {
        config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let listeners = config
            .listen
            .iter()
            .map(|addr| {
                let listener = TcpListener::bind(addr).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
                })?;
                poller::set_backlog(&listener, poller::LISTEN_BACKLOG)?;
                Ok(listener)
            })
            .collect::<io::Result<Vec<_>>>()?;
        Server::from_listeners(listeners, config, handler)
    }

    /// Serves on listeners bound elsewhere (socket activation, tests),
    /// setting `--defer-accept` on them as on its own.
    pub fn from_listeners(
        listeners: Vec<TcpListener>,
        config: Config,
        handler: impl Handler,
    ) -> io::Result<Server> {
        for l in &listeners {
            l.set_nonblocking(true)?;
            defer_accept(l, config.defer_accept);
        }
        let (waker_rx, waker_tx) = UnixStream::pair()?;
        waker_rx.set_nonblocking(true)?;
        waker_tx.set_nonblocking(true)?;
        Ok(Server {
            listeners: listeners.into_iter().map(|l| (l, 0)).collect(),
            config,
            handlers: vec![Arc::new(handler)],
            metrics: Arc::new(Metrics::default()),
            access_log: None,
            handle: ShutdownHandle {
                flag: Arc::new(AtomicBool::new(false)),
                waker: Arc::new(waker_tx),
            },
            waker_rx,
            notifier: Notifier::disabled(),
            status: None,
            health: Arc::new(Health::new()),
        })
    }

    /// Serves `handler` on one more listener, such as the operator's
    /// endpoints on a port of their own. Returns the bound address.
    pub fn add_listener(
        &mut self,
        listener: TcpListener,
        handler: impl Handler,
    ) -> io::Result<SocketAddr> {
        listener.set_nonblocking(true)?;
        defer_accept(&listener, self.config.defer_accept);
        let addr = listener.local_addr()?;
        self.handlers.push(Arc::new(handler));
        self.listeners.push((listener, self.handlers.len() - 1));
        Ok(addr)
    }

    /// Sends access lines to `log`, and counts the lines it drops in this
    /// server's metrics. Pass an `Arc` to keep a handle, say to
    /// [`AccessLog::reopen`] it on SIGHUP. The log is flushed at the end of
    /// [`Server::run`].
    pub fn with_access_log(mut self, log: impl Into<Arc<AccessLog>>) -> Server {
        let log = log.into();
        log.count_in(self.metrics.clone());
        self.access_log = Some(log);
        self
    }

    /// Reports to systemd through `notifier`: `READY=1` when [`Server::run`]
    /// starts serving, `STATUS=` with the line `status` gives every few
    /// seconds, `WATCHDOG=1` while the server makes progress (if systemd set
    /// a watchdog), `STOPPING=1` when shutdown begins and
    /// `EXTEND_TIMEOUT_USEC=` while it drains.
    pub fn with_notifier(
        mut self,
        notifier: Notifier,
        status: impl Fn() -> String + Send + Sync + 'static,
    ) -> Server {
        self.notifier = notifier;
        self.status = Some(Box::new(status));
        self
    }

    /// Takes `flag` as the shutdown flag, the one [`ShutdownHandle::flag`]
    /// returns, so a handler built before the server, such as a health
    /// check that answers 503 while the server drains, can hold it. Call
    /// it before [`Server::shutdown_handle`]: a handle keeps the flag it
    /// was made with.
    pub fn with_shutdown_flag(mut self, flag: Arc<AtomicBool>) -> Server {
        self.handle.flag = flag;
        self
    }

    /// The progress marks the watchdog judges (and its test hook).
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// The addresses actually bound (port 0 resolved), in the order the
    /// listeners were given.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(l, _)| l.local_addr().ok())
            .collect()
    }

    /// A handle to stop the server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// The server's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Serves until shutdown, then drains for up to the shutdown timeout.
    pub fn run(self) -> io::Result<RunReport> {
        let config = self.config;
        let notifier = self.notifier;
        let status = self.status.unwrap_or_else(|| Box::new(String::new));
        let health = self.health;
        // Idle loops must wake often enough to beat within a watchdog period.
        let tick = notify::beat_interval(notifier.watchdog_period());
        let shared = Arc::new(Shared {
            handlers: self.handlers,
            limits: config.limits(),
            timeouts: config.timeouts(),
            max_waiting: config.max_waiting as u64,
            draining: self.handle.flag.clone(),
            shutdown: Arc::new(AtomicBool::new(false)),
            trusted: Arc::new(config.trusted_proxies()),
            metrics: self.metrics,
            access_log: self.access_log,
            pool: threadpool::Builder::new()
                .num_threads(config.workers)
                .thread_name("corral-worker".into())
                .build(),
            queue: Mutex::new(VecDeque::new()),
            slots: Slots::new(Slots::cpus(), config.workers),
            parker: Parker::new(WATCH_WAITERS_AFTER)?,
            health: health.clone(),
        });
        let parker_thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("corral-parker".into())
                .spawn(move || shared.parker.run(&ParkerEvents::new(&shared), tick))?
        };
        log::info!(
            "corral {} listening on {}; {}",
            env!("CARGO_PKG_VERSION"),
            self.listeners
                .iter()
                .filter(|(_, site)| *site == 0)
                .filter_map(|(l, _)| l.local_addr().ok())
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            config.limits_summary()
        );
        log::debug!(
            "{} workers, {} of them serving connections at once (one per CPU)",
            config.workers,
            shared.slots.per_cpu()
        );
        let mut acceptor = Acceptor {
            shared: &shared,
            listeners: self.listeners,
            waker: self.waker_rx,
            max_connections: config.max_connections as u64,
            queue: config.queue as u64,
            backoff: Duration::ZERO,
            last_error_log: None,
            suppressed: 0,
            tick,
            drain_delay: config.drain_delay,
        };
        // Every listener is bound (the kernel queues connections until the
        // acceptor takes them), so this is the moment to say so.
        notifier.ready(&status());
        std::thread::scope(|s| {
            let (stop_tx, stop_rx) = mpsc::channel::<()>();
            if notifier.is_enabled() {
                std::thread::Builder::new()
                    .name("corral-watchdog".into())
                    .spawn_scoped(s, || supervise(&notifier, &health, &*status, stop_rx))?;
            }
            acceptor.run(&notifier);
            // Ends the supervisor (also when the acceptor panics).
            drop(stop_tx);
            io::Result::Ok(())
        })?;
        // Closing the listeners refuses new connections at once.
        drop(acceptor);
        log::info!("shutting down: draining in-flight requests");
        // Idle connections close now; requests waiting for an answer stay
        // parked through the drain, so an answer that comes in time is
        // still written.
        shared.parker.stop();

        let deadline = Instant::now() + config.shutdown_timeout;
        let open = || shared.metrics.connections_open.load(Ordering::SeqCst);
        let mut next_extend = Instant::now();
        while open() > 0 && Instant::now() < deadline {
            if Instant::now() >= next_extend {
                notifier.extend_timeout(DRAIN_EXTEND_BY);
                next_extend += DRAIN_EXTEND_EVERY;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // Whatever still waits gets its 503 from the parker as it quits.
        shared.parker.quit();
        let _ = parker_thread.join();
        let abandoned = open();
        // The access lines of the drained requests are buffered: write them
        // before the process exits.
        if let Some(log) = &shared.access_log {
            if !log.flush(access::FLUSH_TIMEOUT) {
                log::warn!(
                    "access log: its last lines are not written after {:?}; its file or pipe is stuck",
                    access::FLUSH_TIMEOUT
                );
            }
        }
        if abandoned > 0 {
            log::warn!(
                "shutdown timeout: abandoning {abandoned} connection(s) with requests in flight"
            );
        } else {
            log::info!("shutdown complete");
        }
        Ok(RunReport { abandoned })
    }
}

/// Reports to systemd while the server runs: `WATCHDOG=1` every half
/// period while `health` shows progress, and `STATUS=` every
/// `STATUS_INTERVAL`. Returns when `stop`'s sender goes away.
fn supervise(
    notifier: &Notifier,
    health: &Health,
    status: &(dyn Fn() -> String + Sync),
    stop: mpsc::Receiver<()>,
) {
    let period = notifier.watchdog_period();
    let every = period.map_or(STATUS_INTERVAL, |p| (p / 2).min(STATUS_INTERVAL));
    let mut samples = PoolSamples::default();
    let mut next = Instant::now() + every;
    let mut next_status = Instant::now() + STATUS_INTERVAL;
    let mut stalled = false;
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        if !matches!(
            stop.recv_timeout(wait),
            Err(mpsc::RecvTimeoutError::Timeout)
        ) {
            return;
        }
        let now = Instant::now();
        // A fixed schedule, so pings do not drift later by the time each
        // turn takes; after a long pause (a suspended VM) start afresh
        // rather than catch up in a burst.
        next = (next + every).max(now);
        if let Some(period) = period {
            match health.check(&mut samples, period) {
                Ok(()) => {
                    if std::mem::take(&mut stalled) {
                        log::warn!("watchdog: progress again; pinging systemd");
                    }
                    notifier.watchdog();
                }
                Err(stall) => {
                    if !std::mem::replace(&mut stalled, true) {
                        log::error!(
                            "watchdog: {stall}; withholding WATCHDOG=1 so that systemd restarts corral"
                        );
                    }
                }
            }
        }
        if now >= next_status {
            notifier.status(&status());
            next_status = now + STATUS_INTERVAL;
        }
    }
}

/// The parker's calls into the server; the cell is the stall watch: the
/// picks last seen, and since when the queue has had connections without
/// them changing.
struct ParkerEvents<'a>(&'a Arc<Shared>, std::cell::Cell<(u64, Option<Instant>)>);

impl<'a> ParkerEvents<'a> {
    fn new(shared: &'a Arc<Shared>) -> ParkerEvents<'a> {
        ParkerEvents(shared, std::cell::Cell::new((0, None)))
    }

    /// Demotes the workers holding the slots if the queue has made no
    /// progress for [`STALL`] since this thread first saw connections in
    /// it: each holder neither finishes nor waits on a client (a handler
    /// computing or blocking), so other workers serve the queue.
    fn unstick(&self) {
        let s = self.0;
        let now = Instant::now();
        let picks = s.slots.picks();
        let queued = crate::unwind::lock(&s.queue).len();
        match self.1.get() {
            _ if queued == 0 => self.1.set((picks, None)),
            (seen, Some(since)) if seen == picks => {
                // A new worker could not start anyway while every pool
                // thread is busy: the pool is exhausted, not stalled.
                let spare =
                    s.pool.queued_count() == 0 && s.pool.active_count() < s.pool.max_count();
                if now.saturating_duration_since(since) >= STALL && spare {
                    self.1.set((picks, Some(now)));
                    s.slots.demote_all();
                    Metrics::inc(&s.metrics.worker_stalls);
                    log::debug!(
                        "no queued connection served for {STALL:?}: its workers are demoted, others serve the {queued} queued"
                    );
                    for _ in 0..queued {
                        if !start_if_free(s) {
                            break;
                        }
                    }
                }
            }
            // Progress, or the first sight of a queue: the clock starts.
            _ => self.1.set((picks, Some(now))),
        }
    }
}

impl Dispatch<Client> for ParkerEvents<'_> {
    fn ready(&self, c: Client) {
        Metrics::dec(&self.0.metrics.connections_parked);
        // A waiting request's client hung up: a worker counts it and closes.
        submit(self.0, c);
    }

    fn expired(&self, mut c: Client) {
        Metrics::dec(&self.0.metrics.connections_parked);
        let shared = self.0;
        if c.conn.is_waiting() {
            // Its wait is over: a worker writes the 503 (or the answer, if
            // it came at the last moment) and goes on with the connection.
            submit(shared, c);
            return;
        }
        let (_, expiry) = c.conn.deadline(&shared.timeouts);
        // The parker serves every parked connection, so it must not wait on
        // one: the short 408 gets one try at the send buffer, which is empty
        // unless the client stopped reading earlier responses.
        let mut ctx = ctx(shared, c.site, &|| true);
        ctx.timeouts.write = Duration::from_millis(1);
        conn::expire(&mut c.conn, &ctx, expiry);
    }

    fn abandoned(&self, mut c: Client) {
        Metrics::dec(&self.0.metrics.connections_parked);
        if c.conn.is_waiting() {
            // The drain is over and its answer never came: say so rather
            // than close unanswered, with one short try at the send buffer
            // as for a 408.
            let mut ctx = ctx(self.0, c.site, &|| true);
            ctx.timeouts.write = Duration::from_millis(1);
            conn::give_up(&mut c.conn, &ctx);
            return;
        }
        // Shutdown: a request under way is finished by a worker, which no
        // longer parks it; an idle connection just closes.
        if in_flight(&c) {
            submit(self.0, c);
        }
    }

    fn tick(&self) {
        self.0.health.hold_if_wedged(Component::Parker);
        self.0.health.beat(Component::Parker);
        self.unstick();
    }

    fn tick_within(&self) -> Option<Duration> {
        // The queue can stall only while every slot is held: look then.
        self.0.slots.all_held().then_some(STALL)
    }
}

fn ctx<'a>(
    shared: &'a Shared,
    site: usize,
    others_waiting: &'a dyn Fn() -> bool,
) -> Ctx<'a, SystemClock> {
    ctx_with(shared, site, others_waiting, &|| {})
}

fn ctx_with<'a>(
    shared: &'a Shared,
    site: usize,
    others_waiting: &'a dyn Fn() -> bool,
    before_wait: &'a dyn Fn(),
) -> Ctx<'a, SystemClock> {
    Ctx {
        before_wait,
        handler: shared.handlers[site].as_ref(),
        clock: &SystemClock,
        timeouts: shared.timeouts,
        shutdown: &shared.shutdown,
        draining: &shared.draining,
        others_waiting,
        access_log: shared.access_log.as_deref(),
        metrics: &shared.metrics,
        max_waiting: shared.max_waiting,
    }
}

/// Hands a connection to the pool: queues it, and starts a worker on the
/// queue if a CPU has none.
fn submit(shared: &Arc<Shared>, c: Client) {
    enqueue(shared, [c]);
    if crate::gather::deferring() && !shared.slots.held_here() {
        // This thread is answering many waiting requests at once, on a CPU
        // it keeps busy without a slot: a worker started there would only
        // take turns with it. Workers start on the other CPUs, and on this
        // one when the answers are all handed over, or the run has gone on
        // too long (see `crate::gather`).
        if let Some(ticket) = shared.slots.take_spare() {
            start_worker(shared, ticket);
        }
        let s = shared.clone();
        crate::gather::defer(Arc::as_ptr(shared) as usize, move || kick(&s));
        return;
    }
    start_if_free(shared);
}

/// Queues `clients`, counted, in order, for whichever worker comes next.
fn enqueue(shared: &Shared, clients: impl IntoIterator<Item = Client>) {
    let mut queue = crate::unwind::lock(&shared.queue);
    for c in clients {
        Metrics::inc(&shared.metrics.connections_queued);
        shared.health.job_queued();
        queue.push_back(c);
    }
}

/// Starts a worker on the queue if connections wait and a CPU has none.
fn kick(shared: &Arc<Shared>) {
    if !crate::unwind::lock(&shared.queue).is_empty() {
        start_if_free(shared);
    }
}

/// Starts a worker on the queue if a CPU has none; whether it did.
fn start_if_free(shared: &Arc<Shared>) -> bool {
    let ticket = shared.slots.take();
    if let Some(ticket) = ticket {
        start_worker(shared, ticket);
    }
    ticket.is_some()
}

/// Starts a worker on the queue, with the slot taken for it.
fn start_worker(shared: &Arc<Shared>, ticket: Ticket) {
    let s = shared.clone();
    shared.pool.execute(move || work(&s, ticket));
}

/// A worker: serves queued connections one after another while it holds
/// its slot and there are any (see [`crate::slots`]).
fn work(s: &Arc<Shared>, ticket: Ticket) {
    s.slots.enter(ticket);
    let _unwinding = OnUnwind(s);
    loop {
        let next = if s.slots.held_here() {
            crate::unwind::lock(&s.queue).pop_front()
        } else {
            None
        };
        if let Some(c) = next {
            s.slots.picked();
            serve_job(s, c);
            continue;
        }
        // The queue is empty, or this worker gave its slot up to wait on a
        // client, or it was demoted while held up. A connection queued
        // just before the slot was given back found every slot held, so
        // look again before leaving.
        s.slots.release_here();
        if crate::unwind::lock(&s.queue).is_empty() {
            return;
        }
        match s.slots.take() {
            Some(ticket) => s.slots.enter(ticket),
            None => return,
        }
    }
}

/// Gives a worker's slot back if a panic ends its job (the pool replaces
/// the thread): a slot lost for good would leave a CPU unserved, and with
/// one CPU the whole queue.
struct OnUnwind<'a>(&'a Arc<Shared>);

impl Drop for OnUnwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            give_slot_up(self.0);
        }
    }
}

/// Gives the calling worker's slot up (before it waits on a client, or as
/// it unwinds), and starts another worker if connections are queued.
fn give_slot_up(s: &Arc<Shared>) {
    if s.slots.release_here() {
        kick(s);
    }
}

/// Serves one queued connection, then hands it on: to the parker, back to
/// the queue, or to the drop.
fn serve_job(s: &Arc<Shared>, mut c: Client) {
    s.health.job_started();
    let m = &s.metrics;
    Metrics::dec(&m.connections_queued);
    if std::mem::take(&mut c.requeued) {
        Metrics::dec(&m.connections_requeued);
    }
    let _busy = GaugeGuard::new(s.metrics.clone(), |m| &m.workers_busy);
    let others_waiting = || m.connections_queued.load(Ordering::Relaxed) > 0;
    let before_wait = || give_slot_up(s);
    // Its wait, if any, ends here: serve writes the answer or the 503.
    c.waiting = None;
    match conn::serve(
        &mut c.conn,
        &ctx_with(s, c.site, &others_waiting, &before_wait),
    ) {
        Handoff::Close => {}
        Handoff::Wait(deadline) => {
            c.waiting = Some(GaugeGuard::new(s.metrics.clone(), |m| &m.requests_waiting));
            wait(s, c, deadline);
        }
        Handoff::Requeue => {
            c.requeued = true;
            Metrics::inc(&m.connections_requeued);
            submit(s, c);
        }
        Handoff::Park(deadline) => {
            // Counted before parking: the parker may hand it back (and
            // count it out) before `park` even returns.
            Metrics::inc(&s.metrics.connections_parked);
            match s.parker.park(c, deadline, Watch::Readable) {
                Ok(_) => {}
                // Shutdown began after `serve` chose to park: the parker
                // is stopping, so finish the request on a worker instead.
                Err((c, _)) => {
                    Metrics::dec(&s.metrics.connections_parked);
                    if in_flight(&c) && s.shutdown.load(Ordering::SeqCst) {
                        submit(s, c);
                    }
                }
            }
        }
    }
}

/// Parks `c`, whose request waits for its answer, until the answer comes
/// (then it is written: see [`resume`]), its client hangs up, or
/// `deadline` passes.
fn wait(shared: &Arc<Shared>, c: Client, deadline: Instant) {
    let resumer = Arc::new(Resumer::default());
    {
        // Weak: the wake-up lives in the answer's slot, which must not keep
        // the server alive.
        let (shared, resumer) = (Arc::downgrade(shared), resumer.clone());
        c.conn
            .on_answer(Box::new(move || resumer.answered(&shared)));
    }
    // Counted before parking, as for an idle connection.
    Metrics::inc(&shared.metrics.connections_parked);
    match shared.parker.park(c, deadline, Watch::HangUp) {
        Ok(token) => resumer.parked(shared, token),
        // The parker has quit: the drain is over.
        Err((mut c, _)) => {
            Metrics::dec(&shared.metrics.connections_parked);
            conn::give_up(&mut c.conn, &ctx(shared, c.site, &|| true));
        }
    }
}

/// Brings a waiting connection back from the parker when its answer comes.
/// The answer may come before the connection is parked (it was computed in
/// between), so whichever of the two events comes second unparks it.
#[derive(Default)]
struct Resumer {
    /// The parked connection's token, and whether the answer came.
    state: Mutex<(Option<Token>, bool)>,
}

impl Resumer {
    /// The connection is parked as `token`.
    fn parked(&self, shared: &Arc<Shared>, token: Token) {
        let mut state = crate::unwind::lock(&self.state);
        if state.1 {
            drop(state);
            resume(shared, token);
        } else {
            state.0 = Some(token);
        }
    }

    /// The answer came (on whatever thread sent it).
    fn answered(&self, shared: &Weak<Shared>) {
        let token = {
            let mut state = crate::unwind::lock(&self.state);
            state.1 = true;
            state.0.take()
        };
        if let (Some(token), Some(shared)) = (token, shared.upgrade()) {
            resume(&shared, token);
        }
    }
}

/// Hands a waiting connection whose answer came to a worker, or keeps it
/// for this thread to write its answer ([`answer_at_end_of_run`]), unless
/// the parker let it go first (its client hung up, or its deadline
/// passed).
fn resume(shared: &Arc<Shared>, token: Token) {
    if let Some(c) = shared.parker.unpark(token) {
        Metrics::dec(&shared.metrics.connections_parked);
        if shared.slots.one_cpu() && !shared.slots.held_here() && !crate::priority::behind_here() {
            if crate::gather::deferring() {
                answer_at_end_of_run(shared, c);
                return;
            }
            // The run has gone on too long to keep deferring: the answers
            // it kept go out now, before this one.
            answer_gathered(shared);
        }
        submit(shared, c);
    }
}

thread_local! {
    /// Waiting connections whose answers this thread writes when its
    /// gathered run ends, each with the server it belongs to.
    static TO_ANSWER: std::cell::RefCell<Vec<(usize, Client)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Leaves a waiting connection whose answer came to this thread, which is
/// answering many at once, for it to write itself when its run ends
/// ([`answer_gathered`]), or when the run has deferred for too long.
///
/// Only where the pool runs on one CPU (a process pinned to one, or in a
/// container with one CPU's quota): a worker there would only take turns
/// with this thread, and each hand-over to it costs a queue and the
/// worker's bookkeeping before its write, so the last answer of a
/// thousand went out 12ms after the upstream's instead of under 10
/// (BENCHMARKS.md). With more CPUs, workers on the others write the
/// answers while this thread hands them over. Not on a thread running
/// behind the workers (a compute lane at `low` or `idle`), which any busy
/// thread may hold off the CPU with the answers unwritten; nor on a worker
/// that holds the slot (a handler that completed a fill itself), whose own
/// client comes first. Called only while the thread's run defers.
fn answer_at_end_of_run(shared: &Arc<Shared>, c: Client) {
    let key = Arc::as_ptr(shared) as usize;
    TO_ANSWER.with(|t| t.borrow_mut().push((key, c)));
    let s = shared.clone();
    // Keyed apart from the queue's kick, which is the pointer itself.
    let deferred = crate::gather::defer(key + 1, move || answer_gathered(&s));
    debug_assert!(deferred, "kept outside a run");
}

/// Writes the answers left by [`answer_at_end_of_run`], back to back and
/// without waiting for room, then queues their connections for their next
/// requests (and a worker for what the sockets did not take at once).
fn answer_gathered(shared: &Arc<Shared>) {
    let key = Arc::as_ptr(shared) as usize;
    let mut mine = TO_ANSWER.with(|t| std::mem::take(&mut *t.borrow_mut()));
    // Usually all of them: one server is all a process runs.
    if mine.iter().any(|(k, _)| *k != key) {
        let (own, others): (Vec<_>, Vec<_>) = mine.into_iter().partition(|(k, _)| *k == key);
        TO_ANSWER.with(|t| t.borrow_mut().extend(others));
        mine = own;
    }
    if mine.is_empty() {
        return;
    }
    let mut spent = conn::Spent::default();
    for (_, c) in &mut mine {
        if c.conn
            .answer_now(&ctx(shared, c.site, &|| true), &mut spent)
        {
            c.waiting = None;
        }
    }
    // Counted once answered, so that a panic above leaves no count behind
    // for connections never queued (the health check would take them for
    // a stalled queue).
    enqueue(shared, mine.into_iter().map(|(_, c)| c));
    start_if_free(shared);
    drop(spent);
}

/// Whether part of a request has arrived on `c`, so shutdown must let it
/// finish rather than close it.
fn in_flight(c: &Client) -> bool {
    matches!(c.conn.phase(), Phase::Head | Phase::Body)
}

struct Acceptor<'a> {
    shared: &'a Arc<Shared>,
    listeners: Vec<(TcpListener, usize)>,
    waker: UnixStream,
    max_connections: u64,
    queue: u64,
    backoff: Duration,
    last_error_log: Option<Instant>,
    suppressed: u64,
    /// The longest wait for a connection: the heartbeat interval.
    tick: Duration,
    /// How long to go on accepting once shutdown is asked for.
    drain_delay: Duration,
}

impl Acceptor<'_> {
    /// Accepts until shutdown is asked for and `drain_delay` has passed
    /// since, then sets the `shutdown` flag and returns; its caller closes
    /// the listeners. Tells systemd `STOPPING=1` when the delay begins.
    fn run(&mut self, notifier: &Notifier) {
        let mut fds: Vec<_> = self.listeners.iter().map(|(l, _)| l.as_raw_fd()).collect();
        fds.push(self.waker.as_raw_fd());
        let mut closing_at: Option<Instant> = None;
        let mut next_extend = Instant::now();
        while let Some(tick) = self.drain_turn(&mut closing_at, &mut next_extend, notifier) {
            self.shared.health.hold_if_wedged(Component::Acceptor);
            self.shared.health.beat(Component::Acceptor);
            if !self.backoff.is_zero() {
                // Out of descriptors: the listeners stay readable, so wait on
                // the waker alone or this loop would spin.
                let _ = poller::wait(
                    &[self.waker.as_raw_fd()],
                    Interest::Read,
                    Some(self.backoff),
                );
                self.drain_waker();
            }
            let ready = match poller::wait(&fds, Interest::Read, Some(tick)) {
                Ok(r) => r,
                Err(e) => {
                    self.accept_failed(&e);
                    continue;
                }
            };
            if ready.last().copied().unwrap_or(false) {
                self.drain_waker();
            }
            // Shutdown asked for during the wait: the next turn starts the
            // delay, or ends the loop at once if there is none.
            if self.shared.draining.load(Ordering::SeqCst) && closing_at.is_none() {
                continue;
            }
            let mut failed = false;
            for (i, _) in ready.iter().enumerate().filter(|(_, r)| **r) {
                if i < self.listeners.len() {
                    failed |= !self.accept_from(i);
                }
            }
            if !failed {
                self.backoff = Duration::ZERO;
            }
        }
        self.shared.shutdown.store(true, Ordering::SeqCst);
    }

    /// Where the drain stands at the top of an accept turn: `None` once the
    /// listeners should close, else how long this turn may wait. The delay
    /// starts the first time the shutdown flag is seen set (a signal sets
    /// it, then wakes the acceptor).
    fn drain_turn(
        &self,
        closing_at: &mut Option<Instant>,
        next_extend: &mut Instant,
        notifier: &Notifier,
    ) -> Option<Duration> {
        if !self.shared.draining.load(Ordering::SeqCst) {
            return Some(self.tick);
        }
        let now = Instant::now();
        let at = *closing_at.get_or_insert_with(|| {
            notifier.stopping();
            if !self.drain_delay.is_zero() {
                log::info!(
                    "draining: /healthz answers 503 and responses close; \
                     the listeners close in {:?}",
                    self.drain_delay
                );
            }
            now + self.drain_delay
        });
        if now >= at {
            return None;
        }
        // The stop timeout must not run out during the delay either.
        if now >= *next_extend {
            notifier.extend_timeout(DRAIN_EXTEND_BY);
            *next_extend = now + DRAIN_EXTEND_EVERY;
        }
        Some(self.tick.min(at - now).min(DRAIN_EXTEND_EVERY))
    }

    fn drain_waker(&mut self) {
        let mut sink = [0u8; 64];
        while matches!(self.waker.read(&mut sink), Ok(n) if n > 0) {}
    }

    /// Accepts what is pending on listener `i` (a bounded batch, so one busy
    /// listener cannot starve the others). Returns false after a resource
    /// error, having set the backoff.
    fn accept_from(&mut self, i: usize) -> bool {
        for _ in 0..64 {
            let (listener, site) = &self.listeners[i];
            match poller::accept_nonblocking(listener) {
                Ok((stream, peer)) => self.accepted(stream, peer, *site),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if is_transient(&e) => {}
                Err(e) => {
                    self.accept_failed(&e);
                    return false;
                }
            }
        }
        true
    }

    /// EMFILE, ENFILE, ENOBUFS, ENOMEM: log at most once a second and back
    /// off, doubling up to a second. Existing connections go on being served.
    fn accept_failed(&mut self, e: &io::Error) {
        Metrics::inc(&self.shared.metrics.accept_errors);
        let now = Instant::now();
        if self
            .last_error_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            let more = match self.suppressed {
                0 => String::new(),
                n => format!(" ({n} more since the last report)"),
            };
            log::error!("accept failed: {e}{more}; backing off");
            self.last_error_log = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
        self.backoff = (self.backoff * 2)
            .max(Duration::from_millis(10))
            .min(MAX_ACCEPT_BACKOFF);
    }

    fn accepted(&self, stream: TcpStream, peer: SocketAddr, site: usize) {
        let shared = self.shared;
        Metrics::inc(&shared.metrics.connections_accepted);
        // Responses go out in one write each; Nagle would only delay them.
        let _ = stream.set_nodelay(true);
        let open = shared.metrics.connections_open.load(Ordering::Relaxed);
        // Connections gone round the queue after a response would be parked
        // otherwise, so they do not make the queue full for newcomers.
        let queued = shared.metrics.connections_queued.load(Ordering::Relaxed);
        let requeued = shared.metrics.connections_requeued.load(Ordering::Relaxed);
        if open >= self.max_connections || queued.saturating_sub(requeued) >= self.queue {
            Metrics::inc(&shared.metrics.connections_rejected);
            log::debug!("{peer}: busy (open {open}, queued {queued}), answered 503");
            reject(stream);
            return;
        }
        let now = Instant::now();
        let conn = Connection::new(stream, Some(peer), shared.limits, &shared.timeouts, now)
            .trusting(&shared.trusted)
            .with_gauge(GaugeGuard::new(shared.metrics.clone(), |m| {
                &m.connections_open
            }));
        submit(
            shared,
            Client {
                conn: Box::new(conn),
                site,
                requeued: false,
                waiting: None,
            },
        );
    }
}

/// Sets `--defer-accept` on a listener, ours or one passed in by systemd
/// (whose `DeferAcceptSec=` this overrides, so the option means the same
/// under socket activation). The kernel counts it in whole seconds.
fn defer_accept(listener: &TcpListener, defer: Duration) {
    let secs = u32::try_from(defer.as_nanos().div_ceil(1_000_000_000)).unwrap_or(u32::MAX);
    if let Err(e) = poller::set_defer_accept(listener, secs) {
        // Only slower: the worker waits for the first request instead.
        let addr = listener.local_addr().map(|a| a.to_string());
        log::warn!(
            "{}: cannot set defer-accept: {e}",
            addr.unwrap_or_else(|_| "listener".into())
        );
    }
}

/// Errors that concern one connection only (RFC-less but universal: the
/// peer reset before accept returned).
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EPROTO | libc::EINTR | libc::EPERM)
    ) || e.kind() == io::ErrorKind::Interrupted
        || e.kind() == io::ErrorKind::ConnectionAborted
}

fn reject(mut stream: TcpStream) {
    let _ = stream.write(BUSY);
    conn::Transport::close(&mut stream);
}
