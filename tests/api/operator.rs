//! The operator API (bearer team secret key): the inbox, a ticket with every message,
//! replies and private notes, status and assignment, typing, erasing a visitor, the team's
//! settings, and the visitor's unread count that operator replies raise.

use crate::helpers::{
    assert_error, skip_in_cluster_without_shared_counters, spawn_app, TestApp, TestTeam,
};
use reqwest::Method;
use serde_json::{json, Value};

async fn body(res: reqwest::Response, status: u16) -> Value {
    let got = res.status().as_u16();
    let v: Value = res.json().await.unwrap_or(Value::Null);
    assert_eq!(got, status, "status for {v}");
    v
}

async fn messages(app: &TestApp, team: &TestTeam, ticket: &str, visitor: &str) -> Value {
    body(
        app.get_messages(&team.token, ticket, &[("distinct_id", visitor)])
            .await,
        200,
    )
    .await
}

async fn visitor_tickets(app: &TestApp, team: &TestTeam, visitor: &str) -> Value {
    body(
        app.get_tickets(&team.token, &[("distinct_id", visitor)])
            .await,
        200,
    )
    .await
}

async fn inbox(app: &TestApp, team: &TestTeam, query: &[(&str, &str)]) -> Value {
    body(app.inbox(&team.secret, query).await, 200).await
}

fn ids(page: &Value) -> Vec<String> {
    page["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn follow_up(
    app: &TestApp,
    team: &TestTeam,
    visitor: &str,
    ticket: &str,
    text: &str,
) -> Value {
    body(
        app.post_message(
            &team.token,
            &json!({"distinct_id": visitor, "ticket_id": ticket, "message": text}),
        )
        .await,
        201,
    )
    .await
}

#[actix_web::test]
async fn operator_endpoints_refuse_a_missing_or_unknown_key() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let ticket = app
        .open_ticket(&team.token, "keyless@example.com", "hi")
        .await;

    for secret in ["", "sk_not-a-real-key", team.token.as_str()] {
        for (method, path) in [
            (Method::GET, "/api/conversations/tickets".to_owned()),
            (Method::GET, format!("/api/conversations/tickets/{ticket}")),
            (Method::GET, "/api/conversations/settings".to_owned()),
        ] {
            let res = app.operator(secret, method.clone(), &path, None).await;
            assert_error(res, 401, "invalid_token").await;
        }
    }
}

#[actix_web::test]
async fn the_inbox_filters_by_status_visitor_and_assignee() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let a1 = app.open_ticket(&team.token, "ann@example.com", "a1").await;
    let a2 = app.open_ticket(&team.token, "ann@example.com", "a2").await;
    let b1 = app.open_ticket(&team.token, "bob@example.com", "b1").await;
    body(
        app.patch_ticket(&team.secret, &a2, &json!({"status": "pending"}))
            .await,
        200,
    )
    .await;
    body(
        app.patch_ticket(&team.secret, &b1, &json!({"assignee": "carol"}))
            .await,
        200,
    )
    .await;

    let all = inbox(&app, &team, &[]).await;
    assert_eq!(all["count"], 3);

    let pending = inbox(&app, &team, &[("status", "pending")]).await;
    assert_eq!(pending["count"], 1);
    assert_eq!(ids(&pending), vec![a2.clone()]);
    assert_eq!(pending["results"][0]["status"], "pending");

    let new = inbox(&app, &team, &[("status", "new")]).await;
    assert_eq!(new["count"], 2);
    let mut got = ids(&new);
    got.sort();
    let mut want = vec![a1.clone(), b1.clone()];
    want.sort();
    assert_eq!(got, want);

    let ann = inbox(&app, &team, &[("distinct_id", "ann@example.com")]).await;
    assert_eq!(ann["count"], 2);
    assert!(ann["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["distinct_id"] == "ann@example.com"));

    let carol = inbox(&app, &team, &[("assignee", "carol")]).await;
    assert_eq!(carol["count"], 1);
    assert_eq!(ids(&carol), vec![b1.clone()]);
    assert_eq!(carol["results"][0]["assignee"], "carol");

    let none = inbox(&app, &team, &[("assignee", "dave")]).await;
    assert_eq!(none["count"], 0);
    assert_eq!(none["results"], json!([]));

    let combined = inbox(
        &app,
        &team,
        &[("distinct_id", "ann@example.com"), ("status", "new")],
    )
    .await;
    assert_eq!(ids(&combined), vec![a1]);

    assert_error(
        app.inbox(&team.secret, &[("status", "closed")]).await,
        400,
        "validation_error",
    )
    .await;
}

#[actix_web::test]
async fn the_inbox_pages_with_a_total_count_newest_activity_first() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let mut opened = Vec::new();
    for i in 0..5 {
        opened.push(
            app.open_ticket(
                &team.token,
                &format!("pager{i}@example.com"),
                &format!("t{i}"),
            )
            .await,
        );
    }
    // New activity on the oldest ticket moves it to the top.
    follow_up(&app, &team, "pager0@example.com", &opened[0], "bump").await;
    let want = vec![
        opened[0].clone(),
        opened[4].clone(),
        opened[3].clone(),
        opened[2].clone(),
        opened[1].clone(),
    ];

    let mut seen = Vec::new();
    for (offset, size) in [("0", 2), ("2", 2), ("4", 1)] {
        let page = inbox(&app, &team, &[("limit", "2"), ("offset", offset)]).await;
        assert_eq!(page["count"], 5, "count is the total, offset {offset}");
        assert_eq!(page["results"].as_array().unwrap().len(), size);
        seen.extend(ids(&page));
    }
    assert_eq!(seen, want, "pages concatenate to newest activity first");
    let past = inbox(&app, &team, &[("limit", "2"), ("offset", "10")]).await;
    assert_eq!(past["count"], 5);
    assert_eq!(past["results"], json!([]));

    // The operator's own reply is activity too.
    app.operator_post(&team.secret, &opened[2], &json!({"content": "on it"}))
        .await;
    let first = inbox(&app, &team, &[("limit", "1")]).await;
    assert_eq!(ids(&first), vec![opened[2].clone()]);
}

#[actix_web::test]
async fn ticket_detail_has_every_message_private_notes_included_unescaped() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let visitor = "detail@example.com";
    let raw = r#"<script>alert("x")</script> & 'quotes'"#;
    let ticket = app.open_ticket(&team.token, visitor, raw).await;
    let note = body(
        app.operator_post(
            &team.secret,
            &ticket,
            &json!({"content": "<i>internal</i> & note", "author_type": "human",
                    "author_name": "Ops <Bob>", "is_private": true}),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(note["is_private"], true);

    let t = app.operator_ticket(&team.secret, &ticket).await;
    assert_eq!(t["id"], ticket.as_str());
    assert_eq!(t["distinct_id"], visitor);
    assert_eq!(t["status"], "new");
    for key in [
        "ticket_number",
        "widget_session_id",
        "assignee",
        "traits",
        "message_count",
        "unread_team_count",
        "last_message",
        "last_message_at",
        "created_at",
        "suspicion_score",
    ] {
        assert!(t.get(key).is_some(), "ticket object has `{key}`: {t}");
    }
    let msgs = t["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2, "{t}");
    assert_eq!(msgs[0]["content"], raw, "stored and shown unescaped");
    assert_eq!(msgs[0]["author_type"], "customer");
    assert_eq!(msgs[0]["is_private"], false);
    assert_eq!(msgs[1]["content"], "<i>internal</i> & note");
    assert_eq!(msgs[1]["author_name"], "Ops <Bob>");
    assert_eq!(msgs[1]["is_private"], true);
    assert_eq!(msgs[1]["id"], note["id"]);
    for m in msgs {
        for key in [
            "id",
            "content",
            "rich_content",
            "author_type",
            "author_name",
            "is_private",
            "created_at",
        ] {
            assert!(m.get(key).is_some(), "message has `{key}`: {m}");
        }
    }
    // Operators' counts and previews include private notes.
    assert_eq!(t["message_count"], 2);
    assert_eq!(t["last_message"], "<i>internal</i> & note");

    let listed = inbox(&app, &team, &[]).await;
    assert_eq!(listed["results"][0]["message_count"], 2);
    assert_eq!(
        listed["results"][0]["last_message"],
        "<i>internal</i> & note"
    );
}

#[actix_web::test]
async fn human_and_ai_replies_reach_the_visitor_escaped_with_their_author() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let visitor = "replies@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "help").await;

    let human = body(
        app.operator_post(
            &team.secret,
            &ticket,
            &json!({"content": "Try <b>this</b> & that", "author_type": "human",
                    "author_name": "Alice \"A\"", "is_private": false}),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(human["ticket_id"], ticket.as_str());
    assert_eq!(human["content"], "Try <b>this</b> & that");
    assert_eq!(human["author_type"], "human");
    assert_eq!(human["author_name"], "Alice \"A\"");
    assert_eq!(human["is_private"], false);
    assert!(human["created_at"].as_str().is_some());
    let ai = body(
        app.operator_post(
            &team.secret,
            &ticket,
            &json!({"content": "I'm a bot", "author_type": "AI", "author_name": "Max AI",
                    "is_private": false}),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(ai["author_type"], "AI");

    let page = messages(&app, &team, &ticket, visitor).await;
    let msgs = page["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "{page}");
    assert_eq!(msgs[1]["id"], human["id"]);
    assert_eq!(msgs[1]["author_type"], "human");
    assert_eq!(msgs[1]["content"], "Try &lt;b&gt;this&lt;/b&gt; &amp; that");
    assert_eq!(msgs[1]["author_name"], "Alice &quot;A&quot;");
    assert_eq!(msgs[2]["id"], ai["id"]);
    assert_eq!(msgs[2]["author_type"], "AI");
    assert_eq!(msgs[2]["author_name"], "Max AI");
    assert!(
        msgs[2]["content"] == "I&#39;m a bot" || msgs[2]["content"] == "I&#x27;m a bot",
        "apostrophe escaped: {}",
        msgs[2]["content"]
    );

    let tickets = visitor_tickets(&app, &team, visitor).await;
    assert_eq!(tickets["results"][0]["message_count"], 3);
    assert!(tickets["results"][0]["last_message"]
        .as_str()
        .unwrap()
        .ends_with("m a bot"));
}

#[actix_web::test]
async fn operator_replies_are_validated() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let ticket = app
        .open_ticket(&team.token, "validate@example.com", "hi")
        .await;
    for (b, field) in [
        (
            json!({"content": "x", "author_type": "customer"}),
            "author_type",
        ),
        (json!({"content": "  "}), "content"),
        (json!({"author_type": "human"}), "content"),
        (json!({"content": "x", "is_private": "yes"}), "is_private"),
    ] {
        let err = assert_error(
            app.operator_post(&team.secret, &ticket, &b).await,
            400,
            "validation_error",
        )
        .await;
        assert_eq!(err["field"], field, "{b}");
    }
    assert_eq!(
        app.count("SELECT count(*) FROM messages").await,
        1,
        "refused replies store nothing"
    );
}

#[actix_web::test]
async fn a_private_note_is_invisible_to_the_visitor() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let visitor = "private@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "question").await;
    app.operator_post(
        &team.secret,
        &ticket,
        &json!({"content": "public answer", "author_type": "human", "author_name": "Al"}),
    )
    .await;
    body(
        app.operator_post(
            &team.secret,
            &ticket,
            &json!({"content": "SECRET NOTE: refund abuser", "author_type": "human",
                    "author_name": "Al", "is_private": true}),
        )
        .await,
        201,
    )
    .await;

    let page = messages(&app, &team, &ticket, visitor).await;
    let msgs = page["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2, "{page}");
    assert!(!page.to_string().contains("SECRET NOTE"), "{page}");
    assert!(msgs.iter().all(|m| m["is_private"] == false));

    let tickets = visitor_tickets(&app, &team, visitor).await;
    let row = &tickets["results"][0];
    assert_eq!(row["message_count"], 2, "{row}");
    assert_eq!(row["last_message"], "public answer", "{row}");
    assert!(!tickets.to_string().contains("SECRET NOTE"));

    // Polling with `after` never surfaces it either.
    let after = msgs[0]["created_at"].as_str().unwrap();
    let later = body(
        app.get_messages(
            &team.token,
            &ticket,
            &[("distinct_id", visitor), ("after", after)],
        )
        .await,
        200,
    )
    .await;
    assert_eq!(later["messages"].as_array().unwrap().len(), 1);
    assert!(!later.to_string().contains("SECRET NOTE"));
}

#[actix_web::test]
async fn patch_moves_a_ticket_through_all_five_statuses() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let visitor = "statuses@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "hi").await;
    // Warm the ticket actor's cache so a stale copy would show.
    assert_eq!(
        messages(&app, &team, &ticket, visitor).await["ticket_status"],
        "new"
    );

    for status in ["open", "pending", "on_hold", "resolved", "new"] {
        let t = body(
            app.patch_ticket(&team.secret, &ticket, &json!({"status": status}))
                .await,
            200,
        )
        .await;
        assert_eq!(t["status"], status);
        assert_eq!(
            app.operator_ticket(&team.secret, &ticket).await["status"],
            status
        );
        assert_eq!(
            messages(&app, &team, &ticket, visitor).await["ticket_status"],
            status,
            "the visitor sees {status} at once"
        );
        assert_eq!(
            visitor_tickets(&app, &team, visitor).await["results"][0]["status"],
            status
        );
    }

    for bad in [
        json!({"status": "closed"}),
        json!({"status": 3}),
        json!({"status": "Open"}),
    ] {
        let err = assert_error(
            app.patch_ticket(&team.secret, &ticket, &bad).await,
            400,
            "validation_error",
        )
        .await;
        assert_eq!(err["field"], "status");
    }
    assert_error(
        app.patch_ticket(&team.secret, &ticket, &json!({"priority": "high"}))
            .await,
        400,
        "validation_error",
    )
    .await;
    assert_eq!(
        app.operator_ticket(&team.secret, &ticket).await["status"],
        "new"
    );
}

#[actix_web::test]
async fn a_customer_message_reopens_a_resolved_ticket() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let visitor = "reopen@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "hi").await;
    // The ticket actor is alive and caches `new`.
    follow_up(&app, &team, visitor, &ticket, "anyone?").await;
    assert_eq!(
        messages(&app, &team, &ticket, visitor).await["ticket_status"],
        "new"
    );

    body(
        app.patch_ticket(&team.secret, &ticket, &json!({"status": "resolved"}))
            .await,
        200,
    )
    .await;
    assert_eq!(
        messages(&app, &team, &ticket, visitor).await["ticket_status"],
        "resolved",
        "GET messages right after the PATCH shows resolved (the actor's cache is refreshed)"
    );

    let posted = follow_up(&app, &team, visitor, &ticket, "still broken").await;
    assert_eq!(posted["ticket_status"], "open");
    assert_eq!(
        messages(&app, &team, &ticket, visitor).await["ticket_status"],
        "open"
    );
    assert_eq!(
        app.operator_ticket(&team.secret, &ticket).await["status"],
        "open"
    );

    // Other statuses are kept by a customer message.
    for kept in ["pending", "on_hold", "open"] {
        body(
            app.patch_ticket(&team.secret, &ticket, &json!({"status": kept}))
                .await,
            200,
        )
        .await;
        let posted = follow_up(&app, &team, visitor, &ticket, "more").await;
        assert_eq!(posted["ticket_status"], kept);
        assert_eq!(
            app.operator_ticket(&team.secret, &ticket).await["status"],
            kept
        );
    }

    // Operator replies never reopen.
    body(
        app.patch_ticket(&team.secret, &ticket, &json!({"status": "resolved"}))
            .await,
        200,
    )
    .await;
    let reply = body(
        app.operator_post(&team.secret, &ticket, &json!({"content": "closing"}))
            .await,
        201,
    )
    .await;
    assert_eq!(reply["ticket_status"], "resolved");
    assert_eq!(
        messages(&app, &team, &ticket, visitor).await["ticket_status"],
        "resolved"
    );
}

#[actix_web::test]
async fn assignment_and_unassignment() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let ticket = app
        .open_ticket(&team.token, "assign@example.com", "hi")
        .await;
    assert_eq!(
        app.operator_ticket(&team.secret, &ticket).await["assignee"],
        Value::Null
    );

    let t = body(
        app.patch_ticket(&team.secret, &ticket, &json!({"assignee": "alice@corp"}))
            .await,
        200,
    )
    .await;
    assert_eq!(t["assignee"], "alice@corp");
    assert_eq!(t["status"], "new", "status untouched by an assignment");
    assert_eq!(
        inbox(&app, &team, &[("assignee", "alice@corp")]).await["count"],
        1
    );

    let t = body(
        app.patch_ticket(
            &team.secret,
            &ticket,
            &json!({"assignee": "bob@corp", "status": "open"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(t["assignee"], "bob@corp");
    assert_eq!(t["status"], "open");
    assert_eq!(
        inbox(&app, &team, &[("assignee", "alice@corp")]).await["count"],
        0
    );

    let t = body(
        app.patch_ticket(&team.secret, &ticket, &json!({"assignee": null}))
            .await,
        200,
    )
    .await;
    assert_eq!(t["assignee"], Value::Null);
    assert_eq!(t["status"], "open");
    assert_eq!(
        app.operator_ticket(&team.secret, &ticket).await["assignee"],
        Value::Null
    );
    assert_eq!(
        inbox(&app, &team, &[("assignee", "bob@corp")]).await["count"],
        0
    );

    assert_error(
        app.patch_ticket(&team.secret, &ticket, &json!({"assignee": 7}))
            .await,
        400,
        "validation_error",
    )
    .await;
}

#[actix_web::test]
async fn operator_typing_answers_204() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let ticket = app
        .open_ticket(&team.token, "typing@example.com", "hi")
        .await;
    let res = app
        .operator(
            &team.secret,
            Method::POST,
            &format!("/api/conversations/tickets/{ticket}/typing"),
            None,
        )
        .await;
    assert_eq!(res.status(), 204);
    let unknown = uuid::Uuid::now_v7();
    let res = app
        .operator(
            &team.secret,
            Method::POST,
            &format!("/api/conversations/tickets/{unknown}/typing"),
            None,
        )
        .await;
    assert_error(res, 404, "not_found").await;
}

#[actix_web::test]
async fn erasing_a_person_removes_their_tickets_and_messages_only() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let gone = "erase-me@example.com";
    let kept = "keep-me@example.com";
    let t1 = app.open_ticket(&team.token, gone, "first").await;
    let t2 = app.open_ticket(&team.token, gone, "second").await;
    follow_up(&app, &team, gone, &t1, "more").await;
    app.operator_post(&team.secret, &t1, &json!({"content": "reply"}))
        .await;
    app.operator_post(
        &team.secret,
        &t2,
        &json!({"content": "note", "is_private": true}),
    )
    .await;
    let k = app.open_ticket(&team.token, kept, "mine").await;
    app.operator_post(&team.secret, &k, &json!({"content": "reply to keeper"}))
        .await;
    // Keep t1's actor alive with cached messages.
    assert_eq!(
        messages(&app, &team, &t1, gone).await["messages"]
            .as_array()
            .unwrap()
            .len(),
        3
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

    let per = |d: &str| format!("SELECT count(*) FROM tickets WHERE distinct_id = '{d}'");
    assert_eq!(app.count(&per(gone)).await, 0);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM messages WHERE ticket_id IN ('{t1}', '{t2}')"
        ))
        .await,
        0
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM messages WHERE distinct_id = '{gone}'"
        ))
        .await,
        0
    );
    for t in [&t1, &t2] {
        assert_error(
            app.get_messages(&team.token, t, &[("distinct_id", gone)])
                .await,
            404,
            "not_found",
        )
        .await;
        let res = app
            .operator(
                &team.secret,
                Method::GET,
                &format!("/api/conversations/tickets/{t}"),
                None,
            )
            .await;
        assert_error(res, 404, "not_found").await;
    }
    assert_eq!(visitor_tickets(&app, &team, gone).await["count"], 0);
    assert_eq!(
        inbox(&app, &team, &[("distinct_id", gone)]).await["count"],
        0
    );

    // The other visitor is untouched.
    assert_eq!(app.count(&per(kept)).await, 1);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM messages WHERE ticket_id = '{k}'"
        ))
        .await,
        2
    );
    assert_eq!(
        messages(&app, &team, &k, kept).await["messages"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(inbox(&app, &team, &[]).await["count"], 1);
}

// --- unread count ---

#[actix_web::test]
async fn public_replies_raise_unread_private_notes_do_not_and_read_resets() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let visitor = "unread@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "hi").await;
    let unread = |v: &Value| v["unread_count"].clone();
    assert_eq!(unread(&messages(&app, &team, &ticket, visitor).await), 0);

    app.operator_post(&team.secret, &ticket, &json!({"content": "one"}))
        .await;
    app.operator_post(
        &team.secret,
        &ticket,
        &json!({"content": "two", "author_type": "AI"}),
    )
    .await;
    assert_eq!(unread(&messages(&app, &team, &ticket, visitor).await), 2);
    assert_eq!(
        unread(&visitor_tickets(&app, &team, visitor).await["results"][0]),
        2
    );

    app.operator_post(
        &team.secret,
        &ticket,
        &json!({"content": "note", "is_private": true}),
    )
    .await;
    assert_eq!(
        unread(&messages(&app, &team, &ticket, visitor).await),
        2,
        "a note is not unread"
    );
    assert_eq!(
        unread(&visitor_tickets(&app, &team, visitor).await["results"][0]),
        2
    );

    let res = app
        .mark_read(&team.token, &ticket, &json!({"distinct_id": visitor}))
        .await;
    assert_eq!(
        body(res, 200).await,
        json!({"success": true, "unread_count": 0})
    );
    assert_eq!(unread(&messages(&app, &team, &ticket, visitor).await), 0);
    assert_eq!(
        unread(&visitor_tickets(&app, &team, visitor).await["results"][0]),
        0
    );

    // The visitor's own message never counts; a new reply counts again.
    follow_up(&app, &team, visitor, &ticket, "thanks").await;
    assert_eq!(unread(&messages(&app, &team, &ticket, visitor).await), 0);
    app.operator_post(&team.secret, &ticket, &json!({"content": "welcome"}))
        .await;
    assert_eq!(unread(&messages(&app, &team, &ticket, visitor).await), 1);

    // Another visitor cannot mark it read.
    assert_error(
        app.mark_read(
            &team.token,
            &ticket,
            &json!({"distinct_id": "other@example.com"}),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    assert_eq!(unread(&messages(&app, &team, &ticket, visitor).await), 1);
}

// --- settings ---

#[actix_web::test]
async fn settings_show_the_current_configuration() {
    let app = spawn_app().await;
    let (team, created) = app
        .create_team_json(json!({"allowed_widget_domains": ["shop.example.com"],
                                 "identity_verification": "optional",
                                 "rate_limits": {"message_ip_per_minute": 42}}))
        .await;
    let s = body(
        app.operator(
            &team.secret,
            Method::GET,
            "/api/conversations/settings",
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(s["conversations_enabled"], true);
    assert_eq!(s["allowed_widget_domains"], json!(["shop.example.com"]));
    assert_eq!(s["identity_verification"], "optional");
    assert_eq!(s["rate_limits"], created["rate_limits"]);
    assert_eq!(s["rate_limits"]["message_ip_per_minute"], 42);
    assert_eq!(s["public_token"], team.token.as_str());
    assert!(
        !s.to_string().contains(&team.secret),
        "the secret key is never shown again"
    );
}

#[actix_web::test]
async fn disabling_conversations_takes_effect_on_the_next_request() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let visitor = "toggle@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "hi").await;
    // Cache the team.
    messages(&app, &team, &ticket, visitor).await;

    let s = body(
        app.patch_settings(&team.secret, &json!({"conversations_enabled": false}))
            .await,
        200,
    )
    .await;
    assert_eq!(s["conversations_enabled"], false);
    assert_error(
        app.get_messages(&team.token, &ticket, &[("distinct_id", visitor)])
            .await,
        403,
        "conversations_disabled",
    )
    .await;
    assert_error(
        app.post_message(
            &team.token,
            &json!({"distinct_id": visitor, "message": "x"}),
        )
        .await,
        403,
        "conversations_disabled",
    )
    .await;
    assert_eq!(app.count("SELECT count(*) FROM messages").await, 1);

    body(
        app.patch_settings(&team.secret, &json!({"conversations_enabled": true}))
            .await,
        200,
    )
    .await;
    messages(&app, &team, &ticket, visitor).await;
}

#[actix_web::test]
async fn allowed_widget_domains_take_effect_at_once() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let visitor = "origin@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "hi").await;
    let get = |origin: &'static str| {
        app.client
            .get(format!(
                "{}/api/conversations/widget/messages/{ticket}",
                app.address
            ))
            .header("X-Conversations-Token", &team.token)
            .header("Origin", origin)
            .query(&[("distinct_id", visitor)])
            .send()
    };
    assert_eq!(
        get("https://evil.example.net").await.unwrap().status(),
        200,
        "empty list allows all"
    );

    let s = body(
        app.patch_settings(
            &team.secret,
            &json!({"allowed_widget_domains": ["shop.example.com", "*.corp.example"]}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(
        s["allowed_widget_domains"],
        json!(["shop.example.com", "*.corp.example"])
    );
    assert_error(
        get("https://evil.example.net").await.unwrap(),
        403,
        "origin_not_allowed",
    )
    .await;
    assert_eq!(get("https://shop.example.com").await.unwrap().status(), 200);
    assert_eq!(get("https://a.corp.example").await.unwrap().status(), 200);

    body(
        app.patch_settings(&team.secret, &json!({"allowed_widget_domains": []}))
            .await,
        200,
    )
    .await;
    assert_eq!(get("https://evil.example.net").await.unwrap().status(), 200);
}

#[actix_web::test]
async fn patching_rate_limits_keeps_the_other_keys() {
    if skip_in_cluster_without_shared_counters(
        "counts a per-node rate budget; budgets shared by the nodes come with issue 17 (runs when REDIS_URL is set)",
    ) {
        return;
    }
    let app = spawn_app().await;
    let (team, created) = app
        .create_team_json(json!({"rate_limits": {"read_distinct_id_per_minute": 77}}))
        .await;
    let before = created["rate_limits"].clone();
    assert_eq!(before["read_distinct_id_per_minute"], 77);

    let s = body(
        app.patch_settings(
            &team.secret,
            &json!({"rate_limits": {"message_distinct_id_per_minute": 2}}),
        )
        .await,
        200,
    )
    .await;
    let mut want = before.clone();
    want["message_distinct_id_per_minute"] = json!(2);
    assert_eq!(s["rate_limits"], want, "only the given key changes");
    let got = body(
        app.operator(
            &team.secret,
            Method::GET,
            "/api/conversations/settings",
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(got["rate_limits"], want);

    // And it is in force at once: the third post of a visitor within the minute is refused.
    let visitor = "limited@example.com";
    for i in 0..2 {
        let res = app
            .post_message(
                &team.token,
                &json!({"distinct_id": visitor, "message": format!("m{i}")}),
            )
            .await;
        assert_eq!(res.status(), 201);
    }
    let res = app
        .post_message(
            &team.token,
            &json!({"distinct_id": visitor, "message": "m3"}),
        )
        .await;
    assert_error(res, 429, "rate_limited").await;
}

#[actix_web::test]
async fn patching_settings_refuses_unknown_fields() {
    let app = spawn_app().await;
    let team = app.create_team().await;
    for bad in [
        json!({"colour": "blue"}),
        json!({"rate_limits": {"messages_per_day": 5}}),
        json!({"identity_verification": "sometimes"}),
        json!({"conversations_enabled": "no"}),
    ] {
        assert_error(
            app.patch_settings(&team.secret, &bad).await,
            400,
            "validation_error",
        )
        .await;
    }
    let s = body(
        app.operator(
            &team.secret,
            Method::GET,
            "/api/conversations/settings",
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(s["conversations_enabled"], true);
    assert_eq!(s["identity_verification"], "off");
}

#[actix_web::test]
async fn rotating_the_public_token_retires_the_old_one_at_once() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let visitor = "rotate@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "hi").await;
    messages(&app, &team, &ticket, visitor).await;

    let r = body(
        app.operator(
            &team.secret,
            Method::POST,
            "/api/conversations/settings/rotate_public_token",
            None,
        )
        .await,
        200,
    )
    .await;
    let new_token = r["public_token"].as_str().unwrap().to_owned();
    assert_ne!(new_token, team.token);

    assert_error(
        app.get_messages(&team.token, &ticket, &[("distinct_id", visitor)])
            .await,
        401,
        "invalid_token",
    )
    .await;
    assert_error(
        app.post_message(
            &team.token,
            &json!({"distinct_id": visitor, "message": "old"}),
        )
        .await,
        401,
        "invalid_token",
    )
    .await;
    let res = app
        .get_messages(&new_token, &ticket, &[("distinct_id", visitor)])
        .await;
    assert_eq!(res.status(), 200);
    let s = body(
        app.operator(
            &team.secret,
            Method::GET,
            "/api/conversations/settings",
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(s["public_token"], new_token.as_str());
    // The secret key is unaffected.
    assert_eq!(inbox(&app, &team, &[]).await["count"], 1);
}

#[actix_web::test]
async fn a_private_note_does_not_move_the_visitors_ticket_list() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let visitor = "order@example.com";
    let older = app.open_ticket(&team.token, visitor, "older").await;
    let newer = app.open_ticket(&team.token, visitor, "newer").await;
    let before = visitor_tickets(&app, &team, visitor).await;
    assert_eq!(ids(&before), vec![newer.clone(), older.clone()]);
    app.operator_post(
        &team.secret,
        &older,
        &json!({"content": "note", "is_private": true}),
    )
    .await;
    let after = visitor_tickets(&app, &team, visitor).await;
    assert_eq!(
        ids(&after),
        vec![newer, older.clone()],
        "a note is not activity the visitor sees"
    );
    assert_eq!(
        after["results"][1]["last_message_at"],
        before["results"][1]["last_message_at"]
    );
    assert_eq!(after["results"][1]["last_message"], "older");
    // The operator's inbox, though, counts it as activity.
    assert_eq!(
        ids(&inbox(&app, &team, &[("limit", "1")]).await),
        vec![older]
    );
}

#[actix_web::test]
async fn replies_are_ordered_after_the_customer_with_microsecond_utc_timestamps() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let visitor = "clock@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "hi").await;
    let r = body(
        app.operator_post(&team.secret, &ticket, &json!({"content": "a"}))
            .await,
        201,
    )
    .await;
    let n = body(
        app.operator_post(
            &team.secret,
            &ticket,
            &json!({"content": "n", "is_private": true}),
        )
        .await,
        201,
    )
    .await;
    let c = follow_up(&app, &team, visitor, &ticket, "b").await;
    let is_ts = |v: &Value| {
        let s = v.as_str().unwrap_or_default();
        s.len() == 27 && s.ends_with('Z') && s.as_bytes()[19] == b'.'
    };
    assert!(is_ts(&r["created_at"]), "{r}");
    let t = app.operator_ticket(&team.secret, &ticket).await;
    let stamps: Vec<&str> = t["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["created_at"].as_str().unwrap())
        .collect();
    assert!(stamps.iter().all(|s| is_ts(&json!(s))), "{stamps:?}");
    assert!(
        stamps.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing: {stamps:?}"
    );
    assert_eq!(stamps[1], r["created_at"].as_str().unwrap());
    assert_eq!(stamps[2], n["created_at"].as_str().unwrap());
    assert_eq!(stamps[3], c["created_at"].as_str().unwrap());
}

#[actix_web::test]
async fn the_visitors_view_follows_every_kind_of_change() {
    // The ticket actor caches status and unread count; every path that changes them
    // (PATCH, replies, notes, customer messages, read marks) must keep it current.
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let visitor = "mixed@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "start").await;
    let check = |status: &'static str, unread: i64| {
        let (app, team, ticket) = (&app, &team, &ticket);
        async move {
            let page = messages(app, team, ticket, visitor).await;
            assert_eq!(page["ticket_status"], status, "{page}");
            assert_eq!(page["unread_count"], unread, "{page}");
            let list = visitor_tickets(app, team, visitor).await;
            assert_eq!(list["results"][0]["status"], status);
            assert_eq!(list["results"][0]["unread_count"], unread);
            assert_eq!(
                app.operator_ticket(&team.secret, ticket).await["status"],
                status
            );
        }
    };
    check("new", 0).await;
    body(
        app.patch_ticket(&team.secret, &ticket, &json!({"status": "open"}))
            .await,
        200,
    )
    .await;
    check("open", 0).await;
    app.operator_post(&team.secret, &ticket, &json!({"content": "r1"}))
        .await;
    check("open", 1).await;
    body(
        app.patch_ticket(&team.secret, &ticket, &json!({"status": "resolved"}))
            .await,
        200,
    )
    .await;
    check("resolved", 1).await;
    app.operator_post(
        &team.secret,
        &ticket,
        &json!({"content": "n", "is_private": true}),
    )
    .await;
    check("resolved", 1).await;
    follow_up(&app, &team, visitor, &ticket, "back").await;
    check("open", 1).await;
    body(
        app.mark_read(&team.token, &ticket, &json!({"distinct_id": visitor}))
            .await,
        200,
    )
    .await;
    check("open", 0).await;
    body(
        app.patch_ticket(&team.secret, &ticket, &json!({"assignee": "x"}))
            .await,
        200,
    )
    .await;
    check("open", 0).await;
    app.operator_post(
        &team.secret,
        &ticket,
        &json!({"content": "r2", "author_type": "AI"}),
    )
    .await;
    body(
        app.patch_ticket(&team.secret, &ticket, &json!({"status": "on_hold"}))
            .await,
        200,
    )
    .await;
    check("on_hold", 1).await;
    follow_up(&app, &team, visitor, &ticket, "hello?").await;
    check("on_hold", 1).await;
}

#[actix_web::test]
async fn operators_see_when_the_visitor_last_read() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let visitor = "seen@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "hi").await;
    app.operator_post(&team.secret, &ticket, &json!({"content": "answer"}))
        .await;
    let before = app.operator_ticket(&team.secret, &ticket).await;
    body(
        app.mark_read(&team.token, &ticket, &json!({"distinct_id": visitor}))
            .await,
        200,
    )
    .await;
    let after = app.operator_ticket(&team.secret, &ticket).await;
    let read_fields: Vec<(&String, &Value)> = after
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, v)| k.contains("read_at") && v.is_string())
        .collect();
    assert!(
        !read_fields.is_empty(),
        "no read timestamp in the operator's ticket after the visitor read it: before {before}, after {after}"
    );
    let listed: Value = app.inbox(&team.secret, &[]).await.json().await.unwrap();
    assert!(listed["results"][0]
        .as_object()
        .unwrap()
        .iter()
        .any(|(k, v)| k.contains("read_at") && v.is_string()));
}
