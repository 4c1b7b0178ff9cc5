//! The operator console (`/console/`): its files are served from the binary with their exact
//! content types and a strict Content-Security-Policy; unknown files are `404`. And what the
//! console reads: every actor kind in `/api/ops/actors`, and the operator stream of a ticket.
//! (The console itself, in a browser, is tested by `scripts/e2e.sh`: `tests/e2e/console.mjs`.)

use crate::helpers::{assert_error, spawn_app, SseClient, TestApp, ADMIN_TOKEN};
use serde_json::{json, Value};
use std::time::Duration;

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    app.client
        .get(format!("{}{path}", app.address))
        .send()
        .await
        .expect("GET")
}

fn header(res: &reqwest::Response, name: &str) -> String {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The policy allows this origin's files only, and nothing inline.
fn assert_strict_csp(res: &reqwest::Response, what: &str) {
    let csp = header(res, "content-security-policy");
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "object-src 'none'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(
            csp.contains(directive),
            "{what}: the CSP {csp:?} should contain {directive:?}"
        );
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval") && !csp.contains('*'),
        "{what}: the CSP {csp:?} must not allow inline code, eval or wildcards"
    );
    assert_eq!(
        header(res, "x-content-type-options"),
        "nosniff",
        "{what}: nosniff"
    );
}

/// `src="…"` and `href="…"` values of a page.
fn references(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\""] {
        let mut rest = html;
        while let Some(i) = rest.find(attr) {
            rest = &rest[i + attr.len()..];
            if let Some(end) = rest.find('"') {
                out.push(rest[..end].to_owned());
                rest = &rest[end..];
            }
        }
    }
    out
}

#[actix_web::test]
async fn the_console_page_is_html_with_a_strict_csp_and_no_inline_code() {
    let app = spawn_app().await;

    let res = get(&app, "/console/").await;

    assert_eq!(res.status(), 200, "GET /console/ serves the page");
    assert_eq!(header(&res, "content-type"), "text/html; charset=utf-8");
    assert_strict_csp(&res, "/console/");
    let html = res.text().await.unwrap();
    assert!(html.contains("<title>colloquy console</title>"), "{html}");
    assert!(
        !html.contains("<script>") && !html.contains("<style") && !html.contains("style="),
        "the page has no inline script or style (the CSP would block them)"
    );
    let handler = html.split([' ', '\n']).find(|w| {
        w.strip_prefix("on").is_some_and(|rest| {
            let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        })
    });
    assert_eq!(handler, None, "the page has no inline event handler");
    assert!(
        !html.contains("http://") && !html.contains("https://") && !html.contains("//cdn"),
        "the page loads nothing from elsewhere"
    );
}

#[actix_web::test]
async fn console_without_a_slash_redirects_to_the_page() {
    let app = spawn_app().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let res = client
        .get(format!("{}/console", app.address))
        .send()
        .await
        .unwrap();

    assert_eq!(res.status(), 308);
    assert_eq!(header(&res, "location"), "/console/");
}

#[actix_web::test]
async fn every_file_the_console_loads_is_served_with_its_content_type_and_the_csp() {
    let app = spawn_app().await;
    let html = get(&app, "/console/").await.text().await.unwrap();
    let mut files: Vec<String> = references(&html)
        .into_iter()
        .filter(|r| !r.starts_with('#'))
        .collect();
    // The modules behind the entry point (imported with relative `./name.js` paths).
    let app_js = get(&app, "/console/js/app.js").await.text().await.unwrap();
    for name in ["actors", "inbox", "api", "dom"] {
        assert!(
            app_js.contains(&format!("'./{name}.js'")),
            "app.js imports {name}.js"
        );
    }
    for name in ["api", "dom", "chart", "actors", "inbox"] {
        files.push(format!("js/{name}.js"));
    }
    assert!(files.len() >= 3, "the page references its files: {files:?}");

    for file in files {
        let res = get(&app, &format!("/console/{file}")).await;
        assert_eq!(res.status(), 200, "/console/{file} is served");
        let expected = match file.rsplit('.').next() {
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("svg") => "image/svg+xml",
            other => panic!("unexpected file type {other:?} in {file}"),
        };
        assert_eq!(
            header(&res, "content-type"),
            expected,
            "content type of {file}"
        );
        assert_strict_csp(&res, &file);
        assert!(
            !res.bytes().await.unwrap().is_empty(),
            "{file} is not empty"
        );
    }
}

#[actix_web::test]
async fn an_unknown_console_file_is_not_found_in_the_error_shape() {
    let app = spawn_app().await;

    for path in [
        "/console/nope.js",
        "/console/js/",
        "/console/js/app.js.map",
        "/console/..%2fsrc/main.rs",
        "/console/index.html/",
    ] {
        let res = get(&app, path).await;
        assert_eq!(
            header(&res, "x-content-type-options"),
            "nosniff",
            "{path}: nosniff on errors too"
        );
        assert!(
            !header(&res, "content-security-policy").is_empty(),
            "{path}: CSP on errors too"
        );
        assert_error(res, 404, "not_found").await;
    }
    // Traversals, as raw bytes (a client would normalise `..` away): never a file outside.
    for target in ["/console/../Cargo.toml", "/console/%2e%2e/Cargo.toml"] {
        let raw = app
            .raw_request(&format!("GET {target} HTTP/1.1"), b"")
            .await;
        assert_eq!(raw.status, 404, "{target}");
        assert!(!raw.body.contains("[package]"), "{target}: {}", raw.body);
    }
}

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

#[actix_web::test]
async fn ops_actors_reports_every_actor_kind_the_console_shows() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let before = actors(&app).await;

    let ticket = app
        .open_ticket(&team.token, "visitor-console-1@example.com", "hello")
        .await;
    let res = app
        .operator_post(&team.secret, &ticket, &json!({"content": "hi"}))
        .await;
    assert_eq!(res.status(), 201);
    let stream = app
        .client
        .get(format!(
            "{}/api/conversations/tickets/{ticket}/stream",
            app.address
        ))
        .bearer_auth(&team.secret)
        .send()
        .await
        .unwrap();
    let _stream = SseClient::new(stream);
    let after = actors(&app).await;

    for kind in [
        "rate_limiters",
        "ticket_supervisor",
        "ticket_actors",
        "suspicion_detector",
        "mailer",
    ] {
        for field in [
            "alive",
            "queued",
            "peak_queued",
            "handled",
            "errors",
            "restarts",
            "evictions",
            "dropped",
        ] {
            assert!(
                after[kind][field].is_number(),
                "{kind}.{field} is reported: {after}"
            );
        }
    }
    assert_eq!(after["ticket_supervisor"]["alive"], 1, "{after}");
    assert_eq!(after["mailer"]["alive"], 1, "{after}");
    let spawns = |v: &Value| v["ticket_supervisor"]["handled"].as_u64().unwrap();
    assert!(
        spawns(&after) > spawns(&before),
        "opening a ticket spawns its actor through the supervisor: {before} → {after}"
    );

    let gc = &after["group_committer"];
    assert_eq!(gc["running"], true, "{after}");
    assert_eq!(gc["capacity"], 4096);
    assert_eq!(gc["max_in_flight"], 2);
    for field in ["queued", "in_flight", "failed", "dropped"] {
        assert!(gc[field].is_number(), "group_committer.{field}: {gc}");
    }
    let tx = |v: &Value| v["group_committer"]["transactions"].as_u64().unwrap();
    assert!(
        tx(&after) > tx(&before),
        "the reply went through the committer: {before} → {after}"
    );

    assert!(
        after["sse_streams_open"].as_i64().unwrap() >= 1,
        "the open operator stream is counted: {after}"
    );
    let tiers = after["rate_limited"]
        .as_object()
        .expect("rate_limited by tier");
    for tier in [
        "message_distinct_id",
        "message_ip",
        "message_team",
        "read_distinct_id",
        "widget_session",
        "team_reads",
        "team_writes",
        "restore_email",
        "restore_ip",
    ] {
        assert!(
            tiers[tier].is_u64(),
            "tier {tier} reported (0 or more): {after}"
        );
    }
    assert!(after["http"]["requests"].as_u64().unwrap() >= 3, "{after}");
    assert!(after["http"]["server_errors"].is_u64(), "{after}");
}

#[actix_web::test]
async fn rate_limit_refusals_are_counted_by_tier_in_ops_actors() {
    let app = spawn_app().await;
    let team = app
        .create_team_with(json!({"rate_limits": {"message_distinct_id_per_minute": 1}}))
        .await;
    let visitor = "visitor-console-2@example.com";

    let mut refused = 0;
    for i in 0..3 {
        let res = app
            .post_message(
                &team.token,
                &json!({"distinct_id": visitor, "message": format!("m{i}")}),
            )
            .await;
        if res.status() == 429 {
            refused += 1;
        }
    }

    assert!(refused >= 1, "the tight limit refuses");
    let snap = actors(&app).await;
    assert_eq!(
        snap["rate_limited"]["message_distinct_id"], refused,
        "every refusal is counted under its tier: {snap}"
    );
}

/// An operator stream of `ticket` with `key` (and `query`).
async fn operator_stream(
    app: &TestApp,
    ticket: &str,
    key: Option<&str>,
    query: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = app
        .client
        .get(format!(
            "{}/api/conversations/tickets/{ticket}/stream",
            app.address
        ))
        .query(query);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    req.send().await.expect("GET operator stream")
}

const WAIT: Duration = Duration::from_secs(5);

#[actix_web::test]
async fn the_operator_stream_needs_the_teams_secret_key() {
    let app = spawn_app().await;
    let team = app.create_team().await;
    let other = app.create_team().await;
    let ticket = app
        .open_ticket(&team.token, "visitor-console-3@example.com", "hello")
        .await;

    assert_error(
        operator_stream(&app, &ticket, None, &[]).await,
        401,
        "invalid_token",
    )
    .await;
    assert_error(
        operator_stream(&app, &ticket, Some(&team.token), &[]).await,
        401,
        "invalid_token",
    )
    .await;
    assert_error(
        operator_stream(&app, &ticket, Some(&other.secret), &[]).await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        operator_stream(&app, "not-a-uuid", Some(&team.secret), &[]).await,
        400,
        "validation_error",
    )
    .await;
    assert_error(
        operator_stream(&app, &ticket, Some(&team.secret), &[("after", "yesterday")]).await,
        400,
        "validation_error",
    )
    .await;
}

#[actix_web::test]
async fn the_operator_stream_shows_visitor_typing_and_every_new_message_with_private_notes() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let visitor = "visitor-console-4@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "first").await;
    let mut sse = SseClient::new(operator_stream(&app, &ticket, Some(&team.secret), &[]).await);

    let status = sse.expect("status", WAIT).await;
    assert_eq!(status.json()["ticket_status"], "new");
    let first = sse.expect("message", WAIT).await.json();
    assert_eq!(first["content"], "first", "the history is replayed first");
    assert_eq!(first["author_type"], "customer");

    let res = app
        .widget_typing(
            &team.token,
            &json!({"distinct_id": visitor, "ticket_id": ticket}),
        )
        .await;
    assert_eq!(res.status(), 204);
    let typing = sse.expect("typing", WAIT).await;
    assert_eq!(typing.json()["author"], "visitor");

    let res = app
        .post_message(
            &team.token,
            &json!({"distinct_id": visitor, "ticket_id": ticket, "message": "<img src=x onerror=alert(1)>"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let live = sse.expect("message", WAIT).await.json();
    assert_eq!(
        live["content"], "<img src=x onerror=alert(1)>",
        "text is sent as written (the console renders it as text)"
    );

    let res = app
        .operator_post(
            &team.secret,
            &ticket,
            &json!({"content": "internal: check the invoice", "is_private": true, "author_name": "Ann"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let note = sse.expect("message", WAIT).await.json();
    assert_eq!(note["content"], "internal: check the invoice");
    assert_eq!(
        note["is_private"], true,
        "private notes reach operators, marked"
    );
    assert_eq!(note["author_name"], "Ann");
    assert!(note["id"].is_string() && note["created_at"].is_string());

    // An operator's own typing is not echoed back to operators.
    let res = app
        .client
        .post(format!(
            "{}/api/conversations/tickets/{ticket}/typing",
            app.address
        ))
        .bearer_auth(&team.secret)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = app
        .patch_ticket(&team.secret, &ticket, &json!({"status": "pending"}))
        .await;
    assert_eq!(res.status(), 200);
    let next = sse.next_event(WAIT).await.expect("an event");
    assert_eq!(
        (next.event.as_str(), next.json()["ticket_status"].clone()),
        ("status", json!("pending")),
        "the status change, and no echo of the operator's typing"
    );
}

#[actix_web::test]
async fn the_operator_stream_resumes_after_the_last_event_id() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let visitor = "visitor-console-5@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "one").await;
    let mut sse = SseClient::new(operator_stream(&app, &ticket, Some(&team.secret), &[]).await);
    let seen = sse.expect("message", WAIT).await;
    let last_id = seen.id.expect("events carry an id");
    drop(sse);

    let res = app
        .post_message(
            &team.token,
            &json!({"distinct_id": visitor, "ticket_id": ticket, "message": "two"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let res = app
        .client
        .get(format!(
            "{}/api/conversations/tickets/{ticket}/stream",
            app.address
        ))
        .bearer_auth(&team.secret)
        .header("Last-Event-ID", &last_id)
        .send()
        .await
        .unwrap();
    let mut again = SseClient::new(res);

    let replayed = again.expect("message", WAIT).await.json();
    assert_eq!(
        replayed["content"], "two",
        "only what was missed is replayed"
    );
}

async fn unread_team_count(app: &TestApp, secret: &str, ticket: &str) -> i64 {
    app.operator_ticket(secret, ticket).await["unread_team_count"]
        .as_i64()
        .expect("unread_team_count")
}

#[actix_web::test]
async fn an_operator_marks_a_ticket_read_and_new_visitor_messages_count_again() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let other = app.create_team().await;
    let visitor = "visitor-console-6@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "one").await;
    let res = app
        .post_message(
            &team.token,
            &json!({"distinct_id": visitor, "ticket_id": ticket, "message": "two"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    assert_eq!(unread_team_count(&app, &team.secret, &ticket).await, 2);
    let read = |key: String| {
        let url = format!("{}/api/conversations/tickets/{ticket}/read", app.address);
        let client = app.client.clone();
        async move { client.post(url).bearer_auth(key).send().await.unwrap() }
    };

    assert_error(read(other.secret.clone()).await, 404, "not_found").await;
    assert_error(read(team.token.clone()).await, 401, "invalid_token").await;
    assert_eq!(
        unread_team_count(&app, &team.secret, &ticket).await,
        2,
        "refused calls change nothing"
    );
    let res = read(team.secret.clone()).await;

    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, json!({"success": true, "unread_team_count": 0}));
    assert_eq!(unread_team_count(&app, &team.secret, &ticket).await, 0);
    let inbox: Value = app.inbox(&team.secret, &[]).await.json().await.unwrap();
    assert_eq!(inbox["results"][0]["unread_team_count"], 0, "{inbox}");

    let res = app
        .post_message(
            &team.token,
            &json!({"distinct_id": visitor, "ticket_id": ticket, "message": "three"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    assert_eq!(
        unread_team_count(&app, &team.secret, &ticket).await,
        1,
        "a new visitor message is unread again"
    );
}

#[actix_web::test]
async fn an_operator_stream_behind_by_more_than_a_page_gets_every_message_across_reconnects() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let visitor = "visitor-console-long@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "m0").await;
    // More than one replay page (500) of replies, private notes among them.
    const REPLIES: usize = 520;
    let mut writers = Vec::new();
    for w in 0..8 {
        let (client, url, secret) = (
            app.client.clone(),
            format!(
                "{}/api/conversations/tickets/{ticket}/messages",
                app.address
            ),
            team.secret.clone(),
        );
        writers.push(actix_web::rt::spawn(async move {
            for i in (w..REPLIES).step_by(8) {
                let res = client
                    .post(&url)
                    .bearer_auth(&secret)
                    .json(
                        &json!({"content": format!("m{}", i + 1), "author_type": "human",
                                  "is_private": i % 5 == 0}),
                    )
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 201);
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }

    let mut got = std::collections::HashSet::new();
    let mut last_id: Option<String> = None;
    for connect in 0..3 {
        let mut req = app
            .client
            .get(format!(
                "{}/api/conversations/tickets/{ticket}/stream",
                app.address
            ))
            .bearer_auth(&team.secret);
        if let Some(id) = &last_id {
            req = req.header("Last-Event-ID", id.as_str());
        }
        let mut sse = SseClient::new(req.send().await.unwrap());
        let mut live_sent = connect > 0;
        loop {
            let e = sse.next_event(std::time::Duration::from_secs(2)).await;
            if (e.is_none() || got.len() >= 500) && !live_sent {
                // A message written while the first connection is open: it must not make
                // the client skip what lies between the replayed page and itself.
                live_sent = true;
                let res = app
                    .operator_post(
                        &team.secret,
                        &ticket,
                        &json!({"content": "live", "author_type": "human"}),
                    )
                    .await;
                assert_eq!(res.status(), 201);
            }
            let Some(e) = e else {
                if sse.ended() || connect > 0 || got.contains("live") {
                    break;
                }
                continue;
            };
            if e.event == "message" {
                got.insert(e.json()["content"].as_str().unwrap().to_owned());
                last_id = e.id.clone();
            }
        }
        if got.len() == REPLIES + 2 {
            break;
        }
    }
    assert_eq!(
        got.len(),
        REPLIES + 2,
        "every message reaches the operator across reconnects"
    );
}
