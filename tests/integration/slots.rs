//! One worker per CPU serves the queue (`src/slots.rs`): a worker that waits
//! on a client gives its CPU up to another, and a handler that holds every
//! CPU's worker does not hold up the requests queued behind it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use corral::{Request, Response};

use crate::support::{start, wait_until, Client};

/// The CPUs the server counts its slots by: the same call, in-process.
fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A gate handlers wait at until the test opens it, or at most `GATE_MAX`.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
    inside: AtomicUsize,
}

/// Longer than the client's read timeout, so a request stuck behind the
/// gate fails the test instead of being answered when the gate gives up.
const GATE_MAX: Duration = Duration::from_secs(20);

impl Gate {
    fn pass(&self) {
        self.inside.fetch_add(1, Ordering::SeqCst);
        let open = self.open.lock().unwrap();
        let _ = self
            .opened
            .wait_timeout_while(open, GATE_MAX, |open| !*open)
            .unwrap();
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

#[test]
fn handlers_that_block_every_cpu_do_not_hold_up_the_queue() {
    let n = cpus();
    let gate = Arc::new(Gate::default());
    let handler = {
        let gate = gate.clone();
        move |req: &mut Request| {
            if req.path() == "/block" {
                gate.pass();
            }
            Response::text(200, "done\n")
        }
    };
    let srv = start(|c| c.workers = n + 2, handler);

    let mut blocked: Vec<Client> = (0..n).map(|_| srv.connect()).collect();
    for c in &mut blocked {
        c.send("GET /block HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    assert!(
        wait_until(Duration::from_secs(5), || gate
            .inside
            .load(Ordering::SeqCst)
            == n),
        "every CPU's worker should be in the handler"
    );

    // Queued behind workers that neither finish nor wait on a client: the
    // parker lets one more worker in after a stall.
    let mut fresh = srv.connect();
    assert_eq!(fresh.get("/fast").status, 200);
    assert!(srv.metric(|m| &m.worker_stalls) >= 1);
    assert_eq!(
        gate.inside.load(Ordering::SeqCst),
        n,
        "the gate is still shut"
    );

    gate.open();
    for c in &mut blocked {
        assert_eq!(c.response().status, 200);
    }
    // The extra workers give their slots back: the server still answers.
    assert_eq!(fresh.get("/fast").status, 200);
}

#[test]
fn a_client_that_stops_reading_gives_its_cpu_up() {
    const BIG: usize = 16 << 20;
    let n = cpus();
    let big = Arc::new(vec![b'x'; BIG]);
    let handler = move |req: &mut Request| {
        if req.path() == "/big" {
            Response::text(200, big.to_vec())
        } else {
            Response::text(200, "fast\n")
        }
    };
    let srv = start(|c| c.workers = 2 * n + 4, handler);

    // More than twice as many clients as CPUs ask for more than their
    // socket buffers hold, and read none of it: each worker writing to one
    // waits for room.
    let readers = 2 * n + 1;
    let mut stalled: Vec<Client> = (0..readers).map(|_| srv.connect()).collect();
    for c in &mut stalled {
        c.send("GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    assert!(
        wait_until(Duration::from_secs(5), || srv.metric(|m| &m.workers_busy)
            == readers as u64),
        "a worker should be writing to each client"
    );

    let mut fresh = srv.connect();
    assert_eq!(fresh.get("/fast").body, b"fast\n");
    // Had the writers kept their CPUs, the queue would have stalled behind
    // the first `n`, and again behind the `n` that took over from them. A
    // waiting worker gives its CPU up at once, so at most a scheduling
    // hiccup on a loaded machine counts as one.
    let stalls = srv.metric(|m| &m.worker_stalls);
    assert!(stalls < 2, "{stalls} stalls");
    drop(stalled);
}

/// The first CPU this process may run on (CPU 0 need not be one of them).
fn first_allowed_cpu() -> String {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .and_then(|list| list.trim().split([',', '-']).next().map(str::to_owned))
        .expect("Cpus_allowed_list")
}

/// A cache of one key filled by the test: what a fill's subscribers are.
type Shared = corral::cache::Cache<String, String>;

#[test]
fn waiters_answered_together_by_a_thread_without_a_slot_are_all_served() {
    use corral::cache::{CacheConfig, Fill};
    // One worker, so one slot: on a machine with one CPU the answering
    // thread (the test's, below) leaves it to the hand-off at the end of
    // its answers, and on one with more it takes the slot at once.
    const WAITERS: usize = 40;
    let cache: Arc<Shared> = Arc::new(Shared::new(CacheConfig::default(), |v| v.len() as u64));
    let filler = Arc::new(Mutex::new(None));
    let handler = {
        let (cache, filler) = (cache.clone(), filler.clone());
        move |_: &mut Request| {
            let (placeholder, reply) = Response::later();
            match cache.fill(&"k".to_owned()) {
                Fill::Hit(v) => return Response::text(200, v),
                // The leader is answered at once, so that the only
                // answers handed over later are the subscribers'.
                Fill::Lead(f, _) => {
                    *filler.lock().unwrap() = Some(f);
                    return Response::text(200, "leading\n");
                }
                Fill::Join(j, _) => j.subscribe(move |found| {
                    reply.send(match found {
                        Ok(found) => Response::text(200, found.value),
                        Err(e) => Response::text(500, e.to_string()),
                    })
                }),
                Fill::Failed(e, _) => return Response::text(500, e.to_string()),
            }
            placeholder
        }
    };
    let srv = start(|c| c.workers = 1, handler);
    let mut leader = srv.connect();
    assert_eq!(leader.get("/k").body, b"leading\n");
    let mut clients: Vec<Client> = (0..WAITERS).map(|_| srv.connect()).collect();
    for c in &mut clients {
        c.send("GET /k HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    assert!(
        wait_until(Duration::from_secs(10), || srv
            .metric(|m| &m.requests_waiting)
            == WAITERS as u64),
        "every request should wait for the fill"
    );
    let f = filler.lock().unwrap().take().expect("a leader");
    // The subscribers are answered on this thread, which holds no slot.
    f.fill("value\n".to_owned(), None);
    for c in &mut clients {
        let r = c.response();
        assert_eq!((r.status, &r.body[..]), (200, &b"value\n"[..]));
    }
    // Had the hand-off at the end been lost, the answers would have sat in
    // the queue until the parker's stall watch found them.
    assert_eq!(srv.metric(|m| &m.worker_stalls), 0);
}

#[test]
fn on_one_cpu_coalesced_answers_are_handed_over_at_the_end_of_the_fill() {
    use crate::upstream::{ok, route, Gate, Reply, Upstream, HANG};
    const WAITERS: usize = 30;
    let gate = Gate::default();
    let held = gate.clone();
    let up = Upstream::start(move |_, _| Reply::After(held.clone(), ok("value", &[])));
    // One CPU, so one slot: the fetch thread that completes the fill
    // writes every answer itself at the end of its run, and only then
    // queues the connections for a worker.
    let mut proc = crate::support::spawn_bin(
        &["--proxy", &route("/", &up)],
        Some(&["taskset", "-c", &first_allowed_cpu()]),
    );
    let admin = proc.admin_addr();
    // Each read of the metrics closes its connection: a worker lingering
    // on a quiet one would serve the queue when it came back, which would
    // hide a lost hand-off.
    let gauge = |name: &str| {
        let r = Client::connect(admin).get_with("/metrics", &[("Connection", "close")]);
        let text = r.text();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    let waiting = |n: usize| wait_until(HANG, || gauge("corral_requests_waiting") == n as f64);
    // The leader's client leaves before the answer: the leader's own reply,
    // sent after the others', then hands nothing over, and the hand-off at
    // the end of the run is the only one.
    let mut leader = Client::connect(proc.addr);
    leader.send("GET /k HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(wait_until(HANG, || up.requests() == 1), "the fetch began");
    let mut clients: Vec<Client> = (0..WAITERS).map(|_| Client::connect(proc.addr)).collect();
    for c in &mut clients {
        c.send("GET /k HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    assert!(
        waiting(WAITERS + 1),
        "every request should wait for the fill"
    );
    drop(leader);
    assert!(waiting(WAITERS), "the leader's wait ends with its client");
    gate.open();
    for c in &mut clients {
        let r = c.response();
        assert_eq!((r.status, r.text().as_str()), (200, "value"));
    }
    // Had that hand-off been lost, the answers would have sat in the queue
    // until the parker's stall watch found them, a second later.
    assert_eq!(gauge("corral_worker_stalls_total"), 0.0);
    assert_eq!(up.requests(), 1);
}

#[test]
fn on_one_cpu_answers_larger_than_a_socket_takes_at_once_are_finished_by_a_worker() {
    use crate::upstream::{ok, route, Gate, Reply, Upstream, HANG};
    const WAITERS: usize = 3;
    // Larger than a loopback socket's send buffer grows to (4 MiB at most
    // by default), so the thread answering the waiters cannot write any
    // of them whole without waiting, and leaves the rest to a worker.
    let body = "0123456789abcdef".repeat(1 << 20);
    let gate = Gate::default();
    let held = gate.clone();
    let answer = ok(&body, &[]);
    let up = Upstream::start(move |_, _| Reply::After(held.clone(), answer.clone()));
    let mut proc = crate::support::spawn_bin(
        &["--proxy", &route("/", &up)],
        Some(&["taskset", "-c", &first_allowed_cpu()]),
    );
    let admin = proc.admin_addr();
    let waiting = || {
        let text = Client::connect(admin)
            .get_with("/metrics", &[("Connection", "close")])
            .text();
        text.lines()
            .find_map(|l| {
                l.strip_prefix("corral_requests_waiting ")?
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or_default()
    };
    let mut clients: Vec<Client> = (0..WAITERS).map(|_| Client::connect(proc.addr)).collect();
    for c in &mut clients {
        c.send("GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    assert!(
        wait_until(HANG, || waiting() == WAITERS as f64),
        "every request should wait for the fill"
    );
    gate.open();
    for c in &mut clients {
        let r = c.response();
        assert_eq!(r.status, 200);
        assert!(
            r.body == body.as_bytes(),
            "a body of {} bytes",
            r.body.len()
        );
        // The connection goes on after the answer.
        let r = c.get("/big");
        assert_eq!((r.status, r.header("x-cache")), (200, Some("hit")));
        assert_eq!(r.body.len(), body.len());
    }
    assert_eq!(up.requests(), 1);
}
