//! Configuration: every limit and timeout the server enforces, read from
//! flags, the environment and a config file.
//!
//! This module never touches the network, and it touches the file system only
//! through the `read_file` function its caller passes in, so tests feed it
//! plain strings.
//!
//! Sources, highest precedence first:
//!
//! ```text
//!   --name value, --name=value   command line
//!   CORRAL_NAME=value            environment (dashes become underscores)
//!   name = value                 config file, named by --config or CORRAL_CONFIG
//!   Config::default()            built in
//! ```
//!
//! One static table, `OPTIONS` (in `options.rs`), describes each option
//! once: its name (which gives the flag, the environment variable and the
//! file key), a placeholder, a line of help, how to parse a value into a
//! `Config` and how to print it back. Help text, `--check-config` output, the
//! start-up log line and validation are loops over that table, so a new
//! option is one row plus one `Config` field. The value parsers are in
//! `values.rs`, the three sources and the help text in `sources.rs`, the
//! errors in `error.rs`.
//!
//! Each default is defined once, beside the type that uses it, with the
//! precedent behind its number: [`Limits`] for the request limits,
//! [`Timeouts`] for the connection deadlines, [`CacheConfig`] for the cache
//! and [`AppLimits`] for the array service. The server-level ones
//! (listeners, workers, queue, connections, shutdown, logs) are here, beside
//! `Config`. [`Config::default`] gathers them, and `--help` prints them from
//! it, so no number is restated.
//!
//! Rules every source shares:
//!
//! - A name that matches no option is an error, including an unknown
//!   `CORRAL_*` variable: a typo must not be silently ignored.
//! - A single-valued option may appear once per source. A second occurrence
//!   is an error, not a silent "last one wins".
//! - A list option (`listen`) found in a source replaces the list from lower
//!   sources; within one source, repeats and comma-separated items add up.
//! - A value is checked where it is read, so an error names the flag, the
//!   variable or the file and line it came from, even when a higher source
//!   would have overridden it.
//!
//! Value syntax: durations and sizes are described on [`parse_duration`] and
//! [`parse_size`]. Counts are plain decimal digits. Config file values are
//! taken literally after trimming; there is no quoting, so a value cannot
//! start or end with whitespace or contain `#` after whitespace.

mod error;
mod options;
mod sources;
#[cfg(test)]
mod tests;
mod values;

use crate::priority::Priority;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;

use crate::app::AppLimits;
use crate::cache::CacheConfig;
use crate::conn::Timeouts;
use crate::forwarded::{Cidr, TrustedProxies};
use crate::http::Limits;
use crate::proxy::{ProxyConfig, Route};
use options::{MAX_WORKERS, OPTIONS};
use values::format_duration;

pub use error::{ConfigError, Origin};
pub use sources::{from_sources, help_text, version_text, Command};
pub use values::{parse_duration, parse_size};

// ---------------------------------------------------------------------------
// Server-level defaults. Each says where its number came from; the others
// are with the types that use them (see the module doc).

/// Loopback only, so a fresh install is not reachable from the network until
/// someone asks for that. 8080 is the customary unprivileged HTTP port
/// (Tomcat's and Jetty's default).
const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));

/// Default workers per CPU. Handlers block for seconds on expensive
/// computations, so the pool is sized for waiting, not for CPU work, the way
/// thread-per-request servers oversubscribe (Tomcat starts at 200 threads,
/// Cheroot at 10, whatever the machine). Idle keep-alive connections are
/// parked in the poller and hold no worker, so the pool need not cover them.
const WORKERS_PER_CPU: usize = 4;

/// Floor of the default worker count, so a 1- or 2-CPU VM keeps free workers
/// while a few handlers compute.
const MIN_DEFAULT_WORKERS: usize = 8;

/// Connections accepted but waiting for a worker; past this, new connections
/// get a 503 at once instead of waiting unboundedly. 1024 is Puma's default
/// backlog and sits between nginx's listen backlog (511 on Linux) and
/// gunicorn's (2048).
const DEFAULT_QUEUE: usize = 1024;

/// Total open connections, parked idle ones included. Tomcat's NIO connector
/// defaults `maxConnections` to 10000. Each costs a file descriptor and up to
/// `max_head_bytes` of head buffer (about 160MiB for all of them at the
/// default); the process fd limit (`LimitNOFILE`) must be raised to match.
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Requests parked at once waiting for an answer that comes later (a value
/// being computed). Each costs its connection and its buffers, not a
/// thread, so thousands are affordable; the bound keeps a storm of misses
/// from taking every connection slot: at the default `max-connections`
/// almost 6000 stay for hits, health checks and new clients. Varnish bounds
/// its waiting list only by its sessions; nginx's `proxy_cache_lock` by
/// its connections.
const DEFAULT_MAX_WAITING: usize = 4096;

/// In-flight requests get this long to finish after SIGTERM. systemd waits
/// `TimeoutStopSec` (90s by default) before SIGKILL, and Kubernetes'
/// `terminationGracePeriodSeconds` is 30s; 10s fits well inside both and is
/// no shorter than the default write timeout, so a response already being
/// written can finish.
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// The operator's endpoints listen on loopback beside the public port, the
/// port Prometheus' own exporters conventionally take (9090 and up).
const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9090));

/// After SIGTERM, `/healthz` answers 503 this long before the listeners
/// close. Zero, so a lone corral stops at once as it always has; behind a
/// front it should exceed the time the front takes to see the 503 (README,
/// "More than one machine"), as Kubernetes users add a `preStop` sleep for
/// the same reason.
const DEFAULT_DRAIN_DELAY: Duration = Duration::ZERO;

/// How long the kernel holds a connection that has sent nothing
/// (`TCP_DEFER_ACCEPT`, Apache's default `AcceptFilter http data` on Linux).
/// A client writes its request as soon as it is connected, so the
/// connection reaches corral with it, and the worker reads it at once
/// instead of waiting for it: with a connection per request, that saves a
/// wake-up and a wait per request (BENCHMARKS.md). One second, the kernel's first SYN-ACK
/// retransmit, so a silent connection still reaches corral, and its
/// `header-timeout`, within a second of the client's connect; Apache's 30
/// would keep silent clients off the descriptor count longer but stretch
/// that bound thirty-fold.
const DEFAULT_DEFER_ACCEPT: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------
// The configuration itself.

/// Everything the server can be told at start-up. Build it with
/// [`from_sources`], or start from [`Config::default`] in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Addresses to listen on: IP literals with ports, never host names.
    pub listen: Vec<SocketAddr>,
    /// Worker threads; each serves one connection at a time.
    pub workers: usize,
    /// Connections waiting for a worker before new ones get 503.
    pub queue: usize,
    /// Open connections at most, parked idle ones included.
    pub max_connections: usize,
    /// Requests waiting at once for an answer that comes later; past it,
    /// 503 with `Retry-After`.
    pub max_waiting: usize,
    /// The whole request head must arrive within this.
    pub header_timeout: Duration,
    /// A keep-alive connection idle this long is closed silently.
    pub idle_timeout: Duration,
    /// Each body read must make progress within this.
    pub read_timeout: Duration,
    /// A whole body must arrive within this after its head, extended by a
    /// second for every `min_body_rate` bytes received.
    pub body_timeout: Duration,
    /// Bytes per second a body must average, after `body_timeout`'s slack.
    pub min_body_rate: usize,
    /// Each write must make progress within this.
    pub write_timeout: Duration,
    /// A worker waits this long on a quiet connection before parking it.
    pub park_timeout: Duration,
    /// The kernel holds a new connection until its first bytes arrive, for
    /// about this long at most: it counts in SYN-ACK retransmits, so the
    /// time is rounded up to 1, 3, 7, 15, 31 or 63 s (then steps of 120 s);
    /// zero hands every connection over as soon as its handshake completes.
    pub defer_accept: Duration,
    /// In-flight requests get this long to finish on shutdown.
    pub shutdown_timeout: Duration,
    /// Largest request head (request line plus headers), in bytes.
    pub max_head_bytes: usize,
    /// Most header lines in one request.
    pub max_headers: usize,
    /// Largest request body, in bytes; 0 refuses every body.
    pub max_body_bytes: usize,
    /// Where access log lines go.
    pub access_log: AccessLogTarget,
    /// Most verbose level of the server log.
    pub log_level: LevelFilter,
    /// Where the operator's endpoints listen; `None` turns them off.
    pub admin_listen: Option<SocketAddr>,
    /// Fronts whose `X-Forwarded-For`, `-Proto` and `-Host` are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// After SIGTERM, `/healthz` answers 503 this long before the
    /// listeners close.
    pub drain_delay: Duration,
    /// Byte budget of the shared cache.
    pub cache_bytes: usize,
    /// Larger values are served but not stored.
    pub cache_max_entry_bytes: usize,
    /// How long a request waits for a value another request is computing.
    pub cache_wait_timeout: Duration,
    /// How long a failed computation is remembered; zero remembers nothing.
    pub cache_error_ttl: Duration,
    /// Computations running at once.
    pub compute_concurrency: usize,
    /// Computations waiting for a compute-lane thread; past it, 503.
    pub compute_queue: usize,
    /// How computations are scheduled beside requests.
    pub compute_priority: Priority,
    /// Largest `below` of `/primes`.
    pub max_primes_below: u32,
    /// Largest `width × height` of `/mandelbrot`.
    pub max_pixels: usize,
    /// Largest `max_iter` of `/mandelbrot`.
    pub max_iterations: u32,
    /// Proxy routes: path prefixes and their upstreams.
    pub proxy: Vec<Route>,
    /// Connecting to an upstream must take no longer.
    pub proxy_connect_timeout: Duration,
    /// A whole upstream exchange must take no longer (then 504).
    pub proxy_timeout: Duration,
    /// Connections to one upstream at most.
    pub proxy_max_connections: usize,
    /// How long a response without explicit freshness is kept.
    pub proxy_default_ttl: Duration,
    /// How long an expired entry is served while it is refreshed.
    pub proxy_grace: Duration,
    /// How long an expired entry is served when the upstream fails.
    pub proxy_stale_if_error: Duration,
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// No access log.
    Off,
    /// Standard error, which journald captures under systemd.
    Stderr,
    /// Appended to this file.
    File(PathBuf),
}

impl Default for Config {
    /// Every option at its default, gathered from where each is defined.
    fn default() -> Self {
        let limits = Limits::default();
        let timeouts = Timeouts::default();
        let cache = CacheConfig::default();
        let app = AppLimits::default();
        let proxy = ProxyConfig::default();
        Config {
            listen: vec![DEFAULT_LISTEN],
            workers: default_workers(),
            queue: DEFAULT_QUEUE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_waiting: DEFAULT_MAX_WAITING,
            header_timeout: timeouts.header,
            idle_timeout: timeouts.idle,
            read_timeout: timeouts.read,
            body_timeout: timeouts.body,
            min_body_rate: saturating_usize(timeouts.min_body_rate),
            write_timeout: timeouts.write,
            park_timeout: timeouts.park,
            defer_accept: DEFAULT_DEFER_ACCEPT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            max_head_bytes: limits.max_head_bytes,
            max_headers: limits.max_headers,
            max_body_bytes: saturating_usize(limits.max_body_bytes),
            // stderr, not off: an operator who never configured logging
            // should still see traffic, and journald keeps it.
            access_log: AccessLogTarget::Stderr,
            // Start-up, shutdown and what an operator must act on; a
            // misbehaving client is logged at debug.
            log_level: LevelFilter::Info,
            admin_listen: Some(DEFAULT_ADMIN_LISTEN),
            // Nobody: a header is believed only once an operator names
            // the front that writes it.
            trusted_proxies: Vec::new(),
            drain_delay: DEFAULT_DRAIN_DELAY,
            cache_bytes: saturating_usize(cache.max_bytes),
            cache_max_entry_bytes: saturating_usize(cache.max_entry_bytes),
            cache_wait_timeout: cache.wait_timeout,
            cache_error_ttl: cache.error_ttl,
            compute_concurrency: cache.compute_concurrency,
            compute_queue: cache.max_queued,
            compute_priority: cache.compute_priority,
            max_primes_below: app.max_primes_below,
            max_pixels: app.max_pixels,
            max_iterations: app.max_iterations,
            proxy: proxy.routes,
            proxy_connect_timeout: proxy.connect_timeout,
            proxy_timeout: proxy.timeout,
            proxy_max_connections: proxy.max_connections,
            proxy_default_ttl: proxy.default_ttl,
            proxy_grace: proxy.grace,
            proxy_stale_if_error: proxy.stale_if_error,
        }
    }
}

/// `WORKERS_PER_CPU` per CPU, at least `MIN_DEFAULT_WORKERS`, at most
/// `MAX_WORKERS`. If the CPU count is unknown we assume one.
fn default_workers() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    cpus.saturating_mul(WORKERS_PER_CPU)
        .clamp(MIN_DEFAULT_WORKERS, MAX_WORKERS)
}

/// A byte count from a `u64` field, capped where `usize` is narrower.
fn saturating_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl Config {
    /// Checks a `Config` however it was built: every value must be one that
    /// the option parsers accept (so a struct literal in a test obeys the
    /// same floors and ceilings as a flag), and options that depend on each
    /// other must agree. [`from_sources`] calls it before returning.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // A value is valid exactly when its printed form is accepted as
        // input, so the rules live in one place: the table's setters.
        let mut probe = self.clone();
        for opt in OPTIONS {
            let shown = (opt.show)(self);
            opt.set.apply(&mut probe, &shown, true).map_err(|reason| {
                ConfigError::Invalid(format!("{} = {shown}: {reason}", opt.name))
            })?;
        }
        // Parking exists so that idle connections hold no worker; a park
        // timeout as long as the idle timeout would hold every idle
        // connection for its whole life.
        if self.park_timeout >= self.idle_timeout {
            return Err(ConfigError::Invalid(format!(
                "park-timeout ({}) must be shorter than idle-timeout ({})",
                format_duration(&self.park_timeout),
                format_duration(&self.idle_timeout),
            )));
        }
        // A proxied request waits parked for at most cache-wait-timeout:
        // a longer upstream deadline would answer its 504 to nobody.
        if !self.proxy.is_empty() && self.proxy_timeout >= self.cache_wait_timeout {
            return Err(ConfigError::Invalid(format!(
                "proxy-timeout ({}) must be shorter than cache-wait-timeout ({})",
                format_duration(&self.proxy_timeout),
                format_duration(&self.cache_wait_timeout),
            )));
        }
        // The operator's endpoints must never be reachable on the public port.
        if let Some(admin) = self.admin_listen {
            if admin.port() != 0 && self.listen.contains(&admin) {
                return Err(ConfigError::Invalid(format!(
                    "admin-listen ({admin}) must differ from every listen address"
                )));
            }
        }
        Ok(())
    }

    /// The request limits every connection enforces.
    pub fn limits(&self) -> Limits {
        Limits {
            max_head_bytes: self.max_head_bytes,
            max_headers: self.max_headers,
            max_body_bytes: self.max_body_bytes as u64,
        }
    }

    /// The deadlines the connection loop enforces.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            header: self.header_timeout,
            idle: self.idle_timeout,
            read: self.read_timeout,
            body: self.body_timeout,
            min_body_rate: self.min_body_rate as u64,
            write: self.write_timeout,
            park: self.park_timeout,
            wait: self.cache_wait_timeout,
        }
    }

    /// The fronts whose forwarding headers are believed.
    pub fn trusted_proxies(&self) -> TrustedProxies {
        TrustedProxies::new(self.trusted_proxies.clone())
    }

    /// The shared cache's limits.
    pub fn cache_config(&self) -> CacheConfig {
        CacheConfig {
            max_bytes: self.cache_bytes as u64,
            max_entry_bytes: self.cache_max_entry_bytes as u64,
            wait_timeout: self.cache_wait_timeout,
            error_ttl: self.cache_error_ttl,
            compute_concurrency: self.compute_concurrency,
            max_queued: self.compute_queue,
            compute_priority: self.compute_priority,
        }
    }

    /// The proxy's routes, deadlines and caching windows.
    pub fn proxy_config(&self) -> ProxyConfig {
        ProxyConfig {
            routes: self.proxy.clone(),
            connect_timeout: self.proxy_connect_timeout,
            timeout: self.proxy_timeout,
            max_connections: self.proxy_max_connections,
            default_ttl: self.proxy_default_ttl,
            grace: self.proxy_grace,
            stale_if_error: self.proxy_stale_if_error,
        }
    }

    /// One line for the start-up log: workers, queue, connections, timeouts
    /// and size limits, as `name=value` pairs.
    pub fn limits_summary(&self) -> String {
        OPTIONS
            .iter()
            .filter(|opt| opt.is_limit)
            .map(|opt| format!("{}={}", opt.name, (opt.show)(self)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The `--check-config` output: a comment line, then one `name = value`
    /// line per option, in the syntax a config file accepts, so the output
    /// can be saved and read back with `--config`.
    pub fn to_config_text(&self) -> String {
        let mut out = String::from("# effective corral configuration\n");
        for opt in OPTIONS {
            let _ = writeln!(out, "{} = {}", opt.name, (opt.show)(self));
        }
        out
    }
}
