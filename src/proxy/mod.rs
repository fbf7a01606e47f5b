//! The reverse proxy: requests under a configured path prefix go to the
//! upstream processes behind it (the app you already have), and their
//! responses are kept in the same single-flight cache the built-in app
//! uses, under the shared-cache rules of RFC 9111.
//!
//! Parts, each in its own file:
//!
//! - `route`: `--proxy PREFIX=UPSTREAM[,UPSTREAM...]` and the longest-prefix
//!   match.
//! - `forward`: the request sent upstream and the response sent back,
//!   rebuilt from parsed fields (hop-by-hop fields out, `X-Forwarded-*` and
//!   `Via` in).
//! - `pool`: per upstream, bounded keep-alive connections, requests in
//!   flight, passive health; per route, the least-loaded choice.
//! - `fetch`: one exchange under one deadline, with the safe retries, and
//!   the stream that carries a body too large to buffer.
//!
//! What is not proxied goes to the built-in app ([`Proxy`] wraps it), so
//! `/healthz` keeps answering unless a route covers it; the operator's
//! listener is never proxied.

mod caching;
pub mod fetch;
pub mod forward;
pub mod pool;
pub mod route;
pub mod rules;
pub mod stats;

use std::io::{Cursor, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::Lane;
use crate::cached::ResponseCache;
use crate::config::Config;
use crate::http::upstream::{ResponseFraming, ResponseLimits};
use crate::http::{Body, HeadLength, Request, Response};
use crate::router::Handler;
use fetch::{Exchange, FetchError, Fetched};
use pool::{Peers, RoutePool};
pub use route::{Route, Upstream};
pub use stats::{UpstreamRow, UpstreamStats};

/// The proxy's settings: the routes, the upstream deadlines and pool, and
/// the caching windows. Each default is defined here, with its precedent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The routes; empty means no proxy at all.
    pub routes: Vec<Route>,
    /// How long connecting to an upstream may take before the upstream
    /// counts as failed (and another is tried).
    pub connect_timeout: Duration,
    /// How long the whole exchange with an upstream may take, from sending
    /// the request to the last byte of the response: 504 after it.
    pub timeout: Duration,
    /// Connections to one upstream at most, in use or idle. Requests beyond
    /// it wait in the fetch queue.
    pub max_connections: usize,
    /// How long a response with no explicit freshness (no `s-maxage`,
    /// `max-age` or `Expires`) is kept, if its status is heuristically
    /// cacheable (RFC 9110 §15.1; RFC 9111 §4.2.2).
    pub default_ttl: Duration,
    /// How long past its freshness an entry is still served while one
    /// background refresh runs, when the upstream did not say
    /// (`stale-while-revalidate`, RFC 5861 §3).
    pub grace: Duration,
    /// How long past its freshness an entry is served when the upstream
    /// fails or answers 500, 502, 503 or 504, when the upstream did not say
    /// (`stale-if-error`, RFC 5861 §4).
    pub stale_if_error: Duration,
}

impl Default for ProxyConfig {
    fn default() -> ProxyConfig {
        ProxyConfig {
            routes: Vec::new(),
            // HAProxy's documentation recommends `timeout connect 5s`;
            // nginx's `proxy_connect_timeout` is 60s, far longer than a
            // connection to a live host on a LAN or loopback ever takes.
            // A refused connection fails at once whatever this is.
            connect_timeout: Duration::from_secs(5),
            // The whole response, not nginx's 60s between two reads
            // (`proxy_read_timeout`): an upstream that trickles must not
            // hold a fetch forever. Below `cache-wait-timeout` (30s), so a
            // waiting client gets this 504, which says why, rather than
            // the waiter's 503; raise both for slower computations.
            timeout: Duration::from_secs(20),
            // nginx's documentation example for `keepalive` is 32 per
            // worker. For single-threaded upstream processes more than a
            // few in flight only queue inside the upstream, where no one
            // can see them; here they queue where /metrics shows them.
            max_connections: 32,
            // Varnish's `default_ttl` is 2 minutes; we take one, for an app
            // that never thought about caching headers should show a
            // change within a minute, while a thousand clients a second
            // still cost one upstream request a minute.
            default_ttl: Duration::from_secs(60),
            // RFC 9111 §4.2.4: a cache must not serve stale responses
            // unless the origin or an explicit configuration allows it.
            // Varnish's `default_grace` is 10s; here the operator opts in.
            // Expired entries are refreshed single-flight either way.
            grace: Duration::ZERO,
            // Same rule as `grace`; nginx's `proxy_cache_use_stale` is off
            // by default too.
            stale_if_error: Duration::ZERO,
        }
    }
}

/// The public handler: the routes' requests go upstream, everything else
/// to the built-in app.
pub struct Proxy<H> {
    shared: Arc<Shared>,
    app: H,
}

/// What every request of the proxy reads.
struct Shared {
    config: ProxyConfig,
    routes: Vec<RouteState>,
    /// The routes' upstreams, for /metrics and /status.
    stats: UpstreamStats,
    limits: ResponseLimits,
    /// Response bodies up to this are buffered (and may be stored); longer
    /// ones stream through.
    buffer: usize,
    /// Where responses are kept: the app's cache.
    cache: ResponseCache,
}

/// One route: its upstreams and the threads its fetches run on.
struct RouteState {
    route: Route,
    pool: Arc<RoutePool>,
    /// Upstream fetches are I/O-bound: each holds one upstream connection
    /// for its whole exchange, so a route gets one thread per connection
    /// its upstreams allow, and no more (a thread beyond them would only
    /// wait for a connection). Not the cache's compute lane: that has one
    /// thread per CPU for CPU-bound work, and a few slow upstreams would
    /// take every one of them, starving the app's computations, while
    /// the upstreams themselves sat half idle. A route of its own also
    /// keeps one route's slow upstream from queueing another's fetches.
    lane: Lane,
}

impl<H: Handler> Proxy<H> {
    /// Serves `config`'s routes (see [`Config::proxy_config`]), keeping
    /// responses in `cache`, with the server's head limits for upstream
    /// responses and `max-waiting` as each route's fetch queue, and `app`
    /// for every other path.
    pub fn new(config: &Config, cache: ResponseCache, app: H) -> Proxy<H> {
        let proxy = config.proxy_config();
        let mut peers = Peers::default();
        let routes = proxy
            .routes
            .iter()
            .map(|route| {
                let list: Vec<_> = route
                    .upstreams
                    .iter()
                    .map(|u| peers.get(u, proxy.max_connections))
                    .collect();
                let threads = list.len().saturating_mul(proxy.max_connections);
                RouteState {
                    route: route.clone(),
                    pool: Arc::new(RoutePool::new(list)),
                    lane: Lane::new(threads, config.max_waiting).named("corral-fetch"),
                }
            })
            .collect::<Vec<RouteState>>();
        let stats = UpstreamStats::new(
            routes
                .iter()
                .map(|r| (r.route.prefix.clone(), r.pool.clone()))
                .collect(),
        );
        Proxy {
            shared: Arc::new(Shared {
                limits: ResponseLimits {
                    max_head_bytes: config.max_head_bytes,
                    max_headers: config.max_headers,
                },
                buffer: config.cache_max_entry_bytes,
                config: proxy,
                routes,
                stats,
                cache,
            }),
            app,
        }
    }

    /// A live view of the routes' upstreams, for /metrics and /status.
    pub fn upstream_stats(&self) -> UpstreamStats {
        self.shared.stats.clone()
    }

    /// The index of the route `path` goes to, if any.
    fn route(&self, path: &str) -> Option<usize> {
        let route = route::longest_match(&self.shared.config.routes, path)?;
        self.shared
            .routes
            .iter()
            .position(|r| r.route.prefix == route.prefix)
    }
}

impl<H: Handler> Handler for Proxy<H> {
    fn handle(&self, req: &mut Request) -> Response {
        let Some(route) = self.route(req.path()) else {
            return self.app.handle(req);
        };
        if forward::wants_websocket(req) {
            return Response::error(501, "corral does not proxy WebSocket upgrades");
        }
        match req.method() {
            // RFC 9111 §3: only GET responses are stored; a HEAD is served
            // from the GET's entry.
            "GET" | "HEAD" => caching::serve(&self.shared, route, req),
            _ => pass(&self.shared, route, req),
        }
    }

    fn wants_body(&self, method: &str, path: &str) -> bool {
        // A proxied request's body goes upstream, which decides.
        self.route(path).is_some() || self.app.wants_body(method, path)
    }
}

/// The exchange that sends `req` upstream as `method`, with `extra`
/// fields; a `fill` (for the cache) leaves out the client's conditionals
/// and ranges, so the upstream sends the whole response to keep.
fn exchange(
    shared: &Shared,
    req: &Request,
    method: &str,
    extra: &[(&str, &str)],
    fill: bool,
) -> Exchange {
    let config = &shared.config;
    Exchange {
        request: forward::request_bytes(req, method, extra, fill),
        head_request: method == "HEAD",
        idempotent: forward::is_idempotent(method),
        deadline: Instant::now() + config.timeout,
        connect_timeout: config.connect_timeout,
        limits: shared.limits,
        buffer: shared.buffer,
    }
}

/// Sends a request that is not GET or HEAD upstream on its own, and
/// answers with whatever comes back. A success invalidates the stored
/// response for its target (RFC 9111 §4.4).
fn pass(shared: &Arc<Shared>, route: usize, req: &Request) -> Response {
    let x = exchange(shared, req, req.method(), &[], false);
    let key = caching::key(req);
    let shared = shared.clone();
    let (placeholder, reply) = Response::later();
    let job = {
        let shared = shared.clone();
        move || {
            // Nobody waits any more (the client left, or its wait ended):
            // the upstream need not be asked.
            if !reply.is_wanted() {
                return;
            }
            reply.send(match fetch::fetch(&shared.routes[route].pool, &x) {
                Ok(fetched) => {
                    if fetched.head.status < 400 {
                        shared.cache.invalidate(&key);
                    }
                    relay(fetched).with_header("X-Cache", "pass")
                }
                Err(e) => failed(&e),
            });
        }
    };
    match shared.routes[route].lane.try_spawn(job) {
        Ok(()) => placeholder,
        Err(_) => busy(),
    }
}

/// The 503 for a route whose fetch queue is full.
fn busy() -> Response {
    Response::error(503, "too many requests wait for the upstream; retry later")
        .with_header("Retry-After", "1")
}

/// The client's response for a failed exchange.
fn failed(e: &FetchError) -> Response {
    Response::error(e.status, &e.reason)
}

/// An upstream's response as the client gets it: its status and
/// end-to-end fields, and its body, streamed if it was too large to buffer.
fn relay(fetched: Fetched) -> Response {
    let resp = forward::response(fetched.head.status, &fetched.head.headers, &[])
        .with_head_length(head_length(&fetched))
        .with_upstream_time(fetched.took);
    match fetched.rest {
        Some(rest) => {
            let body: Box<dyn Read + Send> = Box::new(Cursor::new(fetched.body).chain(rest));
            resp.with_body(Body::Stream(body))
        }
        None => resp.with_body(fetched.body),
    }
}

/// What a HEAD client is told of the length: the body's, when it is here
/// whole; else the upstream's `Content-Length` (a HEAD sent upstream, a
/// body too large to buffer), or none when the upstream gave none.
fn head_length(fetched: &Fetched) -> HeadLength {
    let whole = fetched.rest.is_none() && fetched.head.framing != ResponseFraming::None;
    if whole {
        return HeadLength::OfBody;
    }
    // The parser has checked the field: one value, or a list of identical
    // ones (RFC 9112 §6.3).
    let declared = fetched
        .head
        .headers
        .get("content-length")
        .and_then(|v| v.split(',').next().and_then(|n| n.trim().parse().ok()));
    declared.map_or(HeadLength::Unknown, HeadLength::Known)
}
