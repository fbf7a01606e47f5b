//! Pipelining: requests written back to back in one write are answered in
//! order on the same connection (RFC 9112 §9.3.2).

use crate::support::{start, start_app};
use corral::{Request, Response};

#[test]
fn hundred_pipelined_requests_in_one_write() {
    let srv = start(
        |_| {},
        |req: &mut Request| Response::text(200, req.path().to_owned()),
    );
    let mut c = srv.connect();
    let mut burst = String::new();
    for i in 0..100 {
        burst.push_str(&format!("GET /p/{i} HTTP/1.1\r\nHost: t\r\n\r\n"));
    }
    c.send(&burst);
    for i in 0..100 {
        let r = c.response();
        assert_eq!(r.status, 200, "response {i}");
        assert_eq!(r.text(), format!("/p/{i}"), "responses out of order");
    }
    assert!(c.buffered().is_empty(), "bytes after the 100th response");
    assert_eq!(srv.metric(|m| &m.requests), 100);
}

#[test]
fn pipelined_posts_keep_their_bodies_apart() {
    let srv = start_app(|_| {});
    let mut c = srv.connect();
    let mut burst = Vec::new();
    for i in 0..20 {
        let body = format!("body number {i}").repeat(i + 1);
        burst.extend_from_slice(
            format!(
                "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    c.send(&burst);
    for i in 0..20 {
        let r = c.response();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), format!("body number {i}").repeat(i + 1));
    }
}
