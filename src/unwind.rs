//! Living with caught panics. The server catches a panicking handler and
//! the cache a panicking computation, so a panic is something the process
//! survives rather than dies of. Two things follow, kept here once: the
//! message of a caught panic, for the log and for errors; and locks taken
//! in spite of the poison a panicking holder leaves behind.
//!
//! Ignoring poison is sound only where a panic cannot leave the guarded
//! data half-changed; each caller says why that holds for its data.

use std::any::Any;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The text of a caught panic: `panic!` with a literal gives a `&str`, one
/// with arguments a `String`; anything else (`panic_any`) has no text.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}

/// Locks `m`, ignoring poison.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::{catch_unwind, panic_any};

    #[test]
    fn panic_message_reads_str_and_string_payloads() {
        let text = |f: fn()| panic_message(&*catch_unwind(f).unwrap_err()).to_owned();
        assert_eq!(text(|| panic!("plain")), "plain");
        assert_eq!(text(|| panic!("with {}", 1)), "with 1");
        assert_eq!(text(|| panic_any(7u8)), "non-string panic payload");
    }

    #[test]
    fn lock_ignores_poison() {
        let m = Mutex::new(1);
        let _ = catch_unwind(|| {
            let _held = m.lock();
            panic!("poisons the mutex");
        });
        assert!(m.is_poisoned());
        assert_eq!(*lock(&m), 1);
    }
}
