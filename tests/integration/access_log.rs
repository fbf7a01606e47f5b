//! The access log off the request path: buffered and written by a thread
//! of its own, it loses no line when logrotate has it reopen the file or
//! when the server exits, and when its sink stops taking bytes it drops
//! and counts lines instead of holding a worker.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral::access::{AccessLog, MAX_PENDING_BYTES};
use corral::{Request, Response};

use crate::support::{spawn_bin, start_logged, Client, IO_TIMEOUT};

/// Rotations done while clients keep sending requests.
const ROTATIONS: usize = 3;

/// Requests each client sends at most (the traffic stops sooner).
const MAX_REQUESTS_PER_CLIENT: usize = 20_000;

fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("corral-access-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// The binary under steady traffic from four clients: the file is moved
/// and SIGHUP sent three times, then SIGTERM. Every answered request has
/// exactly one line, in the file that was current when the line was
/// written, and none is missing once the process has exited: the lines
/// buffered at each reopen went to the old file, and those buffered at
/// exit were written before it.
#[test]
fn no_line_is_lost_across_reopens_or_at_exit() {
    let dir = scratch_dir("rotate");
    let log = dir.join("access.log");
    let mut proc = spawn_bin(&["--access-log", log.to_str().unwrap()], None);
    let addr = proc.addr;
    // How many reopens had completed when each request was sent.
    let reopened = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (reopened, stop) = (reopened.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut client = Client::connect(addr);
                let mut sent = HashMap::new();
                for i in 0..MAX_REQUESTS_PER_CLIENT {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let epoch = reopened.load(Ordering::SeqCst);
                    let target = format!("/healthz?c{c}r{i}");
                    assert_eq!(client.get(&target).status, 200);
                    sent.insert(target, epoch);
                }
                sent
            })
        })
        .collect();

    for n in 1..=ROTATIONS {
        std::thread::sleep(Duration::from_millis(150));
        // What logrotate does: move the file, then signal.
        std::fs::rename(&log, dir.join(format!("access.log.{n}"))).unwrap();
        proc.signal(libc::SIGHUP);
        proc.wait_line("SIGHUP: reopened access log", Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no reopen {n}: {:#?}", proc.seen));
        reopened.store(n, Ordering::SeqCst);
    }
    std::thread::sleep(Duration::from_millis(150));
    stop.store(true, Ordering::SeqCst);
    let mut sent = HashMap::new();
    for c in clients {
        sent.extend(c.join().expect("a client failed"));
    }
    proc.signal(libc::SIGTERM);
    let status = proc
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("did not exit; stderr: {:#?}", proc.seen));
    assert!(status.success(), "exit {status}; stderr: {:#?}", proc.seen);

    // File n holds the lines written before reopen n; the current one, the
    // rest. Read right after the exit: nothing may still be on its way.
    let mut logged: HashMap<String, usize> = HashMap::new();
    for n in 1..=ROTATIONS + 1 {
        let path = match n {
            n if n <= ROTATIONS => dir.join(format!("access.log.{n}")),
            _ => log.clone(),
        };
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for line in text.lines() {
            let target = line
                .split('"')
                .nth(1)
                .and_then(|request| request.split(' ').nth(1))
                .unwrap_or_else(|| panic!("not an access line: {line:?}"))
                .to_owned();
            if let Some(first) = logged.insert(target.clone(), n) {
                panic!("{target} logged twice, in files {first} and {n}");
            }
        }
    }
    assert!(
        sent.len() > 100,
        "too little traffic to tell: {}",
        sent.len()
    );
    for (target, epoch) in &sent {
        let file = logged
            .get(target)
            .unwrap_or_else(|| panic!("{target} answered but not logged ({} sent)", sent.len()));
        assert!(
            *file > *epoch,
            "{target}, sent after reopen {epoch}, is in file {file}"
        );
    }
    assert_eq!(logged.len(), sent.len(), "lines for requests never sent");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A sink that takes no bytes (a socket nobody reads, like a journald pipe
/// that is full): requests go on being answered at full speed, the lines
/// that do not fit are dropped and counted, and those that fit are written
/// once the sink drains again.
#[test]
fn a_stuck_sink_drops_and_counts_lines_instead_of_holding_workers() {
    let (mut reader, sink) = UnixStream::pair().unwrap();
    let log = Arc::new(AccessLog::writer(sink));
    let srv = start_logged(
        |c| c.workers = 2,
        |_: &mut Request| Response::text(200, "ok"),
        log.clone(),
    );
    // Long targets fill the buffer in a few thousand requests.
    let pad = "p".repeat(4000);
    let requests = 2 * MAX_PENDING_BYTES / pad.len();
    let mut c = srv.connect();
    let start = Instant::now();
    for i in 0..requests {
        // A worker held by the log would leave this without an answer,
        // and the client's read timeout would fail the test. The last asks
        // to close: a line is logged before its connection closes, so once
        // it has, every line is counted one way or the other.
        let close: &[(&str, &str)] = match i + 1 == requests {
            true => &[("Connection", "close")],
            false => &[],
        };
        assert_eq!(
            c.get_with(&format!("/{i}?{pad}"), close).status,
            200,
            "request {i}"
        );
    }
    assert!(c.closes_within(IO_TIMEOUT));
    let took = start.elapsed();
    let dropped = srv.metric(|m| &m.access_log_dropped);
    assert!(dropped > 0, "no line dropped in {requests} requests");
    assert_eq!(log.dropped(), dropped);
    assert!(
        dropped < requests as u64,
        "every line dropped: {dropped} of {requests}"
    );

    // Drained, the sink gets every line that was kept.
    let kept = requests as u64 - dropped;
    let drain = std::thread::spawn(move || {
        reader
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut lines = 0u64;
        let mut buf = vec![0; 1 << 16];
        while lines < kept {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64,
            }
        }
        lines
    });
    assert!(
        log.flush(Duration::from_secs(10)),
        "the drained sink took no lines"
    );
    assert_eq!(
        drain.join().unwrap(),
        kept,
        "{requests} requests in {took:?}"
    );
    assert_eq!(log.dropped(), dropped);
}
