//! The upstream connection pool: per upstream, a bounded set of keep-alive
//! connections, its requests in flight, its health and its counters; per
//! route, the choice of upstream. Plain blocking sockets with timeouts:
//! this runs on a route's fetch threads, never on a request worker.
//!
//! # Balancing
//!
//! Each request goes to the route's upstream with the fewest requests in
//! flight (nginx's `least_conn`), ties broken round-robin so idle upstreams
//! share the load. The upstreams this is for are single-threaded processes
//! doing CPU-bound work: one with a request in flight is busy for seconds,
//! so round-robin would queue requests behind a long computation while a
//! sibling idles.
//!
//! # Passive health
//!
//! An upstream that fails (connection refused or timed out, a timeout, a
//! malformed or cut-short response) is skipped for [`FAIL_TIMEOUT`]:
//! nginx's `max_fails=1 fail_timeout=10s`. If every upstream of a route is
//! down, the one that failed longest ago is tried anyway, as nginx does,
//! so a route recovers as soon as an upstream does rather than after the
//! window. A 5xx response is not a failure: the upstream is alive and said
//! something.
//!
//! # Connections
//!
//! At most `max_connections` per upstream, in use or idle. A connection
//! goes back to the idle list only after a response that was read to its
//! end, allows keep-alive, and left no byte behind; one taken from it is
//! checked first (a non-blocking read that must find nothing), since the
//! upstream may have closed it while it sat idle. The most recently used
//! idle connection is taken first, so after a burst the surplus ages, and
//! one idle for [`IDLE_TIMEOUT`] is closed the next time the upstream's
//! pool is used (nginx's upstream `keepalive_timeout`): a threaded
//! upstream holds a thread for each connection it keeps open.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::route::Upstream;
use crate::metrics::Histogram;
use crate::unwind::lock;

/// How long a failed upstream is skipped: nginx's `fail_timeout` default.
pub const FAIL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection may sit idle in the pool: nginx's upstream
/// `keepalive_timeout` default. Long enough to carry keep-alive across the
/// gaps of steady traffic, short enough that a burst's connections do not
/// hold an upstream's threads for good.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection to an upstream.
#[derive(Debug)]
pub enum Stream {
    /// Over TCP.
    Tcp(TcpStream),
    /// Over a Unix domain socket.
    Unix(UnixStream),
}

impl Stream {
    /// Connects to `upstream`, giving up after `timeout` (TCP; a Unix
    /// socket connects at once or fails).
    pub fn connect(upstream: &Upstream, timeout: Duration) -> io::Result<Stream> {
        Ok(match upstream {
            Upstream::Tcp(addr) => {
                let s = TcpStream::connect_timeout(addr, timeout)?;
                // Requests go out in one write; Nagle would only delay them.
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }
            Upstream::Unix(path) => Stream::Unix(UnixStream::connect(path)?),
        })
    }

    /// Bounds the next reads and writes by `timeout` (which must not be
    /// zero: std refuses that).
    pub fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        let t = Some(timeout.max(Duration::from_millis(1)));
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t).and(s.set_write_timeout(t)),
            Stream::Unix(s) => s.set_read_timeout(t).and(s.set_write_timeout(t)),
        }
    }

    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nonblocking(on),
            Stream::Unix(s) => s.set_nonblocking(on),
        }
    }

    /// Whether an idle connection can take a request: the upstream has not
    /// closed it and sent nothing unasked (a byte there would be read as
    /// the start of the next response).
    fn is_reusable(&mut self) -> bool {
        if self.set_nonblocking(true).is_err() {
            return false;
        }
        let mut probe = [0u8; 1];
        let quiet =
            matches!(self.read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        quiet && self.set_nonblocking(false).is_ok()
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One upstream: its idle connections, its load, its health. What each
/// route sent it is counted in the route's [`Traffic`].
#[derive(Debug)]
pub struct Peer {
    /// Where it listens.
    pub upstream: Upstream,
    max_connections: usize,
    /// Idle connections and when each went idle, oldest first.
    idle: Mutex<Vec<(Stream, Instant)>>,
    /// Connections open, idle ones included.
    open: AtomicUsize,
    /// Requests in flight.
    in_flight: AtomicUsize,
    /// Until when it is skipped, and when it last failed.
    health: Mutex<Health>,
}

/// What one route sent one of its upstreams, for /metrics and /status.
/// Per route and upstream, not per upstream: two routes may share one, and
/// an operator asks which route's traffic failed or was slow.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Attempts started (a retry counts again).
    pub requests: AtomicU64,
    /// Attempts that failed in a way that marks the upstream down.
    pub failures: AtomicU64,
    /// Requests in flight now.
    in_flight: AtomicUsize,
    /// From the first attempt to the end of the response, for responses
    /// that completed.
    pub latency: Histogram,
}

impl Traffic {
    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Default)]
struct Health {
    down_until: Option<Instant>,
    last_failure: Option<Instant>,
}

impl Peer {
    fn new(upstream: Upstream, max_connections: usize) -> Peer {
        Peer {
            upstream,
            max_connections: max_connections.max(1),
            idle: Mutex::new(Vec::new()),
            open: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            health: Mutex::new(Health::default()),
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Connections open now, idle ones included.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Whether it is being skipped after a failure.
    pub fn is_down(&self, now: Instant) -> bool {
        lock(&self.health).down_until.is_some_and(|t| now < t)
    }

    /// Records a failure: skipped for [`FAIL_TIMEOUT`].
    pub fn failed(&self) {
        let now = Instant::now();
        let mut health = lock(&self.health);
        health.down_until = now.checked_add(FAIL_TIMEOUT);
        health.last_failure = Some(now);
    }

    /// Records a complete exchange: an upstream that answers is up.
    pub fn succeeded(&self) {
        lock(&self.health).down_until = None;
    }

    /// The idle connection used last, if one still works. Those that do
    /// not, and those idle past [`IDLE_TIMEOUT`], are closed.
    fn take_idle(&self, now: Instant) -> Option<Stream> {
        self.close_expired(now);
        loop {
            let (mut conn, _) = lock(&self.idle).pop()?;
            if conn.is_reusable() {
                return Some(conn);
            }
            self.open.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Puts a connection back, the newest idle one.
    fn put_idle(&self, conn: Stream, now: Instant) {
        {
            let mut idle = lock(&self.idle);
            // Two releases may read the clock in one order and take the
            // lock in the other: keep the list in order of going idle,
            // which `close_expired` relies on.
            let since = idle.last().map_or(now, |(_, last)| now.max(*last));
            idle.push((conn, since));
        }
        self.close_expired(now);
    }

    /// Closes the idle connections that have waited [`IDLE_TIMEOUT`]: the
    /// oldest, at the front.
    fn close_expired(&self, now: Instant) {
        let expired: Vec<(Stream, Instant)> = {
            let mut idle = lock(&self.idle);
            let n = idle.partition_point(|(_, since)| {
                now.saturating_duration_since(*since) >= IDLE_TIMEOUT
            });
            idle.drain(..n).collect()
        };
        // Closed outside the lock.
        self.open.fetch_sub(expired.len(), Ordering::SeqCst);
    }

    /// Connections idle in the pool now.
    pub fn idle_connections(&self) -> usize {
        lock(&self.idle).len()
    }
}

/// A request's claim on one upstream: counts it in flight until dropped.
#[derive(Debug)]
pub struct Lease {
    peer: Arc<Peer>,
    route: Arc<RoutePool>,
    /// The upstream's place in the route.
    index: usize,
}

impl Lease {
    /// The upstream.
    pub fn peer(&self) -> &Arc<Peer> {
        &self.peer
    }

    fn traffic(&self) -> &Traffic {
        &self.route.traffic[self.index]
    }

    /// Records a failure of the upstream (see [`Peer::failed`]).
    pub fn failed(&self) {
        self.traffic().failures.fetch_add(1, Ordering::Relaxed);
        self.peer.failed();
    }

    /// Records a complete response, `took` after the first attempt.
    pub fn succeeded(&self, took: Duration) {
        self.traffic().latency.observe(took);
        self.peer.succeeded();
    }

    /// A connection: an idle one if it still works (`true`: reused), else a
    /// new one.
    pub fn connect(&self, timeout: Duration) -> io::Result<(Stream, bool)> {
        if let Some(conn) = self.peer.take_idle(Instant::now()) {
            return Ok((conn, true));
        }
        self.peer.open.fetch_add(1, Ordering::SeqCst);
        match Stream::connect(&self.peer.upstream, timeout) {
            Ok(conn) => Ok((conn, false)),
            Err(e) => {
                self.peer.open.fetch_sub(1, Ordering::SeqCst);
                Err(e)
            }
        }
    }

    /// Gives a connection back after a clean response, to be reused.
    pub fn release(&self, conn: Stream) {
        self.peer.put_idle(conn, Instant::now());
    }

    /// Closes a connection that must not be reused.
    pub fn discard(&self, conn: Stream) {
        drop(conn);
        self.peer.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.peer.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.traffic().in_flight.fetch_sub(1, Ordering::SeqCst);
        // A slot came free: a fetch waiting for one may go.
        let _guard = lock(&self.route.slots);
        self.route.freed.notify_one();
    }
}

/// The upstreams of one route and the choice between them.
#[derive(Debug)]
pub struct RoutePool {
    peers: Vec<Arc<Peer>>,
    /// What this route sent each of `peers`, in the same order.
    traffic: Vec<Traffic>,
    /// Where the search for the least loaded upstream starts: turns, so
    /// that ties go round-robin.
    next: AtomicUsize,
    /// Taken to wait for a slot, with `freed`.
    slots: Mutex<()>,
    freed: Condvar,
}

impl RoutePool {
    /// The pool of `peers` (shared with other routes that name the same
    /// upstreams).
    pub fn new(peers: Vec<Arc<Peer>>) -> RoutePool {
        RoutePool {
            traffic: peers.iter().map(|_| Traffic::default()).collect(),
            peers,
            next: AtomicUsize::new(0),
            slots: Mutex::new(()),
            freed: Condvar::new(),
        }
    }

    /// The route's upstreams.
    pub fn peers(&self) -> &[Arc<Peer>] {
        &self.peers
    }

    /// Each upstream with what this route sent it.
    pub fn traffic(&self) -> impl Iterator<Item = (&Arc<Peer>, &Traffic)> {
        self.peers.iter().zip(&self.traffic)
    }

    /// A claim on the upstream with the fewest requests in flight among
    /// those not in `tried` and not down, waiting until `deadline` if every
    /// candidate is at its connection limit. `None` when there is no
    /// candidate left, or the deadline passed.
    pub fn lease(self: &Arc<Self>, tried: &[usize], deadline: Instant) -> Option<(usize, Lease)> {
        let mut guard = lock(&self.slots);
        loop {
            match self.pick(tried) {
                Pick::Got(i) => {
                    drop(guard);
                    let peer = self.peers[i].clone();
                    let traffic = &self.traffic[i];
                    traffic.requests.fetch_add(1, Ordering::Relaxed);
                    traffic.in_flight.fetch_add(1, Ordering::SeqCst);
                    return Some((
                        i,
                        Lease {
                            peer,
                            route: self.clone(),
                            index: i,
                        },
                    ));
                }
                Pick::None => return None,
                Pick::Full => {
                    let left = deadline.checked_duration_since(Instant::now())?;
                    guard = self
                        .freed
                        .wait_timeout(guard, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }

    /// Chooses under the `slots` lock, and counts the choice in flight.
    fn pick(&self, tried: &[usize]) -> Pick {
        let now = Instant::now();
        let n = self.peers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let candidates = || {
            (0..n)
                .map(|k| (start + k) % n)
                .filter(|i| !tried.contains(i))
        };
        let up: Vec<usize> = candidates()
            .filter(|&i| !self.peers[i].is_down(now))
            .collect();
        // Every untried upstream is down: try the one that failed longest
        // ago rather than none (nginx does the same).
        let pool = if up.is_empty() {
            candidates()
                .min_by_key(|&i| lock(&self.peers[i].health).last_failure)
                .into_iter()
                .collect()
        } else {
            up
        };
        if pool.is_empty() {
            return Pick::None;
        }
        let best = pool
            .into_iter()
            .filter(|&i| self.peers[i].in_flight() < self.peers[i].max_connections)
            .min_by_key(|&i| self.peers[i].in_flight());
        match best {
            Some(i) => {
                self.peers[i].in_flight.fetch_add(1, Ordering::SeqCst);
                Pick::Got(i)
            }
            None => Pick::Full,
        }
    }
}

enum Pick {
    Got(usize),
    /// Every candidate is at its connection limit.
    Full,
    /// No candidate at all.
    None,
}

/// Every upstream of every route, each once, so two routes naming the same
/// upstream share its connections, its limit and its health.
#[derive(Debug, Default)]
pub struct Peers {
    all: Vec<Arc<Peer>>,
}

impl Peers {
    /// The peer for `upstream`, made on first mention.
    pub fn get(&mut self, upstream: &Upstream, max_connections: usize) -> Arc<Peer> {
        if let Some(p) = self.all.iter().find(|p| p.upstream == *upstream) {
            return p.clone();
        }
        let p = Arc::new(Peer::new(upstream.clone(), max_connections));
        self.all.push(p.clone());
        p
    }

    /// Every upstream, in the order first mentioned.
    pub fn all(&self) -> &[Arc<Peer>] {
        &self.all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(n: usize, max: usize) -> Arc<RoutePool> {
        let mut peers = Peers::default();
        let list = (0..n)
            .map(|i| {
                let addr = format!("127.0.0.1:{}", 1000 + i).parse().unwrap();
                peers.get(&Upstream::Tcp(addr), max)
            })
            .collect();
        Arc::new(RoutePool::new(list))
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(50)
    }

    #[test]
    fn fewest_in_flight_wins_and_ties_rotate() {
        let pool = route(3, 4);
        let (a, _la) = pool.lease(&[], soon()).unwrap();
        let (b, _lb) = pool.lease(&[], soon()).unwrap();
        let (c, lc) = pool.lease(&[], soon()).unwrap();
        let mut got = vec![a, b, c];
        got.sort();
        assert_eq!(got, vec![0, 1, 2], "each idle upstream gets one");
        drop(lc);
        let (d, _ld) = pool.lease(&[], soon()).unwrap();
        assert_eq!(d, c, "the one with nothing in flight");
    }

    #[test]
    fn idle_connections_are_reused_newest_first_and_closed_after_the_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = Peer::new(Upstream::Tcp(addr), 8);
        let t0 = Instant::now();
        let mut accepted = Vec::new();
        let mut ports = Vec::new();
        for i in 0..3 {
            let conn = TcpStream::connect(addr).unwrap();
            ports.push(conn.local_addr().unwrap().port());
            accepted.push(listener.accept().unwrap().0);
            peer.open.fetch_add(1, Ordering::SeqCst);
            peer.put_idle(Stream::Tcp(conn), t0 + Duration::from_secs(20 * i));
        }
        assert_eq!((peer.idle_connections(), peer.open_connections()), (3, 3));
        // 61 s after the first went idle, it alone has expired: closed, and
        // the last one put back is the one taken.
        let Some(Stream::Tcp(taken)) = peer.take_idle(t0 + Duration::from_secs(61)) else {
            panic!("no idle connection taken")
        };
        assert_eq!(taken.local_addr().unwrap().port(), ports[2]);
        assert_eq!((peer.idle_connections(), peer.open_connections()), (1, 2));
        let mut byte = [0u8; 1];
        accepted[0]
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(
            accepted[0].read(&mut byte).unwrap(),
            0,
            "the expired connection is closed"
        );
        // Far later, the remaining one has expired too.
        assert!(peer.take_idle(t0 + IDLE_TIMEOUT * 3).is_none());
        assert_eq!((peer.idle_connections(), peer.open_connections()), (0, 1));
    }

    #[test]
    fn down_upstreams_are_skipped_unless_all_are() {
        let pool = route(2, 4);
        pool.peers()[0].failed();
        for _ in 0..4 {
            let (i, _l) = pool.lease(&[], soon()).unwrap();
            assert_eq!(i, 1);
        }
        pool.peers()[1].failed();
        // Both down: the one that failed first is tried.
        let (i, _l) = pool.lease(&[], soon()).unwrap();
        assert_eq!(i, 0);
        pool.peers()[0].succeeded();
        assert!(!pool.peers()[0].is_down(Instant::now()));
    }

    #[test]
    fn tried_upstreams_are_not_tried_again() {
        let pool = route(2, 4);
        let (i, _l) = pool.lease(&[0], soon()).unwrap();
        assert_eq!(i, 1);
        assert!(pool.lease(&[0, 1], soon()).is_none());
    }

    #[test]
    fn a_full_route_waits_for_a_slot_until_its_deadline() {
        let pool = route(1, 1);
        let (_, held) = pool.lease(&[], soon()).unwrap();
        let start = Instant::now();
        assert!(pool.lease(&[], start + Duration::from_millis(20)).is_none());
        assert!(start.elapsed() >= Duration::from_millis(20));
        let waiter = {
            let pool = pool.clone();
            std::thread::spawn(move || {
                pool.lease(&[], Instant::now() + Duration::from_secs(10))
                    .map(|(i, _)| i)
            })
        };
        drop(held);
        assert_eq!(waiter.join().unwrap(), Some(0));
        assert_eq!(pool.peers()[0].in_flight(), 0);
        let traffic: Vec<(u64, usize)> = pool
            .traffic()
            .map(|(_, t)| (t.requests.load(Ordering::Relaxed), t.in_flight()))
            .collect();
        assert_eq!(
            traffic,
            vec![(2, 0)],
            "the one that timed out never started"
        );
    }
}
