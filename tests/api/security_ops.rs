//! Security of the operations surface (issue 12, item 3): `/metrics` needs the admin bearer,
//! and nothing a stranger sends can add label values to its series.

use crate::helpers::{assert_error, spawn_app, TestApp, ADMIN_TOKEN};
use reqwest::Method;
use std::collections::BTreeSet;

/// `GET /metrics` with the admin bearer; panics unless it answers 200.
async fn scrape(app: &TestApp) -> String {
    let res = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(res.status().as_u16(), 200, "/metrics with the admin token");
    res.text().await.expect("metrics text")
}

/// The distinct values of `label` over every series of the request counter and histogram.
fn label_values(text: &str, label: &str) -> BTreeSet<String> {
    let needle = format!("{label}=\"");
    text.lines()
        .filter(|l| l.starts_with("colloquy_http_request"))
        .filter_map(|l| {
            let start = l.find(&needle)? + needle.len();
            let len = l[start..].find('"')?;
            Some(l[start..start + len].to_owned())
        })
        .collect()
}

#[actix_web::test]
async fn security_metrics_without_a_token_is_refused() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/metrics")).send().await.unwrap();
    let body = assert_error(res, 401, "invalid_token").await;
    assert!(
        !body.to_string().contains("colloquy_"),
        "no metric leaks into the refusal: {body}"
    );
}

#[actix_web::test]
async fn security_metrics_with_a_wrong_token_is_refused() {
    let app = spawn_app().await;
    for wrong in [
        "wrong-token",
        &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1],
        &format!("{ADMIN_TOKEN}x"),
    ] {
        let res = app
            .client
            .get(app.url("/metrics"))
            .bearer_auth(wrong)
            .send()
            .await
            .unwrap();
        assert_error(res, 401, "invalid_token").await;
    }
    // The admin token given some other way than as a bearer is not accepted either.
    let res = app
        .client
        .get(app.url("/metrics"))
        .basic_auth("admin", Some(ADMIN_TOKEN))
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "invalid_token").await;
}

#[actix_web::test]
async fn security_metrics_with_the_admin_token_answers() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = res.text().await.unwrap();
    assert!(text.contains("colloquy_sse_streams_open"), "{text}");
}

#[actix_web::test]
async fn security_made_up_methods_add_no_metric_labels() {
    let app = spawn_app().await;
    // Every method label a legitimate client can cause, and one made-up one (labelled `OTHER`).
    for method in [Method::GET, Method::POST, Method::OPTIONS] {
        app.client
            .request(method, app.url("/healthz"))
            .send()
            .await
            .unwrap();
    }
    let probe = Method::from_bytes(b"ZZZ0").unwrap();
    app.client
        .request(probe, app.url("/"))
        .send()
        .await
        .unwrap();
    let before = label_values(&scrape(&app).await, "method");

    for i in 1..=50 {
        let method = Method::from_bytes(format!("ZZZ{i}").as_bytes()).unwrap();
        let path = if i % 2 == 0 { "/" } else { "/healthz" };
        let res = app
            .client
            .request(method, app.url(path))
            .send()
            .await
            .unwrap();
        assert!(
            res.status().is_client_error(),
            "ZZZ{i} {path} answered {}",
            res.status()
        );
    }
    let after = label_values(&scrape(&app).await, "method");
    assert!(
        after.iter().all(|m| !m.starts_with("ZZZ")),
        "a made-up method became a label: {after:?}"
    );
    assert_eq!(
        before, after,
        "50 made-up methods added method label values"
    );
}

#[actix_web::test]
async fn security_raw_paths_and_statuses_add_no_metric_labels() {
    let app = spawn_app().await;
    let prefixes = [
        "",
        "/api",
        "/api/conversations",
        "/api/conversations/widget",
        "/api/conversations/v1/widget",
        "/api/ops",
    ];
    let hit = |path: String| {
        let app = &app;
        async move {
            app.client
                .get(app.url(&path))
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {path}: {e}"))
                .status()
                .as_u16()
        }
    };
    for p in prefixes {
        hit(format!("{p}/probe-0")).await;
    }
    // The first scrape is counted too (`/metrics`, 200): the baseline is the second one.
    scrape(&app).await;
    let text = scrape(&app).await;
    let (routes_before, statuses_before) =
        (label_values(&text, "route"), label_values(&text, "status"));

    for i in 1..=20 {
        for p in prefixes {
            let status = hit(format!("{p}/probe-{i}/x{i}")).await;
            assert!((400..500).contains(&status), "{p}/probe-{i}: {status}");
        }
    }
    let text = scrape(&app).await;
    let (routes, statuses) = (label_values(&text, "route"), label_values(&text, "status"));
    assert!(
        routes.iter().all(|r| !r.contains("probe")),
        "a raw path became a route label: {routes:?}"
    );
    assert_eq!(routes_before, routes, "raw paths added route labels");
    assert_eq!(statuses_before, statuses, "statuses are bounded");
}
