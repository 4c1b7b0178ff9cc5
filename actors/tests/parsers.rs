//! Property tests of the parsers that read client input: `DistinctId`, `MessageContent`,
//! `Traits`, `ClientMessageId` and `parse_timestamp` (the `after` cursor), with the two
//! timestamp spellings it must round-trip.
//!
//! These stand in for `cargo fuzz` (which needs a nightly toolchain and cargo-fuzz in CI):
//! arbitrary and near-valid inputs, checking that nothing panics and that every accepted
//! value satisfies the type's invariants. Failing cases are kept by proptest in
//! `actors/tests/parsers.proptest-regressions` (commit it) and replayed first on every run.
//! `PROPTEST_CASES=100000 cargo test -p colloquy-actors --test parsers` runs longer by hand.

use chrono::Datelike;
use chrono::{DateTime, TimeZone, Utc};
use colloquy_actors::domain::{
    format_offset, format_utc, parse_timestamp, truncate_to_micros, ClientMessageId, DistinctId,
    MessageContent, Traits,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{Map, Number, Value};

/// Strings that reach the interesting cases: any Unicode, whitespace and control
/// characters, lengths around the limits.
fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::collection::vec(any::<char>(), 0..max).prop_map(|v| v.into_iter().collect()),
        3 => proptest::string::string_regex(&format!("[ \\t\\n\\r\\x00-\\x1f\\x7f\\u{{85}}\\u{{a0}}\\u{{2028}}a-zA-Z0-9@._é-]{{0,{max}}}")).unwrap(),
        1 => Just(String::new()),
    ]
}

/// A string of about `len` characters (len − 2 ..= len + 2) of one or two repeated chars,
/// padded with whitespace: the length limits' edges.
fn near_length(len: usize) -> impl Strategy<Value = String> {
    (
        len.saturating_sub(2)..=len + 2,
        prop_oneof![Just('a'), Just('é'), Just('😀')],
        prop_oneof![Just(""), Just(" "), Just("\n\t "), Just("\u{0}")],
        any::<bool>(),
    )
        .prop_map(|(n, c, pad, alternate)| {
            let body: String = (0..n)
                .map(|i| if alternate && i % 2 == 1 { 'b' } else { c })
                .collect();
            format!("{pad}{body}{pad}")
        })
}

/// A JSON scalar, with strings around the traits' 500-character limit.
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        3 => text(20).prop_map(Value::String),
        1 => near_length(500).prop_map(Value::String),
    ]
}

/// Any JSON value, nested a few levels, with strings around the traits' 500-character limit.
fn json_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(text(8), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Objects that look like traits: many keys (around the limit of 50), keys around 200
/// characters, mostly scalar values.
fn traits_like() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        4 => proptest::string::string_regex("[a-z_]{1,12}").unwrap(),
        1 => Just(String::new()),
        1 => near_length(200),
    ];
    let value = prop_oneof![
        12 => scalar(),
        1 => json_value(),
    ];
    proptest::collection::btree_map(key, value, 0..=53)
        .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>()))
}

fn is_valid_trait_value(v: &Value) -> bool {
    match v {
        Value::String(s) => s.chars().count() <= 500,
        Value::Null | Value::Bool(_) | Value::Number(_) => true,
        Value::Array(_) | Value::Object(_) => false,
    }
}

/// Timestamps from year 1 to 9999 (what RFC 3339 can spell), at microsecond precision.
fn timestamp() -> impl Strategy<Value = DateTime<Utc>> {
    (-62_135_596_800i64..=253_402_300_799, 0u32..1_000_000)
        .prop_map(|(secs, micros)| Utc.timestamp_opt(secs, micros * 1_000).unwrap())
}

/// Almost-RFC 3339 text: every component drawn from a little beyond its valid range,
/// optional fraction of 0–12 digits, offsets `Z`, `z`, `±hh:mm`, or `+` decoded to a space.
fn near_timestamp() -> impl Strategy<Value = (String, bool)> {
    (
        (0u32..=10_000, 0u32..=13, 0u32..=32),
        (0u32..=25, 0u32..=61, 0u32..=61),
        proptest::option::of("[0-9]{0,12}"),
        prop_oneof![
            Just("Z".to_owned()),
            Just("z".to_owned()),
            Just(String::new()),
            (
                prop_oneof![Just('+'), Just('-'), Just(' ')],
                0u32..=25,
                0u32..=61
            )
                .prop_map(|(s, h, m)| format!("{s}{h:02}:{m:02}")),
        ],
        prop_oneof![Just('T'), Just('t'), Just(' '), Just('_')],
    )
        .prop_map(|((y, mo, d), (h, mi, s), frac, off, sep)| {
            let frac_s = frac.as_deref().map_or(String::new(), |f| format!(".{f}"));
            let text = format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{frac_s}{off}");
            let days_in_month = match mo {
                1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
                4 | 6 | 9 | 11 => 30,
                2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
                2 => 28,
                _ => 0,
            };
            let offset_ok = match off.as_bytes().first() {
                Some(b'Z' | b'z') => true,
                Some(b'+' | b'-' | b' ') => {
                    let h: u32 = off[1..3].parse().unwrap();
                    let m: u32 = off[4..6].parse().unwrap();
                    h <= 23 && m <= 59
                }
                _ => false,
            };
            // Certainly valid: every component in range, and a year that stays within
            // 0001..=9999 whatever the offset.
            let valid = (2..=9998).contains(&y)
                && (1..=days_in_month).contains(&d)
                && h <= 23
                && mi <= 59
                && s <= 59
                && frac.as_deref().is_none_or(|f| !f.is_empty())
                && offset_ok
                && sep != '_'
                // Known quirk: a space for `+` is put back only when it is the sole space;
                // with a space as the date-time separator too, the text is refused (400).
                && !(sep == ' ' && off.starts_with(' '));
            (text, valid)
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn distinct_id_accepts_only_what_it_promises(raw in prop_oneof![text(40), near_length(200)]) {
        match DistinctId::parse(&raw) {
            Ok(id) => {
                let s = id.as_str();
                prop_assert_eq!(s, raw.trim());
                let n = s.chars().count();
                prop_assert!((1..=200).contains(&n), "{} characters", n);
                prop_assert!(!s.chars().any(|c| c.is_whitespace() || c.is_control()));
                let first = s.chars().next().unwrap();
                prop_assert!(s.chars().any(|c| c != first), "single repeated char {:?}", s);
                prop_assert!(!["test", "null", "undefined", "anonymous"].contains(&s.to_lowercase().as_str()));
                // Parsing is idempotent: what we store parses to itself.
                prop_assert_eq!(DistinctId::parse(s).unwrap(), id.clone());
            }
            Err(e) => prop_assert_eq!(e.field, "distinct_id"),
        }
    }

    #[test]
    fn message_content_is_cleaned_trimmed_and_bounded(
        raw in prop_oneof![text(200), near_length(10_000)],
        field in prop_oneof![Just("message"), Just("content")],
    ) {
        let cleaned: String = raw.chars().filter(|&c| c == '\n' || c == '\t' || !c.is_control()).collect();
        let expected = cleaned.trim();
        match MessageContent::parse(&raw, field) {
            Ok(m) => {
                let s = m.as_str();
                prop_assert_eq!(s, expected);
                prop_assert!((1..=10_000).contains(&s.chars().count()));
                prop_assert!(!s.chars().any(|c| c.is_control() && c != '\n' && c != '\t'));
                prop_assert_eq!(s.trim(), s);
                prop_assert_eq!(MessageContent::parse(s, field).unwrap(), m.clone());
            }
            Err(e) => {
                prop_assert_eq!(e.field.as_str(), field);
                let n = expected.chars().count();
                prop_assert!(n == 0 || n > 10_000, "refused {} characters", n);
            }
        }
    }

    #[test]
    fn client_message_id_bounds(raw in prop_oneof![text(40), near_length(200)]) {
        let n = raw.chars().count();
        let ok = (1..=200).contains(&n) && !raw.chars().any(char::is_control);
        match ClientMessageId::parse(&raw) {
            Ok(c) => { prop_assert!(ok); prop_assert_eq!(c.as_str(), raw.as_str()); }
            Err(e) => { prop_assert!(!ok); prop_assert_eq!(e.field, "client_message_id"); }
        }
    }

    #[test]
    fn traits_accept_exactly_flat_bounded_objects(v in prop_oneof![json_value(), traits_like()]) {
        let valid = match &v {
            // PostgreSQL text cannot hold NUL, so neither may a trait name or value.
            Value::Object(m) => m.len() <= 50
                && m.iter().all(|(k, val)| {
                    (1..=200).contains(&k.chars().count())
                        && !k.contains('\0')
                        && is_valid_trait_value(val)
                        && !matches!(val, Value::String(s) if s.contains('\0'))
                }),
            _ => false,
        };
        match Traits::parse(&v) {
            Ok(t) => {
                prop_assert!(valid, "accepted {}", v);
                prop_assert_eq!(t.to_json(), v.clone());
                prop_assert_eq!(t.is_empty(), v.as_object().unwrap().is_empty());
                // Merging into itself changes nothing; merging into empty gives itself.
                let mut same = t.clone();
                same.merge(&t);
                prop_assert_eq!(&same, &t);
                let mut empty = Traits::default();
                empty.merge(&t);
                prop_assert_eq!(&empty, &t);
            }
            Err(e) => {
                prop_assert!(!valid, "refused {}", v);
                prop_assert_eq!(e.field, "traits");
            }
        }
    }

    #[test]
    fn timestamps_never_panic_on_garbage(raw in text(40)) {
        if let Ok(t) = parse_timestamp(&raw, "after") {
            // Whatever was accepted has a spelling that parses back to it (RFC 3339 spells
            // years 1–9999 only; an offset can move year 0 or 9999 out of that range).
            if (1..=9999).contains(&t.year()) {
                prop_assert_eq!(parse_timestamp(&format_offset(t), "after").unwrap(), truncate_to_micros(t));
            }
        }
    }

    #[test]
    fn near_valid_timestamps_parse_when_valid((raw, valid) in near_timestamp()) {
        match parse_timestamp(&raw, "after") {
            Ok(t) if (1..=9999).contains(&t.year()) => {
                // The spellings carry microseconds; finer digits are dropped.
                prop_assert_eq!(parse_timestamp(&format_utc(t), "after").unwrap(), truncate_to_micros(t));
            }
            Ok(_) => prop_assert!(!valid, "{:?} moved out of years 1-9999", raw),
            Err(e) => {
                prop_assert!(!valid, "refused the valid {:?}", raw);
                prop_assert_eq!(e.field, "after");
            }
        }
    }

    #[test]
    fn both_spellings_round_trip_exactly(t in timestamp()) {
        let utc = format_utc(t);
        let offset = format_offset(t);
        prop_assert!(utc.ends_with('Z'), "{}", utc);
        prop_assert!(offset.ends_with("+00:00"), "{}", offset);
        // Microseconds, always six digits: the SDK compares the text it sends back.
        let frac = utc.rsplit_once('.').unwrap().1.trim_end_matches('Z');
        prop_assert_eq!(frac.len(), 6);
        prop_assert_eq!(parse_timestamp(&utc, "after").unwrap(), t);
        prop_assert_eq!(parse_timestamp(&offset, "after").unwrap(), t);
        // `+` decoded to a space by a form-style query decoder is put back.
        prop_assert_eq!(parse_timestamp(&offset.replace('+', " "), "after").unwrap(), t);
        // Re-formatting what was parsed gives the same text.
        prop_assert_eq!(format_offset(parse_timestamp(&offset, "after").unwrap()), offset);
    }
}
