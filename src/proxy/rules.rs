//! RFC 9111 for a shared cache: whether an upstream's response may be
//! stored, for how long it is fresh, how old it is, and how long past that
//! it may still be served. Pure: fields and times in, a verdict out.
//!
//! Simplifications, each on the safe side: `no-cache` and `private` (with
//! or without field names) are not stored at all, where the RFC would let
//! a cache store them under conditions; a response with `Set-Cookie` is
//! not stored (RFC 9111 §7.3 leaves it to the cache; Varnish's built-in
//! policy does the same); dates are read in the IMF-fixdate form every
//! current server sends (RFC 9110 §5.6.7), and a date in an obsolete form
//! counts as invalid: an `Expires` then means "already stale" (§5.3).

use std::time::Duration;

use crate::http::Headers;

/// Statuses that may be stored without explicit freshness ("heuristically
/// cacheable", RFC 9110 §15.1). 206 is left out: fills never ask for a
/// range.
const HEURISTIC: &[u16] = &[200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

/// Most field names a `Vary` may list before the response is treated as
/// `Vary: *`: each is part of every key, and real responses name one or
/// two (`Accept-Encoding`, `Accept`).
pub const MAX_VARY: usize = 8;

/// The response directives this cache acts on (RFC 9111 §5.2.2, RFC 5861).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Directives {
    /// `no-store`: never kept.
    pub no_store: bool,
    /// `no-cache`: kept only to revalidate each time; here, not kept.
    pub no_cache: bool,
    /// `private`: for one user's cache only.
    pub private: bool,
    /// `public`: shareable even in answer to `Authorization`.
    pub public: bool,
    /// `must-revalidate` or `proxy-revalidate`: never served stale.
    pub must_revalidate: bool,
    /// `max-age`, seconds.
    pub max_age: Option<u64>,
    /// `s-maxage`, seconds: a shared cache's own `max-age`.
    pub s_maxage: Option<u64>,
    /// `stale-while-revalidate`, seconds (RFC 5861 §3).
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error`, seconds (RFC 5861 §4).
    pub stale_if_error: Option<u64>,
}

/// Reads every `Cache-Control` line. Names are case-insensitive; of a
/// directive given twice, the first counts (§4.2.1); a delta-seconds that
/// is not one counts as 0, "stale" (§1.2.2), and one too large for the
/// arithmetic is capped.
pub fn directives(headers: &Headers) -> Directives {
    let mut d = Directives::default();
    for line in headers.get_all("cache-control") {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        for item in line.split(',') {
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (item.trim(), None),
            };
            let secs = || {
                Some(value.map_or(0, |v| {
                    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
                        // 2^31 is the cap RFC 9111 §1.2.2 suggests.
                        v.parse().unwrap_or(1 << 31).min(1 << 31)
                    } else {
                        0
                    }
                }))
            };
            match name.to_ascii_lowercase().as_str() {
                "no-store" => d.no_store = true,
                "no-cache" => d.no_cache = true,
                "private" => d.private = true,
                "public" => d.public = true,
                "must-revalidate" | "proxy-revalidate" => d.must_revalidate = true,
                "max-age" if d.max_age.is_none() => d.max_age = secs(),
                "s-maxage" if d.s_maxage.is_none() => d.s_maxage = secs(),
                "stale-while-revalidate" if d.stale_while_revalidate.is_none() => {
                    d.stale_while_revalidate = secs()
                }
                "stale-if-error" if d.stale_if_error.is_none() => d.stale_if_error = secs(),
                _ => {}
            }
        }
    }
    d
}

/// Why a response is not stored, for the log and `X-Cache: pass`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// `Cache-Control: no-store`.
    NoStore,
    /// `Cache-Control: private`.
    Private,
    /// `Cache-Control: no-cache`.
    NoCache,
    /// The response sets a cookie.
    SetCookie,
    /// The request was authorized and the response not marked shareable.
    Authorization,
    /// `Vary: *`, or more names than [`MAX_VARY`].
    VaryStar,
    /// No explicit freshness, and a status not cacheable by default (or a
    /// body too large to keep).
    NotCacheable,
}

/// The stored freshness of a response that may be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freshness {
    /// How long it is fresh, counted from its origin (§4.2.1).
    pub lifetime: Duration,
    /// Its age when it arrived (§4.2.3, `corrected_initial_age`).
    pub initial_age: Duration,
    /// The upstream's `stale-while-revalidate`, if it gave one.
    pub stale_while_revalidate: Option<Duration>,
    /// The upstream's `stale-if-error`, if it gave one.
    pub stale_if_error: Option<Duration>,
    /// Never served stale (`must-revalidate`, `proxy-revalidate`,
    /// §5.2.2.2).
    pub must_revalidate: bool,
    /// The field names of `Vary`, lower case, sorted.
    pub vary: Vec<String>,
}

/// When the exchange happened, in Unix seconds, for the age arithmetic.
#[derive(Debug, Clone, Copy)]
pub struct Times {
    /// When the request went upstream.
    pub request: i64,
    /// When the response head arrived.
    pub response: i64,
}

/// Whether a response of `status` with `headers`, to a GET that carried
/// `Authorization` or not, may be stored (RFC 9111 §3), and if so its
/// freshness; `default_ttl` is the lifetime of a heuristically cacheable
/// one with no explicit freshness (0: not stored).
pub fn storable(
    status: u16,
    headers: &Headers,
    authorized: bool,
    times: Times,
    default_ttl: Duration,
) -> Result<Freshness, Pass> {
    let d = directives(headers);
    if d.no_store {
        return Err(Pass::NoStore);
    }
    if d.private {
        return Err(Pass::Private);
    }
    if d.no_cache {
        return Err(Pass::NoCache);
    }
    if headers.get_all("set-cookie").next().is_some() {
        return Err(Pass::SetCookie);
    }
    // §3.5: a shared cache stores a response to an authorized request
    // only if the origin said it may be shared. nginx stores it anyway.
    if authorized && !(d.public || d.s_maxage.is_some() || d.must_revalidate) {
        return Err(Pass::Authorization);
    }
    let mut vary: Vec<String> = Vec::new();
    for line in headers.get_all("vary") {
        for name in String::from_utf8_lossy(line).split(',') {
            let name = name.trim().to_ascii_lowercase();
            if name == "*" {
                return Err(Pass::VaryStar);
            }
            if !name.is_empty() && !vary.contains(&name) {
                vary.push(name);
            }
        }
    }
    if vary.len() > MAX_VARY {
        return Err(Pass::VaryStar);
    }
    vary.sort();
    let date = headers.get("date").and_then(parse_http_date);
    // §4.2.1: s-maxage, then max-age, then Expires minus Date (the time
    // received standing in for a missing Date), then the heuristic.
    let lifetime = if let Some(s) = d.s_maxage.or(d.max_age) {
        Duration::from_secs(s)
    } else if let Some(expires) = headers.get("expires") {
        let base = date.unwrap_or(times.response);
        let secs = parse_http_date(expires).map_or(0, |e| e.saturating_sub(base).max(0));
        Duration::from_secs(secs as u64)
    } else if HEURISTIC.contains(&status) && !default_ttl.is_zero() {
        default_ttl
    } else {
        return Err(Pass::NotCacheable);
    };
    Ok(Freshness {
        lifetime,
        initial_age: initial_age(headers.get("age"), date, times),
        stale_while_revalidate: d.stale_while_revalidate.map(Duration::from_secs),
        stale_if_error: d.stale_if_error.map(Duration::from_secs),
        must_revalidate: d.must_revalidate,
        vary,
    })
}

/// RFC 9111 §4.2.3: how old the response was when it arrived.
pub fn initial_age(age: Option<&str>, date: Option<i64>, times: Times) -> Duration {
    let apparent = date.map_or(0, |d| (times.response - d).max(0));
    let age_value = age
        .filter(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()))
        .map_or(0, |a| a.parse::<i64>().unwrap_or(1 << 31).min(1 << 31));
    let delay = (times.response - times.request).max(0);
    Duration::from_secs(apparent.max(age_value + delay) as u64)
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) into Unix
/// seconds; anything else is `None`.
pub fn parse_http_date(s: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let b = s.trim().as_bytes();
    if b.len() != 29 || &b[3..5] != b", " || &b[25..] != b" GMT" {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = &b[r];
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let day = num(5..7)?;
    let month = MONTHS.iter().position(|m| m.as_bytes() == &b[8..11])? as i64 + 1;
    let year = num(12..16)?;
    let (h, m, sec) = (num(17..19)?, num(20..22)?, num(23..25)?);
    if b[7] != b' ' || b[11] != b' ' || b[16] != b' ' || b[19] != b':' || b[22] != b':' {
        return None;
    }
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(fields: &[(&str, &str)]) -> Headers {
        let mut h = Headers::new();
        for (n, v) in fields {
            h.push(n, v.as_bytes());
        }
        h
    }

    const NOW: i64 = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT
    const AT: Times = Times {
        request: NOW,
        response: NOW,
    };
    const TTL: Duration = Duration::from_secs(60);

    fn verdict(status: u16, fields: &[(&str, &str)], auth: bool) -> Result<u64, Pass> {
        storable(status, &headers(fields), auth, AT, TTL).map(|f| f.lifetime.as_secs())
    }

    #[test]
    fn dates() {
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(NOW));
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        for bad in [
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "0",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn what_is_stored_and_for_how_long() {
        use Pass::*;
        /// Status, fields, whether the request was authorized, verdict.
        type Case<'a> = (u16, &'a [(&'a str, &'a str)], bool, Result<u64, Pass>);
        let cases: &[Case] = &[
            (200, &[], false, Ok(60)),
            (404, &[], false, Ok(60)),
            (302, &[], false, Err(NotCacheable)),
            (500, &[], false, Err(NotCacheable)),
            (500, &[("Cache-Control", "max-age=5")], false, Ok(5)),
            (
                200,
                &[("Cache-Control", "max-age=5, s-maxage=9")],
                false,
                Ok(9),
            ),
            (
                200,
                &[
                    ("Cache-Control", "max-age=5"),
                    ("Cache-Control", "max-age=7"),
                ],
                false,
                Ok(5),
            ),
            (200, &[("Cache-Control", "max-age=\"12\"")], false, Ok(12)),
            (200, &[("Cache-Control", "max-age=x")], false, Ok(0)),
            (
                200,
                &[("Cache-Control", "MAX-AGE=99999999999999999999")],
                false,
                Ok(1 << 31),
            ),
            (200, &[("Cache-Control", "no-store")], false, Err(NoStore)),
            (
                200,
                &[("Cache-Control", "private, max-age=60")],
                false,
                Err(Private),
            ),
            (
                200,
                &[("Cache-Control", "private=\"x\"")],
                false,
                Err(Private),
            ),
            (200, &[("Cache-Control", "no-cache")], false, Err(NoCache)),
            (200, &[("Set-Cookie", "a=1")], false, Err(SetCookie)),
            (200, &[("Vary", "Accept, *")], false, Err(VaryStar)),
            (200, &[], true, Err(Authorization)),
            (
                200,
                &[("Cache-Control", "max-age=60")],
                true,
                Err(Authorization),
            ),
            (200, &[("Cache-Control", "public")], true, Ok(60)),
            (200, &[("Cache-Control", "s-maxage=3")], true, Ok(3)),
            (200, &[("Cache-Control", "must-revalidate")], true, Ok(60)),
            (
                200,
                &[
                    ("Date", "Sun, 06 Nov 1994 08:49:37 GMT"),
                    ("Expires", "Sun, 06 Nov 1994 08:50:37 GMT"),
                ],
                false,
                Ok(60),
            ),
            (
                200,
                &[("Expires", "Sun, 06 Nov 1994 08:49:47 GMT")],
                false,
                Ok(10),
            ),
            (200, &[("Expires", "0")], false, Ok(0)),
            (
                200,
                &[
                    ("Expires", "Sun, 06 Nov 1994 08:49:47 GMT"),
                    ("Cache-Control", "max-age=2"),
                ],
                false,
                Ok(2),
            ),
        ];
        for (status, fields, auth, want) in cases {
            assert_eq!(
                &verdict(*status, fields, *auth),
                want,
                "{status} {fields:?} {auth}"
            );
        }
        assert_eq!(
            storable(200, &headers(&[]), false, AT, Duration::ZERO),
            Err(Pass::NotCacheable),
            "a zero default keeps nothing implicit"
        );
    }

    #[test]
    fn vary_names_are_normalized() {
        let f = storable(
            200,
            &headers(&[("Vary", "Accept-Encoding, accept"), ("Vary", "ACCEPT")]),
            false,
            AT,
            TTL,
        )
        .unwrap();
        assert_eq!(f.vary, vec!["accept", "accept-encoding"]);
    }

    #[test]
    fn age_is_the_larger_of_apparent_and_corrected() {
        let times = Times {
            request: NOW,
            response: NOW + 2,
        };
        assert_eq!(initial_age(None, None, times), Duration::from_secs(2));
        assert_eq!(
            initial_age(Some("10"), None, times),
            Duration::from_secs(12)
        );
        assert_eq!(
            initial_age(None, Some(NOW - 30), times),
            Duration::from_secs(32)
        );
        assert_eq!(
            initial_age(Some("x"), Some(NOW + 99), times),
            Duration::from_secs(2)
        );
        let d = directives(&headers(&[(
            "Cache-Control",
            "stale-while-revalidate=5, stale-if-error=\"60\", must-revalidate",
        )]));
        assert_eq!(
            (
                d.stale_while_revalidate,
                d.stale_if_error,
                d.must_revalidate
            ),
            (Some(5), Some(60), true)
        );
    }
}
