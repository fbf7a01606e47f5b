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

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;

use crate::cache::CacheConfig;
use options::{MAX_WORKERS, OPTIONS};
use values::format_duration;

pub use error::{ConfigError, Origin};
pub use sources::{from_sources, help_text, version_text, Command};
pub use values::{parse_duration, parse_size};

// ---------------------------------------------------------------------------
// Defaults. Each says where its number came from; the bounds the parsers
// enforce are with the option table.

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
/// `max_head_bytes` of buffer, so 10000 x 16KiB bounds head buffers at about
/// 160MiB; the process fd limit (`LimitNOFILE`) must be raised to match.
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// The whole request head must arrive within this, measured from the first
/// wait, not per read: a per-read timeout resets on every byte and lets a
/// slowloris client trickle forever. nginx allows 60s (`client_header_timeout`),
/// hyper 30s (`header_read_timeout`), Apache's mod_reqtimeout 20s extended
/// up to 40s while data flows. We take Cheroot's 10s socket timeout: a real
/// client sends its head in one round trip, and 10s still covers a poor
/// mobile link.
const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Keep-alive idle time before a silent close. Apache's `KeepAliveTimeout`
/// and Node's `keepAliveTimeout` are both 5s (nginx keeps 75s). Short,
/// because a parked connection still costs a descriptor, and reconnecting
/// costs the client one round trip.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Each body read must make progress within this. nginx's
/// `client_body_timeout` is 60s between two reads, Apache's mod_reqtimeout
/// gives the body 20s; we match `header_timeout`: same client, same link.
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Each write must make progress within this. nginx's `send_timeout` is 60s
/// between two writes; Cheroot's 10s socket timeout covers both directions.
/// A client that stops reading must not pin a worker for a minute.
const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a worker waits on a quiet connection before handing it to the
/// poller. No other server has this knob; it exists because corral parks
/// idle connections. On loopback or a LAN a pipelined or follow-up request
/// arrives within a round trip, well under a millisecond, so 5ms catches it
/// without a trip through the poller, while a worker never sits more than
/// 5ms on a client that has gone quiet.
const DEFAULT_PARK_TIMEOUT: Duration = Duration::from_millis(5);

/// In-flight requests get this long to finish after SIGTERM. systemd waits
/// `TimeoutStopSec` (90s by default) before SIGKILL, and Kubernetes'
/// `terminationGracePeriodSeconds` is 30s; 10s fits well inside both and
/// equals `write_timeout`, so a response already being written can finish.
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Request line plus header lines. Node's default `maxHeaderSize` is 16KiB;
/// nginx allows four 8KiB buffers (`large_client_header_buffers 4 8k`),
/// Apache 8190 bytes a line. 16KiB holds the cookies of real sites and the
/// 8000-octet request line RFC 9112 section 3 recommends supporting.
const DEFAULT_MAX_HEAD_BYTES: usize = 16 * 1024;

/// Apache's `LimitRequestFields`, gunicorn's `limit_request_fields` and
/// hyper's default are all 100 (Node allows 2000).
const DEFAULT_MAX_HEADERS: usize = 100;

/// nginx's `client_max_body_size` default. Unlike nginx and Apache, 0 means
/// "no body at all", not "unlimited": a limit copied from their configs
/// fails closed.
const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// The operator's endpoints listen on loopback beside the public port, the
/// port Prometheus' own exporters conventionally take (9090 and up).
const DEFAULT_ADMIN_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    9090,
));

/// Room for dozens of the multi-megabyte arrays the cache exists for on a
/// modest machine; size it to yours (and `MemoryMax=` above it).
const DEFAULT_CACHE_BYTES: usize = 256 << 20;

/// A quarter of the default budget, so one value cannot flush most of the
/// cache. memcached caps items at 1 MB; our values are larger, so the cap
/// follows the budget instead.
const DEFAULT_CACHE_MAX_ENTRY_BYTES: usize = 64 << 20;

/// Values take seconds; 30 s stays under the 60 s `proxy_read_timeout` of an
/// nginx in front. nginx's own `proxy_cache_lock_timeout` is 5 s, but its
/// waiters then go to the upstream themselves; ours have no such fallback.
const DEFAULT_CACHE_WAIT_TIMEOUT: Duration = Duration::from_secs(30);

/// A failing key is retried about once a second, not in a hot loop, and a
/// transient failure clears before a client's retry.
const DEFAULT_CACHE_ERROR_TTL: Duration = Duration::from_secs(1);

/// 10^8: the sieve takes about a second and 50 MB while it runs, and the
/// answer (5.76 million primes) is 23 MB as raw u32.
const DEFAULT_MAX_PRIMES_BELOW: u32 = 100_000_000;

/// 2048 × 2048: 16 MiB of u32 counts.
const DEFAULT_MAX_PIXELS: usize = 2048 * 2048;

/// With the largest image, about 2 × 10^10 iterations at worst: tens of
/// seconds on one core, which the compute-concurrency limit keeps to a few
/// cores at once.
const DEFAULT_MAX_ITERATIONS: u32 = 5000;

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
    /// The whole request head must arrive within this.
    pub header_timeout: Duration,
    /// A keep-alive connection idle this long is closed silently.
    pub idle_timeout: Duration,
    /// Each body read must make progress within this.
    pub read_timeout: Duration,
    /// Each write must make progress within this.
    pub write_timeout: Duration,
    /// A worker waits this long on a quiet connection before parking it.
    pub park_timeout: Duration,
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
    /// Largest `below` of `/primes`.
    pub max_primes_below: u32,
    /// Largest `width × height` of `/mandelbrot`.
    pub max_pixels: usize,
    /// Largest `max_iter` of `/mandelbrot`.
    pub max_iterations: u32,
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
    fn default() -> Self {
        Config {
            listen: vec![DEFAULT_LISTEN],
            workers: default_workers(),
            queue: DEFAULT_QUEUE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            park_timeout: DEFAULT_PARK_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            // stderr, not off: an operator who never configured logging
            // should still see traffic, and journald keeps it.
            access_log: AccessLogTarget::Stderr,
            log_level: LevelFilter::Info,
            admin_listen: Some(DEFAULT_ADMIN_LISTEN),
            cache_bytes: DEFAULT_CACHE_BYTES,
            cache_max_entry_bytes: DEFAULT_CACHE_MAX_ENTRY_BYTES,
            cache_wait_timeout: DEFAULT_CACHE_WAIT_TIMEOUT,
            cache_error_ttl: DEFAULT_CACHE_ERROR_TTL,
            compute_concurrency: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_primes_below: DEFAULT_MAX_PRIMES_BELOW,
            max_pixels: DEFAULT_MAX_PIXELS,
            max_iterations: DEFAULT_MAX_ITERATIONS,
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

    /// The shared cache's limits.
    pub fn cache_config(&self) -> CacheConfig {
        CacheConfig {
            max_bytes: self.cache_bytes as u64,
            max_entry_bytes: self.cache_max_entry_bytes as u64,
            wait_timeout: self.cache_wait_timeout,
            error_ttl: self.cache_error_ttl,
            compute_concurrency: self.compute_concurrency,
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
