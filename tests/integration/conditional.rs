//! Cached responses with validators and ranges (issue 3): `If-None-Match`
//! → 304, a single `Range` → 206 with the exact bytes, unsatisfiable → 416,
//! and `HEAD`, against an array of the built-in app.

use crate::support::{start_app, Client, Framing, Resp};

const PATH: &str = "/primes?below=20000&format=npy";

/// The whole array and its ETag.
fn whole(c: &mut Client) -> (Vec<u8>, String) {
    let r = c.get(PATH);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert!(r.header("cache-control").unwrap().contains("max-age="));
    assert!(r.header("age").unwrap().parse::<u64>().is_ok());
    let etag = r.header("etag").expect("ETag").to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong: {etag}"
    );
    (r.body, etag)
}

#[test]
fn if_none_match_gets_304() {
    let srv = start_app(|_| {});
    let mut c = srv.connect();
    let (_, etag) = whole(&mut c);
    let other = format!("\"other\", {etag}");
    let weak = format!("W/{etag}");
    for tag in [etag.as_str(), "*", &other, &weak] {
        let r = c.get_with(PATH, &[("If-None-Match", tag)]);
        assert_eq!(r.status, 304, "If-None-Match: {tag}");
        assert_eq!(r.framing, Framing::None);
        assert_eq!(r.header("etag"), Some(etag.as_str()));
        assert_eq!(r.header("x-cache"), Some("hit"));
        assert!(r.header("content-length").is_none_or(|l| l == "0"));
    }
    let r = c.get_with(PATH, &[("If-None-Match", "\"stale\"")]);
    assert_eq!(r.status, 200);
    // The connection is still in step: no stray body followed a 304.
    assert_eq!(c.get("/healthz").body, b"ok\n");
}

#[test]
fn single_range_gets_206_with_those_bytes() {
    let srv = start_app(|_| {});
    let mut c = srv.connect();
    let (full, etag) = whole(&mut c);
    let len = full.len();
    assert!(len > 1000, "{len} bytes");
    let cases = [
        ("bytes=0-9", 0..10),
        ("bytes=100-199", 100..200),
        ("bytes=-10", len - 10..len),
        ("bytes=1000-", 1000..len),
        ("bytes=5-99999999", 5..len),
    ];
    for (range, want) in cases {
        let r = c.get_with(PATH, &[("Range", range)]);
        assert_eq!(r.status, 206, "{range}: {}", r.text());
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {}-{}/{len}", want.start, want.end - 1).as_str()),
            "{range}"
        );
        assert_eq!(
            r.header("content-length"),
            Some(want.len().to_string().as_str())
        );
        assert!(r.body == full[want.clone()], "{range}: other bytes");
        assert_eq!(r.header("etag"), Some(etag.as_str()));
    }
    // If-Range with the current ETag keeps the range; another ETag gets the
    // whole representation (RFC 9110 §13.1.5).
    let r = c.get_with(PATH, &[("Range", "bytes=0-9"), ("If-Range", &etag)]);
    assert_eq!((r.status, r.body.len()), (206, 10));
    let r = c.get_with(PATH, &[("Range", "bytes=0-9"), ("If-Range", "\"old\"")]);
    assert_eq!((r.status, r.body.len()), (200, len));
    // Several ranges are served whole, as RFC 9110 §14.2 allows.
    let r = c.get_with(PATH, &[("Range", "bytes=0-1,5-6")]);
    assert_eq!((r.status, r.body.len()), (200, len));
}

#[test]
fn unsatisfiable_range_gets_416() {
    let srv = start_app(|_| {});
    let mut c = srv.connect();
    let (full, _) = whole(&mut c);
    let len = full.len();
    let past_end = format!("bytes={len}-");
    let far = format!("bytes={}-{}", len + 10, len + 20);
    for range in [past_end.as_str(), &far, "bytes=-0"] {
        let r = c.get_with(PATH, &[("Range", range)]);
        assert_eq!(r.status, 416, "{range}: {}", r.text());
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes */{len}").as_str()),
            "{range}"
        );
    }
    assert_eq!(c.get("/healthz").body, b"ok\n");
}

#[test]
fn head_of_a_cached_resource_has_its_length_and_no_body() {
    let srv = start_app(|_| {});
    let mut c = srv.connect();
    let (full, etag) = whole(&mut c);
    let r: Resp = c.head(PATH);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length"),
        Some(full.len().to_string().as_str())
    );
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(r.header("x-cache"), Some("hit"));
    // Had a body followed, this response would not parse.
    let r = c.get("/healthz");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok\n"[..]));
    assert!(c.buffered().is_empty());
}
