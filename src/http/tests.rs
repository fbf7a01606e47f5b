//! [`Conn`] driven through its public API, the way `conn.rs` drives it:
//! tables of request bytes and the events they must produce.
//!
//! Every case runs three ways that must agree: the whole input in one read,
//! one byte per read, and with a pipelined request appended (which must be
//! delivered too if the connection persists, and must change nothing if it
//! does not). The driver is the fuzz targets' own (`crate::fuzzing::driver`),
//! so both check the progress rule after every poll.
//! Limits are tiny so that limit cases stay short.

use super::*;
use crate::fuzzing::driver::{drive, Ev, Got, Plain, Policy, Run};

const LIMITS: Limits = Limits {
    max_head_bytes: 256,
    max_headers: 8,
    max_body_bytes: 64,
};

/// Appended to every case in the third run.
const NEXT: &str = "GET /next HTTP/1.1\r\nHost: x\r\n\r\n";

// Builders for the tables' expectations.
impl Got {
    fn body(mut self, body: &str) -> Got {
        self.body = body.into();
        self
    }

    /// HTTP/1.0, which closes by default.
    fn v10(mut self) -> Got {
        self.version = Version::Http10;
        self.keep_alive = false;
        self
    }

    fn keep_alive(mut self, keep_alive: bool) -> Got {
        self.keep_alive = keep_alive;
        self
    }
}

/// An HTTP/1.1 request with no body that keeps the connection open.
fn req(method: &str, target: &str) -> Got {
    Got {
        method: method.to_owned(),
        target: target.to_owned(),
        version: Version::Http11,
        body: Vec::new(),
        keep_alive: true,
    }
}

fn get(target: &str) -> Got {
    req("GET", target)
}

struct Case {
    name: &'static str,
    input: Vec<u8>,
    want: Vec<Got>,
    err: Option<u16>,
}

/// `input` yields exactly the requests `want`.
fn ok(name: &'static str, input: impl AsRef<[u8]>, want: Vec<Got>) -> Case {
    Case {
        name,
        input: input.as_ref().to_vec(),
        want,
        err: None,
    }
}

/// `input` is answered with `status` before any request is delivered.
fn bad(name: &'static str, input: impl AsRef<[u8]>, status: u16) -> Case {
    bad_after(name, input, vec![], status)
}

/// `input` yields the requests `want`, then an error with `status`.
fn bad_after(name: &'static str, input: impl AsRef<[u8]>, want: Vec<Got>, status: u16) -> Case {
    Case {
        name,
        input: input.as_ref().to_vec(),
        want,
        err: Some(status),
    }
}

/// Refuses every body announced with `100-continue`.
struct RejectBodies;

impl Policy for RejectBodies {
    fn wants_body(&mut self, _head: &Head) -> bool {
        false
    }
}

fn whole(input: &[u8]) -> Run {
    drive(LIMITS, &[input], &mut Plain)
}

fn bytewise(input: &[u8]) -> Run {
    drive(LIMITS, &input.chunks(1).collect::<Vec<_>>(), &mut Plain)
}

/// Runs each case whole, one byte at a time, and with [`NEXT`] appended
/// (both ways again), and checks that all of them give the expected events.
fn check(cases: &[Case]) {
    for case in cases {
        let name = case.name;
        let mut want: Vec<Ev> = case.want.iter().cloned().map(Ev::Req).collect();
        want.extend(case.err.map(Ev::Err));
        let persists = case.err.is_none() && case.want.last().is_none_or(|g| g.keep_alive);
        if !persists {
            want.push(Ev::Closed);
        }

        let one = whole(&case.input);
        let each = bytewise(&case.input);
        assert_eq!(one.verdict(), want, "{name}: whole");
        assert_eq!(each.verdict(), want, "{name}: one byte at a time");
        if case.err.is_none() {
            assert_eq!(one.buffered, each.buffered, "{name}: bytes left over");
        }
        if persists {
            assert_eq!(one.buffered, 0, "{name}: the case must be complete");
        }

        let mut input = case.input.clone();
        input.extend_from_slice(NEXT.as_bytes());
        if persists {
            want.push(Ev::Req(get("/next")));
        }
        for (how, run) in [("whole", whole(&input)), ("byte", bytewise(&input))] {
            assert_eq!(
                run.verdict(),
                want,
                "{name}: with a request appended, {how}"
            );
            if case.err.is_none() {
                // Unread after a close, or all consumed if the connection persists.
                let left = if persists {
                    0
                } else {
                    one.buffered + NEXT.len()
                };
                assert_eq!(
                    run.buffered, left,
                    "{name}: appended, {how}: bytes left over"
                );
            }
        }
    }
}

/// A head of exactly `len` bytes: a GET with a padding field.
fn head_of_len(len: usize) -> String {
    let start = "GET / HTTP/1.1\r\nHost: a\r\nX: ";
    let end = "\r\n\r\n";
    let pad = len - start.len() - end.len();
    format!("{start}{}{end}", "p".repeat(pad))
}

/// A request line of `len` bytes, CRLF included.
fn line_of_len(len: usize) -> String {
    let start = "GET /";
    let end = " HTTP/1.1\r\n";
    format!("{start}{}{end}", "a".repeat(len - start.len() - end.len()))
}

fn post(body: &str) -> Got {
    req("POST", "/").body(body)
}

#[test]
fn request_line() {
    check(&[
        ok(
            "origin-form",
            "GET /a/b?c=d HTTP/1.1\r\nHost: a\r\n\r\n",
            vec![get("/a/b?c=d")],
        ),
        ok(
            "other method",
            "DELETE /x HTTP/1.1\r\nHost: a\r\n\r\n",
            vec![req("DELETE", "/x")],
        ),
        ok(
            "extension method",
            "PURGE /x HTTP/1.1\r\nHost: a\r\n\r\n",
            vec![req("PURGE", "/x")],
        ),
        ok(
            "absolute-form",
            "GET http://example.com/a?b HTTP/1.1\r\nHost: example.com\r\n\r\n",
            vec![get("http://example.com/a?b")],
        ),
        ok(
            "absolute-form, no path",
            "GET https://example.com:8443 HTTP/1.1\r\nHost: a\r\n\r\n",
            vec![get("https://example.com:8443")],
        ),
        ok(
            "asterisk-form for OPTIONS",
            "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            vec![req("OPTIONS", "*")],
        ),
        bad(
            "asterisk-form for GET",
            "GET * HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        bad(
            "CONNECT with authority-form",
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            501,
        ),
        bad(
            "authority-form for GET",
            "GET example.com:443 HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        bad(
            "relative target",
            "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        bad(
            "absolute-form, other scheme",
            "GET ftp://a/b HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        bad(
            "absolute-form, no authority",
            "GET http:///a HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        bad(
            "absolute-form, bad authority",
            "GET http://a\\b/ HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        bad("two spaces", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        bad("no method", " / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        bad(
            "bare CR ends the line",
            "GET / HTTP/1.1\rHost: a\r\n\r\n",
            400,
        ),
    ]);
}

#[test]
fn absolute_form_path_and_query() {
    let run = whole(b"GET http://example.com/a?b HTTP/1.1\r\nHost: example.com\r\n\r\n");
    assert_eq!(run.requests[0].path(), "/a");
    assert_eq!(run.requests[0].query_string(), Some("b"));
    let run = whole(b"GET https://example.com:8443 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(run.requests[0].path(), "/");
    assert_eq!(run.requests[0].query_string(), None);
    let run = whole(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(run.requests[0].path(), "*");
}

#[test]
fn versions() {
    check(&[
        ok(
            "HTTP/1.1",
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            vec![get("/")],
        ),
        ok("HTTP/1.0", "GET / HTTP/1.0\r\n\r\n", vec![get("/").v10()]),
        bad("HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        bad("HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
        bad("HTTP/0.9", "GET / HTTP/0.9\r\n\r\n", 505),
        bad("HTTP/3", "GET / HTTP/3\r\n\r\n", 505),
        // No version at all (an HTTP/0.9 request line): httparse reports a
        // bad token, not a bad version.
        bad("HTTP/0.9-style line", "GET /\r\n\r\n", 400),
        // httparse matches 8 bytes, then wants the line to end.
        bad("HTTP/1.10", "GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400),
    ]);
}

#[test]
fn content_length() {
    let cl = |v: &str, body: &str| {
        format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {v}\r\n\r\n{body}")
    };
    check(&[
        ok("body", cl("5", "hello"), vec![post("hello")]),
        ok("zero", cl("0", ""), vec![post("")]),
        ok("leading zeros", cl("005", "hello"), vec![post("hello")]),
        ok("identical list", cl("5, 5", "hello"), vec![post("hello")]),
        ok(
            "identical lines",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            vec![post("hello")],
        ),
        bad(
            "differing lines",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            400,
        ),
        bad("differing list", cl("5, 6", "hello!"), 400),
        bad("plus sign", cl("+5", "hello"), 400),
        bad("minus sign", cl("-5", "hello"), 400),
        bad("space inside", cl("5 5", "hello"), 400),
        bad("hex", cl("0x5", "hello"), 400),
        bad("trailing junk", cl("5a", "hello"), 400),
        bad("empty", cl("", ""), 400),
        bad("empty list item", cl("5,", "hello"), 400),
        bad("20 digits", cl("99999999999999999999", ""), 400),
        bad(
            "with Transfer-Encoding",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            400,
        ),
        bad(
            "after Transfer-Encoding",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            400,
        ),
    ]);
}

#[test]
fn transfer_encoding() {
    let te = |v: &str, body: &str| {
        format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {v}\r\n\r\n{body}")
    };
    check(&[
        ok("chunked", te("chunked", "5\r\nhello\r\n0\r\n\r\n"), vec![post("hello")]),
        ok("any case", te("ChUnKeD", "5\r\nhello\r\n0\r\n\r\n"), vec![post("hello")]),
        ok(
            "chunks and trailer",
            te("chunked", "2\r\nhe\r\n3;x=y\r\nllo\r\n0\r\nT: v\r\n\r\n"),
            vec![post("hello")],
        ),
        bad("gzip", te("gzip", ""), 501),
        bad("chunked, gzip", te("chunked, gzip", ""), 501),
        bad("gzip, chunked", te("gzip, chunked", "5\r\nhello\r\n0\r\n\r\n"), 501),
        bad("identity", te("identity", ""), 501),
        bad("chunked twice", te("chunked, chunked", "0\r\n\r\n"), 501),
        bad(
            "second line",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            501,
        ),
        bad(
            "on HTTP/1.0",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            400,
        ),
        bad("bad chunk size", te("chunked", "x\r\n"), 400),
    ]);
}

#[test]
fn field_lines() {
    check(&[
        ok("OWS around value", "GET / HTTP/1.1\r\nHost: \t a \t\r\n\r\n", vec![get("/")]),
        bad("obs-fold with SP", "GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n", 400),
        bad("obs-fold with HTAB", "GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n\tc\r\n\r\n", 400),
        bad("space before first field", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400),
        bad("space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
        bad("tab before colon", "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 400),
        bad("no colon", "GET / HTTP/1.1\r\nHost: a\r\nX\r\n\r\n", 400),
        bad("empty name", "GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", 400),
        bad("SOH in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", 400),
        bad("NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
        bad("DEL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", 400),
        // Long enough for httparse's SIMD scan, which handles 16 or 32 bytes at once.
        bad(
            "NUL in a long value",
            "GET / HTTP/1.1\r\nHost: a\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\x00aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n",
            400,
        ),
        bad(
            "DEL in a long value",
            "GET / HTTP/1.1\r\nHost: a\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\x7faaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n",
            400,
        ),
        ok("HTAB and obs-text in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\tb\u{e9}\r\n\r\n", vec![get("/")]),
        bad("bare CR in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
        bad("SOH in name", "GET / HTTP/1.1\r\nHost: a\r\nX\x01: b\r\n\r\n", 400),
        bad("NUL in name", "GET / HTTP/1.1\r\nHost: a\r\nX\x00: b\r\n\r\n", 400),
        bad("DEL in name", "GET / HTTP/1.1\r\nHost: a\r\nX\x7f: b\r\n\r\n", 400),
    ]);
}

#[test]
fn host() {
    check(&[
        ok(
            "with port",
            "GET / HTTP/1.1\r\nHost: a.example:8080\r\n\r\n",
            vec![get("/")],
        ),
        ok(
            "IPv6 literal",
            "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
            vec![get("/")],
        ),
        ok(
            "missing on HTTP/1.0",
            "GET / HTTP/1.0\r\n\r\n",
            vec![get("/").v10()],
        ),
        bad("missing on HTTP/1.1", "GET / HTTP/1.1\r\n\r\n", 400),
        bad(
            "repeated",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            400,
        ),
        bad(
            "repeated, same value",
            "GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n",
            400,
        ),
        bad(
            "repeated on HTTP/1.0",
            "GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n",
            400,
        ),
        bad("space inside", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
        bad("slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
        bad(
            "invalid on HTTP/1.0",
            "GET / HTTP/1.0\r\nHost: a/b\r\n\r\n",
            400,
        ),
    ]);
}

#[test]
fn head_limits() {
    let fields = |n: usize| {
        let mut s = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 1..n {
            s.push_str(&format!("X-{i}: v\r\n"));
        }
        s + "\r\n"
    };
    check(&[
        ok("head at the limit", head_of_len(256), vec![get("/")]),
        bad("head over the limit", head_of_len(257), 431),
        // The request line, CRLF included, fills the limit; the head is over.
        bad(
            "request line at the limit",
            line_of_len(256) + "Host: a\r\n\r\n",
            431,
        ),
        bad(
            "request line one over",
            line_of_len(257) + "Host: a\r\n\r\n",
            414,
        ),
        bad(
            "request line over the limit",
            line_of_len(300) + "Host: a\r\n\r\n",
            414,
        ),
        bad(
            "target over the limit, line unfinished",
            line_of_len(300).trim_end(),
            414,
        ),
        ok("fields at the limit", fields(8), vec![get("/")]),
        bad("too many fields", fields(9), 431),
        // Empty lines before the request line count against the limit, and
        // the verdict must not depend on how the bytes arrive (found by the
        // request_head fuzz target): the line ends within the first 256
        // bytes, so 431 whole and byte by byte alike.
        bad(
            "empty lines then a long line",
            "\r\n".repeat(60) + &line_of_len(130) + "Host: a\r\n\r\n",
            431,
        ),
        bad(
            "empty lines push the line end past the limit",
            "\r\n".repeat(70) + &line_of_len(130) + "Host: a\r\n\r\n",
            414,
        ),
    ]);
}

#[test]
fn body_limits() {
    let body = "b".repeat(64);
    check(&[
        ok(
            "Content-Length at the limit",
            format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 64\r\n\r\n{body}"),
            vec![post(&body)],
        ),
        // 413 as soon as the head is in: no body byte is needed (or read).
        bad("Content-Length over the limit", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 65\r\n\r\n", 413),
        bad(
            "Content-Length over the limit, with 100-continue",
            "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 65\r\n\r\n",
            413,
        ),
        ok(
            "chunked at the limit",
            format!(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n{}\r\n20\r\n{}\r\n0\r\n\r\n",
                &body[..32],
                &body[32..]
            ),
            vec![post(&body)],
        ),
        bad(
            "one chunk over the limit",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n",
            413,
        ),
        bad(
            "chunks over the limit",
            format!(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n{body}\r\n1\r\nb\r\n0\r\n\r\n"
            ),
            413,
        ),
    ]);
}

#[test]
fn content_length_over_limit_reads_no_body() {
    let head = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 65\r\n\r\n";
    let input = format!("{head}{}", "b".repeat(65));
    let run = whole(input.as_bytes());
    assert_eq!(run.verdict(), [Ev::Err(413), Ev::Closed]);
    assert_eq!(run.buffered, 65, "the body must stay unread");
}

#[test]
fn keep_alive() {
    check(&[
        ok(
            "HTTP/1.1 default",
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            vec![get("/")],
        ),
        ok(
            "HTTP/1.1 close",
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            vec![get("/").keep_alive(false)],
        ),
        ok(
            "HTTP/1.1 close, any case, in a list",
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade, Close\r\n\r\n",
            vec![get("/").keep_alive(false)],
        ),
        ok(
            "HTTP/1.1 close on a second line",
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: te\r\nConnection: close\r\n\r\n",
            vec![get("/").keep_alive(false)],
        ),
        ok(
            "HTTP/1.0 default",
            "GET / HTTP/1.0\r\n\r\n",
            vec![get("/").v10()],
        ),
        ok(
            "HTTP/1.0 keep-alive",
            "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
            vec![get("/").v10().keep_alive(true)],
        ),
        ok(
            "HTTP/1.0 keep-alive and close",
            "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
            vec![get("/").v10()],
        ),
    ]);
}

#[test]
fn pipelining() {
    check(&[
        ok(
            "three requests, CL and chunked",
            "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n\
             POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
             POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nworld\r\n0\r\n\r\n",
            vec![get("/1"), req("POST", "/2").body("hello"), req("POST", "/3").body("world")],
        ),
        ok(
            "chunked first, HTTP/1.0 keep-alive between",
            "POST /1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
             GET /2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n\
             POST /3 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyz",
            vec![
                req("POST", "/1").body("abc"),
                get("/2").v10().keep_alive(true),
                req("POST", "/3").body("xyz"),
            ],
        ),
        ok(
            "nothing is read after close",
            "GET /1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
            vec![get("/1").keep_alive(false)],
        ),
        bad_after(
            "an error after a good request",
            "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
            vec![get("/1")],
            400,
        ),
        bad_after(
            "an error in a body after a good request",
            "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n\
             POST /2 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nX",
            vec![get("/1")],
            400,
        ),
    ]);
}

#[test]
fn line_endings() {
    check(&[
        ok(
            "one leading CRLF",
            "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            vec![get("/")],
        ),
        ok(
            "one leading LF",
            "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            vec![get("/")],
        ),
        ok("bare LF", "GET / HTTP/1.1\nHost: a\n\n", vec![get("/")]),
        ok(
            "bare LF, body",
            "POST / HTTP/1.1\nHost: a\nContent-Length: 2\n\nhi",
            vec![post("hi")],
        ),
        ok("mixed", "GET / HTTP/1.1\nHost: a\r\n\n", vec![get("/")]),
        ok(
            "leading CRLF before a pipelined request",
            "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
            vec![get("/1"), get("/2")],
        ),
    ]);
}

/// Several empty lines before a request line: whole, they are skipped.
#[test]
fn leading_empty_lines_whole() {
    for input in [
        "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "\n\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        assert_eq!(
            whole(input.as_bytes()).verdict(),
            [Ev::Req(get("/"))],
            "{input:?}"
        );
    }
}

/// The same, split: a read that ends inside the empty lines must not make
/// the next empty line look like the end of an (empty) head.
#[test]
fn leading_empty_lines() {
    check(&[
        ok("two leading CRLFs", "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", vec![get("/")]),
        ok("three leading LFs", "\n\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", vec![get("/")]),
        ok(
            "two empty lines after a body",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            vec![post("hi"), get("/")],
        ),
    ]);
    let split: &[&[u8]] = &[b"\r", b"\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"];
    assert_eq!(drive(LIMITS, split, &mut Plain).events, [Ev::Req(get("/"))]);
}

const EXPECT_CL: &str =
    "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
const EXPECT_CHUNKED: &str =
    "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nTransfer-Encoding: chunked\r\n\r\n";

#[test]
fn expect() {
    check(&[
        ok(
            "100-continue, body",
            format!("{EXPECT_CL}hello"),
            vec![post("hello")],
        ),
        ok(
            "100-continue, chunked",
            format!("{EXPECT_CHUNKED}2\r\nhi\r\n0\r\n\r\n"),
            vec![post("hi")],
        ),
        ok(
            "100-continue, no body",
            "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
            vec![get("/")],
        ),
        ok(
            "100-continue on HTTP/1.0",
            "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
            vec![post("hello").v10()],
        ),
        bad(
            "other expectation",
            "GET / HTTP/1.1\r\nHost: a\r\nExpect: foo\r\n\r\n",
            417,
        ),
        bad(
            "other expectation, with body",
            "POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 5\r\n\r\nhello",
            417,
        ),
        bad(
            "100-continue twice",
            "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nExpect: 100-continue\r\n\r\n",
            417,
        ),
    ]);
}

#[test]
fn continue_only_while_the_body_is_missing() {
    let full = format!("{EXPECT_CL}hello");
    let request = Ev::Req(post("hello"));
    // The body arrived with the head: nothing to wait for.
    assert_eq!(
        whole(full.as_bytes()).events,
        std::slice::from_ref(&request)
    );
    // Head first, then the body.
    let run = drive(LIMITS, &[EXPECT_CL.as_bytes(), b"hello"], &mut Plain);
    assert_eq!(run.events, [Ev::Continue, request.clone()]);
    // Part of the body with the head: still incomplete, so Continue, once.
    let run = drive(
        LIMITS,
        &[format!("{EXPECT_CL}he").as_bytes(), b"l", b"lo"],
        &mut Plain,
    );
    assert_eq!(run.events, [Ev::Continue, request.clone()]);
    assert_eq!(bytewise(full.as_bytes()).events, [Ev::Continue, request]);
    // Chunked, likewise.
    let run = drive(
        LIMITS,
        &[EXPECT_CHUNKED.as_bytes(), b"2\r\nhi\r\n0\r\n\r\n"],
        &mut Plain,
    );
    assert_eq!(run.events, [Ev::Continue, Ev::Req(post("hi"))]);
    // Without Expect, or on HTTP/1.0, or with no body: never.
    for input in [
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
        "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
    ] {
        let run = bytewise(input.as_bytes());
        assert!(
            !run.events.contains(&Ev::Continue),
            "{input:?}: {:?}",
            run.events
        );
    }
}

#[test]
fn reject_body_answers_and_closes() {
    let body_later: &[&[u8]] = &[EXPECT_CL.as_bytes(), b"hello", NEXT.as_bytes()];
    let run = drive(LIMITS, body_later, &mut RejectBodies);
    assert_eq!(
        run.events,
        [Ev::Continue, Ev::Req(post("")), Ev::Closed],
        "the request as sent, without its body; nothing after it"
    );
    assert!(
        run.heads[0].contains("\r\nConnection: close\r\n"),
        "{}",
        run.heads[0]
    );
    assert!(!run.outcomes[0].keep_alive);
    assert_eq!(run.requests[0].header("content-length"), Some("5"));
}

#[test]
fn error_closes_the_connection() {
    let mut conn = Conn::new(LIMITS, None);
    let input = format!("GET / HTTP/1.1\r\n\r\n{NEXT}");
    conn.read_with(|buf| {
        buf[..input.len()].copy_from_slice(input.as_bytes());
        Ok::<usize, ()>(input.len())
    })
    .unwrap();
    let Event::Error(e) = conn.poll() else {
        panic!("expected an error");
    };
    assert_eq!(e.status(), 400);
    assert_eq!(conn.phase(), Phase::Closed);
    // Even before the error response is written.
    assert!(matches!(conn.poll(), Event::Closed));
    let mut out = Vec::new();
    let outcome = conn.write_head(&Conn::error_response(&e), false, &mut out);
    conn.response_sent();
    assert!(!outcome.keep_alive);
    for _ in 0..3 {
        assert!(matches!(conn.poll(), Event::Closed));
    }
    assert_eq!(
        conn.buffered(),
        NEXT.len(),
        "the next request is never parsed"
    );
    conn.read_with(|buf| {
        buf[..NEXT.len()].copy_from_slice(NEXT.as_bytes());
        Ok::<usize, ()>(NEXT.len())
    })
    .unwrap();
    assert!(matches!(conn.poll(), Event::Closed));
    assert_eq!(conn.phase(), Phase::Closed);
}

#[test]
fn progress_rule_on_an_endless_line() {
    let mut conn = Conn::new(LIMITS, None);
    let input = format!("GET /{}", "a".repeat(300));
    for (i, &b) in input.as_bytes().iter().enumerate() {
        conn.read_with(|buf| {
            buf[0] = b;
            Ok::<usize, ()>(1)
        })
        .unwrap();
        match conn.poll() {
            Event::NeedMore => assert!(i < LIMITS.max_head_bytes, "NeedMore at byte {i}"),
            Event::Error(e) => {
                assert_eq!(i, LIMITS.max_head_bytes, "error at byte {i}");
                assert_eq!(e.status(), 414);
                return;
            }
            other => panic!("{other:?} at byte {i}"),
        }
    }
    panic!("no error");
}

#[test]
fn response_heads() {
    // HEAD: the length a GET would get, and no body.
    let run = whole(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(
        run.heads[0].contains("\r\nContent-Length: 2\r\n"),
        "{}",
        run.heads[0]
    );
    assert_eq!(run.outcomes[0].framing, BodyFraming::None);
    let run = whole(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(run.outcomes[0].framing, BodyFraming::Sized);
    assert!(!run.heads[0].contains("Connection"), "{}", run.heads[0]);
    assert!(run.outcomes[0].keep_alive);

    // HTTP/1.0 that asked to keep alive is told so; HTTP/1.0 that did not
    // is told the connection closes.
    let run = whole(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert!(
        run.heads[0].contains("\r\nConnection: keep-alive\r\n"),
        "{}",
        run.heads[0]
    );
    assert!(run.outcomes[0].keep_alive);
    let run = whole(b"GET / HTTP/1.0\r\n\r\n");
    assert!(
        run.heads[0].contains("\r\nConnection: close\r\n"),
        "{}",
        run.heads[0]
    );
    assert!(!run.outcomes[0].keep_alive);

    // HTTP/1.1 that asked to close.
    let run = whole(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert!(
        run.heads[0].contains("\r\nConnection: close\r\n"),
        "{}",
        run.heads[0]
    );

    // Errors close, whatever the request asked for.
    for input in [
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.0\r\nConnection: keep-alive\r\nHost: a/b\r\n\r\n",
        "GET / HTTP/2.0\r\n\r\n",
    ] {
        let run = whole(input.as_bytes());
        let head = &run.heads[0];
        assert!(head.starts_with("HTTP/1.1 "), "{head}");
        assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
        assert!(!run.outcomes[0].keep_alive);
    }
}

#[test]
fn selected_headers() {
    let run = bytewise(
        b"POST /p HTTP/1.1\r\nHost:  example.com:80 \r\nX-A: 1\r\nx-a: 2\r\n\
          Content-Length: 3, 3\r\n\r\nabc",
    );
    let req = &run.requests[0];
    assert_eq!(req.header("host"), Some("example.com:80"));
    assert_eq!(
        req.headers().get_all("X-A").collect::<Vec<_>>(),
        [b"1", b"2"]
    );
    assert_eq!(req.header("content-length"), Some("3, 3"));
    assert_eq!(req.head().framing, Framing::Length(3));
    assert_eq!(req.body(), b"abc");
}
