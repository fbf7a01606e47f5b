//! Behind a front (issue 13): the client's address comes from a trusted
//! front's `X-Forwarded-For` and from nobody else's, in the handler and in
//! the access log. The rules themselves are table-tested in
//! `src/forwarded.rs`.

use std::time::Duration;

use corral::access::AccessLog;
use corral::forwarded::Cidr;
use corral::{Request, Response};

use crate::support::{start_logged, wait_until};

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
