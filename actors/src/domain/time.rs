use super::ValidationError;
use chrono::{DateTime, SecondsFormat, Timelike, Utc};

/// Drops precision below a microsecond, which PostgreSQL would drop anyway; keeping it in
/// memory would make a cached timestamp differ from the stored one.
pub fn truncate_to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = t.nanosecond();
    t.with_nanosecond(nanos - nanos % 1_000).unwrap_or(t)
}

/// The documented surface's spelling: microseconds and `Z`, e.g. `2026-01-01T12:00:00.123456Z`.
pub fn format_utc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The posthog-js surface's spelling, `…123456+00:00`, which the SDK sends back verbatim.
pub fn format_offset(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, false)
}

/// Parses an `after` cursor in RFC 3339 with any offset. A `+` decoded to a space by a
/// form-style query decoder is put back, since `…+00:00` arrives that way from plain URLs.
pub fn parse_timestamp(raw: &str, field: &str) -> Result<DateTime<Utc>, ValidationError> {
    let parse = |s: &str| DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc));
    parse(raw)
        .or_else(|_| parse(&raw.replace(' ', "+")))
        .map_err(|_| {
            ValidationError::new(
                field,
                "must be an ISO 8601 timestamp such as 2026-01-01T12:00:00.123456Z",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_microseconds_in_both_spellings() {
        let t = parse_timestamp("2026-01-01T12:00:00.123456Z", "after").unwrap();
        assert_eq!(format_utc(t), "2026-01-01T12:00:00.123456Z");
        assert_eq!(format_offset(t), "2026-01-01T12:00:00.123456+00:00");
    }

    #[test]
    fn round_trips_the_offset_spelling_even_when_plus_became_space() {
        let t = parse_timestamp("2026-01-01T12:00:00.123456Z", "after").unwrap();
        assert_eq!(parse_timestamp(&format_offset(t), "after").unwrap(), t);
        assert_eq!(
            parse_timestamp("2026-01-01T12:00:00.123456 00:00", "after").unwrap(),
            t
        );
        assert_eq!(
            parse_timestamp("2026-01-01T14:00:00.123456+02:00", "after").unwrap(),
            t
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "1e308",
            "2026-01-01",
        ] {
            assert_eq!(parse_timestamp(bad, "after").unwrap_err().field, "after");
        }
    }

    #[test]
    fn truncation_keeps_microseconds() {
        let t = parse_timestamp("2026-01-01T12:00:00.123456789Z", "after").unwrap();
        assert_eq!(
            format_utc(truncate_to_micros(t)),
            "2026-01-01T12:00:00.123456Z"
        );
    }
}
