//! Upstream responses in the shared cache: the lookup of a GET or HEAD,
//! collapsed forwarding, hit-for-miss, Vary, stale serving and
//! revalidation. Every slow step runs on the route's fetch threads or in
//! the callback of the fill it waited for; a request worker only looks up
//! and answers.
//!
//! ```text
//!  lookup(key) ── fresh entry ──────────────────────────► hit
//!     │        ── pass marker ──► own fetch, stored if now storable
//!     │        ── vary marker ──► lookup(key + the request's values)
//!     │        ── fill in flight ─► stale within grace? serve it ("stale")
//!     │                             else wait, answered the instant it
//!     │                             completes ("coalesced")
//!     └─ nothing in flight ─► lead: fetch (conditional if the old entry
//!                             has validators) on the route's threads;
//!                             stale within grace is served meanwhile
//! ```
//!
//! When the leader's response turns out not storable, the key gets a
//! pass marker for [`HIT_FOR_MISS`] (Varnish's hit-for-miss): the waiters
//! and everyone after them go upstream each on their own, in parallel,
//! and nobody is handed another client's private response (Squid's
//! CVE-2016-10003). The leader's own client gets the response itself.
//! A later response that is storable replaces the marker.
//!
//! `Vary`: the entry under the plain key is then a marker naming the
//! fields, and the response goes under the key plus the request's values
//! of those fields (Squid keeps its variants the same way). `Vary: *` is
//! never stored.
//!
//! A client's `Cache-Control: no-cache` does not force a refetch: any
//! client could otherwise defeat the cache for everyone. A request with
//! `Authorization`, or with `Cache-Control: no-store`, is served from a
//! fresh entry but never waits on or leads a fill: it goes upstream on its
//! own, and its response is stored only if RFC 9111 §3.5 allows.

use std::collections::hash_map::RandomState;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::fetch::{self, FetchError, Fetched};
use super::forward;
use super::rules::{self, Freshness, Times};
use super::{failed, relay, Shared};
use crate::cache::{Error, Fill, Filler};
use crate::cached::{field_bytes, none_match, parse_range, CachedBody, RangeSpec};
use crate::http::date::unix_now;
use crate::http::{Body, Fields, Headers, Reply, Request, Response};

/// How long a key whose response was not storable sends every request
/// upstream on its own: Varnish's built-in `beresp.ttl = 120s` for
/// hit-for-miss objects.
pub const HIT_FOR_MISS: Duration = Duration::from_secs(120);

/// Rounds of `Vary` markers a lookup follows before going upstream on its
/// own (a marker leads to a variant, which is never a marker itself unless
/// the upstream changed its `Vary` in between).
const MAX_VARY_ROUNDS: usize = 2;

/// Fields of a stored response not replayed to clients: the cache sets
/// `Age` and appends to `Via` itself.
const NOT_STORED: &[&str] = &["age", "via", "set-cookie"];

/// The duty to complete a fill of the response cache.
type EntryFiller = Filler<String, CachedBody, RandomState>;

/// A reply that answers 503 if it is dropped unsent: the job holding it
/// was refused by a full fetch queue.
struct Pending(Mutex<Option<Reply>>);

impl Pending {
    fn new(reply: Option<Reply>) -> Pending {
        Pending(Mutex::new(reply))
    }

    fn take(&self) -> Option<Reply> {
        crate::unwind::lock(&self.0).take()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(reply) = self.take() {
            reply.send(super::busy());
        }
    }
}

/// What the proxy keeps with each cache entry.
#[derive(Debug)]
pub struct Meta {
    kind: Kind,
    status: u16,
    /// The end-to-end fields, as sent to clients.
    fields: Vec<(String, String)>,
    /// What every response from it carries: `fields`, `Via` with ours
    /// appended, and the computed `ETag` of a 200 the upstream gave none.
    /// Built once, when stored; each hit shares it.
    served: Arc<Fields>,
    stored: Instant,
    fresh: Freshness,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// A response to serve.
    Response,
    /// Not storable lately: go upstream on your own.
    Pass,
    /// The response varies on these fields: look up the variant.
    Vary(Vec<String>),
}

impl Meta {
    fn age(&self) -> Duration {
        self.fresh.initial_age + self.stored.elapsed()
    }

    /// How long past its freshness it is; `None` while fresh.
    fn staleness(&self) -> Option<Duration> {
        self.age()
            .checked_sub(self.fresh.lifetime)
            .filter(|d| !d.is_zero())
    }

    /// Whether it may be served while a refresh runs.
    fn in_grace(&self, config: &super::ProxyConfig) -> bool {
        let window = self.fresh.stale_while_revalidate.unwrap_or(config.grace);
        self.may_be_stale_for(window)
    }

    /// Whether it may be served instead of an upstream failure.
    fn serves_on_error(&self, config: &super::ProxyConfig) -> bool {
        let window = self.fresh.stale_if_error.unwrap_or(config.stale_if_error);
        self.may_be_stale_for(window)
    }

    fn may_be_stale_for(&self, window: Duration) -> bool {
        self.kind == Kind::Response
            && !self.fresh.must_revalidate
            && self.staleness().is_none_or(|s| s <= window)
    }

    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The conditional fields that revalidate it (RFC 9111 §4.3.1).
    fn validators(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        if let Some(etag) = self.field("etag") {
            v.push(("If-None-Match", etag.to_owned()));
        }
        if let Some(lm) = self.field("last-modified") {
            v.push(("If-Modified-Since", lm.to_owned()));
        }
        v
    }

    /// How long the cache keeps it fresh from now.
    fn ttl(&self) -> Duration {
        self.fresh.lifetime.saturating_sub(self.age())
    }
}

fn meta(body: &CachedBody) -> Option<&Meta> {
    body.extra::<Meta>()
}

/// A marker entry: no body, only its kind.
fn marker(kind: Kind) -> CachedBody {
    let meta = Meta {
        kind,
        status: 0,
        fields: Vec::new(),
        served: Arc::default(),
        stored: Instant::now(),
        fresh: Freshness {
            lifetime: Duration::ZERO,
            initial_age: Duration::ZERO,
            stale_while_revalidate: None,
            stale_if_error: None,
            must_revalidate: true,
            vary: Vec::new(),
        },
    };
    CachedBody::new(Vec::new(), "").with_extra(Arc::new(meta))
}

/// An entry for a stored response.
fn entry(status: u16, headers: &Headers, body: Arc<[u8]>, fresh: Freshness) -> CachedBody {
    let fields: Vec<(String, String)> = forward::response_fields(headers, NOT_STORED)
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    let via = forward::via_after(headers.get("via"));
    let content_type = headers.get("content-type").unwrap_or("");
    let body = CachedBody::new(body, content_type);
    let body = match headers.get("etag") {
        Some(etag) => body.with_etag(etag),
        None => body,
    };
    // Whether clients see an ETag is decided by the fields kept for them:
    // one the upstream listed in `Connection` is not among them, and a 200
    // then gets the computed one, as before.
    let has_etag = fields.iter().any(|(n, _)| n.eq_ignore_ascii_case("etag"));
    let computed_etag = (status == 200 && !has_etag).then(|| body.etag().to_owned());
    let served = fields
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .chain(computed_etag.as_deref().map(|e| ("ETag", e)))
        .chain([("Via", via.as_str())]);
    let served = Fields::new(served);
    // Both lists are kept: they count against the cache's budget.
    let header_bytes = fields
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .chain(served.iter())
        .map(|(n, v)| field_bytes(n, v))
        .sum();
    let meta = Meta {
        kind: Kind::Response,
        status,
        served: Arc::new(served),
        fields,
        stored: Instant::now(),
        fresh,
    };
    body.with_extra(Arc::new(meta))
        .with_extra_bytes(header_bytes)
}

/// The plain key of a request: path and query, in a namespace of their
/// own within the app's cache (purge them with `?prefix=proxy:`).
pub fn key(req: &Request) -> String {
    match req.query_string() {
        Some(q) => format!("proxy:{}?{q}", req.path()),
        None => format!("proxy:{}", req.path()),
    }
}

/// The key of the variant of `base` that `req` selects, by the fields
/// `names` (RFC 9111 §4.1: the values compared as sent, lines joined).
fn variant_key(base: &str, names: &[String], req: &Request) -> String {
    let mut key = base.to_owned();
    for name in names {
        let values: Vec<String> = req
            .headers()
            .get_all(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        key.push('\n');
        key.push_str(name);
        key.push(':');
        key.push_str(&values.join(","));
    }
    key
}

/// Where an answer goes: back to the handler now, or through a reply.
struct Out(Option<Reply>);

impl Out {
    fn now(self, resp: Response) -> Option<Response> {
        match self.0 {
            Some(reply) => {
                reply.send(resp);
                None
            }
            None => Some(resp),
        }
    }

    fn later(self) -> (Option<Response>, Reply) {
        match self.0 {
            Some(reply) => (None, reply),
            None => {
                let (placeholder, reply) = Response::later();
                (Some(placeholder), reply)
            }
        }
    }
}

/// A cacheable request's way through the cache, shared by the callbacks
/// that continue it.
#[derive(Clone)]
pub struct Lookup {
    shared: Arc<Shared>,
    route: usize,
    req: Arc<Request>,
    base: String,
}

/// Serves a GET or HEAD on route `route` through the cache.
pub fn serve(shared: &Arc<Shared>, route: usize, req: &Request) -> Response {
    let mut owned = Request::new(req.head().clone(), Vec::new(), req.peer_addr());
    drop(owned.take_body());
    let l = Lookup {
        shared: shared.clone(),
        route,
        base: key(req),
        req: Arc::new(owned),
    };
    let bypass = req.header("authorization").is_some()
        || req.headers().has_token("cache-control", "no-store");
    let out = if bypass {
        l.bypass()
    } else {
        l.look(l.base.clone(), 0, Out(None))
    };
    out.unwrap_or_else(|| Response::error(500, "no answer"))
}

impl Lookup {
    fn config(&self) -> &super::ProxyConfig {
        &self.shared.config
    }

    /// A request that may not share a fill: a fresh entry, or its own
    /// fetch.
    fn bypass(&self) -> Option<Response> {
        let cache = &self.shared.cache;
        let mut found = cache.get(&self.base);
        if let Some(Kind::Vary(names)) = found.as_ref().and_then(meta).map(|m| m.kind.clone()) {
            found = cache.get(&variant_key(&self.base, &names, &self.req));
        }
        match found.as_ref().and_then(|f| meta(f).map(|m| (f, m))) {
            Some((f, m)) if m.kind == Kind::Response => Some(self.respond(f, m, "hit")),
            _ => self.own_fetch(Out(None)),
        }
    }

    /// Looks `key` up, `round` markers deep, answering through `out`.
    fn look(&self, key: String, round: usize, out: Out) -> Option<Response> {
        match self.shared.cache.fill(&key) {
            Fill::Hit(found) => self.found(found, "hit", round, out),
            Fill::Failed(e, stale) => out.now(self.on_error(stale.as_ref(), &failure(&e))),
            Fill::Join(joiner, stale) => {
                if let Some(stale) = stale.as_ref().filter(|s| self.in_grace(s)) {
                    return out.now(self.respond_stale(stale));
                }
                let (ret, reply) = out.later();
                let me = self.clone();
                joiner.subscribe(move |found| match found {
                    Ok(found) => {
                        me.found(found.value, "coalesced", round, Out(Some(reply)));
                    }
                    Err(e) => reply.send(me.on_error(stale.as_ref(), &failure(&e))),
                });
                ret
            }
            Fill::Lead(filler, stale) => {
                if let Some(stale) = stale.as_ref().filter(|s| self.in_grace(s)) {
                    let resp = self.respond_stale(stale);
                    self.spawn_fill(filler, key, stale.clone().into(), None);
                    return out.now(resp);
                }
                let (ret, reply) = out.later();
                self.spawn_fill(filler, key, stale, Some(reply));
                ret
            }
        }
    }

    fn in_grace(&self, stale: &CachedBody) -> bool {
        meta(stale).is_some_and(|m| m.in_grace(self.config()))
    }

    /// Answers with a value found in the cache or handed over by a fill.
    fn found(
        &self,
        found: CachedBody,
        outcome: &'static str,
        round: usize,
        out: Out,
    ) -> Option<Response> {
        let Some(m) = meta(&found) else {
            return out.now(Response::error(
                500,
                "a cache key of the proxy holds something else",
            ));
        };
        match &m.kind {
            Kind::Response => out.now(self.respond(&found, m, outcome)),
            Kind::Pass => self.own_fetch(out),
            Kind::Vary(_) if round >= MAX_VARY_ROUNDS => self.own_fetch(out),
            Kind::Vary(names) => {
                let key = variant_key(&self.base, names, &self.req);
                self.look(key, round + 1, out)
            }
        }
    }

    /// The stale entry if it may stand in for a failure, else the error:
    /// 504 for an entry that must be revalidated (RFC 9111 §4.2.4).
    fn on_error(&self, stale: Option<&CachedBody>, e: &FetchError) -> Response {
        match stale.and_then(|s| meta(s).map(|m| (s, m))) {
            Some((s, m)) if m.serves_on_error(self.config()) => self.respond(s, m, "stale"),
            Some((_, m)) if m.kind == Kind::Response && m.fresh.must_revalidate => {
                Response::error(504, &format!("cannot revalidate: {}", e.reason))
            }
            _ => failed(e),
        }
    }

    fn respond_stale(&self, stale: &CachedBody) -> Response {
        match meta(stale) {
            Some(m) => self.respond(stale, m, "stale"),
            None => Response::error(500, "no stale entry"),
        }
    }

    /// Fetches `key` for the fill `filler` leads, revalidating `stale` if
    /// it has validators, and answers `reply` (if a client waits on this
    /// fill itself; a background refresh has none).
    fn spawn_fill(
        &self,
        filler: EntryFiller,
        key: String,
        stale: Option<CachedBody>,
        reply: Option<Reply>,
    ) {
        let me = self.clone();
        let reply = Pending::new(reply);
        // The client that led the fill is answered in the same gathered
        // run as those that joined it (see `crate::gather`): answered
        // after the run, it would be handed over behind all of theirs,
        // and wait for a worker to write them and take up their
        // connections first.
        let job = move || {
            crate::gather::gathered(|| {
                let resp = me.run_fill(filler, &key, stale.as_ref());
                if let Some(reply) = reply.take() {
                    reply.send(resp);
                }
            })
        };
        // A full queue drops the job: its filler fails the joiners (not
        // remembered) and its reply answers 503.
        if self.shared.routes[self.route].lane.try_spawn(job).is_err() {
            log::debug!("fetch queue full for {}", self.base);
        }
    }

    fn run_fill(&self, filler: EntryFiller, key: &str, stale: Option<&CachedBody>) -> Response {
        let old = stale.and_then(|s| meta(s).map(|m| (s, m)));
        let validators = old
            .filter(|(_, m)| m.kind == Kind::Response)
            .map(|(_, m)| m.validators())
            .unwrap_or_default();
        let extra: Vec<(&str, &str)> = validators.iter().map(|(n, v)| (*n, v.as_str())).collect();
        // HEAD fills with GET, so the entry serves both (nginx's
        // `proxy_cache_convert_head`).
        let x = super::exchange(&self.shared, &self.req, "GET", &extra, true);
        let requested = unix_now();
        let fetched = match fetch::fetch(&self.shared.routes[self.route].pool, &x) {
            Ok(f) => f,
            Err(e) => {
                let resp = self.on_error(stale, &e);
                filler.fail(&e);
                return resp;
            }
        };
        let times = Times {
            request: requested,
            response: unix_now(),
        };
        let status = fetched.head.status;
        if let (304, Some((old, m))) = (status, old) {
            if m.kind == Kind::Response {
                return self.revalidated(filler, old, m, &fetched, times);
            }
        }
        if matches!(status, 500 | 502 | 503 | 504) {
            if let Some((s, m)) = old.filter(|(_, m)| m.serves_on_error(self.config())) {
                filler.fail(format!("upstream answered {status}"));
                return self.respond(s, m, "stale").with_upstream_time(fetched.took);
            }
        }
        self.store_or_pass(Some(filler), key, fetched, times, false)
    }

    /// A 304 refreshes the old entry: its fields updated from the 304
    /// (RFC 9111 §4.3.4), its body kept, not moved or copied.
    fn revalidated(
        &self,
        filler: EntryFiller,
        old: &CachedBody,
        m: &Meta,
        fetched: &Fetched,
        times: Times,
    ) -> Response {
        let mut headers = Headers::new();
        for (n, v) in &m.fields {
            if fetched.head.headers.get_all(n).next().is_none() {
                headers.push(n, v.as_bytes());
            }
        }
        for (n, v) in fetched.head.headers.iter() {
            if !n.eq_ignore_ascii_case("content-length") {
                headers.push(n, v);
            }
        }
        let fresh = rules::storable(m.status, &headers, false, times, self.config().default_ttl);
        let Ok(fresh) = fresh else {
            // No longer storable: the old body still answers this client.
            filler.fill(marker(Kind::Pass), Some(HIT_FOR_MISS));
            return self
                .respond(old, m, "miss")
                .with_upstream_time(fetched.took);
        };
        let refreshed = entry(m.status, &headers, old.bytes().clone(), fresh);
        let ttl = meta(&refreshed).map(Meta::ttl);
        let resp = self
            .respond_entry(&refreshed, "miss")
            .with_upstream_time(fetched.took);
        filler.fill(refreshed, ttl);
        resp
    }

    /// Stores a fetched response under the right key (or marks the key
    /// pass), completing `filler` if there is one, and answers it.
    fn store_or_pass(
        &self,
        filler: Option<EntryFiller>,
        key: &str,
        fetched: Fetched,
        times: Times,
        authorized: bool,
    ) -> Response {
        let head = &fetched.head;
        let verdict = match fetched.rest {
            // Too large to keep: it streams through, unstored.
            Some(_) => Err(rules::Pass::NotCacheable),
            None => rules::storable(
                head.status,
                &head.headers,
                authorized,
                times,
                self.config().default_ttl,
            ),
        };
        let fresh = match verdict {
            Ok(fresh) => fresh,
            Err(why) => {
                log::debug!("{}: not stored ({why:?})", self.base);
                if let Some(filler) = filler {
                    filler.fill(marker(Kind::Pass), Some(HIT_FOR_MISS));
                }
                return relay(fetched).with_header("X-Cache", "pass");
            }
        };
        let cache = &self.shared.cache;
        let vary = fresh.vary.clone();
        let took = fetched.took;
        let stored = entry(head.status, &head.headers, fetched.body.into(), fresh);
        let ttl = meta(&stored).map(Meta::ttl);
        let resp = self.respond_entry(&stored, "miss").with_upstream_time(took);
        let variant = (!vary.is_empty()).then(|| variant_key(&self.base, &vary, &self.req));
        match (variant, filler) {
            (Some(v), filler) if v != key => {
                cache.insert_with_ttl(v, stored, ttl.unwrap_or_default());
                let marker = marker(Kind::Vary(vary));
                match filler {
                    // The plain key: its waiters follow the marker to
                    // their own variants.
                    Some(filler) if key == self.base => filler.fill(marker, ttl),
                    // A variant's fill whose Vary changed: the waiters
                    // selected by the old fields go on their own.
                    Some(filler) => {
                        cache.insert_with_ttl(self.base.clone(), marker, ttl.unwrap_or_default());
                        filler.fill(self::marker(Kind::Pass), Some(Duration::ZERO));
                    }
                    None => {
                        cache.insert_with_ttl(self.base.clone(), marker, ttl.unwrap_or_default());
                    }
                }
            }
            (_, Some(filler)) => filler.fill(stored, ttl),
            (_, None) => {
                cache.insert_with_ttl(key.to_owned(), stored, ttl.unwrap_or_default());
            }
        }
        resp
    }

    /// Sends the request upstream on its own (a pass marker, or a request
    /// that may not share), storing the response if it may be.
    fn own_fetch(&self, out: Out) -> Option<Response> {
        let (ret, reply) = out.later();
        let me = self.clone();
        let reply = Pending::new(Some(reply));
        let job = move || {
            let Some(reply) = reply.take().filter(Reply::is_wanted) else {
                return;
            };
            let head = me.req.method() == "HEAD";
            let x = super::exchange(&me.shared, &me.req, me.req.method(), &[], false);
            let requested = unix_now();
            let resp = match fetch::fetch(&me.shared.routes[me.route].pool, &x) {
                Err(e) => failed(&e),
                // A HEAD's response has no body to keep.
                Ok(f) if head => relay(f).with_header("X-Cache", "pass"),
                Ok(f) => {
                    let times = Times {
                        request: requested,
                        response: unix_now(),
                    };
                    let authorized = me.req.header("authorization").is_some();
                    if me.req.headers().has_token("cache-control", "no-store") {
                        relay(f).with_header("X-Cache", "pass")
                    } else {
                        let base = me.base.clone();
                        me.store_or_pass(None, &base, f, times, authorized)
                    }
                }
            };
            reply.send(resp);
        };
        if self.shared.routes[self.route].lane.try_spawn(job).is_err() {
            log::debug!("fetch queue full for {}", self.base);
        }
        ret
    }

    fn respond_entry(&self, found: &CachedBody, outcome: &'static str) -> Response {
        match meta(found) {
            Some(m) => self.respond(found, m, outcome),
            None => Response::error(500, "not a proxy entry"),
        }
    }

    /// A stored response for this request: its status and fields, `Age`,
    /// `Via`, `X-Cache`; for a 200, `If-None-Match` → 304 and a single
    /// `Range` → 206 or 416, as for the app's entries.
    fn respond(&self, found: &CachedBody, m: &Meta, outcome: &'static str) -> Response {
        let mut resp = Response::new(m.status).with_fields(m.served.clone());
        resp.add_trusted("Age", m.age().as_secs().to_string());
        resp.add_trusted("X-Cache", outcome);
        let req = &self.req;
        if m.status != 200 {
            return resp.with_body(Body::Shared(found.bytes().clone()));
        }
        if none_match(req.header("if-none-match"), found.etag()) {
            return resp.with_status(304);
        }
        resp.add_trusted("Accept-Ranges", "bytes");
        let len = found.bytes().len();
        let if_range_holds = req
            .header("if-range")
            .is_none_or(|v| v.trim() == found.etag());
        let range = match req.header("range") {
            Some(r) if req.method() == "GET" && if_range_holds => parse_range(r, len),
            _ => RangeSpec::Whole,
        };
        match range {
            RangeSpec::Whole => resp.with_body(Body::Shared(found.bytes().clone())),
            RangeSpec::Part(r) => {
                resp.add_header(
                    "Content-Range",
                    &format!("bytes {}-{}/{len}", r.start, r.end - 1),
                );
                resp.with_status(206)
                    .with_body(Body::SharedRange(found.bytes().clone(), r))
            }
            RangeSpec::Unsatisfiable => {
                let mut r = Response::error(416, "the range is outside the representation");
                r.add_header("Content-Range", &format!("bytes */{len}"));
                r
            }
        }
    }
}

/// A cache error as the fetch error it stands for: a fill's failure text
/// is the fetch error's own (`"504 the upstream did not answer in time"`)
/// or another reason for a 502; anything else is a 503.
fn failure(e: &Error) -> FetchError {
    match e {
        Error::Failed(text) => {
            let (status, reason) = match text.split_once(' ') {
                Some(("504", reason)) => (504, reason),
                Some(("502", reason)) => (502, reason),
                _ => (502, &**text),
            };
            FetchError {
                status,
                reason: reason.to_owned(),
            }
        }
        _ => FetchError {
            status: 503,
            reason: format!("{e}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_weighs_the_fields_it_keeps() {
        let fresh = || Freshness {
            lifetime: Duration::from_secs(60),
            initial_age: Duration::ZERO,
            stale_while_revalidate: None,
            stale_if_error: None,
            must_revalidate: false,
            vary: Vec::new(),
        };
        let mut small = Headers::new();
        small.push("Cache-Control", b"max-age=60");
        let mut big = small.clone();
        let value = vec![b'x'; 4000];
        big.push("X-Big", &value);
        let weight = |h: &Headers| entry(200, h, Arc::from(&b"body"[..]), fresh()).weight();
        // Kept twice: as stored, and as sent.
        assert!(
            weight(&big) >= weight(&small) + 2 * 4000,
            "{} against {}",
            weight(&big),
            weight(&small)
        );
    }
}
