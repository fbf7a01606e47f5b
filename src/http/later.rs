//! Responses that complete later: how a handler answers without holding
//! the worker that called it.
//!
//! [`Response::later`] gives the handler a placeholder response to return
//! and a [`Reply`] to send the real one through, from any thread, whenever
//! it is ready. The server parks the connection meanwhile (it costs a
//! connection slot and its buffers, not a thread) and writes the reply
//! once it comes, on a worker (or on the thread that sent it, when that
//! thread answers many at once on one CPU). Nothing here does I/O: it is a
//! one-shot slot and a wake-up hook.
//!
//! ```
//! use corral::Response;
//!
//! let (placeholder, reply) = Response::later();
//! std::thread::spawn(move || reply.send(Response::text(200, "done\n")));
//! # drop(placeholder);
//! ```
//!
//! Every request gets a status line: a [`Reply`] dropped without being sent
//! sends a 500 itself. The other way round, when the client leaves or its
//! wait times out, the [`Later`] side is dropped and [`Reply::is_wanted`]
//! turns false, so work nobody waits for can be skipped.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use super::Response;

/// What the server runs when the reply arrives: it takes the waiting
/// connection back for its answer to be written.
pub type Wake = Box<dyn FnOnce() + Send>;

enum State {
    /// No reply yet; `wake` is set once the server has parked the request.
    Waiting { wake: Option<Wake> },
    /// The reply, not yet written.
    Ready(Response),
    /// Taken by the server, or nobody waits any more.
    Done,
}

struct Slot {
    state: Mutex<State>,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every transition is a single assignment, so a panic elsewhere
        // cannot leave the state half-changed.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The waiting side: held by the server with the parked connection.
pub struct Later {
    slot: Arc<Slot>,
}

/// The answering side: send the response through it from any thread.
pub struct Reply {
    slot: Option<Arc<Slot>>,
}

/// The pair behind [`Response::later`].
pub(crate) fn pair() -> (Later, Reply) {
    let slot = Arc::new(Slot {
        state: Mutex::new(State::Waiting { wake: None }),
    });
    (Later { slot: slot.clone() }, Reply { slot: Some(slot) })
}

impl Later {
    /// Runs `wake` once the reply is there: now, on this thread, if it is
    /// there already, else on the thread that sends it. Set once.
    pub fn on_ready(&self, wake: Wake) {
        let mut state = self.slot.lock();
        match &mut *state {
            State::Waiting { wake: slot } => *slot = Some(wake),
            State::Ready(_) | State::Done => {
                drop(state);
                wake();
            }
        }
    }

    /// The reply, if it has come; at most once.
    pub fn take(&self) -> Option<Response> {
        self.take_if(|_| true)
    }

    /// The reply, if it has come and `wanted` says yes to it; at most
    /// once. Left in place otherwise, for a later [`Later::take`].
    pub(crate) fn take_if(&self, wanted: impl FnOnce(&Response) -> bool) -> Option<Response> {
        let mut state = self.slot.lock();
        match std::mem::replace(&mut *state, State::Done) {
            State::Ready(resp) if wanted(&resp) => Some(resp),
            other => {
                *state = other;
                None
            }
        }
    }
}

impl Drop for Later {
    fn drop(&mut self) {
        // Nobody will write the reply: say so to the sender, and drop the
        // wake-up, which holds the parked connection's address.
        let old = std::mem::replace(&mut *self.slot.lock(), State::Done);
        drop(old);
    }
}

impl fmt::Debug for Later {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Later")
    }
}

impl Reply {
    /// Sends the response. It is written if the client still waits, and
    /// dropped otherwise.
    pub fn send(mut self, resp: Response) {
        if let Some(slot) = self.slot.take() {
            deliver(&slot, resp);
        }
    }

    /// Whether anybody still waits for the response: false once the client
    /// has gone or its wait has timed out.
    pub fn is_wanted(&self) -> bool {
        self.slot
            .as_ref()
            .is_some_and(|s| matches!(*s.lock(), State::Waiting { .. }))
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        // A reply dropped unsent (a panic on the computing thread, a bug)
        // must not leave its client waiting until the deadline.
        if let Some(slot) = self.slot.take() {
            deliver(
                &slot,
                Response::error(500, "the response was dropped before it was sent"),
            );
        }
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Reply")
    }
}

fn deliver(slot: &Slot, resp: Response) {
    let mut state = slot.lock();
    let wake = match &mut *state {
        State::Waiting { wake } => {
            let wake = wake.take();
            *state = State::Ready(resp);
            wake
        }
        // Nobody waits: drop it (after unlocking: its body may be large).
        State::Ready(_) | State::Done => {
            drop(state);
            return;
        }
    };
    drop(state);
    if let Some(wake) = wake {
        wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counter() -> (Arc<AtomicUsize>, Wake) {
        let n = Arc::new(AtomicUsize::new(0));
        let m = n.clone();
        (
            n,
            Box::new(move || {
                m.fetch_add(1, Ordering::SeqCst);
            }),
        )
    }

    #[test]
    fn reply_after_wake_is_set_wakes_once() {
        let (later, reply) = pair();
        let (woken, wake) = counter();
        later.on_ready(wake);
        assert!(reply.is_wanted());
        assert!(later.take().is_none());
        reply.send(Response::text(200, "x"));
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        assert_eq!(later.take().map(|r| r.status()), Some(200));
        assert!(later.take().is_none(), "taken once");
    }

    #[test]
    fn reply_before_wake_is_set_wakes_at_once() {
        let (later, reply) = pair();
        reply.send(Response::text(201, "x"));
        let (woken, wake) = counter();
        later.on_ready(wake);
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        assert_eq!(later.take().map(|r| r.status()), Some(201));
    }

    #[test]
    fn dropped_reply_answers_500() {
        let (later, reply) = pair();
        let (woken, wake) = counter();
        later.on_ready(wake);
        drop(reply);
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        assert_eq!(later.take().map(|r| r.status()), Some(500));
    }

    #[test]
    fn dropped_later_makes_the_reply_unwanted_and_never_wakes() {
        let (later, reply) = pair();
        let (woken, wake) = counter();
        later.on_ready(wake);
        drop(later);
        assert!(!reply.is_wanted());
        reply.send(Response::text(200, "x"));
        assert_eq!(woken.load(Ordering::SeqCst), 0);
    }
}
