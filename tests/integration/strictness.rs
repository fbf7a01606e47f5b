//! Issue 11 end to end: request targets, versions, Host, bytes that are
//! not HTTP, and empty lines before the request line, through the real
//! server and its built-in app. The tables in `src/http/tests.rs` hold
//! every case; these show a representative of each class on the wire.

use std::time::{Duration, Instant};

use crate::protocol_errors::rejects;
use crate::support::{start_app, TestServer};

/// Long enough that a refusal which waited for it would fail the read
/// (the client gives up after 5s), so each answer below came at once.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

fn server() -> TestServer {
    start_app(|c| c.header_timeout = HEADER_TIMEOUT)
}

#[test]
fn targets_outside_the_uri_grammar_are_400() {
    let srv = server();
    for target in [
        "/healthz#top",
        "/healthz?a|b",
        "/\u{e9}",
        "/a%zz",
        "/healthz\\",
        "ftp://a/healthz",
        "http://u@a/healthz",
        "a.example:80",
        "*",
    ] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n");
        rejects(&srv, request.as_bytes(), 400);
    }
    // CONNECT with its own form is a method corral does not implement; with
    // another form it is malformed.
    rejects(&srv, b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501);
    rejects(&srv, b"CONNECT /healthz HTTP/1.1\r\nHost: t\r\n\r\n", 400);
}

#[test]
fn absolute_form_is_served() {
    let srv = server();
    let mut c = srv.connect();
    c.send("GET http://elsewhere.example/healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, b"ok\n".as_slice()));
}

#[test]
fn options_asterisk_lists_the_servers_methods() {
    let srv = server();
    let mut c = srv.connect();
    c.send("OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST, PUT, OPTIONS"));
    assert!(!r.says_close());
    // The connection goes on.
    assert_eq!(c.get("/healthz").status, 200);
}

#[test]
fn versions_malformed_400_unsupported_505_later_minor_served() {
    let srv = server();
    for line in [
        "GET /healthz http/1.1",
        "GET /healthz HTTP/1",
        "GET /healthz HTTP/1.10",
        "GET /healthz HTTP/1.1 ",
        "GET /heal thz HTTP/1.1",
    ] {
        rejects(&srv, format!("{line}\r\nHost: t\r\n\r\n").as_bytes(), 400);
    }
    rejects(&srv, b"GET /healthz HTTP/3.0\r\nHost: t\r\n\r\n", 505);
    let mut c = srv.connect();
    c.send("GET /healthz HTTP/1.2\r\nHost: t\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.version.as_str()), (200, "HTTP/1.1"));
}

#[test]
fn host_must_be_a_host_and_a_port() {
    let srv = server();
    for host in ["t:8x", "t:1:2", ":80", "u@t", "[::1", "[zz]"] {
        let request = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n");
        rejects(&srv, request.as_bytes(), 400);
    }
    for host in ["t:8080", "[::1]:8080", "127.0.0.1", "t:"] {
        let mut c = srv.connect();
        c.send(format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n"));
        assert_eq!(c.response().status, 200, "{host}");
    }
}

/// A TLS client on the plain port, or noise, is answered 400 at once, not
/// 408 when `--header-timeout` ends.
#[test]
fn bytes_that_are_not_http_are_refused_at_once() {
    let srv = server();
    let client_hello: &[u8] = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
    let noise: Vec<u8> = (0..=255u8).rev().cycle().take(4096).collect();
    for input in [client_hello, &noise, b"SSH-2.0-OpenSSH_9.6\r\n"] {
        let started = Instant::now();
        rejects(&srv, input, 400);
        assert!(started.elapsed() < HEADER_TIMEOUT / 3);
    }
    assert_eq!(srv.metric(|m| &m.header_timeouts), 0);
}

#[test]
fn too_many_empty_lines_are_400_not_414() {
    let srv = server();
    let mut c = srv.connect();
    c.send(format!(
        "{}GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
        "\r\n".repeat(10)
    ));
    assert_eq!(c.response().status, 200);
    rejects(&srv, "\r\n".repeat(5000).as_bytes(), 400);
}
