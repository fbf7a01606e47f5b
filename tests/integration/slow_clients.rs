//! Slow and silent clients: the head deadline is for the whole head, a body
//! must keep moving (`slow_body.rs` has its minimum rate), and idle, silent
//! or trickling connections are parked instead of holding workers.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{start_app, Client};

/// A request head that is never finished: the blank line never comes.
const PARTIAL_HEAD: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Trickle: ";

#[test]
fn slowloris_gets_408_at_the_head_deadline() {
    let header_timeout = Duration::from_millis(300);
    let srv = start_app(|c| c.header_timeout = header_timeout);
    let c = srv.connect();
    let mut writer = c.stream.try_clone().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // One byte every 50 ms: each one would reset a per-read timeout. At most
    // 100 bytes, so the full trickle would take 5 s.
    const BYTES: usize = 100;
    let trickle = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let bytes = PARTIAL_HEAD.iter().chain(std::iter::repeat(&b'a'));
            for &b in bytes.take(BYTES) {
                if stop.load(Ordering::Relaxed) || writer.write_all(&[b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let started = Instant::now();

    // Meanwhile a fresh client is served.
    let mut fresh = srv.connect();
    assert_eq!(fresh.get("/healthz").body, b"ok\n");

    let mut c = c;
    c.read_until_close();
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let r = c.response();
    assert_eq!(r.status, 408, "{r:?}");
    assert!(r.says_close());
    assert!(
        elapsed >= header_timeout - Duration::from_millis(50),
        "408 after {elapsed:?}, before the deadline"
    );
    // The whole trickle takes 5 s; the deadline is 300 ms.
    assert!(
        elapsed < Duration::from_secs(3),
        "408 only after {elapsed:?}: the deadline is reset by each byte"
    );
    trickle.join().unwrap();
    assert_eq!(srv.metric(|m| &m.header_timeouts), 1);
}

/// A body that stops coming is answered 408 (no response has started, RFC
/// 9110 §15.5.9), then closed; silently closed until issue 11.
#[test]
fn stalled_body_gets_408_after_read_timeout() {
    let srv = start_app(|c| c.read_timeout = Duration::from_millis(300));
    let mut c = srv.connect();
    c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789");
    let started = Instant::now();
    let r = c.response();
    assert_eq!(r.status, 408, "{r:?}");
    assert!(r.says_close());
    assert!(
        c.closes_within(Duration::from_secs(5)),
        "stalled body not closed"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(3),
        "closed only after {elapsed:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(200),
        "closed after {elapsed:?}"
    );
    assert_eq!(srv.metric(|m| &m.body_timeouts), 1);
}

#[test]
fn idle_silent_and_slow_connections_do_not_starve_the_pool() {
    const WORKERS: usize = 2;
    const EACH: usize = 4 * WORKERS;
    // Long deadlines: nothing may expire while the test runs, so only
    // parking can free the workers.
    let srv = start_app(|c| {
        c.workers = WORKERS;
        c.header_timeout = Duration::from_secs(10);
        c.idle_timeout = Duration::from_secs(10);
    });

    let mut idle = Vec::new();
    for _ in 0..EACH {
        let mut c = srv.connect();
        assert_eq!(c.get("/healthz").status, 200);
        idle.push(c);
    }
    let _silent: Vec<Client> = (0..EACH).map(|_| srv.connect()).collect();
    let mut slow = Vec::new();
    for _ in 0..EACH {
        let mut c = srv.connect();
        c.send(PARTIAL_HEAD);
        slow.push(c);
    }

    let want = (3 * EACH) as u64;
    let parked = srv.wait_metric(|m| &m.connections_parked, want, Duration::from_secs(10));
    assert_eq!(parked, want, "every quiet connection should be parked");

    let started = Instant::now();
    let mut fresh = srv.connect();
    let r = fresh.get("/healthz");
    let elapsed = started.elapsed();
    assert_eq!(r.body, b"ok\n");
    // A starved pool answers only once the 10 s header timeout frees a
    // worker; this bound is generous for a loaded machine.
    assert!(
        elapsed < Duration::from_secs(4),
        "answered after {elapsed:?}"
    );

    // The parked connections are still alive and usable.
    for c in idle.iter_mut().take(2) {
        assert_eq!(c.get("/healthz").status, 200);
    }
    for c in slow.iter_mut().take(2) {
        c.send("\r\n\r\n");
        assert_eq!(c.response().status, 200);
    }
}

/// Connects a silent client, then one that asks for `/healthz`, and
/// returns how many connections corral had accepted once that was answered.
/// The listener queues connections in the order their handshakes completed,
/// and the acceptor takes all that are queued, so the silent one counts
/// unless the kernel still holds it.
fn accepted_by_the_answer(defer_accept: Duration) -> u64 {
    let srv = start_app(|c| c.defer_accept = defer_accept);
    let _silent = srv.connect();
    let mut talker = srv.connect();
    assert_eq!(talker.get("/healthz").status, 200);
    srv.metric(|m| &m.connections_accepted)
}

/// A connection that has sent nothing stays with the kernel for
/// `--defer-accept` (`TCP_DEFER_ACCEPT`): it costs no descriptor and no
/// worker meanwhile, and the connections that speak are served past it.
#[test]
fn a_silent_connection_waits_in_the_kernel_for_defer_accept() {
    // Long enough that no loaded machine takes as long over the talker's
    // exchange; nothing waits for it.
    assert_eq!(accepted_by_the_answer(Duration::from_secs(30)), 1);
}

#[test]
fn without_defer_accept_a_silent_connection_is_accepted_at_once() {
    assert_eq!(accepted_by_the_answer(Duration::ZERO), 2);
}

/// The kernel lets a silent connection through once `--defer-accept` has
/// passed; `--header-timeout` then ends it, so it cannot stay forever.
#[test]
fn a_silent_connection_is_closed_after_defer_accept_and_the_header_timeout() {
    let header_timeout = Duration::from_millis(300);
    let srv = start_app(|c| {
        c.defer_accept = Duration::from_secs(1);
        c.header_timeout = header_timeout;
    });
    let started = Instant::now();
    let mut silent = srv.connect();
    // About 1.3 s: the kernel lets it through when the client answers the
    // SYN-ACK it sends again after a second, then the head deadline.
    assert!(silent.closes_within(Duration::from_secs(8)), "still open");
    let elapsed = started.elapsed();
    // The retransmit timer cannot fire early: closing sooner would mean
    // corral had the connection before the kernel held it a second.
    assert!(
        elapsed >= Duration::from_millis(950) + header_timeout,
        "closed after {elapsed:?}, before the defer and the head deadline"
    );
    assert_eq!(srv.metric(|m| &m.connections_accepted), 1);
}
