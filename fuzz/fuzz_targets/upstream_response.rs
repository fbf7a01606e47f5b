//! Arbitrary bytes as an upstream's response, into the proxy's parser.
//! The properties are documented on `corral::fuzzing::upstream_response`,
//! which `cargo test` also runs over every file in
//! `fuzz/corpus/upstream_response/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| corral::fuzzing::upstream_response(data));
