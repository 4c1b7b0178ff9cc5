//! `POST /api/conversations/widget/message`: what a visitor's message creates, every
//! validation rule, authentication, origins, ticket ownership, the honeypot, status changes
//! and idempotent retries.

use crate::helpers::{
    assert_error, is_utc_micros, is_uuid, skip_in_cluster, skip_in_cluster_without_shared_counters,
    spawn_app, status_json, visitor, TestApp, TestTeam,
};
use serde_json::{json, Value};

/// `(what, request headers, whether the origin is allowed)`.
type OriginCase<'a> = (&'a str, Vec<(&'a str, &'a str)>, bool);

async fn ticket_traits(app: &TestApp, ticket: &str) -> Value {
    app.db()
        .await
        .query_one(
            &format!("SELECT traits FROM tickets WHERE id = '{ticket}'"),
            &[],
        )
        .await
        .expect("the ticket is stored")
        .get(0)
}

async fn ticket_status_via_get(app: &TestApp, team: &TestTeam, ticket: &str, who: &str) -> String {
    let (status, page) = status_json(
        app.get_messages(&team.token, ticket, &[("distinct_id", who)])
            .await,
    )
    .await;
    assert_eq!(status, 200, "GET messages works: {page}");
    page["ticket_status"].as_str().unwrap().to_owned()
}

#[actix_web::test]
async fn a_first_message_opens_a_new_ticket_and_answers_201_with_ids_and_a_microsecond_timestamp() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;

    // Act
    let res = app
        .post_message(
            &team.token,
            &json!({"distinct_id": visitor("first"), "message": "Hello, I need help"}),
        )
        .await;

    // Assert
    let (status, body) = status_json(res).await;
    assert_eq!(status, 201, "a new message is created: {body}");
    let ticket = body["ticket_id"].as_str().expect("ticket_id is a string");
    let message = body["message_id"].as_str().expect("message_id is a string");
    assert!(is_uuid(ticket), "ticket_id {ticket} is a UUID");
    assert!(is_uuid(message), "message_id {message} is a UUID");
    assert_eq!(body["ticket_status"], "new", "a new ticket starts as new");
    let created_at = body["created_at"].as_str().expect("created_at is a string");
    assert!(
        is_utc_micros(created_at),
        "created_at {created_at:?} is UTC with microseconds, like 2026-01-01T12:00:00.123456Z"
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM messages WHERE id = '{message}' AND ticket_id = '{ticket}'"
        ))
        .await,
        1,
        "the acknowledged message is stored on the acknowledged ticket"
    );
    assert_eq!(app.stored().await, (1, 1), "one message, one ticket");
}

#[actix_web::test]
async fn a_follow_up_with_the_ticket_id_is_added_to_the_same_ticket() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let who = visitor("follow");
    let ticket = app.open_ticket(&team.token, &who, "first").await;

    // Act
    let (status, body) = status_json(
        app.post_message(
            &team.token,
            &json!({"distinct_id": who, "message": "second", "ticket_id": ticket}),
        )
        .await,
    )
    .await;

    // Assert
    assert_eq!(status, 201, "a follow-up is created: {body}");
    assert_eq!(body["ticket_id"], ticket.as_str(), "same ticket");
    assert_eq!(app.stored().await, (2, 1), "two messages on one ticket");
}

#[actix_web::test]
async fn traits_sent_with_a_follow_up_are_merged_into_the_tickets_traits() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let who = visitor("traits");
    let (_, first) = status_json(
        app.post_message(
            &team.token,
            &json!({"distinct_id": who, "message": "hi",
                    "traits": {"name": "John", "email": "old@example.com", "vip": true}}),
        )
        .await,
    )
    .await;
    let ticket = first["ticket_id"].as_str().unwrap().to_owned();
    assert_eq!(
        ticket_traits(&app, &ticket).await,
        json!({"name": "John", "email": "old@example.com", "vip": true}),
        "the first message's traits are stored on the ticket"
    );

    // Act
    let res = app
        .post_message(
            &team.token,
            &json!({"distinct_id": who, "message": "again", "ticket_id": ticket,
                    "traits": {"email": "new@example.com", "plan": "pro", "seats": 3}}),
        )
        .await;
    assert_eq!(res.status(), 201);

    // Assert
    assert_eq!(
        ticket_traits(&app, &ticket).await,
        json!({"name": "John", "email": "new@example.com", "vip": true, "plan": "pro", "seats": 3}),
        "new keys are added, repeated keys take the new value, the rest are kept"
    );
}

#[actix_web::test]
async fn the_name_trait_becomes_the_author_name_of_the_customers_messages() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let who = visitor("named");
    let (_, body) = status_json(
        app.post_message(
            &team.token,
            &json!({"distinct_id": who, "message": "hi", "traits": {"name": "John Smith"}}),
        )
        .await,
    )
    .await;
    let ticket = body["ticket_id"].as_str().unwrap();

    // Act
    let (_, page) = status_json(
        app.get_messages(&team.token, ticket, &[("distinct_id", &who)])
            .await,
    )
    .await;

    // Assert
    let m = &page["messages"][0];
    assert_eq!(m["author_type"], "customer");
    assert_eq!(
        m["author_name"], "John Smith",
        "author_name from traits.name"
    );
    assert_eq!(m["is_private"], false);
}

/// `(what is wrong, body, field named in the error)`.
fn invalid_bodies() -> Vec<(&'static str, Value, &'static str)> {
    let ok = "hello";
    let id = "visitor-1234@example.com";
    let many_keys: serde_json::Map<String, Value> =
        (0..51).map(|i| (format!("k{i}"), json!(i))).collect();
    vec![
        ("distinct_id missing", json!({"message": ok}), "distinct_id"),
        (
            "distinct_id a number",
            json!({"distinct_id": 12345, "message": ok}),
            "distinct_id",
        ),
        (
            "distinct_id an array",
            json!({"distinct_id": ["a@b.c"], "message": ok}),
            "distinct_id",
        ),
        (
            "distinct_id null",
            json!({"distinct_id": null, "message": ok}),
            "distinct_id",
        ),
        (
            "distinct_id empty",
            json!({"distinct_id": "", "message": ok}),
            "distinct_id",
        ),
        (
            "distinct_id only spaces",
            json!({"distinct_id": "   \t ", "message": ok}),
            "distinct_id",
        ),
        (
            "distinct_id 201 chars",
            json!({"distinct_id": "x".repeat(200) + "y", "message": ok}),
            "distinct_id",
        ),
        (
            "distinct_id with a space inside",
            json!({"distinct_id": "john doe@example.com", "message": ok}),
            "distinct_id",
        ),
        (
            "distinct_id with a tab inside",
            json!({"distinct_id": "john\tdoe", "message": ok}),
            "distinct_id",
        ),
        (
            "distinct_id with a newline inside",
            json!({"distinct_id": "john\ndoe", "message": ok}),
            "distinct_id",
        ),
        (
            "distinct_id with a BEL control char",
            json!({"distinct_id": "john\u{7}doe", "message": ok}),
            "distinct_id",
        ),
        (
            "distinct_id with a NUL",
            json!({"distinct_id": "john\u{0}doe", "message": ok}),
            "distinct_id",
        ),
        (
            "distinct_id with DEL",
            json!({"distinct_id": "john\u{7f}doe", "message": ok}),
            "distinct_id",
        ),
        (
            "distinct_id \"1\"",
            json!({"distinct_id": "1", "message": ok}),
            "distinct_id",
        ),
        (
            "distinct_id \"test\"",
            json!({"distinct_id": "test", "message": ok}),
            "distinct_id",
        ),
        (
            "distinct_id \"null\"",
            json!({"distinct_id": "null", "message": ok}),
            "distinct_id",
        ),
        (
            "distinct_id \"undefined\"",
            json!({"distinct_id": "undefined", "message": ok}),
            "distinct_id",
        ),
        (
            "distinct_id \"anonymous\"",
            json!({"distinct_id": "anonymous", "message": ok}),
            "distinct_id",
        ),
        (
            "distinct_id \"aaaa\"",
            json!({"distinct_id": "aaaa", "message": ok}),
            "distinct_id",
        ),
        (
            "distinct_id \"0000000\"",
            json!({"distinct_id": "0000000", "message": ok}),
            "distinct_id",
        ),
        (
            "distinct_id \" test \" (guessable after trimming)",
            json!({"distinct_id": " test ", "message": ok}),
            "distinct_id",
        ),
        ("message missing", json!({"distinct_id": id}), "message"),
        (
            "message a number",
            json!({"distinct_id": id, "message": 5}),
            "message",
        ),
        (
            "message null",
            json!({"distinct_id": id, "message": null}),
            "message",
        ),
        (
            "message empty",
            json!({"distinct_id": id, "message": ""}),
            "message",
        ),
        (
            "message only whitespace",
            json!({"distinct_id": id, "message": " \n\t  "}),
            "message",
        ),
        (
            "message only control characters",
            json!({"distinct_id": id, "message": "\u{0}\u{1}\u{7}\u{1b}"}),
            "message",
        ),
        (
            "message 10,001 chars",
            json!({"distinct_id": id, "message": "m".repeat(10_001)}),
            "message",
        ),
        (
            "traits a string",
            json!({"distinct_id": id, "message": ok, "traits": "name=John"}),
            "traits",
        ),
        (
            "traits an array",
            json!({"distinct_id": id, "message": ok, "traits": [1, 2]}),
            "traits",
        ),
        (
            "traits with a nested object",
            json!({"distinct_id": id, "message": ok, "traits": {"a": {"b": 1}}}),
            "traits",
        ),
        (
            "traits with a nested array",
            json!({"distinct_id": id, "message": ok, "traits": {"a": [1]}}),
            "traits",
        ),
        (
            "traits with 51 keys",
            json!({"distinct_id": id, "message": ok, "traits": many_keys}),
            "traits",
        ),
        (
            "traits with an empty key",
            json!({"distinct_id": id, "message": ok, "traits": {"": "x"}}),
            "traits",
        ),
        (
            "traits with a 201-char key",
            json!({"distinct_id": id, "message": ok, "traits": {"k".repeat(201): "x"}}),
            "traits",
        ),
        (
            "traits with a 501-char value",
            json!({"distinct_id": id, "message": ok, "traits": {"bio": "v".repeat(501)}}),
            "traits",
        ),
        (
            "ticket_id not a UUID",
            json!({"distinct_id": id, "message": ok, "ticket_id": "ticket-1"}),
            "ticket_id",
        ),
        (
            "ticket_id a number",
            json!({"distinct_id": id, "message": ok, "ticket_id": 42}),
            "ticket_id",
        ),
        (
            "ticket_id empty",
            json!({"distinct_id": id, "message": ok, "ticket_id": ""}),
            "ticket_id",
        ),
    ]
}

#[actix_web::test]
async fn each_invalid_field_is_refused_with_400_naming_the_field_and_stores_nothing() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let mut failures = Vec::new();

    for (what, body, field) in invalid_bodies() {
        // Act
        let (status, err) = status_json(app.post_message(&team.token, &body).await).await;

        // Assert (collected, so one run shows every broken rule)
        let named = err["field"].as_str().unwrap_or_default();
        if status != 400
            || err["code"] != "validation_error"
            || !(named == field || named.starts_with(&format!("{field}.")))
        {
            failures.push(format!(
                "{what}: expected 400 validation_error field {field}, got {status} {err}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        app.stored().await,
        (0, 0),
        "no refused request stored anything"
    );
}

#[actix_web::test]
async fn values_exactly_at_the_limits_are_accepted() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let fifty: serde_json::Map<String, Value> =
        (0..50).map(|i| (format!("k{i}"), json!(i))).collect();
    let cases = vec![
        (
            "distinct_id of 200 chars",
            json!({"distinct_id": "ab".repeat(100), "message": "hi"}),
        ),
        (
            "distinct_id padded with spaces",
            json!({"distinct_id": "  padded@example.com  ", "message": "hi"}),
        ),
        (
            "message of 10,000 chars",
            json!({"distinct_id": "limits@example.com", "message": "m".repeat(10_000)}),
        ),
        (
            "message of 10,000 chars plus surrounding whitespace",
            json!({"distinct_id": "limits@example.com", "message": format!("  {}\n ", "m".repeat(10_000))}),
        ),
        (
            "traits with 50 keys",
            json!({"distinct_id": "limits@example.com", "message": "hi", "traits": fifty}),
        ),
        (
            "trait key of 200 chars",
            json!({"distinct_id": "limits@example.com", "message": "hi", "traits": {"k".repeat(200): 1}}),
        ),
        (
            "trait value of 500 chars",
            json!({"distinct_id": "limits@example.com", "message": "hi", "traits": {"bio": "v".repeat(500)}}),
        ),
        (
            "trait values of every scalar type",
            json!({"distinct_id": "limits@example.com", "message": "hi", "traits": {"s": "x", "n": 1.5, "b": false, "z": null}}),
        ),
        (
            "traits null",
            json!({"distinct_id": "limits@example.com", "message": "hi", "traits": null}),
        ),
    ];
    let mut failures = Vec::new();
    for (what, body) in cases {
        // Act
        let (status, res) = status_json(app.post_message(&team.token, &body).await).await;
        // Assert
        if status != 201 {
            failures.push(format!("{what}: expected 201, got {status} {res}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[actix_web::test]
async fn control_characters_are_removed_from_messages_but_newlines_and_tabs_are_kept() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let who = visitor("ctrl");

    // Act
    let (status, body) = status_json(
        app.post_message(
            &team.token,
            &json!({"distinct_id": who, "message": "line\u{0}one\u{7}\nline\ttwo\u{1b}\u{8}!"}),
        )
        .await,
    )
    .await;

    // Assert
    assert_eq!(status, 201, "{body}");
    let id = body["message_id"].as_str().unwrap();
    let stored: String = app
        .db()
        .await
        .query_one(
            &format!("SELECT content FROM messages WHERE id = '{id}'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        stored, "lineone\nline\ttwo!",
        "NUL/BEL/ESC/BS removed, \\n and \\t kept"
    );
    let (_, page) = status_json(
        app.get_messages(
            &team.token,
            body["ticket_id"].as_str().unwrap(),
            &[("distinct_id", &who)],
        )
        .await,
    )
    .await;
    assert_eq!(page["messages"][0]["content"], "lineone\nline\ttwo!");
}

#[actix_web::test]
async fn a_missing_or_unknown_token_is_refused_with_401_on_every_widget_endpoint() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let who = visitor("auth");
    let ticket = app.open_ticket(&team.token, &who, "hello").await;
    let before = app.stored().await;
    let body = json!({"distinct_id": who, "message": "sneaky"});
    let messages = format!("/api/conversations/widget/messages/{ticket}?distinct_id={who}");
    let tickets = format!("/api/conversations/widget/tickets?distinct_id={who}");

    for token in [
        None,
        Some("pub_unknownTokenThatNoTeamHas00000000"),
        Some(""),
    ] {
        // Act
        let mut post = app
            .client
            .post(app.url("/api/conversations/widget/message"))
            .json(&body);
        if let Some(t) = token {
            post = post.header("X-Conversations-Token", t);
        }
        let post = post.send().await.unwrap();
        let get_m = app.get_with_headers(token, &messages, &[]).await;
        let get_t = app.get_with_headers(token, &tickets, &[]).await;

        // Assert
        assert_error(post, 401, "invalid_token").await;
        assert_error(get_m, 401, "invalid_token").await;
        assert_error(get_t, 401, "invalid_token").await;
    }
    let other_team = app.create_team().await;
    assert_error(
        app.get_messages(&other_team.secret, &ticket, &[("distinct_id", &who)])
            .await,
        401,
        "invalid_token",
    )
    .await;
    assert_eq!(app.stored().await, before, "nothing was stored");
}

#[actix_web::test]
async fn a_team_with_conversations_switched_off_is_refused_with_403_on_every_widget_endpoint() {
    // Arrange
    let app = spawn_app().await;
    let team = app
        .create_team_with(json!({"conversations_enabled": false}))
        .await;
    let who = visitor("off");

    // Act
    let post = app
        .post_message(&team.token, &json!({"distinct_id": who, "message": "hi"}))
        .await;
    let get_m = app
        .get_messages(
            &team.token,
            &uuid::Uuid::now_v7().to_string(),
            &[("distinct_id", &who)],
        )
        .await;
    let get_t = app.get_tickets(&team.token, &[("distinct_id", &who)]).await;

    // Assert
    assert_error(post, 403, "conversations_disabled").await;
    assert_error(get_m, 403, "conversations_disabled").await;
    assert_error(get_t, 403, "conversations_disabled").await;
    assert_eq!(app.stored().await, (0, 0), "nothing was stored");
}

#[actix_web::test]
async fn only_origins_in_the_allowed_widget_domains_may_call_the_widget_api() {
    // Arrange
    let app = spawn_app().await;
    let team = app
        .create_team_with(json!({
            "allowed_widget_domains": ["shop.example.com", "*.example.org"],
            "rate_limits": {"message_distinct_id_per_minute": 1000, "read_distinct_id_per_minute": 1000}
        }))
        .await;
    let cases: Vec<OriginCase> = vec![
        (
            "exact host",
            vec![("Origin", "https://shop.example.com")],
            true,
        ),
        (
            "exact host with a port",
            vec![("Origin", "https://shop.example.com:8443")],
            true,
        ),
        (
            "wildcard subdomain",
            vec![("Origin", "https://a.example.org")],
            true,
        ),
        (
            "deeper wildcard subdomain",
            vec![("Origin", "https://a.b.example.org")],
            true,
        ),
        (
            "no Origin, allowed Referer",
            vec![("Referer", "https://shop.example.com/cart?x=1")],
            true,
        ),
        (
            "unlisted host",
            vec![("Origin", "https://evil.test")],
            false,
        ),
        (
            "the bare wildcard domain is not a subdomain",
            vec![("Origin", "https://example.org")],
            false,
        ),
        (
            "listed host as a suffix of another",
            vec![("Origin", "https://evilshop.example.com")],
            false,
        ),
        (
            "listed host as a prefix of another",
            vec![("Origin", "https://shop.example.com.evil.test")],
            false,
        ),
        (
            "wildcard as a suffix of another domain",
            vec![("Origin", "https://a.notexample.org")],
            false,
        ),
        (
            "unlisted Referer",
            vec![("Referer", "https://evil.test/shop.example.com")],
            false,
        ),
        (
            "Origin wins over an allowed Referer",
            vec![
                ("Origin", "https://evil.test"),
                ("Referer", "https://shop.example.com/"),
            ],
            false,
        ),
        ("Origin null", vec![("Origin", "null")], false),
        ("neither Origin nor Referer", vec![], false),
    ];
    let mut failures = Vec::new();

    for (i, (what, headers, allowed)) in cases.into_iter().enumerate() {
        let who = format!("origin-case-{i}@example.com");
        let before = app.stored().await;

        // Act
        let (post_status, post_body) = status_json(
            app.post_message_with_headers(
                &team.token,
                &json!({"distinct_id": who, "message": "hi"}),
                &headers,
            )
            .await,
        )
        .await;
        let (get_status, get_body) = status_json(
            app.get_with_headers(
                Some(&team.token),
                &format!("/api/conversations/widget/tickets?distinct_id={who}"),
                &headers,
            )
            .await,
        )
        .await;

        // Assert
        let (want_post, want_get) = if allowed { (201, 200) } else { (403, 403) };
        if post_status != want_post
            || get_status != want_get
            || (!allowed
                && (post_body["code"] != "origin_not_allowed"
                    || get_body["code"] != "origin_not_allowed"))
        {
            failures.push(format!(
                "{what} {headers:?}: expected POST {want_post}/GET {want_get}, got POST {post_status} {post_body} / GET {get_status} {get_body}"
            ));
        }
        if !allowed && app.stored().await != before {
            failures.push(format!("{what}: a refused origin stored something"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[actix_web::test]
async fn a_team_with_no_allowed_domains_accepts_any_origin_or_none() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;

    for (i, headers) in [
        vec![("Origin", "https://anything.test")],
        vec![("Referer", "http://localhost:3000/page")],
        vec![],
    ]
    .into_iter()
    .enumerate()
    {
        // Act
        let res = app
            .post_message_with_headers(
                &team.token,
                &json!({"distinct_id": format!("anyorigin-{i}@example.com"), "message": "hi"}),
                &headers,
            )
            .await;
        // Assert
        assert_eq!(res.status(), 201, "{headers:?} is accepted");
    }
}

#[actix_web::test]
async fn a_follow_up_to_an_unknown_ticket_is_404_and_stores_nothing() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let who = visitor("unknown");
    app.open_ticket(&team.token, &who, "mine").await;
    let before = app.stored().await;

    // Act
    let res = app
        .post_message(
            &team.token,
            &json!({"distinct_id": who, "message": "hi", "ticket_id": uuid::Uuid::now_v7()}),
        )
        .await;

    // Assert
    assert_error(res, 404, "not_found").await;
    assert_eq!(app.stored().await, before, "nothing was stored");
}

#[actix_web::test]
async fn another_teams_ticket_is_not_found_even_with_the_same_distinct_id() {
    // Arrange
    let app = spawn_app().await;
    let (team_a, team_b) = (app.create_team().await, app.create_team().await);
    let who = visitor("shared");
    let ticket_a = app
        .open_ticket(&team_a.token, &who, "secret of team A")
        .await;
    let before = app.stored().await;

    // Act
    let post = app
        .post_message(
            &team_b.token,
            &json!({"distinct_id": who, "message": "hi", "ticket_id": ticket_a}),
        )
        .await;
    let get = app
        .get_messages(&team_b.token, &ticket_a, &[("distinct_id", &who)])
        .await;

    // Assert
    let post_err = assert_error(post, 404, "not_found").await;
    let get_err = assert_error(get, 404, "not_found").await;
    for body in [post_err, get_err] {
        assert!(
            !body.to_string().contains("secret of team A"),
            "another team's data never leaks: {body}"
        );
    }
    assert_eq!(app.stored().await, before, "nothing was stored");
}

#[actix_web::test]
async fn another_visitors_ticket_is_forbidden_for_posting_and_reading() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let (owner, intruder) = (visitor("owner"), visitor("intruder"));
    let ticket = app
        .open_ticket(&team.token, &owner, "my private problem")
        .await;
    let before = app.stored().await;

    // Act
    let post = app
        .post_message(
            &team.token,
            &json!({"distinct_id": intruder, "message": "hi", "ticket_id": ticket}),
        )
        .await;
    let get = app
        .get_messages(&team.token, &ticket, &[("distinct_id", &intruder)])
        .await;

    // Assert
    assert_error(post, 403, "forbidden").await;
    let body = assert_error(get, 403, "forbidden").await;
    assert!(
        !body.to_string().contains("my private problem"),
        "no content leaks: {body}"
    );
    assert_eq!(app.stored().await, before, "nothing was stored");
}

#[actix_web::test]
async fn a_filled_honeypot_answers_like_success_but_stores_nothing_and_is_flagged() {
    if skip_in_cluster(
        "a honeypot hit blocks the sender's IP (all test traffic is 127.0.0.1); the other node applies that block at once on its notice, and the test's follow-up requests assume it is not in force yet, as on one node, which applies its own automatic blocks only at its 2-s refresh",
    ) {
        return;
    }
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let who = visitor("bot");

    // Act
    let (status, body) = status_json(
        app.post_message(
            &team.token,
            &json!({"distinct_id": who, "message": "buy cheap pills", "_hp": "http://spam.test"}),
        )
        .await,
    )
    .await;

    // Assert: indistinguishable from a real answer …
    assert_eq!(status, 201, "a bot sees success: {body}");
    let ticket = body["ticket_id"].as_str().expect("ticket_id");
    assert!(is_uuid(ticket) && is_uuid(body["message_id"].as_str().unwrap()));
    assert_eq!(body["ticket_status"], "new");
    assert!(is_utc_micros(body["created_at"].as_str().unwrap()));
    // … but nothing exists.
    assert_eq!(app.stored().await, (0, 0), "the honeypot stores nothing");
    assert_error(
        app.get_messages(&team.token, ticket, &[("distinct_id", &who)])
            .await,
        404,
        "not_found",
    )
    .await;
    let (_, list) = status_json(app.get_tickets(&team.token, &[("distinct_id", &who)]).await).await;
    assert_eq!(list["count"], 0, "no ticket is listed: {list}");
    assert!(
        app.wait_for_flag(&team.id, "honeypot").await,
        "a honeypot suspicion flag is recorded within 3 seconds"
    );
}

#[actix_web::test]
async fn a_honeypot_follow_up_on_a_real_ticket_adds_nothing_to_it() {
    if skip_in_cluster(
        "a honeypot hit blocks the sender's IP (all test traffic is 127.0.0.1); the other node applies that block at once on its notice, and the test's follow-up requests assume it is not in force yet, as on one node, which applies its own automatic blocks only at its 2-s refresh",
    ) {
        return;
    }
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let who = visitor("hp-follow");
    let ticket = app.open_ticket(&team.token, &who, "real").await;

    // Act
    let res = app
        .post_message(
            &team.token,
            &json!({"distinct_id": who, "message": "spam", "ticket_id": ticket, "_hp": "x"}),
        )
        .await;

    // Assert
    assert_eq!(res.status(), 201);
    let (_, page) = status_json(
        app.get_messages(&team.token, &ticket, &[("distinct_id", &who)])
            .await,
    )
    .await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(app.stored().await, (1, 1));
}

#[actix_web::test]
async fn a_ticket_stays_new_through_operator_replies_and_customer_follow_ups() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let who = visitor("status");
    let ticket = app.open_ticket(&team.token, &who, "help").await;

    // Act
    let reply = app
        .operator_post(
            &team.secret,
            &ticket,
            &json!({"content": "On it", "author_type": "human", "author_name": "Ann", "is_private": false}),
        )
        .await;
    assert_eq!(reply.status(), 201, "the operator reply is accepted");
    let after_reply = ticket_status_via_get(&app, &team, &ticket, &who).await;
    let (_, follow) = status_json(
        app.post_message(
            &team.token,
            &json!({"distinct_id": who, "message": "thanks", "ticket_id": ticket}),
        )
        .await,
    )
    .await;

    // Assert
    assert_eq!(after_reply, "new", "an operator reply keeps the status");
    assert_eq!(
        follow["ticket_status"], "new",
        "a customer message keeps `new`"
    );
}

#[actix_web::test]
async fn a_customer_message_reopens_a_ticket_resolved_by_an_operator() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let who = visitor("reopen");
    let ticket = app.open_ticket(&team.token, &who, "help").await;
    let patched = app
        .client
        .patch(app.url(&format!("/api/conversations/tickets/{ticket}")))
        .bearer_auth(&team.secret)
        .json(&json!({"status": "resolved"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200, "the operator resolves the ticket");
    assert_eq!(
        ticket_status_via_get(&app, &team, &ticket, &who).await,
        "resolved"
    );

    // Act
    let (status, body) = status_json(
        app.post_message(
            &team.token,
            &json!({"distinct_id": who, "message": "it broke again", "ticket_id": ticket}),
        )
        .await,
    )
    .await;

    // Assert
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["ticket_status"], "open",
        "the POST answer shows the reopened ticket"
    );
    assert_eq!(
        ticket_status_via_get(&app, &team, &ticket, &who).await,
        "open"
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM tickets WHERE id = '{ticket}' AND status = 'open'"
        ))
        .await,
        1,
        "the reopened status is stored"
    );
}

#[actix_web::test]
async fn a_customer_message_keeps_a_pending_ticket_pending() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let who = visitor("pending");
    let ticket = app.open_ticket(&team.token, &who, "help").await;
    let patched = app
        .client
        .patch(app.url(&format!("/api/conversations/tickets/{ticket}")))
        .bearer_auth(&team.secret)
        .json(&json!({"status": "pending"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);

    // Act
    let (_, body) = status_json(
        app.post_message(
            &team.token,
            &json!({"distinct_id": who, "message": "any news?", "ticket_id": ticket}),
        )
        .await,
    )
    .await;

    // Assert
    assert_eq!(body["ticket_status"], "pending", "other statuses are kept");
}

/// A ticket resolved behind the server's back (SQL, e.g. a support tool writing to the
/// database) is still reopened: the server's per-ticket cache does not hide the change.
#[actix_web::test]
async fn a_ticket_resolved_directly_in_the_database_is_reopened_by_a_customer_message() {
    let app = spawn_app().await;
    let team = app.create_team().await;
    let who = visitor("sql-resolve");
    let ticket = app.open_ticket(&team.token, &who, "help").await;
    app.db()
        .await
        .execute(
            &format!("UPDATE tickets SET status = 'resolved' WHERE id = '{ticket}'"),
            &[],
        )
        .await
        .unwrap();
    let (_, body) = status_json(
        app.post_message(
            &team.token,
            &json!({"distinct_id": who, "message": "again", "ticket_id": ticket}),
        )
        .await,
    )
    .await;
    assert_eq!(
        body["ticket_status"], "open",
        "the resolved ticket is reopened: {body}"
    );
    assert_eq!(
        ticket_status_via_get(&app, &team, &ticket, &who).await,
        "open"
    );
}

#[actix_web::test]
async fn a_retried_post_with_the_same_client_message_id_answers_200_with_the_first_result() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let who = visitor("retry");
    let body =
        json!({"distinct_id": who, "message": "pay my invoice", "client_message_id": "c-42"});
    let (first_status, first) = status_json(app.post_message(&team.token, &body).await).await;
    assert_eq!(first_status, 201);

    // Act
    let (second_status, second) = status_json(app.post_message(&team.token, &body).await).await;
    let (third_status, third) = status_json(app.post_message(&team.token, &body).await).await;

    // Assert
    for (status, again) in [(second_status, &second), (third_status, &third)] {
        assert_eq!(status, 200, "a replay answers 200: {again}");
        for key in ["ticket_id", "message_id", "created_at"] {
            assert_eq!(again[key], first[key], "{key} is the first call's");
        }
        assert_eq!(again["ticket_status"], "new");
    }
    assert_eq!(app.stored().await, (1, 1), "one message, one ticket");
}

#[actix_web::test]
async fn a_client_message_id_is_scoped_to_its_visitor() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let (a, b) = (visitor("cmid-a"), visitor("cmid-b"));
    let (_, first) = status_json(
        app.post_message(
            &team.token,
            &json!({"distinct_id": a, "message": "x", "client_message_id": "same"}),
        )
        .await,
    )
    .await;

    // Act
    let (status, other) = status_json(
        app.post_message(
            &team.token,
            &json!({"distinct_id": b, "message": "x", "client_message_id": "same"}),
        )
        .await,
    )
    .await;

    // Assert
    assert_eq!(
        status, 201,
        "another visitor's key is a new message: {other}"
    );
    assert_ne!(other["message_id"], first["message_id"]);
    assert_ne!(
        other["ticket_id"], first["ticket_id"],
        "never another visitor's ticket"
    );
    assert_eq!(app.stored().await, (2, 2));
}

#[actix_web::test]
async fn a_retried_follow_up_with_the_same_client_message_id_is_stored_once() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let who = visitor("retry-follow");
    let ticket = app.open_ticket(&team.token, &who, "first").await;
    let body = json!({"distinct_id": who, "message": "second", "ticket_id": ticket, "client_message_id": "f-1"});
    let (s1, first) = status_json(app.post_message(&team.token, &body).await).await;

    // Act
    let (s2, second) = status_json(app.post_message(&team.token, &body).await).await;

    // Assert
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(second["message_id"], first["message_id"]);
    assert_eq!(second["created_at"], first["created_at"]);
    assert_eq!(app.stored().await, (2, 1));
}

#[actix_web::test]
async fn concurrent_identical_retries_store_exactly_one_message() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;

    for round in 0..5 {
        let who = visitor(&format!("race{round}"));
        let body = json!({"distinct_id": who, "message": "once", "client_message_id": "dup"});

        // Act: eight copies of the same request at once.
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (client, url, token, body) = (
                    app.client.clone(),
                    app.url("/api/conversations/widget/message"),
                    team.token.clone(),
                    body.clone(),
                );
                actix_web::rt::spawn(async move {
                    let res = client
                        .post(url)
                        .header("X-Conversations-Token", token)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    status_json(res).await
                })
            })
            .collect();
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap());
        }

        // Assert
        for (status, body) in &answers {
            assert!(
                *status == 200 || *status == 201,
                "round {round}: every copy succeeds, got {status} {body}"
            );
            assert_eq!(
                body["message_id"], answers[0].1["message_id"],
                "round {round}: same message"
            );
            assert_eq!(
                body["ticket_id"], answers[0].1["ticket_id"],
                "round {round}: same ticket"
            );
        }
        assert!(
            answers.iter().filter(|(s, _)| *s == 201).count() <= 1,
            "round {round}: at most one copy is reported as created"
        );
        assert_eq!(
            app.count(&format!(
                "SELECT count(*) FROM messages WHERE distinct_id = '{who}'"
            ))
            .await,
            1,
            "round {round}: exactly one message stored"
        );
        assert_eq!(
            app.count(&format!(
                "SELECT count(*) FROM tickets WHERE distinct_id = '{who}'"
            ))
            .await,
            1,
            "round {round}: exactly one ticket stored"
        );
    }
}

#[actix_web::test]
async fn the_same_text_three_times_from_one_visitor_is_flagged_as_repeated() {
    if skip_in_cluster_without_shared_counters(
        "counts the suspicion detector's per-node window; windows shared by the nodes come with issue 17 (runs when REDIS_URL is set)",
    ) {
        return;
    }
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let who = visitor("repeat");
    let ticket = app.open_ticket(&team.token, &who, "BUY NOW").await;

    // Act
    for _ in 0..2 {
        let res = app
            .post_message(
                &team.token,
                &json!({"distinct_id": who, "message": "BUY NOW", "ticket_id": ticket}),
            )
            .await;
        assert_eq!(res.status(), 201);
    }

    // Assert
    assert!(
        app.wait_for_flag(&team.id, "repeated_message").await,
        "a repeated_message suspicion flag is recorded within 3 seconds"
    );
}

#[actix_web::test]
async fn two_different_texts_are_not_flagged_as_repeated() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let who = visitor("varied");
    let ticket = app.open_ticket(&team.token, &who, "one").await;

    // Act
    for text in ["two", "three"] {
        app.post_message(
            &team.token,
            &json!({"distinct_id": who, "message": text, "ticket_id": ticket}),
        )
        .await;
    }

    // Assert
    assert!(
        !app.wait_for_flag(&team.id, "repeated_message").await,
        "distinct texts raise no repeated_message flag"
    );
}

#[actix_web::test]
async fn lengths_are_counted_in_characters_not_bytes() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let cases = vec![
        (
            "10,000 four-byte emoji",
            json!({"distinct_id": "emoji@example.com", "message": "😀".repeat(10_000)}),
        ),
        (
            "10,000 two-byte letters",
            json!({"distinct_id": "accents@example.com", "message": "é".repeat(10_000)}),
        ),
        (
            "distinct_id of 200 two-byte letters",
            json!({"distinct_id": "éa".repeat(100), "message": "hi"}),
        ),
        (
            "trait value of 500 two-byte letters",
            json!({"distinct_id": "tv@example.com", "message": "hi", "traits": {"bio": "ü".repeat(500)}}),
        ),
        (
            "trait key of 200 two-byte letters",
            json!({"distinct_id": "tk@example.com", "message": "hi", "traits": {"ß".repeat(200): 1}}),
        ),
    ];
    let mut failures = Vec::new();
    for (what, body) in cases {
        // Act
        let (status, res) = status_json(app.post_message(&team.token, &body).await).await;
        // Assert
        if status != 201 {
            failures.push(format!("{what}: expected 201, got {status} {res}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[actix_web::test]
async fn carriage_returns_and_c1_control_characters_are_removed_too() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;

    // Act
    let (status, body) = status_json(
        app.post_message(
            &team.token,
            &json!({"distinct_id": visitor("crlf"), "message": "a\r\nb\u{85}c\u{9b}d\u{7f}e"}),
        )
        .await,
    )
    .await;

    // Assert
    assert_eq!(status, 201, "{body}");
    let stored: String = app
        .db()
        .await
        .query_one(
            &format!(
                "SELECT content FROM messages WHERE id = '{}'",
                body["message_id"].as_str().unwrap()
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        stored, "a\nbcde",
        "CR, NEL, CSI and DEL are control characters"
    );
}

#[actix_web::test]
async fn a_distinct_id_with_unicode_whitespace_inside_is_refused() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let mut failures = Vec::new();

    for (what, id) in [
        ("no-break space", "john\u{a0}doe@example.com"),
        ("em space", "john\u{2003}doe@example.com"),
        ("line separator", "john\u{2028}doe@example.com"),
        ("ideographic space", "john\u{3000}doe@example.com"),
    ] {
        // Act
        let (status, err) = status_json(
            app.post_message(&team.token, &json!({"distinct_id": id, "message": "hi"}))
                .await,
        )
        .await;
        // Assert
        if status != 400 || err["field"] != "distinct_id" {
            failures.push(format!(
                "{what}: expected 400 field distinct_id, got {status} {err}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(app.stored().await, (0, 0));
}

#[actix_web::test]
async fn a_distinct_id_is_trimmed_so_the_visitor_finds_their_tickets_without_the_spaces() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let (_, body) = status_json(
        app.post_message(
            &team.token,
            &json!({"distinct_id": "  spaced@example.com \t", "message": "hi"}),
        )
        .await,
    )
    .await;
    let ticket = body["ticket_id"].as_str().unwrap();

    // Act
    let (status, list) = status_json(
        app.get_tickets(&team.token, &[("distinct_id", "spaced@example.com")])
            .await,
    )
    .await;
    let (read_status, _) = status_json(
        app.get_messages(
            &team.token,
            ticket,
            &[("distinct_id", "spaced@example.com")],
        )
        .await,
    )
    .await;

    // Assert
    assert_eq!(status, 200);
    assert_eq!(
        list["count"], 1,
        "the ticket belongs to the trimmed id: {list}"
    );
    assert_eq!(read_status, 200);
}

#[actix_web::test]
async fn origin_hosts_are_compared_case_insensitively() {
    // Arrange
    let app = spawn_app().await;
    let team = app
        .create_team_with(json!({"allowed_widget_domains": ["shop.example.com", "*.example.org"]}))
        .await;

    for (i, origin) in ["https://SHOP.Example.COM", "https://A.EXAMPLE.ORG"]
        .iter()
        .enumerate()
    {
        // Act
        let res = app
            .post_message_with_headers(
                &team.token,
                &json!({"distinct_id": format!("case-{i}@example.com"), "message": "hi"}),
                &[("Origin", origin)],
            )
            .await;
        // Assert
        assert_eq!(
            res.status(),
            201,
            "{origin} is the same host as an allowed one"
        );
    }
}

#[actix_web::test]
async fn any_filled_honeypot_value_is_a_decoy() {
    if skip_in_cluster(
        "a honeypot hit blocks the sender's IP (all test traffic is 127.0.0.1); the other node applies that block at once on its notice, and the test's follow-up requests assume it is not in force yet, as on one node, which applies its own automatic blocks only at its 2-s refresh",
    ) {
        return;
    }
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;

    for hp in [json!("x"), json!(" "), json!(true), json!(1), json!(["a"])] {
        // Act
        let res = app
            .post_message(
                &team.token,
                &json!({"distinct_id": visitor("hp"), "message": "spam", "_hp": hp}),
            )
            .await;
        // Assert
        assert_eq!(res.status(), 201, "_hp = {hp} answers like success");
    }
    assert_eq!(
        app.stored().await,
        (0, 0),
        "no honeypot request stored anything"
    );
    let real = app
        .post_message(
            &team.token,
            &json!({"distinct_id": visitor("human"), "message": "hi", "_hp": ""}),
        )
        .await;
    assert_eq!(real.status(), 201);
    assert_eq!(app.stored().await, (1, 1), "an empty _hp is a real widget");
}

#[actix_web::test]
async fn a_honeypot_of_number_zero_is_empty_but_the_text_zero_fills_it() {
    // Arrange: the one honeypot rule of both surfaces is JavaScript's truthiness.
    let app = spawn_app().await;
    let team = app.create_team().await;

    // Act: `0` is falsy, as an empty field of a real widget.
    let zero = app
        .post_message(
            &team.token,
            &json!({"distinct_id": visitor("hp0"), "message": "hi", "_hp": 0}),
        )
        .await;
    // Assert
    assert_eq!(zero.status(), 201);
    assert_eq!(
        app.stored().await,
        (1, 1),
        "_hp = 0 is a real widget's message"
    );

    // Act: `"0"` is a non-empty string: a bot filled the field.
    let text = app
        .post_message(
            &team.token,
            &json!({"distinct_id": visitor("hp0"), "message": "spam", "_hp": "0"}),
        )
        .await;
    // Assert
    assert_eq!(text.status(), 201, "a honeypot hit answers like success");
    assert_eq!(app.stored().await, (1, 1), "_hp = \"0\" stores nothing");
}

#[actix_web::test]
async fn a_retry_with_the_same_client_message_id_but_other_text_returns_the_first_message() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let who = visitor("edited");
    let (_, first) = status_json(
        app.post_message(
            &team.token,
            &json!({"distinct_id": who, "message": "first text", "client_message_id": "k"}),
        )
        .await,
    )
    .await;

    // Act
    let (status, again) = status_json(
        app.post_message(
            &team.token,
            &json!({"distinct_id": who, "message": "edited text", "client_message_id": "k"}),
        )
        .await,
    )
    .await;

    // Assert
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["message_id"], first["message_id"]);
    assert_eq!(app.stored().await, (1, 1), "nothing new is created");
}

#[actix_web::test]
async fn concurrent_identical_follow_ups_store_exactly_one_message() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let who = visitor("race-follow");
    let ticket = app.open_ticket(&team.token, &who, "first").await;
    let body = json!({"distinct_id": who, "message": "once", "ticket_id": ticket, "client_message_id": "f-dup"});

    // Act
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (client, url, token, body) = (
                app.client.clone(),
                app.url("/api/conversations/widget/message"),
                team.token.clone(),
                body.clone(),
            );
            actix_web::rt::spawn(async move {
                let res = client
                    .post(url)
                    .header("X-Conversations-Token", token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                status_json(res).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }

    // Assert
    for (status, body) in &answers {
        assert!(
            *status == 200 || *status == 201,
            "every copy succeeds: {status} {body}"
        );
        assert_eq!(
            body["message_id"], answers[0].1["message_id"],
            "same message"
        );
    }
    assert_eq!(app.stored().await, (2, 1), "exactly one follow-up stored");
}

#[actix_web::test]
async fn a_wrong_method_on_a_widget_route_answers_in_the_error_shape() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;

    for (method, path) in [
        (reqwest::Method::GET, "/api/conversations/widget/message"),
        (reqwest::Method::PUT, "/api/conversations/widget/message"),
        (reqwest::Method::DELETE, "/api/conversations/widget/tickets"),
    ] {
        // Act
        let res = app
            .client
            .request(method.clone(), app.url(path))
            .header("X-Conversations-Token", &team.token)
            .send()
            .await
            .unwrap();

        // Assert
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        let body: Option<Value> = serde_json::from_str(&text).ok();
        assert!(
            (400..500).contains(&status)
                && body
                    .as_ref()
                    .is_some_and(|b| b["code"].is_string() && b["error"].is_string()),
            "{method} {path}: every error is {{error, code}}, got {status} {text:?}"
        );
    }
}

#[actix_web::test]
async fn a_refused_follow_up_never_changes_the_tickets_traits() {
    if skip_in_cluster_without_shared_counters(
        "counts a per-node rate budget; budgets shared by the nodes come with issue 17 (runs when REDIS_URL is set)",
    ) {
        return;
    }
    // Arrange
    let app = spawn_app().await;
    let team = app
        .create_team_with(json!({"rate_limits": {"message_distinct_id_per_minute": 2}}))
        .await;
    let other_team = app.create_team().await;
    let owner = visitor("victim");
    let (_, body) = status_json(
        app.post_message(
            &team.token,
            &json!({"distinct_id": owner, "message": "hi", "traits": {"name": "Victim"}}),
        )
        .await,
    )
    .await;
    let ticket = body["ticket_id"].as_str().unwrap().to_owned();
    let evil = json!({"name": "<b>Hacked</b>", "email": "attacker@evil.test"});

    // Act: another visitor (403), another team (404), an invalid body (400), a 429.
    let forbidden = app
        .post_message(
            &team.token,
            &json!({"distinct_id": visitor("attacker"), "message": "x", "ticket_id": ticket, "traits": evil}),
        )
        .await;
    let cross_team = app
        .post_message(
            &other_team.token,
            &json!({"distinct_id": owner, "message": "x", "ticket_id": ticket, "traits": evil}),
        )
        .await;
    let invalid = app
        .post_message(
            &team.token,
            &json!({"distinct_id": owner, "message": "", "ticket_id": ticket, "traits": evil}),
        )
        .await;
    app.post_message(
        &team.token,
        &json!({"distinct_id": owner, "message": "2nd", "ticket_id": ticket}),
    )
    .await;
    let limited = app
        .post_message(
            &team.token,
            &json!({"distinct_id": owner, "message": "3rd", "ticket_id": ticket, "traits": evil}),
        )
        .await;

    // Assert
    assert_eq!(forbidden.status(), 403);
    assert_eq!(cross_team.status(), 404);
    assert_eq!(invalid.status(), 400);
    assert_eq!(limited.status(), 429);
    assert_eq!(
        ticket_traits(&app, &ticket).await,
        json!({"name": "Victim"}),
        "no refused request merged its traits"
    );
}

#[actix_web::test]
async fn the_created_at_a_post_returns_is_the_one_listed_so_polling_after_it_skips_the_message() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let who = visitor("echo");
    let (_, first) = status_json(
        app.post_message(&team.token, &json!({"distinct_id": who, "message": "mine"}))
            .await,
    )
    .await;
    let ticket = first["ticket_id"].as_str().unwrap();

    // Act
    let (_, page) = status_json(
        app.get_messages(&team.token, ticket, &[("distinct_id", &who)])
            .await,
    )
    .await;
    let (_, after) = status_json(
        app.get_messages(
            &team.token,
            ticket,
            &[
                ("distinct_id", &who),
                ("after", first["created_at"].as_str().unwrap()),
            ],
        )
        .await,
    )
    .await;

    // Assert
    assert_eq!(page["messages"][0]["id"], first["message_id"]);
    assert_eq!(
        page["messages"][0]["created_at"], first["created_at"],
        "one timestamp, everywhere"
    );
    assert_eq!(
        after["messages"],
        json!([]),
        "the visitor does not see their own message twice"
    );
}

#[actix_web::test]
async fn a_client_message_id_is_scoped_to_its_team() {
    // Arrange
    let app = spawn_app().await;
    let (a, b) = (app.create_team().await, app.create_team().await);
    let who = visitor("twoteams");
    let body = json!({"distinct_id": who, "message": "same", "client_message_id": "c-1"});
    let (s1, first) = status_json(app.post_message(&a.token, &body).await).await;

    // Act
    let (s2, second) = status_json(app.post_message(&b.token, &body).await).await;

    // Assert
    assert_eq!(
        (s1, s2),
        (201, 201),
        "team B's first message is new: {second}"
    );
    assert_ne!(
        second["ticket_id"], first["ticket_id"],
        "never another team's ticket"
    );
    assert_eq!(app.stored().await, (2, 2));
}
