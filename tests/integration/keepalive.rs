//! Persistent connections (RFC 9112 §9.3): HTTP/1.1 persists unless
//! `Connection: close`; HTTP/1.0 closes unless `Connection: keep-alive`.

use std::time::Duration;

use crate::support::{start, start_app, Framing};
use corral::{Request, Response};

#[test]
fn several_requests_share_one_connection() {
    // The handler answers with the peer's port, so every answer proves it
    // came over the same socket.
    let srv = start(
        |_| {},
        |req: &mut Request| {
            let port = req.peer_addr().map_or(0, |a| a.port());
            Response::text(200, format!("{} {port}", req.path()))
        },
    );
    let mut c = srv.connect();
    let port = c.stream.local_addr().unwrap().port();
    for i in 0..5 {
        let r = c.get(&format!("/n{i}"));
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), format!("/n{i} {port}"));
        assert!(!r.says_close(), "{r:?}");
    }
    assert_eq!(srv.metric(|m| &m.connections_accepted), 1);
    assert_eq!(srv.metric(|m| &m.requests), 5);
}

#[test]
fn http10_without_keep_alive_closes() {
    let srv = start_app(|_| {});
    let mut c = srv.connect();
    c.send("GET /healthz HTTP/1.0\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"ok\n");
    assert_eq!(r.framing, Framing::Length);
    assert!(r.says_close(), "{r:?}");
    assert!(
        c.is_closed(),
        "HTTP/1.0 connection must close after the response"
    );
}

#[test]
fn http10_with_keep_alive_stays_open() {
    let srv = start_app(|_| {});
    let mut c = srv.connect();
    for _ in 0..3 {
        c.send("GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let r = c.response();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"ok\n");
        assert_eq!(r.header("connection"), Some("keep-alive"), "{r:?}");
    }
    // Still open: a read times out instead of seeing EOF.
    assert!(!c.closes_within(Duration::from_millis(200)));
    assert_eq!(srv.metric(|m| &m.connections_accepted), 1);
}

#[test]
fn http11_connection_close_closes() {
    let srv = start_app(|_| {});
    let mut c = srv.connect();
    let r = c.get("/healthz");
    assert!(!r.says_close());
    c.send("GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert!(r.says_close(), "{r:?}");
    assert!(c.is_closed(), "Connection: close must end the connection");
}
