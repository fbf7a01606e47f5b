//! Routes: which requests go to which upstreams. A route is a path prefix
//! and the upstreams that serve it, written `PREFIX=UPSTREAM[,UPSTREAM...]`
//! on the command line (`--proxy`) and in the config file (`proxy = ...`).
//! An upstream is `IP:PORT` or `unix:/path`. Pure: text in, routes out; no
//! socket is opened here.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Where an upstream listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Upstream {
    /// A TCP address: an IP literal and a port, never a host name (an
    /// address should not depend on DNS at start-up, as for `--listen`).
    Tcp(SocketAddr),
    /// A Unix domain socket.
    Unix(PathBuf),
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Upstream::Tcp(addr) => write!(f, "{addr}"),
            Upstream::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A path prefix and the upstreams that serve every path under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Matched against the request's path, byte for byte; the path is
    /// passed upstream unchanged.
    pub prefix: String,
    /// At least one; requests are balanced across them.
    pub upstreams: Vec<Upstream>,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=", self.prefix)?;
        for (i, u) in self.upstreams.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{u}")?;
        }
        Ok(())
    }
}

/// Most upstreams in one route: a typo guard, like the other ceilings.
/// A route spreads over the app processes of one machine or a few.
pub const MAX_UPSTREAMS: usize = 64;

/// Parses one route, `PREFIX=UPSTREAM[,UPSTREAM...]`.
pub fn parse_route(s: &str) -> Result<Route, String> {
    let (prefix, upstreams) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected PREFIX=UPSTREAM[,UPSTREAM...]"))?;
    let prefix = prefix.trim();
    // A prefix is compared with the raw path of origin-form targets, which
    // starts with `/` and holds no whitespace, `?` or `#` (RFC 9112 §3.2.1).
    if !prefix.starts_with('/') {
        return Err(format!("prefix {prefix:?} must start with /"));
    }
    if prefix
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'?' || b == b'#')
    {
        return Err(format!("prefix {prefix:?} may not hold whitespace, ? or #"));
    }
    let mut list = Vec::new();
    for item in upstreams.split(',') {
        let upstream = parse_upstream(item.trim())?;
        if list.contains(&upstream) {
            return Err(format!("upstream {upstream} is listed twice"));
        }
        list.push(upstream);
    }
    if list.len() > MAX_UPSTREAMS {
        return Err(format!("at most {MAX_UPSTREAMS} upstreams per route"));
    }
    Ok(Route {
        prefix: prefix.to_owned(),
        upstreams: list,
    })
}

/// Parses `IP:PORT` or `unix:/absolute/path`.
pub fn parse_upstream(s: &str) -> Result<Upstream, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        if !path.starts_with('/') {
            return Err(format!("{s:?}: a unix socket path must be absolute"));
        }
        return Ok(Upstream::Unix(PathBuf::from(path)));
    }
    let addr: SocketAddr = s.parse().map_err(|_| {
        format!(
            "{s:?}: expected an upstream such as 127.0.0.1:8000 or unix:/run/app.sock \
             (host names are not resolved)"
        )
    })?;
    if addr.port() == 0 {
        return Err(format!("{s:?}: port 0 is not an upstream"));
    }
    Ok(addr.into())
}

impl From<SocketAddr> for Upstream {
    fn from(addr: SocketAddr) -> Upstream {
        Upstream::Tcp(addr)
    }
}

/// Adds the routes of one `proxy` value to `routes`: routes separated by
/// whitespace (a route's own list is comma-separated, and no prefix holds
/// whitespace). An empty value adds none, so `proxy =` reads back the
/// default, no routes. A prefix given twice is an error, not "last wins".
pub fn add_routes(routes: &mut Vec<Route>, value: &str) -> Result<(), String> {
    for item in value.split_whitespace() {
        let route = parse_route(item)?;
        if routes.iter().any(|r| r.prefix == route.prefix) {
            return Err(format!("prefix {} has two routes", route.prefix));
        }
        routes.push(route);
    }
    Ok(())
}

/// Prints routes the way [`add_routes`] reads them.
pub fn format_routes(routes: &[Route]) -> String {
    let items: Vec<String> = routes.iter().map(Route::to_string).collect();
    items.join(" ")
}

/// The route with the longest prefix of `path`, if any. Longest wins, as
/// for nginx's prefix `location`s, whatever the order the routes were given
/// in; `/api` matches `/api`, `/api/x` and also `/apix`, as nginx's would:
/// end a prefix with `/` to match whole segments only.
pub fn longest_match<'a>(routes: &'a [Route], path: &str) -> Option<&'a Route> {
    routes
        .iter()
        .filter(|r| path.starts_with(r.prefix.as_str()))
        .max_by_key(|r| r.prefix.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_routes() {
        let r = parse_route("/api=127.0.0.1:8000,[::1]:8001,unix:/run/app.sock").unwrap();
        assert_eq!(r.prefix, "/api");
        assert_eq!(
            r.upstreams,
            vec![
                Upstream::Tcp("127.0.0.1:8000".parse().unwrap()),
                Upstream::Tcp("[::1]:8001".parse().unwrap()),
                Upstream::Unix("/run/app.sock".into()),
            ]
        );
        assert_eq!(
            r.to_string(),
            "/api=127.0.0.1:8000,[::1]:8001,unix:/run/app.sock"
        );
        assert_eq!(parse_route(&r.to_string()), Ok(r));
    }

    #[test]
    fn refuses_bad_routes() {
        for bad in [
            "",
            "/api",
            "api=127.0.0.1:1",
            "/a?b=127.0.0.1:1",
            "/=",
            "/=localhost:80",
            "/=127.0.0.1",
            "/=127.0.0.1:0",
            "/=unix:run/app.sock",
            "/=127.0.0.1:1,127.0.0.1:1",
            "/=127.0.0.1:1,,127.0.0.1:2",
        ] {
            assert!(parse_route(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn routes_read_back_and_refuse_a_second_route_for_a_prefix() {
        let mut routes = Vec::new();
        add_routes(&mut routes, "/=127.0.0.1:1  /api=127.0.0.1:2,127.0.0.1:3").unwrap();
        add_routes(&mut routes, "").unwrap();
        assert_eq!(routes.len(), 2);
        let mut again = Vec::new();
        add_routes(&mut again, &format_routes(&routes)).unwrap();
        assert_eq!(again, routes);
        assert!(add_routes(&mut routes, "/api=127.0.0.1:4").is_err());
    }

    #[test]
    fn longest_prefix_wins_whatever_the_order() {
        let mut routes = Vec::new();
        add_routes(
            &mut routes,
            "/=127.0.0.1:1 /api/v2/=127.0.0.1:3 /api=127.0.0.1:2",
        )
        .unwrap();
        let port = |routes: &[Route], path| {
            longest_match(routes, path).map(|r| r.upstreams[0].to_string())
        };
        assert_eq!(port(&routes, "/").as_deref(), Some("127.0.0.1:1"));
        assert_eq!(port(&routes, "/other").as_deref(), Some("127.0.0.1:1"));
        assert_eq!(port(&routes, "/api").as_deref(), Some("127.0.0.1:2"));
        assert_eq!(port(&routes, "/apix").as_deref(), Some("127.0.0.1:2"));
        assert_eq!(port(&routes, "/api/v2").as_deref(), Some("127.0.0.1:2"));
        assert_eq!(port(&routes, "/api/v2/x").as_deref(), Some("127.0.0.1:3"));
        routes.remove(0);
        assert_eq!(port(&routes, "/other"), None);
    }
}
