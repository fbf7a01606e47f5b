//! `Expect: 100-continue` (RFC 9110 §10.1.1): the interim response goes out
//! only for a body the server wants, before the client sends it.

use std::time::Duration;

use crate::support::start_app;

#[test]
fn continue_comes_before_the_body() {
    let srv = start_app(|_| {});
    let mut c = srv.connect();
    let body = "the body, sent only after 100 Continue";
    c.send(format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: text/x-test\r\n\
         Expect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    ));
    // Nothing of the body has been sent: this head can only be the 100.
    let head = c.read_head().expect("interim response");
    assert_eq!((head.version.as_str(), head.status), ("HTTP/1.1", 100));
    assert!(head.headers.is_empty(), "{head:?}");
    assert!(c.buffered().is_empty());

    c.send(body);
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), body);
    assert_eq!(r.header("content-type"), Some("text/x-test"));
    assert!(!r.says_close());
    // The connection goes on.
    assert_eq!(c.get("/healthz").body, b"ok\n");
}

#[test]
fn unrouted_path_gets_final_404_without_continue_and_closes() {
    let srv = start_app(|_| {});
    let mut c = srv.connect();
    c.send(
        "POST /nowhere HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\
         Content-Length: 1000\r\n\r\n",
    );
    let r = c.response();
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.says_close(), "{r:?}");
    assert!(c.closes_within(Duration::from_secs(5)));
}

#[test]
fn other_expectation_gets_417() {
    let srv = start_app(|_| {});
    let mut c = srv.connect();
    c.send("POST /echo HTTP/1.1\r\nHost: t\r\nExpect: foo\r\nContent-Length: 3\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 417, "{r:?}");
    assert!(r.says_close());
    assert!(c.closes_within(Duration::from_secs(5)));
}
