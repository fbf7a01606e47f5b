//! The load tool of the proxy-peers benchmark: std only, built with rustc
//! by run.sh. One thread per client, so a thousand clients are a thousand
//! blocking sockets whose answers are timed where they land.
//!
//!   load burst ADDR PATH N          N clients connect, then all send GET PATH
//!                                   at once; each reads its whole answer
//!   load cold-and-probe ADDR PREFIX N HOT MS
//!                                   N clients send GET PREFIX<i> (distinct,
//!                                   cold; `{i}` in PREFIX is replaced by i
//!                                   instead); meanwhile one client asks for HOT
//!                                   back to back on one connection for MS ms
//!
//! burst prints `ok=N statuses=200:N,... first_ns=T last_ns=T p50_ms=X
//! total_ms=X` (times since the Unix epoch, so they compare with the
//! upstream's; both read the same kernel clock). cold-and-probe prints
//! `probes=N p50_us=X p99_us=X max_us=X errors=N`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Reads one response; its status, or an error text.
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<u16, String> {
    buf.clear();
    let mut chunk = vec![0u8; 64 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before the head".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status")?;
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    let mut body = buf.len() - head_end;
    loop {
        match length {
            Some(n) if body >= n => return Ok(status),
            None if chunked && buf.ends_with(b"0\r\n\r\n") => return Ok(status),
            _ => {}
        }
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return if length.is_none() && !chunked {
                Ok(status)
            } else {
                Err("closed mid-body".into())
            };
        }
        body += n;
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n")
}

fn connect(addr: &str) -> Result<TcpStream, String> {
    let s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

fn burst(addr: &str, path: &str, n: usize) {
    let barrier = Arc::new(Barrier::new(n + 1));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (addr, path, barrier) = (addr.to_owned(), path.to_owned(), barrier.clone());
            std::thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || {
                    let conn = connect(&addr);
                    barrier.wait();
                    let mut s = conn?;
                    s.write_all(request(&path).as_bytes())
                        .map_err(|e| e.to_string())?;
                    let mut buf = Vec::new();
                    let status = read_response(&mut s, &mut buf)?;
                    Ok::<_, String>((status, now_ns()))
                })
                .expect("spawn")
        })
        .collect();
    barrier.wait();
    let sent = now_ns();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut times = Vec::new();
    for t in threads {
        match t.join().unwrap_or_else(|_| Err("panicked".into())) {
            Ok((status, at)) => {
                *statuses.entry(status.to_string()).or_default() += 1;
                times.push(at);
            }
            Err(e) => {
                *statuses
                    .entry(format!("err({})", e.replace(' ', "_")))
                    .or_default() += 1
            }
        }
    }
    times.sort_unstable();
    let ms = |ns: u128| ns as f64 / 1e6;
    let statuses: Vec<String> = statuses.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    println!(
        "ok={} statuses={} first_ns={} last_ns={} p50_ms={:.1} total_ms={:.1}",
        times.len(),
        statuses.join(","),
        times.first().copied().unwrap_or(0),
        times.last().copied().unwrap_or(0),
        times.get(times.len() / 2).map_or(0.0, |&t| ms(t - sent)),
        times.last().map_or(0.0, |&t| ms(t - sent)),
    );
}

fn cold_and_probe(addr: &str, prefix: &str, n: usize, hot: &str, millis: u64) {
    let barrier = Arc::new(Barrier::new(n + 1));
    for i in 0..n {
        let path = if prefix.contains("{i}") {
            prefix.replace("{i}", &i.to_string())
        } else {
            format!("{prefix}{i}")
        };
        let (addr, barrier) = (addr.to_owned(), barrier.clone());
        // Detached: they are still waiting when the probe ends, and the
        // process exits under them.
        let _ = std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || {
                let conn = connect(&addr);
                barrier.wait();
                if let Ok(mut s) = conn {
                    let _ = s.write_all(request(&path).as_bytes());
                    let _ = read_response(&mut s, &mut Vec::new());
                }
            });
    }
    barrier.wait();
    // Let the cold requests reach the proxy before probing.
    std::thread::sleep(Duration::from_millis(200));
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut buf = Vec::new();
    let mut conn = connect(addr).ok();
    let end = Instant::now() + Duration::from_millis(millis);
    while Instant::now() < end {
        let Some(s) = conn.as_mut() else { break };
        let start = Instant::now();
        let ok = s.write_all(request(hot).as_bytes()).is_ok()
            && matches!(read_response(s, &mut buf), Ok(200));
        if ok {
            lat.push(start.elapsed());
        } else {
            errors += 1;
            conn = connect(addr).ok();
        }
    }
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0, |d| d.as_micros())
    };
    println!(
        "probes={} p50_us={} p99_us={} max_us={} errors={errors}",
        lat.len(),
        pct(0.5),
        pct(0.99),
        lat.last().map_or(0, |d| d.as_micros())
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let num = |i: usize| arg(i).parse::<usize>().unwrap_or(0);
    match arg(1).as_str() {
        "burst" => burst(&arg(2), &arg(3), num(4)),
        "cold-and-probe" => cold_and_probe(&arg(2), &arg(3), num(4), &arg(5), num(6) as u64),
        _ => {
            eprintln!("usage: load burst ADDR PATH N | load cold-and-probe ADDR PREFIX N HOT MS");
            std::process::exit(2);
        }
    }
}
