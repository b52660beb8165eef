//! Times as people and the API write them: RFC 3339 in (`Z` or a `±HH:MM` offset), RFC
//! 3339 UTC out. One parser and one printer for the HTTP API and the CLI; the store keeps
//! Unix milliseconds (`store::now_ms`).

use std::time::{Duration, UNIX_EPOCH};

/// 9999-12-31T23:59:59.999Z, the last instant RFC 3339 can print: the latest time dialgate
/// accepts or stores (a temporary password's validity ends by then).
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// Text that is not an RFC 3339 time within 1970..=9999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 time like 2026-12-01T08:00:00Z")]
pub struct BadTime;

/// Unix ms of an RFC 3339 time (`2026-12-01T08:00:00Z`, fractions allowed, `Z` or a
/// `+08:00`-style offset).
pub fn parse_rfc3339(text: &str) -> Result<i64, BadTime> {
    let text = text.trim();
    // A trailing offset `+HH:MM` / `-HH:MM` (humantime only knows `Z`). Split only on a
    // char boundary (`a€€x` is 8 bytes).
    let split = text
        .len()
        .checked_sub(6)
        .filter(|&i| text.is_char_boundary(i))
        .map(|i| text.split_at(i));
    let (local, offset_secs) = match split {
        Some((local, off))
            if matches!(off.as_bytes()[0], b'+' | b'-')
                && off.as_bytes()[3] == b':'
                && off[1..3]
                    .bytes()
                    .chain(off[4..6].bytes())
                    .all(|b| b.is_ascii_digit()) =>
        {
            let hours: i64 = off[1..3].parse().map_err(|_| BadTime)?;
            let minutes: i64 = off[4..6].parse().map_err(|_| BadTime)?;
            if hours > 23 || minutes > 59 {
                return Err(BadTime);
            }
            let secs = hours * 3600 + minutes * 60;
            (local, if off.starts_with('-') { -secs } else { secs })
        }
        _ => {
            let local = text
                .strip_suffix('Z')
                .or_else(|| text.strip_suffix('z'))
                .ok_or(BadTime)?;
            (local, 0)
        }
    };
    if !local.contains('T') && !local.contains('t') {
        return Err(BadTime);
    }
    let t = humantime::parse_rfc3339_weak(local).map_err(|_| BadTime)?;
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| BadTime)?
        .as_millis() as i64;
    // `9999-12-31T23:00:00-23:00` is in year 10000, which RFC 3339 cannot print.
    Some(ms - offset_secs * 1000)
        .filter(|&ms| (0..=MAX_TIME_MS).contains(&ms))
        .ok_or(BadTime)
}

/// RFC 3339 (UTC, seconds) of Unix ms. Any stored value prints: it is clamped to
/// 1970..=9999, where humantime would panic past the end.
pub fn format_rfc3339(ms: i64) -> String {
    let ms = ms.clamp(0, MAX_TIME_MS) as u64;
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// `start` plus `length`, if that is still a time dialgate can store.
pub fn checked_end(start: i64, length: Duration) -> Option<i64> {
    i64::try_from(length.as_millis())
        .ok()
        .and_then(|ms| start.checked_add(ms))
        .filter(|&end| end <= MAX_TIME_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_z_fractions_and_offsets() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01Z"), Ok(1000));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01.5Z"), Ok(1500));
        assert_eq!(parse_rfc3339("1970-01-01T08:00:00+08:00"), Ok(0));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00-01:30"), Ok(5_400_000));
        for bad in [
            "",
            "tomorrow",
            "2026-12-01",
            "2026-12-01T08:00:00",
            "2026-12-01T08:00:00+24:00",
            "1970-01-01T00:00:00+8",
            // Found by fuzz/http_json: a split inside `€` panicked.
            "a€€x",
            "€€€€€€€",
            "1970-01-01T00:00:00€00",
            // Offsets are digits only (`+5` parsed as an hour).
            "1970-01-01T00:00:00++5:00",
            "1970-01-01T00:00:00+01:-1",
            // Year 10000 (fuzz/http_json: printing it panicked).
            "9999-12-31T23:00:00-23:00",
        ] {
            assert_eq!(parse_rfc3339(bad), Err(BadTime), "{bad:?} accepted");
        }
    }

    #[test]
    fn prints_every_value_without_panicking() {
        let last = parse_rfc3339("9999-12-31T23:59:59Z").unwrap();
        assert_eq!(format_rfc3339(last), "9999-12-31T23:59:59Z");
        assert_eq!(format_rfc3339(MAX_TIME_MS), "9999-12-31T23:59:59Z");
        assert_eq!(format_rfc3339(i64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(format_rfc3339(-5), "1970-01-01T00:00:00Z");
        assert_eq!(checked_end(0, Duration::from_secs(1)), Some(1000));
        assert_eq!(checked_end(MAX_TIME_MS, Duration::from_millis(1)), None);
        assert_eq!(checked_end(0, Duration::MAX), None);
    }
}
