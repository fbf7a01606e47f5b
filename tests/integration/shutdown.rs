//! Graceful shutdown: in-flight requests finish with `Connection: close`,
//! then the server stops; the binary does the same on SIGTERM and exits 0.

use std::net::TcpStream;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use crate::support::{spawn_bin, start, start_app, Client};
use corral::{Request, Response};

#[test]
fn shutdown_lets_an_in_flight_request_finish() {
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let entered_tx = Mutex::new(entered_tx);
    let release_rx = Mutex::new(release_rx);
    let srv = start(
        |_| {},
        move |req: &mut Request| {
            if req.path() == "/slow" {
                let _ = entered_tx.lock().unwrap().send(());
                let _ = release_rx
                    .lock()
                    .unwrap()
                    .recv_timeout(Duration::from_secs(20));
                return Response::text(200, "finished");
            }
            Response::text(200, "fast")
        },
    );
    let addr = srv.addr;
    // An idle keep-alive connection, which shutdown simply closes.
    let mut idle = srv.connect();
    assert_eq!(idle.get("/fast").status, 200);

    let mut c = srv.connect();
    c.send("GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
    entered_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("handler entered");
    srv.handle.shutdown();
    // The listener closes while the handler still runs.
    assert!(
        crate::support::wait_until(Duration::from_secs(5), || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err()
        }),
        "still accepting after shutdown"
    );
    assert!(
        idle.closes_within(Duration::from_secs(5)),
        "idle connection kept open"
    );

    release_tx.send(()).unwrap();
    let r = c.response();
    assert_eq!((r.status, r.text().as_str()), (200, "finished"));
    assert!(r.says_close(), "response during shutdown must close: {r:?}");
    assert!(c.is_closed());
    let report = srv.join(Duration::from_secs(10));
    assert_eq!(report.abandoned, 0);
}

#[test]
fn shutdown_lets_a_parked_upload_finish() {
    let srv = start_app(|_| {});
    let mut c = srv.connect();
    let body = vec![b'u'; 64 * 1024];
    c.send(format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    ));
    let (first, rest) = body.split_at(body.len() / 2);
    c.send(first);
    // The body stalls, so the worker parks the connection mid-request.
    assert_eq!(
        srv.wait_metric(|m| &m.connections_parked, 1, Duration::from_secs(5)),
        1,
        "upload not parked"
    );
    srv.handle.shutdown();
    // The parker has stopped and let go of the connection.
    assert_eq!(
        srv.wait_metric(|m| &m.connections_parked, 0, Duration::from_secs(5)),
        0
    );
    c.send(rest);
    let r = c
        .try_response(false)
        .expect("an upload under way when shutdown began must get its response");
    assert_eq!(r.status, 200);
    assert!(r.body == body, "echoed body differs");
    assert!(r.says_close(), "{r:?}");
    let report = srv.join(Duration::from_secs(10));
    assert_eq!(report.abandoned, 0);
}

#[test]
fn sigterm_mid_upload_finishes_the_request_and_exits_0() {
    let mut proc = spawn_bin(&["--workers", "2", "--access-log", "off"], None);
    let mut c = Client::connect(proc.addr);
    let body: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 253) as u8).collect();
    c.send(format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    ));
    // The 100 proves the server has the head and wants the body.
    let head = c.read_head().expect("100 Continue");
    assert_eq!(head.status, 100);
    let (first, rest) = body.split_at(body.len() / 2);
    c.send(first);

    proc.signal(libc::SIGTERM);
    assert!(
        proc.wait_line("shutting down", Duration::from_secs(10))
            .is_some(),
        "no shutdown line; stderr: {:#?}",
        proc.seen
    );
    // Shutdown has begun; now the rest of the body.
    c.send(rest);
    let r = c.response();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body == body, "echoed body differs");
    assert!(r.says_close(), "{r:?}");
    let status = proc
        .wait_exit(Duration::from_secs(15))
        .expect("exited after SIGTERM");
    assert!(
        status.success(),
        "exit status {status}; stderr: {:#?}",
        proc.seen
    );
}

#[test]
fn sigterm_when_idle_exits_0() {
    let mut proc = spawn_bin(&["--access-log", "off"], None);
    let mut c = Client::connect(proc.addr);
    assert_eq!(c.get("/healthz").body, b"ok\n");
    proc.signal(libc::SIGTERM);
    let status = proc
        .wait_exit(Duration::from_secs(15))
        .expect("exited after SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(c.is_closed());
}
