//! Compute permits: at most `compute_concurrency` computations run at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::thread::{self, ThreadId};
use std::time::Duration;

use crate::unwind::lock;

/// A counting semaphore for computations that knows its holders, so that a
/// computation nested in another on the same thread reuses the outer one's
/// permit.
pub(super) struct Permits {
    holders: Mutex<Vec<ThreadId>>,
    freed: Condvar,
    /// Threads waiting on `freed`; changed only under `holders`' lock, so
    /// a permit given back with nobody waiting costs no wake-up call.
    waiting: AtomicU64,
    max: usize,
}

/// A held compute permit, given back when dropped.
pub(super) struct Permit<'a> {
    permits: &'a Permits,
    /// False for a nested computation, which holds no permit of its own.
    owned: bool,
}

impl Permits {
    /// `max` permits, none held.
    pub(super) fn new(max: usize) -> Permits {
        Permits {
            holders: Mutex::new(Vec::new()),
            freed: Condvar::new(),
            waiting: AtomicU64::new(0),
            max,
        }
    }

    /// A permit for this thread, or `None` if none came free within
    /// `timeout`. A thread that holds one already gets a nested one.
    pub(super) fn acquire(&self, timeout: Duration) -> Option<Permit<'_>> {
        let me = thread::current().id();
        let holders = lock(&self.holders);
        if holders.contains(&me) {
            return Some(Permit {
                permits: self,
                owned: false,
            });
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let (mut holders, _) = self
            .freed
            .wait_timeout_while(holders, timeout, |h| h.len() >= self.max)
            .unwrap_or_else(PoisonError::into_inner);
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        if holders.len() >= self.max {
            return None;
        }
        holders.push(me);
        Some(Permit {
            permits: self,
            owned: true,
        })
    }

    /// Threads waiting for a permit now.
    #[cfg(test)]
    pub(super) fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.owned {
            let me = thread::current().id();
            let mut holders = lock(&self.permits.holders);
            holders.retain(|&t| t != me);
            let waiting = self.permits.waiting.load(Ordering::Relaxed) > 0;
            drop(holders);
            if waiting {
                self.permits.freed.notify_one();
            }
        }
    }
}
