//! Handlers and the router that picks one by method and path.
//!
//! A [`Handler`] turns a [`Request`] into a [`Response`]. It runs on a worker
//! thread with the whole body already read, so it never waits on the client.
//! A handler that panics is answered with 500 by the connection loop, and the
//! worker lives on. A handler holds its worker for as long as it runs: slow
//! work should answer [`Response::later`] and send the response from
//! elsewhere (as [`crate::cached::serve`] does), so the worker goes back to
//! requests that are ready.

use std::sync::Arc;
use std::time::Instant;

use crate::http::{Request, Response};
use crate::metrics::{label_value, write_family, Histogram};

/// Something that answers requests.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request.
    fn handle(&self, req: &mut Request) -> Response;

    /// Whether a request with this method and path would be served: the
    /// driver sends `100 Continue` only then, and otherwise answers without
    /// reading the body. The default wants every body.
    fn wants_body(&self, _method: &str, _path: &str) -> bool {
        true
    }
}

impl<F> Handler for F
where
    F: Fn(&mut Request) -> Response + Send + Sync + 'static,
{
    fn handle(&self, req: &mut Request) -> Response {
        self(req)
    }
}

enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match self {
            Pattern::Exact(p) => path == p,
            Pattern::Prefix(p) => path.starts_with(p.as_str()),
        }
    }
}

struct Route {
    method: String,
    pattern: Pattern,
    handler: Box<dyn Handler>,
    stat: Arc<RouteStat>,
}

/// The handler time of one route.
#[derive(Debug)]
pub struct RouteStat {
    /// `GET /primes`, or `GET /files/*` for a prefix route.
    pub label: String,
    /// How long the handler took.
    pub duration: Histogram,
}

/// The per-route histograms of a [`Router`], shareable with the operator's
/// endpoints.
#[derive(Debug, Clone, Default)]
pub struct RouteStats(Arc<Vec<Arc<RouteStat>>>);

impl RouteStats {
    /// Appends `corral_handler_duration_seconds` in the Prometheus text
    /// format, one label set per route.
    pub fn render_prometheus(&self, out: &mut String) {
        let name = "corral_handler_duration_seconds";
        write_family(out, name, "histogram", "Time the handler took, per route.");
        for stat in self.0.iter() {
            let labels = format!("route=\"{}\"", label_value(&stat.label));
            stat.duration.render(out, name, &labels);
        }
    }

    /// Every route's statistics.
    pub fn routes(&self) -> &[Arc<RouteStat>] {
        &self.0
    }
}

/// Routes by method and path. Exact routes are tried before prefix routes,
/// and longer prefixes before shorter ones, whatever the order of
/// registration. A path with no route gets 404; a path whose routes all have
/// other methods gets 405 with `Allow` (RFC 9110 §15.5.6). A `GET` route
/// also answers `HEAD`, `OPTIONS` on a routed path answers 204 with
/// `Allow`, and `OPTIONS *` answers 204 with every method some route
/// serves.
///
/// ```
/// use corral::{Response, Router};
///
/// let router = Router::new()
///     .get("/healthz", |_req: &mut corral::Request| Response::text(200, "ok"))
///     .prefix("GET", "/files/", |req: &mut corral::Request| {
///         Response::text(200, req.path().to_owned())
///     });
/// # let _ = router;
/// ```
pub struct Router {
    routes: Vec<Route>,
    unmatched: Arc<RouteStat>,
}

impl Default for Router {
    fn default() -> Router {
        Router {
            routes: Vec::new(),
            unmatched: Arc::new(RouteStat {
                label: "unmatched".into(),
                duration: Histogram::default(),
            }),
        }
    }
}

impl Router {
    /// A router with no routes.
    pub fn new() -> Router {
        Router::default()
    }

    /// Serves `method` on exactly `path`.
    pub fn route(mut self, method: &str, path: &str, handler: impl Handler) -> Router {
        self.push(method, Pattern::Exact(path.to_owned()), handler);
        self
    }

    /// Serves `method` on every path that starts with `prefix`.
    pub fn prefix(mut self, method: &str, prefix: &str, handler: impl Handler) -> Router {
        self.push(method, Pattern::Prefix(prefix.to_owned()), handler);
        self
    }

    /// Serves `GET` (and so `HEAD`) on exactly `path`.
    pub fn get(self, path: &str, handler: impl Handler) -> Router {
        self.route("GET", path, handler)
    }

    /// Serves `POST` on exactly `path`.
    pub fn post(self, path: &str, handler: impl Handler) -> Router {
        self.route("POST", path, handler)
    }

    /// Serves `PUT` on exactly `path`.
    pub fn put(self, path: &str, handler: impl Handler) -> Router {
        self.route("PUT", path, handler)
    }

    /// The handler-time histograms of every route so far, for `/metrics`.
    pub fn stats(&self) -> RouteStats {
        let mut stats: Vec<_> = self.routes.iter().map(|r| r.stat.clone()).collect();
        stats.push(self.unmatched.clone());
        RouteStats(Arc::new(stats))
    }

    fn push(&mut self, method: &str, pattern: Pattern, handler: impl Handler) {
        let label = match &pattern {
            Pattern::Exact(p) => format!("{method} {p}"),
            Pattern::Prefix(p) => format!("{method} {p}*"),
        };
        self.routes.push(Route {
            method: method.to_owned(),
            pattern,
            handler: Box::new(handler),
            stat: Arc::new(RouteStat {
                label,
                duration: Histogram::default(),
            }),
        });
        // Stable sort: exact first, then longer prefixes first.
        self.routes.sort_by_key(|r| match &r.pattern {
            Pattern::Exact(_) => (0, 0),
            Pattern::Prefix(p) => (1, usize::MAX - p.len()),
        });
    }

    fn method_matches(route: &str, method: &str) -> bool {
        route == method || (method == "HEAD" && route == "GET")
    }

    fn find(&self, method: &str, path: &str) -> Result<&Route, Vec<&str>> {
        let mut allowed: Vec<&str> = Vec::new();
        for r in self.routes.iter().filter(|r| r.pattern.matches(path)) {
            if Self::method_matches(&r.method, method) {
                return Ok(r);
            }
            for m in [
                r.method.as_str(),
                if r.method == "GET" { "HEAD" } else { "" },
            ] {
                if !m.is_empty() && !allowed.contains(&m) {
                    allowed.push(m);
                }
            }
        }
        Err(allowed)
    }
}

impl Handler for Router {
    fn handle(&self, req: &mut Request) -> Response {
        let started = Instant::now();
        let (stat, resp) = match self.find(req.method(), req.path()) {
            Ok(route) => (&route.stat, route.handler.handle(req)),
            Err(_) if req.method() == "OPTIONS" && req.path() == "*" => {
                (&self.unmatched, self.server_options())
            }
            Err(allowed) => (&self.unmatched, Router::refuse(req, allowed)),
        };
        stat.duration.observe(started.elapsed());
        resp
    }

    fn wants_body(&self, method: &str, path: &str) -> bool {
        self.find(method, path).is_ok()
    }
}

impl Router {
    /// The answer to `OPTIONS *`, which asks about the server rather than a
    /// resource (RFC 9110 §9.3.7): 204 with `Allow` listing every method
    /// some route serves, as `OPTIONS` on a path lists that path's. It is
    /// the router's to answer, not the protocol core's, because only the
    /// routes know the methods; the core has already refused `*` with any
    /// other method (RFC 9112 §3.2.4). nginx answers `OPTIONS *` with 400;
    /// hyper hands it to the service.
    fn server_options(&self) -> Response {
        let mut allowed: Vec<&str> = Vec::new();
        for r in &self.routes {
            for m in [
                r.method.as_str(),
                if r.method == "GET" { "HEAD" } else { "" },
            ] {
                if !m.is_empty() && !allowed.contains(&m) {
                    allowed.push(m);
                }
            }
        }
        if !allowed.contains(&"OPTIONS") {
            allowed.push("OPTIONS");
        }
        Response::new(204).with_header("Allow", &allowed.join(", "))
    }

    /// 404 for an unknown path; 405 with `Allow` (or 204 for OPTIONS) for a
    /// known path and another method.
    fn refuse(req: &Request, allowed: Vec<&str>) -> Response {
        match allowed {
            allowed if allowed.is_empty() => Response::error(404, ""),
            mut allowed => {
                allowed.push("OPTIONS");
                let allow = allowed.join(", ");
                if req.method() == "OPTIONS" {
                    Response::new(204).with_header("Allow", &allow)
                } else {
                    Response::error(405, "").with_header("Allow", &allow)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Framing, Head, Headers, Version};

    fn req(method: &str, target: &str) -> Request {
        Request::new(
            Head {
                method: method.into(),
                target: target.into(),
                version: Version::Http11,
                headers: Headers::new(),
                framing: Framing::None,
                keep_alive: true,
                expect_continue: false,
            },
            Vec::new(),
            None,
        )
    }

    fn router() -> Router {
        Router::new()
            .prefix("GET", "/a/", |_: &mut Request| {
                Response::text(200, "prefix a")
            })
            .get("/a/x", |_: &mut Request| Response::text(200, "exact"))
            .prefix("GET", "/a/long/", |_: &mut Request| {
                Response::text(200, "prefix long")
            })
            .post("/echo", |_: &mut Request| Response::text(200, "echo"))
            .put("/echo", |_: &mut Request| Response::text(200, "echo"))
    }

    fn body(r: &Response) -> &[u8] {
        r.body().as_slice().unwrap_or_default()
    }

    #[test]
    fn exact_beats_prefix_and_longer_prefix_wins() {
        let r = router();
        assert_eq!(body(&r.handle(&mut req("GET", "/a/x"))), b"exact");
        assert_eq!(body(&r.handle(&mut req("GET", "/a/y"))), b"prefix a");
        assert_eq!(
            body(&r.handle(&mut req("GET", "/a/long/z?q=1"))),
            b"prefix long"
        );
        assert_eq!(body(&r.handle(&mut req("HEAD", "/a/x"))), b"exact");
    }

    #[test]
    fn missing_path_is_404_and_wrong_method_is_405_with_allow() {
        let r = router();
        assert_eq!(r.handle(&mut req("GET", "/nope")).status(), 404);
        let resp = r.handle(&mut req("DELETE", "/echo"));
        assert_eq!(resp.status(), 405);
        assert_eq!(resp.header("Allow"), Some("POST, PUT, OPTIONS"));
        let resp = r.handle(&mut req("OPTIONS", "/echo"));
        assert_eq!(resp.status(), 204);
        assert!(r.wants_body("POST", "/echo") && !r.wants_body("POST", "/nope"));
    }

    #[test]
    fn options_asterisk_lists_every_method() {
        let resp = router().handle(&mut req("OPTIONS", "*"));
        assert_eq!(resp.status(), 204);
        assert_eq!(resp.header("Allow"), Some("GET, HEAD, POST, PUT, OPTIONS"));
        // RFC 9112 §3.2.4: absolute-form with no path is the same question.
        let resp = router().handle(&mut req("OPTIONS", "http://a"));
        assert_eq!(resp.header("Allow"), Some("GET, HEAD, POST, PUT, OPTIONS"));
        // A route for `*` itself, if someone registers one, comes first.
        let r = router().route("OPTIONS", "*", |_: &mut Request| {
            Response::text(200, "mine")
        });
        assert_eq!(body(&r.handle(&mut req("OPTIONS", "*"))), b"mine");
        // Only OPTIONS asks about the server (the core refuses `GET *`).
        assert_eq!(router().handle(&mut req("GET", "*")).status(), 404);
    }
}
