//! The benchmark server: `GET /plaintext` and a 1 MiB `GET /blob` built once
//! at start-up, as the peers in the side-by-side HTTP benchmark serve them.
//!
//! ```text
//! cargo run --release --example hello 8080
//! cargo run --release --example hello 8080 /tmp/access.log   # access log on
//! ```
//!
//! Like the peers, it runs with no access log unless a second argument
//! names a file to append access lines to (`-` for standard error), for the
//! benchmark's log-on row.

use std::sync::Arc;

use corral::access::AccessLog;
use corral::config::Config;
use corral::server::Server;
use corral::{Request, Response, Router};
use signal_hook::consts::{SIGINT, SIGTERM};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::args().nth(1).map(|p| p.parse()) {
        None => 8080,
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            eprintln!("hello: invalid port: {e}");
            std::process::exit(2);
        }
    };
    let blob: Arc<[u8]> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let router = Router::new()
        .get("/plaintext", |_: &mut Request| {
            Response::new(200)
                .with_header("Content-Type", "text/plain")
                .with_body("Hello, World!")
        })
        .get("/blob", move |_: &mut Request| {
            Response::new(200)
                .with_header("Content-Type", "application/octet-stream")
                .with_body(blob.clone())
        });
    let config = Config {
        listen: vec![([127, 0, 0, 1], port).into()],
        ..Config::default()
    };
    let mut server = Server::bind(config, router)?;
    match std::env::args().nth(2).as_deref() {
        None => {}
        Some("-") => server = server.with_access_log(AccessLog::stderr()),
        Some(path) => server = server.with_access_log(AccessLog::file(path.as_ref())?),
    }
    let handle = server.shutdown_handle();
    for sig in [SIGTERM, SIGINT] {
        signal_hook::flag::register(sig, handle.flag())?;
        signal_hook::low_level::pipe::register(sig, handle.waker()?)?;
    }
    server.run()?;
    Ok(())
}
