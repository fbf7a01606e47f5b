//! Reading what the connection loop wrote, as a strict HTTP/1.1 client
//! would, to check it response by response.

use super::reference::is_tchar;
use crate::http::response::reason;

/// A parsed response: its status, whether it closes, its `X-Seq`, its body
/// and its length on the wire.
#[derive(Debug)]
pub(super) struct Parsed {
    pub(super) status: u16,
    pub(super) close: bool,
    pub(super) seq: Option<usize>,
    /// It carries a `Retry-After` field.
    pub(super) retry_after: bool,
    pub(super) body: Vec<u8>,
    /// The body is delimited by the end of the connection.
    pub(super) until_close: bool,
    pub(super) len: usize,
}

/// Parses the response at the start of `out` as an HTTP/1.1 client would,
/// strictly: `Ok(None)` if it is cut short, `Err` if it is malformed.
pub(super) fn parse_response(out: &[u8], head_only: bool) -> Result<Option<Parsed>, String> {
    let Some(head_len) = out.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4) else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&out[..head_len - 4]).map_err(|_| "head not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    if status_line != format!("HTTP/1.1 {status} {}", reason(status)) {
        return Err(format!("bad status line {status_line:?}"));
    }
    let mut close = false;
    let mut seq = None;
    let mut retry_after = false;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line
            .split_once(": ")
            .ok_or_else(|| format!("bad field {line:?}"))?;
        if name.is_empty()
            || !name.bytes().all(is_tchar)
            || value.bytes().any(|b| b < 0x20 && b != b'\t')
        {
            return Err(format!("bad field {line:?}"));
        }
        match name.to_ascii_lowercase().as_str() {
            "connection" if value == "close" => close = true,
            "connection" if value == "keep-alive" => {}
            "connection" => return Err(format!("Connection: {value}")),
            "x-seq" => seq = value.parse().ok(),
            "retry-after" => retry_after = true,
            "content-length" if length.is_none() => {
                length = Some(value.parse::<usize>().map_err(|_| "bad Content-Length")?);
            }
            "transfer-encoding" if value == "chunked" && !chunked => chunked = true,
            "content-length" | "transfer-encoding" => {
                return Err(format!("framing field {line:?}"))
            }
            _ => {}
        }
    }
    if chunked && length.is_some() {
        return Err("both Content-Length and chunked".into());
    }
    let rest = &out[head_len..];
    let no_body = head_only || (100..200).contains(&status) || status == 204 || status == 304;
    let (body, body_len) = if no_body {
        (Vec::new(), 0)
    } else if chunked {
        let mut body = Vec::new();
        let mut at = 0;
        loop {
            let Some(eol) = rest[at..].windows(2).position(|w| w == b"\r\n") else {
                return Ok(None);
            };
            let size_hex =
                std::str::from_utf8(&rest[at..at + eol]).map_err(|_| "bad chunk size")?;
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| format!("chunk size {size_hex:?}"))?;
            at += eol + 2;
            if rest.len() < at + size + 2 {
                return Ok(None);
            }
            if size == 0 {
                if &rest[at..at + 2] != b"\r\n" {
                    return Err("no final CRLF".into());
                }
                break (body, at + 2);
            }
            body.extend_from_slice(&rest[at..at + size]);
            if &rest[at + size..at + size + 2] != b"\r\n" {
                return Err("no CRLF after chunk".into());
            }
            at += size + 2;
        }
    } else if let Some(n) = length {
        if rest.len() < n {
            return Ok(None);
        }
        (rest[..n].to_vec(), n)
    } else {
        // Close-delimited: everything that follows, and the connection ends.
        if !close {
            return Err("no framing, yet the connection persists".into());
        }
        (rest.to_vec(), rest.len())
    };
    Ok(Some(Parsed {
        status,
        close,
        seq,
        retry_after,
        body,
        until_close: !no_body && !chunked && length.is_none(),
        len: head_len + body_len,
    }))
}
