//! `POST /api/teams` (bearer `ADMIN_TOKEN`): authentication, the answer's shape, validation,
//! partial rate limits, and secrets that are shown once and stored only hashed.

use crate::helpers::{assert_error, spawn_app, status_json, TestApp, ADMIN_TOKEN};
use reqwest::Response;
use serde_json::{json, Value};

async fn create(app: &TestApp, auth: Option<&str>, body: &Value) -> Response {
    let mut req = app.client.post(app.url("/api/teams")).json(body);
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    req.send().await.expect("POST /api/teams")
}

fn admin_auth() -> String {
    format!("Bearer {ADMIN_TOKEN}")
}

#[actix_web::test]
async fn creating_a_team_without_the_admin_token_is_401_and_creates_nothing() {
    // Arrange
    let app = spawn_app().await;
    let wrong = [
        None,
        Some("Bearer wrong-token"),
        Some("Bearer "),
        Some(ADMIN_TOKEN),
        Some("Basic dGVzdDp0ZXN0"),
        Some("Bearer test-admin-token-012345678"),
        Some("Bearer test-admin-token-01234567890"),
    ];

    for auth in wrong {
        // Act
        let res = create(&app, auth, &json!({"name": "Intruders"})).await;
        // Assert
        assert_error(res, 401, "invalid_token").await;
    }
    let team = app.create_team().await;
    let with_team_key = create(
        &app,
        Some(&format!("Bearer {}", team.secret)),
        &json!({"name": "x"}),
    )
    .await;
    assert_error(with_team_key, 401, "invalid_token").await;
    assert_eq!(
        app.count("SELECT count(*) FROM teams").await,
        1,
        "only the admin's team exists"
    );
}

#[actix_web::test]
async fn a_created_team_comes_with_credentials_and_every_setting_filled_in() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let (status, team) = status_json(
        create(
            &app,
            Some(&admin_auth()),
            &json!({"name": "  Acme Support  "}),
        )
        .await,
    )
    .await;

    // Assert
    assert_eq!(status, 201, "{team}");
    assert!(uuid::Uuid::parse_str(team["id"].as_str().unwrap()).is_ok());
    assert_eq!(team["name"], "Acme Support");
    for key in ["public_token", "secret_api_key", "identity_secret"] {
        assert!(
            team[key].as_str().is_some_and(|s| s.len() >= 24),
            "{key} is a long random string: {team}"
        );
    }
    assert_ne!(team["public_token"], team["secret_api_key"]);
    assert_eq!(team["conversations_enabled"], true);
    assert_eq!(team["allowed_widget_domains"], json!([]));
    assert_eq!(team["identity_verification"], "off");
    assert_eq!(
        team["rate_limits"],
        json!({"message_distinct_id_per_minute": 10, "message_ip_per_minute": 100,
               "message_team_per_hour": 1000, "read_distinct_id_per_minute": 30,
               "widget_session_per_minute": 30, "team_reads_per_hour": 3600,
               "team_writes_per_hour": 3600, "restore_email_per_hour": 3,
               "restore_ip_per_minute": 10, "widget_ip_per_minute": 1200}),
        "the documented defaults"
    );
    let token = team["public_token"].as_str().unwrap();
    let res = app
        .post_message(
            token,
            &json!({"distinct_id": "first-visitor@example.com", "message": "hi"}),
        )
        .await;
    assert_eq!(res.status(), 201, "the new token works on the widget API");
}

#[actix_web::test]
async fn two_teams_get_different_credentials() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let (_, a) =
        status_json(create(&app, Some(&admin_auth()), &json!({"name": "Same"})).await).await;
    let (_, b) =
        status_json(create(&app, Some(&admin_auth()), &json!({"name": "Same"})).await).await;

    // Assert
    for key in ["id", "public_token", "secret_api_key", "identity_secret"] {
        assert_ne!(a[key], b[key], "{key} differs");
    }
}

#[actix_web::test]
async fn settings_given_at_creation_are_kept_and_partial_rate_limits_keep_the_other_defaults() {
    // Arrange
    let app = spawn_app().await;
    let body = json!({
        "name": "Configured",
        "conversations_enabled": false,
        "allowed_widget_domains": ["shop.example.com", "*.example.org"],
        "identity_verification": "optional",
        "rate_limits": {"message_distinct_id_per_minute": 3, "team_reads_per_hour": 50}
    });

    // Act
    let (status, team) = status_json(create(&app, Some(&admin_auth()), &body).await).await;

    // Assert
    assert_eq!(status, 201, "{team}");
    assert_eq!(team["conversations_enabled"], false);
    assert_eq!(
        team["allowed_widget_domains"],
        json!(["shop.example.com", "*.example.org"])
    );
    assert_eq!(team["identity_verification"], "optional");
    let limits = &team["rate_limits"];
    assert_eq!(
        limits["message_distinct_id_per_minute"], 3,
        "the given key is set"
    );
    assert_eq!(limits["team_reads_per_hour"], 50);
    assert_eq!(
        limits["message_ip_per_minute"], 100,
        "other keys keep their defaults"
    );
    assert_eq!(limits["message_team_per_hour"], 1000);
    assert_eq!(limits["read_distinct_id_per_minute"], 30);
    assert_eq!(limits["restore_email_per_hour"], 3);
}

#[actix_web::test]
async fn invalid_team_bodies_are_400_naming_the_field_and_create_nothing() {
    // Arrange
    let app = spawn_app().await;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("name missing", json!({}), "name"),
        ("name empty", json!({"name": ""}), "name"),
        ("name only spaces", json!({"name": "   "}), "name"),
        ("name a number", json!({"name": 5}), "name"),
        (
            "name of 201 chars",
            json!({"name": "n".repeat(201)}),
            "name",
        ),
        (
            "conversations_enabled a string",
            json!({"name": "x", "conversations_enabled": "yes"}),
            "conversations_enabled",
        ),
        (
            "allowed_widget_domains a string",
            json!({"name": "x", "allowed_widget_domains": "shop.example.com"}),
            "allowed_widget_domains",
        ),
        (
            "allowed_widget_domains with a number",
            json!({"name": "x", "allowed_widget_domains": [1]}),
            "allowed_widget_domains",
        ),
        (
            "allowed_widget_domains with an empty host",
            json!({"name": "x", "allowed_widget_domains": [""]}),
            "allowed_widget_domains",
        ),
        (
            "identity_verification unknown",
            json!({"name": "x", "identity_verification": "sometimes"}),
            "identity_verification",
        ),
        (
            "rate_limits not an object",
            json!({"name": "x", "rate_limits": 10}),
            "rate_limits",
        ),
        (
            "rate_limits unknown key",
            json!({"name": "x", "rate_limits": {"per_second": 5}}),
            "rate_limits",
        ),
        (
            "rate_limits zero",
            json!({"name": "x", "rate_limits": {"message_ip_per_minute": 0}}),
            "rate_limits",
        ),
        (
            "rate_limits negative",
            json!({"name": "x", "rate_limits": {"message_ip_per_minute": -1}}),
            "rate_limits",
        ),
        (
            "rate_limits a string",
            json!({"name": "x", "rate_limits": {"message_ip_per_minute": "10"}}),
            "rate_limits",
        ),
        (
            "rate_limits a fraction",
            json!({"name": "x", "rate_limits": {"message_ip_per_minute": 1.5}}),
            "rate_limits",
        ),
        (
            "rate_limits too large",
            json!({"name": "x", "rate_limits": {"message_ip_per_minute": 10_000_000_000u64}}),
            "rate_limits",
        ),
        (
            "an unknown field",
            json!({"name": "x", "colour": "red"}),
            "colour",
        ),
    ];
    let mut failures = Vec::new();

    for (what, body, field) in cases {
        // Act
        let (status, err) = status_json(create(&app, Some(&admin_auth()), &body).await).await;
        // Assert
        let named = err["field"].as_str().unwrap_or_default();
        if status != 400
            || err["code"] != "validation_error"
            || !(named == field || named.starts_with(&format!("{field}.")))
        {
            failures.push(format!(
                "{what}: expected 400 field {field}, got {status} {err}"
            ));
        }
    }
    let (status, err) = status_json(
        app.client
            .post(app.url("/api/teams"))
            .bearer_auth(ADMIN_TOKEN)
            .header("Content-Type", "application/json")
            .body("[1,2]")
            .send()
            .await
            .unwrap(),
    )
    .await;
    if status != 400 || err["code"] != "invalid_json" {
        failures.push(format!(
            "array body: expected 400 invalid_json, got {status} {err}"
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        app.count("SELECT count(*) FROM teams").await,
        0,
        "no team was created"
    );
}

#[actix_web::test]
async fn the_secret_key_is_stored_only_as_a_hash() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let (status, team) =
        status_json(create(&app, Some(&admin_auth()), &json!({"name": "Hashed"})).await).await;

    // Assert
    assert_eq!(status, 201);
    let secret = team["secret_api_key"].as_str().unwrap();
    let row_text: String = app
        .db()
        .await
        .query_one("SELECT row_to_json(t)::text FROM teams t", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        !row_text.contains(secret),
        "the secret key is not stored in clear"
    );
    assert!(
        !row_text.contains("\"sk_") && !row_text.contains(":sk_"),
        "no plaintext sk_ value in the teams row: {row_text}"
    );
    let hex_secret: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
    assert!(!row_text.contains(&hex_secret), "nor hex-encoded");
    assert_eq!(
        app.count("SELECT count(*) FROM teams WHERE secret_key_sha256 IS NOT NULL")
            .await,
        1
    );
    let res = app
        .client
        .get(app.url("/api/conversations/tickets"))
        .bearer_auth(secret)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        200,
        "the shown secret key works for the operator API"
    );
}
