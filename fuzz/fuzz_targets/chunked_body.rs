//! Arbitrary bytes into the chunked body decoder, whole and split.
//! The properties are documented on `corral::fuzzing::chunked_body`, which
//! `cargo test` also runs over every file in `fuzz/corpus/chunked_body/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| corral::fuzzing::chunked_body(data));
