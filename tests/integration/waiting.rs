//! Requests whose answer comes later (`Response::later`): they wait parked,
//! holding no worker, until the answer comes, their client hangs up, the
//! wait deadline (`cache_wait_timeout`) passes or the shutdown drain ends;
//! and every one gets a status line. Also the regression for requests
//! that waited in the worker queue past their header deadline.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use crate::support::{request_head, start, start_logged, wait_until, Client};
use corral::access::AccessLog;
use corral::http::Reply;
use corral::server::RunReport;
use corral::{Body, Handler, Request, Response};

/// How long a test waits for the server to reach a state it must reach
/// promptly (a handler to run, a gauge to settle).
const WITHIN: Duration = Duration::from_secs(5);

/// What a test sees of the handler from [`desk`]: the replies it hands
/// over and the gates of the requests it holds on a worker.
struct Desk {
    replies: Receiver<(String, Reply)>,
    gates: Receiver<Sender<()>>,
}

/// A handler for these tests, by path prefix:
///
/// - `/later/..`: answers later; hands the path and the `Reply` to the test.
/// - `/now/..`: answers later, but sends the answer before returning.
/// - `/thread/..`: answers later from a new thread, at once, racing the
///   server's parking of the request.
/// - `/ondrop/..`: answers later, the moment the server drops the
///   placeholder (see [`AnswerOnDrop`]).
/// - `/drop/..`: answers later, but drops the `Reply` unsent.
/// - `/block`: holds its worker until the test opens the gate.
/// - anything else: `fast <path>` at once.
///
/// Answers sent by the handler itself say `answer <path>`.
fn desk() -> (impl Handler, Desk) {
    let (reply_tx, replies) = mpsc::channel::<(String, Reply)>();
    let (gate_tx, gates) = mpsc::channel::<Sender<()>>();
    let handler = move |req: &mut Request| {
        let path = req.path().to_owned();
        let answer = Response::text(200, format!("answer {path}"));
        let prefix = path.split('/').nth(1).unwrap_or_default();
        match prefix {
            "later" | "now" | "thread" | "ondrop" | "drop" => {
                let (placeholder, reply) = Response::later();
                match prefix {
                    "later" => {
                        let _ = reply_tx.send((path, reply));
                    }
                    "now" => reply.send(answer),
                    "thread" => {
                        std::thread::spawn(move || reply.send(answer));
                    }
                    "ondrop" => {
                        let body = AnswerOnDrop(Some((reply, answer)));
                        return placeholder.with_body(Body::Stream(Box::new(body)));
                    }
                    _ => drop(reply),
                }
                placeholder
            }
            "block" => {
                let (open_tx, open_rx) = mpsc::channel();
                let _ = gate_tx.send(open_tx);
                // Bounded, so a failed test cannot wedge the worker forever.
                let opened = open_rx.recv_timeout(Duration::from_secs(20)).is_ok();
                Response::text(200, if opened { "released" } else { "timed out" })
            }
            _ => Response::text(200, format!("fast {path}")),
        }
    };
    (handler, Desk { replies, gates })
}

/// The body of an `/ondrop/..` placeholder: it sends the answer when the
/// server drops it. The server drops the placeholder after it has found
/// the answer missing and before it parks the request, so the answer
/// comes exactly while the request is being parked, every time, where an
/// answer from another thread hits that window only now and then.
struct AnswerOnDrop(Option<(Reply, Response)>);

impl Read for AnswerOnDrop {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Ok(0)
    }
}

impl Drop for AnswerOnDrop {
    fn drop(&mut self) {
        if let Some((reply, answer)) = self.0.take() {
            reply.send(answer);
        }
    }
}

impl Desk {
    /// The next `Reply` handed over by a `/later/..` request, with its path.
    fn next(&self) -> (String, Reply) {
        self.replies
            .recv_timeout(WITHIN)
            .expect("a /later request reached the handler")
    }

    /// The next `n` replies, by path.
    fn take(&self, n: usize) -> HashMap<String, Reply> {
        (0..n).map(|_| self.next()).collect()
    }

    /// The gate of the `/block` request now holding a worker: send on it
    /// to let the request finish.
    fn blocked(&self) -> Sender<()> {
        self.gates
            .recv_timeout(WITHIN)
            .expect("a /block request reached the handler")
    }
}

/// A GET request for `path`, to send without reading the response.
fn get(path: &str) -> String {
    request_head("GET", path, &[])
}

/// Takes the reply for `path` out of `pending`.
fn reply_for(pending: &mut HashMap<String, Reply>, path: &str) -> Reply {
    pending
        .remove(path)
        .unwrap_or_else(|| panic!("no reply was handed over for {path}"))
}

/// The wait deadline of the tests where the answer races the parking. A
/// lost wake-up leaves the request parked until this passes, when the
/// server writes what it has: the answer if it came meanwhile, else a 503.
const RACE_WAIT: Duration = Duration::from_secs(3);

/// GETs `path` and checks that the handler's own answer came, and before
/// [`RACE_WAIT`]: an answer that comes only then was sent in time, but its
/// wake-up was lost.
fn get_answered_promptly(c: &mut Client, path: &str) {
    let sent = Instant::now();
    let r = c.get(path);
    let took = sent.elapsed();
    assert_eq!(r.status, 200, "{path}: {r:?}");
    assert_eq!(r.text(), format!("answer {path}"));
    assert!(
        took < RACE_WAIT,
        "{path} answered after {took:?}, at the wait deadline: its wake-up was lost"
    );
}

#[test]
fn a_waiting_request_holds_no_worker() {
    const N: usize = 20;
    let (handler, desk) = desk();
    let srv = start(|c| c.workers = 1, handler);
    let mut clients: Vec<Client> = (0..N)
        .map(|i| {
            let mut c = srv.connect();
            c.send(get(&format!("/later/{i}")));
            c
        })
        .collect();
    let mut pending = desk.take(N);
    assert_eq!(
        srv.wait_metric(|m| &m.requests_waiting, N as u64, WITHIN),
        N as u64
    );
    assert_eq!(
        srv.wait_metric(|m| &m.workers_busy, 0, WITHIN),
        0,
        "a worker is still busy while every request waits"
    );

    // The one worker is free: a new client is served while all N wait.
    let mut fast = srv.connect();
    let r = fast.get("/fast");
    assert_eq!((r.status, r.text().as_str()), (200, "fast /fast"), "{r:?}");
    assert_eq!(srv.metric(|m| &m.requests_waiting), N as u64);

    // Answered last to first, so each answer must find its own connection.
    for i in (0..N).rev() {
        let path = format!("/later/{i}");
        reply_for(&mut pending, &path).send(Response::text(200, format!("answer {path}")));
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let r = c.response();
        assert_eq!(r.status, 200, "client {i}: {r:?}");
        assert_eq!(r.text(), format!("answer /later/{i}"), "client {i}");
        assert!(!r.says_close(), "client {i}: {r:?}");
    }
    assert_eq!(srv.wait_metric(|m| &m.requests_waiting, 0, WITHIN), 0);
    assert_eq!(srv.metric(|m| &m.waits_timed_out), 0);
}

#[test]
fn pipelined_requests_behind_a_waiting_one_are_answered_in_order() {
    let (handler, desk) = desk();
    let srv = start(|_| {}, handler);
    // Another client, idle and parked: it shows below when the parker has
    // looked at the waiting connection again.
    let mut other = srv.connect();
    assert_eq!(other.get("/fast/other").status, 200);
    let mut c = srv.connect();
    // One request read with the waiting one, in the same write ...
    c.send(get("/later/1") + &get("/fast/2"));
    let (path, first) = desk.next();
    assert_eq!(path, "/later/1");
    assert_eq!(srv.wait_metric(|m| &m.requests_waiting, 1, WITHIN), 1);
    assert_eq!(srv.wait_metric(|m| &m.connections_parked, 2, WITHIN), 2);

    // ... and more sent while it waits, which stay in the socket: they must
    // neither end the wait nor be answered before it. The parker reports
    // readiness in the order it comes, so once it has handed over `other`,
    // made readable after these bytes arrived, it would have handed over
    // `c` too, were it watching `c` for bytes; once no worker is busy,
    // whatever a worker did with it is done. (The parker watches a waiting
    // connection only after a while; that its watch ignores bytes is
    // `poller`'s unit test.)
    c.send(get("/later/3") + &get("/fast/4"));
    assert_eq!(other.get("/fast/other").status, 200);
    assert!(
        wait_until(WITHIN, || {
            srv.metric(|m| &m.connections_queued) == 0 && srv.metric(|m| &m.workers_busy) == 0
        }),
        "the server did not go quiet"
    );
    assert_eq!(
        srv.metric(|m| &m.waiters_left),
        0,
        "bytes pipelined behind a waiting request ended its wait"
    );
    assert_eq!(srv.metric(|m| &m.requests_waiting), 1);
    assert_eq!(srv.metric(|m| &m.requests), 3, "answered out of order");

    first.send(Response::text(200, "answer 1"));
    let (path, third) = desk.next();
    assert_eq!(path, "/later/3", "the next waiting request is the third");
    third.send(Response::text(200, "answer 3"));

    for want in ["answer 1", "fast /fast/2", "answer 3", "fast /fast/4"] {
        let r = c.response();
        assert_eq!((r.status, r.text().as_str()), (200, want), "{r:?}");
        assert!(!r.says_close(), "{r:?}");
    }
    // The connection goes on.
    let r = c.get("/fast/5");
    assert_eq!((r.status, r.text().as_str()), (200, "fast /fast/5"));
    assert!(c.buffered().is_empty(), "bytes after the last response");
    assert_eq!(srv.metric(|m| &m.requests), 7);
    assert_eq!(srv.wait_metric(|m| &m.requests_waiting, 0, WITHIN), 0);
    assert_eq!(srv.metric(|m| &m.waiters_left), 0);
}

#[test]
fn an_answer_not_ready_by_the_wait_deadline_gets_503_and_the_connection_goes_on() {
    let wait = Duration::from_millis(300);
    let (handler, desk) = desk();
    let srv = start(|c| c.cache_wait_timeout = wait, handler);
    let mut c = srv.connect();
    let sent = Instant::now();
    c.send(get("/later/late"));
    let (_, reply) = desk.next();

    let r = c.response();
    let waited = sent.elapsed();
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
    assert!(r.text().contains("waiting"), "body: {:?}", r.text());
    assert!(
        !r.says_close(),
        "a timed-out wait need not end the connection"
    );
    assert!(waited >= wait, "503 after {waited:?}, before the deadline");
    assert_eq!(srv.metric(|m| &m.waits_timed_out), 1);

    let r = c.get("/fast/next");
    assert_eq!((r.status, r.text().as_str()), (200, "fast /fast/next"));

    // Nobody waits for the answer any more; sending it anyway does no harm.
    assert!(
        wait_until(WITHIN, || !reply.is_wanted()),
        "the reply is still wanted after its wait timed out"
    );
    reply.send(Response::text(200, "too late"));
    let r = c.get("/fast/after");
    assert_eq!((r.status, r.text().as_str()), (200, "fast /fast/after"));
    assert!(c.buffered().is_empty(), "the late answer was written");
    assert_eq!(srv.metric(|m| &m.waits_timed_out), 1);
    assert_eq!(srv.metric(|m| &m.requests_waiting), 0);
}

#[test]
fn a_client_that_leaves_while_waiting_is_counted_and_its_reply_unwanted() {
    let (handler, desk) = desk();
    // The default wait deadline (30 s) is far beyond these checks, so only
    // the hang-up can end the wait.
    let srv = start(|_| {}, handler);
    let mut c = srv.connect();
    c.send(get("/later/gone"));
    let (_, reply) = desk.next();
    assert_eq!(srv.wait_metric(|m| &m.requests_waiting, 1, WITHIN), 1);
    assert_eq!(srv.metric(|m| &m.connections_open), 1);
    assert!(reply.is_wanted());

    drop(c);
    assert_eq!(srv.wait_metric(|m| &m.waiters_left, 1, WITHIN), 1);
    assert!(
        wait_until(WITHIN, || !reply.is_wanted()),
        "the reply is still wanted after its client left"
    );
    assert_eq!(srv.wait_metric(|m| &m.requests_waiting, 0, WITHIN), 0);
    assert_eq!(srv.wait_metric(|m| &m.connections_open, 0, WITHIN), 0);
    assert_eq!(srv.metric(|m| &m.connections_parked), 0);
    assert_eq!(srv.metric(|m| &m.waits_timed_out), 0);
    reply.send(Response::text(200, "nobody reads this"));
    assert_eq!(srv.metric(|m| &m.waiters_left), 1);
    assert_eq!(srv.metric(|m| &m.responses_2xx), 0);
}

#[test]
fn past_max_waiting_a_request_whose_answer_is_not_ready_gets_503() {
    let (handler, desk) = desk();
    let srv = start(|c| c.max_waiting = 2, handler);
    let mut waiting: Vec<Client> = ["/later/a", "/later/b"]
        .iter()
        .map(|path| {
            let mut c = srv.connect();
            c.send(get(path));
            c
        })
        .collect();
    let mut pending = desk.take(2);
    assert_eq!(srv.wait_metric(|m| &m.requests_waiting, 2, WITHIN), 2);

    let mut third = srv.connect();
    third.send(get("/later/c"));
    let (_, refused) = desk.next();
    let r = third.response();
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
    assert!(!r.says_close(), "{r:?}");
    assert_eq!(srv.metric(|m| &m.waits_refused), 1);
    assert!(!refused.is_wanted(), "a refused request's reply is wanted");
    drop(refused);

    for (c, path) in waiting.iter_mut().zip(["/later/a", "/later/b"]) {
        reply_for(&mut pending, path).send(Response::text(200, format!("answer {path}")));
        let r = c.response();
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.text(), format!("answer {path}"));
    }
    assert_eq!(srv.wait_metric(|m| &m.requests_waiting, 0, WITHIN), 0);

    // Room again: the refused client's next request may wait.
    third.send(get("/later/d"));
    let (_, reply) = desk.next();
    assert_eq!(srv.wait_metric(|m| &m.requests_waiting, 1, WITHIN), 1);
    reply.send(Response::text(200, "answer d"));
    let r = third.response();
    assert_eq!((r.status, r.text().as_str()), (200, "answer d"), "{r:?}");
    assert_eq!(srv.metric(|m| &m.waits_refused), 1);
}

#[test]
fn a_reply_dropped_unsent_answers_500() {
    let (handler, desk) = desk();
    let srv = start(|_| {}, handler);
    let mut c = srv.connect();

    // Dropped before the handler returns: the 500 is there at once.
    let r = c.get("/drop/now");
    assert_eq!(r.status, 500, "{r:?}");
    assert!(r.text().contains("dropped"), "body: {:?}", r.text());

    // Dropped while the request waits, parked.
    c.send(get("/later/dropped"));
    let (_, reply) = desk.next();
    assert_eq!(srv.wait_metric(|m| &m.requests_waiting, 1, WITHIN), 1);
    drop(reply);
    let r = c.response();
    assert_eq!(r.status, 500, "{r:?}");
    assert!(r.text().contains("dropped"), "body: {:?}", r.text());

    let r = c.get("/fast");
    assert_eq!(r.status, 200, "the connection goes on after a 500: {r:?}");
    assert_eq!(srv.metric(|m| &m.waits_timed_out), 0);
    assert_eq!(srv.wait_metric(|m| &m.responses_5xx, 2, WITHIN), 2);
}

#[test]
fn answers_that_race_the_parking_are_never_lost() {
    const CLIENTS: usize = 4;
    const PER_CLIENT: usize = 50;
    let (handler, _desk) = desk();
    let srv = start(
        |c| {
            c.workers = 2;
            c.cache_wait_timeout = RACE_WAIT;
        },
        handler,
    );
    let addr = srv.addr;
    std::thread::scope(|s| {
        for t in 0..CLIENTS {
            s.spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..PER_CLIENT {
                    // Sent before the handler returns, or from another
                    // thread while the server parks the request.
                    let kind = if i % 2 == 0 { "now" } else { "thread" };
                    get_answered_promptly(&mut c, &format!("/{kind}/{t}-{i}"));
                }
            });
        }
    });
    let total = (CLIENTS * PER_CLIENT) as u64;
    assert_eq!(srv.wait_metric(|m| &m.responses_2xx, total, WITHIN), total);
    assert_eq!(srv.metric(|m| &m.waits_timed_out), 0);
    assert_eq!(srv.wait_metric(|m| &m.requests_waiting, 0, WITHIN), 0);
}

#[test]
fn an_answer_that_comes_as_the_request_is_parked_is_written() {
    const ROUNDS: usize = 20;
    let (handler, _desk) = desk();
    let srv = start(|c| c.cache_wait_timeout = RACE_WAIT, handler);
    let mut c = srv.connect();
    for i in 0..ROUNDS {
        get_answered_promptly(&mut c, &format!("/ondrop/{i}"));
    }
    assert_eq!(srv.metric(|m| &m.waits_timed_out), 0);
    assert_eq!(srv.wait_metric(|m| &m.requests_waiting, 0, WITHIN), 0);
}

#[test]
fn shutdown_writes_answers_that_come_in_time_and_503s_the_rest() {
    let shutdown_timeout = Duration::from_secs(1);
    let (handler, desk) = desk();
    let srv = start(|c| c.shutdown_timeout = shutdown_timeout, handler);
    let mut idle = srv.connect();
    assert_eq!(idle.get("/fast").status, 200);
    let mut a = srv.connect();
    a.send(get("/later/a"));
    let mut b = srv.connect();
    b.send(get("/later/b"));
    let mut pending = desk.take(2);
    assert_eq!(srv.wait_metric(|m| &m.requests_waiting, 2, WITHIN), 2);
    // All three parked: the idle one can now leave the parker only when it
    // stops, which shows the waiting ones outlive that.
    assert_eq!(srv.wait_metric(|m| &m.connections_parked, 3, WITHIN), 3);

    srv.handle.shutdown();
    let shutdown_at = Instant::now();
    assert!(
        idle.closes_within(WITHIN),
        "idle connection kept open after shutdown"
    );
    assert_eq!(srv.metric(|m| &m.requests_waiting), 2);

    reply_for(&mut pending, "/later/a").send(Response::text(200, "answer a"));
    let r = a.response();
    assert_eq!((r.status, r.text().as_str()), (200, "answer a"), "{r:?}");
    assert!(
        r.says_close(),
        "an answer during shutdown must close: {r:?}"
    );
    assert!(a.is_closed());

    // The drain ends at the shutdown timeout; b's answer never came.
    let r = b.response();
    assert!(
        shutdown_at.elapsed() >= shutdown_timeout,
        "503 after {:?}, before the drain ended",
        shutdown_at.elapsed()
    );
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.text().contains("shutting down"), "body: {:?}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
    assert!(r.says_close(), "{r:?}");
    assert!(b.is_closed());

    // b's connection was answered and closed, not left open.
    let report = srv.join(WITHIN);
    assert_eq!(report, RunReport { abandoned: 0 });
    let late = reply_for(&mut pending, "/later/b");
    assert!(
        !late.is_wanted(),
        "b's reply is wanted after the server stopped"
    );
}

#[test]
fn issue_9_requests_queued_past_the_header_timeout_are_answered() {
    const QUEUED: usize = 5;
    let header_timeout = Duration::from_millis(300);
    let (handler, desk) = desk();
    let srv = start(
        |c| {
            c.workers = 1;
            c.header_timeout = header_timeout;
        },
        handler,
    );
    let mut blocker = srv.connect();
    blocker.send(get("/block"));
    let gate = desk.blocked();

    // Each sends a whole request at once, but the only worker is held.
    let mut queued: Vec<Client> = (0..QUEUED)
        .map(|i| {
            let mut c = srv.connect();
            c.send(get(&format!("/fast/{i}")));
            c
        })
        .collect();
    assert_eq!(
        srv.wait_metric(|m| &m.connections_queued, QUEUED as u64, WITHIN),
        QUEUED as u64
    );
    // Not synchronisation but the scenario itself: the header deadline of
    // every queued connection must pass while it waits for the worker.
    std::thread::sleep(header_timeout + Duration::from_millis(200));
    gate.send(()).expect("the blocked handler still waits");

    let r = blocker.response();
    assert_eq!((r.status, r.text().as_str()), (200, "released"), "{r:?}");
    for (i, c) in queued.iter_mut().enumerate() {
        let r = c
            .try_response(false)
            .unwrap_or_else(|e| panic!("queued client {i} got no response: {e}"));
        assert_eq!(r.status, 200, "queued client {i}: {r:?}");
        assert_eq!(r.text(), format!("fast /fast/{i}"));
    }
    assert_eq!(srv.metric(|m| &m.header_timeouts), 0);
}

#[test]
fn a_waited_request_is_logged_and_counted_once_by_its_final_status() {
    let wait = Duration::from_millis(300);
    let path = std::env::temp_dir().join(format!("corral-waiting-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let log = AccessLog::file(&path).expect("open the access log");
    let (handler, desk) = desk();
    let srv = start_logged(|c| c.cache_wait_timeout = wait, handler, log);
    let mut c = srv.connect();

    c.send(get("/later/ok"));
    let (_, reply) = desk.next();
    assert_eq!(srv.wait_metric(|m| &m.requests_waiting, 1, WITHIN), 1);
    reply.send(Response::text(200, "answer ok"));
    assert_eq!(c.response().status, 200);

    c.send(get("/later/slow"));
    let (_, slow) = desk.next();
    assert_eq!(c.response().status, 503);

    // Counted and logged after the last byte is written, so wait for them.
    assert_eq!(srv.wait_metric(|m| &m.responses_5xx, 1, WITHIN), 1);
    let mut lines = Vec::new();
    wait_until(WITHIN, || {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        lines = text.lines().map(str::to_owned).collect();
        lines.len() >= 2
    });
    let _ = std::fs::remove_file(&path);
    assert_eq!(srv.metric(|m| &m.requests), 2);
    assert_eq!(srv.metric(|m| &m.responses_2xx), 1);
    assert_eq!(srv.metric(|m| &m.responses_5xx), 1);
    assert_eq!(lines.len(), 2, "one access line per request: {lines:#?}");
    assert!(
        lines[0].contains("\"GET /later/ok HTTP/1.1\" 200 9 "),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("\"GET /later/slow HTTP/1.1\" 503 "),
        "{}",
        lines[1]
    );
    // The time taken covers the wait.
    let micros: u128 = lines[1]
        .rsplit(' ')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no duration at the end of {:?}", lines[1]));
    assert!(micros >= wait.as_micros(), "{}", lines[1]);
    drop(slow);
}
