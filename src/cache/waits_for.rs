//! Cycle detection: the waits-for graph of blocked threads, shared by every
//! cache in the process, and the per-thread mark of a refused lookup. The
//! module doc of [`cache`](super) explains the walk under "Recursion".

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, ThreadId};

use once_cell::sync::Lazy;

use super::Error;
use crate::unwind::lock;

/// The part of a slot the waits-for walk needs, free of the cache's types so
/// that one table serves every cache.
#[derive(Default)]
pub(super) struct Claim {
    /// The thread computing the value; set when its computation is about to
    /// start (a refresh thread sets it itself).
    pub(super) leader: OnceLock<ThreadId>,
    /// Whether the result is in. A finished slot ends a walk: its waiters are
    /// about to wake.
    pub(super) done: AtomicBool,
}

/// Which claim each blocked thread waits on: the edges of the waits-for
/// graph, for every cache in the process.
pub(super) static WAITS_FOR: Lazy<Mutex<HashMap<ThreadId, Arc<Claim>>>> =
    Lazy::new(Default::default);

/// This thread's entry in [`WAITS_FOR`], removed when dropped.
pub(super) struct Edge(ThreadId);

impl Edge {
    /// Records that this thread is about to wait on `claim`, unless that
    /// would close a cycle.
    pub(super) fn add(claim: &Arc<Claim>) -> Result<Edge, Error> {
        let me = thread::current().id();
        let mut waits_for = lock(&WAITS_FOR);
        let mut next = Some(claim);
        // Each hop moves to a different blocked thread, and the table held
        // no cycle before this call (whoever closed one was refused), so the
        // walk ends; the bound is a second guard.
        for _ in 0..=waits_for.len() {
            let Some(claim) = next else { break };
            if claim.done.load(Ordering::Acquire) {
                break;
            }
            match claim.leader.get() {
                Some(&leader) if leader == me => {
                    log::debug!("recursive cache computation refused");
                    return Err(Error::Recursive);
                }
                Some(leader) => next = waits_for.get(leader),
                None => break,
            }
        }
        waits_for.insert(me, Arc::clone(claim));
        Ok(Edge(me))
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        lock(&WAITS_FOR).remove(&self.0);
    }
}

thread_local! {
    /// Whether a lookup made by the computation running on this thread was
    /// refused as a cycle.
    pub(super) static REFUSED: Cell<bool> = const { Cell::new(false) };
}
