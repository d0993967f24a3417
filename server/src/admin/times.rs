//! Times in the admin API: the one parser every time parameter and body field goes through
//! (`at`, `from_at`, `to_at`, a restore's `at`), and the one format every answer uses.
//!
//! Accepted: RFC 3339 date-times with any UTC offset (`2026-11-25T18:49:10.123Z`,
//! `2026-11-25T20:49:10+02:00`, `...-05:30`, lowercase `t`/`z` or a space for `T`, any number
//! of fractional digits, nanoseconds kept), or unix milliseconds (`1764096550123`). Times
//! outside the years 0001 to 9999 are refused, so no database driver's range is ever
//! exceeded.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from the epoch to 0001-01-01T00:00:00Z.
const MIN_SECS: i64 = -62_135_596_800;
/// Seconds from the epoch to 9999-12-31T23:59:59Z (a time may add its fraction).
const MAX_SECS: i64 = 253_402_300_799;

/// Why a time was refused; the text is the 400's reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(super) enum TimeError {
    /// Neither RFC 3339 nor unix milliseconds.
    #[error(
        "invalid time {0:?} ({1}); use RFC 3339 (2026-11-25T18:49:10.123Z, or with an offset \
         such as +02:00) or unix milliseconds"
    )]
    Invalid(String, &'static str),
    /// Well formed, but before the year 1 or after the year 9999.
    #[error("time {0:?} is out of range (years 0001 to 9999)")]
    OutOfRange(String),
}

/// RFC 3339 UTC with milliseconds, the API's time format.
pub(super) fn format(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// An API time (see the module docs).
pub(super) fn parse(s: &str) -> Result<SystemTime, TimeError> {
    let invalid = |why| TimeError::Invalid(s.to_owned(), why);
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let ms: u64 = s.parse().map_err(|_| TimeError::OutOfRange(s.to_owned()))?;
        let secs = i64::try_from(ms / 1000).map_err(|_| TimeError::OutOfRange(s.to_owned()))?;
        if secs > MAX_SECS {
            return Err(TimeError::OutOfRange(s.to_owned()));
        }
        return Ok(UNIX_EPOCH + Duration::from_millis(ms));
    }
    let (secs, nanos) = parse_rfc3339(s).map_err(invalid)?;
    if !(MIN_SECS..=MAX_SECS).contains(&secs) {
        return Err(TimeError::OutOfRange(s.to_owned()));
    }
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(secs.unsigned_abs(), nanos))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))
            .and_then(|t| t.checked_add(Duration::from_nanos(u64::from(nanos))))
    };
    t.ok_or_else(|| TimeError::OutOfRange(s.to_owned()))
}

/// A fixed-width run of ASCII digits.
fn digits(s: &[u8], what: &'static str) -> Result<i64, &'static str> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return Err(what);
    }
    Ok(s.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` → seconds since the epoch (UTC) and nanoseconds.
fn parse_rfc3339(s: &str) -> Result<(i64, u32), &'static str> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return Err("too short for RFC 3339");
    }
    let sep = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(sep(4, b'-') && sep(7, b'-') && sep(13, b':') && sep(16, b':')) {
        return Err("expected YYYY-MM-DDTHH:MM:SS");
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return Err("expected T between date and time");
    }
    let year = digits(&b[0..4], "bad year")?;
    let month = digits(&b[5..7], "bad month")?;
    let day = digits(&b[8..10], "bad day")?;
    let hour = digits(&b[11..13], "bad hour")?;
    let minute = digits(&b[14..16], "bad minute")?;
    let second = digits(&b[17..19], "bad second")?;
    if !(1..=12).contains(&month) {
        return Err("month out of range");
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err("day out of range");
    }
    // 60: a leap second, counted as the first second of the next minute.
    if hour > 23 || minute > 59 || second > 60 {
        return Err("time of day out of range");
    }
    let mut rest = &b[19..];
    let mut nanos: u32 = 0;
    if let Some(frac) = rest.strip_prefix(b".") {
        let len = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 {
            return Err("no digits after the decimal point");
        }
        // Beyond nanoseconds, digits are dropped (truncation, never rounding up).
        for (i, d) in frac[..len].iter().enumerate().take(9) {
            nanos += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
        }
        rest = &frac[len..];
    }
    let offset = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = digits(&[*h1, *h2], "bad offset hour")?;
            let m = digits(&[*m1, *m2], "bad offset minute")?;
            if h > 23 || m > 59 {
                return Err("offset out of range");
            }
            let minutes = h * 60 + m;
            if *sign == b'+' { minutes } else { -minutes }
        }
        [] => return Err("missing UTC offset (Z or +HH:MM)"),
        _ => return Err("bad UTC offset (Z or +HH:MM)"),
    };
    let days = days_from_civil(year, month, day);
    let local = days * 86_400 + hour * 3_600 + minute * 60 + second;
    Ok((local - offset * 60, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i128 {
        let t = parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_millis() as i128,
            Err(e) => -(e.duration().as_millis() as i128),
        }
    }

    #[test]
    fn rfc3339_with_offsets() {
        let utc = ms("2026-11-25T18:49:10.123Z");
        assert_eq!(utc, 1_795_632_550_123);
        assert_eq!(ms("2026-11-25T20:49:10.123+02:00"), utc);
        assert_eq!(ms("2026-11-25T13:19:10.123-05:30"), utc);
        assert_eq!(ms("2026-11-25t18:49:10.123z"), utc);
        assert_eq!(ms("2026-11-25 18:49:10.123+00:00"), utc);
        assert_eq!(ms("2026-11-25T18:49:10.123-00:00"), utc);
        assert_eq!(ms("2026-11-25T18:49:10Z"), utc - 123);
        assert_eq!(ms("2026-11-25T18:49:10.1234567891Z"), utc);
        // Crossing midnight and a year with the offset.
        assert_eq!(ms("2027-01-01T01:00:00+02:00"), ms("2026-12-31T23:00:00Z"));
        assert_eq!(ms("2024-02-29T00:00:00Z"), 1_709_164_800_000);
        assert_eq!(ms("1970-01-01T00:00:00Z"), 0);
        assert_eq!(ms("1969-12-31T23:59:59.5Z"), -500);
        assert_eq!(ms("2016-12-31T23:59:60Z"), ms("2017-01-01T00:00:00Z"));
        assert_eq!(ms("1795632550123"), utc);
        assert_eq!(
            format(parse("2026-11-25T20:49:10.123+02:00").expect("t")),
            "2026-11-25T18:49:10.123Z"
        );
    }

    #[test]
    fn refusals() {
        for bad in [
            "",
            "yesterday",
            "2026-11-25",
            "2026-11-25T18:49:10",
            "2026-11-25T18:49:10.Z",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-25T24:00:00Z",
            "2026-11-25T18:49:10+2:00",
            "2026-11-25T18:49:10+02",
            "2026-11-25T18:49:10+24:00",
            "2026-11-25T18:49:10 Z",
            "-1",
            "+5",
            "2026-11-25T18:49:10.123Zjunk",
        ] {
            assert!(matches!(parse(bad), Err(TimeError::Invalid(..))), "{bad:?}");
        }
        for far in [
            "99999999999999999999",
            "18446744073709551615",
            "253402300800000",
            "9999-12-31T23:59:59-01:00",
            "0000-12-31T23:59:59Z",
        ] {
            assert!(
                matches!(parse(far), Err(TimeError::OutOfRange(_))),
                "{far:?}"
            );
        }
        assert!(parse("9999-12-31T23:59:59.999Z").is_ok());
        assert!(parse("253402300799999").is_ok());
        assert!(parse("0001-01-01T00:00:00Z").is_ok());
    }
}
