//! Behind a front (issue 13): the client's address comes from a trusted
//! front's `X-Forwarded-For` and from nobody else's, in the handler and in
//! the access log; and on SIGTERM with `--drain-delay`, `/healthz` answers
//! 503 while the listener still accepts, so a front's health check takes
//! the instance out before it stops. The rules themselves are table-tested
//! in `src/forwarded.rs`.

use std::net::TcpStream;
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use corral::access::AccessLog;
use corral::forwarded::Cidr;
use corral::{Request, Response};

use crate::support::{spawn_bin, start, start_logged, wait_until, Client};

const WITHIN: Duration = Duration::from_secs(10);

/// Answers with what it was told about the client, one field a line.
fn who(req: &mut Request) -> Response {
    let f = req.forwarded();
    Response::text(
        200,
        format!(
            "client {}\npeer {}\nproto {}\nhost {}\nxff {}\n",
            req.client_addr().map_or("-".into(), |a| a.to_string()),
            req.peer_addr().map_or("-".into(), |a| a.to_string()),
            f.and_then(|f| f.proto).map_or("-", |p| p.as_str()),
            f.and_then(|f| f.host.clone()).unwrap_or_else(|| "-".into()),
            req.header("x-forwarded-for").unwrap_or("-"),
        ),
    )
}

/// The line of `body` that starts with `name `, without the name.
fn field<'a>(body: &'a str, name: &str) -> &'a str {
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|l| l.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in {body:?}"))
}

/// Serves [`who`] with `trusted` as `--trusted-proxy` and the access log
/// in a file; runs `check` on the server, then returns the log's lines.
fn with_front(
    trusted: &[&str],
    tag: &str,
    check: impl FnOnce(&crate::support::TestServer),
) -> Vec<String> {
    let path = std::env::temp_dir().join(format!("corral-front-{tag}-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let log = AccessLog::file(&path).expect("open the access log");
    let blocks: Vec<Cidr> = trusted
        .iter()
        .map(|b| Cidr::parse(b).expect("block"))
        .collect();
    let srv = start_logged(|c| c.trusted_proxies = blocks, who, log);
    check(&srv);
    let served = srv.metric(|m| &m.requests) as usize;
    let mut lines = Vec::new();
    wait_until(WITHIN, || {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        lines = text.lines().map(str::to_owned).collect();
        lines.len() >= served
    });
    let _ = std::fs::remove_file(&path);
    lines
}

#[test]
fn issue_13_a_trusted_front_names_the_client_to_handlers_and_the_log() {
    let lines = with_front(&["127.0.0.1", "10.0.0.0/8"], "trusted", |srv| {
        let mut c = srv.connect();
        let r = c.get_with(
            "/who",
            &[
                // A client's own guess, then what the front appended: the
                // guess is never read.
                ("X-Forwarded-For", "6.6.6.6, 203.0.113.7"),
                ("X-Forwarded-For", "10.1.1.1"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "arrays.example"),
            ],
        );
        let body = r.text();
        assert_eq!(field(&body, "client"), "203.0.113.7:0", "{body}");
        assert!(field(&body, "peer").starts_with("127.0.0.1:"), "{body}");
        assert_eq!(field(&body, "proto"), "https", "{body}");
        assert_eq!(field(&body, "host"), "arrays.example", "{body}");
        // The headers stay what they were.
        assert_eq!(field(&body, "xff"), "6.6.6.6, 203.0.113.7", "{body}");
        assert_eq!(srv.metric(|m| &m.requests_forwarded), 1);
        assert_eq!(srv.metric(|m| &m.forwarded_ignored), 0);

        // No header from a trusted front: the front is the client.
        let body = c.get("/who").text();
        assert!(field(&body, "client").starts_with("127.0.0.1:"), "{body}");
        assert_eq!(field(&body, "proto"), "-", "{body}");
    });
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[0].starts_with("203.0.113.7 - - ["), "{}", lines[0]);
    assert!(lines[1].starts_with("127.0.0.1 - - ["), "{}", lines[1]);
}

#[test]
fn issue_13_forwarding_headers_from_anyone_else_are_plain_headers() {
    // The loopback peer is not in the trusted block.
    let lines = with_front(&["10.0.0.0/8"], "untrusted", |srv| {
        let mut c = srv.connect();
        let r = c.get_with(
            "/who",
            &[
                ("X-Forwarded-For", "10.0.0.1"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "bank.example"),
            ],
        );
        let body = r.text();
        assert!(field(&body, "client").starts_with("127.0.0.1:"), "{body}");
        assert_eq!(field(&body, "client"), field(&body, "peer"), "{body}");
        assert_eq!(field(&body, "proto"), "-", "{body}");
        assert_eq!(field(&body, "host"), "-", "{body}");
        assert_eq!(field(&body, "xff"), "10.0.0.1", "{body}");
        assert_eq!(srv.metric(|m| &m.requests_forwarded), 0);
        assert_eq!(srv.metric(|m| &m.forwarded_ignored), 1);
    });
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].starts_with("127.0.0.1 - - ["), "{}", lines[0]);
}

/// One `GET` on a fresh connection to `addr`.
fn fresh_get(addr: std::net::SocketAddr, path: &str) -> crate::support::Resp {
    Client::connect(addr).get(path)
}

#[test]
fn issue_13_sigterm_with_a_drain_delay_fails_healthz_before_the_listener_closes() {
    let delay = Duration::from_secs(2);
    let mut proc = spawn_bin(&["--drain-delay", "2s", "--access-log", "off"], None);
    let admin = proc.admin_addr();
    let mut kept = Client::connect(proc.addr);
    assert_eq!(kept.get("/healthz").status, 200);
    let metrics = fresh_get(admin, "/metrics").text();
    assert!(metrics.contains("\ncorral_draining 0\n"), "{metrics}");

    proc.signal(libc::SIGTERM);
    let signalled = Instant::now();
    assert!(
        proc.wait_line("draining:", WITHIN).is_some(),
        "no draining line; stderr: {:#?}",
        proc.seen
    );
    // Still accepting: a health check gets its 503, and closes.
    let r = fresh_get(proc.addr, "/healthz");
    assert_eq!((r.status, r.text().as_str()), (503, "draining\n"));
    assert!(r.says_close(), "{r:?}");
    // Requests are still served, each closing its connection, so a front
    // keeps no connection that the end of the delay would cut.
    let r = kept.get("/primes?below=100&format=json");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.says_close(), "{r:?}");
    let metrics = fresh_get(admin, "/metrics").text();
    assert!(metrics.contains("\ncorral_draining 1\n"), "{metrics}");

    // Then the listener closes and the process exits cleanly, not before
    // the delay is over.
    assert!(
        wait_until(WITHIN, || TcpStream::connect_timeout(
            &proc.addr,
            Duration::from_secs(1)
        )
        .is_err()),
        "still accepting long after the drain delay"
    );
    let status = proc.wait_exit(WITHIN).expect("exited after the drain");
    assert!(
        status.success(),
        "exit status {status}; stderr: {:#?}",
        proc.seen
    );
    assert!(
        signalled.elapsed() >= delay,
        "stopped before the delay was over"
    );
}

#[test]
fn issue_13_a_request_queued_when_the_listener_closes_is_answered() {
    // A front that opens a connection and sends at once, just before the
    // listener closes: the connection waits for a worker while shutdown
    // begins, and must be read and answered, not closed under its request.
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (entered_tx, release_rx) = (Mutex::new(entered_tx), Mutex::new(release_rx));
    let srv = start(
        |c| c.workers = 1,
        move |req: &mut Request| {
            if req.path() == "/slow" {
                let _ = entered_tx.lock().unwrap().send(());
                let _ = release_rx.lock().unwrap().recv_timeout(WITHIN);
            }
            Response::text(200, format!("{} {}", req.method(), req.path()))
        },
    );
    let mut busy = srv.connect();
    busy.send("GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
    entered_rx
        .recv_timeout(WITHIN)
        .expect("the one worker is busy");
    let mut late = srv.connect();
    late.send("POST /late HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(srv.wait_metric(|m| &m.connections_queued, 1, WITHIN), 1);
    srv.handle.shutdown();
    release_tx.send(()).unwrap();
    assert_eq!(busy.response().text(), "GET /slow");
    let r = late.response();
    assert_eq!((r.status, r.text().as_str()), (200, "POST /late"), "{r:?}");
    assert!(r.says_close(), "{r:?}");
}
