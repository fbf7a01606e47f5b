//! Cached responses over HTTP: values kept in the crate's [`cache`] in
//! their final wire form, served with validators and ranges.
//!
//! A [`CachedBody`] holds the encoded bytes as an `Arc<[u8]>` with their
//! content type, a strong ETag computed once, and the creation time. A hit
//! sends the head and those same shared bytes in one vectored write: no
//! copy, no re-encoding. [`respond`] adds what a client of an expensive,
//! cacheable resource needs:
//!
//! - `ETag`, and `If-None-Match` → 304 (RFC 9110 §13.1.2);
//! - a single `Range: bytes=` → 206 with `Content-Range`, unsatisfiable →
//!   416, so large arrays can be fetched in slices (RFC 9110 §14); a
//!   multi-range request is served whole, as §14.2 allows;
//! - `Cache-Control`, `Age` (seconds since the value was computed), and
//!   `X-Cache: hit|miss|coalesced|stale`.

use std::any::Any;
use std::borrow::Cow;
use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use once_cell::sync::{Lazy, OnceCell};

use crate::cache::{self, Cache, CacheConfig, LookupOutcome};
use crate::http::{Body, Request, Response};

/// A response body kept in the cache in its final form.
#[derive(Clone)]
pub struct CachedBody {
    bytes: Arc<[u8]>,
    content_type: Arc<str>,
    etag: Arc<str>,
    created: Instant,
    headers: Arc<[(String, String)]>,
    /// What a layer above keeps with the entry (the proxy's status, fields
    /// and freshness); `None` for the app's values.
    extra: Option<Arc<dyn Any + Send + Sync>>,
    /// What `extra` and the added headers hold, in bytes, for the weight.
    extra_bytes: u64,
}

impl std::fmt::Debug for CachedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedBody")
            .field("bytes", &self.bytes.len())
            .field("content_type", &self.content_type)
            .field("etag", &self.etag)
            .finish_non_exhaustive()
    }
}

/// Bytes a stored entry costs beyond its body: the key, the ETag and the
/// map's bookkeeping, roughly. Header fields are counted on their own
/// ([`field_bytes`]).
const ENTRY_OVERHEAD: u64 = 256;

/// What one header field kept as two `String`s costs: its text and their
/// two headers.
pub fn field_bytes(name: &str, value: &str) -> u64 {
    (name.len() + value.len() + 2 * std::mem::size_of::<String>()) as u64
}

impl CachedBody {
    /// Wraps encoded bytes; computes their ETag (a hash of the content, so
    /// a recomputed identical value keeps its ETag).
    pub fn new(bytes: impl Into<Arc<[u8]>>, content_type: &str) -> CachedBody {
        let bytes = bytes.into();
        let mut h = DefaultHasher::new();
        h.write(&bytes);
        CachedBody {
            etag: format!("\"{:016x}-{:x}\"", h.finish(), bytes.len()).into(),
            bytes,
            content_type: content_type.into(),
            created: Instant::now(),
            headers: Arc::from(Vec::new()),
            extra: None,
            extra_bytes: 0,
        }
    }

    /// Replaces the computed ETag with `etag` (an upstream's own).
    pub fn with_etag(mut self, etag: &str) -> CachedBody {
        self.etag = etag.into();
        self
    }

    /// Keeps `extra` with the entry, for the layer that made it.
    pub fn with_extra(mut self, extra: Arc<dyn Any + Send + Sync>) -> CachedBody {
        self.extra = Some(extra);
        self
    }

    /// Counts `bytes` more against the cache's budget: what the layer's
    /// extra holds (the proxy's header fields, say), which the entry's
    /// fixed overhead does not cover.
    pub fn with_extra_bytes(mut self, bytes: u64) -> CachedBody {
        self.extra_bytes = self.extra_bytes.saturating_add(bytes);
        self
    }

    /// What [`CachedBody::with_extra`] kept, if it is a `T`.
    pub fn extra<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.extra.as_deref()?.downcast_ref()
    }

    /// Adds a header sent with every response of this body.
    pub fn with_header(mut self, name: &str, value: &str) -> CachedBody {
        let mut headers = self.headers.to_vec();
        headers.push((name.to_owned(), value.to_owned()));
        self.headers = headers.into();
        self.extra_bytes = self.extra_bytes.saturating_add(field_bytes(name, value));
        self
    }

    /// The encoded bytes.
    pub fn bytes(&self) -> &Arc<[u8]> {
        &self.bytes
    }

    /// The strong ETag, quotes included.
    pub fn etag(&self) -> &str {
        &self.etag
    }

    /// The media type.
    pub fn content_type(&self) -> &str {
        &self.content_type
    }

    /// A header added with [`CachedBody::with_header`].
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// How much the entry counts against the cache's byte budget.
    pub fn weight(&self) -> u64 {
        (self.bytes.len() as u64 + ENTRY_OVERHEAD).saturating_add(self.extra_bytes)
    }

    /// Seconds since the value was computed.
    pub fn age(&self) -> Duration {
        self.created.elapsed()
    }
}

/// The cache of encoded responses, keyed by canonical request parameters.
pub type ResponseCache = Cache<String, CachedBody>;

static GLOBAL_CONFIG: OnceCell<CacheConfig> = OnceCell::new();

/// The process-wide response cache the server's app uses. Its limits come
/// from [`configure`], if it ran before the first use, else the defaults.
pub static GLOBAL: Lazy<ResponseCache> = Lazy::new(|| {
    Cache::new(
        GLOBAL_CONFIG.get().cloned().unwrap_or_default(),
        CachedBody::weight,
    )
});

/// Sets the limits of [`GLOBAL`]. Returns false if it was configured
/// already.
pub fn configure(config: CacheConfig) -> bool {
    GLOBAL_CONFIG.set(config).is_ok()
}

/// A new response cache (tests and embedders that want their own).
pub fn new_cache(config: CacheConfig) -> ResponseCache {
    Cache::new(config, CachedBody::weight)
}

/// The value of `X-Cache` for a lookup outcome.
pub fn outcome_name(o: LookupOutcome) -> &'static str {
    match o {
        LookupOutcome::Hit => "hit",
        LookupOutcome::Miss => "miss",
        LookupOutcome::Coalesced => "coalesced",
        LookupOutcome::Stale => "stale",
    }
}

/// The response to a failed lookup: 503 with `Retry-After` when waiting or
/// computing failed (a retry may well succeed), 500 for a computation that
/// depends on itself (a bug no retry fixes).
pub fn error_response(e: &cache::Error, retry_after: Duration) -> Response {
    match e {
        cache::Error::Recursive => Response::error(500, &e.to_string()),
        _ => Response::error(503, &e.to_string())
            .with_header("Retry-After", &retry_after.as_secs().max(1).to_string()),
    }
}

/// The `Cache-Control` sent with cached bodies.
#[derive(Debug, Clone)]
pub struct Freshness {
    /// `max-age` for clients and shared caches.
    pub max_age: Duration,
}

impl Default for Freshness {
    /// An hour: values are pure functions of their parameters, so clients
    /// may keep them; the hour bounds how long a purged value lingers.
    fn default() -> Freshness {
        Freshness {
            max_age: Duration::from_secs(3600),
        }
    }
}

/// Serves `body` for `req`, honouring `If-None-Match` and `Range`.
pub fn respond(
    req: &Request,
    body: &CachedBody,
    outcome: LookupOutcome,
    fresh: &Freshness,
) -> Response {
    Conditions::of(req).respond(body, outcome, fresh)
}

/// What a request asks of a cached body beyond the body itself: the method
/// and the headers that pick 304, 206 or 416. Borrowed from the request to
/// answer at once; [`Conditions::into_owned`] keeps them for an answer that
/// comes after the handler has returned, which copies them (so only a
/// request that is not a hit pays for the copy).
#[derive(Clone, Debug)]
pub struct Conditions<'a> {
    get: bool,
    head: bool,
    if_none_match: Option<Cow<'a, str>>,
    range: Option<Cow<'a, str>>,
    if_range: Option<Cow<'a, str>>,
}

impl<'a> Conditions<'a> {
    /// The conditions of `req`, borrowed from it.
    pub fn of(req: &'a Request) -> Conditions<'a> {
        Conditions {
            get: req.method() == "GET",
            head: req.method() == "HEAD",
            if_none_match: req.header("if-none-match").map(Cow::Borrowed),
            range: req.header("range").map(Cow::Borrowed),
            if_range: req.header("if-range").map(Cow::Borrowed),
        }
    }

    /// The same conditions, owning their text.
    pub fn into_owned(self) -> Conditions<'static> {
        let own = |h: Option<Cow<'a, str>>| h.map(|h| Cow::Owned(h.into_owned()));
        Conditions {
            get: self.get,
            head: self.head,
            if_none_match: own(self.if_none_match),
            range: own(self.range),
            if_range: own(self.if_range),
        }
    }

    /// Serves `body` under these conditions, as [`respond`] does.
    pub fn respond(
        &self,
        body: &CachedBody,
        outcome: LookupOutcome,
        fresh: &Freshness,
    ) -> Response {
        let mut resp = Response::new(200);
        resp.add_header("ETag", body.etag());
        resp.add_trusted(
            "Cache-Control",
            format!("public, max-age={}", fresh.max_age.as_secs()),
        );
        resp.add_trusted("Age", body.age().as_secs().to_string());
        resp.add_trusted("X-Cache", outcome_name(outcome));
        if (self.get || self.head) && none_match(self.if_none_match.as_deref(), body.etag()) {
            return resp.with_status(304);
        }
        resp.add_header("Content-Type", body.content_type());
        for (n, v) in body.headers.iter() {
            resp.add_header(n, v);
        }
        resp.add_trusted("Accept-Ranges", "bytes");
        let len = body.bytes.len();
        let range = match self.range.as_deref() {
            Some(r) if self.get && self.if_range_holds(body) => parse_range(r, len),
            _ => RangeSpec::Whole,
        };
        match range {
            RangeSpec::Whole => resp.with_body(Body::Shared(body.bytes.clone())),
            RangeSpec::Part(r) => {
                resp.add_header(
                    "Content-Range",
                    &format!("bytes {}-{}/{len}", r.start, r.end - 1),
                );
                resp.with_status(206)
                    .with_body(Body::SharedRange(body.bytes.clone(), r))
            }
            RangeSpec::Unsatisfiable => {
                let mut r = Response::error(416, "the range is outside the representation");
                r.add_header("Content-Range", &format!("bytes */{len}"));
                r
            }
        }
    }

    /// RFC 9110 §13.1.5: a Range with an `If-Range` that does not match
    /// (strongly) is ignored, and the whole representation is sent.
    fn if_range_holds(&self, body: &CachedBody) -> bool {
        match self.if_range.as_deref() {
            None => true,
            Some(v) => v.trim() == body.etag(),
        }
    }
}

/// RFC 9110 §13.1.2: `*` or any listed tag matching by weak comparison.
pub(crate) fn none_match(header: Option<&str>, etag: &str) -> bool {
    let Some(h) = header else { return false };
    let h = h.trim();
    if h == "*" {
        return true;
    }
    let ours = etag.trim_start_matches("W/");
    h.split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == ours)
}

/// What a `Range` header asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeSpec {
    /// The whole representation (no range, a malformed one, or several).
    Whole,
    /// One satisfiable byte range, end exclusive.
    Part(Range<usize>),
    /// A well-formed range that selects nothing.
    Unsatisfiable,
}

/// Parses a `Range` header against a representation of `len` bytes
/// (RFC 9110 §14.1.2). Only a single `bytes` range is honoured; anything
/// else is ignored, which §14.2 permits.
pub fn parse_range(header: &str, len: usize) -> RangeSpec {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeSpec::Whole;
    };
    if spec.contains(',') {
        return RangeSpec::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeSpec::Whole;
    };
    let num = |s: &str| -> Option<usize> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // More than usize can hold is more than any representation has.
        Some(
            s.parse::<u64>()
                .ok()
                .map_or(usize::MAX, |v| v.try_into().unwrap_or(usize::MAX)),
        )
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match num(suffix) {
            None => RangeSpec::Whole,
            Some(0) => RangeSpec::Unsatisfiable,
            Some(_) if len == 0 => RangeSpec::Unsatisfiable,
            Some(n) => RangeSpec::Part(len.saturating_sub(n)..len),
        },
        (a, "") => match num(a) {
            None => RangeSpec::Whole,
            Some(a) if a >= len => RangeSpec::Unsatisfiable,
            Some(a) => RangeSpec::Part(a..len),
        },
        (a, b) => match (num(a), num(b)) {
            (Some(a), Some(b)) if a <= b => {
                if a >= len {
                    RangeSpec::Unsatisfiable
                } else {
                    RangeSpec::Part(a..b.saturating_add(1).min(len))
                }
            }
            _ => RangeSpec::Whole,
        },
    }
}

/// Looks `key` up in `cache`, computing it with `compute` on a miss, and
/// serves it for `req`: the whole pattern of a cached handler in one call.
///
/// It holds no worker while a value is computed. A fresh hit is answered at
/// once, for what a lookup under a read lock and the response's headers
/// cost. Anything else returns a [`Response::later`] placeholder and
/// answers through it when the outcome is known: the computation runs on
/// the cache's compute lane (or is joined, if the key is already being
/// computed), and the request is parked meanwhile. The miss path costs the
/// request's conditions copied ([`Conditions::into_owned`]), the key, and
/// a few boxes. Errors map as [`error_response`] says: a full compute queue
/// is a 503, like a computation that failed.
///
/// A handler that computes inline instead, with the blocking
/// [`Cache::get_or_compute`], holds its worker for the whole computation,
/// and every request coalescing on it holds one too: a few slow keys can
/// take every worker, and hits queue behind them.
pub fn serve<E, F>(cache: &ResponseCache, req: &Request, key: &str, compute: F) -> Response
where
    E: std::fmt::Display,
    F: FnOnce() -> Result<CachedBody, E> + Send + 'static,
{
    let fresh = Freshness::default();
    if let Some(body) = cache.get(key) {
        return respond(req, &body, LookupOutcome::Hit, &fresh);
    }
    let conditions = Conditions::of(req).into_owned();
    let retry_after = cache.config().error_ttl;
    let (placeholder, reply) = Response::later();
    cache.get_or_submit(
        &key.to_owned(),
        move || compute().map(|body| (body, None)),
        move |found| {
            reply.send(match found {
                Ok(found) => conditions.respond(&found.value, found.outcome, &fresh),
                Err(e) => error_response(&e, retry_after),
            })
        },
    );
    placeholder
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Framing, Head, Headers, Version};
    use std::sync::mpsc;

    /// How long a test waits for an answer before calling it a hang.
    const HANG: Duration = Duration::from_secs(5);

    #[test]
    fn the_weight_counts_headers_and_what_the_layer_above_keeps() {
        let plain = CachedBody::new(vec![0u8; 100], "application/octet-stream");
        let base = plain.weight();
        assert_eq!(base, 100 + ENTRY_OVERHEAD);
        let value = "v".repeat(1000);
        let with = plain.clone().with_header("X-Shape", &value);
        assert_eq!(with.weight(), base + field_bytes("X-Shape", &value));
        assert!(with.weight() > base + 1000);
        assert_eq!(plain.with_extra_bytes(500).weight(), base + 500);
    }

    fn get(target: &str, headers: &[(&str, &str)]) -> Request {
        let mut h = Headers::new();
        for (name, value) in headers {
            h.push(name, value.as_bytes());
        }
        let head = Head {
            method: "GET".into(),
            target: target.into(),
            version: Version::Http11,
            headers: h,
            framing: Framing::None,
            keep_alive: true,
            expect_continue: false,
        };
        Request::new(head, Vec::new(), None)
    }

    fn test_cache() -> ResponseCache {
        new_cache(CacheConfig {
            wait_timeout: Duration::from_secs(60),
            error_ttl: Duration::from_secs(60),
            compute_concurrency: 2,
            ..CacheConfig::default()
        })
    }

    /// What the server will do with a placeholder: wait for its reply.
    /// A response that is already whole is returned as it is.
    fn answer(mut resp: Response) -> Response {
        let Some(later) = resp.take_later() else {
            return resp;
        };
        let (tx, rx) = mpsc::channel();
        later.on_ready(Box::new(move || tx.send(()).unwrap()));
        rx.recv_timeout(HANG).expect("no reply");
        later.take().expect("woken without a reply")
    }

    fn body_text(resp: &Response) -> &[u8] {
        resp.body().as_slice().unwrap_or_default()
    }

    #[test]
    fn serve_answers_a_miss_later_and_a_hit_at_once() {
        let cache = test_cache();
        let req = get("/k", &[]);
        let first = serve(&cache, &req, "k", || {
            Ok::<_, String>(CachedBody::new(&b"value"[..], "text/plain"))
        });
        assert!(first.is_later(), "a miss holds no worker");
        let first = answer(first);
        assert_eq!(
            (first.status(), first.header("x-cache")),
            (200, Some("miss"))
        );
        assert_eq!(body_text(&first), b"value");
        let hit = serve(&cache, &req, "k", || -> Result<CachedBody, String> {
            panic!("a hit computed")
        });
        assert!(!hit.is_later(), "a hit is answered at once");
        assert_eq!((hit.status(), hit.header("x-cache")), (200, Some("hit")));
        assert_eq!(hit.header("etag"), first.header("etag"));
    }

    #[test]
    fn an_answer_given_later_honours_the_requests_conditions() {
        let cache = test_cache();
        let body = || CachedBody::new(&b"0123456789"[..], "text/plain");
        let etag = body().etag().to_owned();
        // The headers are read after the handler has returned and the
        // request is gone.
        let ranged = {
            let req = get("/r", &[("range", "bytes=2-4"), ("if-range", &etag)]);
            serve(&cache, &req, "r", move || Ok::<_, String>(body()))
        };
        let ranged = answer(ranged);
        assert_eq!(
            (ranged.status(), ranged.header("content-range")),
            (206, Some("bytes 2-4/10"))
        );
        assert_eq!(body_text(&ranged), b"234");
        let cache = test_cache();
        let unchanged = {
            let req = get("/r", &[("if-none-match", &etag)]);
            serve(&cache, &req, "r", move || Ok::<_, String>(body()))
        };
        assert_eq!(answer(unchanged).status(), 304);
    }

    #[test]
    fn failures_answer_503_with_retry_after_and_a_cycle_500() {
        let cache = test_cache();
        let req = get("/f", &[]);
        let failed = answer(serve(&cache, &req, "f", || Err::<CachedBody, _>("no data")));
        assert_eq!(
            (failed.status(), failed.header("retry-after")),
            (503, Some("60"))
        );
        // Remembered: answered through the placeholder all the same.
        let again = answer(serve(
            &cache,
            &req,
            "f",
            || -> Result<CachedBody, String> { panic!("recomputed") },
        ));
        assert_eq!(again.status(), 503);
        let inner = cache.clone();
        let cycle = answer(serve(&cache, &req, "loop", move || {
            inner
                .get_or_compute(&"loop".to_owned(), || {
                    Ok::<_, String>(CachedBody::new(&b""[..], "x/y"))
                })
                .map(|found| found.value)
                .map_err(|e| e.to_string())
        }));
        assert_eq!((cycle.status(), cycle.header("retry-after")), (500, None));
    }

    #[test]
    fn ranges() {
        use RangeSpec::*;
        let cases: &[(&str, usize, RangeSpec)] = &[
            ("bytes=0-9", 100, Part(0..10)),
            ("bytes=90-", 100, Part(90..100)),
            ("bytes=-10", 100, Part(90..100)),
            ("bytes=-1000", 100, Part(0..100)),
            ("bytes=50-1000", 100, Part(50..100)),
            ("bytes=99-99", 100, Part(99..100)),
            ("bytes=100-", 100, Unsatisfiable),
            ("bytes=100-200", 100, Unsatisfiable),
            ("bytes=-0", 100, Unsatisfiable),
            ("bytes=0-", 0, Unsatisfiable),
            ("bytes=-5", 0, Unsatisfiable),
            ("bytes=5-1", 100, Whole),
            ("bytes=0-1,5-6", 100, Whole),
            ("items=0-1", 100, Whole),
            ("bytes=a-b", 100, Whole),
            ("bytes=+1-2", 100, Whole),
            ("bytes=0-99999999999999999999", 100, Part(0..100)),
            ("bytes=99999999999999999999-", 100, Unsatisfiable),
            ("bytes=0-18446744073709551615", 100, Part(0..100)),
        ];
        for (h, len, want) in cases {
            assert_eq!(&parse_range(h, *len), want, "{h} of {len}");
        }
    }

    #[test]
    fn etag_matching() {
        assert!(none_match(Some("*"), "\"a\""));
        assert!(none_match(Some("\"x\", \"a\""), "\"a\""));
        assert!(none_match(Some("W/\"a\""), "\"a\""));
        assert!(!none_match(Some("\"b\""), "\"a\""));
        assert!(!none_match(None, "\"a\""));
    }

    #[test]
    fn etag_is_a_function_of_the_content() {
        let a = CachedBody::new(vec![1u8, 2, 3], "x/y");
        let b = CachedBody::new(vec![1u8, 2, 3], "x/y");
        let c = CachedBody::new(vec![1u8, 2, 4], "x/y");
        assert_eq!(a.etag(), b.etag());
        assert_ne!(a.etag(), c.etag());
        assert!(a.etag().starts_with('"') && a.etag().ends_with('"'));
    }
}
