//! Response bodies on the wire: a stream is chunked to HTTP/1.1 and
//! close-delimited to HTTP/1.0; shared bytes arrive intact.

use std::io::Cursor;
use std::sync::Arc;

use crate::support::{start, Framing, TestServer};
use corral::{Body, Request, Response};

/// 200 KB of a pattern that shows any lost, repeated or reordered span.
fn pattern() -> Vec<u8> {
    (0..200_000u32).map(|i| (i % 251) as u8).collect()
}

fn server() -> TestServer {
    let shared: Arc<[u8]> = pattern().into();
    start(
        |_| {},
        move |req: &mut Request| match req.path() {
            "/stream" => {
                Response::new(200).with_body(Body::Stream(Box::new(Cursor::new(pattern()))))
            }
            "/shared" => Response::new(200).with_body(shared.clone()),
            _ => Response::new(404),
        },
    )
}

#[test]
fn stream_is_chunked_to_http11_and_the_connection_persists() {
    let srv = server();
    let mut c = srv.connect();
    for _ in 0..2 {
        let r = c.get("/stream");
        assert_eq!(r.status, 200);
        assert_eq!(r.framing, Framing::Chunked, "{:?}", r.headers);
        assert_eq!(r.header("content-length"), None);
        assert!(r.body == pattern(), "chunked body differs");
        assert!(!r.says_close());
    }
}

#[test]
fn stream_is_close_delimited_to_http10() {
    let srv = server();
    let mut c = srv.connect();
    c.send("GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.framing, Framing::Close, "{:?}", r.headers);
    assert_eq!(r.header("transfer-encoding"), None);
    assert!(r.says_close(), "a close-delimited body cannot keep alive");
    assert!(r.body == pattern(), "close-delimited body differs");
}

#[test]
fn shared_bytes_arrive_intact() {
    let srv = server();
    let mut c = srv.connect();
    for _ in 0..3 {
        let r = c.get("/shared");
        assert_eq!(r.status, 200);
        assert_eq!(r.framing, Framing::Length);
        assert_eq!(r.header("content-length"), Some("200000"));
        assert!(r.body == pattern(), "shared body differs");
    }
}
