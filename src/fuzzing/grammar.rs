//! The request grammar of the `differential` target: request lines, header
//! fields and bodies, each list with the plain, valid choice first and the
//! odd ones after it.

use super::choices::Choices;

const METHODS: &[&[u8]] = &[
    b"GET",
    b"POST",
    b"POST",
    b"PUT",
    b"HEAD",
    b"OPTIONS",
    b"DELETE",
    b"CONNECT",
    b"get",
    b"G(T",
    b"",
    // Not HTTP: the start of a TLS ClientHello, and an SSH banner.
    b"\x16\x03\x01\x02\x00\x01",
    b"SSH-2.0-x",
];
const TARGETS: &[&[u8]] = &[
    b"/",
    b"/a?b=c",
    b"/nobody",
    b"*",
    b"http://h/p",
    b"HTTPS://h:1",
    b"http:///x",
    b"h:80",
    b"a/b",
    b"/\xc3\xa9",
    b"/\xff",
    b"/a\x7f",
    b"/a#f",
    b"/a b",
    b"/%41%zz",
    b"/%4",
    b"/a|b",
    b"/[x]",
    b"//a?b?/c",
    b"http://h?q",
    b"http://u@h/",
    b"http://h:8x/",
    b"http://[::1]:80/",
    b"http://[zz]/",
    b"http://:80/",
    b"ftp://h/",
    b"*x",
    b"[::1]:443",
];
const VERSIONS: &[&[u8]] = &[
    b"HTTP/1.1",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"HTTP/1.2",
    b"HTTP/2.0",
    b"http/1.1",
    b"HTTP/1.1 ",
    b"HTTP/1.10",
    b"HTTP/1",
    b"HTTP/0.9",
    b"HTTP/1.x",
    b"HTTPS/1.1",
];
const SPACES: &[&[u8]] = &[b" ", b" ", b" ", b"  ", b"\t", b""];
const EOLS: &[&[u8]] = &[b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"\r\r\n", b"\n\r"];
const NAMES: &[&[u8]] = &[
    b"Content-Length",
    b"Transfer-Encoding",
    b"content-length",
    b"transfer-encoding",
    b"CONTENT-LENGTH",
    b"TRANSFER-ENCODING",
    b"Host",
    b"host",
    b"Connection",
    b"Expect",
    b"X-A",
    b"Content_Length",
    b"Transfer_Encoding",
    b"Content-Length ",
    b"Transfer-Encoding\t",
    b" Transfer-Encoding",
    b"Content-Length\x0b",
    b"",
    b"X(Y)",
];
const SEPARATORS: &[&[u8]] = &[b": ", b":", b":\t", b":  ", b" :", b"\t:", b""];
const VALUES: &[&[u8]] = &[
    b"chunked",
    b"0",
    b"5",
    b"a",
    b"Chunked",
    b"CHUNKED",
    b"chunked ",
    b"\tchunked",
    b"chunked,",
    b",chunked",
    b"chunked, chunked",
    b"gzip, chunked",
    b"chunked, gzip",
    b"identity",
    b"chunked;q=1",
    b"\"chunked\"",
    b"chunk",
    b"chunked\x00",
    b"6",
    b"05",
    b"5, 5",
    b"5,5",
    b"5 ,5",
    b"5, 6",
    b"5 5",
    b"+5",
    b"-5",
    b"0x5",
    b"5a",
    b"",
    b",",
    b"8",
    b"9",
    b"17",
    b"64",
    b"65",
    b"0000000000000000005",
    b"00000000000000000005",
    b"99999999999999999999",
    b"18446744073709551615",
    b"a:80",
    b"[::1]",
    b"a b",
    b"a/b",
    b"a:",
    b"a:8x",
    b":80",
    b"a:1:2",
    b"u@a",
    b"[::1]:80",
    b"[zz]",
    b"[v1.x]",
    b"a%41",
    b"a%zz",
    b"close",
    b"Close",
    b"keep-alive",
    b"keep-alive, close",
    b"upgrade",
    b"100-continue",
    b"100-Continue",
    b"200-ok",
    b"x\x7fy",
    b"x\x01",
    b"\xe9",
];
const CHUNK_EXTS: &[&[u8]] = &[
    b"",
    b"",
    b"",
    b";a",
    b";a=b",
    b" ;a",
    b";a=\"q\\\"\"",
    b";",
    b"; a",
    b";a ",
    b" ",
    b";a=",
    b";a=\"\r\n\"",
    b";a\n",
];
const TRAILERS: &[&[u8]] = &[
    b"T: v",
    b"T:",
    b"T-2: v w",
    b" T: v",
    b"T : v",
    b": v",
    b"T",
    b"T: a\x00",
    b"T: \x7f",
    b"Long-Trailer: vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv",
];

/// Builds one to three requests from the choices.
pub(super) fn generate(c: &mut Choices) -> Vec<u8> {
    let mut w = Vec::new();
    for _ in 0..1 + c.below(3) {
        if c.below(8) == 7 {
            // Empty lines before the request line: one or two, a bare CR,
            // and one past the bound of ten.
            w.extend_from_slice(c.pick(&[
                b"\r\n" as &[u8],
                b"\n",
                b"\r\n\r\n",
                b"\r",
                b"\n\r\n",
                b"\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n",
                b"\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n",
            ]));
        }
        w.extend_from_slice(c.pick(METHODS));
        w.extend_from_slice(c.pick(SPACES));
        w.extend_from_slice(c.pick(TARGETS));
        w.extend_from_slice(c.pick(SPACES));
        w.extend_from_slice(c.pick(VERSIONS));
        w.extend_from_slice(c.pick(EOLS));

        // The body comes first so that a Content-Length can match it.
        let body = generate_body(c);
        if c.below(4) != 3 {
            w.extend_from_slice(b"Host: h\r\n");
        }
        for _ in 0..c.below(6) {
            let name = c.pick(NAMES);
            w.extend_from_slice(name);
            w.extend_from_slice(c.pick(SEPARATORS));
            match c.below(8) {
                0 => w.extend_from_slice(body.len().to_string().as_bytes()),
                1 => {
                    let n = c.below(8);
                    w.extend_from_slice(c.take(n));
                }
                _ => w.extend_from_slice(c.pick(VALUES)),
            }
            w.extend_from_slice(c.pick(&[b"" as &[u8], b"", b"", b" ", b"\t"]));
            w.extend_from_slice(c.pick(EOLS));
            if c.below(16) == 15 {
                // obs-fold
                w.extend_from_slice(c.pick(&[b" chunked" as &[u8], b"\t5", b" x"]));
                w.extend_from_slice(c.pick(EOLS));
            }
        }
        w.extend_from_slice(c.pick(EOLS));
        w.extend_from_slice(&body);
    }
    if c.below(4) == 3 {
        let n = c.below(32);
        w.extend_from_slice(c.take(n));
    }
    w
}

/// A body: none, some bytes, a chunked encoding (mostly right), or raw
/// fuzz bytes.
fn generate_body(c: &mut Choices) -> Vec<u8> {
    let mut w = Vec::new();
    match c.below(4) {
        0 => {}
        1 => {
            let n = c.pick(&[5, 0, 1, 6, 8, 9, 16, 17, 64, 65]);
            w.extend((0..n).map(|i| b'a' + (i % 26) as u8));
        }
        2 => {
            for i in 0..c.below(4) {
                let size = 1 + c.below(20);
                chunk_size_line(c, &mut w, size);
                let data = match c.below(8) {
                    0 => size + 1,
                    1 => size - 1,
                    _ => size,
                };
                w.extend((0..data).map(|j| b'A' + ((i + j) % 26) as u8));
                w.extend_from_slice(c.pick(&[
                    b"\r\n" as &[u8],
                    b"\r\n",
                    b"\r\n",
                    b"\n",
                    b"",
                    b"\r",
                ]));
            }
            chunk_size_line(c, &mut w, 0);
            for _ in 0..c.below(3) {
                w.extend_from_slice(c.pick(TRAILERS));
                w.extend_from_slice(c.pick(EOLS));
            }
            w.extend_from_slice(c.pick(&[b"\r\n" as &[u8], b"\r\n", b"\r\n", b"\n", b""]));
        }
        _ => {
            let n = c.below(24);
            w.extend_from_slice(c.take(n));
        }
    }
    w
}

fn chunk_size_line(c: &mut Choices, w: &mut Vec<u8>, size: usize) {
    let line = match c.below(8) {
        0 => format!("{size:X}"),
        1 => format!("000{size:x}"),
        2 => format!("{size:016x}"),
        3 => format!("{size:017x}"),
        4 => format!("+{size:x}"),
        5 => format!(" {size:x}"),
        _ => format!("{size:x}"),
    };
    w.extend_from_slice(line.as_bytes());
    w.extend_from_slice(c.pick(CHUNK_EXTS));
    w.extend_from_slice(c.pick(&[b"\r\n" as &[u8], b"\r\n", b"\r\n", b"\n", b"\r"]));
}
