//! The process's allocator, told at start-up to give freed large buffers
//! back to the OS, so that corral's memory is bounded by its configuration
//! (README "Deploying" has the formula) and not by what glibc's malloc
//! happens to keep.
//!
//! corral's large buffers are its values: arrays and their encodings of
//! tens of megabytes, built on a compute-lane thread, kept in the cache
//! until evicted, freed on whichever thread drops the last reference.
//! glibc serves an allocation above `M_MMAP_THRESHOLD` (128 KiB at first)
//! with its own `mmap`, and returns it with `munmap` when freed. But by
//! default the threshold is dynamic: each such buffer freed raises it to
//! that buffer's size (if under 32 MiB), so that a program reallocating big
//! buffers stops paying for `mmap`. From then on buffers of that size come
//! from the heap arenas (one per thread, up to 8 per CPU) and, when freed,
//! stay there: an arena's heap shrinks only from its top, and a freed
//! buffer under a live one cannot be trimmed. Under distinct large arrays
//! that is what happened (BENCHMARKS.md, "Memory"): the cache held its
//! 256 MiB, and the process kept three times that.
//!
//! Setting `M_MMAP_THRESHOLD` explicitly turns the dynamic threshold off
//! (glibc's `mallopt(3)`: so does any of the thresholds or `M_TOP_PAD`),
//! so every buffer from 128 KiB up is mapped on its own and unmapped when
//! freed, whichever thread frees it. The cost is an `mmap`, an `munmap` and
//! the page faults per large buffer, next to a computation of seconds.
//! Buffers below the threshold (heads, a connection's receive buffer, small
//! bodies) stay in the arenas as before. The measurements showed
//! `M_ARENA_MAX` does not matter once the large buffers are mapped, so the
//! arenas keep glibc's default.
//!
//! An operator who sets `glibc.malloc.mmap_threshold` in `GLIBC_TUNABLES`
//! keeps that value: it is read before `main`, and this module leaves it.
//!
//! On other C libraries (musl has no dynamic threshold, and maps large
//! buffers already) [`return_large_buffers`] does nothing.
#![allow(unsafe_code)]

/// glibc's initial `M_MMAP_THRESHOLD`, kept fixed instead of rising: the
/// largest buffer served from the heap arenas.
pub const MMAP_THRESHOLD_BYTES: usize = 128 * 1024;

/// What [`return_large_buffers`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tuning {
    /// Buffers of [`MMAP_THRESHOLD_BYTES`] and more are mapped, and
    /// unmapped when freed.
    Fixed,
    /// `GLIBC_TUNABLES` sets the threshold; it was left alone.
    LeftToTunables,
    /// The allocator refused the setting.
    Refused,
    /// Not glibc: nothing to do.
    NotGlibc,
}

/// Fixes glibc's mmap threshold at [`MMAP_THRESHOLD_BYTES`] (see the module
/// doc), unless `GLIBC_TUNABLES` sets it. Call it once, early in `main`.
pub fn return_large_buffers() -> Tuning {
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if tunables.contains("glibc.malloc.mmap_threshold") {
        return Tuning::LeftToTunables;
    }
    set_mmap_threshold(MMAP_THRESHOLD_BYTES)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_mmap_threshold(bytes: usize) -> Tuning {
    let Ok(value) = libc::c_int::try_from(bytes) else {
        return Tuning::Refused;
    };
    // SAFETY: mallopt only sets malloc's parameters, under malloc's own
    // lock, and takes no pointer; any value is checked by glibc (it
    // returns 0 for one it refuses). Static glibc has it as well.
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, value) };
    if ok == 1 {
        Tuning::Fixed
    } else {
        Tuning::Refused
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_mmap_threshold(_bytes: usize) -> Tuning {
    Tuning::NotGlibc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_takes_a_fixed_threshold() {
        let expected = if cfg!(not(all(target_os = "linux", target_env = "gnu"))) {
            Tuning::NotGlibc
        } else if std::env::var("GLIBC_TUNABLES")
            .is_ok_and(|t| t.contains("glibc.malloc.mmap_threshold"))
        {
            Tuning::LeftToTunables
        } else {
            Tuning::Fixed
        };
        assert_eq!(return_large_buffers(), expected);
        // Again: it only sets a parameter.
        assert_eq!(return_large_buffers(), expected);
    }
}
