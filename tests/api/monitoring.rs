//! For those with their own monitoring: `deploy/grafana/colloquy.json` (a Grafana dashboard)
//! and `deploy/prometheus/alerts.yml` (alert rules) must only use metrics that colloquy's
//! `/metrics` exports — a renamed metric must not leave a dashboard silently empty or an
//! alert that can never fire. Both files are parsed, every metric name and every fixed label
//! value (`kind`, `measure`, `state`, `tier`) their expressions use is collected, and each is
//! looked up in the `/metrics` output of a running app after some traffic.

use crate::helpers::{spawn_app, SseClient, TestApp, ADMIN_TOKEN};
use serde_json::{json, Value};
use std::collections::BTreeSet;

const DASHBOARD: &str = include_str!("../../deploy/grafana/colloquy.json");
const ALERTS: &str = include_str!("../../deploy/prometheus/alerts.yml");

/// Metrics Prometheus itself makes, not colloquy.
const FROM_PROMETHEUS: [&str; 1] = ["up"];

/// Labels whose values are a fixed vocabulary of colloquy's (others, like `status` or
/// `route`, depend on the traffic seen).
const FIXED_LABELS: [&str; 4] = ["kind", "measure", "state", "tier"];

/// Every string under a key named `key`, anywhere in `v`.
fn strings_under(v: &Value, key: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                match child {
                    Value::String(s) if k == key => out.push(s.clone()),
                    _ => strings_under(child, key, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| strings_under(i, key, out)),
        _ => {}
    }
}

fn dashboard_exprs() -> Vec<String> {
    let dashboard: Value =
        serde_json::from_str(DASHBOARD).expect("deploy/grafana/colloquy.json is valid JSON");
    let mut exprs = Vec::new();
    strings_under(&dashboard, "expr", &mut exprs);
    exprs
}

fn alert_exprs() -> Vec<String> {
    let rules: Value =
        serde_norway::from_str(ALERTS).expect("deploy/prometheus/alerts.yml is valid YAML");
    let groups = rules["groups"].as_array().expect("alerts.yml has groups");
    let mut exprs = Vec::new();
    for rule in groups
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
    {
        let name = rule["alert"]
            .as_str()
            .expect("each rule is an alert with a name");
        assert!(
            rule["labels"]["severity"].is_string(),
            "{name} has a severity label"
        );
        assert!(
            rule["annotations"]["summary"].is_string(),
            "{name} has a summary"
        );
        exprs.push(
            rule["expr"]
                .as_str()
                .expect("each rule has an expr")
                .to_owned(),
        );
    }
    exprs
}

/// Identifiers of a PromQL expression that name a series: every `colloquy_…` word, and
/// every word directly followed by a selector `{` or a range `[`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let bytes = expr.as_bytes();
    let is_word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut names = BTreeSet::new();
    let (mut i, mut in_string) = (0, false);
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'"' {
            in_string = !in_string;
            i += 1;
            continue;
        }
        if in_string || !is_word(c) || c.is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_word(bytes[i]) {
            i += 1;
        }
        let word = &expr[start..i];
        let next = bytes.get(i).copied();
        if word.starts_with("colloquy_") || matches!(next, Some(b'{') | Some(b'[')) {
            names.insert(word.to_owned());
        }
    }
    names
}

/// `label="value"` matchers of fixed-vocabulary labels inside selectors.
fn fixed_label_matchers(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        for matcher in rest[open + 1..open + close].split(',') {
            if let Some((label, value)) = matcher.split_once('=') {
                let label = label.trim();
                if FIXED_LABELS.contains(&label) && !value.starts_with('~') {
                    out.insert(format!("{label}={}", value.trim()));
                }
            }
        }
        rest = &rest[open + close..];
    }
    out
}

/// Traffic that makes every series appear: requests, a rate-limit refusal, a stream.
async fn some_traffic(app: &TestApp) {
    let team = app
        .create_team_with(json!({"rate_limits": {"message_distinct_id_per_minute": 1}}))
        .await;
    let visitor = "visitor-monitoring@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "hello").await;
    let res = app
        .post_message(
            &team.token,
            &json!({"distinct_id": visitor, "ticket_id": ticket, "message": "again"}),
        )
        .await;
    assert_eq!(res.status(), 429, "the second message trips the limit");
    let stream = app
        .open_stream(
            &ticket,
            &[("distinct_id", visitor), ("token", team.token.as_str())],
            &[],
        )
        .await;
    let _ = SseClient::new(stream);
}

/// Sample names of a Prometheus text exposition (`name{labels} value` / `name value`).
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[actix_web::test]
async fn dashboard_and_alert_rules_use_only_metrics_that_exist() {
    let app = spawn_app().await;
    some_traffic(&app).await;
    let res = app
        .client
        .get(format!("{}/metrics", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let metrics = res.text().await.unwrap();
    let exported = sample_names(&metrics);

    let dashboard = dashboard_exprs();
    let alerts = alert_exprs();
    assert!(
        dashboard.len() >= 10,
        "the dashboard has its panels' queries"
    );
    for required in [
        "colloquy_http_requests_total",
        "colloquy_http_request_duration_seconds_bucket",
        "colloquy_actors",
        "colloquy_db_pool_connections",
    ] {
        assert!(
            alerts.iter().any(|e| e.contains(required)),
            "an alert rule watches {required}"
        );
    }
    let mut checked = 0;
    for (file, exprs) in [("colloquy.json", &dashboard), ("alerts.yml", &alerts)] {
        for expr in exprs.iter() {
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{file}: no metric in {expr:?}");
            for name in names {
                assert!(
                    exported.contains(&name) || FROM_PROMETHEUS.contains(&name.as_str()),
                    "{file}: {name} (in {expr:?}) is not in /metrics:\n{metrics}"
                );
                checked += 1;
            }
            for matcher in fixed_label_matchers(expr) {
                assert!(
                    metrics.contains(&matcher),
                    "{file}: no series with {matcher} (in {expr:?}) in /metrics"
                );
            }
        }
    }
    assert!(checked >= 20, "{checked} metric references checked");
}

#[test]
fn the_checker_finds_metric_names_and_misspelt_ones() {
    let names = metric_names(
        r#"sum by (kind) (deriv(colloqy_actors{measure="handled"}[1m])) / up{job="x"}"#,
    );
    assert_eq!(
        names,
        BTreeSet::from(["colloqy_actors".to_owned(), "up".to_owned()]),
        "a misspelt name is found (and would then be missing from /metrics)"
    );
    assert_eq!(
        fixed_label_matchers(r#"x{kind="mailer", measure=~"a|b", status="500"}"#),
        BTreeSet::from(["kind=\"mailer\"".to_owned()])
    );
}
