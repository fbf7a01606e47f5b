//! Out of descriptors: when accept fails with EMFILE the listener stays
//! readable, so a naive loop spins at 100% CPU. The binary runs under a low
//! open-files limit; while the flood holds every descriptor its CPU use must
//! stay low, and once the flood ends it serves again.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::{spawn_bin, Client};

/// Descriptors the server may hold: its own dozen or so, plus connections.
const FD_LIMIT: u32 = 40;
/// More than the server can hold, fewer than the listen backlog (128), so
/// every connect completes without waiting on a SYN retry.
const FLOOD: usize = 80;

#[test]
fn accept_backs_off_instead_of_spinning_when_out_of_descriptors() {
    let script = format!("ulimit -n {FD_LIMIT} && exec \"$0\" \"$@\"");
    let mut proc = spawn_bin(
        &[
            "--workers",
            "2",
            // Silent connections must stay open for the whole test.
            "--header-timeout",
            "60s",
            "--access-log",
            "off",
        ],
        Some(&["bash", "-c", &script]),
    );
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", proc.pid())).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert!(
        open_files.split_whitespace().nth(3) == Some(&FD_LIMIT.to_string()),
        "limit not applied: {open_files}"
    );

    let flood: Vec<TcpStream> = (0..FLOOD)
        .map(|_| TcpStream::connect_timeout(&proc.addr, Duration::from_secs(5)).expect("connect"))
        .collect();
    assert!(
        proc.wait_line("accept failed", Duration::from_secs(10))
            .is_some(),
        "the server never ran out of descriptors; stderr: {:#?}",
        proc.seen
    );

    // Measure CPU over about a second of exhaustion.
    let cpu_before = proc.cpu_time();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let cpu = proc.cpu_time() - cpu_before;
    let wall = started.elapsed();
    let share = cpu.as_secs_f64() / wall.as_secs_f64();
    assert!(
        share < 0.3,
        "server used {cpu:?} of CPU in {wall:?} while out of descriptors: a busy loop"
    );

    drop(flood);
    // Served again once descriptors are free; the backoff is at most 1 s.
    let mut served = false;
    let deadline = Instant::now() + Duration::from_secs(15);
    for _ in 0..20 {
        if Instant::now() >= deadline {
            break;
        }
        let mut c = Client::connect(proc.addr);
        c.send("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
        if let Ok(r) = c.try_response(false) {
            assert_eq!(r.body, b"ok\n");
            served = true;
            break;
        }
    }
    assert!(
        served,
        "not serving after the flood; stderr: {:#?}",
        proc.seen
    );
}
