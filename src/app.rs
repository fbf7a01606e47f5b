//! The built-in application: a request in, a response out. No sockets, no
//! threads.

use crate::http::{Request, Response};
use crate::router::Router;

const INDEX: &str = "corral: a hardened HTTP/1.1 server with a shared in-memory cache\n\
\n\
GET  /         this index\n\
GET  /healthz  liveness check, answers \"ok\"\n\
POST /echo     answers the request body with its Content-Type (PUT too)\n";

/// The built-in routes.
pub fn router() -> Router {
    Router::new()
        .get("/", |_: &mut Request| Response::text(200, INDEX))
        .get("/healthz", |_: &mut Request| Response::text(200, "ok\n"))
        .post("/echo", echo)
        .put("/echo", echo)
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
