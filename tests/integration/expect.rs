//! `Expect: 100-continue` (RFC 9110 §10.1.1): the interim response goes out
//! only for a body the server wants, before the client sends it.

use std::time::Duration;

use corral::router::Handler;
use corral::{Request, Response};

use crate::support::{start, start_app};

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

/// A handler whose `wants_body` panics.
struct PanicsOnExpect;

impl Handler for PanicsOnExpect {
    fn handle(&self, req: &mut Request) -> Response {
        Response::text(200, format!("handled {}\n", req.path()))
    }

    fn wants_body(&self, _method: &str, _path: &str) -> bool {
        panic!("deliberate panic in a test's wants_body");
    }
}

#[test]
fn a_panic_deciding_on_the_body_still_gets_an_answer_and_the_workers_live_on() {
    let srv = start(|c| c.workers = 1, PanicsOnExpect);
    // One worker: had the panic escaped the connection loop, the request
    // would have gone unanswered, and its worker's slot with it.
    for _ in 0..2 {
        let mut c = srv.connect();
        c.send("POST /up HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n");
        let r = c.response();
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.says_close(), "the body was not read: {r:?}");
    }
    assert_eq!(srv.metric(|m| &m.handler_panics), 2);
    assert_eq!(srv.connect().get("/after").text(), "handled /after\n");
}
