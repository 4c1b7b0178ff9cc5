//! The ticket's rules (`colloquy_actors::domain::apply_batch`) against PostgreSQL: the traits
//! merge must keep to the caps exactly as the SQL function `colloquy_merge_traits` (sql/V2)
//! that it replaced, which includes counting bytes as `jsonb` prints them.

use crate::helpers::spawn_app;
use colloquy_actors::domain::{Traits, MAX_MERGED_BYTES, MAX_MERGED_KEYS};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Map, Value};
use tokio_postgres::types::Json;

/// A trait value of every kind `jsonb` prints its own way: escaped and non-ASCII strings,
/// integers of any size, floats with exponents, booleans, null.
fn value(long: usize) -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-z\"\\\\\n\t\\x{1}\\x{1f}\\x{7f}é😀]{0,12}".prop_map(Value::from),
        (0..=long).prop_map(|n| Value::from("v".repeat(n))),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        (-30i32..30).prop_map(|e| Value::from(1.5 * 10f64.powi(e))),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
    ]
}

/// Mostly strings of 300–450 characters: 38–48 of them print at about 13–17 KiB.
fn long_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => (300..=450usize).prop_map(|n| Value::from("w".repeat(n))),
        1 => value(40),
    ]
}

/// Traits with `keys` distinct keys out of a pool of 60 (a subsequence: a map strategy would
/// reject most draws that repeat a key below its minimum size).
fn traits(
    keys: std::ops::RangeInclusive<usize>,
    value: impl Strategy<Value = Value> + 'static,
) -> impl Strategy<Value = Value> {
    let value = value.boxed();
    let pool: Vec<String> = (0..60).map(|i| format!("key{i}")).collect();
    proptest::sample::subsequence(pool, keys)
        .prop_flat_map(move |keys| {
            let values = proptest::collection::vec(value.clone(), keys.len());
            (Just(keys), values)
        })
        .prop_map(|(keys, values)| {
            Value::Object(keys.into_iter().zip(values).collect::<Map<_, _>>())
        })
}

#[actix_web::test]
async fn merged_traits_keep_to_the_caps_exactly_as_the_sql_function_did() {
    let app = spawn_app().await;
    let db = app.db().await;
    // Small traits of every kind of value; traits of 44–50 small values merged with a few
    // keys old and new (the key cap); traits of 38–48 long values merged with a few more,
    // whose printed size falls on either side of 16 KiB (the byte cap).
    let small = (traits(0..=8, value(40)), traits(0..=8, value(40)));
    let many = (traits(44..=50, value(40)), traits(1..=8, value(40)));
    let long = (traits(38..=48, long_value()), traits(1..=6, long_value()));
    let mut runner = TestRunner::deterministic();
    let mut cases: Vec<(Value, Value)> = Vec::new();
    for i in 0..900 {
        let case = match i % 3 {
            0 => small.new_tree(&mut runner).map(|t| t.current()),
            1 => many.new_tree(&mut runner).map(|t| t.current()),
            _ => long.new_tree(&mut runner).map(|t| t.current()),
        };
        cases.push(case.expect("a generated case"));
    }
    let stored: Vec<Json<&Value>> = cases.iter().map(|(s, _)| Json(s)).collect();
    let later: Vec<Json<&Value>> = cases.iter().map(|(_, l)| Json(l)).collect();

    // What the store reads back (numbers as PostgreSQL keeps them) and its printed size.
    let rows = db
        .query(
            "SELECT s, octet_length(s::text)
             FROM unnest($1::jsonb[]) WITH ORDINALITY AS u(s, i) ORDER BY i",
            &[&stored],
        )
        .await
        .expect("the stored traits");
    assert_eq!(rows.len(), cases.len());
    let mut patches: Vec<Option<Json<Value>>> = Vec::new();
    let (mut over_keys, mut over_bytes) = (0, 0);
    for (row, (_, l)) in rows.iter().zip(&cases) {
        let read = Traits::from_stored(row.get::<_, Json<Value>>(0).0);
        let printed: i32 = row.get(1);
        assert_eq!(
            read.stored_len(),
            printed as usize,
            "the size of {}",
            read.to_json()
        );
        let later = Traits::from_stored(l.clone());
        let mut plain = read.clone();
        plain.merge(&later);
        if plain.to_json().as_object().map_or(0, Map::len) > MAX_MERGED_KEYS {
            over_keys += 1;
        } else if plain.stored_len() > MAX_MERGED_BYTES {
            over_bytes += 1;
        }
        patches.push(read.merge_within_caps(&later).map(|p| Json(p.to_json())));
    }
    assert!(
        over_keys > 10 && over_bytes > 10,
        "only {over_keys} cases past the keys and {over_bytes} past the bytes: too easy a test"
    );

    // The store writes `traits || patch`: byte for byte what the SQL function made.
    let differ: Vec<String> = db
        .query(
            "SELECT format('%s merged into %s: %s, not %s', l, s, w, colloquy_merge_traits(s, l))
             FROM (SELECT s, l, CASE WHEN p IS NULL THEN s ELSE s || p END AS w
                   FROM unnest($1::jsonb[], $2::jsonb[], $3::jsonb[]) AS u(s, l, p)) AS m
             WHERE w::text <> colloquy_merge_traits(s, l)::text",
            &[&stored, &later, &patches],
        )
        .await
        .expect("the written merge")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        differ.is_empty(),
        "{} cases differ, e.g. {}",
        differ.len(),
        differ[0]
    );
}
