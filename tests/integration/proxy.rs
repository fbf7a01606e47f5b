//! The reverse proxy's routes, framing safety and upstream pool (issue 10),
//! against the in-process upstream of `upstream.rs`. Each test is one rule;
//! waits are on what the upstream has received, never on the clock, except
//! where the rule under test is a deadline.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use crate::support::request_head;
use crate::upstream::{ok, response, route, start_proxy, Gate, Reply, Upstream, HANG};

/// A port nothing listens on: bound, then let go.
fn dead_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr.to_string()
}

#[test]
fn uncovered_paths_go_to_the_built_in_app() {
    let up = Upstream::always(ok("from upstream\n", &[]));
    let server = start_proxy(&[route("/api", &up)], |_| {});
    let mut c = server.connect();
    let r = c.get("/api/x?y=1");
    assert_eq!((r.status, r.text().as_str()), (200, "from upstream\n"));
    assert_eq!(up.seen()[0].target, "/api/x?y=1", "the path goes unchanged");
    let r = c.get("/healthz");
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    assert_eq!(up.requests(), 1);
}

#[test]
fn the_longest_prefix_wins() {
    let short = Upstream::always(ok("short", &[]));
    let long = Upstream::always(ok("long", &[]));
    let server = start_proxy(&[route("/a/b", &long), route("/", &short)], |_| {});
    let mut c = server.connect();
    assert_eq!(c.get("/a/b/c").text(), "long");
    assert_eq!(c.get("/a/x").text(), "short");
    assert_eq!(c.get("/healthz").text(), "short", "/ covers everything");
}

#[test]
fn the_request_is_rebuilt_without_hop_by_hop_fields() {
    let up = Upstream::always(ok("x", &[]));
    let server = start_proxy(&[route("/", &up)], |_| {});
    let mut c = server.connect();
    let r = c.get_with(
        "/p",
        &[
            // A client naming the forwarding fields in Connection must not
            // strip them.
            ("Connection", "X-Forwarded-For, Via, X-Secret"),
            ("X-Secret", "1"),
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
            ("Keep-Alive", "timeout=9"),
            ("TE", "trailers"),
            ("Upgrade", "h2c"),
            ("Accept", "text/plain"),
        ],
    );
    assert_eq!(r.status, 200);
    let seen = &up.seen()[0];
    assert_eq!(seen.header("host"), Some("test"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("test"));
    assert_eq!(seen.header("via"), Some("1.1 corral"));
    assert_eq!(seen.header("accept"), Some("text/plain"));
    for gone in ["x-secret", "keep-alive", "te", "upgrade", "connection"] {
        assert_eq!(seen.header(gone), None, "{gone} in {}", seen.head);
    }
}

#[test]
fn request_bodies_go_with_their_length() {
    let up = Upstream::start(|req, _| Reply::Send(ok(&req.body.len().to_string(), &[])));
    let server = start_proxy(&[route("/", &up)], |_| {});
    let mut c = server.connect();
    c.send(
        "POST /in HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
         3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    );
    let r = c.response();
    assert_eq!((r.status, r.text().as_str()), (200, "5"));
    let seen = &up.seen()[0];
    assert_eq!(
        (seen.method.as_str(), seen.body.as_slice()),
        ("POST", &b"abcde"[..])
    );
    assert_eq!(seen.header("content-length"), Some("5"));
    assert_eq!(seen.header("transfer-encoding"), None);
}

#[test]
fn the_response_loses_hop_by_hop_fields_and_keeps_the_client_connection() {
    let up = Upstream::start(|_, _| {
        Reply::Close(response(
            "200 OK",
            &[
                "Connection: close, X-Internal",
                "X-Internal: 1",
                "X-Kept: 2",
            ],
            b"x",
        ))
    });
    let server = start_proxy(&[route("/", &up)], |_| {});
    let mut c = server.connect();
    let r = c.get("/");
    assert_eq!(r.header("x-internal"), None);
    assert_eq!(r.header("x-kept"), Some("2"));
    assert_eq!(r.header("via"), Some("1.1 corral"));
    assert!(!r.says_close(), "the upstream's close is not the client's");
    assert_eq!(c.get("/").status, 200, "the client connection goes on");
}

#[test]
fn an_unreachable_upstream_is_502() {
    let server = start_proxy(&[format!("/={}", dead_port())], |_| {});
    let r = server.connect().get("/");
    assert_eq!(r.status, 502);
    assert!(r.text().contains("cannot connect"), "{}", r.text());
}

#[test]
fn a_slow_upstream_is_504_at_the_deadline() {
    let gate = Gate::default();
    let held = gate.clone();
    let up = Upstream::start(move |_, _| Reply::After(held.clone(), ok("late", &[])));
    let server = start_proxy(&[route("/", &up)], |c| {
        c.proxy_timeout = Duration::from_millis(300);
    });
    let start = Instant::now();
    let r = server.connect().get("/");
    gate.open();
    assert_eq!(r.status, 504);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < HANG,
        "{took:?}"
    );
}

#[test]
fn bad_framing_is_502_and_that_connection_is_not_reused() {
    let up = Upstream::start(|_, n| {
        Reply::Send(if n == 1 {
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec()
        } else {
            ok("fine", &[])
        })
    });
    let server = start_proxy(&[route("/", &up)], |_| {});
    let mut c = server.connect();
    let r = c.get("/");
    assert_eq!(r.status, 502);
    assert!(r.text().contains("Content-Length and Transfer-Encoding"));
    // Another path: the failure of the first is remembered a moment.
    assert_eq!(c.get("/2").text(), "fine");
    assert_eq!(up.connections(), 2, "the bad connection was closed");
}

#[test]
fn a_body_cut_short_is_502() {
    let up = Upstream::start(|_, _| {
        Reply::Close(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello".to_vec())
    });
    let server = start_proxy(&[route("/", &up)], |_| {});
    let r = server.connect().get("/");
    assert_eq!(r.status, 502);
    assert!(r.text().contains("cut short"), "{}", r.text());
}

#[test]
fn response_heads_over_the_limit_are_502() {
    let big = format!("X-Big: {}", "b".repeat(2000));
    let up = Upstream::start(move |_, _| Reply::Send(response("200 OK", &[&big], b"x")));
    let server = start_proxy(&[route("/", &up)], |c| c.max_head_bytes = 1024);
    let r = server.connect().get("/");
    assert_eq!(r.status, 502);
    assert!(r.text().contains("head too large"), "{}", r.text());
}

#[test]
fn large_bodies_stream_through() {
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let sent = body.clone();
    let up = Upstream::start(move |_, _| Reply::Send(response("200 OK", &[], &sent)));
    let server = start_proxy(&[route("/", &up)], |c| c.cache_max_entry_bytes = 16 * 1024);
    let mut c = server.connect();
    let r = c.get("/big");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body);
    // The upstream connection went back after the streamed body.
    assert_eq!(c.get("/big").body.len(), body.len());
    assert_eq!(up.connections(), 1);
}

#[test]
fn a_large_body_cut_short_closes_the_client_connection() {
    let up = Upstream::start(|_, _| {
        let mut partial = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec();
        partial.extend(vec![b'x'; 50_000]);
        Reply::Close(partial)
    });
    let server = start_proxy(&[route("/", &up)], |c| c.cache_max_entry_bytes = 16 * 1024);
    let mut c = server.connect();
    c.send(request_head("GET", "/big", &[]));
    // The head went out before the body failed; the body must not look
    // whole: the chunked stream ends without its last chunk.
    assert!(
        c.try_response(false).is_err(),
        "a truncated body looked whole"
    );
}

#[test]
fn keep_alive_connections_to_the_upstream_are_reused() {
    let up = Upstream::always(ok("x", &[]));
    let server = start_proxy(&[route("/", &up)], |_| {});
    let mut c = server.connect();
    for path in ["/1", "/2", "/3"] {
        assert_eq!(c.get(path).status, 200);
    }
    assert_eq!((up.requests(), up.connections()), (3, 1));
    assert!(up.seen().iter().all(|s| s.conn == 1));
}

#[test]
fn an_idle_connection_the_upstream_closed_is_not_used() {
    // Every answer closes its connection, so each idle one is stale by the
    // next request, even a POST, which is never retried on a live one.
    let up = Upstream::start(|_, _| Reply::Close(ok("x", &[])));
    let server = start_proxy(&[route("/", &up)], |_| {});
    let mut c = server.connect();
    assert_eq!(c.get("/").status, 200);
    assert_eq!(c.post_empty("/").status, 200);
    assert_eq!((up.requests(), up.connections()), (2, 2));
}

#[test]
fn requests_go_to_the_upstream_with_the_fewest_in_flight() {
    let gate = Gate::default();
    let answer = |gate: Gate| {
        move |req: &crate::upstream::Seen, _: usize| {
            if req.target == "/slow" {
                Reply::After(gate.clone(), ok("slow", &[]))
            } else {
                Reply::Send(ok("fast", &[]))
            }
        }
    };
    let a = Upstream::start(answer(gate.clone()));
    let b = Upstream::start(answer(gate.clone()));
    let server = start_proxy(&[format!("/={},{}", a.addr, b.addr)], |_| {});
    let mut slow = server.connect();
    slow.send(request_head("GET", "/slow", &[]));
    let one_arrived = || a.requests() + b.requests() == 1;
    assert!(crate::support::wait_until(HANG, one_arrived));
    let busy_is_a = a.requests() == 1;
    let mut c = server.connect();
    for i in 0..4 {
        assert_eq!(c.get(&format!("/fast{i}")).text(), "fast");
    }
    let (busy, idle) = if busy_is_a { (&a, &b) } else { (&b, &a) };
    assert_eq!((busy.requests(), idle.requests()), (1, 4));
    gate.open();
    assert_eq!(slow.response().text(), "slow");
}

#[test]
fn a_failed_upstream_is_skipped_and_connect_failures_retried() {
    let up = Upstream::always(ok("alive", &[]));
    let server = start_proxy(&[format!("/={},{}", dead_port(), up.addr)], |_| {});
    let mut c = server.connect();
    for _ in 0..4 {
        // Nothing reached the dead one, so even a POST goes on.
        assert_eq!(c.get("/").text(), "alive");
        assert_eq!(c.post_empty("/").text(), "alive");
    }
    assert_eq!(up.requests(), 8);
}

#[test]
fn an_idempotent_request_is_retried_elsewhere_and_a_post_is_not() {
    // `mute` reads each request and hangs up without a word.
    let mute = Upstream::start(|_, _| Reply::Close(Vec::new()));
    let up = Upstream::always(ok("answered", &[]));
    let server = start_proxy(&[format!("/={},{}", mute.addr, up.addr)], |_| {});
    let mut c = server.connect();
    for _ in 0..2 {
        assert_eq!(c.get("/").text(), "answered");
    }
    assert_eq!(mute.requests(), 1, "tried once, then skipped as failed");

    let only_mute = Upstream::start(|_, _| Reply::Close(Vec::new()));
    let server = start_proxy(&[route("/", &only_mute)], |_| {});
    let r = server.connect().post_empty("/");
    assert_eq!(r.status, 502);
    assert_eq!(only_mute.requests(), 1, "a POST is sent once");
}

#[test]
fn websocket_upgrades_are_refused() {
    let up = Upstream::always(ok("x", &[]));
    let server = start_proxy(&[route("/", &up)], |_| {});
    let r = server.connect().get_with(
        "/ws",
        &[("Connection", "Upgrade"), ("Upgrade", "websocket")],
    );
    assert_eq!(r.status, 501);
    assert!(r.text().contains("WebSocket"));
    assert_eq!(up.requests(), 0);
}
