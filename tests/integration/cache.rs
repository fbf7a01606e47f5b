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

/// The body the server sends with an error status: the status line's
/// reason, then the cache error's text.
fn error_body(status: u16, detail: &str) -> String {
    let reason = match status {
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => unreachable!("the cache answers only 500 or 503"),
    };
    format!("{status} {reason}\n{detail}\n")
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
        // Waiting requests are parked, not held on workers; the pool is
        // still sized for all 200, so that nothing but the cache decides
        // who waits.
        start(
            |c| {
                c.workers = CLIENTS + 8;
                c.queue = 2 * CLIENTS;
            },
            move |req: &mut Request| {
                let (computed, gate) = (computed.clone(), gate.clone());
                cached::serve(&cache, req, "stampede", move || {
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
    let (mut misses, mut coalesced) = (0, 0);
    for r in &resps {
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.body == want, "a client got other bytes");
        assert_eq!(r.header("etag"), Some(etag.as_str()));
        match r.header("x-cache") {
            Some("miss") => misses += 1,
            Some("coalesced") => coalesced += 1,
            other => panic!("X-Cache {other:?}"),
        }
    }
    // Every other request was waiting before the value existed, so none of
    // them can have been a hit.
    assert_eq!((misses, coalesced), (1, CLIENTS - 1));
}

#[test]
fn eight_distinct_keys_compute_in_parallel() {
    const KEYS: usize = 8;
    // Each computation waits for all eight to be running. Run one at a
    // time, the first would give up after this and fail its request. It is
    // long, so that a loaded machine starting them slowly still passes:
    // the 200s below prove they ran together, not a stopwatch.
    const TOGETHER: Duration = HANG;
    let cache = cache(|c| c.compute_concurrency = KEYS);
    let meeting = Meeting::new(KEYS);
    let srv = {
        let cache = cache.clone();
        start(
            |c| c.workers = KEYS + 4,
            move |req: &mut Request| {
                let (key, meeting) = (key_of(req), meeting.clone());
                let computed_key = key.clone();
                cached::serve(&cache, req, &key, move || {
                    if meeting.arrive(TOGETHER) {
                        Ok(body_of(&computed_key))
                    } else {
                        Err("the computations did not all run at once")
                    }
                })
            },
        )
    };
    let resps = join_all(get_all_at_once(
        &srv,
        (0..KEYS).map(|i| format!("/key{i}")).collect(),
    ));
    for (i, r) in resps.iter().enumerate() {
        assert_eq!(r.status, 200, "key{i}: {}", r.text());
        assert_eq!(r.header("x-cache"), Some("miss"));
        assert!(
            r.body == value_of(&format!("key{i}")),
            "key{i}: wrong bytes"
        );
    }
    assert_eq!(cache.stats().computations, KEYS as u64);
}

/// A leader that fails after its waiters have gathered: all of them get
/// the error at once, and the failure is remembered. The error TTL is a
/// minute (at least 45 s with jitter), longer than the test can take, so
/// "remembered" is checked however slow the machine; expiry has a test of
/// its own.
fn failing_leader(panics: bool) {
    const WAITERS: usize = 20;
    const ERROR_TTL: Duration = Duration::from_secs(60);
    let cache = cache(|c| c.error_ttl = ERROR_TTL);
    let computed = Arc::new(AtomicUsize::new(0));
    let gate = Gate::default();
    let srv = {
        let (cache, computed, gate) = (cache.clone(), computed.clone(), gate.clone());
        start(
            |c| c.workers = WAITERS + 8,
            move |req: &mut Request| {
                let (computed, gate) = (computed.clone(), gate.clone());
                cached::serve(&cache, req, "flaky", move || {
                    computed.fetch_add(1, SeqCst);
                    gate.wait();
                    if panics {
                        panic!("the leader fell over");
                    }
                    Err("the leader gave up".to_owned())
                })
            },
        )
    };
    let want = error_body(
        503,
        if panics {
            "computation panicked: the leader fell over"
        } else {
            "computation failed: the leader gave up"
        },
    );
    // The leader first, so that the others are waiters.
    let leader = get_in_background(&srv, "/flaky");
    assert!(wait_until(HANG, || cache.stats().in_flight == 1));
    let waiters = get_all_at_once(&srv, vec!["/flaky".to_owned(); WAITERS]);
    let gathered = wait_until(HANG, || cache.stats().coalesced == WAITERS as u64);
    gate.open();
    let mut resps = vec![leader.join().expect("leader")];
    resps.extend(join_all(waiters));
    assert!(gathered, "waiters never gathered: {:?}", cache.stats());

    let retry_after = ERROR_TTL.as_secs().to_string();
    for r in &resps {
        assert_eq!((r.status, r.text()), (503, want.clone()));
        assert_eq!(r.header("retry-after"), Some(retry_after.as_str()));
    }
    // Woken by the failure, not by their deadline: a waiter that timed out
    // would have counted here and said so in its body.
    assert_eq!(cache.stats().timeouts, 0);
    assert_eq!(computed.load(SeqCst), 1, "nobody retried in turn");
    assert_eq!(cache.stats().failures, 1);

    // Within the error TTL: the failure is served without computing.
    let r = Client::connect(srv.addr).get("/flaky");
    assert_eq!((r.status, r.text()), (503, want));
    assert_eq!(computed.load(SeqCst), 1);
}

#[test]
fn leader_panic_fails_every_waiter_at_once_and_is_remembered() {
    failing_leader(true);
}

#[test]
fn leader_error_fails_every_waiter_at_once_and_is_remembered() {
    failing_leader(false);
}

#[test]
fn a_remembered_failure_expires_after_the_error_ttl() {
    // Jittered by ±25%: remembered for 150 to 250 ms.
    const ERROR_TTL: Duration = Duration::from_millis(200);
    let cache = cache(|c| c.error_ttl = ERROR_TTL);
    let computed = Arc::new(AtomicUsize::new(0));
    let srv = {
        let (cache, computed) = (cache.clone(), computed.clone());
        start(
            |_| {},
            move |req: &mut Request| {
                let computed = computed.clone();
                cached::serve(&cache, req, "flaky", move || {
                    if computed.fetch_add(1, SeqCst) > 0 {
                        return Ok(CachedBody::new(&b"recovered"[..], "text/plain"));
                    }
                    Err("the first try fails")
                })
            },
        )
    };
    let failed = error_body(503, "computation failed: the first try fails");
    // Taken before the failure is stored, so the time since is at least the
    // time it has been remembered.
    let before = Instant::now();
    let mut c = Client::connect(srv.addr);
    let mut last = c.get("/flaky");
    assert_eq!((last.status, last.text()), (503, failed.clone()));
    // Polled: however slowly the requests go, each is either the
    // remembered failure or, once it expires, the recomputed value.
    let deadline = Instant::now() + HANG;
    while last.status != 200 {
        assert_eq!((last.status, last.text()), (503, failed.clone()));
        assert!(Instant::now() < deadline, "the failure never expired");
        std::thread::sleep(Duration::from_millis(10));
        last = c.get("/flaky");
    }
    let waited = before.elapsed();
    assert_eq!(last.body, b"recovered");
    assert_eq!(last.header("x-cache"), Some("miss"));
    assert_eq!(computed.load(SeqCst), 2);
    assert!(
        waited >= ERROR_TTL * 3 / 4,
        "recomputed {waited:?} after the failure, within its TTL"
    );
    assert_eq!(c.get("/flaky").header("x-cache"), Some("hit"));
}

#[test]
fn waiters_give_up_at_their_deadline_and_the_computation_still_stores() {
    let wait_timeout = Duration::from_millis(200);
    let cache = cache(|_| {});
    let computed = Arc::new(AtomicUsize::new(0));
    let gate = Gate::default();
    let srv = {
        let (cache, computed, gate) = (cache.clone(), computed.clone(), gate.clone());
        start(
            |c| c.cache_wait_timeout = wait_timeout,
            move |req: &mut Request| {
                let (computed, gate) = (computed.clone(), gate.clone());
                cached::serve(&cache, req, "slow", move || {
                    computed.fetch_add(1, SeqCst);
                    gate.wait();
                    Ok::<_, String>(body_of("slow"))
                })
            },
        )
    };
    // The request that started the computation and one that joined it both
    // wait parked, and both get the server's 503 at the deadline: the
    // computation is held at the gate until after these answers.
    let leader = get_in_background(&srv, "/slow");
    assert!(wait_until(HANG, || cache.stats().in_flight == 1));
    let asked = Instant::now();
    let r = Client::connect(srv.addr).get("/slow");
    let took = asked.elapsed();
    let want = error_body(503, "timed out waiting for the answer (retry later)");
    assert_eq!((r.status, r.text()), (503, want.clone()));
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(took >= wait_timeout, "gave up after {took:?}");
    let r = leader.join().expect("leader");
    assert_eq!((r.status, r.text()), (503, want));
    assert_eq!(srv.metric(|m| &m.waits_timed_out), 2);

    // The computation goes on, and its value is stored for the next request.
    gate.open();
    assert!(wait_until(HANG, || cache.stats().in_flight == 0));
    let r = Client::connect(srv.addr).get("/slow");
    assert_eq!((r.status, r.header("x-cache")), (200, Some("hit")));
    assert!(r.body == value_of("slow"));
    assert_eq!(computed.load(SeqCst), 1);
    assert_eq!(cache.stats().timeouts, 0, "no thread waited in the cache");
}

#[test]
fn self_recursive_computation_errors_at_once() {
    let cache = cache(|_| {});
    let srv = {
        let cache = cache.clone();
        start(
            |_| {},
            move |req: &mut Request| {
                let inner = cache.clone();
                cached::serve(&cache, req, "ouroboros", move || {
                    inner
                        .get_or_compute(&"ouroboros".to_owned(), || {
                            Ok::<_, String>(body_of("never"))
                        })
                        .map(|found| found.value)
                        .map_err(|e| e.to_string())
                })
            },
        )
    };
    let r = Client::connect(srv.addr).get("/ouroboros");
    // The inner lookup gets `Recursive`; the computation passes it on as a
    // failure of its own, and the cache still reports the cycle, which
    // `serve` answers with 500: a bug that no retry fixes.
    let want = error_body(500, "recursive computation: the value depends on itself");
    assert_eq!((r.status, r.text()), (500, want));
    assert_eq!(r.header("retry-after"), None);
    // Refused at once: waiting on itself would have ended in a timeout.
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
                let (inner, meeting) = (cache.clone(), meeting.clone());
                cached::serve(&cache, req, &key, move || {
                    if !meeting.arrive(HANG) {
                        return Err("the other computation never started".to_owned());
                    }
                    inner
                        .get_or_compute(&other.to_owned(), || Ok::<_, String>(body_of(other)))
                        .map(|found| found.value)
                        .map_err(|e| e.to_string())
                })
            },
        )
    };
    let resps = join_all(get_all_at_once(
        &srv,
        vec!["/a".to_owned(), "/b".to_owned()],
    ));
    // Whichever closed the cycle was refused; the other was waiting on it
    // and got its failure, which is the cycle too. Both are 500s.
    let want = error_body(500, "recursive computation: the value depends on itself");
    for r in &resps {
        assert_eq!((r.status, r.text()), (500, want.clone()));
    }
    // Refused at once: the deadlock would have ended in timeouts.
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
                let (computed_key, gate) = (key.clone(), gate.clone());
                cached::serve(&cache, req, &key, move || {
                    if computed_key == "slow" {
                        gate.wait();
                    }
                    Ok::<_, String>(body_of(&computed_key))
                })
            },
        )
    };
    let mut c = Client::connect(srv.addr);
    assert_eq!(c.get("/fast").header("x-cache"), Some("miss"));
    let slow = get_in_background(&srv, "/slow");
    assert!(wait_until(HANG, || cache.stats().in_flight == 1));

    let r = c.get("/fast");
    assert_eq!((r.status, r.header("x-cache")), (200, Some("hit")));
    assert!(r.body == value_of("fast"));
    // The gate is still shut, so the hit did not wait for the slow key: had
    // it waited, the gate would have given up first and the slow key would
    // no longer be in flight.
    assert_eq!(
        cache.stats().in_flight,
        1,
        "the slow key is still computing"
    );

    gate.open();
    let r = slow.join().expect("slow client");
    assert_eq!((r.status, r.header("x-cache")), (200, Some("miss")));
}
