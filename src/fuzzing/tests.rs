//! Every committed corpus file replayed through its target, and a few
//! checks on the harness itself.

use std::path::Path;

use super::*;

/// Runs every file in `fuzz/corpus/<name>/` through `target`, naming
/// the file that fails.
pub(super) fn replay(name: &str, target: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(name);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no seeds", dir.display());
    for file in files {
        let data = std::fs::read(&file).expect("read a corpus file");
        if std::panic::catch_unwind(|| target(&data)).is_err() {
            panic!("{} fails", file.display());
        }
    }
}

#[test]
fn replay_request_head() {
    replay("request_head", request_head);
}

#[test]
fn replay_chunked_body() {
    replay("chunked_body", chunked_body);
}

#[test]
fn replay_connection() {
    replay("connection", connection);
}

#[test]
fn replay_differential() {
    replay("differential", differential);
}

/// The all-zero input of the grammar is a plain valid request.
#[test]
fn zero_choices_make_a_valid_request() {
    let input = generate(&mut Choices::new(&[]));
    assert_eq!(input, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    let (events, _) = reference(&input, SMALL);
    assert!(matches!(events.as_slice(), [Ev::Req(_)]), "{events:?}");
}

/// The reference agrees with the unit tables' verdicts on a few classics.
#[test]
fn reference_classics() {
    let cases: &[(&[u8], bool)] = &[
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", false),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", false),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello", true),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", false),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n", false),
        (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", false),
        (b"GET / HTTP/1.1\nHost: a\n\n", true),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", false),
    ];
    for (input, ok) in cases {
        let (events, _) = reference(input, SMALL);
        assert_eq!(
            matches!(events.first(), Some(Ev::Req(_))),
            *ok,
            "{:?}",
            String::from_utf8_lossy(input)
        );
        let run = drive(SMALL, &[input], &mut Plain);
        assert_eq!(run.verdict().len(), events.len());
    }
}

/// A few connection scripts: whole, byte by byte, with pauses past the
/// deadlines, with writes that stall, parking at once, and shutdown.
#[test]
fn connection_scripts() {
    let requests = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
        POST /stream/70000 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi\
        GET /x HTTP/1.0\r\n\r\n";
    let with = |config: u8, ctl: &[u8]| {
        let mut data = vec![config, ctl.len() as u8];
        data.extend_from_slice(ctl);
        data.extend_from_slice(requests);
        data
    };
    let served = |config, ctl| serve_script(&with(config, ctl)).served;
    assert_eq!(served(4, &[]), 3, "all at once, then EOF");
    assert_eq!(served(0, &[]), 3, "all at once, then silence");
    assert_eq!(served(4, &[0; 200]), 3, "one byte per read");
    assert_eq!(served(8, &[0x03, 0xa0, 0x0f]), 3, "parking at once");
    assert_eq!(served(0x14, &[]), 1, "shutdown during the first");
    // A pause longer than the header timeout after 4 bytes: 408.
    let timed_out = serve_script(&with(4, &[0x03, 0x8f]));
    assert_eq!(timed_out.served, 0);
    assert_eq!(timed_out.statuses, [408]);
    // A pause longer than the idle timeout after the first request.
    assert_eq!(served(4, &[0x1a, 0x8e]), 1, "idle timeout");
    // The peer stops reading for longer than the write timeout.
    assert_eq!(served(4, &[0x7f, 0x8e, 0x8e]), 1, "write timeout");
    assert_eq!(serve_script(&[0x44, 0, b'G']).served, 0);
}
