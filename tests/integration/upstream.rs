//! An in-process upstream for the proxy tests: a `TcpListener` on
//! `127.0.0.1:0` that records every request it receives and answers with
//! whatever the test's function says, including answers no real server
//! should give (bad framing, a body cut short, a response held until the
//! test opens a gate). Every blocking call is bounded: reads time out, a
//! held answer waits on a gate with a deadline, and the accept loop ends
//! when the upstream is dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::support::{start, test_config, TestServer};
use corral::config::Config;

/// The longest anything here waits before calling it a hang.
pub const HANG: Duration = Duration::from_secs(10);

/// A request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    /// The head as text, field lines included.
    pub head: String,
    pub body: Vec<u8>,
    /// Which connection it came on, counting from 1.
    pub conn: usize,
}

impl Seen {
    /// The first value of field `name`, ignoring case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.split("\r\n").skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// What the upstream does with a request.
pub enum Reply {
    /// Writes these bytes and reads the next request.
    Send(Vec<u8>),
    /// Writes these bytes and closes the connection.
    Close(Vec<u8>),
    /// Waits for the gate (at most [`HANG`]), then writes and goes on.
    After(Gate, Vec<u8>),
}

/// A one-shot gate a held answer waits on until the test opens it.
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    pub fn open(&self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
    }

    fn wait(&self) {
        let open = self.0 .0.lock().unwrap();
        let _ = self.0 .1.wait_timeout_while(open, HANG, |open| !*open);
    }
}

type Answer = dyn Fn(&Seen, usize) -> Reply + Send + Sync;

/// The upstream server. Dropping it stops accepting; open connections end
/// at their read timeout or when the proxy closes them.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    conns: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    join: Option<JoinHandle<()>>,
    /// Every connection accepted, to be shut down when the upstream is
    /// dropped: a dropped upstream is a dead one, kept-alive connections
    /// included.
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Upstream {
    /// Starts an upstream whose answer to the `n`th request (from 1) is
    /// `answer(request, n)`.
    pub fn start(answer: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let answer: Arc<Answer> = Arc::new(answer);
        let open = Arc::new(Mutex::new(Vec::new()));
        let join = {
            let (seen, conns, stop) = (seen.clone(), conns.clone(), stop.clone());
            let open = open.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    if let Ok(clone) = stream.try_clone() {
                        open.lock().unwrap().push(clone);
                    }
                    let n = conns.fetch_add(1, SeqCst) + 1;
                    let (seen, answer) = (seen.clone(), answer.clone());
                    std::thread::spawn(move || {
                        // The clone kept for `Drop` holds the socket
                        // open: end the connection explicitly.
                        let end = stream.try_clone();
                        serve(stream, n, &seen, &*answer);
                        if let Ok(end) = end {
                            let _ = end.shutdown(std::net::Shutdown::Both);
                        }
                    });
                }
            })
        };
        Upstream {
            addr,
            seen,
            conns,
            stop,
            join: Some(join),
            open,
        }
    }

    /// Always the same answer.
    pub fn always(reply: Vec<u8>) -> Upstream {
        Upstream::start(move |_, _| Reply::Send(reply.clone()))
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.conns.load(SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        // Wakes the accept loop, which then sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
        for conn in self.open.lock().unwrap().drain(..) {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Serves one connection: requests in, replies out, until EOF, a closing
/// reply, or a read timeout.
fn serve(mut stream: TcpStream, conn: usize, seen: &Mutex<Vec<Seen>>, answer: &Answer) {
    stream.set_read_timeout(Some(HANG)).unwrap();
    let mut buf = Vec::new();
    for _ in 0..1000 {
        let Some(req) = read_request(&mut stream, &mut buf, conn) else {
            return;
        };
        let n = {
            let mut seen = seen.lock().unwrap();
            seen.push(req.clone());
            seen.len()
        };
        match answer(&req, n) {
            Reply::Send(bytes) => {
                if stream.write_all(&bytes).is_err() {
                    return;
                }
            }
            Reply::Close(bytes) => {
                let _ = stream.write_all(&bytes);
                return;
            }
            Reply::After(gate, bytes) => {
                gate.wait();
                if stream.write_all(&bytes).is_err() {
                    return;
                }
            }
        }
    }
}

/// Reads one request (head, and a body by Content-Length); `None` at EOF
/// or on anything unexpected.
fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>, conn: usize) -> Option<Seen> {
    let mut chunk = [0u8; 16 * 1024];
    let head_len = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 1 << 20 {
            return None;
        }
        let n = stream.read(&mut chunk).ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_len].to_vec()).ok()?;
    let mut words = head.split(' ');
    let method = words.next()?.to_owned();
    let target = words.next()?.to_owned();
    let mut seen = Seen {
        method,
        target,
        head: head.clone(),
        body: Vec::new(),
        conn,
    };
    let len: usize = seen
        .header("content-length")
        .map_or(Some(0), |v| v.parse().ok())?;
    buf.drain(..head_len);
    while buf.len() < len {
        let n = stream.read(&mut chunk).ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
    seen.body = buf.drain(..len).collect();
    Some(seen)
}

/// A complete response: status line, `fields` (each a `Name: value`),
/// `Content-Length`, body.
pub fn response(status: &str, fields: &[&str], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n");
    for f in fields {
        out.push_str(f);
        out.push_str("\r\n");
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// `200 OK` with `body` and `fields`.
pub fn ok(body: &str, fields: &[&str]) -> Vec<u8> {
    response("200 OK", fields, body.as_bytes())
}

/// Starts corral with the built-in app and `routes` (each `PREFIX=UPSTREAM`),
/// on the test config changed by `tweak`.
pub fn start_proxy(routes: &[String], tweak: impl FnOnce(&mut Config)) -> TestServer {
    let mut config = test_config();
    for r in routes {
        corral::proxy::route::add_routes(&mut config.proxy, r).expect("route");
    }
    // Short, so a test of a deadline is quick; far below any hang.
    config.proxy_timeout = Duration::from_secs(5);
    config.proxy_connect_timeout = Duration::from_secs(2);
    tweak(&mut config);
    let cache = corral::cached::new_cache(config.cache_config());
    let app = corral::app::router(cache.clone(), corral::app::AppLimits::from(&config));
    let proxy = corral::proxy::Proxy::new(&config, cache, app);
    start(move |c| *c = config, proxy)
}

/// `PREFIX=ADDR`.
pub fn route(prefix: &str, to: &Upstream) -> String {
    format!("{prefix}={}", to.addr)
}
