//! The peer of the `connection` target, scripted by the fuzz input, and the
//! virtual clock it moves: an in-memory [`Transport`] that never blocks and
//! never sleeps, so a run takes no wall-clock time.

use std::cell::Cell;
use std::io::{self, IoSlice};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::conn::{Clock, Timeouts, Transport};
use crate::poller::Interest;

/// How long the peer pauses, indexed by a control byte: around the park
/// linger (5 ms) and the timeouts below (0.5 s idle, 1 s otherwise).
const PAUSES_MS: [u64; 16] = [
    1, 2, 4, 6, 10, 50, 200, 400, 499, 501, 900, 999, 1001, 1500, 3000, 60_000,
];

/// The timeouts the loop runs under.
pub(super) const TIMEOUTS: Timeouts = Timeouts {
    header: Duration::from_secs(1),
    idle: Duration::from_millis(500),
    read: Duration::from_secs(1),
    body: Duration::from_secs(1),
    min_body_rate: 100,
    write: Duration::from_secs(1),
    park: Duration::from_millis(5),
    wait: Duration::from_secs(1),
};

/// A clock that only moves when the transport says time passed.
#[derive(Clone)]
pub(super) struct VirtualClock {
    base: Instant,
    offset: Rc<Cell<Duration>>,
}

impl Clock for VirtualClock {
    fn now(&self) -> Instant {
        self.base + self.offset.get()
    }
}

impl VirtualClock {
    /// A clock that starts at the real now.
    pub(super) fn new() -> VirtualClock {
        VirtualClock {
            base: Instant::now(),
            offset: Rc::new(Cell::new(Duration::ZERO)),
        }
    }

    /// Moves the clock to `t`, if that is later; whether it moved.
    pub(super) fn advance_to(&self, t: Instant) -> bool {
        let moved = t > self.now();
        if moved {
            self.offset.set(t - self.base);
        }
        moved
    }
}

/// The peer, scripted: `payload` is what it sends, handed over in pieces
/// whose sizes, and the pauses and failures between them, come from `ctl`,
/// one control byte per read or write call. When the control bytes run out,
/// reads get everything left and writes take everything.
///
/// A control byte `b` means, by `b >> 5`: 0 to 3, a piece of a size from
/// 1 byte to everything (for a write, room for that much); 4 and 5, a pause
/// from [`PAUSES_MS`] (for a write, the peer stops reading for that long);
/// 6, an interrupted call; 7, end of stream or a reset (for a write, a
/// broken pipe).
pub(super) struct Script<'a> {
    ctl: &'a [u8],
    payload: &'a [u8],
    /// Whether the peer closes once the payload is sent, or stays silent.
    eof_at_end: bool,
    clock: VirtualClock,
    /// Reads would block until then.
    quiet_until: Option<Instant>,
    /// Writes would block until then.
    full_until: Option<Instant>,
    /// Bytes left in the piece being read.
    piece: usize,
    /// The peer has closed its side.
    eof: bool,
    /// Payload bytes read so far.
    pub(super) delivered: Vec<u8>,
    /// Bytes written so far.
    pub(super) out: Vec<u8>,
    /// `out.len()` at the last read call.
    pub(super) out_at_last_read: usize,
    /// Read calls made.
    pub(super) reads: usize,
    /// Per request that waited for its answer: `out.len()` when it began
    /// waiting, and at the first read call after that (none if none came).
    pub(super) waits: Vec<(usize, Option<usize>)>,
    /// Calls made, and the most allowed.
    calls: usize,
    budget: usize,
    /// Calls in a row that changed nothing.
    stalls: usize,
    /// Trips round the queue in a row with nothing read.
    idle_turns: usize,
    pub(super) closed: bool,
    /// The last write would block or failed, so the writer may have given
    /// up: the last response may be cut short. (A writer that goes on
    /// makes another call.)
    pub(super) write_failed: bool,
}

impl<'a> Script<'a> {
    /// A peer that sends `payload` as `ctl` says, then closes if
    /// `eof_at_end` (else stays silent), allowed `budget` calls in all.
    pub(super) fn new(
        ctl: &'a [u8],
        payload: &'a [u8],
        eof_at_end: bool,
        clock: VirtualClock,
        budget: usize,
    ) -> Script<'a> {
        Script {
            ctl,
            payload,
            eof_at_end,
            clock,
            quiet_until: None,
            full_until: None,
            piece: 0,
            eof: false,
            delivered: Vec::new(),
            out: Vec::new(),
            out_at_last_read: 0,
            reads: 0,
            waits: Vec::new(),
            calls: 0,
            budget,
            stalls: 0,
            idle_turns: 0,
            closed: false,
            write_failed: false,
        }
    }

    /// Counts a call to the transport (or a turn of the loop), within the
    /// budget.
    pub(super) fn call(&mut self, what: &str) {
        assert!(!self.closed, "{what} after close");
        self.calls += 1;
        assert!(
            self.calls <= self.budget,
            "no end in sight: {} transport calls, over the budget of {} (8 per input byte)",
            self.calls,
            self.budget
        );
    }

    /// The connection went round the queue, where other connections are
    /// served meanwhile, so the calls before are not a spin; but one that
    /// finds nothing on every turn must be parked within
    /// [`MAX_TURNS`](crate::conn::MAX_TURNS) turns.
    pub(super) fn requeued(&mut self) {
        if self.stalls == 0 {
            self.idle_turns = 0;
        } else {
            self.idle_turns += 1;
            assert!(
                self.idle_turns < usize::from(crate::conn::MAX_TURNS),
                "goes round the queue {} times in a row finding nothing",
                self.idle_turns
            );
        }
        self.stalls = 0;
    }

    /// Notes whether a call made progress: the progress rule, seen from the
    /// transport. A few calls in a row may change nothing (a read that
    /// would block, then the wait that lets time pass), never more.
    fn progress(&mut self, made: bool) {
        if made {
            self.stalls = 0;
        } else {
            self.stalls += 1;
            assert!(
                self.stalls <= 4,
                "the loop spins: {} calls without progress",
                self.stalls
            );
        }
    }

    fn next_ctl(&mut self) -> Option<u8> {
        let (&b, rest) = self.ctl.split_first()?;
        self.ctl = rest;
        Some(b)
    }

    fn piece_len(b: u8) -> usize {
        let n = usize::from(b & 31) + 1;
        match b >> 5 {
            0 => n,
            1 => n * 16,
            2 => n * 512,
            _ => usize::MAX,
        }
    }

    fn pause(b: u8) -> Duration {
        Duration::from_millis(PAUSES_MS[usize::from(b & 15)])
    }

    /// A request begins to wait for its answer: the first read after this
    /// must come after its response, which is checked against `waits`.
    pub(super) fn mark_wait(&mut self) {
        self.waits.push((self.out.len(), None));
    }

    /// The peer hangs up, with whatever it has not sent yet unsent.
    pub(super) fn hang_up(&mut self) {
        self.eof = true;
        self.payload = &[];
        self.ctl = &[];
        self.quiet_until = None;
    }

    /// When the peer will next have something to read (data or end of
    /// stream); `None` if never.
    pub(super) fn readable_at(&self) -> Option<Instant> {
        let now = self.clock.now();
        match self.quiet_until {
            Some(t) if t > now => Some(t),
            _ if self.eof || !self.payload.is_empty() || !self.ctl.is_empty() => Some(now),
            _ if self.eof_at_end => Some(now),
            _ => None,
        }
    }
}

impl Script<'_> {
    /// A write as the script has it.
    fn write_script(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let now = self.clock.now();
        if let Some(t) = self.full_until {
            if now < t {
                self.progress(false);
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.full_until = None;
        }
        let room = match self.next_ctl() {
            None => usize::MAX,
            Some(b) => match b >> 5 {
                0..=3 => Script::piece_len(b),
                4 | 5 => {
                    self.progress(true);
                    self.full_until = Some(now + Script::pause(b));
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                6 => {
                    self.progress(true);
                    return Err(io::ErrorKind::Interrupted.into());
                }
                _ => {
                    self.progress(true);
                    return Err(io::ErrorKind::BrokenPipe.into());
                }
            },
        };
        let mut n = 0;
        for buf in bufs {
            let take = buf.len().min(room - n);
            self.out.extend_from_slice(&buf[..take]);
            n += take;
            if n == room {
                break;
            }
        }
        self.progress(n > 0);
        Ok(n)
    }
}

impl Transport for Script<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.call("read");
        assert!(
            !buf.is_empty(),
            "progress rule: a read with the receive buffer full"
        );
        self.out_at_last_read = self.out.len();
        self.reads += 1;
        if let Some((_, first_read @ None)) = self.waits.last_mut() {
            *first_read = Some(self.out.len());
        }
        let now = self.clock.now();
        if let Some(t) = self.quiet_until {
            if now < t {
                self.progress(false);
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.quiet_until = None;
        }
        if self.eof {
            self.progress(true);
            return Ok(0);
        }
        if self.piece == 0 {
            match self.next_ctl() {
                None => self.piece = usize::MAX,
                Some(b) => {
                    self.progress(true);
                    match b >> 5 {
                        0..=3 => self.piece = Script::piece_len(b),
                        4 | 5 => {
                            self.quiet_until = Some(now + Script::pause(b));
                            return Err(io::ErrorKind::WouldBlock.into());
                        }
                        6 => return Err(io::ErrorKind::Interrupted.into()),
                        _ if b & 1 == 0 => {
                            self.eof = true;
                            return Ok(0);
                        }
                        _ => return Err(io::ErrorKind::ConnectionReset.into()),
                    }
                }
            }
        }
        if self.payload.is_empty() {
            self.piece = 0;
            if self.eof_at_end {
                self.eof = true;
                self.progress(true);
                return Ok(0);
            }
            // The peer stays connected and says nothing more.
            self.progress(false);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.piece.min(buf.len()).min(self.payload.len());
        buf[..n].copy_from_slice(&self.payload[..n]);
        self.delivered.extend_from_slice(&self.payload[..n]);
        self.payload = &self.payload[n..];
        self.piece -= n;
        self.progress(true);
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.call("write");
        let result = self.write_script(bufs);
        self.write_failed = result
            .as_ref()
            .is_err_and(|e| e.kind() != io::ErrorKind::Interrupted);
        result
    }

    fn wait(&mut self, interest: Interest, timeout: Duration) -> io::Result<bool> {
        self.call("wait");
        let now = self.clock.now();
        let ready_at = match interest {
            Interest::Read => self.readable_at(),
            Interest::Write => Some(self.full_until.map_or(now, |t| t.max(now))),
        };
        let ready = ready_at.is_some_and(|t| t <= now + timeout);
        let until = if ready {
            ready_at.unwrap_or(now)
        } else {
            now + timeout
        };
        let moved = self.clock.advance_to(until);
        self.progress(moved);
        Ok(ready)
    }

    fn close(&mut self) {
        assert!(!self.closed, "closed twice");
        self.closed = true;
    }
}
