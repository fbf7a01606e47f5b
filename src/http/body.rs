//! Request body decoding: Content-Length and chunked (RFC 9112 §6.3, §7.1).
//!
//! This file never sees a socket. A [`Decoder`] takes whatever bytes have
//! arrived, appends the body bytes it finds to a `Vec`, and says how much of
//! the input it consumed and whether the body is complete. It never consumes
//! a byte past the end of the body, because the next pipelined request
//! starts there.
//!
//! # Progress rule
//!
//! On non-empty input, [`Decoder::decode`] consumes at least one byte,
//! reports the body done, or returns an error. The caller's read loop relies
//! on this to never spin.
//!
//! # Chunked state machine
//!
//! The chunked decoder reads one byte at a time, except for chunk data,
//! which it copies in bulk. Each state is named for what comes next. Any
//! byte without an arrow is an error, so input may be split at any point,
//! even one byte per call, and the result is the same. The decoder never
//! looks at a byte twice and never buffers a line: it keeps a few counters
//! and the current state.
//!
//! ```text
//!   +------------------------------- LF -----------------------------------+
//!   v                                                                      |
//!  Size --CR---------> SizeLf --LF, size > 0--> Data --> DataCr --CR--> DataLf
//!   |                   ^  |
//!  BWS or ;            CR  +--LF, size = 0--> TrailerLine --CR--> EndLf --LF--> Done
//!   v                   |                       |     ^
//!  Ext* ----------------+                     tchar   LF
//!  (ExtSemi, ExtName, ...)                      v     |
//!                                     TrailerName     TrailerLf
//!                                               |     ^
//!                                               :     CR
//!                                               v     |
//!                                            TrailerValue
//! ```
//!
//! # Strictness
//!
//! Chunked framing is where front ends and back ends disagree and requests
//! get smuggled, so this decoder accepts exactly the RFC 9112 §7.1 grammar:
//!
//! - Every line ends in CRLF. A bare LF, or a CR followed by anything but
//!   LF, is an error. Parsers that treat a lone LF as a line end have been
//!   the source of smuggling bugs such as CVE-2025-55315 (Kestrel accepted
//!   a lone LF inside chunk extensions); hyper (hyperium/hyper#2600) and
//!   fasthttp (valyala/fasthttp#1899) reject it for the same reason.
//! - The chunk size is 1 to 16 hex digits (leading zeros count): 16 digits
//!   fill a `u64`, so the arithmetic cannot overflow, and there is no sign,
//!   `0x` or whitespace for two parsers to read differently.
//! - Chunk extensions (§7.1.1) are checked against their grammar, with BWS
//!   only where the grammar puts it, and then ignored, as the RFC requires. A
//!   quoted string cannot hide a CR or LF (CVE-2026-2332 in Jetty ended an
//!   unterminated quoted string at CRLF).
//! - Trailer fields (§7.1.2) are checked like header fields (RFC 9112 §5:
//!   token name, no whitespace before the colon, no obs-fold, no control
//!   bytes) and discarded. Nothing in them can change framing.
//!
//! # Limits
//!
//! - The running body size is checked against
//!   [`BodyLimits::max_body_bytes`] as soon as a chunk size is known, before
//!   its data arrives, so a client cannot make us read a body we will refuse.
//! - Chunk extensions count against [`MAX_CHUNK_EXT_BYTES`] for the whole
//!   body; see there for why.
//! - The trailer section is bounded in bytes and in field lines, like the
//!   head.

use super::Error;

/// Most hex digits a chunk size may have, leading zeros included.
///
/// Sixteen digits hold any `u64`, so the size arithmetic never overflows.
/// Other parsers cap it the same way (h1p's
/// `max_chunked_encoding_chunk_size_length` is 16), and no real client
/// needs more: 16 hex digits are 16 EiB.
pub const MAX_CHUNK_SIZE_DIGITS: u8 = 16;

/// Most bytes of chunk extensions (everything between the chunk size and
/// the CRLF that ends its line) accepted in one body, summed over all its
/// chunks.
///
/// Extensions are ignored, so without a cap a client could stream endless
/// extension bytes with a tiny body and never hit the body limit. That is
/// CVE-2023-39326 (Go net/http) and CVE-2024-22019 (Node.js); hyper
/// (16 KiB per body, hyperium/hyper#3495), Node (16 KiB) and Twisted
/// (4 KiB per size line) all added caps after such reports. We ignore
/// extensions entirely, so 4 KiB per body is plenty for the rare client that
/// sends a few. The cost: a client that signs every chunk in an extension
/// (S3's aws-chunked uploads spend about 80 bytes a chunk) fails after
/// about 50 chunks; a per-chunk cap would allow it but leaves the total
/// unbounded.
pub const MAX_CHUNK_EXT_BYTES: usize = 4096;

/// Limits that bound a body decoder's work and memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Most decoded body bytes; more is [`Error::BodyTooLarge`].
    pub max_body_bytes: u64,
    /// Most bytes in the chunked trailer section, counting each field line
    /// and its CRLF but not the final empty line; more is
    /// [`Error::HeadTooLarge`].
    pub max_trailer_bytes: usize,
    /// Most trailer field lines; more is [`Error::TooManyHeaders`].
    pub max_trailers: usize,
}

/// What one call to [`Decoder::decode`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of input consumed. Never more than the body: what follows
    /// belongs to the next request.
    pub consumed: usize,
    /// The whole body, including any chunked trailer section and its final
    /// CRLF, has been read.
    pub done: bool,
}

/// Decodes one request body, framed by Content-Length or chunked.
#[derive(Debug, Clone)]
pub struct Decoder {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// A Content-Length body: copy this many more bytes.
    Length { remaining: u64, decoded: u64 },
    /// A chunked body.
    Chunked(Chunked),
}

impl Decoder {
    /// A decoder for a body of exactly `len` bytes (RFC 9112 §6.3 rule 6).
    ///
    /// The caller has already checked `len` against its body limit, so it
    /// can answer 413 before reading any of the body. `length(0)` is done
    /// from the start.
    pub fn length(len: u64) -> Decoder {
        Decoder {
            kind: Kind::Length {
                remaining: len,
                decoded: 0,
            },
        }
    }

    /// A decoder for a chunked body (RFC 9112 §7.1), bounded by `limits`.
    pub fn chunked(limits: BodyLimits) -> Decoder {
        Decoder {
            kind: Kind::Chunked(Chunked::new(limits)),
        }
    }

    /// Decodes as much of `input` as it can, appending decoded body bytes
    /// to `out`.
    ///
    /// Returns how many bytes of input it consumed and whether the body
    /// (including the chunked trailer section and final CRLF) is complete.
    /// It never consumes bytes past the end of the body, since pipelined
    /// requests follow it. Once done, further calls consume nothing.
    ///
    /// On non-empty input a call consumes at least one byte, reports done,
    /// or returns an error. After an error the body's framing is lost: the
    /// caller must close the connection, `out` may hold part of the body,
    /// and every later call returns the same error.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Progress, Error> {
        match &mut self.kind {
            Kind::Length { remaining, decoded } => {
                // `min` with a `usize` always fits back into a `usize`.
                let n = usize::try_from(*remaining).map_or(input.len(), |r| r.min(input.len()));
                out.extend_from_slice(&input[..n]);
                *remaining -= n as u64;
                *decoded += n as u64;
                Ok(Progress {
                    consumed: n,
                    done: *remaining == 0,
                })
            }
            Kind::Chunked(chunked) => chunked.decode(input, out),
        }
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        match &self.kind {
            Kind::Length { remaining, .. } => *remaining == 0,
            Kind::Chunked(chunked) => chunked.state == State::Done,
        }
    }

    /// Decoded body bytes so far: how many bytes `decode` has appended.
    pub fn decoded(&self) -> u64 {
        match &self.kind {
            Kind::Length { decoded, .. } => *decoded,
            Kind::Chunked(chunked) => chunked.decoded,
        }
    }
}

/// Where the chunked decoder is, named for what it expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size, then BWS, `;` or CR.
    Size,
    /// BWS, then `;` starting an extension. Reached after whitespace that
    /// follows the size or a value: the grammar allows BWS there only before
    /// another `;`.
    ExtSemi,
    /// BWS, then the first byte of an extension name.
    ExtName,
    /// More of the name, then `=`, BWS, `;` or CR.
    ExtNameRest,
    /// BWS, then `=` or `;` (whitespace followed the name).
    ExtEquals,
    /// BWS, then a token or a quoted string.
    ExtValue,
    /// More of a token value, then BWS, `;` or CR.
    ExtToken,
    /// Inside a quoted string: text, `\`, or the closing `"`.
    ExtQuoted,
    /// The byte escaped by `\` in a quoted string.
    ExtQuotedPair,
    /// After a closing `"`: BWS, `;` or CR.
    ExtQuoteEnd,
    /// The LF ending a chunk-size line.
    SizeLf,
    /// Chunk data; `Chunked::size` bytes are still to come.
    Data,
    /// The CR after chunk data.
    DataCr,
    /// The LF after chunk data.
    DataLf,
    /// A trailer field line, or the CR of the final empty line.
    TrailerLine,
    /// More of a trailer field name, then `:`.
    TrailerName,
    /// A trailer field value, then CR.
    TrailerValue,
    /// The LF ending a trailer field line.
    TrailerLf,
    /// The LF of the final empty line.
    EndLf,
    /// The body is complete.
    Done,
}

/// The chunked decoder: a state plus a handful of counters.
#[derive(Debug, Clone)]
struct Chunked {
    state: State,
    limits: BodyLimits,
    /// The chunk size being parsed; in `Data`, the bytes still to come.
    size: u64,
    /// Hex digits read of the current chunk size.
    digits: u8,
    /// Body bytes appended to `out` so far. Never above `max_body_bytes`.
    decoded: u64,
    /// Chunk extension bytes seen so far in this body.
    ext_bytes: usize,
    /// Trailer section bytes seen so far.
    trailer_bytes: usize,
    /// Trailer field lines started so far.
    trailers: usize,
    /// The error that ended decoding, returned again by later calls.
    failed: Option<Error>,
}

// The messages for `Error::Malformed`, one per kind of mistake.
const SIZE_NOT_HEX: Error = Error::Malformed("chunk size is not a hex number");
const SIZE_TOO_LONG: Error = Error::Malformed("chunk size has more than 16 digits");
const SIZE_OVERFLOW: Error = Error::Malformed("chunk size overflows");
const SIZE_LINE_END: Error = Error::Malformed("chunk size line must end with CRLF");
const SIZE_LINE_WS: Error = Error::Malformed("whitespace at end of chunk size line");
const EXT_INVALID: Error = Error::Malformed("invalid chunk extension");
const EXT_TOO_LONG: Error = Error::Malformed("chunk extensions too long");
const DATA_END: Error = Error::Malformed("chunk data must be followed by CRLF");
const TRAILER_NAME: Error = Error::Malformed("invalid trailer field name");
const TRAILER_WS_COLON: Error = Error::Malformed("whitespace before colon in trailer field");
const TRAILER_FOLD: Error = Error::Malformed("trailer line starts with whitespace (obs-fold)");
const TRAILER_VALUE: Error = Error::Malformed("control character in trailer field value");
const TRAILER_LINE_END: Error = Error::Malformed("trailer line must end with CRLF");
const BODY_END: Error = Error::Malformed("chunked body must end with CRLF");

impl Chunked {
    fn new(limits: BodyLimits) -> Chunked {
        Chunked {
            state: State::Size,
            limits,
            size: 0,
            digits: 0,
            decoded: 0,
            ext_bytes: 0,
            trailer_bytes: 0,
            trailers: 0,
            failed: None,
        }
    }

    fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Progress, Error> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let mut i = 0;
        // Invariant: each pass consumes at least one byte or fails, and the
        // loop stops at `Done`, so it ends, never reads a byte twice, and
        // never reads past the body.
        while i < input.len() && self.state != State::Done {
            if self.state == State::Data {
                // `size > 0` in `Data`: we leave it as soon as it hits 0.
                let rest = &input[i..];
                let n = usize::try_from(self.size).map_or(rest.len(), |s| s.min(rest.len()));
                out.extend_from_slice(&rest[..n]);
                self.size -= n as u64;
                self.decoded += n as u64;
                i += n;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            match self.step(input[i]) {
                Ok(next) => self.state = next,
                Err(err) => {
                    self.failed = Some(err.clone());
                    return Err(err);
                }
            }
            i += 1;
        }
        Ok(Progress {
            consumed: i,
            done: self.state == State::Done,
        })
    }

    /// Consumes one framing byte (anything but chunk data) and returns the
    /// next state.
    fn step(&mut self, b: u8) -> Result<State, Error> {
        use State::*;
        match self.state {
            Size => self.size_byte(b),
            ExtSemi | ExtName | ExtNameRest | ExtEquals | ExtValue | ExtToken | ExtQuoted
            | ExtQuotedPair | ExtQuoteEnd => self.ext_byte(b),
            SizeLf => match b {
                b'\n' if self.size == 0 => Ok(TrailerLine),
                b'\n' => Ok(Data),
                _ => Err(SIZE_LINE_END),
            },
            DataCr => match b {
                b'\r' => Ok(DataLf),
                // Also catches data longer than its size.
                _ => Err(DATA_END),
            },
            DataLf => match b {
                b'\n' => {
                    self.size = 0;
                    self.digits = 0;
                    Ok(Size)
                }
                _ => Err(DATA_END),
            },
            TrailerLine | TrailerName | TrailerValue | TrailerLf => self.trailer_byte(b),
            EndLf => match b {
                b'\n' => Ok(Done),
                _ => Err(BODY_END),
            },
            // `decode` copies data itself and stops at `Done`.
            Data | Done => Ok(self.state),
        }
    }

    fn size_byte(&mut self, b: u8) -> Result<State, Error> {
        if let Some(digit) = hex_value(b) {
            if self.digits == MAX_CHUNK_SIZE_DIGITS {
                return Err(SIZE_TOO_LONG);
            }
            self.digits += 1;
            // Cannot fail with at most 16 digits; checked all the same.
            self.size = self
                .size
                .checked_mul(16)
                .and_then(|s| s.checked_add(u64::from(digit)))
                .ok_or(SIZE_OVERFLOW)?;
            return Ok(State::Size);
        }
        // Rejects an empty size and a leading sign, `0x` or whitespace.
        if self.digits == 0 {
            return Err(SIZE_NOT_HEX);
        }
        let next = match b {
            b' ' | b'\t' => State::ExtSemi,
            b';' => State::ExtName,
            b'\r' => State::SizeLf,
            b'\n' => return Err(SIZE_LINE_END),
            _ => return Err(SIZE_NOT_HEX),
        };
        // The size is complete: refuse an oversized body now, before any of
        // its data is read.
        match self.decoded.checked_add(self.size) {
            Some(total) if total <= self.limits.max_body_bytes => {}
            _ => return Err(Error::BodyTooLarge),
        }
        if next != State::SizeLf {
            self.count_ext_byte()?;
        }
        Ok(next)
    }

    /// One byte of chunk extensions (RFC 9112 §7.1.1):
    ///
    /// ```text
    /// chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
    /// chunk-ext-val  = token / quoted-string
    /// ```
    fn ext_byte(&mut self, b: u8) -> Result<State, Error> {
        use State::*;
        if b == b'\n' {
            return Err(SIZE_LINE_END);
        }
        if b != b'\r' {
            self.count_ext_byte()?;
        }
        let ws = b == b' ' || b == b'\t';
        let next = match (self.state, b) {
            (ExtSemi | ExtName | ExtEquals | ExtValue, _) if ws => self.state,
            (ExtNameRest, _) if ws => ExtEquals,
            (ExtToken | ExtQuoteEnd, _) if ws => ExtSemi,
            (ExtSemi | ExtNameRest | ExtEquals | ExtToken | ExtQuoteEnd, b';') => ExtName,
            (ExtName | ExtNameRest, _) if is_tchar(b) => ExtNameRest,
            (ExtNameRest | ExtEquals, b'=') => ExtValue,
            (ExtValue, b'"') => ExtQuoted,
            (ExtValue | ExtToken, _) if is_tchar(b) => ExtToken,
            (ExtQuoted, b'"') => ExtQuoteEnd,
            (ExtQuoted, b'\\') => ExtQuotedPair,
            // qdtext and the escaped byte of a quoted-pair are the same set
            // once `"` and `\` are handled above; a CR is not in it, so a
            // quoted string cannot end the line.
            (ExtQuoted | ExtQuotedPair, _) if is_text(b) => ExtQuoted,
            (ExtNameRest | ExtToken | ExtQuoteEnd, b'\r') => SizeLf,
            (ExtSemi | ExtEquals, b'\r') => return Err(SIZE_LINE_WS),
            _ => return Err(EXT_INVALID),
        };
        Ok(next)
    }

    fn count_ext_byte(&mut self) -> Result<(), Error> {
        self.ext_bytes += 1;
        if self.ext_bytes > MAX_CHUNK_EXT_BYTES {
            return Err(EXT_TOO_LONG);
        }
        Ok(())
    }

    /// One byte of the trailer section (RFC 9112 §7.1.2), checked like a
    /// header field line (RFC 9112 §5) and discarded.
    fn trailer_byte(&mut self, b: u8) -> Result<State, Error> {
        use State::*;
        let next = match (self.state, b) {
            // The empty line that ends the body is not part of the section.
            (TrailerLine, b'\r') => return Ok(EndLf),
            (TrailerLine, b'\n') => return Err(BODY_END),
            // RFC 9112 §5.2: obs-fold is rejected; a first line starting
            // with whitespace would be read as one by other parsers.
            (TrailerLine, b' ' | b'\t') => return Err(TRAILER_FOLD),
            (TrailerLine, _) if is_tchar(b) => {
                self.trailers += 1;
                if self.trailers > self.limits.max_trailers {
                    return Err(Error::TooManyHeaders);
                }
                TrailerName
            }
            (TrailerName, _) if is_tchar(b) => TrailerName,
            (TrailerName, b':') => TrailerValue,
            // RFC 9112 §5.1: a server MUST reject this with 400.
            (TrailerName, b' ' | b'\t') => return Err(TRAILER_WS_COLON),
            (TrailerLine | TrailerName, _) => return Err(TRAILER_NAME),
            (TrailerValue, b'\r') => TrailerLf,
            (TrailerValue, b'\n') => return Err(TRAILER_LINE_END),
            // OWS and field-value are both this set (RFC 9110 §5.5).
            (TrailerValue, _) if is_text(b) => TrailerValue,
            (TrailerValue, _) => return Err(TRAILER_VALUE),
            (TrailerLf, b'\n') => TrailerLine,
            _ => return Err(TRAILER_LINE_END),
        };
        self.trailer_bytes += 1;
        if self.trailer_bytes > self.limits.max_trailer_bytes {
            return Err(Error::HeadTooLarge);
        }
        Ok(next)
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `tchar` (RFC 9110 §5.6.2): the bytes of a token.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// HTAB, SP, VCHAR or obs-text: what may appear in a field value or a
/// quoted string. Excludes every other control byte, CR and LF included.
fn is_text(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipelined request that follows the body in the "trailing bytes" runs.
    const TRAILING: &[u8] = b"GET / HTTP/1.1\r\n";

    /// Limits for most chunked cases.
    const LIMITS: BodyLimits = BodyLimits {
        max_body_bytes: 64,
        max_trailer_bytes: 64,
        max_trailers: 4,
    };

    /// Small limits, to hit them exactly and one over.
    const TIGHT: BodyLimits = BodyLimits {
        max_body_bytes: 10,
        max_trailer_bytes: 16,
        max_trailers: 2,
    };

    /// No body limit, to reach the size arithmetic's own edges.
    const HUGE: BodyLimits = BodyLimits {
        max_body_bytes: u64::MAX,
        max_trailer_bytes: usize::MAX,
        max_trailers: usize::MAX,
    };

    #[derive(Debug)]
    enum Want<'a> {
        /// The body is complete and took all of the input.
        Done(&'a [u8]),
        /// The body is complete after this many bytes; the rest is not body.
        DoneAt(&'a [u8], usize),
        /// All input consumed, this much body so far, more to come.
        Partial(&'a [u8]),
        Fail(Error),
    }
    use Want::*;

    /// Body bytes, bytes consumed, done.
    type Outcome = Result<(Vec<u8>, usize, bool), Error>;

    /// Feeds `pieces` in order, calling `decode` until each is used up or
    /// the body is done, and checks the progress rule on every call.
    fn feed<'a>(mut dec: Decoder, pieces: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
        let mut out = Vec::new();
        let mut consumed = 0;
        for piece in pieces {
            let mut rest = piece;
            while !rest.is_empty() && !dec.is_done() {
                let progress = match dec.decode(rest, &mut out) {
                    Ok(progress) => progress,
                    Err(err) => {
                        // Errors are sticky.
                        assert_eq!(dec.decode(b"0\r\n\r\n", &mut out), Err(err.clone()));
                        return Err(err);
                    }
                };
                assert!(progress.consumed <= rest.len());
                assert!(progress.consumed > 0 || progress.done, "progress rule");
                assert_eq!(progress.done, dec.is_done());
                assert_eq!(dec.decoded(), out.len() as u64);
                consumed += progress.consumed;
                rest = &rest[progress.consumed..];
            }
        }
        if dec.is_done() {
            let again = dec.decode(TRAILING, &mut out);
            assert_eq!(
                again,
                Ok(Progress {
                    consumed: 0,
                    done: true
                }),
                "after done"
            );
        }
        Ok((out, consumed, dec.is_done()))
    }

    /// Runs one case whole, one byte at a time, and (unless the body is
    /// incomplete) with trailing bytes both ways; all must match `want`.
    fn check(name: &str, make: &dyn Fn() -> Decoder, input: &[u8], want: &Want) {
        let expected: Outcome = match want {
            Done(body) => Ok((body.to_vec(), input.len(), true)),
            DoneAt(body, n) => Ok((body.to_vec(), *n, true)),
            Partial(body) => Ok((body.to_vec(), input.len(), false)),
            Fail(err) => Err(err.clone()),
        };
        assert_eq!(feed(make(), [input]), expected, "{name}: whole");
        assert_eq!(
            feed(make(), input.chunks(1)),
            expected,
            "{name}: byte at a time"
        );
        if !matches!(want, Partial(_)) {
            let with = [input, TRAILING].concat();
            assert_eq!(feed(make(), [&with[..]]), expected, "{name}: trailing");
            assert_eq!(
                feed(make(), with.chunks(1)),
                expected,
                "{name}: trailing, bytes"
            );
        }
    }

    fn check_chunked(limits: BodyLimits, cases: &[(&str, &[u8], Want)]) {
        for (name, input, want) in cases {
            check(name, &|| Decoder::chunked(limits), input, want);
        }
    }

    #[rustfmt::skip]
    const VALID: &[(&str, &[u8], Want)] = &[
        ("one chunk", b"5\r\nhello\r\n0\r\n\r\n", Done(b"hello")),
        ("empty body", b"0\r\n\r\n", Done(b"")),
        ("two chunks", b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", Done(b"hello world")),
        ("uppercase hex", b"A\r\n0123456789\r\n0\r\n\r\n", Done(b"0123456789")),
        ("lowercase hex", b"a\r\n0123456789\r\n0\r\n\r\n", Done(b"0123456789")),
        ("two hex digits", b"10\r\n0123456789abcdef\r\n0\r\n\r\n", Done(b"0123456789abcdef")),
        ("leading zeros", b"0005\r\nhello\r\n000\r\n\r\n", Done(b"hello")),
        ("16 digits", b"0000000000000005\r\nhello\r\n0000000000000000\r\n\r\n", Done(b"hello")),
        ("extension name only", b"5;foo\r\nhello\r\n0\r\n\r\n", Done(b"hello")),
        ("extension token", b"5;foo=bar\r\nhello\r\n0;end\r\n\r\n", Done(b"hello")),
        ("extension quoted", b"5;foo=\"a b;c=\\\"d\\\"\"\r\nhello\r\n0\r\n\r\n", Done(b"hello")),
        ("empty quoted", b"1;a=\"\"\r\nx\r\n0\r\n\r\n", Done(b"x")),
        ("obs-text quoted", b"1;a=\"\xff\"\r\nx\r\n0\r\n\r\n", Done(b"x")),
        ("several extensions", b"5;a=1;b;c=\"x\"\r\nhello\r\n0\r\n\r\n", Done(b"hello")),
        ("BWS before ;", b"5 \t;a\r\nhello\r\n0\r\n\r\n", Done(b"hello")),
        ("BWS around ; and =", b"1 ;\ta = 1 ; b\t=\t\"q\" ;c\r\nx\r\n0\r\n\r\n", Done(b"x")),
        ("one trailer", b"0\r\nExpires: never\r\n\r\n", Done(b"")),
        ("trailers", b"5\r\nhello\r\n0\r\nA: 1\r\nB-2:\r\n\r\n", Done(b"hello")),
        ("trailer value text", b"0\r\nX:\ta\tb \xe9 \r\n\r\n", Done(b"")),
        ("CRLF in data", b"4\r\n\r\n\r\n\r\n0\r\n\r\n", Done(b"\r\n\r\n")),
        ("binary data", b"3\r\n\x00\n\xff\r\n0\r\n\r\n", Done(b"\x00\n\xff")),
        ("next request follows", b"1\r\na\r\n0\r\n\r\nGET", DoneAt(b"a", 11)),
        ("partial size", b"5", Partial(b"")),
        ("partial extension", b"5;a=\"x", Partial(b"")),
        ("partial data", b"5\r\nhel", Partial(b"hel")),
        ("partial after data", b"5\r\nhello\r", Partial(b"hello")),
        ("partial trailers", b"0\r\nA: 1\r\n", Partial(b"")),
        ("partial final CRLF", b"0\r\n\r", Partial(b"")),
    ];

    #[rustfmt::skip]
    const INVALID: &[(&str, &[u8], Want)] = &[
        ("empty size", b"\r\n0\r\n\r\n", Fail(SIZE_NOT_HEX)),
        ("plus sign", b"+5\r\nhello\r\n0\r\n\r\n", Fail(SIZE_NOT_HEX)),
        ("minus sign", b"-5\r\nhello\r\n0\r\n\r\n", Fail(SIZE_NOT_HEX)),
        ("0x prefix", b"0x5\r\nhello\r\n0\r\n\r\n", Fail(SIZE_NOT_HEX)),
        ("space before size", b" 5\r\nhello\r\n0\r\n\r\n", Fail(SIZE_NOT_HEX)),
        ("tab before size", b"\t5\r\nhello\r\n0\r\n\r\n", Fail(SIZE_NOT_HEX)),
        ("non-hex digit", b"5g\r\nhello\r\n0\r\n\r\n", Fail(SIZE_NOT_HEX)),
        ("NUL in size", b"5\x00\r\nhello\r\n0\r\n\r\n", Fail(SIZE_NOT_HEX)),
        ("17 digits", b"00000000000000005\r\nhello\r\n", Fail(SIZE_TOO_LONG)),
        ("overflow", b"FFFFFFFFFFFFFFFFF\r\n", Fail(SIZE_TOO_LONG)),
        ("too large", b"41\r\n", Fail(Error::BodyTooLarge)),
        ("whitespace after size", b"5 \r\nhello\r\n0\r\n\r\n", Fail(SIZE_LINE_WS)),
        ("whitespace after value", b"5;a=b \r\nhello\r\n0\r\n\r\n", Fail(SIZE_LINE_WS)),
        ("whitespace after name", b"5;a \r\nhello\r\n0\r\n\r\n", Fail(SIZE_LINE_WS)),
        ("bare LF after size", b"5\nhello\r\n0\r\n\r\n", Fail(SIZE_LINE_END)),
        ("CR alone after size", b"5\rhello\r\n0\r\n\r\n", Fail(SIZE_LINE_END)),
        ("bare LF in extension", b"5;a\nhello\r\n0\r\n\r\n", Fail(SIZE_LINE_END)),
        ("bare LF after value", b"5;a=b\nhello\r\n0\r\n\r\n", Fail(SIZE_LINE_END)),
        ("bare LF in quoted", b"5;a=\"x\ny\"\r\nhello\r\n", Fail(SIZE_LINE_END)),
        ("CRLF in quoted", b"1;a=\"v\r\nX\r\n0\r\n\r\n", Fail(EXT_INVALID)),
        ("CR alone after extension", b"5;a\rhello\r\n0\r\n\r\n", Fail(SIZE_LINE_END)),
        ("bare LF after last chunk", b"0\n\r\n", Fail(SIZE_LINE_END)),
        ("empty extension", b"5;\r\nhello\r\n0\r\n\r\n", Fail(EXT_INVALID)),
        ("two semicolons", b"5;;a\r\nhello\r\n0\r\n\r\n", Fail(EXT_INVALID)),
        ("missing value", b"5;a=\r\nhello\r\n0\r\n\r\n", Fail(EXT_INVALID)),
        ("junk after quoted", b"5;a=\"b\"c\r\nhello\r\n", Fail(EXT_INVALID)),
        ("control in name", b"5;a\x01b\r\nhello\r\n", Fail(EXT_INVALID)),
        ("DEL in value", b"5;a=b\x7f\r\nhello\r\n", Fail(EXT_INVALID)),
        ("NUL in quoted", b"5;a=\"\x00\"\r\nhello\r\n", Fail(EXT_INVALID)),
        ("NUL escaped", b"5;a=\"\\\x00\"\r\nhello\r\n", Fail(EXT_INVALID)),
        ("ESC in quoted", b"5;a=\"\x1b\"\r\nhello\r\n", Fail(EXT_INVALID)),
        ("bare LF after data", b"5\r\nhello\n0\r\n\r\n", Fail(DATA_END)),
        ("LF LF after data", b"5\r\nhello\n\n0\r\n\r\n", Fail(DATA_END)),
        ("CR alone after data", b"5\r\nhello\r0\r\n\r\n", Fail(DATA_END)),
        ("no CRLF after data", b"5\r\nhello0\r\n\r\n", Fail(DATA_END)),
        ("data longer than size", b"3\r\nhello\r\n0\r\n\r\n", Fail(DATA_END)),
        ("data shorter than size", b"6\r\nhello\r\n0\r\n\r\n", Fail(DATA_END)),
        ("bare LF at end", b"0\r\n\n", Fail(BODY_END)),
        ("CR alone at end", b"0\r\n\rX", Fail(BODY_END)),
        ("bare LF after trailer", b"0\r\nA: 1\n\r\n", Fail(TRAILER_LINE_END)),
        ("CR alone after trailer", b"0\r\nA: 1\rB: 2\r\n\r\n", Fail(TRAILER_LINE_END)),
        ("obs-fold", b"0\r\nA: 1\r\n  more\r\n\r\n", Fail(TRAILER_FOLD)),
        ("obs-fold tab", b"0\r\nA: 1\r\n\tmore\r\n\r\n", Fail(TRAILER_FOLD)),
        ("leading whitespace", b"0\r\n A: 1\r\n\r\n", Fail(TRAILER_FOLD)),
        ("space before colon", b"0\r\nA : 1\r\n\r\n", Fail(TRAILER_WS_COLON)),
        ("tab before colon", b"0\r\nA\t: 1\r\n\r\n", Fail(TRAILER_WS_COLON)),
        ("empty trailer name", b"0\r\n: 1\r\n\r\n", Fail(TRAILER_NAME)),
        ("trailer without colon", b"0\r\nA\r\n\r\n", Fail(TRAILER_NAME)),
        ("non-token trailer name", b"0\r\nA(b): 1\r\n\r\n", Fail(TRAILER_NAME)),
        ("NUL in trailer value", b"0\r\nA: 1\x002\r\n\r\n", Fail(TRAILER_VALUE)),
        ("DEL in trailer value", b"0\r\nA: \x7f\r\n\r\n", Fail(TRAILER_VALUE)),
        ("VT in trailer value", b"0\r\nA: 1\x0b\r\n\r\n", Fail(TRAILER_VALUE)),
    ];

    #[rustfmt::skip]
    const LIMITED: &[(&str, &[u8], Want)] = &[
        ("body at limit", b"4\r\nabcd\r\n6\r\nefghij\r\n0\r\n\r\n", Done(b"abcdefghij")),
        ("body one over, one chunk", b"B\r\n", Fail(Error::BodyTooLarge)),
        // The error comes at the end of the size, before any data.
        ("body one over, two chunks", b"4\r\nabcd\r\n7\r\n", Fail(Error::BodyTooLarge)),
        ("too large before extension", b"ffff;a\r\n", Fail(Error::BodyTooLarge)),
        ("too large before BWS", b"ffff \r\n", Fail(Error::BodyTooLarge)),
        ("trailers at count limit", b"0\r\nA: 1\r\nB: 2\r\n\r\n", Done(b"")),
        ("too many trailers", b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", Fail(Error::TooManyHeaders)),
        ("trailer bytes at limit", b"0\r\nA: 0123456789a\r\n\r\n", Done(b"")),
        ("trailer bytes one over", b"0\r\nA: 0123456789ab\r\n\r\n", Fail(Error::HeadTooLarge)),
        ("over, 2 lines", b"0\r\nA: 1234\r\nB: 123\r\n\r\n", Fail(Error::HeadTooLarge)),
    ];

    #[rustfmt::skip]
    const UNLIMITED: &[(&str, &[u8], Want)] = &[
        ("16 F digits", b"FFFFFFFFFFFFFFFF\r\nab", Partial(b"ab")),
        ("17 digits", b"1FFFFFFFFFFFFFFFF\r\n", Fail(SIZE_TOO_LONG)),
        // 1 + u64::MAX overflows: checked, not wrapped.
        ("total overflows", b"1\r\na\r\nFFFFFFFFFFFFFFFF\r\n", Fail(Error::BodyTooLarge)),
    ];

    #[test]
    fn chunked_valid() {
        check_chunked(LIMITS, VALID);
    }

    #[test]
    fn chunked_invalid() {
        check_chunked(LIMITS, INVALID);
    }

    #[test]
    fn chunked_limits() {
        check_chunked(TIGHT, LIMITED);
        check_chunked(HUGE, UNLIMITED);
    }

    #[test]
    fn chunked_extension_limit() {
        let long = |n: usize| "a".repeat(n);
        // ";" plus 4095 name bytes is exactly the limit.
        let at = format!("1;{}\r\nx\r\n0\r\n\r\n", long(MAX_CHUNK_EXT_BYTES - 1));
        let over = format!("1;{}\r\nx\r\n0\r\n\r\n", long(MAX_CHUNK_EXT_BYTES));
        // The limit is for the whole body, not per chunk.
        let half = long(MAX_CHUNK_EXT_BYTES / 2 - 1);
        let split_at = format!("1;{half}\r\nx\r\n1;{half}\r\ny\r\n0\r\n\r\n");
        let split_over = format!("1;{half}\r\nx\r\n1;{half}\r\ny\r\n0;b\r\n\r\n");
        // BWS after the size counts too.
        let bws_over = format!("1 ;{}\r\nx\r\n0\r\n\r\n", long(MAX_CHUNK_EXT_BYTES - 1));
        let cases = [
            ("at limit", at, Done(b"x")),
            ("one over", over, Fail(EXT_TOO_LONG)),
            ("at limit, two chunks", split_at, Done(b"xy")),
            ("over, three chunks", split_over, Fail(EXT_TOO_LONG)),
            ("over with BWS", bws_over, Fail(EXT_TOO_LONG)),
        ];
        for (name, input, want) in &cases {
            check(name, &|| Decoder::chunked(LIMITS), input.as_bytes(), want);
        }
    }

    #[rustfmt::skip]
    const LENGTH: &[(&str, u64, &[u8], Want)] = &[
        ("zero, no input", 0, b"", Done(b"")),
        ("zero, next request", 0, b"GET / HTTP/1.1\r\n", DoneAt(b"", 0)),
        ("partial", 5, b"hel", Partial(b"hel")),
        ("full", 5, b"hello", Done(b"hello")),
        ("full, next request", 5, b"helloGET / HTTP/1.1\r\n", DoneAt(b"hello", 5)),
        ("binary", 4, b"\r\n\x00\xff", Done(b"\r\n\x00\xff")),
    ];

    #[test]
    fn content_length() {
        for (name, len, input, want) in LENGTH {
            check(name, &|| Decoder::length(*len), input, want);
        }
    }

    #[test]
    fn length_zero_is_done_from_the_start() {
        let mut dec = Decoder::length(0);
        assert!(dec.is_done());
        assert_eq!(dec.decoded(), 0);
        let mut out = Vec::new();
        let progress = dec.decode(b"", &mut out);
        assert_eq!(
            progress,
            Ok(Progress {
                consumed: 0,
                done: true
            })
        );
    }

    #[test]
    fn decoded_counts_body_bytes() {
        let mut dec = Decoder::chunked(LIMITS);
        let mut out = Vec::new();
        assert_eq!(dec.decode(b"5\r\nhel", &mut out).map(|p| p.consumed), Ok(6));
        assert_eq!(dec.decoded(), 3);
        assert_eq!(
            dec.decode(b"lo\r\n0\r\n\r\n", &mut out).map(|p| p.done),
            Ok(true)
        );
        assert_eq!(dec.decoded(), 5);
        assert_eq!(out, b"hello");
    }

    /// Every case, split into two pieces at every point, decodes the same as
    /// when fed whole.
    #[test]
    fn split_anywhere() {
        let tables = [(LIMITS, VALID), (LIMITS, INVALID), (TIGHT, LIMITED)];
        for (limits, cases) in tables {
            for (name, input, _) in cases {
                let whole = feed(Decoder::chunked(limits), [*input]);
                for at in 0..=input.len() {
                    let (a, b) = input.split_at(at);
                    let split = feed(Decoder::chunked(limits), [a, b]);
                    assert_eq!(split, whole, "{name}: split at {at}");
                }
            }
        }
    }

    /// A tiny deterministic generator (64-bit LCG), so the test needs no
    /// dependency and always sees the same inputs.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
    }

    /// Chunked-encodes `body` in random chunk sizes, with random hex case,
    /// leading zeros, extensions and trailers.
    fn encode(body: &[u8], rng: &mut Lcg) -> Vec<u8> {
        let mut wire = Vec::new();
        let mut rest = body;
        let size_line = |wire: &mut Vec<u8>, size: usize, rng: &mut Lcg| {
            let zeros = "0".repeat(rng.below(3) as usize);
            let hex = match rng.below(2) {
                0 => format!("{zeros}{size:x}"),
                _ => format!("{zeros}{size:X}"),
            };
            wire.extend_from_slice(hex.as_bytes());
            match rng.below(4) {
                0 => wire.extend_from_slice(b";name"),
                1 => wire.extend_from_slice(b" ; n = v"),
                2 => wire.extend_from_slice(b";q=\"a\\\"b\""),
                _ => {}
            }
            wire.extend_from_slice(b"\r\n");
        };
        while !rest.is_empty() {
            let size = (1 + rng.below(20) as usize).min(rest.len());
            size_line(&mut wire, size, rng);
            wire.extend_from_slice(&rest[..size]);
            wire.extend_from_slice(b"\r\n");
            rest = &rest[size..];
        }
        size_line(&mut wire, 0, rng);
        for i in 0..rng.below(3) {
            wire.extend_from_slice(format!("T{i}: v{i}\r\n").as_bytes());
        }
        wire.extend_from_slice(b"\r\n");
        wire
    }

    #[test]
    fn random_bodies_split_anywhere() {
        let mut rng = Lcg(1);
        for _ in 0..100 {
            let len = rng.below(60) as usize;
            let body: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
            let wire = encode(&body, &mut rng);
            let want = Ok((body.clone(), wire.len(), true));
            assert_eq!(feed(Decoder::chunked(LIMITS), [&wire[..]]), want);
            assert_eq!(feed(Decoder::chunked(LIMITS), wire.chunks(1)), want);
            for at in 0..=wire.len() {
                let (a, b) = wire.split_at(at);
                let got = feed(Decoder::chunked(LIMITS), [a, b]);
                assert_eq!(
                    got,
                    want,
                    "{:?} split at {at}",
                    String::from_utf8_lossy(&wire)
                );
            }
        }
    }
}
