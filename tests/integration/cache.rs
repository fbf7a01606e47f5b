//! The single-flight cache over HTTP (issue 3). Each handler is built with
//! `cached::serve`, and its computation blocks on a gate that the test
//! opens once the requests it wants are waiting, so a stampede, a failure
//! or a timeout happens at the moment the test chooses rather than when
//! the scheduler does. Waiting is on the cache's own counters, polled in
//! bounded loops.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use corral::cache::CacheConfig;
use corral::cached::{self, CachedBody, ResponseCache};
use corral::Request;

use crate::support::{start, wait_until, Client, Resp, TestServer};

/// The longest a test waits for a condition before calling it a hang.
const HANG: Duration = Duration::from_secs(10);

/// A one-shot gate that computations wait on until the test opens it. A
/// wait gives up after [`HANG`], so a test that fails before opening it
/// still ends.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn open(&self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
    }

    fn wait(&self) {
        let open = self.0 .0.lock().unwrap();
        let _ = self.0 .1.wait_timeout_while(open, HANG, |open| !*open);
    }
}

/// A barrier with a deadline: [`Meeting::arrive`] waits until `n` threads
/// have arrived, or gives up after `within` and says so.
struct Meeting {
    arrived: Mutex<usize>,
    all_here: Condvar,
    n: usize,
}

impl Meeting {
    fn new(n: usize) -> Arc<Meeting> {
        Arc::new(Meeting {
            arrived: Mutex::new(0),
            all_here: Condvar::new(),
            n,
        })
    }

    fn arrive(&self, within: Duration) -> bool {
        let mut arrived = self.arrived.lock().unwrap();
        *arrived += 1;
        self.all_here.notify_all();
        let (arrived, _) = self
            .all_here
            .wait_timeout_while(arrived, within, |a| *a < self.n)
            .unwrap();
        *arrived >= self.n
    }
}

/// A cache for one test: deadlines far longer than any test takes, so a
/// waiter that is only woken by its deadline fails the test's time bound
/// instead of passing slowly.
fn cache(tweak: impl FnOnce(&mut CacheConfig)) -> ResponseCache {
    let mut config = CacheConfig {
        wait_timeout: Duration::from_secs(20),
        error_ttl: Duration::from_secs(1),
        compute_concurrency: 8,
        ..CacheConfig::default()
    };
    tweak(&mut config);
    cached::new_cache(config)
}

/// The value computed for `key`: distinct per key, and big enough to take
/// several reads.
fn value_of(key: &str) -> Vec<u8> {
    let seed = key
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31) ^ u32::from(b));
    (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) ^ seed).to_le_bytes()[1])
        .collect()
}

fn body_of(key: &str) -> CachedBody {
    CachedBody::new(value_of(key), "application/octet-stream")
}

/// The cache key a test handler serves: the path without its slash.
fn key_of(req: &Request) -> String {
    req.path().trim_start_matches('/').to_owned()
}

/// Sends `GET` for each path from its own connection, all at once: every
/// client connects first, then one barrier releases them together. The
/// clients wait up to 30 s for their responses, longer than any condition
/// the test waits on meanwhile.
fn get_all_at_once(srv: &TestServer, paths: Vec<String>) -> Vec<JoinHandle<Resp>> {
    // Connect in batches, each accepted before the next: a burst past the
    // listen backlog (std's 128) loses SYNs, and their retransmission
    // comes a second later.
    let accepted = || srv.metric(|m| &m.connections_accepted);
    let mut clients = Vec::new();
    for batch in paths.chunks(64) {
        let want = accepted() + batch.len() as u64;
        clients.extend(batch.iter().map(|p| (Client::connect(srv.addr), p.clone())));
        assert!(
            wait_until(HANG, || accepted() >= want),
            "connections not accepted"
        );
    }
    let go = Arc::new(Barrier::new(clients.len()));
    clients
        .into_iter()
        .map(|(mut c, path)| {
            let go = go.clone();
            std::thread::spawn(move || {
                c.stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                go.wait();
                c.get(&path)
            })
        })
        .collect()
}

fn join_all(clients: Vec<JoinHandle<Resp>>) -> Vec<Resp> {
    clients
        .into_iter()
        .map(|c| c.join().expect("client thread"))
        .collect()
}

/// One request in the background, on a connection of its own.
fn get_in_background(srv: &TestServer, path: &str) -> JoinHandle<Resp> {
    get_all_at_once(srv, vec![path.to_owned()]).remove(0)
}

#[test]
fn stampede_of_200_clients_computes_once() {
    const CLIENTS: usize = 200;
    let cache = cache(|_| {});
    let computed = Arc::new(AtomicUsize::new(0));
    let gate = Gate::default();
    let srv = {
        let (cache, computed, gate) = (cache.clone(), computed.clone(), gate.clone());
        // Every waiting request holds a worker, so all 200 need one.
        start(
            |c| {
                c.workers = CLIENTS + 8;
                c.queue = 2 * CLIENTS;
            },
            move |req: &mut Request| {
                cached::serve(&cache, req, "stampede", || {
                    computed.fetch_add(1, SeqCst);
                    gate.wait();
                    Ok::<_, String>(body_of("stampede"))
                })
            },
        )
    };
    let clients = get_all_at_once(&srv, vec!["/stampede".to_owned(); CLIENTS]);
    // The gate opens only once every other request waits on the leader, so
    // the stampede is complete while the value is still missing.
    let all_waiting = wait_until(HANG, || cache.stats().coalesced == CLIENTS as u64 - 1);
    gate.open();
    let resps = join_all(clients);

    let stats = cache.stats();
    assert!(
        all_waiting,
        "not every request waited on the one computation: {stats:?}"
    );
    assert_eq!(computed.load(SeqCst), 1, "computations run by the handler");
    assert_eq!(stats.computations, 1, "{stats:?}");
    assert_eq!(stats.misses, 1, "{stats:?}");
    assert_eq!(stats.coalesced, CLIENTS as u64 - 1, "{stats:?}");
    let want = value_of("stampede");
    let etag = resps[0].header("etag").expect("ETag").to_owned();
    let mut misses = 0;
    for r in &resps {
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.body == want, "a client got other bytes");
        assert_eq!(r.header("etag"), Some(etag.as_str()));
        match r.header("x-cache") {
            Some("miss") => misses += 1,
            Some("coalesced" | "hit") => {}
            other => panic!("X-Cache {other:?}"),
        }
    }
    assert_eq!(misses, 1, "exactly one request computed");
}

#[test]
fn eight_distinct_keys_compute_in_parallel() {
    const KEYS: usize = 8;
    // Each computation waits for all eight to be running. Run one at a
    // time, the first would give up after this and fail its request, and
    // the whole would take KEYS times as long.
    const TOGETHER: Duration = Duration::from_secs(2);
    let cache = cache(|c| c.compute_concurrency = KEYS);
    let meeting = Meeting::new(KEYS);
    let srv = {
        let cache = cache.clone();
        start(
            |c| c.workers = KEYS + 4,
            move |req: &mut Request| {
                let key = key_of(req);
                cached::serve(&cache, req, &key, || {
                    if meeting.arrive(TOGETHER) {
                        Ok(body_of(&key))
                    } else {
                        Err("the computations did not all run at once")
                    }
                })
            },
        )
    };
    let started = Instant::now();
    let resps = join_all(get_all_at_once(
        &srv,
        (0..KEYS).map(|i| format!("/key{i}")).collect(),
    ));
    let took = started.elapsed();
    for (i, r) in resps.iter().enumerate() {
        assert_eq!(r.status, 200, "key{i}: {}", r.text());
        assert_eq!(r.header("x-cache"), Some("miss"));
        assert!(
            r.body == value_of(&format!("key{i}")),
            "key{i}: wrong bytes"
        );
    }
    assert_eq!(cache.stats().computations, KEYS as u64);
    assert!(
        took < TOGETHER,
        "{KEYS} computations that each wait for the others took {took:?}"
    );
}

/// A leader that fails after its waiters have gathered: all of them get
/// the error at once; the failure is remembered for the error TTL, then
/// the next request computes again.
fn failing_leader(panics: bool) {
    const WAITERS: usize = 20;
    // Jittered by ±25%: remembered for 450 to 750 ms.
    const ERROR_TTL: Duration = Duration::from_millis(600);
    let cache = cache(|c| c.error_ttl = ERROR_TTL);
    let computed = Arc::new(AtomicUsize::new(0));
    let gate = Gate::default();
    let srv = {
        let (cache, computed, gate) = (cache.clone(), computed.clone(), gate.clone());
        start(
            |c| c.workers = WAITERS + 8,
            move |req: &mut Request| {
                cached::serve(&cache, req, "flaky", || {
                    if computed.fetch_add(1, SeqCst) > 0 {
                        return Ok(CachedBody::new(&b"recovered"[..], "text/plain"));
                    }
                    gate.wait();
                    if panics {
                        panic!("the leader fell over");
                    }
                    Err("the leader gave up".to_owned())
                })
            },
        )
    };
    let want = if panics {
        "computation panicked: the leader fell over"
    } else {
        "computation failed: the leader gave up"
    };
    // The leader first, so that the others are waiters.
    let leader = get_in_background(&srv, "/flaky");
    assert!(wait_until(HANG, || cache.stats().in_flight == 1));
    let waiters = get_all_at_once(&srv, vec!["/flaky".to_owned(); WAITERS]);
    let gathered = wait_until(HANG, || cache.stats().coalesced == WAITERS as u64);
    let failed_at = Instant::now();
    gate.open();
    let mut resps = vec![leader.join().expect("leader")];
    resps.extend(join_all(waiters));
    let took = failed_at.elapsed();
    assert!(gathered, "waiters never gathered: {:?}", cache.stats());

    for r in &resps {
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.text().contains(want), "{:?}", r.text());
        let retry: u64 = r
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .unwrap();
        assert!(retry >= 1);
    }
    // The waiters' deadline is 20 s: they were woken by the failure.
    assert!(took < Duration::from_secs(3), "the waiters took {took:?}");
    assert_eq!(computed.load(SeqCst), 1, "nobody retried in turn");
    assert_eq!(cache.stats().failures, 1);

    // Within the error TTL: the failure is served without computing.
    let mut c = Client::connect(srv.addr);
    let r = c.get("/flaky");
    assert_eq!(
        (r.status, computed.load(SeqCst)),
        (503, 1),
        "{:?} after {:?}",
        r.text(),
        failed_at.elapsed()
    );
    assert!(r.text().contains(want), "{:?}", r.text());

    // After it, the next request computes again, and succeeds.
    let mut last = r;
    for _ in 0..300 {
        if last.status != 503 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        last = c.get("/flaky");
    }
    assert_eq!(last.status, 200, "{}", last.text());
    assert_eq!(last.body, b"recovered");
    assert_eq!(last.header("x-cache"), Some("miss"));
    assert_eq!(computed.load(SeqCst), 2);
    assert!(
        failed_at.elapsed() >= ERROR_TTL * 3 / 4,
        "recomputed {:?} after the failure, within its TTL",
        failed_at.elapsed()
    );
    assert_eq!(c.get("/flaky").header("x-cache"), Some("hit"));
}

#[test]
fn leader_panic_fails_every_waiter_at_once_then_recomputes_after_the_ttl() {
    failing_leader(true);
}

#[test]
fn leader_error_fails_every_waiter_at_once_then_recomputes_after_the_ttl() {
    failing_leader(false);
}

#[test]
fn waiter_gives_up_at_its_deadline_and_the_leader_still_stores() {
    let wait_timeout = Duration::from_millis(200);
    let cache = cache(|c| c.wait_timeout = wait_timeout);
    let computed = Arc::new(AtomicUsize::new(0));
    let gate = Gate::default();
    let srv = {
        let (cache, computed, gate) = (cache.clone(), computed.clone(), gate.clone());
        start(
            |_| {},
            move |req: &mut Request| {
                cached::serve(&cache, req, "slow", || {
                    computed.fetch_add(1, SeqCst);
                    gate.wait();
                    Ok::<_, String>(body_of("slow"))
                })
            },
        )
    };
    let leader = get_in_background(&srv, "/slow");
    assert!(wait_until(HANG, || cache.stats().in_flight == 1));

    let asked = Instant::now();
    let r = Client::connect(srv.addr).get("/slow");
    let took = asked.elapsed();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    assert!(r.text().contains("timed out"), "{:?}", r.text());
    assert!(took >= wait_timeout, "gave up after {took:?}");
    assert!(took < Duration::from_secs(3), "gave up after {took:?}");
    assert_eq!(cache.stats().timeouts, 1);

    gate.open();
    let r = leader.join().expect("leader");
    assert_eq!((r.status, r.header("x-cache")), (200, Some("miss")));
    let r = Client::connect(srv.addr).get("/slow");
    assert_eq!((r.status, r.header("x-cache")), (200, Some("hit")));
    assert!(r.body == value_of("slow"));
    assert_eq!(computed.load(SeqCst), 1);
}

#[test]
fn self_recursive_computation_errors_at_once() {
    let cache = cache(|_| {});
    let srv = {
        let cache = cache.clone();
        start(
            |_| {},
            move |req: &mut Request| {
                cached::serve(&cache, req, "ouroboros", || {
                    cache
                        .get_or_compute(&"ouroboros".to_owned(), || {
                            Ok::<_, String>(body_of("never"))
                        })
                        .map(|found| found.value)
                        .map_err(|e| e.to_string())
                })
            },
        )
    };
    let asked = Instant::now();
    let r = Client::connect(srv.addr).get("/ouroboros");
    let took = asked.elapsed();
    // The inner lookup gets `Recursive`; the computation passes it on as
    // its own failure, which `serve` answers with 503 (only a lookup that
    // is itself refused maps to 500).
    assert!(
        matches!(r.status, 500 | 503),
        "{} {:.200}",
        r.status,
        r.text()
    );
    assert!(r.text().contains("recursive"), "{:?}", r.text());
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    let stats = cache.stats();
    assert_eq!((stats.timeouts, stats.computations), (0, 1), "{stats:?}");
}

#[test]
fn recursion_across_two_requests_errors_at_once() {
    // Request a computes a and asks for b; request b computes b and asks
    // for a. Both computations start before either asks.
    let cache = cache(|_| {});
    let meeting = Meeting::new(2);
    let srv = {
        let cache = cache.clone();
        start(
            |_| {},
            move |req: &mut Request| {
                let key = key_of(req);
                let other = if key == "a" { "b" } else { "a" };
                cached::serve(&cache, req, &key, || {
                    if !meeting.arrive(HANG) {
                        return Err("the other computation never started".to_owned());
                    }
                    cache
                        .get_or_compute(&other.to_owned(), || Ok::<_, String>(body_of(other)))
                        .map(|found| found.value)
                        .map_err(|e| e.to_string())
                })
            },
        )
    };
    let asked = Instant::now();
    let resps = join_all(get_all_at_once(
        &srv,
        vec!["/a".to_owned(), "/b".to_owned()],
    ));
    let took = asked.elapsed();
    for r in &resps {
        assert!(
            matches!(r.status, 500 | 503),
            "{} {:.200}",
            r.status,
            r.text()
        );
        assert!(r.text().contains("recursive"), "{:?}", r.text());
    }
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    assert_eq!(cache.stats().timeouts, 0);
}

#[test]
fn a_hit_is_served_while_another_key_computes() {
    // One compute permit, held by the slow key: a hit needs none.
    let cache = cache(|c| c.compute_concurrency = 1);
    let gate = Gate::default();
    let srv = {
        let (cache, gate) = (cache.clone(), gate.clone());
        start(
            |_| {},
            move |req: &mut Request| {
                let key = key_of(req);
                cached::serve(&cache, req, &key, || {
                    if key == "slow" {
                        gate.wait();
                    }
                    Ok::<_, String>(body_of(&key))
                })
            },
        )
    };
    let mut c = Client::connect(srv.addr);
    assert_eq!(c.get("/fast").header("x-cache"), Some("miss"));
    let slow = get_in_background(&srv, "/slow");
    assert!(wait_until(HANG, || cache.stats().in_flight == 1));

    let asked = Instant::now();
    let r = c.get("/fast");
    let took = asked.elapsed();
    assert_eq!((r.status, r.header("x-cache")), (200, Some("hit")));
    assert!(r.body == value_of("fast"));
    assert!(took < Duration::from_secs(2), "the hit took {took:?}");
    assert_eq!(
        cache.stats().in_flight,
        1,
        "the slow key is still computing"
    );

    gate.open();
    let r = slow.join().expect("slow client");
    assert_eq!((r.status, r.header("x-cache")), (200, Some("miss")));
}
