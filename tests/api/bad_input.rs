//! Hostile and broken input: the server answers every one with a 4xx in the contract's error
//! shape (never a 5xx, never a hang), stores nothing it refused, and stores odd but valid
//! text faithfully.

use crate::helpers::{assert_error, escaped, spawn_app, status_json, visitor, TestApp, TestTeam};
use serde_json::{json, Value};

/// `(what, query pairs, endpoints it applies to, whether a 200 is also right)`.
type QueryCase<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a [&'a str], bool);

async fn message_content(app: &TestApp, id: &str) -> (String, Option<String>) {
    let row = app
        .db()
        .await
        .query_one(
            &format!("SELECT content, distinct_id FROM messages WHERE id = '{id}'"),
            &[],
        )
        .await
        .expect("the message is stored");
    (row.get(0), row.get(1))
}

fn raw_post_head(team: &TestTeam, extra: &str) -> String {
    format!(
        "POST /api/conversations/widget/message HTTP/1.1\r\nX-Conversations-Token: {}\r\nContent-Type: application/json{extra}",
        team.token
    )
}

#[actix_web::test]
async fn bodies_that_are_not_a_json_object_are_400_invalid_json() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "malformed JSON",
            br#"{"distinct_id": "a@b.c", "message": "hi""#.to_vec(),
        ),
        (
            "trailing garbage",
            br#"{"distinct_id": "a@b.c", "message": "hi"} x"#.to_vec(),
        ),
        ("single quotes", br#"{'distinct_id': 'a@b.c'}"#.to_vec()),
        (
            "a JSON array",
            br#"[{"distinct_id": "a@b.c", "message": "hi"}]"#.to_vec(),
        ),
        ("a JSON string", br#""hello""#.to_vec()),
        ("a JSON number", b"42".to_vec()),
        ("JSON null", b"null".to_vec()),
        ("JSON true", b"true".to_vec()),
        ("an empty body", Vec::new()),
        ("only whitespace", b"   \n ".to_vec()),
        ("form encoding", b"distinct_id=a%40b.c&message=hi".to_vec()),
        (
            "invalid UTF-8 in a string",
            b"{\"distinct_id\": \"abc@x.y\", \"message\": \"\xff\xfe\xc3\x28\"}".to_vec(),
        ),
        (
            "a lone surrogate escape",
            br#"{"distinct_id": "abc@x.y", "message": "\ud800"}"#.to_vec(),
        ),
        ("10,000 nested arrays", "[".repeat(10_000).into_bytes()),
        (
            "10,000 nested objects",
            "{\"a\":".repeat(10_000).into_bytes(),
        ),
        (
            "deep nesting in a field",
            format!(
                "{{\"distinct_id\": \"abc@x.y\", \"message\": \"hi\", \"traits\": {}{}}}",
                "[".repeat(5_000),
                "]".repeat(5_000)
            )
            .into_bytes(),
        ),
    ];
    let mut failures = Vec::new();

    for (what, body) in cases {
        // Act
        let res = app.post_raw(&team.token, body).await;
        let (status, err) = status_json(res).await;

        // Assert
        let acceptable = status == 400
            && (err["code"] == "invalid_json" || err["code"] == "validation_error")
            && err["error"].as_str().is_some_and(|e| !e.is_empty());
        if !acceptable {
            failures.push(format!(
                "{what}: expected 400 invalid_json, got {status} {err}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(app.stored().await, (0, 0), "nothing was stored");
}

#[actix_web::test]
async fn a_body_that_is_not_an_object_is_reported_as_invalid_json() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;

    for body in ["[]", "\"x\"", "1", "{"] {
        // Act
        let res = app.post_raw(&team.token, body).await;
        // Assert
        assert_error(res, 400, "invalid_json").await;
    }
}

#[actix_web::test]
async fn every_field_of_the_wrong_type_is_400_naming_the_field() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let wrong: [(&str, Value); 5] = [
        ("a number", json!(7)),
        ("a float", json!(1.5)),
        ("an array", json!(["x"])),
        ("an object", json!({"x": 1})),
        ("a boolean", json!(true)),
    ];
    let mut failures = Vec::new();

    for field in [
        "distinct_id",
        "message",
        "ticket_id",
        "client_message_id",
        "traits",
        "identity_hash",
    ] {
        for (kind, value) in &wrong {
            if field == "traits" && kind == &"an object" {
                continue; // an object is the right type for traits
            }
            let mut body = json!({"distinct_id": "typed@example.com", "message": "hi"});
            body[field] = value.clone();

            // Act
            let (status, err) = status_json(app.post_message(&team.token, &body).await).await;

            // Assert
            if status != 400 || err["code"] != "validation_error" || err["field"] != field {
                failures.push(format!(
                    "{field} as {kind}: expected 400 field {field}, got {status} {err}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(app.stored().await, (0, 0), "nothing was stored");
}

#[actix_web::test]
async fn sql_looking_and_unusual_unicode_text_is_stored_faithfully_and_returned_escaped() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let cases = [
        (
            "o'brien\";--@example.com",
            "'); DROP TABLE messages; -- \" OR 1=1 /* $1 %s \\x00",
        ),
        (
            "robert');DROP_TABLE_students;--",
            "SELECT * FROM teams WHERE '1'='1'",
        ),
        (
            "😀visitor🧑‍🚀@example.com",
            "emoji 😀🧑‍🚀👍🏽 and 𝕏 (4-byte UTF-8)",
        ),
        (
            "\u{202e}moc.elpmaxe@resu",
            "right-to-left \u{202e}override\u{202c} and \u{200f}mark עברית العربية",
        ),
        (
            "user+tag%27@example.com",
            "percent %27 %00 and backslash \\ and unicode escapes \\u0000",
        ),
    ];
    let mut failures = Vec::new();

    for (who, text) in cases {
        // Act
        let (status, body) = status_json(
            app.post_message(&team.token, &json!({"distinct_id": who, "message": text}))
                .await,
        )
        .await;
        if status != 201 {
            failures.push(format!(
                "{who:?} / {text:?}: expected 201, got {status} {body}"
            ));
            continue;
        }
        let ticket = body["ticket_id"].as_str().unwrap();
        let (stored, stored_who) =
            message_content(&app, body["message_id"].as_str().unwrap()).await;
        let (gs, page) = status_json(
            app.get_messages(&team.token, ticket, &[("distinct_id", who)])
                .await,
        )
        .await;
        let (ls, list) =
            status_json(app.get_tickets(&team.token, &[("distinct_id", who)]).await).await;

        // Assert
        if stored != text || stored_who.as_deref() != Some(who) {
            failures.push(format!(
                "{who:?}: stored {stored_who:?} / {stored:?}, sent {text:?}"
            ));
        }
        if gs != 200 || page["messages"][0]["content"] != escaped(text).as_str() {
            failures.push(format!("{who:?}: GET messages {gs} returned {page}"));
        }
        if ls != 200
            || list["count"] != 1
            || list["results"][0]["last_message"] != escaped(text).as_str()
        {
            failures.push(format!("{who:?}: GET tickets {ls} returned {list}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        app.count("SELECT count(*) FROM teams").await,
        1,
        "no table was harmed"
    );
}

#[actix_web::test]
async fn huge_query_values_are_refused_with_a_4xx_never_a_5xx() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let who = visitor("huge");
    let ticket = app.open_ticket(&team.token, &who, "hi").await;
    let digits = "9".repeat(5_000);
    let long_after = format!("2026-01-01T00:00:00.{}Z", "1".repeat(10_000));
    let garbage = "x".repeat(10_000);
    let long_id = "d".repeat(10_000);
    // `(what, query, endpoints, whether a 200 is also right)`
    let cases: Vec<QueryCase> = vec![
        // 5000 digits is an integer beyond the range: clamped (200) or refused (400).
        (
            "limit with 5000 digits",
            vec![("distinct_id", &who), ("limit", &digits)],
            &["messages", "tickets"],
            true,
        ),
        (
            "offset with 5000 digits",
            vec![("distinct_id", &who), ("offset", &digits)],
            &["tickets"],
            true,
        ),
        // 10,000 fraction digits is still an RFC 3339 time: may be truncated and answered.
        (
            "after with 10 KB of fraction",
            vec![("distinct_id", &who), ("after", &long_after)],
            &["messages"],
            true,
        ),
        (
            "after with 10 KB of garbage",
            vec![("distinct_id", &who), ("after", &garbage)],
            &["messages"],
            false,
        ),
        (
            "status of 10 KB",
            vec![("distinct_id", &who), ("status", &garbage)],
            &["tickets"],
            false,
        ),
        (
            "distinct_id of 10 KB",
            vec![("distinct_id", &long_id)],
            &["messages", "tickets"],
            false,
        ),
    ];
    let mut failures = Vec::new();

    for (what, query, endpoints, may_succeed) in &cases {
        for endpoint in *endpoints {
            // Act
            let res = if *endpoint == "messages" {
                app.get_messages(&team.token, &ticket, query).await
            } else {
                app.get_tickets(&team.token, query).await
            };
            let (status, body) = (res.status().as_u16(), res.text().await.unwrap());

            // Assert
            let json: Option<Value> = serde_json::from_str(&body).ok();
            let refused = (400..500).contains(&status)
                && json.as_ref().is_some_and(|v| v["code"].is_string());
            if !(refused || (*may_succeed && status == 200)) {
                failures.push(format!(
                    "{what} on GET {endpoint}: got {status} {body:.200}"
                ));
            }
        }
    }
    let path = format!(
        "/api/conversations/widget/messages/{}?distinct_id={who}",
        "f".repeat(10_000)
    );
    let res = app.get_with_headers(Some(&team.token), &path, &[]).await;
    let status = res.status().as_u16();
    if !(400..500).contains(&status) {
        failures.push(format!("10 KB ticket id in the path: got {status}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[actix_web::test]
async fn an_unknown_route_is_404_json_with_code_not_found() {
    // Arrange
    let app = spawn_app().await;

    for path in [
        "/api/nope",
        "/api/conversations/widget/unknown",
        "/",
        "/api/conversations/widget/message/extra",
    ] {
        // Act
        let res = app.client.get(app.url(path)).send().await.unwrap();
        // Assert
        let body = assert_error(res, 404, "not_found").await;
        assert!(body["error"].is_string(), "{path}: {body}");
    }
}

#[actix_web::test]
async fn a_body_over_64_kib_with_its_content_length_is_413_and_stores_nothing() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let body = json!({"distinct_id": visitor("big"), "message": "x".repeat(65 * 1024)});

    // Act
    let res = app.post_message(&team.token, &body).await;

    // Assert
    assert_error(res, 413, "payload_too_large").await;
    assert_eq!(app.stored().await, (0, 0), "nothing was stored");
}

#[actix_web::test]
async fn a_body_over_64_kib_within_the_field_limits_is_413_not_a_validation_error() {
    // Arrange: 66 KiB made of traits padding only — every field is valid on its own.
    let app = spawn_app().await;
    let team = app.create_team().await;
    let body = format!(
        "{{\"distinct_id\": \"{}\", \"message\": \"hi\"{}}}",
        visitor("pad"),
        " ".repeat(66 * 1024)
    );

    // Act
    let res = app.post_raw(&team.token, body).await;

    // Assert
    assert_error(res, 413, "payload_too_large").await;
    assert_eq!(app.stored().await, (0, 0));
}

#[actix_web::test]
async fn a_body_of_exactly_64_kib_is_accepted() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let prefix = format!(
        "{{\"distinct_id\": \"{}\", \"message\": \"hi\"",
        visitor("edge")
    );
    let body = format!("{prefix}{}}}", " ".repeat(64 * 1024 - prefix.len() - 1));
    assert_eq!(body.len(), 64 * 1024);

    // Act
    let res = app.post_raw(&team.token, body).await;

    // Assert
    assert_eq!(res.status(), 201, "64 KiB is within the limit");
}

#[actix_web::test]
async fn a_chunked_body_over_64_kib_without_content_length_is_413_and_stores_nothing() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let json = format!(
        "{{\"distinct_id\": \"{}\", \"message\": \"{}\"}}",
        visitor("chunked"),
        "x".repeat(9_000)
    ) + &" ".repeat(70 * 1024);
    let mut body = Vec::new();
    for chunk in json.as_bytes().chunks(4096) {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");

    // Act
    let res = app
        .raw_request(
            &raw_post_head(&team, "\r\nTransfer-Encoding: chunked"),
            &body,
        )
        .await;

    // Assert
    assert_eq!(res.status, 413, "{res:?}");
    assert_eq!(res.json()["code"], "payload_too_large");
    assert_eq!(app.stored().await, (0, 0), "nothing was stored");
}

#[actix_web::test]
async fn a_small_chunked_body_is_accepted() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let json = format!(
        "{{\"distinct_id\": \"{}\", \"message\": \"chunked hello\"}}",
        visitor("smallchunk")
    );
    let (a, b) = json.as_bytes().split_at(10);
    let mut body = Vec::new();
    for chunk in [a, b] {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");

    // Act
    let res = app
        .raw_request(
            &raw_post_head(&team, "\r\nTransfer-Encoding: chunked"),
            &body,
        )
        .await;

    // Assert
    assert_eq!(res.status, 201, "{res:?}");
    assert_eq!(app.stored().await, (1, 1));
}

#[actix_web::test]
async fn a_content_length_understating_a_huge_body_never_lets_it_through() {
    // Arrange: the header claims 100 bytes; 70 KiB follow.
    let app = spawn_app().await;
    let team = app.create_team().await;
    let body = format!(
        "{{\"distinct_id\": \"liar@example.com\", \"message\": \"{}\"}}",
        "x".repeat(70 * 1024)
    );

    // Act
    let res = app
        .raw_request(
            &raw_post_head(&team, "\r\nContent-Length: 100"),
            body.as_bytes(),
        )
        .await;

    // Assert: the first 100 bytes are not a JSON object; nothing of the rest is stored.
    assert!(
        (400..500).contains(&res.status),
        "a lying Content-Length is refused with a 4xx, got {res:?}"
    );
    assert_eq!(app.stored().await, (0, 0), "nothing was stored");
}

/// PostgreSQL text cannot hold NUL: every field that is stored or queried refuses it with a
/// 400 naming the field (message bodies have it removed instead), never a 500.
#[actix_web::test]
async fn a_nul_character_anywhere_is_a_400_never_a_500() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let ticket = app
        .open_ticket(&team.token, "nul-visitor@example.com", "hi")
        .await;
    let base = &app.address;
    let c = &app.client;
    let widget = |r: reqwest::RequestBuilder| r.header("X-Conversations-Token", &team.token);
    let op = |r: reqwest::RequestBuilder| r.bearer_auth(&team.secret);
    let requests: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("trait value", widget(c.post(format!("{base}/api/conversations/widget/message")))
            .json(&json!({"distinct_id": "nul-visitor@example.com", "message": "x", "traits": {"name": "a\u{0}b"}}))),
        ("trait key", widget(c.post(format!("{base}/api/conversations/widget/message")))
            .json(&json!({"distinct_id": "nul-visitor@example.com", "message": "x", "ticket_id": ticket, "traits": {"a\u{0}": 1}}))),
        ("v1 distinct_id", widget(c.post(format!("{base}/api/conversations/v1/widget/message")))
            .json(&json!({"widget_session_id": uuid::Uuid::now_v7(), "message": "x", "distinct_id": "a\u{0}b"}))),
        ("inbox filter", op(c.get(format!("{base}/api/conversations/tickets?assignee=a%00")))),
        ("person path", op(c.delete(format!("{base}/api/conversations/persons/a%00b")))),
        ("block reason", op(c.post(format!("{base}/api/conversations/blocks")))
            .json(&json!({"ip": "203.0.113.1", "reason": "a\u{0}b"}))),
        ("assignee", op(c.patch(format!("{base}/api/conversations/tickets/{ticket}")))
            .json(&json!({"assignee": "a\u{0}b"}))),
        ("recipients", op(c.patch(format!("{base}/api/conversations/settings")))
            .json(&json!({"notification_recipients": ["a\u{0}@x.test"]}))),
        ("team name", c.post(format!("{base}/api/teams")).bearer_auth(crate::helpers::ADMIN_TOKEN)
            .json(&json!({"name": "a\u{0}b"}))),
    ];
    for (what, request) in requests {
        let res = request.send().await.unwrap();
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, 400, "{what}: {body}");
        assert_eq!(body["code"], "validation_error", "{what}: {body}");
    }
    // A NUL inside a message is removed, as the contract says, and the message stored.
    let res = app
        .post_message(&team.token, &json!({"distinct_id": "nul-visitor@example.com", "ticket_id": ticket, "message": "a\u{0}b"}))
        .await;
    assert_eq!(res.status(), 201);
}
