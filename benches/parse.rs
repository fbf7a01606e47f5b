//! The sans-IO request path without sockets: parse a request from bytes
//! and write its response head, many times over, on one thread. It
//! measures what a change to parsing or head writing costs, apart from the
//! kernel and the scheduler, which dominate a server's time per request
//! and move with the machine's load (BENCHMARKS.md, "HTTP: where a
//! request's time goes").
//!
//! ```text
//! cargo bench --bench parse
//! ```

use std::hint::black_box;
use std::io;
use std::time::Instant;

use corral::http::{Conn, Event, Limits, Response};

/// The request `wrk` sends.
const WRK: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";

/// A request as a browser sends it: ten field lines.
const BROWSER: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n\
Connection: keep-alive\r\nCookie: session=abcdef0123456789\r\n\
Upgrade-Insecure-Requests: 1\r\nSec-Fetch-Dest: document\r\nSec-Fetch-Mode: navigate\r\n\r\n";

const REQUESTS: u32 = 1_000_000;
const TRIALS: u32 = 7;

/// Nanoseconds per request, the best of [`TRIALS`]: the least disturbed.
fn measure(req: &'static [u8]) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..TRIALS {
        let mut conn = Conn::new(Limits::default(), None);
        let mut head = Vec::with_capacity(256);
        let started = Instant::now();
        for _ in 0..REQUESTS {
            serve_one(&mut conn, req, &mut head);
        }
        best = best.min(started.elapsed().as_nanos() as f64 / f64::from(REQUESTS));
    }
    best
}

/// Feeds `req` to `conn`, takes the request out and writes a response head,
/// as the connection loop does for a keep-alive request.
fn serve_one(conn: &mut Conn, req: &'static [u8], head: &mut Vec<u8>) {
    let mut fed = false;
    loop {
        match conn.poll() {
            Event::NeedMore if !fed => {
                let read = conn.read_with(|buf: &mut [u8]| -> io::Result<usize> {
                    buf[..req.len()].copy_from_slice(req);
                    Ok(req.len())
                });
                assert!(matches!(read, Ok(n) if n == req.len()), "read {read:?}");
                fed = true;
            }
            Event::Request(r) => {
                let resp = Response::new(200)
                    .with_header("Content-Type", "text/plain")
                    .with_body("Hello, World!");
                head.clear();
                let outcome = conn.write_head(&resp, false, head);
                black_box((&r, outcome.keep_alive));
                conn.response_sent();
                return;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn main() {
    // Only `cargo bench` passes `--bench`; run any other way (`cargo test
    // --benches`), serve one request of each kind to show it works, and
    // time nothing.
    if !std::env::args().any(|a| a == "--bench") {
        let mut conn = Conn::new(Limits::default(), None);
        for req in [WRK, BROWSER] {
            serve_one(&mut conn, req, &mut Vec::new());
        }
        return;
    }
    println!("parse and response head, best of {TRIALS} trials of {REQUESTS} requests:");
    for (name, req) in [
        ("wrk's request (1 field)", WRK),
        ("a browser's (10 fields)", BROWSER),
    ] {
        println!("  {name:26} {:7.1} ns", measure(req));
    }
}
