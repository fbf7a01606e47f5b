//! corral: a hardened, synchronous, multithreaded HTTP/1.1 server.
//!
//! Handlers are plain functions on a bounded pool of worker threads.
//! Connections that are idle, silent or slow wait in a parker (`epoll`)
//! instead of holding a worker, and so does a request whose answer comes
//! later ([`Response::later`]): a value being computed on the cache's
//! compute lane ([`cache::Lane`]), or slow work of the handler's own. Every
//! phase of a connection has a deadline, and every buffer has a limit, so
//! the server keeps answering whatever its clients do, and a cache hit costs
//! microseconds whatever else is in flight.
//!
//! One process-wide [`cache`] computes each expensive value once, however
//! many requests miss it at the same moment, keeps it within a byte budget,
//! and hands every later request the same shared bytes; [`cached`] serves
//! such values over HTTP with ETags and ranges. The cache's semantics
//! (coalescing, failures, timeouts, cycles, eviction, expiry) are described
//! in its module documentation.
//!
//! The crate is a library with a product on top. The library ([`http`],
//! [`forwarded`], [`conn`], [`server`], [`poller`], [`router`], [`cache`],
//! [`cached`], [`proxy`], [`config`], [`access`], [`metrics`], [`notify`],
//! [`allocator`]) serves handlers of your own and knows nothing of the
//! product. The product, [`app`], is what the `corral` binary serves: the
//! array service (its computations and encodings in [`app::arrays`]) and
//! the operator's endpoints ([`app::admin`]).
//!
//! In scope: HTTP/1.1 and 1.0 over TCP (keep-alive, pipelining,
//! `100-continue`, chunked bodies both ways), graceful shutdown, an access
//! log. Out of scope: TLS (terminate it in front), HTTP/2, `CONNECT`,
//! request bodies larger than the configured limit (each body is read whole
//! before its handler runs).
//!
//! The protocol code is sans-IO: [`http::Conn`] takes bytes and says what
//! they mean, so it can be driven without a socket:
//!
//! ```
//! use corral::http::{Conn, Event, Limits};
//! use corral::Response;
//!
//! let mut conn = Conn::new(Limits::default(), None);
//! let wire = b"GET /healthz HTTP/1.1\r\nHost: example.com\r\n\r\n";
//! conn.read_with(|buf| {
//!     buf[..wire.len()].copy_from_slice(wire);
//!     Ok::<_, ()>(wire.len())
//! })
//! .unwrap();
//! let Event::Request(req) = conn.poll() else { panic!("expected a request") };
//! assert_eq!((req.method(), req.path()), ("GET", "/healthz"));
//!
//! let mut out = Vec::new();
//! conn.write_head(&Response::text(200, "ok"), false, &mut out);
//! let head = String::from_utf8(out).unwrap();
//! assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
//! assert!(head.contains("\r\nContent-Length: 2\r\n"));
//! conn.response_sent();
//! assert!(matches!(conn.poll(), Event::NeedMore));
//! ```
//!
//! A server with handlers of your own:
//!
//! ```no_run
//! use corral::config::Config;
//! use corral::server::Server;
//! use corral::{Request, Response, Router};
//!
//! let router = Router::new()
//!     .get("/hello", |req: &mut Request| {
//!         let name = req.query("name").unwrap_or_else(|| "world".into());
//!         Response::text(200, format!("hello, {name}\n"))
//!     });
//! let config = Config {
//!     listen: vec!["127.0.0.1:8080".parse().unwrap()],
//!     ..Config::default()
//! };
//! let server = Server::bind(config, router)?;
//! let stop = server.shutdown_handle(); // stop.shutdown() from any thread
//! server.run()?;
//! # Ok::<(), std::io::Error>(())
//! ```
#![deny(missing_docs)]
#![deny(unsafe_code)]

// The library, top-down: the protocol, the shells around it, the cache,
// and what an operator needs. None of it knows the built-in app.

// The sans-IO core: request bytes in, events and response bytes out.
pub mod http;
// Trusted proxy headers: who the client is behind a front. Pure.
pub mod forwarded;
// The connection loop: the only code that reads or writes a connection.
pub mod conn;
// Listeners, the worker pool, the parker and shutdown.
pub mod server;
// One worker per CPU serves the queue; the rest wait for a slot.
mod slots;

mod gather;
// poll and epoll: where idle and slow connections wait without a worker.
pub mod poller;
// Handlers, and the router that picks one by method and path.
pub mod router;
// The single-flight cache. Knows nothing of HTTP.
pub mod cache;
// Cache entries as HTTP responses: ETag, 304, Range, X-Cache.
pub mod cached;
// The reverse proxy: routes to upstreams, their pool, RFC 9111 caching.
pub mod proxy;
// Every limit and timeout, its default, and where a value comes from.
pub mod config;
// The access log, in the Combined Log Format.
pub mod access;
// Counters, taken without a lock.
pub mod metrics;
// systemd: sd_notify, the watchdog's heartbeats, socket activation.
pub mod notify;
// glibc's malloc, told to give freed large buffers back to the OS.
pub mod allocator;
// The compute lane's threads, run behind the request workers.
pub mod priority;

// The product built on the library: the array service and the operator's
// endpoints (`app::arrays`, `app::admin`). Request in, response out.
pub mod app;

// The fuzz harness: compiled for tests and the fuzz targets only, never
// into the shipped library.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;

// Crate-private: how the modules that catch panics describe them and lock
// past them.
mod unwind;

pub use http::{Body, Reply, Request, Response};
pub use router::{Handler, Router};
