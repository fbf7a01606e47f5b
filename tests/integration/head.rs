//! HEAD gets the head a GET would get, without the content (RFC 9110
//! §9.3.2), so a pipelined response starts right after it.

use crate::support::{start_app, Framing};

#[test]
fn head_has_get_length_and_no_body() {
    let srv = start_app(|_| {});
    let mut c = srv.connect();
    let get = c.get("/");
    assert_eq!(get.status, 200);
    assert!(!get.body.is_empty());

    c.send("HEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = c.head_response();
    assert_eq!(head.status, 200);
    assert_eq!(head.framing, Framing::None);
    let len = get.body.len().to_string();
    assert_eq!(head.header("content-length"), Some(len.as_str()));
    assert_eq!(head.header("content-type"), get.header("content-type"));
    // The next bytes are the next response's status line, not a body.
    let next = c.response();
    assert_eq!(next.status, 200);
    assert_eq!(next.body, b"ok\n");
}
