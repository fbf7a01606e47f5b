//! Reference decoders: RFC 9112 written out as plainly as possible, sharing
//! no code with `src/http/`, for the differential checks.

use super::chunked_limits;
use super::driver::{Ev, Got};
use crate::http::body::MAX_CHUNK_EXT_BYTES;
use crate::http::request::Framing;
use crate::http::{BodyLimits, Limits, Version};

/// Why a reference decoder stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// The input ended first; more may make it complete.
    Incomplete,
    /// The message is rejected with this status.
    Reject(u16),
}

const BAD: Stop = Stop::Reject(400);

/// A position in the input; running off its end is [`Stop::Incomplete`].
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Result<u8, Stop> {
        self.data.get(self.pos).copied().ok_or(Stop::Incomplete)
    }

    fn expect(&mut self, want: u8) -> Result<(), Stop> {
        if self.peek()? != want {
            return Err(BAD);
        }
        self.pos += 1;
        Ok(())
    }
}

pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// HTAB, SP, VCHAR, obs-text: field-value and quoted-string bytes.
fn is_text(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = v {
        if !is_ws(*first) {
            break;
        }
        v = rest;
    }
    while let [rest @ .., last] = v {
        if !is_ws(*last) {
            break;
        }
        v = rest;
    }
    v
}

/// A chunked body (RFC 9112 §7.1) at the start of `data`: its bytes and
/// length on the wire. Strict as our core intends: CRLF only, 1 to 16 hex
/// digits, extensions checked against their grammar and capped at
/// [`MAX_CHUNK_EXT_BYTES`] per body, trailer fields checked like header
/// fields; the body limit applies as soon as a chunk's size is known.
pub(super) fn ref_chunked(data: &[u8], limits: BodyLimits) -> Result<(Vec<u8>, usize), Stop> {
    let mut cur = Cursor { data, pos: 0 };
    let mut body = Vec::new();
    let mut ext_bytes = 0;
    loop {
        let mut size: u64 = 0;
        let mut digits = 0;
        while let Some(d) = (cur.peek()? as char).to_digit(16) {
            if digits == 16 {
                return Err(BAD);
            }
            size = size * 16 + u64::from(d);
            digits += 1;
            cur.pos += 1;
        }
        if digits == 0 || !matches!(cur.peek()?, b' ' | b'\t' | b';' | b'\r') {
            return Err(BAD);
        }
        if (body.len() as u64)
            .checked_add(size)
            .is_none_or(|total| total > limits.max_body_bytes)
        {
            return Err(Stop::Reject(413));
        }
        ref_extensions(&mut cur, &mut ext_bytes)?;
        cur.expect(b'\n')?;
        if size == 0 {
            break;
        }
        if ((data.len() - cur.pos) as u64) < size {
            return Err(Stop::Incomplete);
        }
        body.extend_from_slice(&data[cur.pos..cur.pos + size as usize]);
        cur.pos += size as usize;
        cur.expect(b'\r')?;
        cur.expect(b'\n')?;
    }
    // The trailer section: field lines, then an empty line.
    let mut lines = 0;
    let mut bytes = 0;
    let mut take = |cur: &mut Cursor| {
        cur.pos += 1;
        bytes += 1;
        if bytes > limits.max_trailer_bytes {
            return Err(Stop::Reject(431));
        }
        Ok(())
    };
    loop {
        let b = cur.peek()?;
        if b == b'\r' {
            cur.pos += 1;
            cur.expect(b'\n')?;
            return Ok((body, cur.pos));
        }
        if !is_tchar(b) {
            return Err(BAD);
        }
        lines += 1;
        if lines > limits.max_trailers {
            return Err(Stop::Reject(431));
        }
        while is_tchar(cur.peek()?) {
            take(&mut cur)?;
        }
        if cur.peek()? != b':' {
            return Err(BAD);
        }
        take(&mut cur)?;
        loop {
            let b = cur.peek()?;
            if b == b'\r' {
                break;
            }
            if !is_text(b) {
                return Err(BAD);
            }
            take(&mut cur)?;
        }
        take(&mut cur)?;
        if cur.peek()? != b'\n' {
            return Err(BAD);
        }
        take(&mut cur)?;
    }
}

/// The rest of a chunk-size line after its digits, through its CR:
///
/// ```text
/// chunk-ext     = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
/// chunk-ext-val = token / quoted-string
/// ```
///
/// BWS is allowed only where the grammar puts it, so whitespace before the
/// CR is an error. Every byte before the CR counts against the body's cap.
fn ref_extensions(cur: &mut Cursor, count: &mut usize) -> Result<(), Stop> {
    let mut take = |cur: &mut Cursor| {
        cur.pos += 1;
        *count += 1;
        if *count > MAX_CHUNK_EXT_BYTES {
            return Err(BAD);
        }
        Ok(())
    };
    let mut ws = false;
    loop {
        while is_ws(cur.peek()?) {
            take(cur)?;
            ws = true;
        }
        match cur.peek()? {
            b'\r' if !ws => {
                cur.pos += 1;
                return Ok(());
            }
            b';' => take(cur)?,
            _ => return Err(BAD),
        }
        while is_ws(cur.peek()?) {
            take(cur)?;
        }
        if !is_tchar(cur.peek()?) {
            return Err(BAD);
        }
        while is_tchar(cur.peek()?) {
            take(cur)?;
        }
        ws = false;
        while is_ws(cur.peek()?) {
            take(cur)?;
            ws = true;
        }
        if cur.peek()? != b'=' {
            continue;
        }
        take(cur)?;
        while is_ws(cur.peek()?) {
            take(cur)?;
        }
        match cur.peek()? {
            b'"' => {
                take(cur)?;
                loop {
                    match cur.peek()? {
                        b'"' => break,
                        b'\\' => {
                            take(cur)?;
                            if !is_text(cur.peek()?) {
                                return Err(BAD);
                            }
                        }
                        b if is_text(b) => {}
                        _ => return Err(BAD),
                    }
                    take(cur)?;
                }
                take(cur)?;
            }
            b if is_tchar(b) => {
                while is_tchar(cur.peek()?) {
                    take(cur)?;
                }
            }
            _ => return Err(BAD),
        }
        ws = false;
    }
}

/// One request as the reference decoder frames it.
#[derive(Debug)]
struct RefRequest {
    method: String,
    target: String,
    version: Version,
    body: Vec<u8>,
    keep_alive: bool,
    /// Head and body, in bytes.
    len: usize,
}

/// What the reference decoder makes of a whole input, for comparison with a
/// driver's [`Run`](super::driver::Run): its verdict (each request, then a
/// rejection and a close, a close after a request that does not keep the
/// connection alive, or nothing when more is needed) and where each
/// request ends.
pub(super) fn reference(input: &[u8], limits: Limits) -> (Vec<Ev>, Vec<usize>) {
    let mut events = Vec::new();
    let mut ends = Vec::new();
    let mut pos = 0;
    loop {
        match ref_request(&input[pos..], limits) {
            Err(Stop::Incomplete) => break,
            Err(Stop::Reject(status)) => {
                events.push(Ev::Err(status));
                events.push(Ev::Closed);
                break;
            }
            Ok(r) => {
                pos += r.len;
                ends.push(pos);
                events.push(Ev::Req(Got {
                    method: r.method,
                    target: r.target,
                    version: r.version,
                    body: r.body,
                    keep_alive: r.keep_alive,
                }));
                if !r.keep_alive {
                    events.push(Ev::Closed);
                    break;
                }
            }
        }
    }
    (events, ends)
}

/// The request at the start of `data` (RFC 9112 §2 to §7 and RFC 9110 as
/// our core reads them), written with no shared code and no cleverness:
/// find the head's end, split it into lines, check each line, then decide
/// the framing.
fn ref_request(data: &[u8], limits: Limits) -> Result<RefRequest, Stop> {
    if let Some(status) = line_verdict(data, limits.max_head_bytes) {
        return Err(Stop::Reject(status));
    }
    let Some(head_len) = head_end(data) else {
        return Err(if data.len() > limits.max_head_bytes {
            Stop::Reject(431)
        } else {
            Stop::Incomplete
        });
    };
    if head_len > limits.max_head_bytes {
        return Err(Stop::Reject(431));
    }
    // Empty lines before the request line: each an LF or a CRLF.
    let mut head = &data[..head_len];
    loop {
        match head {
            [b'\n', rest @ ..] | [b'\r', b'\n', rest @ ..] => head = rest,
            [b'\r', ..] => return Err(BAD),
            _ => break,
        }
    }
    // Lines end in LF, or CRLF; any other CR is an error. The last two
    // pieces are the empty line and what follows its LF (nothing).
    let mut lines = Vec::new();
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.contains(&b'\r') {
            return Err(BAD);
        }
        lines.push(line);
    }
    lines.truncate(lines.len() - 2);
    let (request_line, field_lines) = lines.split_first().ok_or(BAD)?;

    // The request line passed `line_verdict`, whole (the head is within
    // the limit): method SP request-target SP HTTP/1.x, single spaces.
    let mut parts = request_line.splitn(3, |&b| b == b' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v)) => (m, t, v),
        _ => return Err(BAD),
    };
    let target = std::str::from_utf8(target).map_err(|_| BAD)?;
    let method = std::str::from_utf8(method).map_err(|_| BAD)?;
    let version = if version == b"HTTP/1.0" {
        Version::Http10
    } else {
        Version::Http11
    };

    // name ":" OWS value OWS; no whitespace before the colon, no obs-fold
    // (a line starting with whitespace has no valid name either).
    if field_lines.len() > limits.max_headers {
        return Err(Stop::Reject(431));
    }
    let mut fields: Vec<(String, &[u8])> = Vec::new();
    for line in field_lines {
        let colon = line.iter().position(|&b| b == b':').ok_or(BAD)?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(BAD);
        }
        if !value.iter().all(|&b| is_text(b)) {
            return Err(BAD);
        }
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        fields.push((name, trim(value)));
    }
    let all = |name: &str| -> Vec<&[u8]> {
        fields
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .collect()
    };
    let items = |name: &str| -> Vec<Vec<u8>> {
        all(name)
            .iter()
            .flat_map(|v| v.split(|&b| b == b','))
            .map(|item| trim(item).to_ascii_lowercase())
            .collect()
    };

    // Exactly one valid Host in HTTP/1.1, at most one in HTTP/1.0; valid
    // is empty, or a host and maybe a port.
    let hosts = all("host");
    match hosts.as_slice() {
        [] if version == Version::Http10 => {}
        [b""] => {}
        [host] if ref_authority(host).is_some_and(|(h, _)| !h.is_empty()) => {}
        _ => return Err(BAD),
    }

    // Framing: Transfer-Encoding, only "chunked", only on HTTP/1.1, never
    // with Content-Length; or Content-Length, all values equal.
    let te = all("transfer-encoding");
    let cl = all("content-length");
    let framing = if !te.is_empty() {
        if !cl.is_empty() || version == Version::Http10 {
            return Err(BAD);
        }
        if items("transfer-encoding") != [b"chunked".to_vec()] {
            return Err(Stop::Reject(501));
        }
        Framing::Chunked
    } else if !cl.is_empty() {
        let mut length = None;
        for item in items("content-length") {
            if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
                return Err(BAD);
            }
            let n: u64 = std::str::from_utf8(&item)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(BAD)?;
            if length.is_some_and(|l| l != n) {
                return Err(BAD);
            }
            length = Some(n);
        }
        Framing::Length(length.unwrap_or(0))
    } else {
        Framing::None
    };

    // Expect: only a single 100-continue.
    let expects = all("expect");
    if !expects.is_empty()
        && (expects.len() > 1 || !expects[0].eq_ignore_ascii_case(b"100-continue"))
    {
        return Err(Stop::Reject(417));
    }

    let connection = items("connection");
    let has = |token: &[u8]| connection.iter().any(|t| t == token);
    let keep_alive = match version {
        Version::Http11 => !has(b"close"),
        Version::Http10 => has(b"keep-alive") && !has(b"close"),
    };

    let rest = &data[head_len..];
    let (body, body_len) = match framing {
        Framing::None => (Vec::new(), 0),
        Framing::Length(n) if n > limits.max_body_bytes => return Err(Stop::Reject(413)),
        Framing::Length(n) if (rest.len() as u64) < n => return Err(Stop::Incomplete),
        Framing::Length(n) => (rest[..n as usize].to_vec(), n as usize),
        Framing::Chunked => ref_chunked(rest, chunked_limits(limits))?,
    };
    Ok(RefRequest {
        method: method.to_owned(),
        target: target.to_owned(),
        version,
        body,
        keep_alive,
        len: head_len + body_len,
    })
}

/// The verdict on the request line at the start of `data`, judging only
/// its first `max` bytes (RFC 9112 §2.2, §2.3 and §3 as our core reads
/// them): the status to refuse it with as soon as no bytes to come could
/// make it valid, or once it is whole and invalid; `None` while it is
/// valid so far, or whole and valid.
///
/// Written the other way round from the core's byte-by-byte scanner: it
/// cuts out the line as far as it has come, splits it at its spaces, and
/// asks of each piece whether it is, or may still become, what the grammar
/// wants there.
pub(super) fn line_verdict(data: &[u8], max: usize) -> Option<u16> {
    let data = &data[..data.len().min(max)];
    // At most ten empty lines, each an LF or a CRLF.
    let mut rest = data;
    for n in 0.. {
        let after = match rest {
            [b'\n', after @ ..] | [b'\r', b'\n', after @ ..] => after,
            [] | [b'\r'] => return None,
            [b'\r', ..] => return Some(400),
            _ => break,
        };
        if n == 10 {
            return Some(400);
        }
        rest = after;
    }
    // The line is judged whole once its LF is in; a CR before it already
    // ends the last piece.
    let lf = rest.iter().position(|&b| b == b'\n');
    let until_lf = &rest[..lf.unwrap_or(rest.len())];
    let line = until_lf.strip_suffix(b"\r").unwrap_or(until_lf);
    if line.contains(&b'\r') {
        return Some(400);
    }
    let ended = lf.is_some() || line.len() < until_lf.len();
    let pieces: Vec<&[u8]> = line.splitn(3, |&b| b == b' ').collect();
    if ended && pieces.len() != 3 {
        return Some(400);
    }
    // Each piece but the last is complete; the last may be cut short.
    let last = pieces.len() - 1;
    for (i, piece) in pieces.iter().enumerate() {
        let cut = !ended && i == last;
        let ok = match i {
            0 => (!piece.is_empty() || cut) && piece.iter().all(|&b| is_tchar(b)),
            1 => (!piece.is_empty() || cut) && ref_target_bytes(piece, cut),
            _ => {
                let shape = b"HTTP/0.0";
                piece.len() <= shape.len()
                    && (cut || piece.len() == shape.len())
                    && piece.iter().zip(shape).all(|(&b, &s)| {
                        if s == b'0' {
                            b.is_ascii_digit()
                        } else {
                            b == s
                        }
                    })
            }
        };
        if !ok {
            return Some(400);
        }
    }
    let (Some(_), &[method, target, version]) = (lf, pieces.as_slice()) else {
        return None;
    };
    if version[5] != b'1' {
        return Some(505);
    }
    ref_target_verdict(method, target)
}

/// Whether `t` holds only bytes some request-target may hold, with each
/// `%` followed by two hex digits (or, when `cut`, by as many as arrived).
fn ref_target_bytes(t: &[u8], cut: bool) -> bool {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?[]".contains(&b);
    // The digits after a `%` are alphanumeric, so allowed anyway.
    t.iter().enumerate().all(|(i, &b)| {
        allowed(b) || b == b'%' && (1..=2).all(|k| t.get(i + k).map_or(cut, u8::is_ascii_hexdigit))
    })
}

/// RFC 9112 §3.2 for a whole line whose bytes are valid: origin-form and
/// absolute-form (http or https) for any method but CONNECT, asterisk-form
/// only for OPTIONS, authority-form only for CONNECT, which is 501.
fn ref_target_verdict(method: &[u8], target: &[u8]) -> Option<u16> {
    let path_ok = |p: &[u8]| {
        p.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b))
    };
    if method == b"CONNECT" {
        return match ref_authority(target) {
            Some((host, Some(port))) if !host.is_empty() && !port.is_empty() => Some(501),
            _ => Some(400),
        };
    }
    if target == b"*" {
        return (method != b"OPTIONS").then_some(400);
    }
    if target.starts_with(b"/") {
        return (!path_ok(target)).then_some(400);
    }
    let lower = target.to_ascii_lowercase();
    let Some(after) = lower
        .strip_prefix(b"http://")
        .or_else(|| lower.strip_prefix(b"https://"))
    else {
        return Some(400);
    };
    // Back to the original bytes, from the same offset.
    let after = &target[target.len() - after.len()..];
    let end = after
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(after.len());
    let ok = match ref_authority(&after[..end]) {
        Some((host, _)) => !host.is_empty() && path_ok(&after[end..]),
        None => false,
    };
    (!ok).then_some(400)
}

/// `host [ ":" port ]` per RFC 3986 §3.2.2 and §3.2.3 (no userinfo): the
/// host and the port, or `None` if either is malformed.
fn ref_authority(a: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let (host, port) = if a.starts_with(b"[") {
        let close = a.iter().position(|&b| b == b']')? + 1;
        let inner = &a[1..close - 1];
        let ipv6 = std::str::from_utf8(inner)
            .ok()
            .and_then(|s| s.parse::<std::net::Ipv6Addr>().ok())
            .is_some();
        let future = match inner {
            [b'v' | b'V', tail @ ..] => match tail.iter().position(|&b| b == b'.') {
                Some(dot) => {
                    dot > 0
                        && tail[..dot].iter().all(u8::is_ascii_hexdigit)
                        && dot + 1 < tail.len()
                        && tail[dot + 1..]
                            .iter()
                            .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:".contains(&b))
                }
                None => false,
            },
            _ => false,
        };
        if !(ipv6 || future) {
            return None;
        }
        a.split_at(close)
    } else {
        let colon = a.iter().position(|&b| b == b':').unwrap_or(a.len());
        let host = &a[..colon];
        let reg_name = host.iter().enumerate().all(|(i, &b)| {
            b.is_ascii_alphanumeric()
                || b"-._~!$&'()*+,;=".contains(&b)
                || (b == b'%'
                    && host.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && host.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        });
        if !reg_name {
            return None;
        }
        a.split_at(colon)
    };
    match port {
        [] => Some((host, None)),
        [b':', digits @ ..] if digits.iter().all(u8::is_ascii_digit) => Some((host, Some(digits))),
        _ => None,
    }
}

/// The length of the head at the start of `data`, found line by line: the
/// empty lines before the request line are skipped (as any CR and LF
/// bytes), and the head ends with the first empty line after it (LF or
/// CRLF). `None` while that line has not arrived.
pub(super) fn head_end(data: &[u8]) -> Option<usize> {
    let lead = data
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let mut line_start = lead;
    for (i, &b) in data.iter().enumerate().skip(lead) {
        if b == b'\n' {
            let line = &data[line_start..i];
            if line_start > lead && (line.is_empty() || line == b"\r") {
                return Some(i + 1);
            }
            line_start = i + 1;
        }
    }
    None
}
