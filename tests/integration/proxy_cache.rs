//! The proxy's cache (issue 10): RFC 9111 storability, collapsed
//! forwarding, hit-for-miss, Vary, stale serving and revalidation, against
//! the in-process upstream. One test per rule. Concurrency is arranged
//! with gates the upstream waits on and the server's own counters (how
//! many requests wait parked), never with sleeps.

use std::time::{Duration, Instant};

use crate::support::{request_head, Client, Resp, TestServer};
use crate::upstream::{ok, response, route, start_proxy, Gate, Reply, Seen, Upstream, HANG};

fn start(up: &Upstream) -> TestServer {
    start_proxy(&[route("/", up)], |c| c.cache_error_ttl = Duration::ZERO)
}

/// Sends `n` GETs of `path` at once, each on its own connection with its
/// own `X-Client` number, and returns the clients (responses unread).
fn stampede(server: &TestServer, path: &str, n: usize) -> Vec<Client> {
    (0..n)
        .map(|i| {
            let mut c = server.connect();
            c.send(request_head("GET", path, &[("X-Client", &i.to_string())]));
            c
        })
        .collect()
}

/// Waits until `n` requests wait parked in the server.
fn parked(server: &TestServer, n: u64) {
    let seen = server.wait_metric(|m| &m.requests_waiting, n, HANG);
    assert_eq!(seen, n, "requests waiting");
}

fn cache(r: &Resp) -> &str {
    r.header("x-cache").unwrap_or("-")
}

#[test]
fn concurrent_misses_send_one_request_and_are_answered_at_once() {
    let gate = Gate::default();
    let held = gate.clone();
    let up = Upstream::start(move |_, _| Reply::After(held.clone(), ok("value", &[])));
    let server = start(&up);
    let n = 50;
    let mut clients = stampede(&server, "/k", n);
    parked(&server, n as u64);
    assert!(crate::support::wait_until(HANG, || up.requests() == 1));
    let opened = Instant::now();
    gate.open();
    let mut outcomes: Vec<String> = Vec::new();
    for c in &mut clients {
        let r = c.response();
        assert_eq!((r.status, r.text().as_str()), (200, "value"));
        outcomes.push(cache(&r).to_owned());
    }
    // Waiters are woken by the fill, not by a poll (nginx's lock polls
    // every 500 ms).
    let took = opened.elapsed();
    assert!(
        took < Duration::from_millis(400),
        "{took:?} to answer the waiters"
    );
    outcomes.sort();
    assert_eq!(outcomes.iter().filter(|o| *o == "miss").count(), 1);
    assert_eq!(outcomes.iter().filter(|o| *o == "coalesced").count(), n - 1);
    assert_eq!(up.requests(), 1);
}

#[test]
fn hits_come_from_the_cache_with_age_and_etag() {
    let up = Upstream::always(ok("value", &["Cache-Control: max-age=60", "ETag: \"v1\""]));
    let server = start(&up);
    let mut c = server.connect();
    let first = c.get("/k?x=1");
    assert_eq!(cache(&first), "miss");
    let hit = c.get("/k?x=1");
    assert_eq!(
        (hit.status, cache(&hit), hit.text().as_str()),
        (200, "hit", "value")
    );
    assert!(hit.header("age").is_some());
    assert_eq!(hit.header("etag"), Some("\"v1\""));
    assert_eq!(hit.header("cache-control"), Some("max-age=60"));
    let not_modified = c.get_with("/k?x=1", &[("If-None-Match", "\"v1\"")]);
    assert_eq!(not_modified.status, 304);
    let part = c.get_with("/k?x=1", &[("Range", "bytes=1-2")]);
    assert_eq!((part.status, part.text().as_str()), (206, "al"));
    assert_eq!(
        c.get("/k?x=2").header("x-cache"),
        Some("miss"),
        "the query is in the key"
    );
    assert_eq!(up.requests(), 2);
}

/// Every value of field `name` in `r`.
fn all<'a>(r: &'a Resp, name: &str) -> Vec<&'a str> {
    r.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn every_answer_from_an_entry_carries_one_etag_and_the_via_chain() {
    // The upstream's own Via comes first in the chain (RFC 9110 §7.6.3).
    // Without an ETag of its own, a 200 gets the computed one; with one,
    // that one alone, as when the upstream lists it in Connection.
    let up = Upstream::start(|req: &Seen, _| {
        let with = |extra: &[&str]| {
            let mut fields = vec![
                "Cache-Control: max-age=0",
                "Via: 1.0 up",
                "Last-Modified: Sat, 05 Dec 2026 00:00:00 GMT",
            ];
            fields.extend_from_slice(extra);
            Reply::Send(ok("0123456789", &fields))
        };
        match req.target.as_str() {
            "/own" => with(&["ETag: \"v1\""]),
            "/hop" => with(&["ETag: \"hop\"", "Connection: ETag"]),
            // Revalidated by date: the computed ETag is corral's, which the
            // upstream never saw.
            _ if req.header("if-modified-since").is_some() => Reply::Send(response(
                "304 Not Modified",
                &["Cache-Control: max-age=60", "Via: 1.0 up"],
                b"",
            )),
            _ => with(&[]),
        }
    });
    let server = start(&up);
    let mut c = server.connect();
    let check = |r: &Resp, what: &str| {
        assert_eq!(all(r, "via"), ["1.0 up, 1.1 corral"], "{what}: {r:?}");
        let etags = all(r, "etag");
        assert_eq!(etags.len(), 1, "{what}: {r:?}");
        etags[0].to_owned()
    };

    // Computed: the miss, a revalidated answer (max-age=0, so the second
    // GET revalidates and the 304 refreshes it), a hit, HEAD, 304, 206.
    let computed = check(&c.get("/computed"), "miss");
    assert!(computed.starts_with('"'), "{computed}");
    let refreshed = c.get("/computed");
    assert_eq!(up.requests(), 2);
    assert_eq!(check(&refreshed, "revalidated"), computed);
    let hit = c.get("/computed");
    assert_eq!(cache(&hit), "hit");
    assert_eq!(check(&hit, "hit"), computed);
    assert_eq!(check(&c.head("/computed"), "head"), computed);
    let not_modified = c.get_with("/computed", &[("If-None-Match", &computed)]);
    assert_eq!(not_modified.status, 304);
    assert_eq!(check(&not_modified, "304"), computed);
    let part = c.get_with("/computed", &[("Range", "bytes=2-3")]);
    assert_eq!((part.status, part.text().as_str()), (206, "23"));
    assert_eq!(check(&part, "206"), computed);

    assert_eq!(check(&c.get("/own"), "upstream's"), "\"v1\"");
    // Named in Connection, the field is not relayed as such; the entry's
    // ETag is still sent once, the one conditional requests are held to.
    let etag = check(&c.get("/hop"), "hop-by-hop");
    let not_modified = c.get_with("/hop", &[("If-None-Match", &etag)]);
    assert_eq!(not_modified.status, 304);
    assert_eq!(check(&not_modified, "hop-by-hop 304"), etag);
}

#[test]
fn head_is_served_from_the_get_entry() {
    let up = Upstream::always(ok("twelve bytes", &[]));
    let server = start(&up);
    let mut c = server.connect();
    let head = c.head("/h");
    assert_eq!(
        (head.status, head.header("content-length")),
        (200, Some("12"))
    );
    assert_eq!(up.seen()[0].method, "GET", "a HEAD miss fills with GET");
    let get = c.get("/h");
    assert_eq!((cache(&get), get.text().as_str()), ("hit", "twelve bytes"));
    assert_eq!(up.requests(), 1);
}

#[test]
fn a_head_sent_upstream_keeps_the_upstreams_length() {
    let up = Upstream::start(|req, _| {
        let chunked = req.target == "/chunked";
        let mut out = String::from("HTTP/1.1 200 OK\r\nCache-Control: no-store\r\n");
        out.push_str(if chunked {
            "Transfer-Encoding: chunked\r\n\r\n"
        } else {
            "Content-Length: 12\r\n\r\n"
        });
        if req.method == "GET" {
            out.push_str(if chunked {
                "3\r\nabc\r\n0\r\n\r\n"
            } else {
                "twelve bytes"
            });
        }
        Reply::Send(out.into_bytes())
    });
    let server = start(&up);
    let mut c = server.connect();
    // The first GET marks the key pass; the HEADs after it go upstream as
    // HEADs, and their answers carry no body to measure.
    assert_eq!(cache(&c.get("/sized")), "pass");
    let head = c.head("/sized");
    assert_eq!(
        (head.status, cache(&head), head.header("content-length")),
        (200, "pass", Some("12"))
    );
    assert_eq!(cache(&c.get("/chunked")), "pass");
    let head = c.head("/chunked");
    assert_eq!((head.status, head.header("content-length")), (200, None));
    assert_eq!(head.header("transfer-encoding"), None);
    let methods: Vec<String> = up.seen().iter().map(|s| s.method.clone()).collect();
    assert_eq!(methods, ["GET", "HEAD", "GET", "HEAD"]);
    assert_eq!(
        c.get("/sized").text(),
        "twelve bytes",
        "the connection goes on"
    );
}

#[test]
fn responses_that_may_not_be_shared_are_not_stored() {
    for field in [
        "Cache-Control: no-store",
        "Cache-Control: private, max-age=60",
        "Set-Cookie: session=1",
        "Vary: *",
    ] {
        let up = Upstream::always(ok("x", &[field]));
        let server = start(&up);
        let mut c = server.connect();
        for _ in 0..2 {
            let r = c.get("/p");
            assert_eq!((r.status, cache(&r)), (200, "pass"), "{field}");
        }
        assert_eq!(up.requests(), 2, "{field}");
    }
}

#[test]
fn statuses_without_freshness_are_stored_only_if_cacheable_by_default() {
    let up = Upstream::start(|req, _| {
        Reply::Send(match req.target.as_str() {
            "/404" => response("404 Not Found", &[], b"no"),
            "/302" => response("302 Found", &["Location: /x"], b""),
            _ => response(
                "500 Internal Server Error",
                &["Cache-Control: max-age=60"],
                b"e",
            ),
        })
    });
    let server = start(&up);
    let mut c = server.connect();
    for path in ["/404", "/302", "/500"] {
        c.get(path);
        c.get(path);
    }
    let count = |p: &str| up.seen().iter().filter(|s| s.target == p).count();
    assert_eq!((count("/404"), count("/302"), count("/500")), (1, 2, 1));
}

#[test]
fn waiters_of_a_private_response_each_go_upstream_in_parallel() {
    let gate = Gate::default();
    let held = gate.clone();
    // Each answer is private to its client: it names the client.
    let up = Upstream::start(move |req: &Seen, n| {
        let me = req.header("x-client").unwrap_or("?").to_owned();
        let body = ok(&format!("for {me}"), &["Set-Cookie: id=1"]);
        if n == 1 {
            Reply::After(held.clone(), body)
        } else {
            Reply::Send(body)
        }
    });
    let server = start(&up);
    let n = 8;
    let mut clients = stampede(&server, "/me", n);
    parked(&server, n as u64);
    gate.open();
    for (i, c) in clients.iter_mut().enumerate() {
        let r = c.response();
        assert_eq!(
            r.text(),
            format!("for {i}"),
            "a client got another's response"
        );
        assert_eq!(cache(&r), "pass");
    }
    assert_eq!(up.requests(), n);
    // The key is marked pass: the next request goes straight upstream.
    let r = server.connect().get_with("/me", &[("X-Client", "x")]);
    assert_eq!(r.text(), "for x");
}

#[test]
fn vary_keeps_a_variant_per_request_value() {
    let up = Upstream::start(|req: &Seen, _| {
        let lang = req.header("accept-language").unwrap_or("none").to_owned();
        Reply::Send(ok(
            &lang,
            &["Vary: Accept-Language", "Cache-Control: max-age=60"],
        ))
    });
    let server = start(&up);
    let mut c = server.connect();
    for (lang, want_cache) in [("en", "miss"), ("fr", "miss"), ("en", "hit"), ("fr", "hit")] {
        let r = c.get_with("/v", &[("Accept-Language", lang)]);
        assert_eq!((r.text().as_str(), cache(&r)), (lang, want_cache));
    }
    assert_eq!(up.requests(), 2);
}

#[test]
fn an_authorized_request_is_stored_only_if_public() {
    let up = Upstream::start(|req: &Seen, _| {
        let public = req.target == "/public";
        Reply::Send(ok(
            "secret",
            if public {
                &["Cache-Control: public"]
            } else {
                &[]
            },
        ))
    });
    let server = start(&up);
    let mut c = server.connect();
    for path in ["/private", "/public"] {
        assert_eq!(
            c.get_with(path, &[("Authorization", "Bearer t")]).status,
            200
        );
        let anonymous = c.get(path);
        assert_eq!(anonymous.status, 200);
    }
    let count = |p: &str| up.seen().iter().filter(|s| s.target == p).count();
    assert_eq!((count("/private"), count("/public")), (2, 1));
}

#[test]
fn a_stale_entry_is_revalidated_and_a_304_refreshes_it() {
    let up = Upstream::start(|req: &Seen, _| {
        Reply::Send(if req.header("if-none-match") == Some("\"v1\"") {
            response(
                "304 Not Modified",
                &["ETag: \"v1\"", "Cache-Control: max-age=60"],
                b"",
            )
        } else {
            ok("body", &["ETag: \"v1\"", "Cache-Control: max-age=0"])
        })
    });
    let server = start(&up);
    let mut c = server.connect();
    assert_eq!(c.get("/r").text(), "body");
    let again = c.get("/r");
    assert_eq!((again.status, again.text().as_str()), (200, "body"));
    assert_eq!(up.seen()[1].header("if-none-match"), Some("\"v1\""));
    assert_eq!(
        again.header("cache-control"),
        Some("max-age=60"),
        "fields updated"
    );
    let hit = c.get("/r");
    assert_eq!(cache(&hit), "hit", "fresh again after the 304");
    assert_eq!(up.requests(), 2);
}

#[test]
fn expired_entries_are_refreshed_single_flight() {
    let gate = Gate::default();
    let held = gate.clone();
    let up = Upstream::start(move |_, n| {
        let body = ok(&format!("v{n}"), &["Cache-Control: max-age=0"]);
        if n == 1 {
            Reply::Send(body)
        } else {
            Reply::After(held.clone(), body)
        }
    });
    let server = start(&up);
    assert_eq!(server.connect().get("/e").text(), "v1");
    let n = 10;
    let mut clients = stampede(&server, "/e", n);
    parked(&server, n as u64);
    gate.open();
    for c in &mut clients {
        assert_eq!(c.response().text(), "v2");
    }
    assert_eq!(up.requests(), 2);
}

#[test]
fn stale_while_revalidate_serves_the_old_entry_during_one_refresh() {
    let gate = Gate::default();
    let held = gate.clone();
    let up = Upstream::start(move |_, n| {
        // Stale at once the first time; fresh for a minute once refreshed.
        let age = if n == 1 { 0 } else { 60 };
        let cc = format!("Cache-Control: max-age={age}, stale-while-revalidate=60");
        let body = ok(&format!("v{n}"), &[&cc]);
        if n == 1 {
            Reply::Send(body)
        } else {
            Reply::After(held.clone(), body)
        }
    });
    let server = start(&up);
    let mut c = server.connect();
    assert_eq!(c.get("/s").text(), "v1");
    for _ in 0..3 {
        let r = c.get("/s");
        assert_eq!((r.text().as_str(), cache(&r)), ("v1", "stale"));
    }
    assert!(crate::support::wait_until(HANG, || up.requests() == 2));
    gate.open();
    assert!(crate::support::wait_until(HANG, || c.get("/s").text() == "v2"));
    assert_eq!(up.requests(), 2, "one refresh for every stale answer");
}

#[test]
fn stale_if_error_covers_5xx_and_a_dead_upstream() {
    let up = Upstream::start(|_, n| {
        Reply::Send(if n == 1 {
            ok("old", &["Cache-Control: max-age=0, stale-if-error=60"])
        } else {
            response("503 Service Unavailable", &[], b"down")
        })
    });
    let server = start(&up);
    let mut c = server.connect();
    assert_eq!(c.get("/f").text(), "old");
    let r = c.get("/f");
    assert_eq!(
        (r.status, r.text().as_str(), cache(&r)),
        (200, "old", "stale")
    );
    let fresh = c.get("/other");
    assert_eq!(
        fresh.status, 503,
        "nothing stored: the upstream's own answer"
    );
    drop(up);
    let r = c.get("/f");
    assert_eq!((r.status, r.text().as_str()), (200, "old"), "upstream gone");
}

#[test]
fn an_expired_entry_meeting_a_remembered_failure_says_why() {
    let up = Upstream::always(ok("old", &["Cache-Control: max-age=0"]));
    let server = start_proxy(&[route("/", &up)], |c| {
        c.cache_error_ttl = Duration::from_secs(60);
    });
    let mut c = server.connect();
    assert_eq!(c.get("/e").text(), "old");
    drop(up);
    // The first refresh fails and is remembered (`--cache-error-ttl`); the
    // second meets that memory, and both say what went wrong.
    let first = c.get("/e");
    let second = c.get("/e");
    for r in [&first, &second] {
        assert_eq!(r.status, 502, "{}", r.text());
        assert!(r.text().contains("cannot connect"), "{}", r.text());
    }
}

#[test]
fn must_revalidate_is_504_when_the_upstream_is_unreachable() {
    let up = Upstream::always(ok(
        "old",
        &["Cache-Control: max-age=0, must-revalidate, stale-if-error=60"],
    ));
    let server = start(&up);
    let mut c = server.connect();
    assert_eq!(c.get("/m").text(), "old");
    drop(up);
    assert_eq!(c.get("/m").status, 504);
}

#[test]
fn a_post_invalidates_the_stored_response() {
    let up = Upstream::always(ok("x", &["Cache-Control: max-age=60"]));
    let server = start(&up);
    let mut c = server.connect();
    c.get("/i");
    assert_eq!(cache(&c.get("/i")), "hit");
    assert_eq!(c.post_empty("/i").status, 200);
    assert_eq!(cache(&c.get("/i")), "miss");
    assert_eq!(up.requests(), 3);
}

#[test]
fn bodies_cut_short_or_too_large_are_not_stored() {
    let up = Upstream::start(|req: &Seen, n| {
        if req.target == "/cut" && n == 1 {
            return Reply::Close(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel".to_vec());
        }
        let size = if req.target == "/big" { 64 * 1024 } else { 3 };
        Reply::Send(response(
            "200 OK",
            &["Cache-Control: max-age=60"],
            &vec![b'b'; size],
        ))
    });
    let server = start_proxy(&[route("/", &up)], |c| {
        c.cache_error_ttl = Duration::ZERO;
        c.cache_max_entry_bytes = 16 * 1024;
    });
    let mut c = server.connect();
    assert_eq!(c.get("/cut").status, 502);
    assert_eq!(cache(&c.get("/cut")), "miss", "the cut body was not kept");
    for _ in 0..2 {
        let r = c.get("/big");
        assert_eq!((r.body.len(), cache(&r)), (64 * 1024, "pass"));
    }
    let big = up.seen().iter().filter(|s| s.target == "/big").count();
    assert_eq!(big, 2);
    // Waiters were never involved here; a thread per test is enough.
}

/// End to end through `examples/upstream.py`, the README's two commands:
/// many clients at once on one cold key cost the app one computation, and
/// distinct keys at once all get through the app's single thread.
///
/// The app's stderr is drained for as long as it runs: a pipe whose reader
/// is gone made its progress line raise before it answered, and a full one
/// would block it.
#[test]
fn many_clients_cost_the_example_app_one_computation() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/upstream.py");
    let Ok(mut child) = Command::new("python3")
        .args([script, "0", "--delay", "0.3"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("python3 is not installed; skipped");
        return;
    };
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stderr = child.stderr.take().expect("stderr");
    let child = Kill(child);
    let mut stderr = BufReader::new(stderr);
    let mut line = String::new();
    stderr.read_line(&mut line).expect("the app's first line");
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut stderr.by_ref(), &mut std::io::sink());
    });
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_owned();
    let server = start_proxy(&[format!("/={addr}")], |_| {});
    let n = 40;
    let mut clients = stampede(&server, "/primes?below=1000", n);
    for c in &mut clients {
        let r = c.response();
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().ends_with("997\n"));
    }
    let count = server.connect().get("/count");
    assert_eq!(count.text(), "1\n", "computations in the app");
    // Distinct keys at once: the app serves one connection at a time and
    // closes each after its response, so none is held idle in the pool.
    let mut clients: Vec<Client> = (2..5)
        .map(|k| {
            let mut c = server.connect();
            c.send(request_head("GET", &format!("/primes?below={k}00"), &[]));
            c
        })
        .collect();
    for c in &mut clients {
        let r = c.response();
        assert_eq!((r.status, cache(&r)), (200, "miss"), "{}", r.text());
    }
    let count = server.connect().get("/count");
    assert_eq!(count.text(), "4\n", "computations in the app");
    drop(child);
}
