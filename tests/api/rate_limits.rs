//! Rate limits: each budget trips at its configured size with `429 rate_limited` and a
//! `Retry-After`, refused requests are neither stored nor charged, budgets belong to one
//! team, and repeated refusals are flagged.

use crate::helpers::{assert_error, spawn_app, status_json, visitor, TestApp, TestTeam};
use reqwest::Response;
use serde_json::{json, Value};

const HIGH: u32 = 1_000_000;

/// A team whose budgets are `HIGH` except the given ones.
async fn team_with_limits(app: &TestApp, limits: Value) -> TestTeam {
    let mut all = json!({
        "message_distinct_id_per_minute": HIGH,
        "message_ip_per_minute": HIGH,
        "message_team_per_hour": HIGH,
        "read_distinct_id_per_minute": HIGH,
    });
    for (k, v) in limits.as_object().unwrap() {
        all[k] = v.clone();
    }
    app.create_team_with(json!({ "rate_limits": all })).await
}

async fn send(app: &TestApp, team: &TestTeam, who: &str, text: &str) -> Response {
    app.post_message(&team.token, &json!({"distinct_id": who, "message": text}))
        .await
}

/// Asserts a 429 in the contract's shape; returns the body.
async fn assert_rate_limited(res: Response) -> Value {
    let retry_after = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = assert_error(res, 429, "rate_limited").await;
    let header: u64 = retry_after
        .as_deref()
        .expect("a Retry-After header")
        .parse()
        .expect("Retry-After is an integer number of seconds");
    assert!(
        header >= 1,
        "Retry-After is at least 1 second, got {header}"
    );
    let field = body["retry_after"]
        .as_f64()
        .unwrap_or_else(|| panic!("a numeric retry_after field in {body}"));
    assert!(field > 0.0, "retry_after is positive: {body}");
    body
}

#[actix_web::test]
async fn the_message_after_the_per_visitor_budget_is_refused_with_429_and_not_stored() {
    // Arrange
    let app = spawn_app().await;
    let team = team_with_limits(&app, json!({"message_distinct_id_per_minute": 3})).await;
    let who = visitor("chatty");
    for i in 0..3 {
        assert_eq!(
            send(&app, &team, &who, &format!("ok {i}")).await.status(),
            201,
            "message {i} fits the budget"
        );
    }

    // Act
    let res = send(&app, &team, &who, "one too many").await;

    // Assert
    assert_rate_limited(res).await;
    assert_eq!(
        app.count("SELECT count(*) FROM messages WHERE content = 'one too many'")
            .await,
        0,
        "the refused message is not stored"
    );
    assert_eq!(app.stored().await.0, 3);
}

#[actix_web::test]
async fn the_per_ip_budget_counts_every_visitor_from_one_address() {
    // Arrange
    let app = spawn_app().await;
    let team = team_with_limits(&app, json!({"message_ip_per_minute": 2})).await;
    assert_eq!(send(&app, &team, &visitor("ip-a"), "a").await.status(), 201);
    assert_eq!(send(&app, &team, &visitor("ip-b"), "b").await.status(), 201);

    // Act
    let res = send(&app, &team, &visitor("ip-c"), "c").await;
    let spoofed = app
        .post_message_with_headers(
            &team.token,
            &json!({"distinct_id": visitor("ip-d"), "message": "d"}),
            &[
                ("X-Forwarded-For", "203.0.113.7"),
                ("X-Real-IP", "203.0.113.8"),
            ],
        )
        .await;

    // Assert
    assert_rate_limited(res).await;
    assert_rate_limited(spoofed).await;
    assert_eq!(
        app.stored().await,
        (2, 2),
        "refused messages are not stored"
    );
}

#[actix_web::test]
async fn the_team_budget_counts_every_visitor_of_the_team() {
    // Arrange
    let app = spawn_app().await;
    let team = team_with_limits(&app, json!({"message_team_per_hour": 3})).await;
    for i in 0..3 {
        assert_eq!(
            send(&app, &team, &visitor(&format!("team{i}")), "hi")
                .await
                .status(),
            201
        );
    }

    // Act
    let res = send(&app, &team, &visitor("team-late"), "hi").await;

    // Assert
    let body = assert_rate_limited(res).await;
    assert!(
        body["retry_after"].as_f64().unwrap() >= 60.0,
        "an hourly budget of 3 refills one request in about 20 minutes: {body}"
    );
    assert_eq!(app.stored().await, (3, 3));
}

#[actix_web::test]
async fn reading_messages_has_its_own_per_visitor_budget() {
    // Arrange
    let app = spawn_app().await;
    let team = team_with_limits(&app, json!({"read_distinct_id_per_minute": 3})).await;
    let who = visitor("reader");
    let ticket = app.open_ticket(&team.token, &who, "hi").await;
    for _ in 0..3 {
        assert_eq!(
            app.get_messages(&team.token, &ticket, &[("distinct_id", &who)])
                .await
                .status(),
            200
        );
    }

    // Act
    let res = app
        .get_messages(&team.token, &ticket, &[("distinct_id", &who)])
        .await;
    let other = app
        .get_messages(&team.token, &ticket, &[("distinct_id", &visitor("other"))])
        .await;
    let post = send(&app, &team, &who, "writing still works").await;

    // Assert
    assert_rate_limited(res).await;
    assert_eq!(
        other.status(),
        403,
        "another visitor has their own read budget (and no access)"
    );
    assert_eq!(post.status(), 201, "reads do not use up the write budget");
}

#[actix_web::test]
async fn listing_tickets_has_its_own_per_visitor_budget() {
    // Arrange
    let app = spawn_app().await;
    let team = team_with_limits(&app, json!({"read_distinct_id_per_minute": 2})).await;
    let who = visitor("lister");
    for _ in 0..2 {
        assert_eq!(
            app.get_tickets(&team.token, &[("distinct_id", &who)])
                .await
                .status(),
            200
        );
    }

    // Act
    let res = app.get_tickets(&team.token, &[("distinct_id", &who)]).await;
    let other = app
        .get_tickets(&team.token, &[("distinct_id", &visitor("other"))])
        .await;

    // Assert
    assert_rate_limited(res).await;
    assert_eq!(other.status(), 200, "another visitor is not affected");
}

#[actix_web::test]
async fn one_teams_exhausted_budgets_never_affect_another_team() {
    // Arrange
    let app = spawn_app().await;
    let limits = json!({"message_distinct_id_per_minute": 2, "message_ip_per_minute": 2,
                        "message_team_per_hour": 2, "read_distinct_id_per_minute": 2});
    let team_a = team_with_limits(&app, limits.clone()).await;
    let team_b = team_with_limits(&app, limits).await;
    let who = visitor("both");
    let ticket_a = app.open_ticket(&team_a.token, &who, "a1").await;
    assert_eq!(send(&app, &team_a, &who, "a2").await.status(), 201);
    assert_rate_limited(send(&app, &team_a, &who, "a3").await).await;
    for _ in 0..2 {
        app.get_messages(&team_a.token, &ticket_a, &[("distinct_id", &who)])
            .await;
    }
    assert_rate_limited(
        app.get_messages(&team_a.token, &ticket_a, &[("distinct_id", &who)])
            .await,
    )
    .await;

    // Act: same visitor, same IP, other team.
    let ticket_b = app.open_ticket(&team_b.token, &who, "b1").await;
    let post_b = send(&app, &team_b, &who, "b2").await;
    let read_b = app
        .get_messages(&team_b.token, &ticket_b, &[("distinct_id", &who)])
        .await;
    let list_b = app
        .get_tickets(&team_b.token, &[("distinct_id", &who)])
        .await;

    // Assert
    assert_eq!(post_b.status(), 201, "team B's write budgets are its own");
    assert_eq!(read_b.status(), 200, "team B's read budgets are its own");
    assert_eq!(list_b.status(), 200);
}

#[actix_web::test]
async fn a_refused_request_does_not_use_up_the_other_budgets() {
    // Arrange: visitor budget 2, IP budget 3.
    let app = spawn_app().await;
    let team = team_with_limits(
        &app,
        json!({"message_distinct_id_per_minute": 2, "message_ip_per_minute": 3}),
    )
    .await;
    let noisy = visitor("noisy");
    assert_eq!(send(&app, &team, &noisy, "1").await.status(), 201);
    assert_eq!(send(&app, &team, &noisy, "2").await.status(), 201);
    for _ in 0..5 {
        assert_rate_limited(send(&app, &team, &noisy, "refused").await).await;
    }

    // Act: the IP has spent 2 of 3 if refusals were not charged.
    let res = send(&app, &team, &visitor("quiet"), "from the same IP").await;

    // Assert
    assert_eq!(
        res.status(),
        201,
        "refused requests were not charged to the IP budget"
    );
    assert_eq!(app.stored().await.0, 3);
}

#[actix_web::test]
async fn an_invalid_request_does_not_use_up_the_budget() {
    // Arrange
    let app = spawn_app().await;
    let team = team_with_limits(&app, json!({"message_distinct_id_per_minute": 2})).await;
    let who = visitor("sloppy");
    for _ in 0..5 {
        let res = app
            .post_message(&team.token, &json!({"distinct_id": who, "message": ""}))
            .await;
        assert_eq!(res.status(), 400);
    }

    // Act
    let first = send(&app, &team, &who, "real 1").await;
    let second = send(&app, &team, &who, "real 2").await;

    // Assert
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (201, 201)
    );
}

#[actix_web::test]
async fn concurrent_requests_never_exceed_the_budget() {
    // Arrange
    let app = spawn_app().await;
    let team = team_with_limits(&app, json!({"message_distinct_id_per_minute": 5})).await;
    let who = visitor("burst");

    // Act: 20 at once.
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (client, url, token, who) = (
                app.client.clone(),
                app.url("/api/conversations/widget/message"),
                team.token.clone(),
                who.clone(),
            );
            actix_web::rt::spawn(async move {
                client
                    .post(url)
                    .header("X-Conversations-Token", token)
                    .json(&json!({"distinct_id": who, "message": format!("burst {i}")}))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }

    // Assert
    let created = statuses.iter().filter(|s| **s == 201).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(
        (created, refused),
        (5, 15),
        "exactly the budget passes: {statuses:?}"
    );
    assert_eq!(app.stored().await.0, 5);
}

#[actix_web::test]
async fn repeated_refusals_are_flagged_as_suspicious() {
    // Arrange
    let app = spawn_app().await;
    let team = team_with_limits(&app, json!({"message_distinct_id_per_minute": 1})).await;
    let who = visitor("hammer");
    assert_eq!(send(&app, &team, &who, "first").await.status(), 201);

    // Act
    for i in 0..4 {
        assert_rate_limited(send(&app, &team, &who, &format!("again {i}")).await).await;
    }

    // Assert
    assert!(
        app.wait_for_flag(&team.id, "rate_limited").await,
        "a rate_limited suspicion flag is recorded within 3 seconds"
    );
}

#[actix_web::test]
async fn a_replayed_post_is_answered_even_when_the_write_budget_is_spent() {
    // Arrange
    let app = spawn_app().await;
    let team = team_with_limits(&app, json!({"message_distinct_id_per_minute": 1})).await;
    let who = visitor("retrier");
    let body = json!({"distinct_id": who, "message": "stored once", "client_message_id": "r-1"});
    let (s, first) = status_json(app.post_message(&team.token, &body).await).await;
    assert_eq!(s, 201);
    assert_rate_limited(send(&app, &team, &who, "new text").await).await;

    // Act
    let (status, again) = status_json(app.post_message(&team.token, &body).await).await;

    // Assert
    assert_eq!(
        status, 200,
        "a replay counts like a read, not a write: {again}"
    );
    assert_eq!(again["message_id"], first["message_id"]);
    assert_eq!(app.stored().await.0, 1);
}

#[actix_web::test]
async fn retry_after_says_when_the_next_request_will_pass() {
    // Arrange: 3 per minute refills one request every 20 seconds.
    let app = spawn_app().await;
    let team = team_with_limits(&app, json!({"message_distinct_id_per_minute": 3})).await;
    let who = visitor("patient");
    for i in 0..3 {
        send(&app, &team, &who, &format!("{i}")).await;
    }

    // Act
    let res = send(&app, &team, &who, "too soon").await;

    // Assert
    let header: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = assert_rate_limited(res).await;
    assert!(
        (1..=21).contains(&header),
        "Retry-After is about the 20 s refill, not the whole minute: {header}"
    );
    let field = body["retry_after"].as_f64().unwrap();
    assert!(
        (field - header as f64).abs() <= 1.0,
        "header and field agree: {header} vs {body}"
    );
}
