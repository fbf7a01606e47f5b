//! A handler of your own whose result is expensive, computed once and then
//! served from memory to every client, however many ask at the same moment.
//!
//! ```text
//! cargo run --release --example expensive
//! curl -s 'http://127.0.0.1:8080/squares?n=10000000' -o squares.bin   # computes
//! curl -sI 'http://127.0.0.1:8080/squares?n=10000000'                 # X-Cache: hit
//! ```

use corral::cache::CacheConfig;
use corral::cached::{self, CachedBody};
use corral::config::Config;
use corral::server::Server;
use corral::{Request, Response, Router};

fn main() -> std::io::Result<()> {
    // One cache shared by every worker thread; 512 MiB of finished responses.
    let cache = cached::new_cache(CacheConfig {
        max_bytes: 512 << 20,
        ..CacheConfig::default()
    });
    let router = Router::new().get("/squares", move |req: &mut Request| {
        let n: u64 = match req.query("n").map(|n| n.parse()) {
            Some(Ok(n)) if n <= 50_000_000 => n,
            _ => return Response::error(400, "n must be a whole number up to 50000000"),
        };
        // Concurrent misses of this key run the closure once, on the
        // cache's compute lane; the others wait for it, parked, holding no
        // worker. The key is the canonical form of the parameters.
        cached::serve(&cache, req, &format!("squares?n={n}"), move || {
            let bytes: Vec<u8> = (0..n).flat_map(|i| (i * i).to_le_bytes()).collect();
            Ok::<_, String>(CachedBody::new(bytes, "application/octet-stream"))
        })
    });
    let config = Config {
        admin_listen: None,
        ..Config::default()
    };
    Server::bind(config, router)?.run()?;
    Ok(())
}
