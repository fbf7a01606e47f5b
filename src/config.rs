//! Configuration: every limit and timeout the server enforces, each default
//! with the precedent behind its number.
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
//! One static table, `OPTIONS`, describes each option once: its name (which
//! gives the flag, the environment variable and the file key), a placeholder,
//! a line of help, how to parse a value into a `Config` and how to print it
//! back. Help text, `--check-config` output, the start-up log line and
//! validation are loops over that table, so a new option is one row plus one
//! `Config` field.
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

use std::fmt::{self, Write as _};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;

// ---------------------------------------------------------------------------
// Defaults and bounds. Each default says where its number came from; each
// bound says what it protects.

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

/// Ceiling of `--workers`: catches an extra zero before it spawns that many
/// threads. Apache compiles in a hard `ThreadLimit` of 20000 for the same
/// reason (typos); we take half, since each worker here is a full OS thread.
const MAX_WORKERS: usize = 10_000;

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

/// Ceiling of `--queue` and `--max-connections`: every entry is an open
/// socket, and 2^20 is Linux's default `fs.nr_open`, the most descriptors one
/// process may hold. A larger value can only be a typo, and a queue may be
/// allocated up front.
const MAX_SOCKETS: usize = 1 << 20;

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

/// Ceiling of every `*_timeout`: `Instant + timeout` must not overflow, and
/// no HTTP exchange needs to wait a day.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// Request line plus header lines. Node's default `maxHeaderSize` is 16KiB;
/// nginx allows four 8KiB buffers (`large_client_header_buffers 4 8k`),
/// Apache 8190 bytes a line. 16KiB holds the cookies of real sites and the
/// 8000-octet request line RFC 9112 section 3 recommends supporting.
const DEFAULT_MAX_HEAD_BYTES: usize = 16 * 1024;

/// Floor of `--max-head-bytes`: below this even a request line with a
/// modest URL and a Host header would be refused.
const MIN_HEAD_BYTES: usize = 256;

/// Apache's `LimitRequestFields`, gunicorn's `limit_request_fields` and
/// hyper's default are all 100 (Node allows 2000).
const DEFAULT_MAX_HEADERS: usize = 100;

/// Ceiling of `--max-headers`: the parser sets aside a slot per header for
/// every request, and past a few thousand those slots cost more than the
/// head they describe.
const MAX_HEADERS: usize = 10_000;

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
                format_duration(self.park_timeout),
                format_duration(self.idle_timeout),
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
    pub fn cache_config(&self) -> crate::cache::CacheConfig {
        crate::cache::CacheConfig {
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

// ---------------------------------------------------------------------------
// The option table.

/// One option: everything the help text, the three sources, `--check-config`
/// and the start-up log need to know about it.
struct OptSpec {
    /// The long flag without `--`; also the config file key, and, uppercased
    /// with `-` turned into `_` behind `CORRAL_`, the environment variable.
    name: &'static str,
    /// Placeholder for the value in the help text, e.g. `DURATION`.
    value: &'static str,
    /// One line of help.
    help: &'static str,
    /// Whether `limits_summary` lists it.
    is_limit: bool,
    /// How a value from any source lands in a `Config`.
    set: Set,
    /// The value in a form `set` accepts back.
    show: fn(&Config) -> String,
}

/// A setter: how one textual value changes a `Config`. The error is a short
/// reason; the caller adds which option and source it came from.
type SetFn = fn(&mut Config, &str) -> Result<(), String>;

/// How an option takes values.
enum Set {
    /// A single value, given at most once per source.
    One(SetFn),
    /// A list. The first occurrence in a source clears the list inherited
    /// from lower sources; each occurrence then adds its items.
    List {
        /// Empties the list.
        clear: fn(&mut Config),
        /// Adds one occurrence's items.
        add: SetFn,
    },
}

impl Set {
    /// Applies one occurrence of the option; `first` says whether it is the
    /// first in its source.
    fn apply(&self, config: &mut Config, value: &str, first: bool) -> Result<(), String> {
        match self {
            Set::One(set) => set(config, value),
            Set::List { clear, add } => {
                if first {
                    clear(config);
                }
                add(config, value)
            }
        }
    }
}

/// Every option, in help order.
static OPTIONS: &[OptSpec] = &[
    OptSpec {
        name: "listen",
        value: "ADDR",
        help: "IP address and port, e.g. [::1]:8080; repeat or comma-separate for more",
        is_limit: false,
        set: Set::List {
            clear: |c| c.listen.clear(),
            add: add_listen,
        },
        show: |c| {
            let addrs: Vec<String> = c.listen.iter().map(SocketAddr::to_string).collect();
            addrs.join(", ")
        },
    },
    OptSpec {
        name: "workers",
        value: "N",
        help: "worker threads; by default 4 per CPU, at least 8",
        is_limit: true,
        set: Set::One(|c, v| {
            c.workers = count_in(v, 1, MAX_WORKERS)?;
            Ok(())
        }),
        show: |c| c.workers.to_string(),
    },
    OptSpec {
        name: "queue",
        value: "N",
        help: "connections waiting for a worker before new ones get 503",
        is_limit: true,
        set: Set::One(|c, v| {
            c.queue = count_in(v, 1, MAX_SOCKETS)?;
            Ok(())
        }),
        show: |c| c.queue.to_string(),
    },
    OptSpec {
        name: "max-connections",
        value: "N",
        help: "open connections at most, idle ones included",
        is_limit: true,
        set: Set::One(|c, v| {
            c.max_connections = count_in(v, 1, MAX_SOCKETS)?;
            Ok(())
        }),
        show: |c| c.max_connections.to_string(),
    },
    OptSpec {
        name: "header-timeout",
        value: "DURATION",
        help: "the whole request head must arrive within this",
        is_limit: true,
        set: Set::One(|c, v| {
            c.header_timeout = timeout(v)?;
            Ok(())
        }),
        show: |c| format_duration(c.header_timeout),
    },
    OptSpec {
        name: "idle-timeout",
        value: "DURATION",
        help: "close a keep-alive connection idle this long",
        is_limit: true,
        set: Set::One(|c, v| {
            c.idle_timeout = timeout(v)?;
            Ok(())
        }),
        show: |c| format_duration(c.idle_timeout),
    },
    OptSpec {
        name: "read-timeout",
        value: "DURATION",
        help: "each body read must make progress within this",
        is_limit: true,
        set: Set::One(|c, v| {
            c.read_timeout = timeout(v)?;
            Ok(())
        }),
        show: |c| format_duration(c.read_timeout),
    },
    OptSpec {
        name: "write-timeout",
        value: "DURATION",
        help: "each write must make progress within this",
        is_limit: true,
        set: Set::One(|c, v| {
            c.write_timeout = timeout(v)?;
            Ok(())
        }),
        show: |c| format_duration(c.write_timeout),
    },
    OptSpec {
        name: "park-timeout",
        value: "DURATION",
        help: "a worker waits this long on a quiet connection before parking it",
        is_limit: true,
        set: Set::One(|c, v| {
            c.park_timeout = timeout(v)?;
            Ok(())
        }),
        show: |c| format_duration(c.park_timeout),
    },
    OptSpec {
        name: "shutdown-timeout",
        value: "DURATION",
        help: "in-flight requests get this long to finish on shutdown",
        is_limit: true,
        set: Set::One(|c, v| {
            c.shutdown_timeout = timeout(v)?;
            Ok(())
        }),
        show: |c| format_duration(c.shutdown_timeout),
    },
    OptSpec {
        name: "max-head-bytes",
        value: "SIZE",
        help: "largest request head (request line and headers)",
        is_limit: true,
        set: Set::One(|c, v| {
            c.max_head_bytes = size_in(v, MIN_HEAD_BYTES)?;
            Ok(())
        }),
        show: |c| format_size(c.max_head_bytes),
    },
    OptSpec {
        name: "max-headers",
        value: "N",
        help: "most header lines in one request",
        is_limit: true,
        set: Set::One(|c, v| {
            c.max_headers = count_in(v, 1, MAX_HEADERS)?;
            Ok(())
        }),
        show: |c| c.max_headers.to_string(),
    },
    OptSpec {
        name: "max-body-bytes",
        value: "SIZE",
        help: "largest request body; 0 refuses every body",
        is_limit: true,
        set: Set::One(|c, v| {
            c.max_body_bytes = size_in(v, 0)?;
            Ok(())
        }),
        show: |c| format_size(c.max_body_bytes),
    },
    OptSpec {
        name: "access-log",
        value: "TARGET",
        help: "where access log lines go: stderr, off, or a file path",
        is_limit: false,
        set: Set::One(|c, v| {
            c.access_log = parse_access_log(v)?;
            Ok(())
        }),
        show: |c| match &c.access_log {
            AccessLogTarget::Off => "off".to_string(),
            AccessLogTarget::Stderr => "stderr".to_string(),
            AccessLogTarget::File(path) => {
                let path = path.to_string_lossy();
                // A file really named `off` or `stderr` must not read back
                // as the keyword.
                if path == "off" || path == "stderr" {
                    format!("./{path}")
                } else {
                    path.into_owned()
                }
            }
        },
    },
    OptSpec {
        name: "log-level",
        value: "LEVEL",
        help: "server log verbosity: off, error, warn, info, debug or trace",
        is_limit: false,
        set: Set::One(|c, v| {
            c.log_level = parse_log_level(v)?;
            Ok(())
        }),
        show: |c| c.log_level.as_str().to_ascii_lowercase(),
    },
    OptSpec {
        name: "admin-listen",
        value: "ADDR",
        help: "where /metrics, /status and /cache/purge listen (never the public port), or off",
        is_limit: false,
        set: Set::One(|c, v| {
            c.admin_listen = match v.trim() {
                "off" => None,
                addr => Some(parse_listen_addr(addr)?),
            };
            Ok(())
        }),
        show: |c| {
            c.admin_listen
                .map_or_else(|| "off".to_string(), |a| a.to_string())
        },
    },
    OptSpec {
        name: "cache-bytes",
        value: "SIZE",
        help: "byte budget of the shared cache",
        is_limit: true,
        set: Set::One(|c, v| {
            c.cache_bytes = size_in(v, 0)?;
            Ok(())
        }),
        show: |c| format_size(c.cache_bytes),
    },
    OptSpec {
        name: "cache-max-entry-bytes",
        value: "SIZE",
        help: "larger values are served but not stored",
        is_limit: true,
        set: Set::One(|c, v| {
            c.cache_max_entry_bytes = size_in(v, 0)?;
            Ok(())
        }),
        show: |c| format_size(c.cache_max_entry_bytes),
    },
    OptSpec {
        name: "cache-wait-timeout",
        value: "DURATION",
        help: "how long a request waits for a value another request is computing (then 503)",
        is_limit: true,
        set: Set::One(|c, v| {
            c.cache_wait_timeout = timeout(v)?;
            Ok(())
        }),
        show: |c| format_duration(c.cache_wait_timeout),
    },
    OptSpec {
        name: "cache-error-ttl",
        value: "DURATION",
        help: "how long a failed computation is remembered (jittered); 0 remembers nothing",
        is_limit: true,
        set: Set::One(|c, v| {
            let d = parse_duration(v)?;
            if d > MAX_TIMEOUT {
                return Err(format!("must be at most {}", format_duration(MAX_TIMEOUT)));
            }
            c.cache_error_ttl = d;
            Ok(())
        }),
        show: |c| format_duration(c.cache_error_ttl),
    },
    OptSpec {
        name: "compute-concurrency",
        value: "N",
        help: "computations running at once; by default the number of CPUs",
        is_limit: true,
        set: Set::One(|c, v| {
            c.compute_concurrency = count_in(v, 1, MAX_WORKERS)?;
            Ok(())
        }),
        show: |c| c.compute_concurrency.to_string(),
    },
    OptSpec {
        name: "max-primes-below",
        value: "N",
        help: "largest `below` that /primes accepts",
        is_limit: true,
        set: Set::One(|c, v| {
            c.max_primes_below = count_in(v, 0, u32::MAX as usize)? as u32;
            Ok(())
        }),
        show: |c| c.max_primes_below.to_string(),
    },
    OptSpec {
        name: "max-pixels",
        value: "N",
        help: "largest width × height that /mandelbrot accepts",
        is_limit: true,
        set: Set::One(|c, v| {
            c.max_pixels = count_in(v, 1, 1 << 28)?;
            Ok(())
        }),
        show: |c| c.max_pixels.to_string(),
    },
    OptSpec {
        name: "max-iterations",
        value: "N",
        help: "largest max_iter that /mandelbrot accepts",
        is_limit: true,
        set: Set::One(|c, v| {
            c.max_iterations = count_in(v, 1, 1_000_000)? as u32;
            Ok(())
        }),
        show: |c| c.max_iterations.to_string(),
    },
];

/// Prefix of every environment variable corral reads.
const ENV_PREFIX: &str = "CORRAL_";
/// The environment variable naming a config file.
const ENV_CONFIG: &str = "CORRAL_CONFIG";
/// Flags that steer `from_sources` itself and take no value.
const BARE_FLAGS: &[&str] = &["check-config", "help", "version"];
/// Every flag that is not an option, for typo suggestions.
const META_FLAGS: &[&str] = &["config", "check-config", "help", "version"];

/// `CORRAL_` followed by the name uppercased, `-` turned into `_`.
fn env_name(opt: &OptSpec) -> String {
    format!(
        "{ENV_PREFIX}{}",
        opt.name.to_ascii_uppercase().replace('-', "_")
    )
}

/// The index of the option called `name` in `OPTIONS`.
fn find_option(name: &str) -> Option<usize> {
    OPTIONS.iter().position(|opt| opt.name == name)
}

// ---------------------------------------------------------------------------
// Value parsers. Each returns a short reason on error; the caller names the
// option and the source.

/// Parses a duration: a non-negative decimal number and an optional unit,
/// `ms`, `s`, `m` or `h`; no unit means seconds. Examples: `500ms`, `10s`,
/// `1.5s`, `2m`, `1h`, `30`. Up to nine digits may follow the decimal point,
/// and the result must be a whole number of nanoseconds (`0.0015s` is 1.5ms,
/// `1.5ns` does not exist). Whitespace around the value and before the unit
/// is ignored. Exponents, signs and other units are rejected, as is anything
/// past `Duration::MAX`. Zero is accepted here; the timeout options refuse
/// it themselves.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration; expected e.g. 10s or 500ms".to_string());
    }
    if s.starts_with('-') {
        return Err("a duration cannot be negative".to_string());
    }
    let number_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(number_end);
    let unit_nanos: u128 = match unit.trim_start() {
        "ms" => 1_000_000,
        "" | "s" => NANOS_PER_SEC,
        "m" => 60 * NANOS_PER_SEC,
        "h" => 60 * 60 * NANOS_PER_SEC,
        other => return Err(format!("unknown unit {other:?}; expected ms, s, m or h")),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let malformed =
        whole.is_empty() || fraction.contains('.') || (number.contains('.') && fraction.is_empty());
    if malformed {
        return Err("expected a number such as 10, 1.5 or 500ms".to_string());
    }
    if fraction.len() > 9 {
        return Err("at most 9 digits may follow the decimal point".to_string());
    }
    let too_large = || "duration too large".to_string();
    // Both parts are ASCII digits only, so `parse` can fail only on overflow.
    let whole: u128 = whole.parse().map_err(|_| too_large())?;
    let fraction_scale = 10u128.pow(fraction.len() as u32);
    let fraction: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().map_err(|_| too_large())?
    };
    // fraction < 10^9 and unit_nanos <= 3.6e12, so this cannot overflow u128.
    let scaled = fraction * unit_nanos;
    let (fraction_nanos, below_a_nanosecond) = (scaled / fraction_scale, scaled % fraction_scale);
    if below_a_nanosecond != 0 {
        return Err("finer than a nanosecond".to_string());
    }
    let nanos = whole
        .checked_mul(unit_nanos)
        .and_then(|n| n.checked_add(fraction_nanos))
        .ok_or_else(too_large)?;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).map_err(|_| too_large())?;
    // The remainder is below 10^9, so it fits in u32.
    Ok(Duration::new(secs, (nanos % NANOS_PER_SEC) as u32))
}

/// Prints a duration so that [`parse_duration`] reads it back exactly: in the
/// largest of `h`, `m`, `s` and `ms` that divides it, else as decimal seconds
/// (`0.0015s`).
fn format_duration(d: Duration) -> String {
    let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
    if nanos == 0 {
        for (unit, name) in [(3600, "h"), (60, "m")] {
            if let (n @ 1.., 0) = (secs / unit, secs % unit) {
                return format!("{n}{name}");
            }
        }
        return format!("{secs}s");
    }
    let millis = secs
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(u64::from(nanos / 1_000_000)));
    if let (0, Some(millis)) = (nanos % 1_000_000, millis) {
        return format!("{millis}ms");
    }
    let fraction = format!("{nanos:09}");
    format!("{secs}.{}s", fraction.trim_end_matches('0'))
}

/// Parses a size in bytes: a whole number and an optional unit. `KiB`, `MiB`
/// and `GiB` are powers of 1024; `KB`, `MB` and `GB` are powers of 1000, as
/// their SI prefixes say; `B` or no unit means bytes. Examples: `512`,
/// `16KiB`, `1MiB`, `2MB`. Units are case-sensitive, so `16kib` and `16K`
/// are rejected rather than guessed at. Fractions are rejected (write
/// `1536KiB`, not `1.5MiB`), as is anything past `u64::MAX`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty size; expected e.g. 512, 16KiB or 1MiB".to_string());
    }
    if s.starts_with('-') {
        return Err("a size cannot be negative".to_string());
    }
    let number_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(number_end);
    if number.is_empty() {
        return Err("expected a number of bytes such as 512, 16KiB or 1MiB".to_string());
    }
    if unit.starts_with('.') {
        return Err(
            "expected a whole number; use a smaller unit (1536KiB, not 1.5MiB)".to_string(),
        );
    }
    let multiplier: u64 = match unit.trim_start() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown unit {other:?}; expected B, KiB, MiB, GiB, KB, MB or GB"
            ))
        }
    };
    let too_large = || "size too large".to_string();
    let number: u64 = number.parse().map_err(|_| too_large())?;
    number.checked_mul(multiplier).ok_or_else(too_large)
}

/// Prints a size so that [`parse_size`] reads it back exactly: in the largest
/// binary unit that divides it, else in bytes.
fn format_size(bytes: usize) -> String {
    const UNITS: [(usize, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (unit, name) in UNITS {
        if let (n @ 1.., 0) = (bytes / unit, bytes % unit) {
            return format!("{n}{name}");
        }
    }
    bytes.to_string()
}

/// A whole number in `min..=max`.
fn count_in(s: &str, min: usize, max: usize) -> Result<usize, String> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected a whole number".to_string());
    }
    let n = s
        .parse::<usize>()
        .ok()
        .filter(|n| *n <= max)
        .ok_or_else(|| format!("must be at most {max}"))?;
    if n < min {
        return Err(format!("must be at least {min}"));
    }
    Ok(n)
}

/// A size of at least `min` bytes that fits in memory on this platform.
fn size_in(s: &str, min: usize) -> Result<usize, String> {
    let bytes = parse_size(s)?;
    let bytes =
        usize::try_from(bytes).map_err(|_| "size too large for this platform".to_string())?;
    if bytes < min {
        return Err(format!("must be at least {}", format_size(min)));
    }
    Ok(bytes)
}

/// A duration above zero and at most `MAX_TIMEOUT`. Zero is refused rather
/// than read as "no timeout": the server never waits without a bound.
fn timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("a timeout must be greater than zero".to_string());
    }
    if d > MAX_TIMEOUT {
        return Err(format!("must be at most {}", format_duration(MAX_TIMEOUT)));
    }
    Ok(d)
}

/// Adds one occurrence of `listen`: one address or a comma-separated list.
fn add_listen(config: &mut Config, value: &str) -> Result<(), String> {
    for item in value.split(',') {
        let item = item.trim();
        let addr = parse_listen_addr(item)?;
        // Port 0 asks the OS for a fresh port each time, so repeating it is
        // not a duplicate.
        if addr.port() != 0 && config.listen.contains(&addr) {
            return Err(format!("{addr} is listed twice"));
        }
        config.listen.push(addr);
    }
    Ok(())
}

/// An IP literal with a port. Host names are refused, not resolved: the
/// address a server binds should not depend on DNS at start-up.
fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    if s.is_empty() {
        return Err("expected an address such as 127.0.0.1:8080 or [::1]:8080".to_string());
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if s.parse::<IpAddr>().is_ok() {
        return Err(format!("missing port; expected e.g. {s}:8080"));
    }
    Err(
        "expected an IP address and port such as 127.0.0.1:8080 or [::1]:8080 \
         (host names are not resolved)"
            .to_string(),
    )
}

/// `off`, `stderr`, or a file path.
fn parse_access_log(s: &str) -> Result<AccessLogTarget, String> {
    match s {
        "off" => Ok(AccessLogTarget::Off),
        "stderr" => Ok(AccessLogTarget::Stderr),
        "" => Err("expected stderr, off or a file path".to_string()),
        path => Ok(AccessLogTarget::File(PathBuf::from(path))),
    }
}

/// One of the `log` crate's level names, in any case.
fn parse_log_level(s: &str) -> Result<LevelFilter, String> {
    s.trim()
        .parse()
        .map_err(|_| "expected off, error, warn, info, debug or trace".to_string())
}

// ---------------------------------------------------------------------------
// Sources.

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Start the server.
    Run(Config),
    /// Print the effective configuration ([`Config::to_config_text`]) and
    /// exit.
    CheckConfig(Config),
    /// Print this help text and exit.
    Help(String),
    /// Print this version string and exit.
    Version(String),
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The command line.
    Flag,
    /// The environment variable with this name.
    Env(String),
    /// A line of a config file, counting from 1.
    File {
        /// The file as it was named.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
    },
}

/// Why the configuration could not be built. `Display` is one line that
/// names the option and its source and says what to do; `main` prints it and
/// exits with status 2.
#[derive(Debug)]
pub enum ConfigError {
    /// A flag that names no option.
    UnknownFlag {
        /// The argument as given.
        flag: String,
        /// A known flag it may be a typo of, without `--`.
        suggestion: Option<&'static str>,
    },
    /// A `CORRAL_*` environment variable that names no option.
    UnknownEnv {
        /// The variable's name.
        var: String,
        /// A known variable it may be a typo of.
        suggestion: Option<String>,
    },
    /// A config file key that names no option.
    UnknownKey {
        /// The file as it was named.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// The key as written.
        key: String,
        /// A known key it may be a typo of.
        suggestion: Option<&'static str>,
    },
    /// A command-line argument that is not a flag; corral takes none.
    UnexpectedArgument(String),
    /// A flag that needs a value came last, or was followed by another flag.
    MissingValue {
        /// The flag, without `--`.
        flag: &'static str,
        /// The placeholder from the help text.
        value: &'static str,
    },
    /// A flag that takes no value was given one with `=`.
    UnexpectedValue {
        /// The flag, without `--`.
        flag: &'static str,
    },
    /// A config file line that is not `name = value`.
    Syntax {
        /// The file as it was named.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
    },
    /// A single-valued option given twice in one source.
    Repeated {
        /// The option's name.
        option: &'static str,
        /// Where the second occurrence is.
        origin: Origin,
    },
    /// A value the option does not accept.
    InvalidValue {
        /// The option's name.
        option: &'static str,
        /// Where the value came from.
        origin: Origin,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The config file could not be read.
    ReadFile {
        /// The file as it was named.
        path: PathBuf,
        /// What went wrong.
        error: io::Error,
    },
    /// The merged configuration breaks a rule ([`Config::validate`]).
    Invalid(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::UnknownFlag { flag, suggestion } => {
                write!(f, "unknown option {flag}")?;
                if let Some(name) = suggestion {
                    write!(f, "; did you mean --{name}?")?;
                }
                write!(f, " (see --help)")
            }
            ConfigError::UnknownEnv { var, suggestion } => {
                write!(f, "unknown environment variable {var}")?;
                if let Some(name) = suggestion {
                    write!(f, "; did you mean {name}?")?;
                }
                write!(f, " (fix or unset it; --help lists the CORRAL_* names)")
            }
            ConfigError::UnknownKey {
                path,
                line,
                key,
                suggestion,
            } => {
                write!(f, "{}:{line}: unknown option {key:?}", path.display())?;
                if let Some(name) = suggestion {
                    write!(f, "; did you mean {name:?}?")?;
                }
                write!(f, " (see --help)")
            }
            ConfigError::UnexpectedArgument(arg) => write!(
                f,
                "unexpected argument {arg:?}: corral takes only --options (see --help)"
            ),
            ConfigError::MissingValue { flag, value } => {
                write!(
                    f,
                    "missing value for --{flag}; write --{flag} {value} or --{flag}={value}"
                )
            }
            ConfigError::UnexpectedValue { flag } => {
                write!(f, "--{flag} takes no value; write it alone")
            }
            ConfigError::Syntax { path, line } => write!(
                f,
                "{}:{line}: expected \"name = value\", a # comment or a blank line",
                path.display()
            ),
            ConfigError::Repeated { option, origin } => match origin {
                Origin::Flag => write!(f, "--{option} is given twice; give it once"),
                Origin::Env(var) => write!(f, "environment {var} is given twice"),
                Origin::File { path, line } => write!(
                    f,
                    "{}:{line}: {option} is already set earlier in this file; keep one",
                    path.display()
                ),
            },
            ConfigError::InvalidValue {
                option,
                origin,
                value,
                reason,
            } => match origin {
                Origin::Flag => write!(f, "invalid value {value:?} for --{option}: {reason}"),
                Origin::Env(var) => {
                    write!(f, "environment {var}: invalid value {value:?}: {reason}")
                }
                Origin::File { path, line } => write!(
                    f,
                    "{}:{line}: invalid value {value:?} for {option}: {reason}",
                    path.display()
                ),
            },
            ConfigError::ReadFile { path, error } => {
                write!(f, "cannot read config file {}: {error}", path.display())
            }
            ConfigError::Invalid(message) => write!(f, "invalid configuration: {message}"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::ReadFile { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// One `name = value` from some source, not yet applied.
struct Assignment {
    /// Index into `OPTIONS`.
    option: usize,
    value: String,
    origin: Origin,
}

/// What the command line said, before any value is applied.
struct Args {
    assignments: Vec<Assignment>,
    config_file: Option<String>,
    check_config: bool,
}

/// Builds the configuration from the command line (without `argv[0]`), the
/// environment and the config file, which is read through `read_file` so
/// that this module never opens files itself.
///
/// Precedence is flag > environment > file > default. `--help` and
/// `--version` return at once, before the environment or any file is looked
/// at; errors in arguments before them are still reported. A flag's value
/// may not start with `--` (`--workers --queue 8` is a missing value); write
/// `--name=--odd-value` for that.
///
/// `main` should collect `args` and `env` with `std::env::args_os` and
/// `std::env::vars_os`: the plain versions panic on a value that is not
/// UTF-8, where a clear error belongs.
pub fn from_sources(
    args: &[String],
    env: &[(String, String)],
    read_file: &dyn Fn(&Path) -> io::Result<String>,
) -> Result<Command, ConfigError> {
    let args = match parse_args(args)? {
        CommandLine::Options(args) => args,
        CommandLine::Print(command) => return Ok(*command),
    };
    let (env_assignments, env_config_file) = parse_env(env)?;
    let file_assignments = match args.config_file.or(env_config_file) {
        Some(path) => {
            let path = PathBuf::from(path);
            let text = read_file(&path).map_err(|error| ConfigError::ReadFile {
                path: path.clone(),
                error,
            })?;
            parse_file(&path, &text)?
        }
        None => Vec::new(),
    };

    let mut config = Config::default();
    apply(&mut config, &file_assignments)?;
    apply(&mut config, &env_assignments)?;
    apply(&mut config, &args.assignments)?;
    config.validate()?;
    Ok(if args.check_config {
        Command::CheckConfig(config)
    } else {
        Command::Run(config)
    })
}

/// Applies one source's assignments on top of `config`.
fn apply(config: &mut Config, assignments: &[Assignment]) -> Result<(), ConfigError> {
    let mut seen = vec![false; OPTIONS.len()];
    for a in assignments {
        let opt = &OPTIONS[a.option];
        let first = !seen[a.option];
        seen[a.option] = true;
        if !first && matches!(opt.set, Set::One(_)) {
            return Err(ConfigError::Repeated {
                option: opt.name,
                origin: a.origin.clone(),
            });
        }
        opt.set
            .apply(config, &a.value, first)
            .map_err(|reason| ConfigError::InvalidValue {
                option: opt.name,
                origin: a.origin.clone(),
                value: a.value.clone(),
                reason,
            })?;
    }
    Ok(())
}

/// What the command line asks for.
enum CommandLine {
    /// Run or check a configuration built from these options.
    Options(Args),
    /// `--help` or `--version`: print and exit, nothing else matters.
    Print(Box<Command>),
}

/// Reads the command line.
fn parse_args(args: &[String]) -> Result<CommandLine, ConfigError> {
    let mut parsed = Args {
        assignments: Vec::new(),
        config_file: None,
        check_config: false,
    };
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(CommandLine::Print(Box::new(Command::Help(help_text())))),
            "-V" | "--version" => {
                return Ok(CommandLine::Print(Box::new(Command::Version(
                    version_text(),
                ))))
            }
            "--check-config" => {
                parsed.check_config = true;
                continue;
            }
            _ => {}
        }
        let Some(body) = arg.strip_prefix("--") else {
            if arg.starts_with('-') {
                return Err(ConfigError::UnknownFlag {
                    flag: arg.clone(),
                    suggestion: None,
                });
            }
            return Err(ConfigError::UnexpectedArgument(arg.clone()));
        };
        let (name, inline_value) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (body, None),
        };
        if let Some(&flag) = BARE_FLAGS.iter().find(|&&bare| bare == name) {
            // Only `--help=x` and the like get here; the bare forms matched above.
            return Err(ConfigError::UnexpectedValue { flag });
        }
        let (option, flag, placeholder) = if name == "config" {
            (None, "config", "FILE")
        } else {
            let index = find_option(name).ok_or_else(|| ConfigError::UnknownFlag {
                flag: format!("--{name}"),
                suggestion: suggest(name, META_FLAGS),
            })?;
            (Some(index), OPTIONS[index].name, OPTIONS[index].value)
        };
        let value = match inline_value {
            Some(value) => value.to_string(),
            None => match rest.next() {
                Some(value) if !value.starts_with("--") => value.clone(),
                _ => {
                    return Err(ConfigError::MissingValue {
                        flag,
                        value: placeholder,
                    })
                }
            },
        };
        match option {
            Some(option) => parsed.assignments.push(Assignment {
                option,
                value,
                origin: Origin::Flag,
            }),
            None if parsed.config_file.is_some() => {
                return Err(ConfigError::Repeated {
                    option: "config",
                    origin: Origin::Flag,
                })
            }
            None => parsed.config_file = Some(config_path(value, Origin::Flag)?),
        }
    }
    Ok(CommandLine::Options(parsed))
}

/// A config file path as given, which must not be empty.
fn config_path(value: String, origin: Origin) -> Result<String, ConfigError> {
    if value.is_empty() {
        return Err(ConfigError::InvalidValue {
            option: "config",
            origin,
            value,
            reason: "expected a file path".to_string(),
        });
    }
    Ok(value)
}

/// Reads the `CORRAL_*` variables: the assignments, and the config file
/// `CORRAL_CONFIG` names, if any. Other variables are ignored.
fn parse_env(env: &[(String, String)]) -> Result<(Vec<Assignment>, Option<String>), ConfigError> {
    let mut assignments = Vec::new();
    let mut config_file = None;
    for (var, value) in env {
        if !var.starts_with(ENV_PREFIX) {
            continue;
        }
        if var == ENV_CONFIG {
            let path = config_path(value.clone(), Origin::Env(var.clone()))?;
            if config_file.replace(path).is_some() {
                return Err(ConfigError::Repeated {
                    option: "config",
                    origin: Origin::Env(var.clone()),
                });
            }
            continue;
        }
        let Some(option) = OPTIONS.iter().position(|opt| env_name(opt) == *var) else {
            let as_name = var[ENV_PREFIX.len()..]
                .to_ascii_lowercase()
                .replace('_', "-");
            let suggestion = suggest(&as_name, &["config"]).map(|name| match find_option(name) {
                Some(i) => env_name(&OPTIONS[i]),
                None => ENV_CONFIG.to_string(),
            });
            return Err(ConfigError::UnknownEnv {
                var: var.clone(),
                suggestion,
            });
        };
        assignments.push(Assignment {
            option,
            value: value.clone(),
            origin: Origin::Env(var.clone()),
        });
    }
    Ok((assignments, config_file))
}

/// Reads a config file: `name = value` lines, `#` comments (a whole line, or
/// the rest of a line after whitespace), blank lines.
fn parse_file(path: &Path, text: &str) -> Result<Vec<Assignment>, ConfigError> {
    let mut assignments = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = strip_comment(raw).trim();
        if content.is_empty() {
            continue;
        }
        let Some((key, value)) = content.split_once('=') else {
            return Err(ConfigError::Syntax {
                path: path.to_path_buf(),
                line,
            });
        };
        let key = key.trim();
        let option = find_option(key).ok_or_else(|| ConfigError::UnknownKey {
            path: path.to_path_buf(),
            line,
            key: key.to_string(),
            suggestion: suggest(key, &[]),
        })?;
        assignments.push(Assignment {
            option,
            value: value.trim().to_string(),
            origin: Origin::File {
                path: path.to_path_buf(),
                line,
            },
        });
    }
    Ok(assignments)
}

/// `line` without its comment: a `#` at the start or after whitespace
/// begins one, so a path like `/var/log/a#b` survives.
fn strip_comment(line: &str) -> &str {
    let mut after_space = true;
    for (i, c) in line.char_indices() {
        if c == '#' && after_space {
            return &line[..i];
        }
        after_space = c.is_whitespace();
    }
    line
}

/// The option (or one of `extra`) closest to `name`, if it is close enough
/// to be a typo of it.
fn suggest(name: &str, extra: &[&'static str]) -> Option<&'static str> {
    OPTIONS
        .iter()
        .map(|opt| opt.name)
        .chain(extra.iter().copied())
        .map(|candidate| (edit_distance(name, candidate), candidate))
        .filter(|&(distance, _)| distance <= 2)
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance, in chars. One string is always an option name, so
/// the cost is linear in the other.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        current[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitute.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

// ---------------------------------------------------------------------------
// Help and version.

/// `corral <version>`.
pub fn version_text() -> String {
    format!("corral {}", env!("CARGO_PKG_VERSION"))
}

/// The `--help` text: every option with its placeholder, help, environment
/// variable and default on this machine, then how the sources combine.
pub fn help_text() -> String {
    let defaults = Config::default();
    let mut out = format!(
        "{}\nA hardened synchronous HTTP/1.1 server.\n\nUsage: corral [OPTIONS]\n\nOptions:\n",
        version_text()
    );
    for opt in OPTIONS {
        let _ = writeln!(out, "  --{} {}", opt.name, opt.value);
        let _ = writeln!(out, "        {}", opt.help);
        let _ = writeln!(
            out,
            "        [default: {}] [env: {}]",
            (opt.show)(&defaults),
            env_name(opt)
        );
    }
    out.push_str(
        "  --config FILE
        read options from FILE [env: CORRAL_CONFIG]
  --check-config
        print the effective configuration as a config file and exit
  -h, --help
        print this help and exit
  -V, --version
        print the version and exit

Every option can also be set in the environment as CORRAL_ and its name in
capitals with - as _ (CORRAL_MAX_BODY_BYTES=4MiB), or in the config file as a
\"name = value\" line (max-body-bytes = 4MiB); # starts a comment, and listen
may be repeated. Precedence: flags, then environment, then config file, then
defaults. An unknown option or CORRAL_* variable is an error.

Durations: 500ms, 10s, 1.5s, 2m, 1h; a bare number is seconds.
Sizes: 512, 16KiB, 1MiB, 1GiB (powers of 1024) or 16KB, 1MB, 1GB (of 1000).
",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn env(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Runs `from_sources` with `file`, if any, served as `corral.conf`.
    fn load(
        args: &[&str],
        vars: &[(&str, &str)],
        file: Option<&str>,
    ) -> Result<Command, ConfigError> {
        let file = file.map(str::to_string);
        let read = move |path: &Path| -> io::Result<String> {
            match &file {
                Some(text) if path == Path::new("corral.conf") => Ok(text.clone()),
                _ => Err(io::Error::new(io::ErrorKind::NotFound, "no such file")),
            }
        };
        from_sources(&strings(args), &env(vars), &read)
    }

    /// `load` that must give `Command::Run`.
    fn run(args: &[&str], vars: &[(&str, &str)], file: Option<&str>) -> Config {
        match load(args, vars, file) {
            Ok(Command::Run(config)) => config,
            other => panic!("expected Run, got {other:?}"),
        }
    }

    /// `load` that must fail; returns the error's one line.
    fn fails(args: &[&str], vars: &[(&str, &str)], file: Option<&str>) -> String {
        match load(args, vars, file) {
            Err(e) => {
                let line = e.to_string();
                assert!(!line.contains('\n'), "error is not one line: {line}");
                line
            }
            Ok(other) => panic!("expected an error, got {other:?}"),
        }
    }

    const MS: fn(u64) -> Duration = Duration::from_millis;
    const SECS: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn durations_valid() {
        let cases: &[(&str, Duration)] = &[
            ("500ms", MS(500)),
            ("10s", SECS(10)),
            ("2m", SECS(120)),
            ("1h", SECS(3600)),
            ("1.5s", MS(1500)),
            ("0.25", MS(250)),
            ("30", SECS(30)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            (" 10s ", SECS(10)),
            ("10 s", SECS(10)),
            ("1.5ms", Duration::from_micros(1500)),
            ("0.000000001s", Duration::from_nanos(1)),
            ("0.5m", SECS(30)),
            ("007s", SECS(7)),
            ("18446744073709551615s", Duration::from_secs(u64::MAX)),
            ("18446744073709551615.999999999", Duration::MAX),
        ];
        for (input, want) in cases {
            assert_eq!(parse_duration(input), Ok(*want), "input {input:?}");
        }
    }

    #[test]
    fn durations_invalid() {
        let cases = [
            "",
            "   ",
            "-1s",
            "-0",
            "5x",
            "10S",
            "1d",
            "s",
            "ms",
            ".5s",
            "1.s",
            "1..5s",
            "1.2.3s",
            "1.0000000001s",
            "0.0000000001s",
            "0.0000001ms",
            "1e3",
            "+5s",
            "5 m s",
            "18446744073709551616s",
            "5124095576030432h",
            "99999999999999999999999999999999999999999h",
        ];
        for input in cases {
            assert!(
                parse_duration(input).is_err(),
                "input {input:?} should fail"
            );
        }
        assert!(parse_duration("5x").unwrap_err().contains("\"x\""));
    }

    #[test]
    fn durations_print_back_exactly() {
        let cases = [
            (MS(5), "5ms"),
            (SECS(10), "10s"),
            (SECS(90), "90s"),
            (SECS(120), "2m"),
            (SECS(7200), "2h"),
            (Duration::ZERO, "0s"),
            (MS(1500), "1500ms"),
            (Duration::from_micros(1500), "0.0015s"),
            (Duration::from_nanos(1), "0.000000001s"),
            (Duration::MAX, "18446744073709551615.999999999s"),
        ];
        for (d, want) in cases {
            assert_eq!(format_duration(d), want);
            assert_eq!(parse_duration(want), Ok(d), "round trip of {want}");
        }
    }

    #[test]
    fn sizes_valid() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("512", 512),
            ("10B", 10),
            ("16KiB", 16 * 1024),
            ("1MiB", 1 << 20),
            ("1GiB", 1 << 30),
            ("1KB", 1000),
            ("2MB", 2_000_000),
            ("1GB", 1_000_000_000),
            (" 4 KiB ", 4096),
            ("18446744073709551615", u64::MAX),
            ("17179869183GiB", 17_179_869_183 << 30),
        ];
        for (input, want) in cases {
            assert_eq!(parse_size(input), Ok(*want), "input {input:?}");
        }
    }

    #[test]
    fn sizes_invalid() {
        let cases = [
            "",
            "-1",
            "1.5MiB",
            "16kib",
            "16K",
            "16k",
            "1TiB",
            "KiB",
            "+5",
            "0x10",
            "18446744073709551616",
            "17179869184GiB",
            "5 5",
        ];
        for input in cases {
            assert!(parse_size(input).is_err(), "input {input:?} should fail");
        }
        assert!(parse_size("1.5MiB").unwrap_err().contains("1536KiB"));
    }

    #[test]
    fn sizes_print_back_exactly() {
        for (bytes, want) in [
            (0, "0"),
            (512, "512"),
            (16 * 1024, "16KiB"),
            (1 << 20, "1MiB"),
            (3 << 30, "3GiB"),
            (1000, "1000"),
            (1536 * 1024, "1536KiB"),
        ] {
            assert_eq!(format_size(bytes), want);
            assert_eq!(parse_size(want), Ok(bytes as u64));
        }
    }

    #[test]
    fn defaults_are_valid_and_documented() {
        let config = Config::default();
        config.validate().unwrap();
        assert_eq!(config.listen, vec![DEFAULT_LISTEN]);
        assert!(config.workers >= MIN_DEFAULT_WORKERS);
        assert_eq!(run(&[], &[], None), config);
    }

    #[test]
    fn precedence_is_flag_env_file_default() {
        let file = Some("workers = 3\nidle-timeout = 3s\nmax-body-bytes = 3KiB\n");
        let vars = [
            ("CORRAL_CONFIG", "corral.conf"),
            ("CORRAL_WORKERS", "5"),
            ("CORRAL_IDLE_TIMEOUT", "5s"),
        ];
        let flags = ["--workers", "7"];

        let c = run(&flags, &vars, file);
        assert_eq!(c.workers, 7, "flag beats env and file");
        assert_eq!(c.idle_timeout, SECS(5), "env beats file");
        assert_eq!(c.max_body_bytes, 3 * 1024, "file beats default");
        assert_eq!(c.queue, DEFAULT_QUEUE, "default when nobody says");

        let c = run(&[], &vars, file);
        assert_eq!(c.workers, 5);
        let c = run(&[], &[("CORRAL_CONFIG", "corral.conf")], file);
        assert_eq!(c.workers, 3);
        assert_eq!(c.idle_timeout, SECS(3));
    }

    #[test]
    fn config_flag_beats_config_env() {
        let read = |path: &Path| -> io::Result<String> {
            match path.to_str() {
                Some("flag.conf") => Ok("workers = 11\n".to_string()),
                Some("env.conf") => Ok("workers = 22\n".to_string()),
                _ => Err(io::Error::new(io::ErrorKind::NotFound, "no such file")),
            }
        };
        let vars = env(&[("CORRAL_CONFIG", "env.conf")]);
        let got = from_sources(&strings(&["--config=flag.conf"]), &vars, &read).unwrap();
        match got {
            Command::Run(c) => assert_eq!(c.workers, 11),
            other => panic!("{other:?}"),
        }
        let got = from_sources(&[], &vars, &read).unwrap();
        match got {
            Command::Run(c) => assert_eq!(c.workers, 22),
            other => panic!("{other:?}"),
        }
        let err = from_sources(&strings(&["--config", "missing.conf"]), &[], &read).unwrap_err();
        assert!(err.to_string().contains("missing.conf"), "{err}");
    }

    #[test]
    fn both_flag_forms_work() {
        let c = run(
            &["--queue", "9", "--max-headers=50", "--access-log=off"],
            &[],
            None,
        );
        assert_eq!(c.queue, 9);
        assert_eq!(c.max_headers, 50);
        assert_eq!(c.access_log, AccessLogTarget::Off);
        // A value may contain '=' after the first one.
        let c = run(&["--access-log=/tmp/a=b.log"], &[], None);
        assert_eq!(c.access_log, AccessLogTarget::File("/tmp/a=b.log".into()));
    }

    #[test]
    fn listen_accumulates_within_a_source_and_replaces_across() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "[::1]:2".parse().unwrap();
        let c: SocketAddr = "0.0.0.0:3".parse().unwrap();
        let file = Some("listen = 127.0.0.1:1\nlisten = [::1]:2\n");
        let conf = [("CORRAL_CONFIG", "corral.conf")];

        assert_eq!(run(&[], &conf, file).listen, vec![a, b]);
        let with_env = [conf[0], ("CORRAL_LISTEN", "0.0.0.0:3, [::1]:2")];
        assert_eq!(run(&[], &with_env, file).listen, vec![c, b]);
        let flags = ["--listen", "0.0.0.0:3", "--listen=127.0.0.1:1"];
        assert_eq!(run(&flags, &with_env, file).listen, vec![c, a]);
        // A flag replaces the default rather than adding to it.
        assert_eq!(run(&["--listen", "[::1]:2"], &[], None).listen, vec![b]);
        // Port 0 may repeat: each asks for a fresh port.
        assert_eq!(
            run(&["--listen", "127.0.0.1:0,127.0.0.1:0"], &[], None)
                .listen
                .len(),
            2
        );
    }

    #[test]
    fn listen_errors() {
        let e = fails(
            &["--listen", "127.0.0.1:1", "--listen", "127.0.0.1:1"],
            &[],
            None,
        );
        assert!(e.contains("listed twice"), "{e}");
        let e = fails(&["--listen", "localhost:80"], &[], None);
        assert!(e.contains("host names are not resolved"), "{e}");
        let e = fails(&["--listen", "127.0.0.1"], &[], None);
        assert!(e.contains("missing port"), "{e}");
        let e = fails(&[], &[("CORRAL_LISTEN", "")], None);
        assert!(e.contains("CORRAL_LISTEN"), "{e}");
        let e = fails(&["--listen", "127.0.0.1:1,,127.0.0.1:2"], &[], None);
        assert!(e.contains("--listen"), "{e}");
    }

    #[test]
    fn unknown_names_are_errors() {
        let e = fails(&["--foo"], &[], None);
        assert_eq!(e, "unknown option --foo (see --help)");
        let e = fails(&["--wokers=8"], &[], None);
        assert_eq!(
            e,
            "unknown option --wokers; did you mean --workers? (see --help)"
        );
        let e = fails(&["-x"], &[], None);
        assert!(e.contains("unknown option -x"), "{e}");
        let e = fails(&["serve"], &[], None);
        assert!(e.contains("unexpected argument \"serve\""), "{e}");

        let e = fails(&[], &[("CORRAL_WOKERS", "8")], None);
        assert!(
            e.contains("CORRAL_WOKERS") && e.contains("did you mean CORRAL_WORKERS?"),
            "{e}"
        );
        let e = fails(&[], &[("CORRAL_CONFG", "x")], None);
        assert!(e.contains("did you mean CORRAL_CONFIG?"), "{e}");
        // Other variables are none of our business.
        run(&[], &[("PATH", "/bin"), ("CORRALX", "1")], None);

        let file = Some("# comment\n\nworkers = 8\nwokers = 8\n");
        let e = fails(&[], &[("CORRAL_CONFIG", "corral.conf")], file);
        assert_eq!(
            e,
            "corral.conf:4: unknown option \"wokers\"; did you mean \"workers\"? (see --help)"
        );
        let e = fails(
            &[],
            &[("CORRAL_CONFIG", "corral.conf")],
            Some("workers 8\n"),
        );
        assert!(e.starts_with("corral.conf:1: expected"), "{e}");
    }

    #[test]
    fn missing_and_unexpected_values() {
        let e = fails(&["--workers"], &[], None);
        assert_eq!(
            e,
            "missing value for --workers; write --workers N or --workers=N"
        );
        let e = fails(&["--workers", "--queue", "5"], &[], None);
        assert!(e.starts_with("missing value for --workers"), "{e}");
        let e = fails(&["--config"], &[], None);
        assert!(e.starts_with("missing value for --config"), "{e}");
        let e = fails(&["--config="], &[], None);
        assert_eq!(e, "invalid value \"\" for --config: expected a file path");
        let e = fails(&[], &[("CORRAL_CONFIG", "")], None);
        assert!(
            e.starts_with("environment CORRAL_CONFIG: invalid value"),
            "{e}"
        );
        let e = fails(&["--help=yes"], &[], None);
        assert!(e.contains("--help takes no value"), "{e}");
        // A single dash is a value, and this one is a bad one.
        let e = fails(&["--workers", "-5"], &[], None);
        assert_eq!(
            e,
            "invalid value \"-5\" for --workers: expected a whole number"
        );
    }

    #[test]
    fn invalid_values_name_their_source() {
        let e = fails(&["--workers", "abc"], &[], None);
        assert_eq!(
            e,
            "invalid value \"abc\" for --workers: expected a whole number"
        );
        let e = fails(&[], &[("CORRAL_IDLE_TIMEOUT", "5x")], None);
        assert!(
            e.starts_with("environment CORRAL_IDLE_TIMEOUT: invalid value \"5x\": unknown unit"),
            "{e}"
        );
        let file = Some("\n\nmax-head-bytes = 100\n");
        let e = fails(&[], &[("CORRAL_CONFIG", "corral.conf")], file);
        assert_eq!(
            e,
            "corral.conf:3: invalid value \"100\" for max-head-bytes: must be at least 256"
        );
        // A bad file value is reported even when a flag overrides it.
        let file = Some("workers = lots\n");
        fails(
            &["--workers", "8"],
            &[("CORRAL_CONFIG", "corral.conf")],
            file,
        );
        let e = fails(&["--workers", "100000"], &[], None);
        assert!(e.contains("at most 10000"), "{e}");
        let e = fails(&["--log-level", "loud"], &[], None);
        assert!(e.contains("expected off, error"), "{e}");
    }

    #[test]
    fn every_timeout_refuses_zero() {
        let timeouts: Vec<&str> = OPTIONS
            .iter()
            .map(|o| o.name)
            .filter(|n| n.ends_with("-timeout"))
            .collect();
        assert_eq!(timeouts.len(), 7);
        for name in timeouts {
            let e = fails(&[&format!("--{name}=0s")], &[], None);
            assert!(e.contains("greater than zero"), "{name}: {e}");
            let e = fails(&[&format!("--{name}=25h")], &[], None);
            assert!(e.contains("at most 24h"), "{name}: {e}");
        }
    }

    #[test]
    fn floors_and_cross_checks() {
        for (flag, value) in [
            ("--workers", "0"),
            ("--queue", "0"),
            ("--max-connections", "0"),
            ("--max-headers", "0"),
            ("--max-head-bytes", "255"),
        ] {
            fails(&[flag, value], &[], None);
        }
        run(
            &["--max-head-bytes", "256", "--max-body-bytes", "0"],
            &[],
            None,
        );
        let e = fails(&["--park-timeout", "5s", "--idle-timeout", "5s"], &[], None);
        assert!(
            e.contains("park-timeout (5s) must be shorter than idle-timeout (5s)"),
            "{e}"
        );

        let mut c = Config::default();
        c.listen.clear();
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.listen.push(DEFAULT_LISTEN);
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("listed twice"));
        let c = Config {
            workers: 0,
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn repeated_single_options_are_errors() {
        let e = fails(&["--workers", "8", "--workers=9"], &[], None);
        assert_eq!(e, "--workers is given twice; give it once");
        let file = Some("queue = 1\nqueue = 2\n");
        let e = fails(&[], &[("CORRAL_CONFIG", "corral.conf")], file);
        assert!(e.starts_with("corral.conf:2: queue is already set"), "{e}");
        fails(&["--config", "a", "--config", "b"], &[], None);
    }

    #[test]
    fn file_comments_and_blank_lines() {
        let file = Some(
            "# full-line comment\n\
             \n\
             \t  # indented comment\n\
             workers = 12   # trailing comment\n\
             access-log = /var/log/a#b.log\n\
             idle-timeout=2s\r\n",
        );
        let c = run(&[], &[("CORRAL_CONFIG", "corral.conf")], file);
        assert_eq!(c.workers, 12);
        assert_eq!(
            c.access_log,
            AccessLogTarget::File("/var/log/a#b.log".into())
        );
        assert_eq!(c.idle_timeout, SECS(2));
    }

    #[test]
    fn check_config_output_reads_back_as_the_same_config() {
        let flags = [
            "--check-config",
            "--listen",
            "127.0.0.1:9000,[::1]:9001",
            "--workers=3",
            "--queue=17",
            "--max-connections=99",
            "--header-timeout=1.5s",
            "--idle-timeout=2m",
            "--read-timeout=250ms",
            "--write-timeout=1h",
            "--park-timeout=0.0015s",
            "--shutdown-timeout=7",
            "--max-head-bytes=1000",
            "--max-headers=7",
            "--max-body-bytes=2MB",
            "--access-log=off",
            "--log-level=DEBUG",
        ];
        let config = match load(&flags, &[], None) {
            Ok(Command::CheckConfig(config)) => config,
            other => panic!("expected CheckConfig, got {other:?}"),
        };
        for config in [config.clone(), Config::default()] {
            let text = config.to_config_text();
            let back = run(&["--config", "corral.conf"], &[], Some(&text));
            assert_eq!(back, config, "text was:\n{text}");
        }
        // A log file named like a keyword stays a file.
        let named_stderr = Config {
            access_log: AccessLogTarget::File("stderr".into()),
            ..Config::default()
        };
        let text = named_stderr.to_config_text();
        let back = run(&["--config", "corral.conf"], &[], Some(&text));
        assert_eq!(back.access_log, AccessLogTarget::File("./stderr".into()));
        let text = config.to_config_text();
        for opt in OPTIONS {
            assert!(text.contains(&format!("\n{} = ", opt.name)), "{}", opt.name);
        }
    }

    #[test]
    fn help_mentions_every_option() {
        let help = match load(&["--help"], &[("CORRAL_NOPE", "ignored")], None) {
            Ok(Command::Help(help)) => help,
            other => panic!("expected Help, got {other:?}"),
        };
        for opt in OPTIONS {
            assert!(
                help.contains(&format!("--{} {}", opt.name, opt.value)),
                "{}",
                opt.name
            );
            assert!(help.contains(&env_name(opt)), "{}", opt.name);
            assert!(help.contains(opt.help), "{}", opt.name);
        }
        for word in [
            "--config",
            "--check-config",
            "--version",
            "CORRAL_CONFIG",
            "Precedence",
        ] {
            assert!(help.contains(word), "{word}");
        }
        assert!(help.contains("[default: 10s]"));
        assert_eq!(load(&["-h"], &[], None).unwrap(), Command::Help(help));
    }

    #[test]
    fn version() {
        let want = Command::Version(format!("corral {}", env!("CARGO_PKG_VERSION")));
        assert_eq!(load(&["--version"], &[], None).unwrap(), want);
        assert_eq!(load(&["-V"], &[], None).unwrap(), want);
    }

    #[test]
    fn env_names_follow_the_rule() {
        let i = find_option("max-body-bytes").unwrap();
        assert_eq!(env_name(&OPTIONS[i]), "CORRAL_MAX_BODY_BYTES");
        let c = run(&[], &[("CORRAL_MAX_BODY_BYTES", "4MiB")], None);
        assert_eq!(c.max_body_bytes, 4 << 20);
    }

    #[test]
    fn limits_summary_is_one_line_with_the_limits() {
        let line = Config::default().limits_summary();
        assert!(!line.contains('\n'));
        for part in [
            "workers=",
            "queue=1024",
            "max-connections=10000",
            "header-timeout=10s",
            "park-timeout=5ms",
            "max-head-bytes=16KiB",
            "max-headers=100",
            "max-body-bytes=1MiB",
        ] {
            assert!(line.contains(part), "{part} missing from {line}");
        }
        assert!(!line.contains("listen"));
    }

    #[test]
    fn option_names_are_unique_and_well_formed() {
        for (i, opt) in OPTIONS.iter().enumerate() {
            assert!(opt
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'-'));
            assert!(!META_FLAGS.contains(&opt.name));
            assert!(OPTIONS[i + 1..].iter().all(|o| o.name != opt.name));
        }
    }
}
