//! Civil dates from Unix time, for the `Date` header (IMF-fixdate, RFC 9110
//! §5.6.7) and the access log. No time-zone database: both are in UTC.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// A broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// Full year, e.g. 2026.
    pub year: i64,
    /// 1 to 12.
    pub month: u32,
    /// 1 to 31.
    pub day: u32,
    /// 0 to 23.
    pub hour: u32,
    /// 0 to 59.
    pub minute: u32,
    /// 0 to 59.
    pub second: u32,
    /// 0 = Sunday.
    pub weekday: u32,
}

const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
/// Month abbreviations shared by IMF-fixdate and the Common Log Format.
pub const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

impl Civil {
    /// Converts seconds since the Unix epoch, using Howard Hinnant's
    /// days-from-civil inverse (exact for the proleptic Gregorian calendar).
    pub fn from_unix(secs: i64) -> Civil {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Civil {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem / 60 % 60) as u32,
            second: (rem % 60) as u32,
            weekday: (days + 4).rem_euclid(7) as u32,
        }
    }

    /// `Sun, 06 Nov 1994 08:49:37 GMT`.
    pub fn imf_fixdate(&self) -> String {
        format!(
            "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
            DAYS[self.weekday as usize],
            self.day,
            MONTHS[self.month as usize - 1],
            self.year,
            self.hour,
            self.minute,
            self.second
        )
    }
}

/// Seconds since the Unix epoch now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

thread_local! {
    static DATE: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
}

/// Calls `f` with the current IMF-fixdate. Each thread formats it at most
/// once a second, so the hot path takes no lock and does no formatting.
pub fn with_http_date<R>(f: impl FnOnce(&str) -> R) -> R {
    let now = unix_now();
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != now {
            *cached = (now, Civil::from_unix(now).imf_fixdate());
        }
        f(&cached.1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_example_date() {
        // The example in RFC 9110 §5.6.7.
        assert_eq!(
            Civil::from_unix(784_111_777).imf_fixdate(),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
    }

    #[test]
    fn leap_days_and_epoch() {
        assert_eq!(
            Civil::from_unix(0).imf_fixdate(),
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
        assert_eq!(
            Civil::from_unix(951_782_400).imf_fixdate(),
            "Tue, 29 Feb 2000 00:00:00 GMT"
        );
        assert_eq!(
            Civil::from_unix(4_102_444_799).imf_fixdate(),
            "Thu, 31 Dec 2099 23:59:59 GMT"
        );
    }

    #[test]
    fn cached_date_has_fixed_width() {
        assert_eq!(with_http_date(|d| d.len()), 29);
    }
}
