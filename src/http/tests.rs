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
            "§3 origin-form",
            "GET /a/b?c=d HTTP/1.1\r\nHost: a\r\n\r\n",
            vec![get("/a/b?c=d")],
        ),
        ok(
            "§3 other method",
            "DELETE /x HTTP/1.1\r\nHost: a\r\n\r\n",
            vec![req("DELETE", "/x")],
        ),
        ok(
            "§3 extension method",
            "PURGE /x HTTP/1.1\r\nHost: a\r\n\r\n",
            vec![req("PURGE", "/x")],
        ),
        // Methods are case-sensitive tokens (RFC 9110 §9.1): `get` is not
        // GET, but it is a method, and the router answers it (405). nginx
        // answers 400; hyper hands it to the service.
        ok(
            "§3 lowercase method",
            "get / HTTP/1.1\r\nHost: a\r\n\r\n",
            vec![req("get", "/")],
        ),
        bad("§3 two spaces", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        bad("§3 no method", " / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        bad("§3 HTAB for SP", "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        bad(
            "§3 method not a token",
            "G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        bad(
            "§2.2 bare CR ends the line",
            "GET / HTTP/1.1\rHost: a\r\n\r\n",
            400,
        ),
        // The space splits the target, and what follows is no version:
        // malformed (400), not a version corral does not speak (505, which
        // corral answered until issue 11). nginx and hyper say 400 too.
        bad(
            "§3 space inside the target",
            "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        bad(
            "§3 a second version",
            "GET /a HTTP/1.1 HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
    ]);
}

#[test]
fn request_target() {
    check(&[
        ok(
            "§3.2.1 origin-form, every pchar",
            "GET /a-._~!$&'()*+,;=:@/%41%c3%A9?q=/?x HTTP/1.1\r\nHost: a\r\n\r\n",
            vec![get("/a-._~!$&'()*+,;=:@/%41%c3%A9?q=/?x")],
        ),
        ok(
            "§3.2.1 origin-form, empty segments",
            "GET //a//?& HTTP/1.1\r\nHost: a\r\n\r\n",
            vec![get("//a//?&")],
        ),
        // A fragment is never sent (RFC 9110 §7.1): 400, as Apache's
        // `HttpProtocolOptions Strict` answers. nginx routes `/a#f` as it
        // is; hyper drops the fragment and routes `/a`.
        bad(
            "§3.2.1 fragment",
            "GET /a#f HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        bad(
            "§3.2.1 fragment after a query",
            "GET /a?b#f HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        // Bytes outside the URI grammar: nginx routes raw UTF-8 and
        // 0xFF; hyper routes UTF-8 and refuses 0xFF; both refuse controls.
        bad(
            "§3.2.1 raw UTF-8",
            "GET /\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        bad(
            "§3.2.1 raw 0xFF",
            b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        bad(
            "§3.2.1 control byte",
            "GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        bad("§3.2.1 NUL", "GET /a\x00 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        bad("§3.2.1 DEL", "GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        bad("§3.2.1 HTAB", "GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        // Printable but not in the grammar. Browsers send `|` `^` `[` `]`
        // `{` `}` unencoded in a query; Tomcat refuses them by default (its
        // `relaxedQueryChars` lets them in), nginx and hyper route them
        // (hyper refuses `<` `>`).
        bad(
            "§3.2.1 | in a query",
            "GET /a?b|c HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        bad(
            "§3.2.1 [ ] in a query",
            "GET /a?b[]=c HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        bad(
            "§3.2.1 backslash",
            "GET /a\\b HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        bad("§3.2.1 quote", "GET /a\"b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        bad(
            "§3.2.1 angle bracket",
            "GET /a<b> HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        bad("§3.2.1 brace", "GET /a{b} HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        bad("§3.2.1 caret", "GET /a^b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        bad(
            "§3.2.1 backquote",
            "GET /a`b HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        // pct-encoded = "%" HEXDIG HEXDIG (RFC 3986 §2.1). nginx 400,
        // hyper routes it.
        bad(
            "§3.2.1 % without hex",
            "GET /a%zz HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        bad(
            "§3.2.1 % cut short",
            "GET /a%4 HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        bad(
            "§3.2.1 % at the end",
            "GET /a% HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        bad(
            "§3.2 relative target",
            "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        ok(
            "§3.2.2 absolute-form",
            "GET http://example.com/a?b HTTP/1.1\r\nHost: example.com\r\n\r\n",
            vec![get("http://example.com/a?b")],
        ),
        ok(
            "§3.2.2 absolute-form, no path",
            "GET https://example.com:8443 HTTP/1.1\r\nHost: a\r\n\r\n",
            vec![get("https://example.com:8443")],
        ),
        ok(
            "§3.2.2 absolute-form, a query and no path",
            "GET HTTP://a?b HTTP/1.1\r\nHost: a\r\n\r\n",
            vec![get("HTTP://a?b")],
        ),
        ok(
            "§3.2.2 absolute-form, IPv6 literal",
            "GET http://[::1]:80/ HTTP/1.1\r\nHost: a\r\n\r\n",
            vec![get("http://[::1]:80/")],
        ),
        // §3.2.2: Host is still required, and checked, though ignored.
        bad(
            "§3.2.2 absolute-form without Host",
            "GET http://a/ HTTP/1.1\r\n\r\n",
            400,
        ),
        bad(
            "§3.2.2 absolute-form, invalid Host",
            "GET http://a/ HTTP/1.1\r\nHost: a b\r\n\r\n",
            400,
        ),
        // RFC 9110 §4.2.4: userinfo is to be treated as an error. nginx
        // 400, hyper routes it.
        bad(
            "§3.2.2 absolute-form, userinfo",
            "GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        // RFC 9110 §4.2.1: a recipient MUST reject an empty host.
        bad(
            "§3.2.2 absolute-form, no authority",
            "GET http:///a HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        bad(
            "§3.2.2 absolute-form, port and no host",
            "GET http://:80/ HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        // nginx 400, hyper routes it.
        bad(
            "§3.2.2 absolute-form, port not digits",
            "GET http://a:8x/ HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        bad(
            "§3.2.2 absolute-form, bad authority",
            "GET http://a\\b/ HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        // An origin server for http and https only; nginx and hyper route
        // the path of any scheme.
        bad(
            "§3.2.2 absolute-form, other scheme",
            "GET ftp://a/b HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        bad(
            "§3.2.2 absolute-form, fragment",
            "GET http://a/p#f HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        bad(
            "§3.2.2 absolute-form, no //",
            "GET http:a HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        // CONNECT is not implemented: 501 (RFC 9110 §9.1). nginx answers
        // 400, hyper hands it to the service.
        bad(
            "§3.2.3 CONNECT with authority-form",
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            501,
        ),
        bad(
            "§3.2.3 CONNECT to an IPv6 literal",
            "CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n",
            501,
        ),
        // RFC 9110 §9.3.6: there is no default port.
        bad(
            "§3.2.3 CONNECT without a port",
            "CONNECT example.com HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        // nginx answers 405.
        bad(
            "§3.2.3 CONNECT with origin-form",
            "CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        bad(
            "§3.2.3 authority-form for GET",
            "GET example.com:443 HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        // nginx answers 400 to every asterisk-form; hyper routes `*` for
        // any method.
        ok(
            "§3.2.4 asterisk-form for OPTIONS",
            "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            vec![req("OPTIONS", "*")],
        ),
        bad(
            "§3.2.4 asterisk-form for GET",
            "GET * HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        bad(
            "§3.2.4 asterisk and more",
            "OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
    ]);
}

#[test]
fn absolute_form_path_query_and_host() {
    let run = whole(b"GET http://example.com/a?b HTTP/1.1\r\nHost: other\r\n\r\n");
    assert_eq!(run.requests[0].path(), "/a");
    assert_eq!(run.requests[0].query_string(), Some("b"));
    // RFC 9112 §3.2.2: the target's authority wins over Host.
    assert_eq!(run.requests[0].host(), Some("example.com"));
    let run = whole(b"GET https://example.com:8443 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(run.requests[0].path(), "/");
    assert_eq!(run.requests[0].query_string(), None);
    assert_eq!(run.requests[0].host(), Some("example.com:8443"));
    let run = whole(b"GET /a HTTP/1.1\r\nHost: a.example:80\r\n\r\n");
    assert_eq!(run.requests[0].host(), Some("a.example:80"));
    let run = whole(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(run.requests[0].path(), "*");
    // RFC 9112 §3.2.4: an absolute-form OPTIONS with no path and no query
    // is about the server as a whole, as `OPTIONS *` is.
    let run = whole(b"OPTIONS http://a HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(run.requests[0].path(), "*");
    let run = whole(b"OPTIONS http://a/ HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(run.requests[0].path(), "/");
    let run = whole(b"OPTIONS http://a?q HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(run.requests[0].path(), "/");
}

#[test]
fn versions() {
    check(&[
        ok(
            "§2.3 HTTP/1.1",
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            vec![get("/")],
        ),
        ok(
            "§2.3 HTTP/1.0",
            "GET / HTTP/1.0\r\n\r\n",
            vec![get("/").v10()],
        ),
        // RFC 9110 §2.5: a higher minor version is served as the highest
        // we conform to. nginx does so; hyper answers 400.
        ok(
            "§2.3 HTTP/1.2, served as HTTP/1.1",
            "GET / HTTP/1.2\r\nHost: a\r\n\r\n",
            vec![get("/")],
        ),
        ok(
            "§2.3 HTTP/1.9, served as HTTP/1.1",
            "GET / HTTP/1.9\r\nHost: a\r\nConnection: close\r\n\r\n",
            vec![get("/").keep_alive(false)],
        ),
        // Well-formed, another major version: 505 (RFC 9110 §15.6.6).
        // hyper answers 400 to all of these, nginx to HTTP/0.9.
        bad("§2.3 HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        bad("§2.3 HTTP/0.9", "GET / HTTP/0.9\r\n\r\n", 505),
        bad("§2.3 HTTP/9.9", "GET / HTTP/9.9\r\n\r\n", 505),
        // The HTTP/2 connection preface: 505 as soon as its line is in.
        bad(
            "§2.3 HTTP/2 preface",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            505,
        ),
        // Malformed versions are malformed request lines: 400. corral
        // answered 505 to several of these until issue 11.
        bad("§2.3 HTTP/3", "GET / HTTP/3\r\nHost: a\r\n\r\n", 400),
        bad("§2.3 HTTP/1", "GET / HTTP/1\r\nHost: a\r\n\r\n", 400),
        bad("§2.3 HTTP/11", "GET / HTTP/11\r\nHost: a\r\n\r\n", 400),
        bad("§2.3 HTTP/1.10", "GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400),
        bad("§2.3 HTTP/1.x", "GET / HTTP/1.x\r\nHost: a\r\n\r\n", 400),
        bad("§2.3 HTTP/1,1", "GET / HTTP/1,1\r\nHost: a\r\n\r\n", 400),
        // HTTP-name is case-sensitive. nginx and hyper say 400 too.
        bad(
            "§2.3 lowercase name",
            "GET / http/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        bad("§2.3 other name", "GET / HTTPS/1.1\r\nHost: a\r\n\r\n", 400),
        // nginx accepts a trailing space; hyper says 400.
        bad(
            "§2.3 space after the version",
            "GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
            400,
        ),
        // An HTTP/0.9 request line, which has no version: gone from RFC
        // 9112 (nginx still answers it, bare).
        bad("§2.3 no version", "GET /\r\n\r\n", 400),
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
    let host = |v: &str| format!("GET / HTTP/1.1\r\nHost: {v}\r\n\r\n");
    check(&[
        ok("§7.2 with port", host("a.example:8080"), vec![get("/")]),
        ok("§7.2 IPv4", host("127.0.0.1:80"), vec![get("/")]),
        ok("§7.2 IPv6 literal", host("[::1]:80"), vec![get("/")]),
        ok(
            "§7.2 IPv6 with IPv4",
            host("[::ffff:1.2.3.4]"),
            vec![get("/")],
        ),
        ok("§7.2 IPvFuture", host("[v1.a:b]"), vec![get("/")]),
        ok(
            "§7.2 unreserved and sub-delims",
            host("a_b~c!$&'()*+,;="),
            vec![get("/")],
        ),
        ok("§7.2 pct-encoded", host("a%41"), vec![get("/")]),
        // RFC 3986 §3.2.3: port = *DIGIT, with no bound and possibly empty.
        ok("§7.2 empty port", host("a:"), vec![get("/")]),
        ok("§7.2 port over 65535", host("a:99999"), vec![get("/")]),
        // §7.2: empty when the target has no authority. nginx says 400.
        ok(
            "§7.2 empty",
            "GET / HTTP/1.1\r\nHost:\r\n\r\n",
            vec![get("/")],
        ),
        ok(
            "§7.2 missing on HTTP/1.0",
            "GET / HTTP/1.0\r\n\r\n",
            vec![get("/").v10()],
        ),
        bad("§7.2 missing on HTTP/1.1", "GET / HTTP/1.1\r\n\r\n", 400),
        bad(
            "§7.2 repeated",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            400,
        ),
        bad(
            "§7.2 repeated, same value",
            "GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n",
            400,
        ),
        bad(
            "§7.2 repeated on HTTP/1.0",
            "GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n",
            400,
        ),
        bad("§7.2 space inside", host("a b"), 400),
        bad("§7.2 slash", host("a/b"), 400),
        bad(
            "§7.2 invalid on HTTP/1.0",
            "GET / HTTP/1.0\r\nHost: a/b\r\n\r\n",
            400,
        ),
        // nginx and hyper take every one of these.
        bad("§7.2 port not digits", host("a:8x"), 400),
        bad("§7.2 two ports", host("a:1:2"), 400),
        bad("§7.2 userinfo", host("u@a"), 400),
        bad("§7.2 bad percent-encoding", host("a%zz"), 400),
        bad("§7.2 not an IPv6 address", host("[zz]:80"), 400),
        bad("§7.2 unclosed IPv6 literal", host("[::1:80"), 400),
        bad("§7.2 junk after an IPv6 literal", host("[::1]x"), 400),
        // RFC 6874's zone identifiers are not in RFC 3986's grammar.
        bad("§7.2 IPv6 zone", host("[fe80::1%25eth0]"), 400),
        // RFC 9110 §4.2.1: an http URI has a host. nginx says 400 too.
        bad("§7.2 port and no host", host(":80"), 400),
        bad("§7.2 non-ASCII", host("\u{e9}"), 400),
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
            "\r\n".repeat(10) + &line_of_len(230) + "Host: a\r\n\r\n",
            431,
        ),
        bad(
            "empty lines push the line end past the limit",
            "\r\n".repeat(10) + &line_of_len(240) + "Host: a\r\n\r\n",
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

/// RFC 9112 §2.2 asks a server to ignore at least one empty line before a
/// request line; corral ignores ten, as Apache does, and answers 400 past
/// that (not 414: they are no long URI). nginx and hyper skip any number
/// that fits their buffers.
#[test]
fn empty_lines_are_bounded() {
    let get_after = |lead: &str| format!("{lead}GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    check(&[
        ok(
            "§2.2 ten CRLFs",
            get_after(&"\r\n".repeat(10)),
            vec![get("/")],
        ),
        ok("§2.2 ten LFs", get_after(&"\n".repeat(10)), vec![get("/")]),
        ok(
            "§2.2 ten, mixed",
            get_after(&"\r\n\n".repeat(5)),
            vec![get("/")],
        ),
        bad("§2.2 eleven CRLFs", get_after(&"\r\n".repeat(11)), 400),
        bad("§2.2 eleven LFs", get_after(&"\n".repeat(11)), 400),
        // Nothing but empty lines, as many as the head limit holds: 400
        // at the eleventh, long before the limit.
        bad("§2.2 only empty lines", "\r\n".repeat(200), 400),
        bad("§2.2 bare CR", get_after("\r"), 400),
        bad("§2.2 CR CR LF", get_after("\r\r\n"), 400),
        bad("§2.2 LF CR", get_after("\n\r"), 400),
        bad_after(
            "§2.2 eleven after a request",
            format!(
                "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n{}",
                get_after(&"\r\n".repeat(11))
            ),
            vec![get("/1")],
            400,
        ),
    ]);
}

/// Bytes that cannot begin a request line are refused with 400 as soon as
/// they arrive: a TLS ClientHello at its first byte, not at the head
/// deadline. nginx and hyper refuse these with 400 too.
#[test]
fn not_http() {
    let client_hello: &[u8] = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
    let noise: Vec<u8> = (0..=255u8).cycle().skip(7).take(4096).collect();
    check(&[
        bad("§3 TLS ClientHello", client_hello, 400),
        bad("§3 binary noise", &noise, 400),
        bad("§3 NUL bytes", [0u8; 64], 400),
        bad("§3 SSH banner", "SSH-2.0-OpenSSH_9.6\r\n", 400),
        bad("§3 SMTP greeting", "220 mail.example ESMTP\r\n", 400),
        bad("§3 JSON", "{\"a\": 1}\n", 400),
    ]);
    // How many bytes, fed one at a time, it takes to refuse each.
    let cases: &[(&[u8], usize)] = &[
        (client_hello, 1),
        (&noise, 1),
        (b"\r\n\x16\x03\x01", 3),
        (b"SSH-2.0-OpenSSH_9.6\r\n", 20),
        (b"GET /\x00 HTTP/1.1\r\n", 6),
        (b"GET / HTTP/1.1 \r\n", 15),
        (b"GET / HTTPS/1.1\r\n", 11),
        (b"GET /%zz HTTP/1.1\r\n", 7),
        (b"GET /a#b HTTP/1.1\r\n", 7),
        (b"GET * HTTP/1.1\r\n", 16),
        (b"GET / HTTP/2.0\r\n", 16),
    ];
    for &(input, want) in cases {
        let mut conn = Conn::new(LIMITS, None);
        let refused_at = input.iter().position(|&b| {
            conn.read_with(|buf| {
                buf[0] = b;
                Ok::<usize, ()>(1)
            })
            .unwrap_or(0);
            matches!(conn.poll(), Event::Error(_))
        });
        let shown = String::from_utf8_lossy(&input[..input.len().min(24)]);
        assert_eq!(refused_at.map(|i| i + 1), Some(want), "{shown:?}");
    }
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
