//! The ticket supervisor as operators see it in `/api/ops/actors`: it is listed, its counters
//! move with what it does (a spawn per ticket opened, an eviction per ticket erased), and the
//! hot path (a poll of a live ticket, a follow-up to it) does not go through it.

use crate::helpers::{spawn_app, TestApp, ADMIN_TOKEN};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn actors(app: &TestApp) -> Value {
    let res = app
        .client
        .get(format!("{}/api/ops/actors", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

fn n(v: &Value, kind: &str, field: &str) -> i64 {
    v[kind][field]
        .as_i64()
        .unwrap_or_else(|| panic!("{kind}.{field} in {v}"))
}

#[actix_web::test]
async fn the_ticket_supervisor_counts_spawns_and_evictions_but_not_the_hot_path() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let before = actors(&app).await;
    assert_eq!(n(&before, "ticket_supervisor", "alive"), 1, "{before}");

    let gone = "leaving@example.com";
    let t1 = app.open_ticket(&team.token, gone, "one").await;
    let _t2 = app.open_ticket(&team.token, gone, "two").await;
    let kept = app
        .open_ticket(&team.token, "staying@example.com", "three")
        .await;
    let opened = actors(&app).await;
    assert_eq!(
        n(&opened, "ticket_supervisor", "handled") - n(&before, "ticket_supervisor", "handled"),
        3,
        "one spawn per ticket opened: {before} → {opened}"
    );
    assert_eq!(n(&opened, "ticket_supervisor", "queued"), 0, "{opened}");
    // Each actor starts on its worker's arbiter after the supervisor handled the spawn, so
    // the count of live actors may trail the supervisor's by a moment on a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut live = actors(&app).await;
    while n(&live, "ticket_actors", "alive") < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        live = actors(&app).await;
    }
    assert_eq!(n(&live, "ticket_actors", "alive"), 3, "{live}");

    // The hot path: polls answered from the live ticket's view, a follow-up through its actor.
    for _ in 0..5 {
        let res = app
            .get_messages(&team.token, &t1, &[("distinct_id", gone)])
            .await;
        assert_eq!(res.status(), 200);
    }
    let res = app
        .post_message(
            &team.token,
            &json!({"distinct_id": gone, "ticket_id": t1, "message": "again"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let hot = actors(&app).await;
    assert_eq!(
        n(&hot, "ticket_supervisor", "handled"),
        n(&opened, "ticket_supervisor", "handled"),
        "polls and follow-ups to live tickets do not ask the supervisor: {opened} → {hot}"
    );

    let res = app
        .operator(
            &team.secret,
            Method::DELETE,
            &format!("/api/conversations/persons/{gone}"),
            None,
        )
        .await;
    assert!(res.status().is_success(), "erase: {}", res.status());
    let erased = actors(&app).await;
    assert_eq!(
        n(&erased, "ticket_supervisor", "evictions") - n(&hot, "ticket_supervisor", "evictions"),
        2,
        "the erased person's two tickets were removed by the supervisor: {hot} → {erased}"
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let now = actors(&app).await;
        if n(&now, "ticket_actors", "alive") == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the erased tickets' actors stop: {now}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let res = app
        .get_messages(
            &team.token,
            &kept,
            &[("distinct_id", "staying@example.com")],
        )
        .await;
    assert_eq!(res.status(), 200, "the other ticket is untouched");
}
