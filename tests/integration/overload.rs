//! Overload and failure: a full queue answers 503 at accept, a panicking
//! handler answers 500 and the worker lives on.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Mutex;
use std::time::Duration;

use crate::support::{start, Client};
use corral::{Request, Response};

/// A handler that blocks on `/block` until the test releases it, and
/// answers everything else at once.
fn gated() -> (
    impl Fn(&mut Request) -> Response + Send + Sync,
    Receiver<()>,
    Sender<()>,
) {
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let entered_tx = Mutex::new(entered_tx);
    let release_rx = Mutex::new(release_rx);
    let handler = move |req: &mut Request| {
        if req.path() == "/block" {
            let _ = entered_tx.lock().unwrap().send(());
            // Bounded, so a failed test cannot wedge the worker forever.
            let released = release_rx
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(20))
                .is_ok();
            return Response::text(200, if released { "released" } else { "timed out" });
        }
        Response::text(200, format!("fast {}", req.path()))
    };
    (handler, entered_rx, release_tx)
}

#[test]
fn full_queue_gets_503_with_retry_after_then_service_resumes() {
    let (handler, entered, release) = gated();
    let srv = start(
        |c| {
            c.workers = 1;
            c.queue = 1;
        },
        handler,
    );
    // A occupies the only worker.
    let mut a = srv.connect();
    a.send("GET /block HTTP/1.1\r\nHost: t\r\n\r\n");
    entered
        .recv_timeout(Duration::from_secs(10))
        .expect("handler entered");
    // B fills the queue (one job waiting for the worker).
    let mut b = srv.connect();
    b.send("GET /b HTTP/1.1\r\nHost: t\r\n\r\n");
    // The acceptor takes connections in order, so B is queued before any
    // of these is accepted; each is refused at accept, without a request.
    for i in 0..3 {
        let mut c = srv.connect();
        let r = c.response();
        assert_eq!(r.status, 503, "extra connection {i}: {r:?}");
        assert!(r.header("retry-after").is_some(), "{r:?}");
        assert!(r.says_close());
        assert!(
            c.buffered().is_empty(),
            "bytes beyond the 503's Content-Length: {:?}",
            String::from_utf8_lossy(c.buffered())
        );
        assert!(c.is_closed());
    }
    assert_eq!(srv.metric(|m| &m.connections_rejected), 3);

    release.send(()).unwrap();
    let r = a.response();
    assert_eq!((r.status, r.text().as_str()), (200, "released"));
    let r = b.response();
    assert_eq!((r.status, r.text().as_str()), (200, "fast /b"));
    let mut d = srv.connect();
    assert_eq!(d.get("/d").text(), "fast /d");
    assert_eq!(srv.metric(|m| &m.connections_rejected), 3);
}

#[test]
fn panicking_handler_gets_500_and_the_worker_lives_on() {
    let srv = start(
        |c| c.workers = 1,
        |req: &mut Request| {
            if req.path() == "/panic" {
                panic!("deliberate panic in a test handler");
            }
            Response::text(200, "alive")
        },
    );
    let mut c = srv.connect();
    let r = c.get("/panic");
    assert_eq!(r.status, 500, "{r:?}");
    assert!(r.says_close());
    assert!(c.is_closed(), "a panic must end the connection");
    assert_eq!(srv.metric(|m| &m.handler_panics), 1);

    // The single worker survived: a new connection is served.
    let mut c = Client::connect(srv.addr);
    assert_eq!(c.get("/ok").text(), "alive");
    assert_eq!(srv.metric(|m| &m.handler_panics), 1);
}
