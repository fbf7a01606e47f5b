//! The option table: one row per option, and the bounds its parsers
//! enforce. A row names the option, its `Config` field, how a value is read
//! and printed, and a line of help; it never restates a default, which
//! `Config::default` gathers from the types that use each one.

use super::values::{
    add_listen, add_trusted_proxy, bounded_duration, count_in, count_u32, format_access_log,
    format_admin_listen, format_count, format_duration, format_listen, format_log_level,
    format_priority, format_size, format_trusted_proxies, parse_access_log, parse_admin_listen,
    parse_log_level, parse_priority, size_in, timeout,
};
use super::{Config, MIN_DEFAULT_WORKERS, WORKERS_PER_CPU};
use crate::proxy::route::{add_routes, format_routes};

// ---------------------------------------------------------------------------
// Bounds. Each says what it protects. The ceiling of every duration,
// `MAX_TIMEOUT`, is with the duration parsers.

/// Ceiling of `--workers` (and `--compute-concurrency`): catches an extra
/// zero before it spawns that many threads. Apache compiles in a hard
/// `ThreadLimit` of 20000 for the same reason (typos); we take half, since
/// each worker here is a full OS thread.
pub(super) const MAX_WORKERS: usize = 10_000;

/// Ceiling of `--queue` and `--max-connections`: every entry is an open
/// socket, and 2^20 is Linux's default `fs.nr_open`, the most descriptors one
/// process may hold. A larger value can only be a typo, and a queue may be
/// allocated up front.
const MAX_SOCKETS: usize = 1 << 20;

/// Floor of `--max-head-bytes`: below this even a request line with a
/// modest URL and a Host header would be refused.
const MIN_HEAD_BYTES: usize = 256;

/// Ceiling of `--max-headers`: the parser sets aside a slot per header for
/// every request, and past a few thousand those slots cost more than the
/// head they describe.
const MAX_HEADERS: usize = 10_000;

/// Ceiling of `--max-pixels`: 2^28 pixels (16384 × 16384) is 1 GiB of u32
/// counts for one image; a larger value can only be a typo.
const MAX_PIXELS: usize = 1 << 28;

/// Ceiling of `--max-iterations`: catches an extra zero or two. A million
/// iterations over a 2048 × 2048 image is some 4 × 10^12 steps, hours of
/// CPU for one request.
const MAX_ITERATIONS: u32 = 1_000_000;

// ---------------------------------------------------------------------------
// The table.

/// One option: everything the help text, the three sources, `--check-config`
/// and the start-up log need to know about it.
pub(super) struct OptSpec {
    /// The long flag without `--`; also the config file key, and, uppercased
    /// with `-` turned into `_` behind `CORRAL_`, the environment variable.
    pub(super) name: &'static str,
    /// Placeholder for the value in the help text, e.g. `DURATION`.
    pub(super) value: &'static str,
    /// One line of help. A function, so that it can print the constants a
    /// default is computed from instead of restating them.
    pub(super) help: fn() -> String,
    /// Whether `limits_summary` lists it.
    pub(super) is_limit: bool,
    /// How a value from any source lands in a `Config`.
    pub(super) set: Set,
    /// The value in a form `set` accepts back.
    pub(super) show: fn(&Config) -> String,
}

/// A setter: how one textual value changes a `Config`. The error is a short
/// reason; the caller adds which option and source it came from.
type SetFn = fn(&mut Config, &str) -> Result<(), String>;

/// How an option takes values.
pub(super) enum Set {
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
    pub(super) fn apply(
        &self,
        config: &mut Config,
        value: &str,
        first: bool,
    ) -> Result<(), String> {
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

/// Builds the table from rows of the form
///
/// ```text
/// "name" PLACEHOLDER kind field: parser(bounds...) => printer,
///     "help";
/// ```
///
/// `kind` is `limit` (a single value that `limits_summary` lists), `plain`
/// (a single value it leaves out) or `list` (repeatable; the parser then adds
/// to the field's list). The parser gets the value first, then the bounds;
/// the printer gets a reference to the field. Help is a `format!` string, so
/// it may name a constant in braces (`{WORKERS_PER_CPU}`) and must not
/// contain other braces.
macro_rules! options {
    (@limit limit) => { true };
    (@limit $kind:ident) => { false };
    (@set list $field:ident $parse:ident($($arg:expr),*)) => {
        Set::List {
            clear: |c| c.$field.clear(),
            add: |c, v| $parse(&mut c.$field, v $(, $arg)*),
        }
    };
    (@set $kind:ident $field:ident $parse:ident($($arg:expr),*)) => {
        Set::One(|c, v| {
            c.$field = $parse(v $(, $arg)*)?;
            Ok(())
        })
    };
    ($(
        $name:literal $value:ident $kind:ident $field:ident: $parse:ident($($arg:expr),*)
            => $show:path, $help:literal;
    )*) => {
        &[$(
            OptSpec {
                name: $name,
                value: stringify!($value),
                help: || format!($help),
                is_limit: options!(@limit $kind),
                set: options!(@set $kind $field $parse($($arg),*)),
                show: |c| $show(&c.$field),
            },
        )*]
    };
}

/// Every option, in help order.
pub(super) static OPTIONS: &[OptSpec] = options![
    "listen" ADDR list listen: add_listen() => format_listen,
        "IP address and port, e.g. [::1]:8080; repeat or comma-separate for more";
    "workers" N limit workers: count_in(1, MAX_WORKERS) => format_count,
        "worker threads; by default {WORKERS_PER_CPU} per CPU, at least {MIN_DEFAULT_WORKERS}";
    "queue" N limit queue: count_in(1, MAX_SOCKETS) => format_count,
        "connections waiting for a worker before new ones get 503";
    "max-connections" N limit max_connections: count_in(1, MAX_SOCKETS) => format_count,
        "open connections at most, idle ones included";
    "max-waiting" N limit max_waiting: count_in(1, MAX_SOCKETS) => format_count,
        "requests waiting at once for a value being computed before new ones get 503";
    "header-timeout" DURATION limit header_timeout: timeout() => format_duration,
        "the whole request head must arrive within this";
    "idle-timeout" DURATION limit idle_timeout: timeout() => format_duration,
        "close a keep-alive connection idle this long";
    "read-timeout" DURATION limit read_timeout: timeout() => format_duration,
        "each body read must make progress within this";
    "body-timeout" DURATION limit body_timeout: timeout() => format_duration,
        "a whole body must arrive within this, plus 1s per min-body-rate bytes received";
    "min-body-rate" BYTES limit min_body_rate: size_in(1) => format_size,
        "bytes per second a body must average (after body-timeout's slack), else 408";
    "write-timeout" DURATION limit write_timeout: timeout() => format_duration,
        "each write must make progress within this";
    "park-timeout" DURATION limit park_timeout: timeout() => format_duration,
        "a worker waits this long on a quiet connection before parking it";
    "defer-accept" DURATION limit defer_accept: bounded_duration() => format_duration,
        "the kernel holds a new connection until its first bytes arrive, about this long at most (rounded up to 1, 3, 7, 15, 31 or 63 s; 0: off)";
    "shutdown-timeout" DURATION limit shutdown_timeout: timeout() => format_duration,
        "in-flight requests get this long to finish on shutdown";
    "max-head-bytes" SIZE limit max_head_bytes: size_in(MIN_HEAD_BYTES) => format_size,
        "largest request head (request line and headers)";
    "max-headers" N limit max_headers: count_in(1, MAX_HEADERS) => format_count,
        "most header lines in one request";
    "max-body-bytes" SIZE limit max_body_bytes: size_in(0) => format_size,
        "largest request body; 0 refuses every body";
    "access-log" TARGET plain access_log: parse_access_log() => format_access_log,
        "where access log lines go: stderr, off, or a file path";
    "log-level" LEVEL plain log_level: parse_log_level() => format_log_level,
        "server log verbosity: off, error, warn, info, debug or trace";
    "admin-listen" ADDR plain admin_listen: parse_admin_listen() => format_admin_listen,
        "where /metrics, /status and /cache/purge listen (never the public port), or off";
    "trusted-proxy" CIDR list trusted_proxies: add_trusted_proxy() => format_trusted_proxies,
        "a front whose X-Forwarded-For, -Proto and -Host are believed (IP or CIDR), or none; repeat or comma-separate for more";
    "drain-delay" DURATION limit drain_delay: bounded_duration() => format_duration,
        "after SIGTERM, /healthz answers 503 this long before the listeners close";
    "cache-bytes" SIZE limit cache_bytes: size_in(0) => format_size,
        "byte budget of the shared cache";
    "cache-max-entry-bytes" SIZE limit cache_max_entry_bytes: size_in(0) => format_size,
        "larger values are served but not stored";
    "cache-wait-timeout" DURATION limit cache_wait_timeout: timeout() => format_duration,
        "how long a request waits for a value being computed (then 503)";
    "cache-error-ttl" DURATION limit cache_error_ttl: bounded_duration() => format_duration,
        "how long a failed computation is remembered (jittered); 0 remembers nothing";
    "compute-concurrency" N limit compute_concurrency: count_in(1, MAX_WORKERS) => format_count,
        "computations running at once; by default the number of CPUs";
    "compute-queue" N limit compute_queue: count_in(1, MAX_SOCKETS) => format_count,
        "computations waiting for a compute thread before new misses get 503";
    "compute-priority" PRIORITY plain compute_priority: parse_priority() => format_priority,
        "how computations are scheduled beside requests: normal, low (nice +10) or idle (SCHED_IDLE)";
    "max-primes-below" N limit max_primes_below: count_u32(0, u32::MAX) => format_count,
        "largest `below` that /primes accepts";
    "max-pixels" N limit max_pixels: count_in(1, MAX_PIXELS) => format_count,
        "largest width × height that /mandelbrot accepts";
    "max-iterations" N limit max_iterations: count_u32(1, MAX_ITERATIONS) => format_count,
        "largest max_iter that /mandelbrot accepts";
    "proxy" ROUTE list proxy: add_routes() => format_routes,
        "PREFIX=UPSTREAM[,UPSTREAM...]: send paths under PREFIX to IP:PORT or unix:/path upstreams; repeatable";
    "proxy-connect-timeout" DURATION limit proxy_connect_timeout: timeout() => format_duration,
        "connecting to an upstream must take no longer (then the next upstream is tried)";
    "proxy-timeout" DURATION limit proxy_timeout: timeout() => format_duration,
        "a whole upstream exchange must take no longer (then 504)";
    "proxy-max-connections" N limit proxy_max_connections: count_in(1, MAX_WORKERS) => format_count,
        "connections to one upstream at most; more requests queue";
    "proxy-default-ttl" DURATION limit proxy_default_ttl: bounded_duration() => format_duration,
        "how long a response without Cache-Control max-age or Expires is kept; 0 keeps none";
    "proxy-grace" DURATION limit proxy_grace: bounded_duration() => format_duration,
        "serve an expired entry this long while one refresh runs (unless the upstream says)";
    "proxy-stale-if-error" DURATION limit proxy_stale_if_error: bounded_duration() => format_duration,
        "serve an expired entry this long when the upstream fails (unless the upstream says)";
];

/// The index of the option called `name` in `OPTIONS`.
pub(super) fn find_option(name: &str) -> Option<usize> {
    OPTIONS.iter().position(|opt| opt.name == name)
}
