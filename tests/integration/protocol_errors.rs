//! Protocol errors end to end: the loop writes the error response with
//! `Connection: close` and hangs up. The unit tests cover the full table of
//! inputs; these show the shell does its part for a representative few.

use std::time::Duration;

use crate::support::{start_app, TestServer};

/// Sends `request`, expects `status` with `Connection: close`, then EOF.
pub fn rejects(srv: &TestServer, request: &[u8], status: u16) {
    let mut c = srv.connect();
    c.send(request);
    let r = c.response();
    let shown = String::from_utf8_lossy(&request[..request.len().min(80)]);
    assert_eq!(r.status, status, "{shown:?} -> {r:?}");
    assert!(r.says_close(), "{shown:?} -> {r:?}");
    assert!(
        r.text().starts_with(&status.to_string()),
        "error body names the status: {r:?}"
    );
    assert!(
        c.closes_within(Duration::from_secs(5)),
        "{shown:?}: connection not closed after {status}"
    );
}

fn server() -> TestServer {
    start_app(|c| {
        c.max_head_bytes = 1024;
        c.max_headers = 20;
        c.max_body_bytes = 1000;
    })
}

#[test]
fn content_length_with_transfer_encoding_is_400() {
    let srv = server();
    rejects(
        &srv,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\
          Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    );
    assert_eq!(srv.metric(|m| &m.protocol_errors), 1);
}

#[test]
fn missing_host_is_400() {
    rejects(&server(), b"GET / HTTP/1.1\r\n\r\n", 400);
}

#[test]
fn announced_body_over_the_limit_is_413_before_reading_it() {
    // The body is never sent: the refusal comes from the head alone.
    rejects(
        &server(),
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n",
        413,
    );
}

#[test]
fn chunked_body_over_the_limit_is_413() {
    let mut req = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(b"7D0\r\n");
    req.extend_from_slice(&[b'x'; 2000]);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    rejects(&server(), &req, 413);
}

#[test]
fn long_request_line_is_414() {
    let req = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(2000));
    rejects(&server(), req.as_bytes(), 414);
}

#[test]
fn large_head_is_431() {
    let req = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "b".repeat(2000)
    );
    rejects(&server(), req.as_bytes(), 431);
}

#[test]
fn too_many_headers_is_431() {
    let mut req = String::from("GET / HTTP/1.1\r\nHost: t\r\n");
    for i in 0..30 {
        req.push_str(&format!("X-{i}: v\r\n"));
    }
    req.push_str("\r\n");
    rejects(&server(), req.as_bytes(), 431);
}

#[test]
fn unknown_version_is_505() {
    rejects(&server(), b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505);
}

#[test]
fn unknown_transfer_coding_is_501() {
    rejects(
        &server(),
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
        501,
    );
}

#[test]
fn connect_is_501() {
    rejects(
        &server(),
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        501,
    );
}

#[test]
fn error_after_a_good_request_answers_both_then_closes() {
    let srv = server();
    let mut c = srv.connect();
    c.send("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/9.9\r\nHost: t\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, b"ok\n".as_slice()));
    let r = c.response();
    assert_eq!(r.status, 505);
    assert!(r.says_close());
    assert!(c.closes_within(Duration::from_secs(5)));
}
