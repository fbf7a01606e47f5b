//! Arbitrary bytes into the request head path of `http::Conn`.
//! The properties are documented on `corral::fuzzing::request_head`, which
//! `cargo test` also runs over every file in `fuzz/corpus/request_head/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| corral::fuzzing::request_head(data));
