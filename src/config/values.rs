//! Value parsers and printers: durations, sizes, counts, addresses, the
//! access log target and the log level. Each parser returns a short reason
//! on error; the caller names the option and the source. Each printer
//! writes what its parser reads back exactly, so `--check-config` output is
//! a valid config file.

use crate::priority::Priority;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;

use super::AccessLogTarget;
use crate::forwarded::Cidr;

/// Ceiling of every `*_timeout` (and of `cache-error-ttl`): `Instant +
/// timeout` must not overflow, and no HTTP exchange needs to wait a day.
pub(super) const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// Parses a duration: a non-negative decimal number and an optional unit,
/// `ms`, `s`, `m` or `h`; no unit means seconds. Examples: `500ms`, `10s`,
/// `1.5s`, `2m`, `1h`, `30`. Up to nine digits may follow the decimal point,
/// and the result must be a whole number of nanoseconds (`0.0015s` is 1.5ms,
/// `1.5ns` does not exist). Whitespace around the value and before the unit
/// is ignored. Exponents, signs and other units are rejected, as is anything
/// past `Duration::MAX`. Zero is accepted here; the timeout options refuse
/// it themselves.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration; expected e.g. 10s or 500ms".to_string());
    }
    if s.starts_with('-') {
        return Err("a duration cannot be negative".to_string());
    }
    let number_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(number_end);
    let unit_nanos: u128 = match unit.trim_start() {
        "ms" => 1_000_000,
        "" | "s" => NANOS_PER_SEC,
        "m" => 60 * NANOS_PER_SEC,
        "h" => 60 * 60 * NANOS_PER_SEC,
        other => return Err(format!("unknown unit {other:?}; expected ms, s, m or h")),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let malformed =
        whole.is_empty() || fraction.contains('.') || (number.contains('.') && fraction.is_empty());
    if malformed {
        return Err("expected a number such as 10, 1.5 or 500ms".to_string());
    }
    if fraction.len() > 9 {
        return Err("at most 9 digits may follow the decimal point".to_string());
    }
    let too_large = || "duration too large".to_string();
    // Both parts are ASCII digits only, so `parse` can fail only on overflow.
    let whole: u128 = whole.parse().map_err(|_| too_large())?;
    let fraction_scale = 10u128.pow(fraction.len() as u32);
    let fraction: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().map_err(|_| too_large())?
    };
    // fraction < 10^9 and unit_nanos <= 3.6e12, so this cannot overflow u128.
    let scaled = fraction * unit_nanos;
    let (fraction_nanos, below_a_nanosecond) = (scaled / fraction_scale, scaled % fraction_scale);
    if below_a_nanosecond != 0 {
        return Err("finer than a nanosecond".to_string());
    }
    let nanos = whole
        .checked_mul(unit_nanos)
        .and_then(|n| n.checked_add(fraction_nanos))
        .ok_or_else(too_large)?;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).map_err(|_| too_large())?;
    // The remainder is below 10^9, so it fits in u32.
    Ok(Duration::new(secs, (nanos % NANOS_PER_SEC) as u32))
}

/// Prints a duration so that [`parse_duration`] reads it back exactly: in the
/// largest of `h`, `m`, `s` and `ms` that divides it, else as decimal seconds
/// (`0.0015s`).
pub(super) fn format_duration(d: &Duration) -> String {
    let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
    if nanos == 0 {
        for (unit, name) in [(3600, "h"), (60, "m")] {
            if let (n @ 1.., 0) = (secs / unit, secs % unit) {
                return format!("{n}{name}");
            }
        }
        return format!("{secs}s");
    }
    let millis = secs
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(u64::from(nanos / 1_000_000)));
    if let (0, Some(millis)) = (nanos % 1_000_000, millis) {
        return format!("{millis}ms");
    }
    let fraction = format!("{nanos:09}");
    format!("{secs}.{}s", fraction.trim_end_matches('0'))
}

/// Parses a size in bytes: a whole number and an optional unit. `KiB`, `MiB`
/// and `GiB` are powers of 1024; `KB`, `MB` and `GB` are powers of 1000, as
/// their SI prefixes say; `B` or no unit means bytes. Examples: `512`,
/// `16KiB`, `1MiB`, `2MB`. Units are case-sensitive, so `16kib` and `16K`
/// are rejected rather than guessed at. Fractions are rejected (write
/// `1536KiB`, not `1.5MiB`), as is anything past `u64::MAX`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty size; expected e.g. 512, 16KiB or 1MiB".to_string());
    }
    if s.starts_with('-') {
        return Err("a size cannot be negative".to_string());
    }
    let number_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(number_end);
    if number.is_empty() {
        return Err("expected a number of bytes such as 512, 16KiB or 1MiB".to_string());
    }
    if unit.starts_with('.') {
        return Err(
            "expected a whole number; use a smaller unit (1536KiB, not 1.5MiB)".to_string(),
        );
    }
    let multiplier: u64 = match unit.trim_start() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown unit {other:?}; expected B, KiB, MiB, GiB, KB, MB or GB"
            ))
        }
    };
    let too_large = || "size too large".to_string();
    let number: u64 = number.parse().map_err(|_| too_large())?;
    number.checked_mul(multiplier).ok_or_else(too_large)
}

/// Prints a size so that [`parse_size`] reads it back exactly: in the largest
/// binary unit that divides it, else in bytes.
pub(super) fn format_size(bytes: &usize) -> String {
    const UNITS: [(usize, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (unit, name) in UNITS {
        if let (n @ 1.., 0) = (bytes / unit, bytes % unit) {
            return format!("{n}{name}");
        }
    }
    bytes.to_string()
}

/// Prints a count as plain digits, what [`count_in`] reads.
pub(super) fn format_count<T: ToString>(n: &T) -> String {
    n.to_string()
}

/// A whole number in `min..=max`.
pub(super) fn count_in(s: &str, min: usize, max: usize) -> Result<usize, String> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected a whole number".to_string());
    }
    let n = s
        .parse::<usize>()
        .ok()
        .filter(|n| *n <= max)
        .ok_or_else(|| format!("must be at most {max}"))?;
    if n < min {
        return Err(format!("must be at least {min}"));
    }
    Ok(n)
}

/// [`count_in`] for a `u32` field.
pub(super) fn count_u32(s: &str, min: u32, max: u32) -> Result<u32, String> {
    let n = count_in(s, min as usize, max as usize)?;
    // `n <= max`, which is a u32.
    Ok(n as u32)
}

/// A size of at least `min` bytes that fits in memory on this platform.
pub(super) fn size_in(s: &str, min: usize) -> Result<usize, String> {
    let bytes = parse_size(s)?;
    let bytes =
        usize::try_from(bytes).map_err(|_| "size too large for this platform".to_string())?;
    if bytes < min {
        return Err(format!("must be at least {}", format_size(&min)));
    }
    Ok(bytes)
}

/// A duration of at most `MAX_TIMEOUT`; zero is allowed.
pub(super) fn bounded_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d > MAX_TIMEOUT {
        return Err(format!("must be at most {}", format_duration(&MAX_TIMEOUT)));
    }
    Ok(d)
}

/// A duration above zero and at most `MAX_TIMEOUT`. Zero is refused rather
/// than read as "no timeout": the server never waits without a bound.
pub(super) fn timeout(s: &str) -> Result<Duration, String> {
    let d = bounded_duration(s)?;
    if d.is_zero() {
        return Err("a timeout must be greater than zero".to_string());
    }
    Ok(d)
}

/// Adds one occurrence of `listen` to `list`: one address or a
/// comma-separated list.
pub(super) fn add_listen(list: &mut Vec<SocketAddr>, value: &str) -> Result<(), String> {
    for item in value.split(',') {
        let item = item.trim();
        let addr = parse_listen_addr(item)?;
        // Port 0 asks the OS for a fresh port each time, so repeating it is
        // not a duplicate.
        if addr.port() != 0 && list.contains(&addr) {
            return Err(format!("{addr} is listed twice"));
        }
        list.push(addr);
    }
    Ok(())
}

/// Prints the `listen` list the way [`add_listen`] reads it.
pub(super) fn format_listen(list: &[SocketAddr]) -> String {
    let addrs: Vec<String> = list.iter().map(SocketAddr::to_string).collect();
    addrs.join(", ")
}

/// An IP literal with a port. Host names are refused, not resolved: the
/// address a server binds should not depend on DNS at start-up.
fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    if s.is_empty() {
        return Err("expected an address such as 127.0.0.1:8080 or [::1]:8080".to_string());
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if s.parse::<IpAddr>().is_ok() {
        return Err(format!("missing port; expected e.g. {s}:8080"));
    }
    Err(
        "expected an IP address and port such as 127.0.0.1:8080 or [::1]:8080 \
         (host names are not resolved)"
            .to_string(),
    )
}

/// Adds one occurrence of `trusted-proxy` to `list`: an IP address or a
/// CIDR block, a comma-separated list of them, or `none` alone, which adds
/// nothing (it is how the empty list prints, and clears a list from a
/// lower source). Host names are refused, as for `listen`.
pub(super) fn add_trusted_proxy(list: &mut Vec<Cidr>, value: &str) -> Result<(), String> {
    if value.trim() == "none" {
        return Ok(());
    }
    for item in value.split(',') {
        let block = Cidr::parse(item)?;
        if list.contains(&block) {
            return Err(format!("{block} is listed twice"));
        }
        list.push(block);
    }
    Ok(())
}

/// Prints the `trusted-proxy` list the way [`add_trusted_proxy`] reads it.
pub(super) fn format_trusted_proxies(list: &[Cidr]) -> String {
    if list.is_empty() {
        return "none".to_string();
    }
    let blocks: Vec<String> = list.iter().map(Cidr::to_string).collect();
    blocks.join(", ")
}

/// An address as [`parse_listen_addr`] takes it, or `off`.
pub(super) fn parse_admin_listen(s: &str) -> Result<Option<SocketAddr>, String> {
    match s.trim() {
        "off" => Ok(None),
        addr => Ok(Some(parse_listen_addr(addr)?)),
    }
}

/// Prints what [`parse_admin_listen`] reads.
pub(super) fn format_admin_listen(addr: &Option<SocketAddr>) -> String {
    addr.map_or_else(|| "off".to_string(), |a| a.to_string())
}

/// `off`, `stderr`, or a file path.
pub(super) fn parse_access_log(s: &str) -> Result<AccessLogTarget, String> {
    match s {
        "off" => Ok(AccessLogTarget::Off),
        "stderr" => Ok(AccessLogTarget::Stderr),
        "" => Err("expected stderr, off or a file path".to_string()),
        path => Ok(AccessLogTarget::File(PathBuf::from(path))),
    }
}

/// Prints what [`parse_access_log`] reads.
pub(super) fn format_access_log(target: &AccessLogTarget) -> String {
    match target {
        AccessLogTarget::Off => "off".to_string(),
        AccessLogTarget::Stderr => "stderr".to_string(),
        AccessLogTarget::File(path) => {
            let path = path.to_string_lossy();
            // A file really named `off` or `stderr` must not read back as
            // the keyword.
            if path == "off" || path == "stderr" {
                format!("./{path}")
            } else {
                path.into_owned()
            }
        }
    }
}

/// One of the `log` crate's level names, in any case.
pub(super) fn parse_log_level(s: &str) -> Result<LevelFilter, String> {
    s.trim()
        .parse()
        .map_err(|_| "expected off, error, warn, info, debug or trace".to_string())
}

/// Prints what [`parse_log_level`] reads.
pub(super) fn format_log_level(level: &LevelFilter) -> String {
    level.as_str().to_ascii_lowercase()
}

/// A compute-lane priority: `normal`, `low` or `idle`.
pub(super) fn parse_priority(s: &str) -> Result<Priority, String> {
    s.parse()
}

/// Prints what [`parse_priority`] reads.
pub(super) fn format_priority(p: &Priority) -> String {
    p.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;
    const SECS: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn durations_valid() {
        let cases: &[(&str, Duration)] = &[
            ("500ms", MS(500)),
            ("10s", SECS(10)),
            ("2m", SECS(120)),
            ("1h", SECS(3600)),
            ("1.5s", MS(1500)),
            ("0.25", MS(250)),
            ("30", SECS(30)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            (" 10s ", SECS(10)),
            ("10 s", SECS(10)),
            ("1.5ms", Duration::from_micros(1500)),
            ("0.000000001s", Duration::from_nanos(1)),
            ("0.5m", SECS(30)),
            ("007s", SECS(7)),
            ("18446744073709551615s", Duration::from_secs(u64::MAX)),
            ("18446744073709551615.999999999", Duration::MAX),
        ];
        for (input, want) in cases {
            assert_eq!(parse_duration(input), Ok(*want), "input {input:?}");
        }
    }

    #[test]
    fn durations_invalid() {
        let cases = [
            "",
            "   ",
            "-1s",
            "-0",
            "5x",
            "10S",
            "1d",
            "s",
            "ms",
            ".5s",
            "1.s",
            "1..5s",
            "1.2.3s",
            "1.0000000001s",
            "0.0000000001s",
            "0.0000001ms",
            "1e3",
            "+5s",
            "5 m s",
            "18446744073709551616s",
            "5124095576030432h",
            "99999999999999999999999999999999999999999h",
        ];
        for input in cases {
            assert!(
                parse_duration(input).is_err(),
                "input {input:?} should fail"
            );
        }
        assert!(parse_duration("5x").unwrap_err().contains("\"x\""));
    }

    #[test]
    fn durations_print_back_exactly() {
        let cases = [
            (MS(5), "5ms"),
            (SECS(10), "10s"),
            (SECS(90), "90s"),
            (SECS(120), "2m"),
            (SECS(7200), "2h"),
            (Duration::ZERO, "0s"),
            (MS(1500), "1500ms"),
            (Duration::from_micros(1500), "0.0015s"),
            (Duration::from_nanos(1), "0.000000001s"),
            (Duration::MAX, "18446744073709551615.999999999s"),
        ];
        for (d, want) in cases {
            assert_eq!(format_duration(&d), want);
            assert_eq!(parse_duration(want), Ok(d), "round trip of {want}");
        }
    }

    #[test]
    fn sizes_valid() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("512", 512),
            ("10B", 10),
            ("16KiB", 16 * 1024),
            ("1MiB", 1 << 20),
            ("1GiB", 1 << 30),
            ("1KB", 1000),
            ("2MB", 2_000_000),
            ("1GB", 1_000_000_000),
            (" 4 KiB ", 4096),
            ("18446744073709551615", u64::MAX),
            ("17179869183GiB", 17_179_869_183 << 30),
        ];
        for (input, want) in cases {
            assert_eq!(parse_size(input), Ok(*want), "input {input:?}");
        }
    }

    #[test]
    fn sizes_invalid() {
        let cases = [
            "",
            "-1",
            "1.5MiB",
            "16kib",
            "16K",
            "16k",
            "1TiB",
            "KiB",
            "+5",
            "0x10",
            "18446744073709551616",
            "17179869184GiB",
            "5 5",
        ];
        for input in cases {
            assert!(parse_size(input).is_err(), "input {input:?} should fail");
        }
        assert!(parse_size("1.5MiB").unwrap_err().contains("1536KiB"));
    }

    #[test]
    fn sizes_print_back_exactly() {
        for (bytes, want) in [
            (0, "0"),
            (512, "512"),
            (16 * 1024, "16KiB"),
            (1 << 20, "1MiB"),
            (3 << 30, "3GiB"),
            (1000, "1000"),
            (1536 * 1024, "1536KiB"),
        ] {
            assert_eq!(format_size(&bytes), want);
            assert_eq!(parse_size(want), Ok(bytes as u64));
        }
    }
}
