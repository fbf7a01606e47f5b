//! The real connection loop over a scripted in-memory peer and a virtual clock.
//! The properties are documented on `corral::fuzzing::connection`, which
//! `cargo test` also runs over every file in `fuzz/corpus/connection/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| corral::fuzzing::connection(data));
