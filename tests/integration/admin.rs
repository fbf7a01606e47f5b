//! The operator's endpoints (issue 3), on the binary started with
//! `--admin-listen 127.0.0.1:0`: absent from the public port, present on
//! the admin port, `/metrics` valid Prometheus text, `/status` a page that
//! lists the largest entries, and purges that really drop entries.

use std::collections::{HashMap, HashSet};

use crate::support::{spawn_bin, Client};

/// Label names and values.
type Labels = Vec<(String, String)>;

/// One sample line of the text format.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Labels,
    value: f64,
}

/// Checks `text` against the Prometheus text exposition format 0.0.4 and
/// returns its samples. Checked: metric and label names; label values
/// quoted, with only `\\`, `\"` and `\n` escaped; values that are floats;
/// a `# TYPE` for every family before its first sample, at most one, and
/// each family's lines in one group; no series twice; and for histograms,
/// increasing `le` bounds with cumulative counts, ending in `le="+Inf"`
/// equal to `_count`, with a `_sum`.
fn parse_prometheus(text: &str) -> Result<Vec<Sample>, String> {
    if !text.ends_with('\n') {
        return Err("the text does not end with a newline".into());
    }
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: HashSet<String> = HashSet::new();
    let mut closed: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut series: HashSet<String> = HashSet::new();
    let mut samples = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.trim_start().splitn(3, ' ').collect();
            match words.as_slice() {
                ["TYPE", name, kind] => {
                    check_metric_name(name).map_err(at)?;
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(kind) {
                        return Err(at(format!("unknown type {kind:?}")));
                    }
                    if types.insert(name.to_string(), kind.to_string()).is_some() {
                        return Err(at("a second # TYPE".into()));
                    }
                    if closed.contains(*name) || current.as_deref() == Some(*name) {
                        return Err(at("# TYPE after the family's samples".into()));
                    }
                }
                ["HELP", name, ..] => {
                    check_metric_name(name).map_err(at)?;
                    if !helps.insert(name.to_string()) {
                        return Err(at("a second # HELP".into()));
                    }
                }
                ["TYPE" | "HELP", ..] => return Err(at("incomplete".into())),
                _ => {} // any other comment
            }
            continue;
        }
        let sample = parse_sample(line).map_err(at)?;
        let family = family_of(&sample.name, &types)
            .ok_or_else(|| at(format!("no # TYPE before {}", sample.name)))?;
        if current.as_deref() != Some(family.as_str()) {
            if closed.contains(&family) {
                return Err(at(format!("{family} is not in one group")));
            }
            if let Some(done) = current.replace(family.clone()) {
                closed.insert(done);
            }
        }
        let mut key = sample.labels.clone();
        key.sort();
        if !series.insert(format!("{}{key:?}", sample.name)) {
            return Err(at("the same series twice".into()));
        }
        samples.push(sample);
    }
    for (family, kind) in &types {
        if kind == "histogram" {
            check_histogram(family, &samples)?;
        }
    }
    Ok(samples)
}

fn check_metric_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("bad metric name {name:?}"))
    }
}

fn check_label_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(format!("bad label name {name:?}"))
    }
}

/// The family a sample belongs to: its own name, or for `_bucket`, `_sum`
/// and `_count`, the histogram or summary it is part of.
fn family_of(name: &str, types: &HashMap<String, String>) -> Option<String> {
    if types.contains_key(name) {
        return Some(name.to_owned());
    }
    for (suffix, kinds) in [
        ("_bucket", &["histogram"][..]),
        ("_sum", &["histogram", "summary"]),
        ("_count", &["histogram", "summary"]),
    ] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.get(base).is_some_and(|k| kinds.contains(&k.as_str())) {
                return Some(base.to_owned());
            }
        }
    }
    None
}

/// `name{k="v",...} value [timestamp]` or `name value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    check_metric_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=').ok_or("label without =")?;
            let label = &rest[..eq];
            check_label_name(label)?;
            if labels.iter().any(|(l, _)| l == label) {
                return Err(format!("label {label:?} twice"));
            }
            let mut chars = rest[eq + 1..].char_indices();
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("value of {label:?} is not quoted"));
            }
            let mut value = String::new();
            let end = loop {
                match chars.next().ok_or("unterminated label value")? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        c => return Err(format!("bad escape \\{c}")),
                    },
                    (_, '\n') => return Err("newline in a label value".into()),
                    (_, c) => value.push(c),
                }
            };
            labels.push((label.to_owned(), value));
            rest = &rest[eq + 1 + end + 1..];
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with('}') {
                return Err("labels not separated by commas".into());
            }
        }
    }
    let mut fields = rest
        .strip_prefix(' ')
        .ok_or("no space before the value")?
        .split(' ');
    let value = parse_value(fields.next().unwrap_or_default())?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    if fields.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// A float as Go's `ParseFloat` reads it, plus the format's `+Inf`,
/// `-Inf` and `NaN`.
fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) =>
        {
            v.parse().map_err(|_| format!("bad value {v:?}"))
        }
        _ => Err(format!("bad value {v:?}")),
    }
}

fn check_histogram(family: &str, samples: &[Sample]) -> Result<(), String> {
    let without_le = |s: &Sample| {
        let mut l: Vec<_> = s
            .labels
            .iter()
            .filter(|(k, _)| k != "le")
            .cloned()
            .collect();
        l.sort();
        l
    };
    // Per label set (le aside): each bucket's (bound, cumulative count).
    let mut groups: Vec<(Labels, Vec<(f64, f64)>)> = Vec::new();
    for s in samples
        .iter()
        .filter(|s| s.name == format!("{family}_bucket"))
    {
        let le = s
            .labels
            .iter()
            .find(|(k, _)| k == "le")
            .ok_or(format!("{family}_bucket without le"))?;
        let bound = parse_value(&le.1)?;
        let key = without_le(s);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, buckets)) => buckets.push((bound, s.value)),
            None => groups.push((key, vec![(bound, s.value)])),
        }
    }
    if groups.is_empty() {
        return Err(format!("histogram {family} has no buckets"));
    }
    for (labels, buckets) in &groups {
        for pair in buckets.windows(2) {
            if pair[1].0 <= pair[0].0 {
                return Err(format!("{family}{labels:?}: le not increasing"));
            }
            if pair[1].1 < pair[0].1 {
                return Err(format!("{family}{labels:?}: buckets not cumulative"));
            }
        }
        let &(last_le, last_count) = buckets.last().unwrap();
        if last_le != f64::INFINITY {
            return Err(format!("{family}{labels:?}: no le=\"+Inf\" bucket last"));
        }
        let find = |suffix: &str| {
            samples
                .iter()
                .find(|s| s.name == format!("{family}{suffix}") && without_le(s) == *labels)
                .map(|s| s.value)
        };
        let count = find("_count").ok_or(format!("{family}{labels:?}: no _count"))?;
        if count != last_count {
            return Err(format!(
                "{family}{labels:?}: +Inf bucket {last_count} but _count {count}"
            ));
        }
        find("_sum").ok_or(format!("{family}{labels:?}: no _sum"))?;
    }
    Ok(())
}

/// The value of the sample `name` with exactly `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(l, w)| l == k && w == v))
        })
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
        .value
}

fn metrics(admin: &mut Client) -> Vec<Sample> {
    let r = admin.get("/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.text();
    parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n--- /metrics:\n{text}"))
}

#[test]
fn the_validator_rejects_what_prometheus_rejects() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n\
                # TYPE h histogram\nh_bucket{x=\"q\\\"\",le=\"0.5\"} 1\n\
                h_bucket{x=\"q\\\"\",le=\"+Inf\"} 2\nh_sum{x=\"q\\\"\"} 0.7\nh_count{x=\"q\\\"\"} 2\n";
    assert_eq!(parse_prometheus(good).map(|s| s.len()), Ok(5));
    let bad = [
        ("a 1\n", "no # TYPE"),
        ("a 1\n# TYPE a gauge\n", "no # TYPE"),
        ("# TYPE 1a gauge\n1a 1\n", "bad metric name"),
        ("# TYPE a gauge\n# TYPE a gauge\na 1\n", "second # TYPE"),
        ("# TYPE a gauge\na{b=c} 1\n", "not quoted"),
        ("# TYPE a gauge\na{b=\"c\\t\"} 1\n", "bad escape"),
        ("# TYPE a gauge\na{b=\"c\"} one\n", "bad value"),
        ("# TYPE a gauge\na{b=\"c\"}1\n", "no space"),
        ("# TYPE a gauge\na 1\na 2\n", "the same series twice"),
        ("# TYPE a gauge\na 1", "newline"),
        ("# TYPE a gauge\n# TYPE b gauge\na 1\nb 1\na{c=\"d\"} 1\n", "one group"),
        (
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
            "not cumulative",
        ),
        (
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
            "+Inf",
        ),
        (
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
            "_count 3",
        ),
    ];
    for (text, want) in bad {
        match parse_prometheus(text) {
            Ok(s) => panic!("accepted {text:?}: {s:?}"),
            Err(e) => assert!(e.contains(want), "{text:?}: {e} (wanted {want:?})"),
        }
    }
}

#[test]
fn operator_endpoints_are_only_on_the_admin_port() {
    let mut proc = spawn_bin(&[], None);
    let admin_addr = proc.admin_addr();
    assert_ne!(admin_addr, proc.addr);

    let mut public = Client::connect(proc.addr);
    assert_eq!(public.get("/metrics").status, 404);
    assert_eq!(public.get("/status").status, 404);
    assert_eq!(public.post_empty("/cache/purge").status, 404);
    assert_eq!(public.post_empty("/cache/purge?prefix=").status, 404);
    assert_eq!(public.get("/healthz").status, 200, "the app is there");

    let mut admin = Client::connect(admin_addr);
    assert_eq!(admin.get("/metrics").status, 200);
    let status = admin.get("/status");
    assert_eq!(status.status, 200);
    assert!(status
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    // And the app is not on the admin port.
    assert_eq!(admin.get("/healthz").status, 404);
    assert_eq!(admin.get("/primes?below=10").status, 404);
    // Purge is POST only.
    assert_eq!(admin.get("/cache/purge").status, 405);
}

#[test]
fn metrics_status_and_purge_follow_the_cache() {
    let mut proc = spawn_bin(&[], None);
    let mut admin = Client::connect(proc.admin_addr());
    let mut public = Client::connect(proc.addr);

    let before = metrics(&mut admin);
    assert_eq!(value(&before, "corral_cache_entries", &[]), 0.0);

    // Two arrays, each stored raw and encoded: four entries.
    assert_eq!(public.get("/primes?below=50000").status, 200);
    assert_eq!(
        public
            .get("/mandelbrot?width=64&height=48&format=bmp")
            .status,
        200
    );
    assert_eq!(public.get("/no-such-page").status, 404);

    let m = metrics(&mut admin);
    assert_eq!(value(&m, "corral_cache_entries", &[]), 4.0);
    assert_eq!(value(&m, "corral_cache_computations_total", &[]), 4.0);
    assert!(value(&m, "corral_cache_bytes", &[]) > 40_000.0);
    assert!(value(&m, "corral_requests_total", &[]) >= 3.0);
    let route = |r: &str| value(&m, "corral_handler_duration_seconds_count", &[("route", r)]);
    assert_eq!(route("GET /primes"), 1.0);
    assert_eq!(route("GET /mandelbrot"), 1.0);
    assert_eq!(route("unmatched"), 1.0);

    let page = admin.get("/status");
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(html.contains("Largest entries"), "{html}");
    assert!(html.contains("primes?below=50000"), "{html}");
    assert!(html.contains("mandelbrot?width=64"), "{html}");

    // One key, then a prefix, then everything.
    let r = admin.post_empty("/cache/purge?key=primes?below%3D50000");
    assert_eq!((r.status, r.text()), (200, "purged 1\n".into()));
    let r = admin.post_empty("/cache/purge?prefix=primes");
    assert_eq!((r.status, r.text()), (200, "purged 1\n".into()));
    let m = metrics(&mut admin);
    assert_eq!(value(&m, "corral_cache_entries", &[]), 2.0);
    let html = admin.get("/status").text();
    assert!(!html.contains("primes?below"), "{html}");
    assert!(html.contains("mandelbrot?width=64"), "{html}");

    assert_eq!(
        admin.post_empty("/cache/purge?prefix=nothing").text(),
        "purged 0\n"
    );
    assert_eq!(admin.post_empty("/cache/purge?bogus=1").status, 400);
    assert_eq!(admin.post_empty("/cache/purge").text(), "purged 2\n");
    let m = metrics(&mut admin);
    assert_eq!(value(&m, "corral_cache_entries", &[]), 0.0);
    assert_eq!(value(&m, "corral_cache_bytes", &[]), 0.0);

    // A purged array is computed again.
    let r = public.get("/primes?below=50000");
    assert_eq!((r.status, r.header("x-cache")), (200, Some("miss")));
}

#[test]
fn upstreams_are_on_metrics_status_and_the_access_log() {
    use crate::upstream::{ok, Upstream};
    use std::time::Duration;

    let up = Upstream::always(ok("x", &["Cache-Control: max-age=60"]));
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let (up_addr, routes) = (
        up.addr.to_string(),
        [format!("/up={}", up.addr), format!("/dead={dead}")],
    );
    let mut proc = spawn_bin(&["--proxy", &routes[0], "--proxy", &routes[1]], None);
    let mut admin = Client::connect(proc.admin_addr());
    let mut public = Client::connect(proc.addr);
    assert_eq!(public.get("/up/x").header("x-cache"), Some("miss"));
    assert_eq!(public.get("/up/x").header("x-cache"), Some("hit"));
    assert_eq!(public.get("/dead/y").status, 502);

    let m = metrics(&mut admin);
    let at = |name: &str, route: &str, upstream: &str| {
        value(&m, name, &[("route", route), ("upstream", upstream)])
    };
    assert_eq!(at("corral_upstream_requests_total", "/up", &up_addr), 1.0);
    assert_eq!(at("corral_upstream_failures_total", "/up", &up_addr), 0.0);
    assert_eq!(at("corral_upstream_in_flight", "/up", &up_addr), 0.0);
    assert_eq!(
        at("corral_upstream_response_seconds_count", "/up", &up_addr),
        1.0
    );
    assert_eq!(at("corral_upstream_requests_total", "/dead", &dead), 1.0);
    assert_eq!(at("corral_upstream_failures_total", "/dead", &dead), 1.0);
    let peer = |name: &str, upstream: &str| value(&m, name, &[("upstream", upstream)]);
    assert_eq!(peer("corral_upstream_up", &up_addr), 1.0);
    assert_eq!(
        peer("corral_upstream_up", &dead),
        0.0,
        "skipped after its failure"
    );
    assert_eq!(
        peer("corral_upstream_connections", &up_addr),
        1.0,
        "kept alive"
    );

    let html = admin.get("/status").text();
    assert!(html.contains("<h2>Upstreams</h2>"), "{html}");
    assert!(html.contains(&up_addr) && html.contains(&dead), "{html}");

    // The miss shows the upstream's time after the total; the hit does not.
    let within = Duration::from_secs(5);
    let fields = |line: Option<String>| -> Vec<String> {
        let line = line.expect("an access line");
        let after = line.rsplit('"').next().unwrap_or_default().to_owned();
        after.split_whitespace().map(str::to_owned).collect()
    };
    let miss = fields(proc.wait_line("\"GET /up/x HTTP/1.1\"", within));
    assert_eq!(miss.len(), 2, "total and upstream time: {miss:?}");
    let (total, upstream): (u64, u64) = (miss[0].parse().unwrap(), miss[1].parse().unwrap());
    assert!(upstream <= total, "{miss:?}");
    let hit = fields(proc.wait_line("\"GET /up/x HTTP/1.1\"", within));
    assert_eq!(hit.len(), 1, "a hit has no upstream time: {hit:?}");
}
