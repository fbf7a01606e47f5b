//! The reverse proxy: requests under a configured path prefix go to the
//! upstream processes behind it (the app you already have), and their
//! responses are kept in the same single-flight cache the built-in app
//! uses, under the shared-cache rules of RFC 9111.
//!
//! Parts, each in its own file:
//!
//! - `route`: `--proxy PREFIX=UPSTREAM[,UPSTREAM...]` and the longest-prefix
//!   match.
//!
//! What is not proxied goes to the built-in app ([`Proxy`] wraps it), so
//! `/healthz` keeps answering unless a route covers it; the operator's
//! listener is never proxied.

pub mod route;

use std::time::Duration;

use crate::http::{Request, Response};
use crate::router::Handler;
pub use route::{Route, Upstream};

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

/// The public handler when routes are configured: the routes' requests go
/// upstream, everything else to the built-in app.
pub struct Proxy<H> {
    config: ProxyConfig,
    app: H,
}

impl<H: Handler> Proxy<H> {
    /// Serves `config`'s routes, and `app` for every other path.
    pub fn new(config: ProxyConfig, app: H) -> Proxy<H> {
        Proxy { config, app }
    }

    /// The route `path` goes to, if any.
    pub fn route(&self, path: &str) -> Option<&Route> {
        route::longest_match(&self.config.routes, path)
    }
}

impl<H: Handler> Handler for Proxy<H> {
    fn handle(&self, req: &mut Request) -> Response {
        match self.route(req.path()) {
            Some(route) => Response::error(
                502,
                &format!("no upstream of {} is reachable yet", route.prefix),
            ),
            None => self.app.handle(req),
        }
    }

    fn wants_body(&self, method: &str, path: &str) -> bool {
        // A proxied request's body goes upstream, which decides.
        self.route(path).is_some() || self.app.wants_body(method, path)
    }
}
