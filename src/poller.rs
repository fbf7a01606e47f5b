//! Readiness waiting below std: `poll(2)` for a few descriptors, and an
//! `epoll(7)` set in which idle connections are parked until they become
//! readable or their deadline passes. This is how an idle keep-alive client,
//! a silent one or a slow sender costs a file descriptor instead of a worker
//! thread (the fix Cheroot made for its issue #91).
//!
//! The only module besides `notify` that steps below std; each `unsafe`
//! block states why it is sound.
#![allow(unsafe_code)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What to wait for on a descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Bytes to read, or end of stream.
    Read,
    /// Room to write.
    Write,
}

/// Milliseconds for poll/epoll, rounded up so a short wait never becomes a
/// busy zero-timeout poll; `None` waits forever.
fn timeout_ms(timeout: Option<Duration>) -> libc::c_int {
    match timeout {
        None => -1,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            ms.min(libc::c_int::MAX as u128) as libc::c_int
        }
    }
}

/// Waits until each of `fds` is ready for `interest`, or `timeout` passes.
/// Returns which descriptors are ready (errors and hang-ups count as ready,
/// so the caller's next read or write reports them).
pub fn wait(fds: &[RawFd], interest: Interest, timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let events = match interest {
        Interest::Read => libc::POLLIN,
        Interest::Write => libc::POLLOUT,
    };
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events,
            revents: 0,
        })
        .collect();
    // SAFETY: `pfds` is a valid, exclusively borrowed array of `pfds.len()`
    // pollfd structs for the duration of the call; poll only writes revents.
    let n = unsafe {
        libc::poll(
            pfds.as_mut_ptr(),
            pfds.len() as libc::nfds_t,
            timeout_ms(timeout),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(e);
    }
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}

/// Accepts a connection on a listener, the new socket already non-blocking
/// and close-on-exec (`accept4`), which spares a system call per connection
/// over std's `accept` followed by `set_nonblocking`.
pub fn accept_nonblocking(listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
    // SAFETY: an all-zero sockaddr_storage is a valid value of the type.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` and `len` are valid for writes and `len` holds the
    // storage's size, so the kernel writes at most that many bytes.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let peer = match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, and
            // sockaddr_storage is large and aligned enough for any sockaddr.
            let a = unsafe {
                &*(&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            SocketAddr::from((
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe {
                &*(&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                u32::from_be(a.sin6_flowinfo),
                a.sin6_scope_id,
            ))
        }
        _ => stream.peer_addr()?,
    };
    Ok((stream, peer))
}

/// The accept backlog the server asks for. std binds with 128, which a
/// burst of a few hundred connecting clients overflows, each overflow
/// costing its client a one-second SYN retransmit. nginx asks for 511;
/// the kernel caps the value at `net.core.somaxconn` (4096 by default).
pub const LISTEN_BACKLOG: i32 = 1024;

/// Sets a listening socket's accept backlog; calling `listen` again on a
/// listening socket only changes the backlog.
pub fn set_backlog(listener: &TcpListener, backlog: i32) -> io::Result<()> {
    // SAFETY: listen takes no pointers; the descriptor is the listener's,
    // alive for the call.
    if unsafe { libc::listen(listener.as_raw_fd(), backlog) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Asks the kernel to hold a new connection until its first bytes arrive
/// (`TCP_DEFER_ACCEPT`), or `secs` pass without any, rather than hand it to
/// `accept` as soon as its handshake completes.
pub fn set_defer_accept(listener: &TcpListener, secs: u32) -> io::Result<()> {
    let value = libc::c_int::try_from(secs).unwrap_or(libc::c_int::MAX);
    // SAFETY: `value` is a live c_int and the length passed is its size; the
    // descriptor is the listener's, alive for the call.
    let r = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Something that can be parked: it has a descriptor to watch.
pub trait Parkable: AsRawFd + Send {}
impl<T: AsRawFd + Send> Parkable for T {}

struct Entry<T> {
    item: T,
    deadline: Instant,
    watch: Watch,
    /// When its registration is to be armed, while it is not yet (a
    /// [`Watch::HangUp`] item, for a while after it is parked).
    arm_at: Option<Instant>,
}

/// What wakes a parked item before its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Bytes to read, or the peer hanging up: an idle or slow connection.
    Readable,
    /// Only the peer hanging up: a connection whose request waits for an
    /// answer. Bytes it pipelines meanwhile stay in the socket until the
    /// answer is written. Such items outlive [`Parker::stop`], since what
    /// they wait for may still come while the server drains; whoever has
    /// the answer takes the item back with [`Parker::unpark`].
    ///
    /// The peer is watched only once the item has been parked for the
    /// delay given to [`Parker::new`] (never, if its deadline comes
    /// first); a peer gone before then is seen then. Most waits are short (a value computed in well under a
    /// second), and watching costs two system calls: one to register, one
    /// to take the registration back when the answer comes, which when a
    /// thousand coalesced requests are answered at once is a tenth of the
    /// time until the last answer is out (BENCHMARKS.md).
    HangUp,
}

/// Names a parked item, for [`Parker::unpark`]. Never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token(u64);

/// Hashes tokens. They count up and no client chooses them, so one
/// multiply spreads them as well as the default SipHash does, for a fraction
/// of its cost on every park and unpark.
#[derive(Default, Clone, Copy)]
struct TokenHash(u64);

/// An odd constant near 2^64 / φ (Fibonacci hashing).
const SPREAD: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for TokenHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(SPREAD);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(SPREAD);
    }
}

struct Table<T> {
    entries: HashMap<u64, Entry<T>, BuildHasherDefault<TokenHash>>,
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    next_token: u64,
}

/// The token of the waker; connection tokens count up from 0 and never reach it.
const WAKER: u64 = u64::MAX;

/// Parked items waiting for readability (or a hang-up) or their deadline.
///
/// Any thread may [`park`](Parker::park) or [`unpark`](Parker::unpark); one
/// thread runs [`run`](Parker::run), which hands ready items to `ready` and
/// expired ones to `expired`. Lock order: the table lock is never held while
/// calling out.
pub struct Parker<T: Parkable> {
    epoll: OwnedFd,
    waker_rx: UnixStream,
    waker_tx: UnixStream,
    table: Mutex<Table<T>>,
    /// Set by [`Parker::stop`]: only [`Watch::HangUp`] items stay.
    stop: AtomicBool,
    /// Set by [`Parker::quit`]: nothing stays, and `run` returns.
    quit: AtomicBool,
    /// How long a [`Watch::HangUp`] item is parked before its peer is
    /// watched.
    hang_up_after: Duration,
}

/// What the parker thread reports to its owner.
pub trait Dispatch<T> {
    /// `item` is readable (or hung up): serve it.
    fn ready(&self, item: T);
    /// `item` reached its deadline while parked.
    fn expired(&self, item: T);
    /// The parker is stopping and `item` was still parked.
    fn abandoned(&self, item: T);
    /// Called once per loop turn, at least every `tick`: a heartbeat.
    fn tick(&self) {}
    /// A shorter `tick` for the next turn, if the owner wants one.
    fn tick_within(&self) -> Option<Duration> {
        None
    }
}

impl<T: Parkable> Parker<T> {
    /// A new, empty parker, which watches a [`Watch::HangUp`] item's peer
    /// once it has been parked for `hang_up_after` (at once if zero).
    pub fn new(hang_up_after: Duration) -> io::Result<Parker<T>> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result is a
        // new descriptor that nothing else owns, so OwnedFd may take it.
        let epoll = unsafe {
            let fd = libc::epoll_create1(libc::EPOLL_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            OwnedFd::from_raw_fd(fd)
        };
        let (waker_rx, waker_tx) = UnixStream::pair()?;
        waker_rx.set_nonblocking(true)?;
        waker_tx.set_nonblocking(true)?;
        let parker = Parker {
            epoll,
            waker_rx,
            waker_tx,
            table: Mutex::new(Table {
                entries: HashMap::default(),
                deadlines: BinaryHeap::new(),
                next_token: 0,
            }),
            stop: AtomicBool::new(false),
            quit: AtomicBool::new(false),
            hang_up_after,
        };
        parker.ctl(
            libc::EPOLL_CTL_ADD,
            parker.waker_rx.as_raw_fd(),
            WAKER,
            libc::EPOLLIN as u32,
        )?;
        Ok(parker)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `self.epoll` is a live epoll descriptor; `fd` belongs to an
        // item this parker holds (or the waker); `ev` outlives the call.
        let r = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Table<T>> {
        // A panic elsewhere cannot leave the table half-updated: every
        // mutation is a single insert or remove.
        crate::unwind::lock(&self.table)
    }

    /// Parks `item` until `watch` fires or `deadline` passes. On error the
    /// item is handed back (the caller closes it or serves it itself).
    pub fn park(&self, item: T, deadline: Instant, watch: Watch) -> Result<Token, (T, io::Error)> {
        let refused = match watch {
            Watch::Readable => self.stop.load(Ordering::Acquire),
            Watch::HangUp => self.quit.load(Ordering::Acquire),
        };
        if refused {
            return Err((item, io::Error::other("shutting down")));
        }
        let fd = item.as_raw_fd();
        // An item whose deadline comes first is never watched: the
        // deadline ends its wait before the watch would begin.
        let arm_at = match watch {
            Watch::HangUp if !self.hang_up_after.is_zero() => Some(
                Instant::now()
                    .checked_add(self.hang_up_after)
                    .unwrap_or(deadline),
            ),
            _ => None,
        };
        let mut table = self.lock();
        let token = table.next_token;
        table.next_token += 1;
        let earliest = table.deadlines.peek().map(|Reverse((d, _))| *d);
        table.entries.insert(
            token,
            Entry {
                item,
                deadline,
                watch,
                arm_at,
            },
        );
        table.deadlines.push(Reverse((deadline, token)));
        let wakes_at = match arm_at {
            Some(at) if at < deadline => {
                table.deadlines.push(Reverse((at, token)));
                at
            }
            Some(_) => deadline,
            None => {
                // Registering under the lock keeps a readiness event from
                // racing ahead of the insert it refers to.
                if let Err(e) = self.arm(fd, token, watch) {
                    let entry = table.entries.remove(&token);
                    drop(table);
                    return match entry {
                        Some(entry) => Err((entry.item, e)),
                        None => Ok(Token(token)),
                    };
                }
                deadline
            }
        };
        drop(table);
        // The parker sleeps until the earliest time it knew of; wake it
        // only when this one comes sooner.
        if earliest.is_none_or(|d| wakes_at < d) {
            self.wake();
        }
        Ok(Token(token))
    }

    /// Arms `fd`'s one-shot registration for `watch`, as `token`. A
    /// connection parked before is still registered, disarmed by
    /// EPOLLONESHOT when it fired: re-arming it is one call, where
    /// deregistering on wake-up and registering again would be two. The
    /// kernel drops the registration itself when the connection closes, so
    /// a new connection on a reused descriptor number gets ENOENT here and
    /// is added.
    fn arm(&self, fd: RawFd, token: u64, watch: Watch) -> io::Result<()> {
        let wanted = match watch {
            Watch::Readable => libc::EPOLLIN | libc::EPOLLRDHUP,
            // EPOLLHUP and EPOLLERR are always reported.
            Watch::HangUp => libc::EPOLLRDHUP,
        };
        let events = (wanted | libc::EPOLLONESHOT) as u32;
        match self.ctl(libc::EPOLL_CTL_MOD, fd, token, events) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                self.ctl(libc::EPOLL_CTL_ADD, fd, token, events)
            }
            other => other,
        }
    }

    /// Takes back the item parked as `token`, if it is still parked (it may
    /// have become ready or expired meanwhile, and gone to the dispatcher).
    pub fn unpark(&self, token: Token) -> Option<T> {
        let mut table = self.lock();
        self.take(&mut table, token.0)
    }

    /// How many items are parked.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether nothing is parked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn wake(&self) {
        // A full socket buffer already means a wake-up is pending.
        let _ = (&self.waker_tx).write(&[1]);
    }

    /// Makes [`run`](Parker::run) hand every item parked for
    /// [`Watch::Readable`] to `abandoned`; such items parked after this are
    /// refused. [`Watch::HangUp`] items stay until [`quit`](Parker::quit).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake();
    }

    /// Makes [`run`](Parker::run) hand every parked item to `abandoned` and
    /// return. Items parked after this are refused.
    pub fn quit(&self) {
        self.stop.store(true, Ordering::Release);
        self.quit.store(true, Ordering::Release);
        self.wake();
    }

    /// Takes an item whose one-shot registration fired: it stays
    /// registered, disarmed, until it is parked again or closes.
    fn take_fired(&self, table: &mut Table<T>, token: u64) -> Option<T> {
        table.entries.remove(&token).map(|e| e.item)
    }

    /// Takes an item whose registration may still be armed, disarming it
    /// so a late readiness event cannot name a token that is gone.
    fn take(&self, table: &mut Table<T>, token: u64) -> Option<T> {
        let entry = table.entries.remove(&token)?;
        if entry.arm_at.is_none() {
            let _ = self.ctl(libc::EPOLL_CTL_DEL, entry.item.as_raw_fd(), token, 0);
        }
        Some(entry.item)
    }

    /// Runs the parker until [`quit`](Parker::quit): hands ready items to
    /// `dispatch.ready`, expired ones to `dispatch.expired`, and after
    /// [`stop`](Parker::stop) the ones that may no longer wait to
    /// `dispatch.abandoned`.
    pub fn run(&self, dispatch: &dyn Dispatch<T>, tick: Duration) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut ready = Vec::new();
        loop {
            dispatch.tick();
            if self.stop.load(Ordering::Acquire) {
                let quit = self.quit.load(Ordering::Acquire);
                let items: Vec<T> = {
                    let mut table = self.lock();
                    let tokens: Vec<u64> = table
                        .entries
                        .iter()
                        .filter(|(_, e)| quit || e.watch == Watch::Readable)
                        .map(|(t, _)| *t)
                        .collect();
                    tokens
                        .into_iter()
                        .filter_map(|t| self.take(&mut table, t))
                        .collect()
                };
                items.into_iter().for_each(|i| dispatch.abandoned(i));
                if quit {
                    return;
                }
            }
            let now = Instant::now();
            // Asked before the table lock: the owner's code takes its own.
            let wanted = dispatch.tick_within().unwrap_or(tick);
            let timeout = {
                let table = self.lock();
                table
                    .deadlines
                    .peek()
                    .map(|Reverse((d, _))| d.saturating_duration_since(now))
                    .map_or(tick, |d| d.min(tick))
                    .min(wanted)
            };
            // SAFETY: `events` is a valid buffer of `events.len()` entries
            // that the kernel fills; the epoll descriptor is live.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as libc::c_int,
                    timeout_ms(Some(timeout)),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("epoll_wait failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            {
                let mut table = self.lock();
                for ev in &events[..n as usize] {
                    let token = ev.u64;
                    if token == WAKER {
                        let mut sink = [0u8; 64];
                        while matches!((&self.waker_rx).read(&mut sink), Ok(n) if n > 0) {}
                        continue;
                    }
                    if let Some(item) = self.take_fired(&mut table, token) {
                        ready.push(item);
                    }
                }
            }
            ready.drain(..).for_each(|i| dispatch.ready(i));
            for item in self.take_expired(Instant::now()) {
                dispatch.expired(item);
            }
        }
    }

    fn take_expired(&self, now: Instant) -> Vec<T> {
        let mut table = self.lock();
        let mut expired = Vec::new();
        while let Some(&Reverse((at, token))) = table.deadlines.peek() {
            if at > now {
                break;
            }
            table.deadlines.pop();
            let Some(entry) = table.entries.get_mut(&token) else {
                continue;
            };
            if entry.deadline <= now {
                if let Some(item) = self.take(&mut table, token) {
                    expired.push(item);
                }
            } else if entry.arm_at.take().is_some() {
                // Its peer is watched from now on. Should that fail, it
                // just goes unwatched: its answer or its deadline ends
                // its wait all the same.
                if let Err(e) = self.arm(entry.item.as_raw_fd(), token, entry.watch) {
                    log::debug!("cannot watch a waiting connection: {e}");
                }
            }
        }
        // Tokens of items that left early stay in the heap until their
        // time (deadline, or when their watch was to begin); rebuild when
        // they outnumber the live ones (up to two per item: an item not
        // watched yet has both), so a busy keep-alive connection parking
        // thousands of times a second cannot grow the heap without bound.
        if table.deadlines.len() > 4 * table.entries.len() + 1024 {
            let live: Vec<_> = table
                .entries
                .iter()
                .flat_map(|(t, e)| {
                    let arm = e
                        .arm_at
                        .filter(|at| *at < e.deadline)
                        .map(|at| Reverse((at, *t)));
                    std::iter::once(Reverse((e.deadline, *t))).chain(arm)
                })
                .collect();
            table.deadlines = live.into();
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Parks `item`, which must succeed.
    fn park(
        parker: &Parker<UnixStream>,
        item: UnixStream,
        deadline: Instant,
        watch: Watch,
    ) -> Token {
        parker
            .park(item, deadline, watch)
            .map_err(|(_, e)| e)
            .expect("park")
    }

    struct Sink(mpsc::Sender<(&'static str, UnixStream)>);
    impl Dispatch<UnixStream> for Sink {
        fn ready(&self, item: UnixStream) {
            let _ = self.0.send(("ready", item));
        }
        fn expired(&self, item: UnixStream) {
            let _ = self.0.send(("expired", item));
        }
        fn abandoned(&self, item: UnixStream) {
            let _ = self.0.send(("abandoned", item));
        }
    }

    #[test]
    fn readable_item_is_dispatched_and_quiet_one_expires() {
        let parker =
            std::sync::Arc::new(Parker::<UnixStream>::new(Duration::ZERO).expect("parker"));
        let (tx, rx) = mpsc::channel();
        let p = parker.clone();
        let runner = std::thread::spawn(move || p.run(&Sink(tx), Duration::from_millis(50)));

        let (a, mut a_peer) = UnixStream::pair().expect("pair");
        let (b, _b_peer) = UnixStream::pair().expect("pair");
        let far = Instant::now() + Duration::from_secs(60);
        park(&parker, a, far, Watch::Readable);
        park(
            &parker,
            b,
            Instant::now() + Duration::from_millis(30),
            Watch::Readable,
        );
        let (what, _) = rx.recv_timeout(Duration::from_secs(5)).expect("b expires");
        assert_eq!(what, "expired");
        a_peer.write_all(b"x").expect("write");
        let (what, _) = rx.recv_timeout(Duration::from_secs(5)).expect("a ready");
        assert_eq!(what, "ready");
        assert!(parker.is_empty());

        let (c, _c_peer) = UnixStream::pair().expect("pair");
        park(&parker, c, far, Watch::Readable);
        parker.quit();
        let (what, _) = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("c abandoned");
        assert_eq!(what, "abandoned");
        runner.join().expect("runner");
    }

    #[test]
    fn hang_up_items_ignore_data_outlive_stop_and_can_be_unparked() {
        let parker =
            std::sync::Arc::new(Parker::<UnixStream>::new(Duration::ZERO).expect("parker"));
        let (tx, rx) = mpsc::channel();
        let p = parker.clone();
        let runner = std::thread::spawn(move || p.run(&Sink(tx), Duration::from_millis(50)));
        let far = Instant::now() + Duration::from_secs(60);

        // Pipelined bytes do not wake a waiting item; its peer leaving does.
        let (a, mut a_peer) = UnixStream::pair().expect("pair");
        park(&parker, a, far, Watch::HangUp);
        a_peer.write_all(b"next request").expect("write");
        let (b, b_peer) = UnixStream::pair().expect("pair");
        park(&parker, b, far, Watch::HangUp);
        drop(b_peer);
        let (what, _) = rx.recv_timeout(Duration::from_secs(5)).expect("b hung up");
        assert_eq!(what, "ready");
        assert_eq!(parker.len(), 1, "a, with data to read, stays parked");

        // Stop abandons readable items only; a waiting one stays until it
        // is unparked by whoever has its answer.
        let (c, _c_peer) = UnixStream::pair().expect("pair");
        park(&parker, c, far, Watch::Readable);
        parker.stop();
        let (what, _) = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("c abandoned");
        assert_eq!(what, "abandoned");
        let (d, _d_peer) = UnixStream::pair().expect("pair");
        assert!(parker.park(d, far, Watch::Readable).is_err(), "stopped");
        let (e, _e_peer) = UnixStream::pair().expect("pair");
        let e_token = park(&parker, e, far, Watch::HangUp);
        assert!(parker.unpark(e_token).is_some());
        assert!(parker.unpark(e_token).is_none(), "taken once");
        assert_eq!(parker.len(), 1);

        parker.quit();
        let (what, _) = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("a abandoned");
        assert_eq!(what, "abandoned");
        runner.join().expect("runner");
        assert!(rx.try_recv().is_err(), "nothing else was dispatched");
    }

    #[test]
    fn a_hang_up_item_is_watched_only_once_it_has_waited_the_delay() {
        let delay = Duration::from_millis(200);
        let parker = std::sync::Arc::new(Parker::<UnixStream>::new(delay).expect("parker"));
        let (tx, rx) = mpsc::channel();
        let p = parker.clone();
        let runner = std::thread::spawn(move || p.run(&Sink(tx), Duration::from_millis(50)));
        let far = Instant::now() + Duration::from_secs(60);
        let registered = |fd: RawFd| {
            parker
                .ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
                .map_err(|e| e.raw_os_error())
        };

        // Taken back before its watch began: it was never registered.
        let (a, _a_peer) = UnixStream::pair().expect("pair");
        let a_token = park(&parker, a, far, Watch::HangUp);
        let a = parker.unpark(a_token).expect("a was parked");
        assert_eq!(registered(a.as_raw_fd()), Err(Some(libc::ENOENT)));

        // A peer gone at once is seen when the watch begins, not before.
        let parked = Instant::now();
        let (b, b_peer) = UnixStream::pair().expect("pair");
        park(&parker, b, far, Watch::HangUp);
        drop(b_peer);
        let (what, b) = rx.recv_timeout(Duration::from_secs(5)).expect("b hung up");
        assert_eq!(what, "ready");
        assert!(
            parked.elapsed() >= delay,
            "seen after {:?}",
            parked.elapsed()
        );
        // It was registered to be seen; `a`'s watch, due before, never was.
        assert_eq!(registered(b.as_raw_fd()), Ok(()));
        assert_eq!(registered(a.as_raw_fd()), Err(Some(libc::ENOENT)));

        // A deadline before the watch would begin: it expires, unwatched.
        let (c, _c_peer) = UnixStream::pair().expect("pair");
        park(&parker, c, Instant::now() + delay / 4, Watch::HangUp);
        let (what, c) = rx.recv_timeout(Duration::from_secs(5)).expect("c expired");
        assert_eq!(what, "expired");
        assert_eq!(registered(c.as_raw_fd()), Err(Some(libc::ENOENT)));

        parker.quit();
        runner.join().expect("runner");
        assert!(rx.try_recv().is_err(), "nothing else was dispatched");
    }

    #[test]
    fn accepted_sockets_are_nonblocking_with_the_peer_address() {
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(listener) = TcpListener::bind(bind) else {
                continue; // no IPv6 on this host
            };
            let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
            let (mut stream, peer) = accept_nonblocking(&listener).expect("accept");
            assert_eq!(peer, client.local_addr().expect("client addr"));
            let mut buf = [0u8; 1];
            let e = stream.read(&mut buf).expect_err("nothing sent yet");
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        }
    }

    #[test]
    fn wait_reports_readiness() {
        let (a, mut b) = UnixStream::pair().expect("pair");
        let r = wait(
            &[a.as_raw_fd()],
            Interest::Read,
            Some(Duration::from_millis(1)),
        )
        .expect("poll");
        assert_eq!(r, vec![false]);
        b.write_all(b"x").expect("write");
        let r = wait(
            &[a.as_raw_fd()],
            Interest::Read,
            Some(Duration::from_secs(5)),
        )
        .expect("poll");
        assert_eq!(r, vec![true]);
    }
}
