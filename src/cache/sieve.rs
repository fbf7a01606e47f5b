//! SIEVE eviction (Zhang et al., NSDI 2024) over the stored entries. The
//! entries live in a slab and form a doubly linked list in insertion order,
//! so an entry is unlinked in O(1) wherever it is; a hand walks that list
//! to pick the next victim. Why SIEVE and not LRU or CLOCK is in the module
//! doc of [`cache`](super), under "Budget and eviction".
//!
//! This file only keeps the list and its byte total; the budget is enforced
//! by the caller, which evicts until a new entry fits before pushing it.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::map::Now;

/// The end of the SIEVE list.
const NIL: usize = usize::MAX;

/// A stored value, linked into the SIEVE list.
pub(super) struct Entry<K, V> {
    pub(super) key: K,
    pub(super) value: V,
    pub(super) weight: u64,
    /// `None`: lives until evicted or invalidated.
    pub(super) expires: Option<Instant>,
    /// Set by hits under the read lock, cleared by the eviction hand under
    /// the write lock. Relaxed: it is a hint, and orders nothing.
    visited: AtomicBool,
    /// Neighbours in insertion order, [`NIL`] at the ends.
    newer: usize,
    older: usize,
}

impl<K, V> Entry<K, V> {
    pub(super) fn is_fresh(&self, now: &Now) -> bool {
        self.expires.is_none_or(|t| now.get() < t)
    }

    /// Marks a hit, writing only if the bit is clear so that hits on a hot
    /// entry from many cores do not bounce its cache line.
    pub(super) fn visit(&self) {
        if !self.visited.load(Ordering::Relaxed) {
            self.visited.store(true, Ordering::Relaxed);
        }
    }
}

/// The stored entries in SIEVE's queue, indexed by key.
pub(super) struct Sieve<K, V, S> {
    index: HashMap<K, usize, S>,
    slab: Vec<Option<Entry<K, V>>>,
    free: Vec<usize>,
    newest: usize,
    oldest: usize,
    /// Where the next eviction starts looking; [`NIL`] means the oldest.
    hand: usize,
    /// Sum of the stored weights.
    bytes: u64,
}

impl<K: Hash + Eq + Clone, V, S: BuildHasher> Sieve<K, V, S> {
    pub(super) fn new(hasher: S) -> Self {
        Sieve {
            index: HashMap::with_hasher(hasher),
            slab: Vec::new(),
            free: Vec::new(),
            newest: NIL,
            oldest: NIL,
            hand: NIL,
            bytes: 0,
        }
    }

    /// Number of entries.
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// Sum of the entries' weights.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &K> {
        self.index.keys()
    }

    /// Every entry, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Entry<K, V>> {
        self.slab.iter().flatten()
    }

    pub(super) fn get<Q>(&self, key: &Q) -> Option<&Entry<K, V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.at(*self.index.get(key)?)
    }

    fn at(&self, i: usize) -> Option<&Entry<K, V>> {
        self.slab.get(i)?.as_ref()
    }

    /// Links a new entry in as the newest. The caller has removed the key's
    /// old entry and made room.
    pub(super) fn push(&mut self, key: K, value: V, weight: u64, expires: Option<Instant>) {
        let entry = Entry {
            key: key.clone(),
            value,
            weight,
            expires,
            visited: AtomicBool::new(false),
            newer: NIL,
            older: self.newest,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slab[i] = Some(entry);
                i
            }
            None => {
                self.slab.push(Some(entry));
                self.slab.len() - 1
            }
        };
        match self.slab.get_mut(self.newest).and_then(Option::as_mut) {
            Some(newest) => newest.newer = i,
            None => self.oldest = i,
        }
        self.newest = i;
        self.index.insert(key, i);
        self.bytes += weight;
    }

    pub(super) fn remove(&mut self, key: &K) -> Option<Entry<K, V>> {
        let i = *self.index.get(key)?;
        self.unlink(i)
    }

    fn unlink(&mut self, i: usize) -> Option<Entry<K, V>> {
        let e = self.slab.get_mut(i)?.take()?;
        match self.slab.get_mut(e.newer).and_then(Option::as_mut) {
            Some(newer) => newer.older = e.older,
            None => self.newest = e.older,
        }
        match self.slab.get_mut(e.older).and_then(Option::as_mut) {
            Some(older) => older.newer = e.newer,
            None => self.oldest = e.newer,
        }
        if self.hand == i {
            self.hand = e.newer;
        }
        self.free.push(i);
        self.index.remove(&e.key);
        self.bytes -= e.weight;
        Some(e)
    }

    /// Evicts one entry, SIEVE's way: from the hand towards the newest
    /// (wrapping to the oldest), clear visited bits and take the first entry
    /// whose bit was clear. One lap clears every bit, so this ends within
    /// `len + 1` steps. `None` if empty.
    pub(super) fn evict(&mut self) -> Option<Entry<K, V>> {
        let mut i = if self.hand == NIL {
            self.oldest
        } else {
            self.hand
        };
        loop {
            let e = self.slab.get_mut(i)?.as_mut()?;
            if !*e.visited.get_mut() {
                break;
            }
            *e.visited.get_mut() = false;
            i = if e.newer == NIL { self.oldest } else { e.newer };
        }
        // Unlinking the entry under the hand moves the hand to its newer
        // neighbour, where the next eviction resumes.
        self.hand = i;
        self.unlink(i)
    }
}
