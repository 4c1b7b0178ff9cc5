//! The posthog-js surface, `/api/conversations/v1/widget/…`: what the SDK sends and needs.

use crate::helpers::{
    assert_error, skip_in_cluster_without_shared_counters, spawn_app, spawn_app_with, TestApp,
    TestTeam,
};
use serde_json::{json, Value};
use uuid::Uuid;

fn url(app: &TestApp, path: &str) -> String {
    format!("{}/api/conversations/v1/widget{path}", app.address)
}

async fn send(app: &TestApp, team: &TestTeam, body: Value) -> reqwest::Response {
    app.client
        .post(url(app, "/message"))
        .header("X-Conversations-Token", &team.token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn first_message(app: &TestApp, team: &TestTeam, session: Uuid, text: &str) -> Value {
    let res = send(
        app,
        team,
        json!({"widget_session_id": session, "message": text, "ticket_id": null,
               "distinct_id": "anon-123", "traits": {"name": null, "email": null},
               "session_id": "s1", "session_context": {"url": "http://shop.test/"}}),
    )
    .await;
    assert_eq!(res.status(), 200, "the SDK only accepts exactly 200");
    res.json().await.unwrap()
}

async fn messages(app: &TestApp, team: &TestTeam, ticket: &str, query: &str) -> reqwest::Response {
    app.client
        .get(format!(
            "{}?{query}",
            url(app, &format!("/messages/{ticket}"))
        ))
        .header("X-Conversations-Token", &team.token)
        .send()
        .await
        .unwrap()
}

#[actix_web::test]
async fn a_honeypot_of_number_zero_is_empty_but_the_text_zero_fills_it() {
    // Arrange: the one honeypot rule of both surfaces is JavaScript's truthiness.
    let app = spawn_app().await;
    let team = app.create_team().await;
    let body = |hp: Value| json!({"widget_session_id": Uuid::now_v7(), "message": "hi", "_hp": hp});

    // Act: `0` is falsy, as an empty field of a real widget.
    let zero = send(&app, &team, body(json!(0))).await;
    // Assert
    assert_eq!(zero.status(), 200, "_hp = 0 is a real widget's message");
    assert_eq!(app.stored().await, (1, 1));

    // Act: `"0"` is a non-empty string: a bot filled the field.
    let text = send(&app, &team, body(json!("0"))).await;
    // Assert
    let err = assert_error(text, 400, "validation_error").await;
    assert_eq!(err["field"], "_hp");
    assert_eq!(app.stored().await, (1, 1), "_hp = \"0\" stores nothing");
}

#[actix_web::test]
async fn a_first_message_answers_200_with_an_offset_timestamp_that_round_trips_as_after() {
    let app = spawn_app().await;
    let team = app.create_team().await;
    let session = Uuid::now_v7();

    let sent = first_message(&app, &team, session, "Hello <b>there</b>").await;
    let created = sent["created_at"].as_str().unwrap();
    assert!(
        regex_like_offset(created),
        "created_at {created} has microseconds and +00:00"
    );
    assert_eq!(sent["ticket_status"], "new");
    assert_eq!(sent["unread_count"], 0);
    let ticket = sent["ticket_id"].as_str().unwrap();

    // The SDK polls with after = created_at verbatim: its own message must not come back,
    // whether the `+` arrives encoded or raw (then decoded to a space).
    for after in [created.replace('+', "%2B"), created.to_owned()] {
        let res = messages(
            &app,
            &team,
            ticket,
            &format!("widget_session_id={session}&after={after}&limit=50&_=1"),
        )
        .await;
        assert_eq!(res.status(), 200);
        let page: Value = res.json().await.unwrap();
        assert_eq!(
            page["messages"].as_array().unwrap().len(),
            0,
            "after={after}"
        );
    }
    let page: Value = messages(&app, &team, ticket, &format!("widget_session_id={session}"))
        .await
        .json()
        .await
        .unwrap();
    let m = &page["messages"][0];
    assert_eq!(
        m["content"], "Hello <b>there</b>",
        "raw text: the SDK renders it as text"
    );
    assert!(m.get("is_private").is_none(), "no is_private key at all");
    assert!(m["rich_content"].is_null());
    assert_eq!(m["created_at"], created);
}

fn regex_like_offset(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 32
        && s.ends_with("+00:00")
        && b[19] == b'.'
        && s[20..26].bytes().all(|c| c.is_ascii_digit())
}

#[actix_web::test]
async fn tokens_and_keys_are_refused_as_the_sdk_expects() {
    let app = spawn_app().await;
    let team = app.create_team().await;
    let disabled = app
        .create_team_with(json!({"conversations_enabled": false}))
        .await;
    let body = json!({"widget_session_id": Uuid::now_v7(), "message": "hi"});

    let res = app
        .client
        .post(url(&app, "/message"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_error(res, 403, "invalid_token").await;
    let res = app
        .client
        .post(url(&app, "/message"))
        .header("X-Conversations-Token", "pub_nope")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_error(res, 403, "invalid_token").await;
    assert_error(
        send(&app, &disabled, body.clone()).await,
        403,
        "conversations_disabled",
    )
    .await;
    let res = send(&app, &team, json!({"message": "hi"})).await;
    let err = assert_error(res, 400, "validation_error").await;
    assert_eq!(err["field"], "widget_session_id");
    let res = send(
        &app,
        &team,
        json!({"widget_session_id": Uuid::now_v7(), "message": "hi", "_hp": "x"}),
    )
    .await;
    assert_error(res, 400, "validation_error").await;
    assert_eq!(
        app.count("SELECT count(*) FROM messages").await,
        0,
        "nothing refused is stored"
    );
    let res = app
        .client
        .get(format!(
            "{}?widget_session_id={}&status=closed",
            url(&app, "/tickets"),
            Uuid::now_v7()
        ))
        .header("X-Conversations-Token", &team.token)
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "validation_error").await;
}

#[actix_web::test]
async fn a_ticket_answers_only_to_the_session_it_was_opened_with() {
    let app = spawn_app().await;
    let team = app.create_team().await;
    let (mine, theirs) = (Uuid::now_v7(), Uuid::now_v7());
    let sent = first_message(&app, &team, mine, "private matter").await;
    let ticket = sent["ticket_id"].as_str().unwrap();

    let res = messages(&app, &team, ticket, &format!("widget_session_id={theirs}")).await;
    assert_error(res, 403, "forbidden").await;
    let res = send(
        &app,
        &team,
        json!({"widget_session_id": theirs, "ticket_id": ticket, "message": "me too"}),
    )
    .await;
    assert_error(res, 403, "forbidden").await;
    let list: Value = app
        .client
        .get(format!(
            "{}?widget_session_id={theirs}",
            url(&app, "/tickets")
        ))
        .header("X-Conversations-Token", &team.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["count"], 0);
    // The linked distinct_id never grants access on the documented surface either.
    let res = app
        .get_messages(&team.token, ticket, &[("distinct_id", "anon-123")])
        .await;
    assert_error(res, 403, "forbidden").await;
    // And a documented-surface ticket is not reachable by a session.
    let documented = app
        .open_ticket(&team.token, "visitor@example.com", "hi")
        .await;
    let res = messages(
        &app,
        &team,
        &documented,
        &format!("widget_session_id={mine}"),
    )
    .await;
    assert_error(res, 403, "forbidden").await;
}

#[actix_web::test]
async fn unread_counts_follow_operator_replies_and_read_marks() {
    let app = spawn_app().await;
    let team = app.create_team().await;
    let session = Uuid::now_v7();
    let sent = first_message(&app, &team, session, "help").await;
    let ticket = sent["ticket_id"].as_str().unwrap();

    for body in [
        json!({"content": "on it"}),
        json!({"content": "note", "is_private": true}),
    ] {
        assert_eq!(
            app.operator_post(&team.secret, ticket, &body)
                .await
                .status(),
            201
        );
    }
    let page: Value = messages(&app, &team, ticket, &format!("widget_session_id={session}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        page["unread_count"], 1,
        "the public reply counts, the private note does not"
    );
    assert_eq!(
        page["messages"].as_array().unwrap().len(),
        2,
        "the note is never shown"
    );

    let res = app
        .client
        .post(url(&app, &format!("/messages/{ticket}/read")))
        .header("X-Conversations-Token", &team.token)
        .json(&json!({"widget_session_id": session}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"success": true, "unread_count": 0})
    );
    let list: Value = app
        .client
        .get(format!(
            "{}?widget_session_id={session}&limit=20&offset=0&_=5",
            url(&app, "/tickets")
        ))
        .header("X-Conversations-Token", &team.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["count"], 1);
    assert_eq!(list["results"][0]["unread_count"], 0);
    assert_eq!(list["results"][0]["ticket_number"], 1);
    assert_eq!(list["results"][0]["last_message"], "on it");
    assert_eq!(list["results"][0]["message_count"], 2);
}

#[actix_web::test]
async fn ticket_numbers_count_up_per_team_and_customer_messages_keep_a_resolved_status() {
    let app = spawn_app().await;
    let (a, b) = (app.create_team().await, app.create_team().await);
    let s = Uuid::now_v7();
    let mut numbers = vec![];
    for team in [&a, &a, &b] {
        let sent = first_message(&app, team, s, "hi").await;
        let list: Value = app
            .client
            .get(format!("{}?widget_session_id={s}", url(&app, "/tickets")))
            .header("X-Conversations-Token", &team.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let row = list["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == sent["ticket_id"])
            .cloned()
            .unwrap();
        numbers.push(row["ticket_number"].as_i64().unwrap());
    }
    assert_eq!(numbers, vec![1, 2, 1]);

    let sent = first_message(&app, &a, s, "again").await;
    let ticket = sent["ticket_id"].as_str().unwrap();
    let res = app
        .client
        .patch(format!(
            "{}/api/conversations/tickets/{ticket}",
            app.address
        ))
        .bearer_auth(&a.secret)
        .json(&json!({"status": "resolved"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = send(
        &app,
        &a,
        json!({"widget_session_id": s, "ticket_id": ticket, "message": "thanks"}),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap()["ticket_status"],
        "resolved",
        "this surface keeps the status"
    );
}

#[actix_web::test]
async fn reads_and_writes_have_separate_team_budgets_and_sessions_their_own() {
    if skip_in_cluster_without_shared_counters(
        "counts a per-node rate budget; budgets shared by the nodes come with issue 17 (runs when REDIS_URL is set)",
    ) {
        return;
    }
    let app = spawn_app().await;
    let team = app
        .create_team_with(
            json!({"rate_limits": {"team_reads_per_hour": 2, "widget_session_per_minute": 1000}}),
        )
        .await;
    let s = Uuid::now_v7();
    let sent = first_message(&app, &team, s, "hi").await;
    let ticket = sent["ticket_id"].as_str().unwrap();
    for _ in 0..2 {
        assert_eq!(
            messages(&app, &team, ticket, &format!("widget_session_id={s}"))
                .await
                .status(),
            200
        );
    }
    let res = messages(&app, &team, ticket, &format!("widget_session_id={s}")).await;
    assert!(res.headers().get("retry-after").is_some());
    assert_error(res, 429, "rate_limited").await;
    let res = send(
        &app,
        &team,
        json!({"widget_session_id": s, "ticket_id": ticket, "message": "still sending"}),
    )
    .await;
    assert_eq!(res.status(), 200, "idle polling never starves sends");

    let tight = app
        .create_team_with(json!({"rate_limits": {"widget_session_per_minute": 2}}))
        .await;
    let s = Uuid::now_v7();
    first_message(&app, &tight, s, "one").await;
    first_message(&app, &tight, s, "two").await;
    let res = send(
        &app,
        &tight,
        json!({"widget_session_id": s, "message": "three"}),
    )
    .await;
    assert_error(res, 429, "rate_limited").await;
    let other = send(
        &app,
        &tight,
        json!({"widget_session_id": Uuid::now_v7(), "message": "other visitor"}),
    )
    .await;
    assert_eq!(other.status(), 200, "another session has its own budget");
}

#[actix_web::test]
async fn origin_checks_apply_to_sending_but_not_to_polling() {
    let app = spawn_app().await;
    let team = app
        .create_team_with(json!({"allowed_widget_domains": ["shop.example.com"]}))
        .await;
    let s = Uuid::now_v7();
    let body = json!({"widget_session_id": s, "message": "hi"});
    let res = app
        .client
        .post(url(&app, "/message"))
        .header("X-Conversations-Token", &team.token)
        .header("Origin", "https://evil.test")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_error(res, 403, "origin_not_allowed").await;
    let res = app
        .client
        .post(url(&app, "/message"))
        .header("X-Conversations-Token", &team.token)
        .header("Origin", "https://shop.example.com")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let ticket = res.json::<Value>().await.unwrap()["ticket_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = app
        .client
        .get(format!(
            "{}?widget_session_id={s}",
            url(&app, &format!("/messages/{ticket}"))
        ))
        .header("X-Conversations-Token", &team.token)
        .header("Origin", "https://elsewhere.test")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

async fn restore_request(
    app: &TestApp,
    team: &TestTeam,
    email: &str,
    page: &str,
) -> reqwest::Response {
    app.client
        .post(url(app, "/restore/request"))
        .header("X-Conversations-Token", &team.token)
        .header("Origin", "http://shop.example.com")
        .json(&json!({"email": email, "request_url": page}))
        .send()
        .await
        .unwrap()
}

async fn redeem(app: &TestApp, team: &TestTeam, token: &str, session: Uuid) -> Value {
    let res = app
        .client
        .post(url(app, "/restore"))
        .header("X-Conversations-Token", &team.token)
        .header("Origin", "http://shop.example.com")
        .json(&json!({"restore_token": token, "widget_session_id": session, "distinct_id": "x", "current_url": "http://shop.example.com/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// The body of the newest outbox mail, once there are `n` (restore mails are queued off the
/// request path); waits up to 5 s.
async fn outbox_body(app: &TestApp, n: i64) -> String {
    for _ in 0..100 {
        if app.count("SELECT count(*) FROM outbox").await >= n {
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    app.db()
        .await
        .query_one("SELECT body FROM outbox ORDER BY id DESC LIMIT 1", &[])
        .await
        .expect("a restore mail in the outbox within 5 s")
        .get(0)
}

fn token_in(body: &str) -> String {
    let start = body
        .find("ph_conv_restore=")
        .expect("a restore link in the mail")
        + "ph_conv_restore=".len();
    body[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect()
}

#[actix_web::test]
async fn restore_by_email_moves_tickets_to_a_new_session_once() {
    let app = spawn_app().await;
    let team = app
        .create_team_with(json!({"allowed_widget_domains": ["shop.example.com"]}))
        .await;
    let old = Uuid::now_v7();
    let res = app
        .client
        .post(url(&app, "/message"))
        .header("X-Conversations-Token", &team.token)
        .header("Origin", "http://shop.example.com")
        .json(&json!({"widget_session_id": old, "message": "my order", "traits": {"email": "ann@example.com", "name": "Ann"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let ticket = res.json::<Value>().await.unwrap()["ticket_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Unknown emails get the same answer and no mail.
    let res = restore_request(
        &app,
        &team,
        "nobody@example.com",
        "http://shop.example.com/help",
    )
    .await;
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"ok": true}));
    // Links only ever point at the team's own sites: the same answer, and no mail.
    let res = restore_request(&app, &team, "ann@example.com", "https://phish.test/").await;
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"ok": true}));

    let res = restore_request(
        &app,
        &team,
        "ann@example.com",
        "http://shop.example.com/help",
    )
    .await;
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"ok": true}));
    // The lookup and the mail happen off the request path, in order: once this mail is
    // queued, the two requests before it were handled too (and mailed nothing).
    let body = outbox_body(&app, 1).await;
    assert_eq!(app.count("SELECT count(*) FROM outbox").await, 1);
    assert!(
        body.contains("http://shop.example.com/help?ph_conv_restore="),
        "{body}"
    );
    let token = token_in(&body);

    assert_eq!(
        redeem(&app, &team, "bogus", Uuid::now_v7()).await["status"],
        "invalid"
    );
    let new = Uuid::now_v7();
    let done = redeem(&app, &team, &token, new).await;
    assert_eq!(done["status"], "success");
    assert_eq!(done["migrated_ticket_ids"], json!([ticket]));
    assert_eq!(
        redeem(&app, &team, &token, Uuid::now_v7()).await["status"],
        "used",
        "single use"
    );

    let page = messages(&app, &team, &ticket, &format!("widget_session_id={new}")).await;
    assert_eq!(page.status(), 200, "the new session reaches the ticket");
    let page = messages(&app, &team, &ticket, &format!("widget_session_id={old}")).await;
    assert_error(page, 403, "forbidden").await;

    // An expired token says so.
    restore_request(
        &app,
        &team,
        "ann@example.com",
        "http://shop.example.com/help",
    )
    .await;
    let body = outbox_body(&app, 2).await;
    app.db().await.execute("UPDATE restore_tokens SET expires_at = now() - interval '1 minute' WHERE used_at IS NULL", &[]).await.unwrap();
    assert_eq!(
        redeem(&app, &team, &token_in(&body), Uuid::now_v7()).await["status"],
        "expired"
    );
}

/// A minimal SMTP server that keeps every message it is given.
pub(crate) async fn smtp_sink() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let inbox = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = inbox.clone();
    actix_web::rt::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let kept = kept.clone();
            actix_web::rt::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                let _ = write.write_all(b"220 sink ESMTP\r\n").await;
                let mut data: Option<String> = None;
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(buf) = data.as_mut() {
                        if line == "." {
                            kept.lock().unwrap().push(data.take().unwrap());
                            let _ = write.write_all(b"250 queued\r\n").await;
                        } else {
                            buf.push_str(&line);
                            buf.push('\n');
                        }
                        continue;
                    }
                    let verb = line
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "DATA" => {
                            data = Some(String::new());
                            b"354 go ahead\r\n"
                        }
                        "QUIT" => {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            break;
                        }
                        _ => b"250 ok\r\n",
                    };
                    let _ = write.write_all(reply).await;
                }
            });
        }
    });
    (port, inbox)
}

#[actix_web::test]
async fn restore_links_are_delivered_over_smtp() {
    let (port, inbox) = smtp_sink().await;
    let app = spawn_app_with(|s| {
        s.smtp = Some(
            colloquy::mailer::SmtpSettings::parse(
                &format!("smtp://127.0.0.1:{port}"),
                "support@example.com",
            )
            .unwrap(),
        );
    })
    .await;
    let team = app
        .create_team_with(json!({"allowed_widget_domains": ["shop.example.com"]}))
        .await;
    let res = app
        .client
        .post(url(&app, "/message"))
        .header("X-Conversations-Token", &team.token)
        .header("Origin", "http://shop.example.com")
        .json(&json!({"widget_session_id": Uuid::now_v7(), "message": "hello", "traits": {"email": "ann@example.com"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    restore_request(&app, &team, "ann@example.com", "http://shop.example.com/").await;

    let mut delivered = None;
    for _ in 0..50 {
        if let Some(m) = inbox.lock().unwrap().first().cloned() {
            delivered = Some(m);
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mail = delivered.expect("the restore mail reaches the SMTP server within 5 s");
    assert!(mail.contains("ann@example.com"), "{mail}");
    let token = token_in(&mail.replace("=\n", ""));
    assert!(token.len() >= 32, "the link carries the token: {mail}");
    let sent: Option<chrono::DateTime<chrono::Utc>> = app
        .db()
        .await
        .query_one("SELECT sent_at FROM outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert!(sent.is_some(), "the outbox row is marked sent");
}

#[actix_web::test]
async fn another_teams_token_never_reaches_a_ticket_even_with_its_session() {
    let app = spawn_app().await;
    let (a, b) = (app.create_team().await, app.create_team().await);
    let session = Uuid::now_v7();
    let sent = first_message(&app, &b, session, "team b's secret").await;
    let ticket = sent["ticket_id"].as_str().unwrap();

    // Team A's token with team B's ticket and even the right session: never found.
    let res = messages(&app, &a, ticket, &format!("widget_session_id={session}")).await;
    assert_error(res, 404, "not_found").await;
    let res = send(
        &app,
        &a,
        json!({"widget_session_id": session, "ticket_id": ticket, "message": "hi"}),
    )
    .await;
    assert_error(res, 404, "not_found").await;
    let res = app
        .client
        .post(url(&app, &format!("/messages/{ticket}/read")))
        .header("X-Conversations-Token", &a.token)
        .json(&json!({"widget_session_id": session}))
        .send()
        .await
        .unwrap();
    assert_error(res, 404, "not_found").await;
    let list: Value = app
        .client
        .get(format!(
            "{}?widget_session_id={session}",
            url(&app, "/tickets")
        ))
        .header("X-Conversations-Token", &a.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["count"], 0, "team A lists nothing of team B");
}

#[actix_web::test]
async fn a_verified_identity_reaches_the_persons_tickets_on_both_surfaces() {
    let app = spawn_app().await;
    let (team, json) = app
        .create_team_json(json!({"identity_verification": "optional"}))
        .await;
    let secret = json["identity_secret"].as_str().unwrap();
    let person = "ann.verified@example.com";
    let hash = crate::helpers::identity_hash(secret, person);

    // A posthog-js ticket, opened with a session and a verified identity.
    let session = Uuid::now_v7();
    let res = send(
        &app,
        &team,
        json!({"widget_session_id": session, "message": "from the SDK",
               "identity_distinct_id": person, "identity_hash": hash}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let ticket = res.json::<Value>().await.unwrap()["ticket_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The documented surface with the verified identity sees and lists it…
    let res = app
        .get_messages(
            &team.token,
            &ticket,
            &[("distinct_id", person), ("identity_hash", &hash)],
        )
        .await;
    assert_eq!(
        res.status(),
        200,
        "a verified identity reaches the person's posthog-js ticket"
    );
    let list: Value = app
        .get_tickets(
            &team.token,
            &[("distinct_id", person), ("identity_hash", &hash)],
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["count"], 1);
    // …but the bare distinct_id, unverified, does not.
    let res = app
        .get_messages(&team.token, &ticket, &[("distinct_id", person)])
        .await;
    assert_error(res, 403, "forbidden").await;
    let list: Value = app
        .get_tickets(&team.token, &[("distinct_id", person)])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["count"], 0);
}

#[actix_web::test]
async fn a_posthog_js_ticket_streams_to_its_session_only() {
    use crate::helpers::SseClient;
    use std::time::Duration;
    let app = spawn_app().await;
    let team = app.create_team().await;
    let session = Uuid::now_v7();
    let sent = first_message(&app, &team, session, "hello").await;
    let ticket = sent["ticket_id"].as_str().unwrap().to_owned();
    let sid = session.to_string();

    let res = app
        .open_stream(
            &ticket,
            &[("widget_session_id", &sid), ("token", &team.token)],
            &[],
        )
        .await;
    let mut stream = SseClient::new(res);
    assert_eq!(
        stream.expect("status", Duration::from_secs(2)).await.json()["ticket_status"],
        "new"
    );
    assert_eq!(
        stream
            .expect("message", Duration::from_secs(2))
            .await
            .json()["content"],
        "hello"
    );
    assert_eq!(
        app.operator_post(&team.secret, &ticket, &json!({"content": "hi <you>"}))
            .await
            .status(),
        201
    );
    let reply = stream
        .expect("message", Duration::from_secs(2))
        .await
        .json();
    assert_eq!(
        reply["content"], "hi &lt;you&gt;",
        "the stream speaks the documented surface's escaped shape"
    );

    let other = Uuid::now_v7().to_string();
    let res = app
        .open_stream(
            &ticket,
            &[("widget_session_id", &other), ("token", &team.token)],
            &[],
        )
        .await;
    assert_error(res, 403, "forbidden").await;
    let res = app
        .open_stream(
            &ticket,
            &[("distinct_id", "anon-123"), ("token", &team.token)],
            &[],
        )
        .await;
    assert_error(res, 403, "forbidden").await;
}
