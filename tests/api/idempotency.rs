//! Idempotency of `POST /api/conversations/widget/message`: a repeated POST with the same
//! `(team, distinct_id, client_message_id)` creates nothing new and answers `200` with the
//! first call's ids, also when the retries race each other.

use crate::helpers::{spawn_app, TestApp, TestTeam};
use serde_json::{json, Value};

async fn post(app: &TestApp, team: &TestTeam, body: &Value) -> (u16, Value) {
    let res = app.post_message(&team.token, body).await;
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn messages_stored(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM messages").await
}

#[actix_web::test]
async fn a_retried_first_message_returns_the_same_ids_and_stores_one_ticket() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let b =
        json!({"distinct_id": "retry@example.com", "message": "hello", "client_message_id": "c-1"});
    let (s1, first) = post(&app, &team, &b).await;
    assert_eq!(s1, 201, "{first}");
    for _ in 0..3 {
        let (s, again) = post(&app, &team, &b).await;
        assert_eq!(s, 200, "a replay answers 200: {again}");
        for key in ["ticket_id", "message_id", "created_at"] {
            assert_eq!(again[key], first[key], "{key}");
        }
        assert_eq!(again["ticket_status"], "new");
    }
    assert_eq!(messages_stored(&app).await, 1);
    assert_eq!(app.count("SELECT count(*) FROM tickets").await, 1);
    let page: Value = app
        .get_messages(
            &team.token,
            first["ticket_id"].as_str().unwrap(),
            &[("distinct_id", "retry@example.com")],
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
}

#[actix_web::test]
async fn a_retried_follow_up_returns_the_same_ids_and_stores_one_message() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let visitor = "followup@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "first").await;
    let b = json!({"distinct_id": visitor, "ticket_id": ticket, "message": "second", "client_message_id": "c-2"});
    let (s1, first) = post(&app, &team, &b).await;
    assert_eq!(s1, 201);
    // The operator moves the ticket in between: a replay reports the current status.
    let res = app
        .patch_ticket(&team.secret, &ticket, &json!({"status": "pending"}))
        .await;
    assert_eq!(res.status(), 200);
    let (s2, again) = post(&app, &team, &b).await;
    assert_eq!(s2, 200);
    assert_eq!(again["ticket_id"], ticket.as_str());
    assert_eq!(again["message_id"], first["message_id"]);
    assert_eq!(again["created_at"], first["created_at"]);
    assert_eq!(again["ticket_status"], "pending", "the current status");
    assert_eq!(messages_stored(&app).await, 2);
}

async fn race(app: &TestApp, team: &TestTeam, body: Value) -> Vec<(u16, Value)> {
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let (client, address, token, body) = (
                app.client.clone(),
                app.address.clone(),
                team.token.clone(),
                body.clone(),
            );
            actix_web::rt::spawn(async move {
                let res = client
                    .post(format!("{address}/api/conversations/widget/message"))
                    .header("X-Conversations-Token", &token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = res.status().as_u16();
                (status, res.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn assert_one_winner(answers: &[(u16, Value)]) {
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    let replayed = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(
        (created, replayed),
        (1, 4),
        "one 201 and four 200: {answers:?}"
    );
    let first = &answers[0].1;
    for (_, a) in answers {
        assert_eq!(a["message_id"], first["message_id"], "{answers:?}");
        assert_eq!(a["ticket_id"], first["ticket_id"], "{answers:?}");
        assert_eq!(a["created_at"], first["created_at"], "{answers:?}");
    }
}

#[actix_web::test]
async fn five_racing_first_messages_store_exactly_one() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    for round in 0..5 {
        let body = json!({"distinct_id": "racer@example.com", "message": "once",
                          "client_message_id": format!("race-new-{round}")});
        let answers = race(&app, &team, body).await;
        assert_one_winner(&answers);
        assert_eq!(
            messages_stored(&app).await,
            round + 1,
            "round {round}: {answers:?}"
        );
        assert_eq!(app.count("SELECT count(*) FROM tickets").await, round + 1);
    }
}

#[actix_web::test]
async fn five_racing_follow_ups_store_exactly_one() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let visitor = "racer2@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "first").await;
    for round in 0..5 {
        let body = json!({"distinct_id": visitor, "ticket_id": ticket, "message": "once",
                          "client_message_id": format!("race-follow-{round}")});
        let answers = race(&app, &team, body).await;
        assert_one_winner(&answers);
        assert_eq!(answers[0].1["ticket_id"], ticket.as_str());
        assert_eq!(
            messages_stored(&app).await,
            round + 2,
            "round {round}: {answers:?}"
        );
    }
}

#[actix_web::test]
async fn the_same_client_message_id_from_another_visitor_is_another_message() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let (s1, a) = post(&app, &team, &json!({"distinct_id": "alice@example.com", "message": "hi", "client_message_id": "shared"})).await;
    let (s2, b) = post(
        &app,
        &team,
        &json!({"distinct_id": "bob@example.com", "message": "hi", "client_message_id": "shared"}),
    )
    .await;
    assert_eq!((s1, s2), (201, 201));
    assert_ne!(a["message_id"], b["message_id"]);
    assert_ne!(a["ticket_id"], b["ticket_id"]);
    assert_eq!(messages_stored(&app).await, 2);

    // Nor does another team's visitor with the same distinct_id collide.
    let other = app.create_unlimited_team().await;
    let (s3, c) = post(&app, &other, &json!({"distinct_id": "alice@example.com", "message": "hi", "client_message_id": "shared"})).await;
    assert_eq!(s3, 201);
    assert_ne!(c["message_id"], a["message_id"]);
    assert_eq!(messages_stored(&app).await, 3);
}

#[actix_web::test]
async fn replays_are_not_refused_by_the_write_budget() {
    let app = spawn_app().await;
    let team = app
        .create_team_with(json!({"rate_limits": {"message_distinct_id_per_minute": 2,
                                                 "read_distinct_id_per_minute": 1000}}))
        .await;
    let visitor = "storm@example.com";
    let mut firsts = Vec::new();
    for i in 0..2 {
        let (s, v) = post(&app, &team, &json!({"distinct_id": visitor, "message": format!("m{i}"), "client_message_id": format!("k{i}")})).await;
        assert_eq!(s, 201);
        firsts.push(v);
    }
    let (s, _) = post(
        &app,
        &team,
        &json!({"distinct_id": visitor, "message": "m2", "client_message_id": "k2"}),
    )
    .await;
    assert_eq!(s, 429, "the budget is spent");
    // A retry storm for stored messages still gets its answers.
    for _ in 0..5 {
        for (i, first) in firsts.iter().enumerate() {
            let (s, v) = post(&app, &team, &json!({"distinct_id": visitor, "message": format!("m{i}"), "client_message_id": format!("k{i}")})).await;
            assert_eq!(s, 200, "{v}");
            assert_eq!(v["message_id"], first["message_id"]);
        }
    }
    assert_eq!(messages_stored(&app).await, 2);
}

#[actix_web::test]
async fn a_replay_with_another_text_is_still_the_first_message() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let visitor = "edited@example.com";
    let (s1, first) = post(
        &app,
        &team,
        &json!({"distinct_id": visitor, "message": "original", "client_message_id": "k"}),
    )
    .await;
    assert_eq!(s1, 201);
    let (s2, again) = post(
        &app,
        &team,
        &json!({"distinct_id": visitor, "message": "changed", "client_message_id": "k"}),
    )
    .await;
    assert_eq!(s2, 200);
    assert_eq!(again["message_id"], first["message_id"]);
    assert_eq!(messages_stored(&app).await, 1);
    let page: Value = app
        .get_messages(
            &team.token,
            first["ticket_id"].as_str().unwrap(),
            &[("distinct_id", visitor)],
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["messages"][0]["content"], "original");
}
