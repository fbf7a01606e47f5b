//! Answers that come later, in the `connection` target: which requests the
//! fuzz handler answers later and how each wait ends, and the parker's part
//! in it, played on the virtual clock.
//!
//! The fate of a request is written in its path, as a segment
//! `/later/<letter><digits>`, so the replay can predict every status from
//! the request alone, as it does for the other paths:
//!
//! | letter | the handler | while parked | the client gets |
//! |---|---|---|---|
//! | `a` (or none, or another) | answers later | the answer comes `<digits>` ms into the wait; odd, the thread that has it writes it ([`Connection::answer_now`], as on one CPU) and the loop takes up the rest | the answer, or 503 if that is past the deadline |
//! | `l` | answers later | the answer comes as the deadline passes (the wake-up and the parker's expiry race) | the answer |
//! | `t` | answers later | the deadline passes | 503 with `Retry-After`; the connection goes on |
//! | `d` | answers later | the [`Reply`] is dropped unsent | 500 |
//! | `h` | answers later | the client hangs up | nothing; the connection ends |
//! | `s` | answers later | the shutdown drain ends ([`conn::give_up`]) | 503, and the connection closes |
//! | `n` | answers before returning | (no wait) | the answer, at once |
//! | `x` | drops the [`Reply`] before returning | (no wait) | 500, at once |
//! | `r` | answers later, while other connections hold every waiting slot | (no wait) | 503 with `Retry-After`, at once |
//!
//! With `max_waiting` 0 (configuration bit 7) every request that would
//! wait gets 503 at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::transport::{Script, VirtualClock};
use crate::conn::{self, Clock, Connection, Ctx, Handoff};
use crate::http::{Reply, Request, Response};
use crate::metrics::Metrics;

/// How a request answered later ends; see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// The answer comes this long into the wait.
    Answer(Duration),
    /// The answer comes as the deadline passes.
    AtDeadline,
    /// The deadline passes first.
    Timeout,
    /// The reply is dropped unsent while the request waits.
    Dropped,
    /// The client hangs up while its request waits.
    HangUp,
    /// The shutdown drain ends while the request waits.
    GiveUp,
    /// The handler answers before it returns.
    Now,
    /// The handler drops the reply before it returns.
    DroppedNow,
    /// Other connections hold every waiting slot.
    Refused,
}

/// The fate the path asks for, if the handler answers it later.
pub(super) fn fate(path: &str) -> Option<Fate> {
    let (_, rest) = path.split_once("/later/")?;
    let (letter, digits) = match rest.bytes().next() {
        Some(c) if c.is_ascii_alphabetic() => (Some(c), &rest[1..]),
        _ => (None, rest),
    };
    // Six digits reach past any deadline; more could only overflow.
    let ms = digits
        .bytes()
        .take_while(u8::is_ascii_digit)
        .take(6)
        .fold(0, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match letter {
        Some(b'l') => Fate::AtDeadline,
        Some(b't') => Fate::Timeout,
        Some(b'd') => Fate::Dropped,
        Some(b'h') => Fate::HangUp,
        Some(b's') => Fate::GiveUp,
        Some(b'n') => Fate::Now,
        Some(b'x') => Fate::DroppedNow,
        Some(b'r') => Fate::Refused,
        _ => Fate::Answer(Duration::from_millis(ms)),
    })
}

/// What the client must get for a request, all told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
    /// The handler's answer, as `serve.rs` builds it for the path.
    Answer,
    /// 503 with `Retry-After`, the connection going on: the wait was
    /// refused or timed out.
    Unavailable,
    /// 500: the reply was dropped unsent.
    Dropped,
    /// 503 with `Retry-After` and `Connection: close`: the drain ended.
    GivenUp,
    /// Nothing: the client left while its request waited.
    Gone,
}

/// Whether the request with `path` waits (the loop returns
/// [`Handoff::Wait`]) under `max_waiting`.
pub(super) fn parks(path: &str, max_waiting: u64) -> bool {
    let parked = !matches!(
        fate(path),
        None | Some(Fate::Now | Fate::DroppedNow | Fate::Refused)
    );
    parked && max_waiting > 0
}

/// What the client must get for the request with `path`, under
/// `max_waiting`, when waits last `wait`.
pub(super) fn expect(path: &str, max_waiting: u64, wait: Duration) -> Expect {
    let Some(fate) = fate(path) else {
        return Expect::Answer;
    };
    if !parks(path, max_waiting) {
        return match fate {
            Fate::DroppedNow => Expect::Dropped,
            Fate::Now => Expect::Answer,
            _ => Expect::Unavailable,
        };
    }
    match fate {
        Fate::Answer(after) if after < wait => Expect::Answer,
        Fate::AtDeadline => Expect::Answer,
        Fate::Answer(_) | Fate::Timeout => Expect::Unavailable,
        Fate::Dropped => Expect::Dropped,
        Fate::HangUp => Expect::Gone,
        Fate::GiveUp => Expect::GivenUp,
        Fate::Now | Fate::DroppedNow | Fate::Refused => unreachable!("{fate:?} never waits"),
    }
}

/// A request the handler answers later: its fate, the reply and the answer
/// to send through it.
struct Pending {
    seq: usize,
    fate: Fate,
    reply: Reply,
    answer: Response,
}

/// The handler's side: what it keeps of the requests it answers later.
pub(super) struct Deferred {
    pending: Mutex<Vec<Pending>>,
    max_waiting: u64,
    metrics: Arc<Metrics>,
}

impl Deferred {
    pub(super) fn new(max_waiting: u64, metrics: Arc<Metrics>) -> Deferred {
        Deferred {
            pending: Mutex::new(Vec::new()),
            max_waiting,
            metrics,
        }
    }

    /// Turns `answer`, the response to request `seq`, into what the
    /// handler returns for `fate`.
    pub(super) fn answer(&self, seq: usize, fate: Fate, answer: Response) -> Response {
        let (placeholder, reply) = Response::later();
        // Other connections' waiters, as the server would count them when
        // this request asks to wait: every slot for `r`, else all but one,
        // so the limit is met exactly.
        let others = match fate {
            Fate::Refused => self.max_waiting,
            _ => self.max_waiting.saturating_sub(1),
        };
        self.metrics
            .requests_waiting
            .store(others, Ordering::Relaxed);
        match fate {
            Fate::Now => reply.send(answer),
            Fate::DroppedNow => drop(reply),
            _ => self.lock().push(Pending {
                seq,
                fate,
                reply,
                answer,
            }),
        }
        placeholder
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The replies of requests refused a wait: nobody wants them.
    pub(super) fn check_refused(&self) {
        for p in self.lock().drain(..) {
            assert!(
                !p.reply.is_wanted(),
                "request {} ({:?}) was refused a wait, yet its reply is wanted",
                p.seq,
                p.fate
            );
        }
    }

    /// The request the loop just parked: the last one handled. Those
    /// before it were refused.
    fn take_waiting(&self) -> Pending {
        let p = self
            .lock()
            .pop()
            .expect("the loop waits, yet no request was answered later");
        self.check_refused();
        p
    }
}

/// What became of a wait, for the driver's next call to [`conn::serve`].
pub(super) enum After {
    /// Serve the connection again.
    Resume(Check),
    /// The connection ended in the parker.
    Ended,
}

/// What the driver checks after serving a resumed connection.
pub(super) enum Check {
    /// Nothing more.
    None,
    /// The wait timed out: its reply must be unwanted now.
    Unwanted(Reply),
    /// The client left: the loop must close without reading or writing,
    /// and say so to the reply.
    Left {
        reply: Reply,
        reads: usize,
        out: usize,
    },
}

impl Check {
    /// Checks what `serve` did after the resume.
    pub(super) fn after(self, handoff: Handoff, io: &Script<'_>) {
        match self {
            Check::None => {}
            Check::Unwanted(reply) => {
                assert!(
                    !reply.is_wanted(),
                    "a reply wanted after its wait timed out"
                );
                // Sent late, it goes nowhere.
                reply.send(Response::text(200, "late"));
            }
            Check::Left { reply, reads, out } => {
                assert_eq!(handoff, Handoff::Close, "a waiter whose client left");
                assert_eq!(io.reads, reads, "read after the waiting client left");
                assert_eq!(io.out.len(), out, "wrote to a waiting client that left");
                assert!(!reply.is_wanted(), "a reply wanted after its client left");
            }
        }
    }
}

/// Plays the parker for a connection whose request waits until `deadline`,
/// as the server does: it watches for the client hanging up, for the
/// answer (through [`Connection::on_answer`]) and for the deadline, and
/// for the end of the shutdown drain. The handler's fate for the request
/// decides which comes first.
pub(super) fn park(
    deferred: &Deferred,
    conn: &mut Connection<Script<'_>>,
    ctx: &Ctx<'_, VirtualClock>,
    shutdown: &AtomicBool,
    deadline: Instant,
) -> (usize, After) {
    let clock = ctx.clock;
    let now = clock.now();
    assert!(conn.is_waiting(), "Wait with no request waiting");
    // The wait is counted from the request's start, which is now: the loop
    // returns as soon as the handler does, and only the transport moves
    // the clock.
    assert_eq!(
        deadline,
        now + ctx.timeouts.wait,
        "a wait deadline other than the request's start + the wait timeout"
    );
    let p = deferred.take_waiting();
    assert!(p.reply.is_wanted(), "a waiting request's reply is unwanted");
    conn.io.mark_wait();
    let woken = Arc::new(AtomicBool::new(false));
    let wake = {
        let woken = woken.clone();
        Box::new(move || woken.store(true, Ordering::SeqCst))
    };
    let mid = now + ctx.timeouts.wait / 2;
    let Pending {
        seq,
        fate,
        reply,
        answer,
    } = p;
    let check = match fate {
        // An answer computed before the server registers its wake-up: the
        // wake-up runs at once.
        Fate::Answer(Duration::ZERO) => {
            reply.send(answer);
            conn.on_answer(wake);
            Check::None
        }
        Fate::Answer(after) if now + after < deadline => {
            conn.on_answer(wake);
            clock.advance_to(now + after);
            assert!(!woken.load(Ordering::SeqCst), "woken before the answer");
            let streamed = answer.body().as_slice().is_none();
            reply.send(answer);
            if after.as_millis() % 2 == 1 {
                // As the server on one CPU: the thread that has the answer
                // writes it, as far as the peer takes it without waiting,
                // and the loop takes up the rest; a stream is left to it.
                assert_eq!(
                    conn.answer_now(ctx, &mut conn::Spent::default()),
                    !streamed,
                    "the answering thread wrote a streamed answer, or did not write one"
                );
                assert_eq!(conn.is_waiting(), streamed, "waiting once answered");
            }
            Check::None
        }
        Fate::AtDeadline => {
            conn.on_answer(wake);
            clock.advance_to(deadline);
            reply.send(answer);
            Check::None
        }
        Fate::Answer(_) | Fate::Timeout => {
            conn.on_answer(wake);
            clock.advance_to(deadline);
            Check::Unwanted(reply)
        }
        Fate::Dropped => {
            conn.on_answer(wake);
            clock.advance_to(mid);
            drop(reply);
            Check::None
        }
        Fate::HangUp => {
            conn.on_answer(wake);
            clock.advance_to(mid);
            conn.io.hang_up();
            let check = Check::Left {
                reply,
                reads: conn.io.reads,
                out: conn.io.out.len(),
            };
            assert!(!woken.load(Ordering::SeqCst), "woken with no answer");
            return (seq, After::Resume(check));
        }
        Fate::GiveUp => {
            conn.on_answer(wake);
            clock.advance_to(mid);
            shutdown.store(true, Ordering::Relaxed);
            // As the server's parker does: one short try at the send buffer.
            let parker_waiting = || true;
            let mut parker = Ctx {
                others_waiting: &parker_waiting,
                before_wait: &|| {},
                ..*ctx
            };
            parker.timeouts.write = Duration::from_millis(1);
            conn::give_up(conn, &parker);
            assert!(conn.io.closed, "not closed after giving up");
            assert!(!conn.is_waiting(), "still waiting after giving up");
            assert!(!reply.is_wanted(), "a reply wanted after the drain ended");
            return (seq, After::Ended);
        }
        Fate::Now | Fate::DroppedNow | Fate::Refused => {
            panic!("request {seq} ({fate:?}) waits")
        }
    };
    let answered = !matches!(check, Check::Unwanted(_));
    assert_eq!(
        woken.load(Ordering::SeqCst),
        answered,
        "the wake-up and the answer disagree"
    );
    (seq, After::Resume(check))
}

/// The requests that waited are those whose path asks for it, and the wait
/// counters agree with the requests seen.
pub(super) fn check_counts(
    seen: &[Request],
    waited: &[usize],
    metrics: &Metrics,
    max_waiting: u64,
    wait: Duration,
) {
    let parked = |r: &Request| parks(r.path(), max_waiting);
    let should: Vec<usize> = (0..seen.len()).filter(|&k| parked(&seen[k])).collect();
    assert_eq!(waited, should, "the requests that waited");
    let count = |f: &dyn Fn(&Request) -> bool| seen.iter().filter(|r| f(r)).count() as u64;
    let refused = count(&|r| {
        !parked(r) && !matches!(fate(r.path()), None | Some(Fate::Now | Fate::DroppedNow))
    });
    let timed_out = count(&|r| {
        parked(r)
            && matches!(
                expect(r.path(), max_waiting, wait),
                Expect::Unavailable | Expect::GivenUp
            )
    });
    let left = count(&|r| expect(r.path(), max_waiting, wait) == Expect::Gone);
    let got = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    assert_eq!(
        (
            got(&metrics.waits_refused),
            got(&metrics.waits_timed_out),
            got(&metrics.waiters_left)
        ),
        (refused, timed_out, left),
        "waits refused, timed out, left"
    );
}
