//! Visitor traits: what a widget may send, and how a ticket's traits grow across follow-ups
//! without growing its row without bound (docs/security.md).
//!
//! Over 500 lines only because of its unit and property tests (about 220 lines of code),
//! which check the merge and the byte count against PostgreSQL's own.

use super::ValidationError;
use serde_json::{Map, Value};
use std::fmt::Write as _;

/// Most keys a ticket's merged traits may hold.
pub const MAX_MERGED_KEYS: usize = 50;
/// Most bytes a ticket's merged traits may take as PostgreSQL prints them
/// (`octet_length(traits::text)`, see [`Traits::stored_len`]).
pub const MAX_MERGED_BYTES: usize = 16 * 1024;

/// Visitor attributes sent by the widget (name, email, plan…): a flat object of scalars.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Traits(Map<String, Value>);

impl Traits {
    /// Accepts at most 50 keys of 1–200 characters whose values are strings (≤ 500 chars),
    /// numbers, booleans or null; anything nested is refused.
    pub fn parse(value: &Value) -> Result<Self, ValidationError> {
        const FIELD: &str = "traits";
        let Value::Object(map) = value else {
            return Err(ValidationError::new(FIELD, "traits must be an object"));
        };
        if map.len() > 50 {
            return Err(ValidationError::new(
                FIELD,
                "traits may have at most 50 keys",
            ));
        }
        for (key, v) in map {
            if key.contains('\0') || matches!(v, Value::String(s) if s.contains('\0')) {
                return Err(ValidationError::new(
                    FIELD,
                    "traits must not contain NUL characters",
                ));
            }
            let n = key.chars().count();
            if n == 0 || n > 200 {
                return Err(ValidationError::new(
                    FIELD,
                    "trait names must be 1 to 200 characters",
                ));
            }
            match v {
                Value::String(s) if s.chars().count() > 500 => {
                    return Err(ValidationError::new(
                        FIELD,
                        format!("trait {key:?} is longer than 500 characters"),
                    ))
                }
                Value::Array(_) | Value::Object(_) => {
                    return Err(ValidationError::new(
                        FIELD,
                        format!("trait {key:?} must be a string, number, boolean or null"),
                    ))
                }
                _ => {}
            }
        }
        Ok(Self(map.clone()))
    }

    /// Whether there is nothing to merge.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Traits as the database holds them: it stores only what [`Traits::parse`] accepted (or
    /// merged within the caps), so they are taken as they are; anything but an object is none.
    pub fn from_stored(value: Value) -> Self {
        match value {
            Value::Object(map) => Self(map),
            _ => Self::default(),
        }
    }

    /// Merges `later` over `self` without caps: how the traits of one batch's messages add up
    /// before the whole is merged into the ticket's with [`Traits::merge_within_caps`].
    pub fn merge(&mut self, later: &Traits) {
        for (k, v) in &later.0 {
            self.0.insert(k.clone(), v.clone());
        }
    }

    /// The entries to set over `self`, a ticket's stored traits, to merge `later` without
    /// letting a visitor grow the row across follow-ups: all of `later` when the result stays
    /// within [`MAX_MERGED_KEYS`] and [`MAX_MERGED_BYTES`]; otherwise only the keys `self`
    /// already has, when that result stays within the bytes; otherwise nothing. Entries that
    /// would not change are left out, and `None` means nothing changes. (The rule of the SQL
    /// function `colloquy_merge_traits`, which the API tests hold this against.)
    pub fn merge_within_caps(&self, later: &Traits) -> Option<Traits> {
        let (keys, bytes) = self.merged_size(later, |_| true);
        let all = keys <= MAX_MERGED_KEYS && bytes <= MAX_MERGED_BYTES;
        if !all && self.merged_size(later, |k| self.0.contains_key(k)).1 > MAX_MERGED_BYTES {
            return None;
        }
        let patch: Map<String, Value> = later
            .0
            .iter()
            .filter(|(k, v)| match self.0.get(*k) {
                Some(stored) => stored != *v,
                None => all,
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (!patch.is_empty()).then_some(Self(patch))
    }

    /// Keys and printed bytes of `self` with the entries of `later` whose key `take` accepts
    /// set over it, computed without building the merged object.
    fn merged_size(&self, later: &Traits, take: impl Fn(&str) -> bool) -> (usize, usize) {
        let mut keys = 0;
        let mut bytes = 0;
        for (k, v) in &self.0 {
            let v = match later.0.get(k) {
                Some(new) if take(k) => new,
                _ => v,
            };
            keys += 1;
            bytes += entry_len(k, v);
        }
        for (k, v) in &later.0 {
            if !self.0.contains_key(k) && take(k) {
                keys += 1;
                bytes += entry_len(k, v);
            }
        }
        (keys, object_len(keys, bytes))
    }

    /// The bytes PostgreSQL prints for these traits as `jsonb` (`octet_length(traits::text)`),
    /// which is what [`MAX_MERGED_BYTES`] counts: `{"k": v, …}` with its spaces, strings
    /// escaped as `jsonb` escapes them, numbers as `numeric` prints them.
    pub fn stored_len(&self) -> usize {
        let entries = self.0.iter().map(|(k, v)| entry_len(k, v)).sum();
        object_len(self.0.len(), entries)
    }

    /// The JSON object to store.
    pub fn to_json(&self) -> Value {
        Value::Object(self.0.clone())
    }

    /// A string trait such as `name`, for labelling the visitor's messages.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }
}

/// An object of `keys` entries taking `entries` bytes: braces and `", "` between entries.
fn object_len(keys: usize, entries: usize) -> usize {
    2 + entries + 2 * keys.saturating_sub(1)
}

/// `"key": value`.
fn entry_len(key: &str, value: &Value) -> usize {
    string_len(key) + 2 + printed_len(value)
}

/// A JSON value as `jsonb`'s text output spells it.
fn printed_len(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(true) => 4,
        Value::Bool(false) => 5,
        Value::Number(n) => {
            let mut spelled = String::new();
            let _ = write!(spelled, "{n}");
            numeric_len(&spelled)
        }
        Value::String(s) => string_len(s),
        Value::Array(items) => {
            2 + items.iter().map(printed_len).sum::<usize>() + 2 * items.len().saturating_sub(1)
        }
        Value::Object(map) => object_len(map.len(), map.iter().map(|(k, v)| entry_len(k, v)).sum()),
    }
}

/// A string in quotes, escaped as PostgreSQL's `escape_json` does: `\"`, `\\` and the
/// short escapes take two bytes, other control characters six (`\u001f`), the rest as UTF-8.
fn string_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | 0x08 | 0x0c | b'\n' | b'\r' | b'\t' => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// The length of the `numeric` PostgreSQL reads from a JSON number spelled `spelled` (as
/// serde_json writes it, which is what the store sends): no exponent, no leading zeros, as
/// many decimals as the spelling carried after its point minus its exponent, no sign on zero.
/// `1e300` prints as 301 digits, `1.5e-7` as `0.00000015`, `-0.0` as `0.0`.
fn numeric_len(spelled: &str) -> usize {
    let (negative, unsigned) = match spelled.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, spelled.strip_prefix('+').unwrap_or(spelled)),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().unwrap_or(0)),
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    // Where the point falls among the digits once the exponent is applied.
    let point = whole.len() as i64 + exponent;
    let scale = (fraction.len() as i64 - exponent).max(0);
    let first_nonzero = whole
        .bytes()
        .chain(fraction.bytes())
        .position(|d| d != b'0')
        .map(|i| i as i64);
    let integer_digits = match first_nonzero {
        Some(i) if i < point => point - i,
        _ => 1,
    };
    let sign = usize::from(negative && first_nonzero.is_some());
    sign + integer_digits as usize + if scale > 0 { 1 + scale as usize } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn accepts_flat_scalars() {
        let t = Traits::parse(&json!({"name": "John", "age": 3, "vip": true, "x": null})).unwrap();
        assert_eq!(t.get_str("name"), Some("John"));
    }

    #[test]
    fn refuses_nesting_non_objects_and_oversize() {
        assert!(Traits::parse(&json!({"a": {"b": 1}})).is_err());
        assert!(Traits::parse(&json!({"a": [1]})).is_err());
        assert!(Traits::parse(&json!([1])).is_err());
        assert!(Traits::parse(&json!("x")).is_err());
        assert!(Traits::parse(&json!({"": 1})).is_err());
        assert!(
            Traits::parse(&json!({"name": "a\u{0}b"})).is_err(),
            "PostgreSQL cannot store NUL"
        );
        assert!(Traits::parse(&json!({"a\u{0}": 1})).is_err());
        assert!(Traits::parse(&json!({"a": "x".repeat(501)})).is_err());
        let many: Map<String, Value> = (0..51).map(|i| (format!("k{i}"), json!(i))).collect();
        assert!(Traits::parse(&Value::Object(many)).is_err());
    }

    fn traits(v: Value) -> Traits {
        Traits::from_stored(v)
    }

    /// `traits || patch`, as the store writes a merge.
    fn applied(stored: &Traits, patch: Option<Traits>) -> Traits {
        let mut t = stored.clone();
        if let Some(p) = patch {
            t.merge(&p);
        }
        t
    }

    #[test]
    fn numbers_are_counted_as_postgres_prints_them() {
        // `length(('…')::jsonb::text)` on PostgreSQL 15.
        for (spelled, printed) in [
            ("1e300", 301),
            ("1e+300", 301),
            ("1.5e-7", 10),
            ("-0.0", 3),
            ("-0", 1),
            ("100.0", 5),
            ("12e2", 4),
            ("0.000", 5),
            ("-1e-2", 5),
            ("-5", 2),
            ("1.50", 4),
            ("123.456e1", 7),
            ("0.001e3", 1),
            ("1.7976931348623157e308", 309),
            ("5e-324", 326),
            ("0.1", 3),
            ("1e-7", 9),
            ("1E5", 6),
            ("18446744073709551615", 20),
        ] {
            assert_eq!(numeric_len(spelled), printed, "{spelled}");
        }
    }

    #[test]
    fn strings_and_objects_are_counted_as_postgres_prints_them() {
        // `octet_length(to_jsonb(s)::text)` and `octet_length(j::text)` on PostgreSQL 15.
        assert_eq!(string_len("a\"b\\c"), 9);
        assert_eq!(string_len("\u{8}\u{c}\n\r\t"), 12);
        assert_eq!(string_len("\u{1}\u{1f}\u{7f}"), 15);
        assert_eq!(string_len("é😀"), 8);
        assert_eq!(string_len(""), 2);
        assert_eq!(traits(json!({})).stored_len(), 2);
        let nested = json!({"a": null, "bb": [true, false, []], "c": {"d": {}}});
        assert_eq!(traits(nested).stored_len(), 52);
        assert_eq!(
            traits(json!({"name": "Ann", "n": 1})).stored_len(),
            r#"{"n": 1, "name": "Ann"}"#.len()
        );
    }

    #[test]
    fn a_merge_that_fits_takes_everything_that_changes() {
        let stored = traits(json!({"name": "Ann", "plan": "free"}));
        let later = traits(json!({"name": "Ann", "plan": "pro", "seats": 3}));
        assert_eq!(
            stored.merge_within_caps(&later),
            Some(traits(json!({"plan": "pro", "seats": 3}))),
            "the unchanged name is not rewritten"
        );
        assert_eq!(stored.merge_within_caps(&stored), None);
        assert_eq!(stored.merge_within_caps(&Traits::default()), None);
    }

    #[test]
    fn past_fifty_keys_only_known_keys_change() {
        let full: Map<String, Value> = (0..50).map(|i| (format!("k{i}"), json!(i))).collect();
        let stored = traits(Value::Object(full));
        let later = traits(json!({"k1": "changed", "new": 1}));
        assert_eq!(
            stored.merge_within_caps(&later),
            Some(traits(json!({"k1": "changed"})))
        );
        let with_49: Map<String, Value> = (0..49).map(|i| (format!("k{i}"), json!(i))).collect();
        assert_eq!(
            traits(Value::Object(with_49)).merge_within_caps(&later),
            Some(later),
            "the 50th key is still taken"
        );
    }

    #[test]
    fn the_byte_cap_counts_the_whole_printed_object() {
        // One key whose value makes the object exactly MAX_MERGED_BYTES: `{"a": "…"}`.
        let fill = |n: usize| json!("x".repeat(n));
        let exact = MAX_MERGED_BYTES - r#"{"a": ""}"#.len();
        let stored = traits(json!({"a": fill(1)}));
        let at_cap = traits(json!({"a": fill(exact)}));
        assert_eq!(applied(&stored, stored.merge_within_caps(&at_cap)), at_cap);
        let over = traits(json!({"a": fill(exact + 1)}));
        assert_eq!(
            stored.merge_within_caps(&over),
            None,
            "one byte over keeps what was stored"
        );
        // A new key that does not fit is dropped while a known key's change still is taken.
        let changed = traits(json!({"a": "y".repeat(exact), "b": 1}));
        assert_eq!(
            at_cap.merge_within_caps(&changed),
            Some(traits(json!({"a": "y".repeat(exact)})))
        );
    }

    #[test]
    fn stored_traits_past_the_cap_stay_as_they_are() {
        // Traits sent when a ticket is opened are capped per value, not in total.
        let wide: Map<String, Value> = (0..50)
            .map(|i| {
                (
                    format!("k{i:02}_{}", "x".repeat(190)),
                    json!("v".repeat(500)),
                )
            })
            .collect();
        let stored = traits(Value::Object(wide));
        assert!(stored.stored_len() > MAX_MERGED_BYTES);
        let change = traits(json!({"k00_x": 1}));
        assert_eq!(stored.merge_within_caps(&change), None);
        assert_eq!(stored.merge_within_caps(&stored), None);
    }

    #[test]
    fn later_traits_win_when_merged() {
        let mut t = Traits::parse(&json!({"name": "John", "plan": "free"})).unwrap();
        t.merge(&Traits::parse(&json!({"plan": "pro"})).unwrap());
        assert_eq!(t.to_json(), json!({"name": "John", "plan": "pro"}));
    }

    /// A trait value: short or long strings (some with characters `jsonb` escapes),
    /// integers, floats, booleans, null.
    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            "[a-z\"\\\\\n\\x{1}é]{0,8}".prop_map(Value::from),
            (0usize..700).prop_map(|n| Value::from("v".repeat(n))),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
                .prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            Just(Value::Null),
        ]
    }

    /// Traits over a small set of keys, so that merges overlap and reach the key cap.
    fn some_traits(most: usize) -> impl Strategy<Value = Traits> {
        traits_of(0..=most, value())
    }

    /// Traits mostly of strings of 300–450 characters: 38–48 of them print at about 13–17 KiB,
    /// so merging a few more lands on either side of the byte cap (about one case in ten
    /// reaches a cap, each of the three outcomes in some).
    fn long_traits(keys: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Traits> {
        let long = prop_oneof![
            6 => (300usize..=450).prop_map(|n| Value::from("w".repeat(n))),
            1 => value(),
        ];
        traits_of(keys, long)
    }

    /// Traits of `keys` distinct keys out of 70 (drawn as a subsequence: a map strategy
    /// would reject most draws that repeat a key below its minimum size).
    fn traits_of(
        keys: std::ops::RangeInclusive<usize>,
        value: impl Strategy<Value = Value> + 'static,
    ) -> impl Strategy<Value = Traits> {
        let value = value.boxed();
        let pool: Vec<String> = (0..70).map(|i| format!("key{i}")).collect();
        proptest::sample::subsequence(pool, keys)
            .prop_flat_map(move |keys| {
                let values = proptest::collection::vec(value.clone(), keys.len());
                (Just(keys), values)
            })
            .prop_map(|(keys, values)| Traits(keys.into_iter().zip(values).collect()))
    }

    /// `jsonb`'s text output, spelled out the plain way (numbers left to `numeric_len`'s
    /// table test): the reference `stored_len` must agree with.
    fn printed(v: &Value) -> String {
        let quoted = |s: &str| {
            let mut out = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\u{8}' => out.push_str("\\b"),
                    '\u{c}' => out.push_str("\\f"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        };
        match v {
            Value::Number(n) => "9".repeat(numeric_len(&n.to_string())),
            Value::String(s) => quoted(s),
            Value::Array(items) => format!(
                "[{}]",
                items.iter().map(printed).collect::<Vec<_>>().join(", ")
            ),
            Value::Object(m) => format!(
                "{{{}}}",
                m.iter()
                    .map(|(k, v)| format!("{}: {}", quoted(k), printed(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            other => other.to_string(),
        }
    }

    proptest! {
        #[test]
        fn stored_len_is_the_printed_length(t in some_traits(60), key in "[ -~\\x00-\\x1f\\x{e9}]{0,12}") {
            let mut m = t.0.clone();
            m.insert(key, Value::Array(vec![json!({"x": [1, null]}), json!(true)]));
            let t = Traits(m);
            prop_assert_eq!(t.stored_len(), printed(&t.to_json()).len());
        }

        #[test]
        fn merges_keep_to_the_caps_and_to_the_sql_rule(
            stored in prop_oneof![some_traits(50), long_traits(38..=48)],
            later in prop_oneof![some_traits(12), long_traits(1..=6)],
        ) {
            let patch = stored.merge_within_caps(&later);
            let result = applied(&stored, patch.clone());
            // The patch holds only later's entries that change something.
            for (k, v) in patch.iter().flat_map(|p| p.0.iter()) {
                prop_assert_eq!(later.0.get(k), Some(v));
                prop_assert_ne!(stored.0.get(k), Some(v));
            }
            // Whatever changed fits the caps (or keeps the keys there were).
            if result != stored {
                prop_assert!(result.stored_len() <= MAX_MERGED_BYTES);
                prop_assert!(result.0.len() <= MAX_MERGED_KEYS || result.0.len() == stored.0.len());
            }
            // colloquy_merge_traits, built the plain way.
            let mut plain = stored.clone();
            plain.merge(&later);
            let mut known = stored.clone();
            known.merge(&Traits(later.0.iter().filter(|(k, _)| stored.0.contains_key(*k))
                .map(|(k, v)| (k.clone(), v.clone())).collect()));
            let expected = if plain.0.len() <= MAX_MERGED_KEYS && plain.stored_len() <= MAX_MERGED_BYTES {
                plain
            } else if known.stored_len() <= MAX_MERGED_BYTES {
                known
            } else {
                stored.clone()
            };
            prop_assert_eq!(result, expected);
        }
    }
}
