//! TEMPORARY STUB (replaced by the real decoder)
#![allow(missing_docs)]
use super::Error;
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits { pub max_body_bytes: u64, pub max_trailer_bytes: usize, pub max_trailers: usize }
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress { pub consumed: usize, pub done: bool }
pub struct Decoder { remaining: u64, decoded: u64 }
impl Decoder {
    pub fn length(len: u64) -> Decoder { Decoder { remaining: len, decoded: 0 } }
    pub fn chunked(_l: BodyLimits) -> Decoder { Decoder { remaining: 0, decoded: 0 } }
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Progress, Error> {
        let n = (self.remaining.min(input.len() as u64)) as usize;
        out.extend_from_slice(&input[..n]); self.remaining -= n as u64; self.decoded += n as u64;
        Ok(Progress { consumed: n, done: self.remaining == 0 })
    }
    pub fn is_done(&self) -> bool { self.remaining == 0 }
    pub fn decoded(&self) -> u64 { self.decoded }
}
