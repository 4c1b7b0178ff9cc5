//! Security tests for restore by email, erasure and the allowed-domain list (issue 12, items
//! 2, 9, 10, 11 and 14): what a stranger can put into a restore mail, what an erased person
//! leaves behind, how long a restore link lives in the outbox, and whether the request path
//! tells a known email from an unknown one.

use crate::helpers::{assert_error, spawn_app, spawn_app_with, TestApp, TestTeam, ADMIN_TOKEN};
use crate::widget_v1::smtp_sink;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use uuid::Uuid;

const SHOP: &str = "http://shop.example.com";

fn v1(app: &TestApp, path: &str) -> String {
    format!("{}/api/conversations/v1/widget{path}", app.address)
}

/// A team whose site is shop.example.com and whose restore budgets never interfere.
async fn shop_team(app: &TestApp) -> TestTeam {
    app.create_team_with(json!({
        "allowed_widget_domains": ["shop.example.com"],
        "rate_limits": {"restore_email_per_hour": 100_000, "restore_ip_per_minute": 100_000,
                        "widget_session_per_minute": 100_000, "team_writes_per_hour": 100_000,
                        "team_reads_per_hour": 100_000}
    }))
    .await
}

/// Opens a posthog-js ticket whose traits name `email`; returns the ticket id.
async fn v1_ticket(app: &TestApp, team: &TestTeam, email: &str) -> String {
    let res = app
        .client
        .post(v1(app, "/message"))
        .header("X-Conversations-Token", &team.token)
        .header("Origin", SHOP)
        .json(
            &json!({"widget_session_id": Uuid::now_v7(), "message": "where is my order",
                      "traits": {"email": email}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "opening a v1 ticket");
    res.json::<Value>().await.unwrap()["ticket_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn restore_request(
    app: &TestApp,
    team: &TestTeam,
    email: &str,
    page: &str,
) -> reqwest::Response {
    app.client
        .post(v1(app, "/restore/request"))
        .header("X-Conversations-Token", &team.token)
        .header("Origin", SHOP)
        .json(&json!({"email": email, "request_url": page}))
        .send()
        .await
        .unwrap()
}

async fn assert_ok(res: reqwest::Response, what: &str) {
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    assert_eq!(
        (status.as_u16(), body),
        (200, json!({"ok": true})),
        "restore/request always answers 200 {{\"ok\": true}}: {what}"
    );
}

/// The bodies of the mails queued for `recipient`, waiting up to 5 s for at least `n`.
async fn mails_to(app: &TestApp, recipient: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let rows = app
            .db()
            .await
            .query(
                "SELECT body FROM outbox WHERE recipient = $1 ORDER BY id",
                &[&recipient],
            )
            .await
            .unwrap();
        let bodies: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        if bodies.len() >= n || Instant::now() > deadline {
            return bodies;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every `ph_conv_restore` link in a mail body, as written.
fn links_in(body: &str) -> Vec<String> {
    body.split_whitespace()
        .filter(|w| w.contains("ph_conv_restore="))
        .map(str::to_owned)
        .collect()
}

// --- item 2: restore-link injection ---

#[actix_web::test]
async fn security_restore_request_url_that_is_not_a_clean_page_of_the_team_mails_nothing() {
    let app = spawn_app().await;
    let team = shop_team(&app).await;
    v1_ticket(&app, &team, "ann@example.com").await;

    let hostile = [
        "https://shop.example.com/\n\nContinue here: https://evil.example/c",
        "http://shop.example.com/help\r\nBcc: someone@evil.example",
        "http://shop.example.com/ https://evil.example/",
        "http://shop.example.com/\thelp",
        "http://shop.example.com/\u{0}",
        "https://evil.example\\@shop.example.com/",
        "https://shop.example.com\\.evil.example/",
        "https://evil.example@shop.example.com/",
        "https://user:pw@shop.example.com/",
        "https://shop.example.com.evil.example/",
        "javascript://shop.example.com/%0Aalert(1)",
        "ftp://shop.example.com/",
        "//shop.example.com/help",
        "/help",
        "shop.example.com/help",
        "not a url",
        "",
    ];
    for page in hostile {
        let res = restore_request(&app, &team, "ann@example.com", page).await;
        assert_ok(res, &format!("request_url {page:?}")).await;
    }
    // A clean request afterwards: once its mail is queued, the hostile ones were handled too.
    let res = restore_request(&app, &team, "ann@example.com", "http://shop.example.com/ok").await;
    assert_ok(res, "a clean page").await;
    let bodies = mails_to(&app, "ann@example.com", 1).await;
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let bodies_later = mails_to(&app, "ann@example.com", 1).await;
    assert_eq!(bodies, bodies_later, "no late mails");
    assert_eq!(
        bodies.len(),
        1,
        "only the clean request is mailed, none of the hostile ones: {bodies:#?}"
    );
    assert!(!bodies[0].contains("evil"), "{}", bodies[0]);
    assert_eq!(
        links_in(&bodies[0]).len(),
        1,
        "exactly one link: {}",
        bodies[0]
    );
    assert!(
        links_in(&bodies[0])[0].starts_with("http://shop.example.com/ok?ph_conv_restore="),
        "{}",
        bodies[0]
    );
}

#[actix_web::test]
async fn security_restore_request_with_an_empty_allow_list_answers_ok_and_mails_nothing() {
    let app = spawn_app().await;
    // No allowed_widget_domains: the widget works from anywhere, but links are never mailed.
    let team = app.create_team().await;
    v1_ticket(&app, &team, "ann@example.com").await;
    let res = restore_request(&app, &team, "ann@example.com", "http://shop.example.com/").await;
    assert_ok(res, "an empty allow-list").await;
    // An off-list page on a team with a list: also ok, also no mail.
    let other = shop_team(&app).await;
    v1_ticket(&app, &other, "bob@example.com").await;
    let res = restore_request(&app, &other, "bob@example.com", "https://phish.example/").await;
    assert_ok(res, "an off-list page").await;
    // A clean request of the second team, queued last: when it is mailed, the others were seen.
    v1_ticket(&app, &other, "cid@example.com").await;
    let res = restore_request(&app, &other, "cid@example.com", "http://shop.example.com/").await;
    assert_ok(res, "a clean page").await;
    assert_eq!(mails_to(&app, "cid@example.com", 1).await.len(), 1);
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE recipient <> 'cid@example.com'")
            .await,
        0,
        "nothing mailed for the empty list or the off-list page"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM restore_tokens WHERE email <> 'cid@example.com'")
            .await,
        0,
        "no token issued for them either"
    );

    // The origin check still comes first.
    let res = app
        .client
        .post(v1(&app, "/restore/request"))
        .header("X-Conversations-Token", &other.token)
        .header("Origin", "https://evil.example")
        .json(&json!({"email": "bob@example.com", "request_url": "http://shop.example.com/"}))
        .send()
        .await
        .unwrap();
    assert_error(res, 403, "origin_not_allowed").await;
}

#[actix_web::test]
async fn security_restore_links_are_the_reserialised_page_with_exactly_one_token_parameter() {
    let app = spawn_app().await;
    let team = shop_team(&app).await;
    v1_ticket(&app, &team, "ann@example.com").await;
    let res = restore_request(
        &app,
        &team,
        "ann@example.com",
        "http://Shop.Example.com:80/help/ü?x=1&ph_conv_restore=attacker-chosen#top",
    )
    .await;
    assert_ok(res, "a page with its own ph_conv_restore").await;
    let bodies = mails_to(&app, "ann@example.com", 1).await;
    assert_eq!(bodies.len(), 1, "one mail");
    let links = links_in(&bodies[0]);
    assert_eq!(links.len(), 1, "one link: {}", bodies[0]);
    let link = &links[0];
    assert!(
        link.starts_with("http://shop.example.com/help/%C3%BC?x=1&ph_conv_restore="),
        "the parsed, normalised page with the token as a query parameter: {link}"
    );
    assert!(link.ends_with("#top"), "the fragment is kept: {link}");
    assert_eq!(
        link.matches("ph_conv_restore=").count(),
        1,
        "the page's own ph_conv_restore is replaced, not kept next to ours: {link}"
    );
    assert!(!link.contains("attacker-chosen"), "{link}");
}

// --- item 9: erasure leaves nothing behind ---

#[actix_web::test]
async fn security_erasing_a_person_leaves_their_distinct_id_and_email_in_no_table() {
    let app = spawn_app().await;
    let team = shop_team(&app).await;
    let person = "ann.erase@example.com";
    let keeper = "bob.keep@example.com";

    // Their own ticket on the documented surface, with their email as a trait.
    let res = app
        .client
        .post(format!("{}/api/conversations/widget/message", app.address))
        .header("X-Conversations-Token", &team.token)
        .header("Origin", SHOP)
        .json(&json!({"distinct_id": person, "message": "hello", "traits": {"email": person}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let own: Value = res.json().await.unwrap();
    // A posthog-js ticket that names them only in traits.email (in another case).
    let only_traits = v1_ticket(&app, &team, "Ann.Erase@Example.com").await;
    // A posthog-js ticket that only names their distinct_id in the body (a link or a claim).
    let res = app
        .client
        .post(v1(&app, "/message"))
        .header("X-Conversations-Token", &team.token)
        .header("Origin", SHOP)
        .json(
            &json!({"widget_session_id": Uuid::now_v7(), "message": "it's me",
                      "distinct_id": person}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "v1 ticket naming the distinct_id");
    // A restore request: a token for their email and a mail with a live link.
    assert_ok(
        restore_request(&app, &team, person, "http://shop.example.com/").await,
        "restore",
    )
    .await;
    assert_eq!(mails_to(&app, person, 1).await.len(), 1, "the restore mail");
    // An operator block of their distinct_id.
    let res = app
        .operator(
            &team.secret,
            Method::POST,
            "/api/conversations/blocks",
            Some(&json!({"distinct_id": person, "reason": "abusive"})),
        )
        .await;
    assert_eq!(res.status(), 201, "block");
    // Suspicion flags naming them, and one about their ticket.
    let db = app.db().await;
    let team_id: Uuid = team.id.parse().unwrap();
    let own_ticket: Uuid = own["ticket_id"].as_str().unwrap().parse().unwrap();
    db.execute(
        "INSERT INTO suspicion_flags (team_id, ticket_id, distinct_id, reason, score, detail, observed_at)
         VALUES ($1, NULL, $2, 'honeypot', 90, '', now()), ($1, $3, $2, 'repeated_text', 40, '', now())",
        &[&team_id, &person, &own_ticket],
    )
    .await
    .unwrap();
    // Someone else, who must keep everything.
    let res = app
        .client
        .post(format!("{}/api/conversations/widget/message", app.address))
        .header("X-Conversations-Token", &team.token)
        .header("Origin", SHOP)
        .json(&json!({"distinct_id": keeper, "message": "mine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let kept = res.json::<Value>().await.unwrap()["ticket_id"]
        .as_str()
        .unwrap()
        .to_owned();
    v1_ticket(&app, &team, keeper).await;

    let res = app
        .operator(
            &team.secret,
            Method::DELETE,
            &format!("/api/conversations/persons/{person}"),
            None,
        )
        .await;
    assert_eq!(res.status(), 200, "erase");

    // Every table of the schema, every column, as text.
    let tables: Vec<String> = db
        .query(
            "SELECT quote_ident(table_name) FROM information_schema.tables
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(tables.len() >= 8, "found the tables: {tables:?}");
    let mut left = Vec::new();
    for table in &tables {
        let rows = db
            .query(
                &format!("SELECT t::text FROM {table} t WHERE lower(t::text) LIKE '%ann.erase@example.com%'"),
                &[],
            )
            .await
            .unwrap();
        for r in rows {
            left.push(format!("{table}: {}", r.get::<_, String>(0)));
        }
    }
    assert!(
        left.is_empty(),
        "the erased person is still stored: {left:#?}"
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM tickets WHERE id = '{only_traits}'"
        ))
        .await,
        0,
        "the ticket that named them only in traits.email is gone"
    );
    // The other visitor is untouched.
    assert_eq!(
        app.count(&format!("SELECT count(*) FROM tickets WHERE id = '{kept}'"))
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM tickets WHERE traits->>'email' = 'bob.keep@example.com'")
            .await,
        1
    );
}

// --- item 10: the outbox does not keep live links ---

#[actix_web::test]
async fn security_a_delivered_restore_mail_is_redacted_in_the_outbox() {
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
    let team = shop_team(&app).await;
    v1_ticket(&app, &team, "ann@example.com").await;
    assert_ok(
        restore_request(&app, &team, "ann@example.com", "http://shop.example.com/").await,
        "restore",
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(8);
    while inbox.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the mail is delivered within 8 s"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        inbox.lock().unwrap()[0].contains("ph_conv_restore"),
        "the link was delivered"
    );
    // Delivery is recorded right after the SMTP answer; give it a moment.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let row = app
            .db()
            .await
            .query_one("SELECT body, sent_at IS NOT NULL FROM outbox", &[])
            .await
            .unwrap();
        let (body, sent): (String, bool) = (row.get(0), row.get(1));
        if sent && !body.contains("ph_conv_restore") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a sent mail's body must not keep the live link (sent: {sent}): {body}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn security_an_unsent_restore_mail_is_redacted_when_its_token_expires_or_is_used() {
    let app = spawn_app().await; // no SMTP: mails wait in the outbox
    let team = shop_team(&app).await;
    v1_ticket(&app, &team, "ann@example.com").await;
    v1_ticket(&app, &team, "bob@example.com").await;
    for email in ["ann@example.com", "bob@example.com"] {
        assert_ok(
            restore_request(&app, &team, email, "http://shop.example.com/").await,
            "restore",
        )
        .await;
        assert_eq!(mails_to(&app, email, 1).await.len(), 1);
    }
    // Ann's link expires; Bob's is used.
    app.db()
        .await
        .execute(
            "UPDATE restore_tokens SET expires_at = now() - interval '1 second' WHERE email = 'ann@example.com'",
            &[],
        )
        .await
        .unwrap();
    let body = &mails_to(&app, "bob@example.com", 1).await[0];
    let link = &links_in(body)[0];
    let token = link.split("ph_conv_restore=").nth(1).unwrap();
    let res = app
        .client
        .post(v1(&app, "/restore"))
        .header("X-Conversations-Token", &team.token)
        .header("Origin", SHOP)
        .json(&json!({"restore_token": token, "widget_session_id": Uuid::now_v7()}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "success");

    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let live = app
            .count("SELECT count(*) FROM outbox WHERE body LIKE '%ph_conv_restore%'")
            .await;
        if live == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{live} outbox bodies still hold an expired or used restore link after 8 s"
        );
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
}

// --- item 11: allowed domains without a host ---

#[actix_web::test]
async fn security_allowed_widget_domains_without_a_host_are_refused() {
    let app = spawn_app().await;
    for list in [
        json!(["https://"]),
        json!([":8443"]),
        json!(["shop.example.com", "https://"]),
        json!(["*."]),
        json!(["https:///path"]),
    ] {
        let res = app
            .client
            .post(format!("{}/api/teams", app.address))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"name": "acme", "allowed_widget_domains": list}))
            .send()
            .await
            .unwrap();
        let body = assert_error(res, 400, "validation_error").await;
        assert_eq!(body["field"], "allowed_widget_domains", "{list}");

        let team = shop_team(&app).await;
        let res = app
            .operator(
                &team.secret,
                Method::PATCH,
                "/api/conversations/settings",
                Some(&json!({"allowed_widget_domains": list})),
            )
            .await;
        let body = assert_error(res, 400, "validation_error").await;
        assert_eq!(body["field"], "allowed_widget_domains", "{list}");
        // The team keeps its list: a page elsewhere is still refused.
        let res = app
            .client
            .post(v1(&app, "/message"))
            .header("X-Conversations-Token", &team.token)
            .header("Origin", "https://evil.example")
            .json(&json!({"widget_session_id": Uuid::now_v7(), "message": "hi"}))
            .send()
            .await
            .unwrap();
        assert_error(res, 403, "origin_not_allowed").await;
    }
}

// --- item 14: a known email is not told apart from an unknown one ---

#[actix_web::test]
async fn security_restore_request_answers_before_any_per_email_database_work() {
    let app = spawn_app().await;
    let team = shop_team(&app).await;
    v1_ticket(&app, &team, "ann@example.com").await;

    // Hold the tickets table: any lookup of the email's tickets now waits for us.
    let mut db = app.db().await;
    let tx = db.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE tickets, restore_tokens, outbox IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    // The unknown email first: once the known one's mail is queued, both were looked up.
    for email in ["nobody@example.com", "ann@example.com"] {
        let started = Instant::now();
        let res = actix_web::rt::time::timeout(
            Duration::from_millis(1500),
            restore_request(&app, &team, email, "http://shop.example.com/"),
        )
        .await
        .unwrap_or_else(|_| panic!("restore/request for {email} waited for the database"));
        assert_ok(res, email).await;
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "answered at once for {email}"
        );
    }
    tx.rollback().await.unwrap();
    // The lookup and the mail happen afterwards, off the request path.
    assert_eq!(
        mails_to(&app, "ann@example.com", 1).await.len(),
        1,
        "the mail follows"
    );
    assert_eq!(mails_to(&app, "nobody@example.com", 0).await.len(), 0);
}

#[actix_web::test]
async fn security_restore_queue_is_bounded_and_counts_what_it_drops() {
    let app = spawn_app().await;
    let team = shop_team(&app).await;
    let mut db = app.db().await;
    let tx = db.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE tickets IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    // Far more requests than the queue holds while its worker is stuck: each still answers
    // 200 at once, and what does not fit is dropped and counted.
    for i in 0..1100 {
        let res = actix_web::rt::time::timeout(
            Duration::from_millis(1500),
            restore_request(
                &app,
                &team,
                &format!("v{i}@example.com"),
                "http://shop.example.com/",
            ),
        )
        .await
        .expect("answered at once");
        assert_eq!(res.status(), 200);
    }
    tx.rollback().await.unwrap();
    let res = app
        .client
        .get(format!("{}/api/ops/actors", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let actors: Value = res.json().await.unwrap();
    let dropped = actors["mailer"]["dropped"].as_u64().unwrap_or(0);
    assert!(dropped >= 50, "drops are counted: {}", actors["mailer"]);
}
