//! Wall-clock times as stored in container records (milliseconds since the epoch) and
//! as shown (RFC 3339, UTC).

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// `2026-11-23T21:00:00.123456789Z` from nanoseconds since the epoch.
pub fn rfc3339_ns(ns: u128) -> String {
    let secs = u64::try_from(ns / 1_000_000_000).unwrap_or(u64::MAX);
    let frac = ns % 1_000_000_000;
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{frac:09}Z")
}

pub fn rfc3339_ms(ms: u64) -> String {
    rfc3339_ns(u128::from(ms) * 1_000_000)
}

/// (year, month, day, hour, minute, second) of a Unix time (Howard Hinnant's algorithm).
fn civil(secs: u64) -> (i64, u64, u64, u64, u64, u64) {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let to_u = |v: i64| u64::try_from(v).unwrap_or(0);
    (y, to_u(m), to_u(d), rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc() {
        assert_eq!(
            rfc3339_ms(1_700_000_000_000),
            "2023-11-14T22:13:20.000000000Z"
        );
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_ms(951_782_400_500),
            "2000-02-29T00:00:00.500000000Z"
        );
    }
}
