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
//! burst prints `ok=N statuses=200:N,... first_ns=T last_ns=T
//! last_stamp_ns=T p50_ms=X total_ms=X` (times since the Unix epoch, so
//! they compare with the upstream's; both read the same kernel clock).
//! `last_ns` is when the last client had read its answer; `last_stamp_ns`
//! is when the last answer reached its client's socket, as the kernel
//! stamped it on arrival (`SO_TIMESTAMPNS`): on loopback that happens inside
//! the server's write, so it is the server's last write, without the wait
//! of a thousand client threads for a CPU. cold-and-probe prints
//! `probes=N p50_us=X p99_us=X max_us=X errors=N`.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The kernel's arrival stamps, read with `recvmsg(2)`: std has no call for
/// them, and this tool builds with rustc alone, so the few declarations it
/// needs are here (x86-64 and aarch64 Linux layouts).
mod stamp {
    use std::ffi::{c_int, c_void};
    use std::io;

    const SOL_SOCKET: c_int = 1;
    const SO_TIMESTAMPNS: c_int = 35;

    #[repr(C)]
    struct IoVec {
        base: *mut c_void,
        len: usize,
    }

    #[repr(C)]
    struct MsgHdr {
        name: *mut c_void,
        namelen: u32,
        iov: *mut IoVec,
        iovlen: usize,
        control: *mut c_void,
        controllen: usize,
        flags: c_int,
    }

    #[repr(C)]
    struct CmsgHdr {
        len: usize,
        level: c_int,
        kind: c_int,
    }

    extern "C" {
        fn setsockopt(fd: c_int, level: c_int, name: c_int, value: *const c_void, len: u32)
            -> c_int;
        fn recvmsg(fd: c_int, msg: *mut MsgHdr, flags: c_int) -> isize;
    }

    /// Asks the kernel to stamp what arrives on `fd`.
    pub fn enable(fd: c_int) -> io::Result<()> {
        let on: c_int = 1;
        // SAFETY: `on` outlives the call, and its size is passed with it.
        let r = unsafe {
            setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, (&on as *const c_int).cast(), 4)
        };
        if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }

    /// Reads into `buf`: the bytes read and, if the kernel sent one, the
    /// arrival stamp of the last of them (ns since the Unix epoch).
    pub fn read(fd: c_int, buf: &mut [u8]) -> io::Result<(usize, Option<u128>)> {
        // u64s: the control buffer must be aligned for its headers.
        let mut control = [0u64; 16];
        let mut iov = IoVec { base: buf.as_mut_ptr().cast(), len: buf.len() };
        let mut msg = MsgHdr {
            name: std::ptr::null_mut(),
            namelen: 0,
            iov: &mut iov,
            iovlen: 1,
            control: control.as_mut_ptr().cast(),
            controllen: std::mem::size_of_val(&control),
            flags: 0,
        };
        // SAFETY: every pointer in `msg` points at a live buffer of the
        // length given beside it, for the whole call.
        let n = unsafe { recvmsg(fd, &mut msg, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut stamp = None;
        let (mut at, end) = (0usize, msg.controllen.min(std::mem::size_of_val(&control)));
        let bytes: &[u8] = as_bytes(&control);
        while at + std::mem::size_of::<CmsgHdr>() <= end {
            let len = usize::from_ne_bytes(bytes[at..at + 8].try_into().unwrap());
            let level = c_int::from_ne_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            let kind = c_int::from_ne_bytes(bytes[at + 12..at + 16].try_into().unwrap());
            if len < 16 || at + len > end {
                break;
            }
            if level == SOL_SOCKET && kind == SO_TIMESTAMPNS && len >= 32 {
                let secs = i64::from_ne_bytes(bytes[at + 16..at + 24].try_into().unwrap());
                let nanos = i64::from_ne_bytes(bytes[at + 24..at + 32].try_into().unwrap());
                stamp = Some(secs as u128 * 1_000_000_000 + nanos as u128);
            }
            at += (len + 7) & !7;
        }
        Ok((n as usize, stamp))
    }

    fn as_bytes(words: &[u64]) -> &[u8] {
        // SAFETY: any u64 array is a valid byte array of 8 times its length.
        unsafe { std::slice::from_raw_parts(words.as_ptr().cast(), words.len() * 8) }
    }
}

/// Reads one response; its status and the arrival stamp of its last
/// bytes, or an error text.
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(u16, u128), String> {
    buf.clear();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut stamp = 0;
    let mut read = |s: &mut TcpStream, chunk: &mut [u8]| -> io::Result<usize> {
        loop {
            match stamp::read(s.as_raw_fd(), chunk) {
                Ok((n, at)) => {
                    stamp = at.unwrap_or(stamp).max(stamp);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    };
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = read(s, &mut chunk).map_err(|e| e.to_string())?;
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
            Some(n) if body >= n => return Ok((status, stamp)),
            None if chunked && buf.ends_with(b"0\r\n\r\n") => return Ok((status, stamp)),
            _ => {}
        }
        let n = read(s, &mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return if length.is_none() && !chunked {
                Ok((status, stamp))
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
    stamp::enable(s.as_raw_fd()).map_err(|e| e.to_string())?;
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
                    let (status, stamp) = read_response(&mut s, &mut buf)?;
                    Ok::<_, String>((status, now_ns(), stamp))
                })
                .expect("spawn")
        })
        .collect();
    barrier.wait();
    let sent = now_ns();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut times = Vec::new();
    let mut last_stamp = 0;
    for t in threads {
        match t.join().unwrap_or_else(|_| Err("panicked".into())) {
            Ok((status, at, stamp)) => {
                *statuses.entry(status.to_string()).or_default() += 1;
                times.push(at);
                last_stamp = last_stamp.max(stamp);
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
        "ok={} statuses={} first_ns={} last_ns={} last_stamp_ns={last_stamp} p50_ms={:.1} total_ms={:.1}",
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
            && matches!(read_response(s, &mut buf), Ok((200, _)));
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
