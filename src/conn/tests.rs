//! Unit tests of the connection loop's deadline arithmetic.
use super::*;

/// A connection whose body has brought `received` bytes, begun at
/// `started`, last read at `last`.
fn receiving(started: Instant, last: Instant, received: usize) -> Connection<()> {
    let t = Timeouts::default();
    let mut c = Connection::new((), None, http::Limits::default(), &t, started);
    let mut input = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n".to_vec();
    input.resize(input.len() + received, b'x');
    let mut rest = input.as_slice();
    while !rest.is_empty() {
        let n = c
            .http
            .read_with(|buf| {
                let n = buf.len().min(rest.len());
                buf[..n].copy_from_slice(&rest[..n]);
                Ok::<usize, ()>(n)
            })
            .unwrap_or(0);
        rest = &rest[n..];
        assert!(matches!(c.http.poll(), Event::NeedMore));
    }
    assert_eq!(c.phase(), Phase::Body);
    assert_eq!(c.http.body_received(), received as u64);
    c.body_started = Some(started);
    c.last_progress = last;
    c
}

#[test]
fn body_deadline_grows_with_the_bytes_received() {
    let t = Timeouts::default();
    let t0 = Instant::now();
    let secs = Duration::from_secs;
    // 1000 bytes at 500 B/s earn 2s on top of the 20s: the total
    // deadline is t0 + 22s, unless the body stalls first (10s after
    // the last read).
    let c = receiving(t0, t0 + secs(1), 1000);
    assert_eq!(c.deadline(&t), (t0 + secs(11), Expiry::RequestTimeout));
    let c = receiving(t0, t0 + secs(15), 1000);
    assert_eq!(c.deadline(&t), (t0 + secs(22), Expiry::RequestTimeout));
    let c = receiving(t0, t0 + secs(15), 0);
    assert_eq!(c.deadline(&t), (t0 + secs(20), Expiry::RequestTimeout));
    // A fraction of a second: 250 bytes earn half of one.
    let c = receiving(t0, t0 + secs(15), 250);
    assert_eq!(
        c.deadline(&t),
        (t0 + Duration::from_millis(20_500), Expiry::RequestTimeout)
    );
}

#[test]
fn body_deadline_past_any_instant_leaves_the_progress_deadline() {
    let t = Timeouts {
        min_body_rate: 1,
        ..Timeouts::default()
    };
    let t0 = Instant::now();
    assert_eq!(body_deadline(t0, &t, u64::MAX), None);
    assert_eq!(
        body_deadline(t0, &t, 3),
        Some(t0 + t.body + Duration::from_secs(3))
    );
}
