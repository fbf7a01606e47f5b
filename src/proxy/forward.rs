//! What crosses the proxy, rebuilt field by field: the request sent
//! upstream, from the parsed request, and the response sent back, from the
//! parsed upstream head. Never raw bytes, so nothing a client or an
//! upstream sends can frame the other side's message. Pure.
//!
//! Hop-by-hop fields (RFC 9110 §7.6.1) end here in both directions:
//! `Connection` and every field it names, `Keep-Alive`, `Proxy-Connection`,
//! `TE`, `Trailer`, `Transfer-Encoding` and `Upgrade`; framing is the
//! serializer's. `X-Forwarded-For`, `-Proto`, `-Host` and `Via` are added
//! after that removal, so a client cannot strip them by naming them in
//! `Connection` (the trick that defeats proxies which add first and strip
//! after).

use std::net::SocketAddr;

use crate::http::request::Version;
use crate::http::{Headers, Request, Response};

/// What corral calls itself in `Via` (RFC 9110 §7.6.3: a pseudonym may
/// stand for the host).
pub const VIA: &str = "1.1 corral";

/// Fields that end at the proxy whatever `Connection` says, in lower case.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether `name` ends at this hop, given the message's `Connection`
/// fields.
pub fn is_hop_by_hop(name: &str, headers: &Headers) -> bool {
    let lower = name.to_ascii_lowercase();
    HOP_BY_HOP.contains(&lower.as_str()) || headers.has_token("connection", &lower)
}

/// Methods whose requests may be sent again after a failure (RFC 9110
/// §9.2.2).
pub fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

/// Whether the request asks for a WebSocket, which corral does not proxy.
/// Other upgrades (`h2c`) are ignored as RFC 9110 §7.8 allows: the request
/// goes on as plain HTTP/1.1 without its `Upgrade`.
pub fn wants_websocket(req: &Request) -> bool {
    req.headers().has_token("upgrade", "websocket")
}

/// The request as it goes upstream: `method` (the client's, or GET for a
/// HEAD that fills the cache), the target in origin form, `Host` kept, the
/// hop-by-hop fields gone, the forwarding fields added, `extra` fields
/// (validators of a revalidation) appended, the body with its length. A
/// `fill` for the cache leaves out the client's conditionals and ranges:
/// the response must be the whole one, for everyone.
pub fn request_bytes(req: &Request, method: &str, extra: &[(&str, &str)], fill: bool) -> Vec<u8> {
    let headers = req.headers();
    let mut out = Vec::with_capacity(512 + req.body().len());
    // RFC 9112 §3.2.1: origin-form to an origin server, whatever form the
    // client used; the path itself is passed unchanged.
    let target = match req.query_string() {
        Some(q) => format!("{}?{q}", req.path()),
        None => req.path().to_owned(),
    };
    push_line(&mut out, &format!("{method} {target} HTTP/1.1"));
    // RFC 9112 §3.2.2: for an absolute-form target the authority in it
    // replaces Host; an HTTP/1.0 request may have none at all.
    let host = authority(req.target())
        .or_else(|| req.header("host"))
        .unwrap_or("");
    push_field(&mut out, "Host", host.as_bytes());
    let mut forwarded_for: Vec<u8> = Vec::new();
    let mut via: Vec<u8> = Vec::new();
    for (name, value) in headers.iter() {
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            // Rebuilt below, or decided by us.
            "host" | "content-length" | "expect" | "x-forwarded-proto" | "x-forwarded-host" => {}
            _ if is_hop_by_hop(&lower, headers) => {}
            // Listed once, in order, with our hop appended.
            "x-forwarded-for" => append_list(&mut forwarded_for, value),
            "via" => append_list(&mut via, value),
            "if-none-match"
            | "if-modified-since"
            | "if-match"
            | "if-unmodified-since"
            | "if-range"
            | "range"
                if fill => {}
            _ => push_field(&mut out, name, value),
        }
    }
    if let Some(peer) = req.peer_addr() {
        append_list(&mut forwarded_for, peer.ip().to_string().as_bytes());
    }
    if !forwarded_for.is_empty() {
        push_field(&mut out, "X-Forwarded-For", &forwarded_for);
    }
    // corral speaks no TLS: whatever a client claims, this hop was http.
    push_field(&mut out, "X-Forwarded-Proto", b"http");
    if !host.is_empty() {
        push_field(&mut out, "X-Forwarded-Host", host.as_bytes());
    }
    let version = match req.version() {
        Version::Http10 => "1.0 corral",
        Version::Http11 => VIA,
    };
    append_list(&mut via, version.as_bytes());
    push_field(&mut out, "Via", &via);
    for (name, value) in extra {
        push_field(&mut out, name, value.as_bytes());
    }
    let body = req.body();
    // RFC 9110 §8.6: a length for every body, and for methods that
    // expect one even when it is empty.
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        push_field(
            &mut out,
            "Content-Length",
            body.len().to_string().as_bytes(),
        );
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// The authority of an absolute-form target, if it is one.
fn authority(target: &str) -> Option<&str> {
    if target.starts_with('/') {
        return None;
    }
    let rest = target.split_once("://")?.1;
    Some(rest.split(['/', '?']).next().unwrap_or(rest))
}

fn push_line(out: &mut Vec<u8>, line: &str) {
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn push_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn append_list(list: &mut Vec<u8>, item: &[u8]) {
    if item.is_empty() {
        return;
    }
    if !list.is_empty() {
        list.extend_from_slice(b", ");
    }
    list.extend_from_slice(item);
}

/// The end-to-end fields of an upstream response, for the client: the
/// hop-by-hop ones dropped (the client's connection is ours, not the
/// upstream's), and `skip` too.
pub fn response_fields<'a>(
    headers: &'a Headers,
    skip: &'a [&'a str],
) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
    headers.iter().filter_map(move |(name, value)| {
        let keep = !is_hop_by_hop(name, headers)
            && !name.eq_ignore_ascii_case("content-length")
            && !skip.iter().any(|s| name.eq_ignore_ascii_case(s));
        // Values the serializer would refuse (not UTF-8) are dropped here,
        // as `Response::add_header` drops invalid ones.
        keep.then(|| std::str::from_utf8(value).ok().map(|v| (name, v)))
            .flatten()
    })
}

/// A response to the client built from an upstream's status and fields,
/// with `Via` appended.
pub fn response(status: u16, headers: &Headers, skip: &[&str]) -> Response {
    let mut resp = Response::new(status);
    let mut upstream_via = None;
    for (name, value) in response_fields(headers, skip) {
        if name.eq_ignore_ascii_case("via") {
            upstream_via = Some(value);
            continue;
        }
        resp.add_header(name, value);
    }
    resp.add_header("Via", &via_after(upstream_via));
    resp
}

/// The `Via` to send: the upstream's, if it sent one, with ours appended
/// (RFC 9110 §7.6.3).
pub fn via_after(upstream: Option<&str>) -> String {
    match upstream.filter(|v| !v.is_empty()) {
        Some(v) => format!("{v}, {VIA}"),
        None => VIA.to_owned(),
    }
}

/// The client's address as text, for logs.
pub fn peer_text(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "-".to_owned(), |p| p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::{parse_head, HeadLimits};

    fn request(wire: &str, peer: Option<&str>) -> Request {
        let head = parse_head(wire.as_bytes(), HeadLimits { max_headers: 50 }).unwrap();
        Request::new(head, Vec::new(), peer.map(|p| p.parse().unwrap()))
    }

    fn text(req: &Request, method: &str) -> String {
        String::from_utf8(request_bytes(req, method, &[], false)).unwrap()
    }

    #[test]
    fn hop_by_hop_fields_go_and_forwarding_fields_come_after() {
        let req = request(
            "GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\n\
             Connection: keep-alive, X-Forwarded-For, Via, X-Secret\r\n\
             X-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nUpgrade: h2c\r\n\
             Proxy-Connection: keep-alive\r\nX-Forwarded-For: 6.6.6.6\r\n\
             X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n\
             Via: 1.0 fred\r\nAccept: */*\r\n\r\n",
            Some("10.0.0.7:5555"),
        );
        let out = text(&req, "GET");
        assert!(
            out.starts_with("GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\n"),
            "{out}"
        );
        for gone in [
            "Connection",
            "X-Secret",
            "Keep-Alive",
            "TE:",
            "Upgrade",
            "Proxy-Connection",
            "6.6.6.6",
            "https",
            "evil",
            "fred",
        ] {
            assert!(!out.contains(gone), "{gone} still in {out}");
        }
        for kept in [
            "Accept: */*\r\n",
            "X-Forwarded-For: 10.0.0.7\r\n",
            "X-Forwarded-Proto: http\r\n",
            "X-Forwarded-Host: example.com\r\n",
            "Via: 1.1 corral\r\n",
        ] {
            assert!(out.contains(kept), "{kept} missing from {out}");
        }
        assert!(out.ends_with("\r\n\r\n") && !out.contains("Content-Length"));
    }

    #[test]
    fn forwarding_lists_are_appended_to() {
        let req = request(
            "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\n\
             X-Forwarded-For: 2.2.2.2\r\nVia: 1.1 edge\r\n\r\n",
            Some("[::1]:9"),
        );
        let out = text(&req, "GET");
        assert!(
            out.contains("X-Forwarded-For: 1.1.1.1, 2.2.2.2, ::1\r\n"),
            "{out}"
        );
        assert!(out.contains("Via: 1.1 edge, 1.1 corral\r\n"), "{out}");
    }

    #[test]
    fn absolute_form_becomes_origin_form_and_bodies_get_a_length() {
        let mut head = parse_head(
            b"POST http://upstream.example/p?q HTTP/1.1\r\nHost: other\r\n\
              Content-Length: 3\r\nExpect: 100-continue\r\n\r\n",
            HeadLimits { max_headers: 50 },
        )
        .unwrap();
        head.expect_continue = false;
        let req = Request::new(head, b"abc".to_vec(), None);
        let out = text(&req, "POST");
        assert!(
            out.starts_with("POST /p?q HTTP/1.1\r\nHost: upstream.example\r\n"),
            "{out}"
        );
        assert!(out.ends_with("Content-Length: 3\r\n\r\nabc"), "{out}");
        assert!(!out.contains("Expect") && !out.contains("X-Forwarded-For"));
        let empty = request(
            "PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
            None,
        );
        assert!(text(&empty, "PUT").ends_with("Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn a_revalidation_sends_our_validators_not_the_clients() {
        let req = request(
            "GET / HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"client\"\r\n\r\n",
            None,
        );
        let out = String::from_utf8(request_bytes(
            &req,
            "GET",
            &[("If-None-Match", "\"ours\"")],
            true,
        ))
        .unwrap();
        assert!(
            out.contains("If-None-Match: \"ours\"") && !out.contains("client"),
            "{out}"
        );
    }

    #[test]
    fn responses_lose_hop_by_hop_fields_and_gain_via() {
        let mut h = Headers::new();
        for (n, v) in [
            ("Content-Type", "text/plain"),
            ("Connection", "close, X-Internal"),
            ("X-Internal", "1"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Length", "5"),
            ("Keep-Alive", "timeout=5"),
            ("Via", "1.0 app"),
            ("Set-Cookie", "a=1"),
        ] {
            h.push(n, v.as_bytes());
        }
        let resp = response(200, &h, &["set-cookie"]);
        let names: Vec<&str> = resp.headers().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["Content-Type", "Via"]);
        assert_eq!(resp.header("via"), Some("1.0 app, 1.1 corral"));
        assert!(
            !resp.wants_close(),
            "the upstream's close is not the client's"
        );
    }
}
