//! Target `upstream_response`: arbitrary upstream bytes into
//! [`ResponseParser`], the proxy's response parser, fed whole, split at two
//! fuzzer-chosen points and one byte at a time. The runs agree (head, body,
//! verdict, bytes left over), the progress rule holds on every call, the
//! bytes held for an incomplete head stay within the head limit, the body
//! is never longer than the input, and a body framed by `Content-Length`
//! is exactly the bytes after the head. The driver, [`drive`], is shared
//! with the parser's table tests in `src/http/upstream.rs`.

use crate::http::upstream::{
    BadResponse, Parsed, ResponseFraming, ResponseHead, ResponseLimits, ResponseParser,
};

/// What feeding a response gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The final head, once parsed.
    pub(crate) head: Option<ResponseHead>,
    /// Interim responses skipped.
    pub(crate) interim: usize,
    pub(crate) body: Vec<u8>,
    /// The response is complete.
    pub(crate) done: bool,
    pub(crate) error: Option<BadResponse>,
    /// Bytes fed after the response was done: not part of it.
    pub(crate) left: usize,
}

/// Feeds `pieces` to a fresh parser the way the proxy's fetch loop does:
/// each piece appended to a buffer, the parser called until it asks for
/// more, consumed bytes dropped. With `eof`, the connection then ends.
/// Checks the progress rule and the buffer bound on every call.
pub(crate) fn drive(
    limits: ResponseLimits,
    head_request: bool,
    pieces: &[&[u8]],
    eof: bool,
) -> Outcome {
    let mut parser = ResponseParser::new(limits, head_request);
    let mut out = Outcome {
        head: None,
        interim: 0,
        body: Vec::new(),
        done: false,
        error: None,
        left: 0,
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    'pieces: for piece in pieces {
        fed += 1;
        buf.extend_from_slice(piece);
        // Each pass consumes a byte, reports an event, or stops: at most
        // twice the buffer's bytes plus the interim limit, plus one.
        for _ in 0..=2 * buf.len() + 2 * crate::http::upstream::MAX_INTERIM + 2 {
            let (n, found) = match parser.parse(&buf, &mut out.body) {
                Ok(r) => r,
                Err(e) => {
                    out.error = Some(e);
                    break 'pieces;
                }
            };
            assert!(n <= buf.len(), "consumed more than it was given");
            buf.drain(..n);
            match found {
                Parsed::NeedMore if n == 0 => {
                    // Only an incomplete head may be left unconsumed, and
                    // only while it is under the limit.
                    assert!(
                        buf.is_empty() || out.done || buf.len() <= limits.max_head_bytes,
                        "progress rule: {} bytes held, nothing consumed",
                        buf.len()
                    );
                    continue 'pieces;
                }
                Parsed::NeedMore => {}
                Parsed::Interim(status) => {
                    assert!((100..200).contains(&status));
                    out.interim += 1;
                }
                Parsed::Head(head) => {
                    assert!(out.head.is_none(), "two final heads");
                    out.head = Some(*head);
                }
                Parsed::Done => {
                    out.done = true;
                    break 'pieces;
                }
            }
        }
        panic!("progress rule: the parser spins");
    }
    if out.done {
        let rest: usize = pieces.iter().skip(fed).map(|p| p.len()).sum();
        out.left = buf.len() + rest;
    }
    if eof && !out.done && out.error.is_none() {
        match parser.eof() {
            Ok(_) => out.done = true,
            Err(e) => out.error = Some(e),
        }
    }
    assert_eq!(out.done, parser.is_done() && out.error.is_none());
    out
}

/// Limits small enough to reach with short inputs.
const SMALL: ResponseLimits = ResponseLimits {
    max_head_bytes: 256,
    max_headers: 8,
};

/// Arbitrary bytes as an upstream's answer: the first byte picks the limits
/// and whether the request was HEAD, the next two where to split.
pub fn upstream_response(data: &[u8]) {
    let (config, a, b) = match data {
        [c, a, b, ..] => (*c, *a, *b),
        _ => return,
    };
    let input = &data[3..];
    let limits = if config & 1 == 0 {
        SMALL
    } else {
        ResponseLimits {
            max_head_bytes: 16 * 1024,
            max_headers: 100,
        }
    };
    let head_request = config & 2 != 0;
    let eof = config & 4 != 0;

    let whole = drive(limits, head_request, &[input], eof);
    let (x, y) = {
        let x = usize::from(a) * input.len() / 256;
        let y = usize::from(b) * input.len() / 256;
        (x.min(y), x.max(y))
    };
    let split = drive(
        limits,
        head_request,
        &[&input[..x], &input[x..y], &input[y..]],
        eof,
    );
    assert_eq!(whole, split, "split at {x} and {y}");
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(
        whole,
        drive(limits, head_request, &bytes, eof),
        "byte by byte"
    );

    assert!(whole.body.len() <= input.len());
    if let (Some(head), true) = (&whole.head, whole.done) {
        if head_request || head.status == 204 || head.status == 304 {
            assert!(whole.body.is_empty());
        }
        if let ResponseFraming::Length(n) = head.framing {
            // The body is the `n` bytes that precede what was left over.
            let end = input.len() - whole.left;
            let start = end - n as usize;
            assert_eq!(whole.body, &input[start..end]);
        }
        if head.framing == ResponseFraming::UntilClose {
            assert!(!head.keep_alive);
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every committed seed of the target, replayed by `cargo test`.
    #[test]
    fn replay_upstream_response() {
        super::super::tests::replay("upstream_response", super::upstream_response);
    }
}
