//! CORS: browsers call the widget API cross-origin with a custom header, so preflights
//! succeed and every answer — errors included — carries `Access-Control-Allow-Origin`,
//! otherwise the widget sees a network failure instead of the status.

use crate::helpers::{spawn_app, visitor};
use reqwest::Response;
use serde_json::json;

const ORIGIN: &str = "https://shop.example.com";

fn allow_origin(res: &Response) -> Option<String> {
    res.headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_owned())
}

#[actix_web::test]
async fn a_preflight_for_posting_a_message_allows_the_widgets_headers() {
    // Arrange
    let app = spawn_app().await;

    for path in [
        "/api/conversations/widget/message",
        "/api/conversations/widget/tickets",
        "/api/conversations/widget/messages/0190f1c2-0000-7000-8000-000000000000",
    ] {
        // Act
        let res = app
            .client
            .request(reqwest::Method::OPTIONS, app.url(path))
            .header("Origin", ORIGIN)
            .header(
                "Access-Control-Request-Method",
                if path.ends_with("message") {
                    "POST"
                } else {
                    "GET"
                },
            )
            .header(
                "Access-Control-Request-Headers",
                "content-type,x-conversations-token",
            )
            .send()
            .await
            .unwrap();

        // Assert
        assert!(
            res.status().is_success(),
            "{path}: preflight succeeds, got {}",
            res.status()
        );
        let origin = allow_origin(&res);
        assert!(
            origin.as_deref() == Some(ORIGIN) || origin.as_deref() == Some("*"),
            "{path}: the origin is allowed, got {origin:?}"
        );
        let headers = res
            .headers()
            .get("access-control-allow-headers")
            .map(|v| v.to_str().unwrap().to_ascii_lowercase())
            .unwrap_or_default();
        for needed in ["content-type", "x-conversations-token"] {
            assert!(
                headers.contains(needed) || headers == "*",
                "{path}: Access-Control-Allow-Headers covers {needed}: {headers:?}"
            );
        }
    }
}

#[actix_web::test]
async fn error_answers_carry_the_allow_origin_header_too() {
    // Arrange
    let app = spawn_app().await;
    let team = app
        .create_team_with(json!({"allowed_widget_domains": ["shop.example.com"],
                                 "rate_limits": {"message_distinct_id_per_minute": 1}}))
        .await;
    let who = visitor("cors");
    let headers = [("Origin", ORIGIN)];
    let created = app
        .post_message_with_headers(
            &team.token,
            &json!({"distinct_id": who, "message": "hi"}),
            &headers,
        )
        .await;
    assert_eq!(created.status(), 201);
    let created_origin = allow_origin(&created);
    let created_ticket = created.json::<serde_json::Value>().await.unwrap()["ticket_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        created_origin.as_deref() == Some(ORIGIN) || created_origin.as_deref() == Some("*"),
        "a 201 carries Access-Control-Allow-Origin, got {created_origin:?}"
    );
    let cases: Vec<(&str, Response)> = vec![
        (
            "400 validation",
            app.post_message_with_headers(&team.token, &json!({"distinct_id": who}), &headers)
                .await,
        ),
        (
            "401 unknown token",
            app.post_message_with_headers(
                "pub_nope",
                &json!({"distinct_id": who, "message": "x"}),
                &headers,
            )
            .await,
        ),
        (
            "404 unknown ticket",
            app.get_with_headers(
                Some(&team.token),
                &format!(
                    "/api/conversations/widget/messages/{}?distinct_id={who}",
                    uuid::Uuid::now_v7()
                ),
                &headers,
            )
            .await,
        ),
        (
            "403 another visitor's ticket",
            app.get_with_headers(
                Some(&team.token),
                &format!(
                    "/api/conversations/widget/messages/{}?distinct_id=intruder-99@example.com",
                    created_ticket
                ),
                &headers,
            )
            .await,
        ),
        (
            "429 rate limited",
            app.post_message_with_headers(
                &team.token,
                &json!({"distinct_id": who, "message": "again"}),
                &headers,
            )
            .await,
        ),
        (
            "413 too large",
            app.post_message_with_headers(
                &team.token,
                &json!({"distinct_id": who, "message": "x".repeat(70_000)}),
                &headers,
            )
            .await,
        ),
    ];

    for (what, res) in cases {
        // Assert
        let status = res.status().as_u16();
        let origin = allow_origin(&res);
        assert!(
            origin.as_deref() == Some(ORIGIN) || origin.as_deref() == Some("*"),
            "{what} (status {status}) carries Access-Control-Allow-Origin, got {origin:?}"
        );
    }
}

#[actix_web::test]
async fn a_429_exposes_retry_after_to_the_browser() {
    // Arrange
    let app = spawn_app().await;
    let team = app
        .create_team_with(json!({"rate_limits": {"message_distinct_id_per_minute": 1}}))
        .await;
    let who = visitor("expose");
    let headers = [("Origin", ORIGIN)];
    app.post_message_with_headers(
        &team.token,
        &json!({"distinct_id": who, "message": "1"}),
        &headers,
    )
    .await;

    // Act
    let res = app
        .post_message_with_headers(
            &team.token,
            &json!({"distinct_id": who, "message": "2"}),
            &headers,
        )
        .await;

    // Assert
    assert_eq!(res.status(), 429);
    let exposed = res
        .headers()
        .get("access-control-expose-headers")
        .map(|v| v.to_str().unwrap().to_ascii_lowercase())
        .unwrap_or_default();
    assert!(
        exposed.contains("retry-after"),
        "a cross-origin script can read Retry-After: {exposed:?}"
    );
}
