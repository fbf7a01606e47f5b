//! Grammar-built requests framed by `http::Conn` and by a reference decoder.
//! The properties are documented on `corral::fuzzing::differential`, which
//! `cargo test` also runs over every file in `fuzz/corpus/differential/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| corral::fuzzing::differential(data));
