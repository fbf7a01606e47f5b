//! A body that trickles: the total body deadline, `--body-timeout` after
//! the head plus a second per `--min-body-rate` bytes received, cuts a
//! client sending below the rate (408, then close) and lets one just above
//! it finish, wherever the connection waits (on a worker or parked).
//!
//! The timings are chosen so that load can only make the server look more
//! lenient, never stricter: the bounds that a slow machine could stretch
//! are generous, and the ones it could not are exact.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::start_app;

const RATE: usize = 1000;

/// Sends `total` bytes of body in pieces of `piece` bytes on a fixed
/// schedule of `rate` bytes a second from now: a piece late because the
/// thread was descheduled goes out as soon as it can, so delays do not
/// add up. Stops at `stop` or when a write fails.
fn trickle(
    mut stream: std::net::TcpStream,
    rate: usize,
    piece: usize,
    total: usize,
    stop: Arc<AtomicBool>,
) -> JoinHandle<usize> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut sent = 0;
        while sent < total && !stop.load(Ordering::Relaxed) {
            let due = start + Duration::from_secs_f64((sent + piece) as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let n = piece.min(total - sent);
            if stream.write_all(&vec![b'x'; n]).is_err() {
                break;
            }
            sent += n;
        }
        sent
    })
}

/// Issue 11: a body sent at a fifth of the minimum rate is cut with 408 at
/// the deadline the rate implies. Sent at 200 B/s against a rate of 1000
/// B/s after 500ms of slack, the deadline `0.5s + received / 1000` is
/// passed once some 125 bytes are in, about 0.63s after the head: long
/// before the 100s the whole body would take, or the 10s `--read-timeout`
/// (which the trickle never lets expire).
#[test]
fn issue_11_body_below_the_minimum_rate_gets_408() {
    let body_timeout = Duration::from_millis(500);
    let srv = start_app(|c| {
        c.body_timeout = body_timeout;
        c.min_body_rate = RATE;
    });
    let mut c = srv.connect();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 20000\r\n\r\n");
    let writer = c.stream.try_clone().unwrap();
    let sender = trickle(writer, RATE / 5, 10, 20_000, stop.clone());

    c.read_until_close();
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let r = c.response();
    assert_eq!(r.status, 408, "{r:?}");
    assert!(r.says_close());
    // The deadline is at least the slack after the head arrived, which
    // was after `started`: no machine can make the cut come sooner.
    assert!(
        elapsed >= body_timeout,
        "cut after {elapsed:?}, before the {body_timeout:?} of slack"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "cut only after {elapsed:?}: the rate is not enforced"
    );
    let sent = sender.join().unwrap();
    assert!(sent < 20_000, "the whole body went out ({sent} bytes)");
    assert_eq!(srv.metric(|m| &m.body_timeouts), 1);
}

/// The same rate, a body sent at 1.25 times it: it completes, though it
/// takes twice the slack. To be cut it would have to fall some 1.6s behind
/// its schedule (`2s + received / 1000` against `received / 1250`).
#[test]
fn body_just_above_the_minimum_rate_completes() {
    const TOTAL: usize = 5_000;
    let srv = start_app(|c| {
        c.body_timeout = Duration::from_secs(2);
        c.min_body_rate = RATE;
        c.max_body_bytes = TOTAL;
    });
    let mut c = srv.connect();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    c.send(format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n\
         Content-Length: {TOTAL}\r\n\r\n"
    ));
    let writer = c.stream.try_clone().unwrap();
    let sender = trickle(writer, RATE * 5 / 4, 25, TOTAL, stop);
    assert_eq!(sender.join().unwrap(), TOTAL);
    let r = c.response();
    let elapsed = started.elapsed();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, vec![b'x'; TOTAL]);
    assert!(!r.says_close());
    // It really trickled: its last piece was due 4s in, twice the slack,
    // so the rate, not the slack alone, let it through.
    assert!(elapsed >= Duration::from_secs(4), "sent in {elapsed:?}");
    assert_eq!(srv.metric(|m| &m.body_timeouts), 0);
}

/// A trickling body holds no worker while it waits: with one worker, the
/// slow body is parked between pieces and another client is served
/// meanwhile; the parked connection still meets its rate deadline.
#[test]
fn a_slow_body_is_parked_and_still_cut() {
    let srv = start_app(|c| {
        c.workers = 1;
        c.body_timeout = Duration::from_millis(500);
        c.min_body_rate = RATE;
    });
    let mut slow = srv.connect();
    let started = Instant::now();
    slow.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nxx");
    // Nothing more comes: only the parked connection's deadline can end it
    // (`--read-timeout` is 10s, the rate deadline 0.5s + 2/1000 s).
    let parked = srv.wait_metric(|m| &m.connections_parked, 1, Duration::from_secs(5));
    assert_eq!(parked, 1, "the slow body should wait parked");
    let mut fresh = srv.connect();
    assert_eq!(fresh.get("/healthz").status, 200);
    let r = slow.response();
    let elapsed = started.elapsed();
    assert_eq!(r.status, 408, "{r:?}");
    assert!(slow.closes_within(Duration::from_secs(5)));
    assert!(
        elapsed >= Duration::from_millis(500),
        "cut after {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "cut after {elapsed:?}");
    assert_eq!(srv.metric(|m| &m.body_timeouts), 1);
}
