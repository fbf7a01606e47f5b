//! The built-in array service (issue 3): every format read back and
//! checked against known values, `.npy` parsed the way NumPy reads it (and
//! by NumPy itself where python3 has it), strict parameters, and one
//! computation per array whatever the formats asked for.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{start_app, start_app_with_cache, Resp};

/// The primes below 100.
const PRIMES_BELOW_100: [u32; 25] = [
    2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97,
];

/// A `.npy` file, read the way `numpy.lib.format` reads version 1.0.
#[derive(Debug)]
struct Npy {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
    data: Vec<u32>,
}

/// Parses `.npy` v1.0: the magic, the version, a little-endian u16 header
/// length, an ASCII dict literal padded so the data starts on a 64-byte
/// boundary and ending in a newline, then exactly the elements.
fn parse_npy(bytes: &[u8]) -> Result<Npy, String> {
    let rest = bytes
        .strip_prefix(b"\x93NUMPY\x01\x00")
        .ok_or("no .npy v1.0 magic")?;
    let len = usize::from(u16::from_le_bytes([
        *rest.first().ok_or("short")?,
        *rest.get(1).ok_or("short")?,
    ]));
    let header = rest.get(2..2 + len).ok_or("header longer than the file")?;
    if (10 + len) % 64 != 0 {
        return Err(format!("data starts at {}, not on 64 bytes", 10 + len));
    }
    let header = std::str::from_utf8(header).map_err(|_| "header is not ASCII")?;
    let dict = header
        .strip_suffix('\n')
        .ok_or("header does not end in a newline")?
        .trim_end_matches(' ');
    let fields = parse_dict(dict)?;
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or(format!("no {name:?} in {dict:?}"))
    };
    if fields.len() != 3 {
        return Err(format!("expected descr, fortran_order, shape: {dict:?}"));
    }
    let descr = field("descr")?
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .ok_or("descr is not a string")?
        .to_owned();
    let fortran_order = match field("fortran_order")? {
        "False" => false,
        "True" => true,
        v => return Err(format!("fortran_order {v:?}")),
    };
    let shape = parse_tuple(field("shape")?)?;
    let data_bytes = &rest[2 + len..];
    let want = shape.iter().product::<usize>() * 4;
    if data_bytes.len() != want {
        return Err(format!(
            "{} data bytes, shape says {want}",
            data_bytes.len()
        ));
    }
    let data = data_bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Npy {
        descr,
        fortran_order,
        shape,
        data,
    })
}

/// Splits a Python dict literal of `'key': value` pairs, where a value is a
/// quoted string, a bare word, or a tuple.
fn parse_dict(s: &str) -> Result<Vec<(String, String)>, String> {
    let inner = s
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .ok_or(format!("not a dict: {s:?}"))?;
    let mut fields = Vec::new();
    let mut rest = inner.trim_start();
    while !rest.is_empty() {
        let after_quote = rest.strip_prefix('\'').ok_or(format!("key at {rest:?}"))?;
        let end = after_quote.find('\'').ok_or("unterminated key")?;
        let key = &after_quote[..end];
        rest = after_quote[end + 1..]
            .trim_start()
            .strip_prefix(':')
            .ok_or(format!("no colon after {key:?}"))?
            .trim_start();
        let value_len = match rest.as_bytes().first() {
            Some(b'\'') => rest[1..].find('\'').ok_or("unterminated string")? + 2,
            Some(b'(') => rest.find(')').ok_or("unterminated tuple")? + 1,
            Some(_) => rest.find([',', ' ']).unwrap_or(rest.len()),
            None => return Err(format!("no value for {key:?}")),
        };
        fields.push((key.to_owned(), rest[..value_len].to_owned()));
        rest = rest[value_len..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Ok(fields)
}

/// `(25,)` or `(5, 7)` as dimensions.
fn parse_tuple(s: &str) -> Result<Vec<usize>, String> {
    let inner = s
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or(format!("not a tuple: {s:?}"))?;
    if !inner.contains(',') {
        return Err(format!("a tuple needs a comma: {s:?}"));
    }
    inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse().map_err(|_| format!("dimension {d:?}")))
        .collect()
}

fn le_u32s(bytes: &[u8]) -> Vec<u32> {
    assert_eq!(bytes.len() % 4, 0, "{} bytes", bytes.len());
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn ok(r: Resp) -> Resp {
    assert_eq!(r.status, 200, "{}", r.text());
    r
}

#[test]
fn primes_npy_parses_and_round_trips() {
    let srv = start_app(|_| {});
    let mut c = srv.connect();
    let r = ok(c.get("/primes?below=100&format=npy"));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    let npy = parse_npy(&r.body).unwrap_or_else(|e| panic!("{e}: {:?}", r.text()));
    assert_eq!(npy.descr, "<u4");
    assert!(!npy.fortran_order);
    assert_eq!(npy.shape, [25]);
    assert_eq!(npy.data, PRIMES_BELOW_100);
    // npy is the default format: the same bytes and validator.
    let default = ok(c.get("/primes?below=100"));
    assert_eq!(default.body, r.body);
    assert_eq!(default.header("etag"), r.header("etag"));

    // Edge cases of the sieve: nothing below 2, and 2 is the first.
    for (below, want) in [(0, &[][..]), (2, &[]), (3, &[2]), (4, &[2, 3])] {
        let npy = parse_npy(&ok(c.get(&format!("/primes?below={below}"))).body).unwrap();
        assert_eq!((npy.shape, npy.data), (vec![want.len()], want.to_vec()));
    }
}

#[test]
fn primes_raw_csv_and_json() {
    let srv = start_app(|_| {});
    let mut c = srv.connect();

    let raw = ok(c.get("/primes?below=100&format=raw"));
    assert_eq!(raw.header("x-dtype"), Some("uint32"));
    assert_eq!(raw.header("x-shape"), Some("25"));
    assert_eq!(le_u32s(&raw.body), PRIMES_BELOW_100);

    let csv = ok(c.get("/primes?below=100&format=csv"));
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let lines: Vec<u32> = csv.text().lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(lines, PRIMES_BELOW_100);

    let json = ok(c.get("/primes?below=100&format=json"));
    assert_eq!(json.header("content-type"), Some("application/json"));
    let list: Vec<String> = PRIMES_BELOW_100.iter().map(u32::to_string).collect();
    let want = format!(
        "{{\"dtype\":\"uint32\",\"shape\":[25],\"data\":[{}]}}",
        list.join(",")
    );
    let compact: String = json.text().split_whitespace().collect();
    assert_eq!(compact, want);
}

#[test]
fn mandelbrot_in_every_format() {
    let srv = start_app(|_| {});
    let mut c = srv.connect();
    // Odd sizes: the centre pixel sits on (cx, cy), and a 7-pixel row of
    // 21 bytes needs bitmap padding.
    let (w, h, max_iter) = (7usize, 5usize, 50u32);
    let base = format!("/mandelbrot?width={w}&height={h}&max_iter={max_iter}");

    let npy = parse_npy(&ok(c.get(&format!("{base}&format=npy"))).body).unwrap();
    assert_eq!((npy.descr.as_str(), npy.fortran_order), ("<u4", false));
    assert_eq!(npy.shape, [h, w], "shape is (height, width)");
    assert!(npy.data.iter().all(|&v| v <= max_iter));
    // (-0.5, 0) is inside the set; the top-left corner escapes at once.
    assert_eq!(npy.data[(h / 2) * w + w / 2], max_iter);
    assert!(npy.data[0] < 5, "corner {}", npy.data[0]);

    let raw = ok(c.get(&format!("{base}&format=raw")));
    assert_eq!(raw.header("x-shape"), Some("5,7"));
    assert_eq!(le_u32s(&raw.body), npy.data);

    let csv = ok(c.get(&format!("{base}&format=csv")));
    let rows: Vec<Vec<u32>> = csv
        .text()
        .lines()
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), h);
    assert_eq!(rows.concat(), npy.data);

    let json = ok(c.get(&format!("{base}&format=json")));
    let compact: String = json.text().split_whitespace().collect();
    assert!(
        compact.starts_with("{\"dtype\":\"uint32\",\"shape\":[5,7],\"data\":["),
        "{compact}"
    );

    let bmp = ok(c.get(&format!("{base}&format=bmp")));
    assert_eq!(bmp.header("content-type"), Some("image/bmp"));
    let b = &bmp.body;
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let row_bytes = (w * 3).next_multiple_of(4);
    assert_eq!(&b[..2], b"BM");
    assert_eq!(u32_at(2) as usize, b.len(), "file size field");
    assert_eq!(b.len(), 54 + row_bytes * h);
    assert_eq!(u32_at(10), 54, "pixel data offset");
    assert_eq!(u32_at(14), 40, "BITMAPINFOHEADER");
    assert_eq!((u32_at(18), u32_at(22)), (w as u32, h as u32));
    assert_eq!(u16::from_le_bytes([b[28], b[29]]), 24, "bits per pixel");
    // The centre pixel (inside the set) is black; bottom-up rows.
    let centre = 54 + (h - 1 - h / 2) * row_bytes + (w / 2) * 3;
    assert_eq!(&b[centre..centre + 3], [0, 0, 0]);
}

#[test]
fn numpy_loads_the_npy_files() {
    let has_numpy = Command::new("python3")
        .args(["-c", "import numpy"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_numpy {
        eprintln!("note: python3 with numpy not found; numpy.load not tried");
        return;
    }
    let srv = start_app(|_| {});
    let mut c = srv.connect();
    let cases = [
        ("/primes?below=100&format=npy", "(25,)"),
        (
            "/mandelbrot?width=7&height=5&max_iter=50&format=npy",
            "(5, 7)",
        ),
    ];
    for (i, (path, shape)) in cases.iter().enumerate() {
        let r = ok(c.get(path));
        let values: Vec<String> = parse_npy(&r.body)
            .unwrap()
            .data
            .iter()
            .map(u32::to_string)
            .collect();
        let file = std::env::temp_dir().join(format!("corral-test-{}-{i}.npy", std::process::id()));
        std::fs::write(&file, &r.body).unwrap();
        let printed = python(&[
            "-c",
            "import sys, numpy\n\
             a = numpy.load(sys.argv[1], allow_pickle=False)\n\
             print(a.dtype, a.shape, ','.join(str(v) for v in a.ravel().tolist()))",
            file.to_str().unwrap(),
        ]);
        let _ = std::fs::remove_file(&file);
        assert_eq!(
            printed.trim(),
            format!("uint32 {shape} {}", values.join(",")),
            "{path}"
        );
    }
}

/// Runs python3 with `args` for at most 30 s and returns what it printed.
fn python(args: &[&str]) -> String {
    let mut child = Command::new("python3")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn python3");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("python3 ran over 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python3 failed: {:?}", out.status);
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn bad_parameters_are_400_with_a_one_line_reason() {
    let (srv, cache) = start_app_with_cache(|c| {
        c.max_primes_below = 1000;
        c.max_pixels = 10_000;
        c.max_iterations = 1000;
    });
    let mut c = srv.connect();
    let cases = [
        ("/primes", "below is required"),
        ("/primes?below=10&x=1", "unknown parameter \"x\""),
        (
            "/primes?below=1&below=2",
            "parameter \"below\" is given twice",
        ),
        ("/primes?below=1001", "below: must be at most 1000"),
        ("/primes?below=-1", "is not a whole number"),
        ("/primes?below=1e3", "is not a whole number"),
        (
            "/primes?below=99999999999999999999",
            "is not a whole number",
        ),
        (
            "/primes?below=10&format=xml",
            "format: \"xml\" is not one of",
        ),
        ("/primes?below=10&format=bmp", "bmp needs a 2-D array"),
        ("/mandelbrot?width=200&height=100", "at most 10000 pixels"),
        ("/mandelbrot?width=0&height=8", "width: must be at least 1"),
        (
            "/mandelbrot?width=8&height=8&max_iter=1001",
            "max_iter: must be at most 1000",
        ),
        (
            "/mandelbrot?width=8&height=8&max_iter=0",
            "max_iter: must be at least 1",
        ),
        ("/mandelbrot?width=8&height=8&cx=5", "cx: must be between"),
        (
            "/mandelbrot?width=8&height=8&scale=0",
            "scale: must be between",
        ),
        (
            "/mandelbrot?width=8&height=8&cy=nan",
            "is not a finite number",
        ),
        (
            "/mandelbrot?width=8&height=8&scale=inf",
            "is not a finite number",
        ),
        (
            "/mandelbrot?width=8&height=8&zoom=2",
            "unknown parameter \"zoom\"",
        ),
        (
            "/mandelbrot?width=8&width=8",
            "parameter \"width\" is given twice",
        ),
        ("/mandelbrot?width=8&height=8&format=gif", "is not one of"),
    ];
    for (path, reason) in cases {
        let r = c.get(path);
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        let text = r.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines.len(),
            2,
            "{path}: status line and one reason: {text:?}"
        );
        assert!(
            lines[1].contains(reason),
            "{path}: {text:?} lacks {reason:?}"
        );
    }
    // The limits themselves are accepted.
    ok(c.get("/primes?below=1000&format=raw"));
    ok(c.get("/mandelbrot?width=100&height=100&max_iter=1000&format=raw"));
    let stats = cache.stats();
    assert_eq!(stats.computations, 2, "only the valid requests computed");
}

#[test]
fn another_format_of_a_computed_array_costs_only_its_encoding() {
    let (srv, cache) = start_app_with_cache(|_| {});
    let mut c = srv.connect();

    let npy = ok(c.get("/primes?below=10000&format=npy"));
    assert_eq!(npy.header("x-cache"), Some("miss"));
    let first = cache.stats();
    // The array (stored raw) and its npy encoding.
    assert_eq!((first.computations, first.entries), (2, 2), "{first:?}");

    let csv = ok(c.get("/primes?below=10000&format=csv"));
    assert_eq!(csv.header("x-cache"), Some("miss"), "a new encoding");
    let second = cache.stats();
    assert_eq!(
        second.computations,
        first.computations + 1,
        "the csv encoding only: {second:?}"
    );
    assert_eq!(second.hits, first.hits + 1, "the raw array was a hit");
    assert_eq!(second.entries, 3);

    for format in ["raw", "npy", "csv"] {
        let r = ok(c.get(&format!("/primes?below=10000&format={format}")));
        assert_eq!(r.header("x-cache"), Some("hit"), "{format}");
    }
    assert_eq!(cache.stats().computations, second.computations);

    // Entries are keyed by the canonical parameters: order and spelling of
    // the query do not matter.
    let a = ok(c.get("/mandelbrot?width=16&height=8&cx=-0.50&format=bmp"));
    assert_eq!(a.header("x-cache"), Some("miss"));
    let b = ok(c.get("/mandelbrot?format=bmp&cx=-0.5&height=8&width=16&max_iter=256"));
    assert_eq!(b.header("x-cache"), Some("hit"));
    assert_eq!(a.body, b.body);
}
