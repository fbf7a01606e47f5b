//! The built-in application, the product on top of the library: the array
//! service and a few plain routes here, the computations and encodings in
//! [`arrays`], the operator's endpoints in [`admin`]. A request in, a
//! response out, via the cache. No sockets, no threads.
//!
//! Each array is cached twice over: its elements once, as raw little-endian
//! bytes (which is also what `format=raw` serves), and each encoding of it
//! under its own key, computed from the raw entry. Asking for another format
//! of an array already computed costs an encoding, not the computation.

pub mod admin;
pub mod arrays;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use self::arrays::{Array, Format, Mandelbrot};
use crate::cached::{self, CachedBody, ResponseCache};
use crate::config::Config;
use crate::http::{Request, Response};
use crate::router::Router;

const INDEX: &str = "corral: a hardened HTTP/1.1 server with a shared in-memory cache

GET  /                this index
GET  /healthz         health check: \"ok\", or 503 \"draining\" once shutdown begins
POST /echo            answers the request body with its Content-Type (PUT too)
GET  /primes?below=N  every prime below N
GET  /mandelbrot?width=W&height=H&max_iter=I&cx=X&cy=Y&scale=S
                      escape iterations of the Mandelbrot set, height x width

Arrays take format=npy (NumPy .npy, the default), raw (little-endian uint32;
shape in X-Shape), csv, json, or bmp (Mandelbrot only, viewable in a browser).
Each result is computed once and served from memory afterwards; responses
carry ETag, Age and X-Cache, and honour If-None-Match and Range.
";

/// Upper bounds on what a request may ask the array service to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppLimits {
    /// Largest `below` of `/primes`.
    pub max_primes_below: u32,
    /// Largest `width × height` of `/mandelbrot`.
    pub max_pixels: usize,
    /// Largest `max_iter` of `/mandelbrot`.
    pub max_iterations: u32,
}

impl From<&Config> for AppLimits {
    fn from(c: &Config) -> AppLimits {
        AppLimits {
            max_primes_below: c.max_primes_below,
            max_pixels: c.max_pixels,
            max_iterations: c.max_iterations,
        }
    }
}

impl Default for AppLimits {
    fn default() -> AppLimits {
        AppLimits {
            // 10^8: the sieve takes about a second and 50 MB while it runs,
            // and the answer (5.76 million primes) is 23 MB as raw u32.
            max_primes_below: 100_000_000,
            // 2048 × 2048: 16 MiB of u32 counts.
            max_pixels: 2048 * 2048,
            // With the largest image, about 2 × 10^10 iterations at worst:
            // tens of seconds on one core, which the compute-concurrency
            // limit keeps to a few cores at once.
            max_iterations: 5000,
        }
    }
}

/// The built-in routes, computing into `cache`, for a server that never
/// drains (`/healthz` always answers 200).
pub fn router(cache: ResponseCache, limits: AppLimits) -> Router {
    router_with_drain(cache, limits, Arc::default())
}

/// The built-in routes, computing into `cache`; `/healthz` answers 503
/// once `draining` is set. Pass the server's shutdown flag
/// ([`crate::server::Server::with_shutdown_flag`]), so that a front's
/// health check takes the instance out before its listeners close.
pub fn router_with_drain(
    cache: ResponseCache,
    limits: AppLimits,
    draining: Arc<AtomicBool>,
) -> Router {
    let primes_cache = cache.clone();
    Router::new()
        .get("/", |_: &mut Request| Response::text(200, INDEX))
        .get("/healthz", move |_: &mut Request| {
            if draining.load(Ordering::Relaxed) {
                Response::text(503, "draining\n")
            } else {
                Response::text(200, "ok\n")
            }
        })
        .post("/echo", echo)
        .put("/echo", echo)
        .get("/primes", move |req: &mut Request| {
            primes(req, &primes_cache, &limits)
        })
        .get("/mandelbrot", move |req: &mut Request| {
            mandelbrot(req, &cache, &limits)
        })
}

/// Sends the body back with the type it came with. The body was bounded by
/// `--max-body-bytes` before this runs.
fn echo(req: &mut Request) -> Response {
    let content_type = req
        .header("content-type")
        .unwrap_or("application/octet-stream")
        .to_owned();
    Response::new(200)
        .with_header("Content-Type", &content_type)
        .with_body(req.take_body())
}

fn bad_request(reason: String) -> Response {
    Response::error(400, &reason)
}

fn primes(req: &Request, cache: &ResponseCache, limits: &AppLimits) -> Response {
    let run = || -> Result<Response, String> {
        let mut q = Query::parse(req, &["below", "format"])?;
        let below = q.number("below", None, 0, limits.max_primes_below)?;
        let format = q.format()?;
        if format == Format::Bmp {
            return Err("format: bmp needs a 2-D array; use npy, raw, csv or json".into());
        }
        Ok(serve_array(
            req,
            cache,
            &format!("primes?below={below}"),
            format,
            move || arrays::primes_below(below),
        ))
    };
    run().unwrap_or_else(bad_request)
}

fn mandelbrot(req: &Request, cache: &ResponseCache, limits: &AppLimits) -> Response {
    let run = || -> Result<Response, String> {
        let mut q = Query::parse(
            req,
            &["width", "height", "max_iter", "cx", "cy", "scale", "format"],
        )?;
        let width = q.number("width", Some(800), 1, 1 << 16)? as usize;
        let height = q.number("height", Some(600), 1, 1 << 16)? as usize;
        if width * height > limits.max_pixels {
            return Err(format!(
                "width x height is {}; at most {} pixels",
                width * height,
                limits.max_pixels
            ));
        }
        let max_iter = q.number("max_iter", Some(256), 1, limits.max_iterations)?;
        let cx = q.float("cx", -0.5, -4.0, 4.0)?;
        let cy = q.float("cy", 0.0, -4.0, 4.0)?;
        let scale = q.float("scale", 3.0, f64::MIN_POSITIVE, 8.0)?;
        let format = q.format()?;
        let m = Mandelbrot {
            width,
            height,
            max_iter,
            cx,
            cy,
            scale,
        };
        // `{:?}` prints the shortest text that reads back as the same f64,
        // so `cx=-0.50` and `cx=-0.5` share an entry.
        let key = format!(
            "mandelbrot?width={width}&height={height}&max_iter={max_iter}&cx={cx:?}&cy={cy:?}&scale={scale:?}"
        );
        Ok(serve_array(req, cache, &key, format, move || m.compute()))
    };
    run().unwrap_or_else(bad_request)
}

/// Serves the array under `key` in `format`, computing the elements at most
/// once whatever the format. Holds no worker while computing: see
/// [`cached::serve`].
fn serve_array(
    req: &Request,
    cache: &ResponseCache,
    key: &str,
    format: Format,
    compute: impl FnOnce() -> Array + Send + 'static,
) -> Response {
    if format == Format::Raw {
        return cached::serve(cache, req, key, move || {
            Ok::<_, String>(raw_entry(&compute()))
        });
    }
    // On a compute-lane thread: the raw entry is computed at most once, and
    // is the source of every other encoding of the same array. Looking it
    // up blocks this lane thread only, and cannot deadlock the lane: a raw
    // computation still queued is run here rather than waited for.
    let (raw_cache, raw_key) = (cache.clone(), key.to_owned());
    let encoded = move || {
        let raw = raw_cache
            .get_or_compute(&raw_key, || Ok::<_, String>(raw_entry(&compute())))
            .map_err(|e| e.to_string())?;
        let array = decode_raw(&raw.value).ok_or("cached array is damaged")?;
        let bytes = arrays::encode(&array, format).ok_or("format does not fit the array")?;
        Ok::<_, String>(with_array_headers(
            CachedBody::new(bytes, format.content_type()),
            &array,
        ))
    };
    cached::serve(
        cache,
        req,
        &format!("{key}&format={}", format.name()),
        encoded,
    )
}

/// The elements as little-endian `uint32`, with the dtype and shape in
/// headers so the raw bytes need nothing else to be read back.
fn raw_entry(a: &Array) -> CachedBody {
    with_array_headers(
        CachedBody::new(arrays::raw(a), Format::Raw.content_type()),
        a,
    )
}

fn with_array_headers(body: CachedBody, a: &Array) -> CachedBody {
    let shape: Vec<String> = a.shape.iter().map(|d| d.to_string()).collect();
    body.with_header("X-Dtype", "uint32")
        .with_header("X-Shape", &shape.join(","))
}

/// Reads an array back from its raw entry.
fn decode_raw(body: &CachedBody) -> Option<Array> {
    let shape: Vec<usize> = body
        .header("X-Shape")?
        .split(',')
        .map(|d| d.parse().ok())
        .collect::<Option<_>>()?;
    let data: Vec<u32> = body
        .bytes()
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (shape.iter().product::<usize>() == data.len()).then_some(Array { shape, data })
}

/// Query parameters, checked strictly: an unknown or repeated name is an
/// error, so a typo is reported rather than silently ignored.
struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    fn parse(req: &Request, known: &[&str]) -> Result<Query, String> {
        let pairs = req.query_pairs();
        for (i, (name, _)) in pairs.iter().enumerate() {
            if !known.contains(&name.as_str()) {
                return Err(format!(
                    "unknown parameter {name:?}; expected {}",
                    known.join(", ")
                ));
            }
            if pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(format!("parameter {name:?} is given twice"));
            }
        }
        Ok(Query { pairs })
    }

    fn take(&mut self, name: &str) -> Option<String> {
        let i = self.pairs.iter().position(|(n, _)| n == name)?;
        Some(self.pairs.swap_remove(i).1)
    }

    fn number(
        &mut self,
        name: &str,
        default: Option<u32>,
        min: u32,
        max: u32,
    ) -> Result<u32, String> {
        let Some(v) = self.take(name) else {
            return default.ok_or_else(|| format!("{name} is required"));
        };
        let n: u64 = if !v.is_empty() && v.len() <= 12 && v.bytes().all(|b| b.is_ascii_digit()) {
            v.parse()
                .map_err(|_| format!("{name}: not a whole number"))?
        } else {
            return Err(format!("{name}: {v:?} is not a whole number"));
        };
        if n > u64::from(max) {
            return Err(format!("{name}: must be at most {max}"));
        }
        if n < u64::from(min) {
            return Err(format!("{name}: must be at least {min}"));
        }
        Ok(n as u32)
    }

    fn float(&mut self, name: &str, default: f64, min: f64, max: f64) -> Result<f64, String> {
        let Some(v) = self.take(name) else {
            return Ok(default);
        };
        let x: f64 = v
            .parse()
            .ok()
            .filter(|x: &f64| x.is_finite())
            .ok_or_else(|| format!("{name}: {v:?} is not a finite number"))?;
        if !(min..=max).contains(&x) {
            return Err(format!("{name}: must be between {min} and {max}"));
        }
        Ok(x)
    }

    fn format(&mut self) -> Result<Format, String> {
        match self.take("format") {
            None => Ok(Format::Npy),
            Some(f) => Format::parse(&f)
                .ok_or_else(|| format!("format: {f:?} is not one of npy, raw, csv, json, bmp")),
        }
    }
}
