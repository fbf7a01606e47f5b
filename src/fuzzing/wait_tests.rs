//! Table tests for `conn::serve` on the `connection` target's driver:
//! requests answered later (see `wait.rs` for the `/later/` paths), and the
//! read of a connection whose deadline passed while it waited for a
//! worker. Every run also passes the target's own checks (one response per
//! request, in order, as the replay predicts; nothing read while a request
//! waits; the wait counters). Each case runs three ways: the peer's bytes
//! whole, one byte per read (and per write), and followed by one more
//! request, which is answered only if the connection goes on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::serve::{run, Outcome, Setup};

/// Configuration bits (see [`connection`](super::connection)).
const EOF: u8 = 4;
const SHUTDOWN_DURING_FIRST: u8 = 0x10;
const NO_WAITING: u8 = 128;

const TRAILING: &[u8] = b"GET /trailing HTTP/1.1\r\nHost: a\r\n\r\n";

/// A table row: name, configuration bits, what the peer sends (each item
/// that starts with `/` is a `GET` of that path, the others raw bytes), the
/// final responses' statuses in order, the requests the handler sees, the
/// times the loop hands the connection over to wait, the waits (refused,
/// timed out, left by their client), and whether the connection goes on
/// after the case's requests.
type Case = (
    &'static str,
    u8,
    &'static [&'static str],
    &'static [u16],
    usize,
    usize,
    (u64, u64, u64),
    bool,
);

/// The bytes of a row's requests.
fn requests(items: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        if item.starts_with('/') {
            out.extend_from_slice(format!("GET {item} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        } else {
            out.extend_from_slice(item.as_bytes());
        }
    }
    out
}

/// The three ways to run a row: (name, control bytes, payload). Bytes
/// after an announced body would be that body, so such a row runs two.
fn ways(items: &[&str]) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    let payload = requests(items);
    let mut trailing = payload.clone();
    trailing.extend_from_slice(TRAILING);
    let mut ways = vec![
        ("whole", Vec::new(), payload.clone()),
        // One byte per read and per write, and more than enough of them.
        ("byte by byte", vec![0; 4096], payload),
        ("with trailing bytes", Vec::new(), trailing),
    ];
    if items.iter().any(|i| i.contains("100-continue")) {
        ways.pop();
    }
    ways
}

fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

fn run_cases(cases: &[Case], queued: Duration) {
    for &(name, config, items, statuses, served, waits, counts, persists) in cases {
        for (way, ctl, payload) in ways(items) {
            let what = format!("{name} ({way})");
            let out: Outcome = run(&Setup {
                config: config | EOF,
                ctl: &ctl,
                payload: &payload,
                queued,
            });
            let trailing_answered = way == "with trailing bytes" && persists;
            let mut statuses = statuses.to_vec();
            if trailing_answered {
                statuses.push(200);
            }
            assert_eq!(out.statuses, statuses, "{what}: statuses");
            let served = served + usize::from(trailing_answered);
            assert_eq!(out.served, served, "{what}: requests served");
            assert_eq!(out.waits, waits, "{what}: waits");
            let m = &out.metrics;
            let got = (
                load(&m.waits_refused),
                load(&m.waits_timed_out),
                load(&m.waiters_left),
            );
            assert_eq!(got, counts, "{what}: waits refused, timed out, left");
        }
    }
}

const POST_LATER: &str = "POST /later/a999 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi";
const CONTINUE_REFUSED: &str =
    "POST /nobody/later/a5 HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
const HTTP10_LATER: &str = "GET /later/a5 HTTP/1.0\r\n\r\n";

/// Requests answered later, and each way a wait ends.
#[rustfmt::skip]
const ANSWERED_LATER: &[Case] = &[
    ("parks, and the answer comes", 0, &["/later/a10"], &[200], 1, 1, (0, 0, 0), true),
    ("the answer comes before the wake-up is set", 0, &["/later/a0"], &[200], 1, 1, (0, 0, 0), true),
    ("the answer comes as the deadline passes", 0, &["/later/l"], &[200], 1, 1, (0, 0, 0), true),
    ("pipelined behind waiting requests, in order", 0, &["/later/a10", "/b", POST_LATER, "/c"], &[200, 200, 200, 200], 4, 2, (0, 0, 0), true),
    ("the client hangs up while it waits", 0, &["/later/h", "/b"], &[], 1, 1, (0, 0, 1), false),
    ("the deadline passes: 503, and on", 0, &["/later/t", "/b"], &[503, 200], 2, 1, (0, 1, 0), true),
    ("the answer comes after the deadline", 0, &["/later/a1000"], &[503], 1, 1, (0, 1, 0), true),
    ("the reply is dropped unsent: 500", 0, &["/later/d", "/b"], &[500, 200], 2, 1, (0, 0, 0), true),
    ("the drain ends first: 503, close", 0, &["/later/s", "/b"], &[503], 1, 1, (0, 1, 0), false),
    ("shutdown begins while it waits", SHUTDOWN_DURING_FIRST, &["/later/a10", "/b"], &[200], 1, 1, (0, 0, 0), false),
    ("every waiting slot taken: 503 at once", 0, &["/later/r", "/b"], &[503, 200], 2, 0, (1, 0, 0), true),
    ("max_waiting 0: every wait refused", NO_WAITING, &["/later/a10", "/later/t"], &[503, 503], 2, 0, (2, 0, 0), true),
    ("answered before the handler returned", 0, &["/later/n"], &[200], 1, 0, (0, 0, 0), true),
    ("the same, with no slot free", NO_WAITING, &["/later/n"], &[200], 1, 0, (0, 0, 0), true),
    ("dropped before the handler returned", 0, &["/later/x"], &[500], 1, 0, (0, 0, 0), true),
    ("a refused 100-continue body waits", 0, &[CONTINUE_REFUSED], &[200], 1, 1, (0, 0, 0), false),
    ("HTTP/1.0 waits, then closes", 0, &[HTTP10_LATER], &[200], 1, 1, (0, 0, 0), false),
];

#[test]
fn answered_later() {
    run_cases(ANSWERED_LATER, Duration::ZERO);
}

/// Requests that sat in the worker queue past their header deadline (the
/// server's delay, not the client's): what arrived is read first.
#[rustfmt::skip]
const OVERDUE: &[Case] = &[
    ("a complete request, overdue", 0, &["/"], &[200], 1, 0, (0, 0, 0), true),
    ("two pipelined requests, overdue", 0, &["/a", "/later/a5"], &[200, 200], 2, 1, (0, 0, 0), true),
];

/// A connection whose header deadline passed while it waited for a worker
/// has what arrived read first: a complete request is answered, a partial
/// one gets 408, and an empty connection is closed.
#[test]
fn overdue_read() {
    // Longer than the header timeout.
    let queued = Duration::from_millis(1500);
    run_cases(OVERDUE, queued);
    // A partial head with the peer still there: 408. (Had the peer closed,
    // the read would say so, and the connection would just close.) The
    // trailing request would complete it, so it runs two ways.
    for ctl in [Vec::new(), vec![0; 4096]] {
        let out = run(&Setup {
            config: 0,
            ctl: &ctl,
            payload: b"GET / HTTP/1.1\r\nHo",
            queued,
        });
        assert_eq!(out.statuses, [408], "a partial head, overdue");
        assert_eq!(out.served, 0);
        assert_eq!(load(&out.metrics.header_timeouts), 1);
    }
    // Nothing arrived: closed without a word, whether the peer is silent
    // or has closed.
    for config in [0, EOF] {
        let out = run(&Setup {
            config,
            ctl: &[],
            payload: b"",
            queued,
        });
        assert_eq!((out.served, out.written), (0, 0), "nothing, overdue");
        let timeouts = load(&out.metrics.header_timeouts);
        assert_eq!(timeouts, u64::from(config == 0), "header timeouts");
    }
}
