//! `GET /api/conversations/widget/messages/{ticket_id}` and `GET …/widget/tickets`: order,
//! paging, clamping, private notes, escaping, and whose tickets a visitor sees.

use crate::helpers::{
    assert_error, escaped, is_utc_micros, spawn_app, status_json, visitor, TestApp, TestTeam,
};
use serde_json::{json, Value};

/// `(what, query pairs, the field the error names)`.
type QueryCase<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);

/// Posts `n` follow-ups `"m1"…"mn"` to `ticket`, one after another.
async fn post_follow_ups(app: &TestApp, team: &TestTeam, who: &str, ticket: &str, n: usize) {
    for i in 1..=n {
        let res = app
            .post_message(
                &team.token,
                &json!({"distinct_id": who, "message": format!("m{i}"), "ticket_id": ticket}),
            )
            .await;
        assert_eq!(res.status(), 201, "follow-up m{i} is accepted");
    }
}

async fn messages_page(
    app: &TestApp,
    team: &TestTeam,
    ticket: &str,
    query: &[(&str, &str)],
) -> Value {
    let (status, page) = status_json(app.get_messages(&team.token, ticket, query).await).await;
    assert_eq!(status, 200, "GET messages {query:?}: {page}");
    page
}

async fn tickets_page(app: &TestApp, team: &TestTeam, query: &[(&str, &str)]) -> Value {
    let (status, page) = status_json(app.get_tickets(&team.token, query).await).await;
    assert_eq!(status, 200, "GET tickets {query:?}: {page}");
    page
}

fn contents(page: &Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .expect("messages is a list")
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect()
}

fn ids(page: &Value) -> Vec<String> {
    page["results"]
        .as_array()
        .expect("results is a list")
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

#[actix_web::test]
async fn messages_are_listed_oldest_first_with_the_documented_fields() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let who = visitor("list");
    let ticket = app.open_ticket(&team.token, &who, "m0").await;
    post_follow_ups(&app, &team, &who, &ticket, 3).await;

    // Act
    let page = messages_page(&app, &team, &ticket, &[("distinct_id", &who)]).await;

    // Assert
    assert_eq!(page["ticket_id"], ticket.as_str());
    assert_eq!(page["ticket_status"], "new");
    assert_eq!(page["has_more"], false);
    assert_eq!(contents(&page), ["m0", "m1", "m2", "m3"], "ascending order");
    let msgs = page["messages"].as_array().unwrap();
    for m in msgs {
        assert!(is_utc_micros(m["created_at"].as_str().unwrap()), "{m}");
        assert_eq!(m["author_type"], "customer");
        assert_eq!(m["is_private"], false);
    }
    for w in msgs.windows(2) {
        assert!(
            w[0]["created_at"].as_str() < w[1]["created_at"].as_str(),
            "created_at strictly increases"
        );
    }
}

#[actix_web::test]
async fn after_returns_only_messages_strictly_after_the_given_time() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let who = visitor("after");
    let ticket = app.open_ticket(&team.token, &who, "m0").await;
    post_follow_ups(&app, &team, &who, &ticket, 4).await;
    let all = messages_page(&app, &team, &ticket, &[("distinct_id", &who)]).await;
    let second_at = all["messages"][1]["created_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let last_at = all["messages"][4]["created_at"]
        .as_str()
        .unwrap()
        .to_owned();

    // Act
    let after_second = messages_page(
        &app,
        &team,
        &ticket,
        &[("distinct_id", &who), ("after", &second_at)],
    )
    .await;
    let after_last = messages_page(
        &app,
        &team,
        &ticket,
        &[("distinct_id", &who), ("after", &last_at)],
    )
    .await;
    let offset_form = second_at.replace('Z', "+00:00");
    let after_offset = messages_page(
        &app,
        &team,
        &ticket,
        &[("distinct_id", &who), ("after", &offset_form)],
    )
    .await;

    // Assert
    assert_eq!(
        contents(&after_second),
        ["m2", "m3", "m4"],
        "the message at exactly `after` is not repeated"
    );
    assert_eq!(
        contents(&after_last),
        Vec::<String>::new(),
        "nothing after the last"
    );
    assert_eq!(after_last["has_more"], false);
    assert_eq!(
        contents(&after_offset),
        contents(&after_second),
        "`+00:00` means the same instant as `Z`"
    );
}

#[actix_web::test]
async fn limit_defaults_to_100_clamps_to_1_and_500_and_has_more_tells_the_truth() {
    // Arrange: 502 messages on one ticket (posted by parallel clients).
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let who = visitor("many");
    let ticket = app.open_ticket(&team.token, &who, "m0").await;
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let (client, url, token, who, ticket) = (
                app.client.clone(),
                app.url("/api/conversations/widget/message"),
                team.token.clone(),
                who.clone(),
                ticket.clone(),
            );
            actix_web::rt::spawn(async move {
                for i in 0..(if w == 0 { 86 } else { 83 }) {
                    let res = client
                        .post(&url)
                        .header("X-Conversations-Token", &token)
                        .json(&json!({"distinct_id": who, "message": format!("w{w}-{i}"), "ticket_id": ticket}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(res.status(), 201);
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let total = app
        .count(&format!(
            "SELECT count(*) FROM messages WHERE ticket_id = '{ticket}'"
        ))
        .await;
    assert_eq!(total, 502);
    let len = |p: &Value| p["messages"].as_array().unwrap().len();

    // Act
    let default = messages_page(&app, &team, &ticket, &[("distinct_id", &who)]).await;
    let zero = messages_page(
        &app,
        &team,
        &ticket,
        &[("distinct_id", &who), ("limit", "0")],
    )
    .await;
    let negative = messages_page(
        &app,
        &team,
        &ticket,
        &[("distinct_id", &who), ("limit", "-3")],
    )
    .await;
    let huge = messages_page(
        &app,
        &team,
        &ticket,
        &[("distinct_id", &who), ("limit", "100000")],
    )
    .await;
    let last_two_at = huge["messages"][499]["created_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let rest = messages_page(
        &app,
        &team,
        &ticket,
        &[
            ("distinct_id", &who),
            ("limit", "500"),
            ("after", &last_two_at),
        ],
    )
    .await;
    let exact = messages_page(
        &app,
        &team,
        &ticket,
        &[
            ("distinct_id", &who),
            ("limit", "1"),
            ("after", rest["messages"][0]["created_at"].as_str().unwrap()),
        ],
    )
    .await;

    // Assert
    assert_eq!(len(&default), 100, "limit defaults to 100");
    assert_eq!(default["has_more"], true);
    assert_eq!(len(&zero), 1, "limit=0 is clamped to 1");
    assert_eq!(zero["has_more"], true);
    assert_eq!(len(&negative), 1, "limit=-3 is clamped to 1");
    assert_eq!(len(&huge), 500, "limit=100000 is clamped to 500");
    assert_eq!(huge["has_more"], true, "two more exist after the first 500");
    assert_eq!(len(&rest), 2, "the last two");
    assert_eq!(rest["has_more"], false, "nothing after the last page");
    assert_eq!(len(&exact), 1, "the very last message");
    assert_eq!(
        exact["has_more"], false,
        "a page that ends exactly at the end has no more"
    );
}

#[actix_web::test]
async fn invalid_query_parameters_on_get_messages_are_400_naming_the_parameter() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let who = visitor("badq");
    let ticket = app.open_ticket(&team.token, &who, "hi").await;
    let cases: Vec<QueryCase> = vec![
        (
            "limit not a number",
            vec![("distinct_id", &who), ("limit", "ten")],
            "limit",
        ),
        (
            "limit a decimal",
            vec![("distinct_id", &who), ("limit", "1.5")],
            "limit",
        ),
        (
            "limit empty",
            vec![("distinct_id", &who), ("limit", "")],
            "limit",
        ),
        (
            "after not a time",
            vec![("distinct_id", &who), ("after", "yesterday")],
            "after",
        ),
        (
            "after a date only",
            vec![("distinct_id", &who), ("after", "2026-13-45")],
            "after",
        ),
        (
            "after empty",
            vec![("distinct_id", &who), ("after", "")],
            "after",
        ),
        ("distinct_id missing", vec![], "distinct_id"),
        (
            "distinct_id guessable",
            vec![("distinct_id", "test")],
            "distinct_id",
        ),
    ];
    let mut failures = Vec::new();

    for (what, query, field) in cases {
        // Act
        let (status, err) = status_json(app.get_messages(&team.token, &ticket, &query).await).await;
        // Assert
        if status != 400 || err["code"] != "validation_error" || err["field"] != field {
            failures.push(format!(
                "{what}: expected 400 field {field}, got {status} {err}"
            ));
        }
    }
    let (status, err) = status_json(
        app.get_messages(&team.token, "not-a-uuid", &[("distinct_id", &who)])
            .await,
    )
    .await;
    if status != 400 || err["field"] != "ticket_id" {
        failures.push(format!(
            "ticket id not a UUID: expected 400 field ticket_id, got {status} {err}"
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[actix_web::test]
async fn private_notes_are_never_shown_counted_or_previewed_to_the_visitor() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let who = visitor("private");
    let ticket = app.open_ticket(&team.token, &who, "my question").await;
    let note = app
        .operator_post(
            &team.secret,
            &ticket,
            &json!({"content": "INTERNAL: customer is a known fraudster", "author_type": "human",
                    "author_name": "Ann", "is_private": true}),
        )
        .await;
    assert_eq!(note.status(), 201, "the private note is accepted");

    // Act
    let page = messages_page(&app, &team, &ticket, &[("distinct_id", &who)]).await;
    let later = messages_page(
        &app,
        &team,
        &ticket,
        &[
            ("distinct_id", &who),
            ("after", page["messages"][0]["created_at"].as_str().unwrap()),
        ],
    )
    .await;
    let list = tickets_page(&app, &team, &[("distinct_id", &who)]).await;

    // Assert
    assert_eq!(contents(&page), ["my question"], "the note is not listed");
    assert_eq!(
        contents(&later),
        Vec::<String>::new(),
        "nor after the first message"
    );
    assert_eq!(later["has_more"], false, "nor hinted at by has_more");
    let row = &list["results"][0];
    assert_eq!(row["message_count"], 1, "the note is not counted");
    assert_eq!(
        row["last_message"], "my question",
        "the note is not previewed"
    );
    for body in [page.to_string(), list.to_string()] {
        assert!(
            !body.contains("fraudster"),
            "the note's text never appears: {body}"
        );
    }
}

#[actix_web::test]
async fn public_operator_replies_are_listed_with_their_author_type_and_name() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let who = visitor("replies");
    let ticket = app.open_ticket(&team.token, &who, "hello?").await;
    for (kind, name, text) in [
        ("human", "Ann", "Hi, Ann here"),
        ("AI", "Botty", "I am a bot"),
    ] {
        let res = app
            .operator_post(
                &team.secret,
                &ticket,
                &json!({"content": text, "author_type": kind, "author_name": name, "is_private": false}),
            )
            .await;
        assert_eq!(res.status(), 201, "{kind} reply accepted");
    }

    // Act
    let page = messages_page(&app, &team, &ticket, &[("distinct_id", &who)]).await;
    let list = tickets_page(&app, &team, &[("distinct_id", &who)]).await;

    // Assert
    let msgs = page["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3);
    assert_eq!(
        (
            msgs[1]["author_type"].as_str(),
            msgs[1]["author_name"].as_str()
        ),
        (Some("human"), Some("Ann"))
    );
    assert_eq!(
        (
            msgs[2]["author_type"].as_str(),
            msgs[2]["author_name"].as_str()
        ),
        (Some("AI"), Some("Botty"))
    );
    assert_eq!(msgs[2]["content"], "I am a bot");
    assert_eq!(
        list["results"][0]["message_count"], 3,
        "public replies are counted"
    );
    assert_eq!(
        list["results"][0]["last_message"], "I am a bot",
        "and previewed"
    );
}

#[actix_web::test]
async fn returned_text_is_html_escaped_but_stored_raw() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let who = visitor("xss");
    let raw = r#"<script>alert("x") & 'y'</script>"#;
    let expected = "&lt;script&gt;alert(&quot;x&quot;) &amp; &#x27;y&#x27;&lt;/script&gt;";
    assert_eq!(escaped(raw), expected);
    let (status, body) = status_json(
        app.post_message(
            &team.token,
            &json!({"distinct_id": who, "message": raw, "traits": {"name": raw}}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let ticket = body["ticket_id"].as_str().unwrap().to_owned();
    let reply = app
        .operator_post(
            &team.secret,
            &ticket,
            &json!({"content": "<b>bold</b>", "author_type": "human", "author_name": "<img src=x onerror=alert(1)>", "is_private": false}),
        )
        .await;
    assert_eq!(reply.status(), 201);

    // Act
    let page = messages_page(&app, &team, &ticket, &[("distinct_id", &who)]).await;
    let list = tickets_page(&app, &team, &[("distinct_id", &who)]).await;

    // Assert
    let m = &page["messages"];
    assert_eq!(m[0]["content"], expected, "content is escaped");
    assert_eq!(
        m[0]["author_name"], expected,
        "author_name from traits is escaped"
    );
    assert_eq!(m[1]["content"], "&lt;b&gt;bold&lt;/b&gt;");
    assert_eq!(
        m[1]["author_name"], "&lt;img src=x onerror=alert(1)&gt;",
        "operator names too"
    );
    let preview_ticket = app.open_ticket(&team.token, &who, raw).await;
    let list2 = tickets_page(&app, &team, &[("distinct_id", &who)]).await;
    let row = list2["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == preview_ticket.as_str())
        .expect("the new ticket is listed");
    assert_eq!(row["last_message"], expected, "last_message is escaped");
    assert_eq!(
        list["results"][0]["last_message"],
        "&lt;b&gt;bold&lt;/b&gt;"
    );
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
    assert_eq!(stored, raw, "the database keeps the raw text");
}

#[actix_web::test]
async fn tickets_are_listed_by_latest_activity_with_the_total_count() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let who = visitor("order");
    let oldest = app.open_ticket(&team.token, &who, "first ticket").await;
    let middle = app.open_ticket(&team.token, &who, "second ticket").await;
    let newest = app.open_ticket(&team.token, &who, "third ticket").await;
    let res = app
        .post_message(
            &team.token,
            &json!({"distinct_id": who, "message": "bump the oldest", "ticket_id": oldest}),
        )
        .await;
    assert_eq!(res.status(), 201);

    // Act
    let all = tickets_page(&app, &team, &[("distinct_id", &who)]).await;
    let page = tickets_page(&app, &team, &[("distinct_id", &who), ("limit", "2")]).await;

    // Assert
    assert_eq!(
        ids(&all),
        [oldest.clone(), newest.clone(), middle.clone()],
        "newest activity first"
    );
    assert_eq!(all["count"], 3);
    let first = &all["results"][0];
    assert_eq!(first["last_message"], "bump the oldest");
    assert_eq!(first["message_count"], 2);
    assert_eq!(first["status"], "new");
    for key in ["last_message_at", "created_at"] {
        assert!(
            is_utc_micros(first[key].as_str().unwrap()),
            "{key} format: {first}"
        );
    }
    assert!(first["last_message_at"].as_str() > first["created_at"].as_str());
    assert_eq!(
        page["results"].as_array().unwrap().len(),
        2,
        "limit applies to results"
    );
    assert_eq!(page["count"], 3, "count is the total, not the page size");
}

#[actix_web::test]
async fn tickets_can_be_filtered_by_status() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let who = visitor("filter");
    let resolved = app.open_ticket(&team.token, &who, "old").await;
    let fresh = app.open_ticket(&team.token, &who, "new").await;
    let patched = app
        .client
        .patch(app.url(&format!("/api/conversations/tickets/{resolved}")))
        .bearer_auth(&team.secret)
        .json(&json!({"status": "resolved"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);

    // Act
    let new = tickets_page(&app, &team, &[("distinct_id", &who), ("status", "new")]).await;
    let done = tickets_page(
        &app,
        &team,
        &[("distinct_id", &who), ("status", "resolved")],
    )
    .await;
    let open = tickets_page(&app, &team, &[("distinct_id", &who), ("status", "open")]).await;

    // Assert
    assert_eq!(ids(&new), [fresh]);
    assert_eq!(new["count"], 1);
    assert_eq!(ids(&done), [resolved]);
    assert_eq!(done["results"][0]["status"], "resolved");
    assert_eq!(open["count"], 0);
}

#[actix_web::test]
async fn invalid_query_parameters_on_get_tickets_are_400_naming_the_parameter() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let who = visitor("badt");
    let cases: Vec<QueryCase> = vec![
        (
            "unknown status",
            vec![("distinct_id", &who), ("status", "closed")],
            "status",
        ),
        (
            "status with SQL",
            vec![("distinct_id", &who), ("status", "new' OR '1'='1")],
            "status",
        ),
        (
            "limit not a number",
            vec![("distinct_id", &who), ("limit", "all")],
            "limit",
        ),
        (
            "offset not a number",
            vec![("distinct_id", &who), ("offset", "x")],
            "offset",
        ),
        (
            "distinct_id missing",
            vec![("status", "new")],
            "distinct_id",
        ),
        (
            "distinct_id empty",
            vec![("distinct_id", "")],
            "distinct_id",
        ),
    ];
    let mut failures = Vec::new();
    for (what, query, field) in cases {
        // Act
        let (status, err) = status_json(app.get_tickets(&team.token, &query).await).await;
        // Assert
        if status != 400 || err["code"] != "validation_error" || err["field"] != field {
            failures.push(format!(
                "{what}: expected 400 field {field}, got {status} {err}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[actix_web::test]
async fn ticket_listing_limit_defaults_to_10_clamps_to_1_and_50_and_offset_pages() {
    // Arrange: 52 tickets for one visitor.
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let who = visitor("pages");
    let mut created = Vec::new();
    for i in 0..52 {
        created.push(app.open_ticket(&team.token, &who, &format!("t{i}")).await);
    }
    created.reverse(); // newest first
    let len = |p: &Value| p["results"].as_array().unwrap().len();

    // Act
    let default = tickets_page(&app, &team, &[("distinct_id", &who)]).await;
    let zero = tickets_page(&app, &team, &[("distinct_id", &who), ("limit", "0")]).await;
    let huge = tickets_page(&app, &team, &[("distinct_id", &who), ("limit", "1000")]).await;
    let tail = tickets_page(
        &app,
        &team,
        &[("distinct_id", &who), ("limit", "50"), ("offset", "50")],
    )
    .await;
    let second = tickets_page(&app, &team, &[("distinct_id", &who), ("offset", "10")]).await;
    let beyond = tickets_page(&app, &team, &[("distinct_id", &who), ("offset", "1000")]).await;

    // Assert
    assert_eq!(len(&default), 10, "limit defaults to 10");
    assert_eq!(ids(&default), created[..10]);
    assert_eq!(len(&zero), 1, "limit=0 is clamped to 1");
    assert_eq!(len(&huge), 50, "limit=1000 is clamped to 50");
    assert_eq!(ids(&tail), created[50..], "offset skips the first 50");
    assert_eq!(
        ids(&second),
        created[10..20],
        "offset=10 is the second page"
    );
    assert_eq!(len(&beyond), 0);
    for p in [&default, &zero, &huge, &tail, &beyond] {
        assert_eq!(p["count"], 52, "count is always the total");
    }
}

#[actix_web::test]
async fn a_visitor_never_sees_another_visitors_or_another_teams_tickets() {
    // Arrange
    let app = spawn_app().await;
    let (team, other_team) = (app.create_team().await, app.create_team().await);
    let (me, someone) = (visitor("me"), visitor("someone"));
    let mine = app.open_ticket(&team.token, &me, "mine").await;
    app.open_ticket(&team.token, &someone, "theirs").await;
    app.open_ticket(&other_team.token, &me, "same id, other team")
        .await;

    // Act
    let list = tickets_page(&app, &team, &[("distinct_id", &me)]).await;
    let empty = tickets_page(&app, &team, &[("distinct_id", &visitor("nobody"))]).await;

    // Assert
    assert_eq!(ids(&list), [mine], "only my ticket of this team");
    assert_eq!(list["count"], 1);
    assert_eq!(empty["count"], 0);
    assert_eq!(empty["results"], json!([]));
    assert!(!list.to_string().contains("theirs") && !list.to_string().contains("other team"));
}

#[actix_web::test]
async fn an_unknown_ticket_is_404_on_get_messages() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let who = visitor("nothing");

    // Act
    let res = app
        .get_messages(
            &team.token,
            &uuid::Uuid::now_v7().to_string(),
            &[("distinct_id", &who)],
        )
        .await;

    // Assert
    assert_error(res, 404, "not_found").await;
}

#[actix_web::test]
async fn has_more_does_not_count_private_notes() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let who = visitor("hm");
    let ticket = app.open_ticket(&team.token, &who, "question").await;
    for i in 0..3 {
        let res = app
            .operator_post(
                &team.secret,
                &ticket,
                &json!({"content": format!("note {i}"), "author_type": "human", "author_name": "Ann", "is_private": true}),
            )
            .await;
        assert_eq!(res.status(), 201);
    }

    // Act
    let page = messages_page(
        &app,
        &team,
        &ticket,
        &[("distinct_id", &who), ("limit", "1")],
    )
    .await;

    // Assert
    assert_eq!(contents(&page), ["question"]);
    assert_eq!(
        page["has_more"], false,
        "only private notes follow: nothing more to see"
    );
}

#[actix_web::test]
async fn a_private_note_does_not_move_a_ticket_in_the_visitors_list() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let who = visitor("noteorder");
    let older = app.open_ticket(&team.token, &who, "older").await;
    let newer = app.open_ticket(&team.token, &who, "newer").await;
    let before = tickets_page(&app, &team, &[("distinct_id", &who)]).await;

    // Act
    let res = app
        .operator_post(
            &team.secret,
            &older,
            &json!({"content": "internal", "author_type": "human", "author_name": "Ann", "is_private": true}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let after = tickets_page(&app, &team, &[("distinct_id", &who)]).await;

    // Assert
    assert_eq!(
        ids(&after),
        [newer, older.clone()],
        "the order is unchanged"
    );
    assert_eq!(
        after["results"][1]["last_message_at"], before["results"][1]["last_message_at"],
        "last_message_at considers public messages only"
    );
}

#[actix_web::test]
async fn after_with_a_non_utc_offset_means_the_same_instant() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let who = visitor("offset");
    let ticket = app.open_ticket(&team.token, &who, "m0").await;
    post_follow_ups(&app, &team, &who, &ticket, 2).await;
    let all = messages_page(&app, &team, &ticket, &[("distinct_id", &who)]).await;
    let first_at = all["messages"][0]["created_at"]
        .as_str()
        .unwrap()
        .to_owned();
    // Rewrite `…THH:MM:SS.ffffffZ` as the same instant in UTC-05:00 (date kept simple:
    // only the hour changes, so pick the previous day when it would go negative).
    let (date, rest) = first_at.split_at(11);
    let hour: i64 = rest[..2].parse().unwrap();
    let shifted = if hour >= 5 {
        format!("{date}{:02}{}-05:00", hour - 5, &rest[2..rest.len() - 1])
    } else {
        format!("{date}{:02}{}+05:00", hour + 5, &rest[2..rest.len() - 1])
    };

    // Act
    let page = messages_page(
        &app,
        &team,
        &ticket,
        &[("distinct_id", &who), ("after", &shifted)],
    )
    .await;

    // Assert
    assert_eq!(
        contents(&page),
        ["m1", "m2"],
        "after={shifted} equals {first_at}"
    );
}

#[actix_web::test]
async fn reads_recover_by_themselves_when_the_database_drops_every_connection() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let ticket = app.open_ticket(&team.token, "reader", "m0").await;
    // More than the ticket actor's recent window: reading from the start is a query.
    post_follow_ups(&app, &team, "reader", &ticket, 12).await;
    let query = [("distinct_id", "reader")];
    assert_eq!(
        contents(&messages_page(&app, &team, &ticket, &query).await).len(),
        13
    );

    // A database restart or failover, as the server sees it: every connection is cut.
    let db = app.db().await;
    let cut = db
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(!cut.is_empty(), "the server had connections to cut");

    // Answers are 200 or a retryable 503 (never a 500), and soon 200 again, without a restart.
    let mut recovered = false;
    for _ in 0..40 {
        let res = app.get_messages(&team.token, &ticket, &query).await;
        let (status, page) = status_json(res).await;
        assert!(status == 200 || status == 503, "{status}: {page}");
        if status == 200 {
            assert_eq!(contents(&page).len(), 13);
            recovered = true;
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        recovered,
        "reads work again once the database accepts connections"
    );
    let listing = tickets_page(&app, &team, &[("distinct_id", "reader")]).await;
    assert_eq!(listing["count"], 1);
}

#[actix_web::test]
async fn concurrent_reads_of_many_tickets_each_get_exactly_their_own_page() {
    // Pages that wait together are read in one statement (src/store/pages.rs): no page may
    // get another ticket's messages, lose its order, or its has_more.
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let mut tickets = Vec::new();
    for t in 0..16 {
        let who = format!("many-{t}");
        let ticket = app
            .open_ticket(&team.token, &who, &format!("t{t} m0"))
            .await;
        for i in 1..=11 {
            let res = app
                .post_message(
                    &team.token,
                    &json!({"distinct_id": who, "message": format!("t{t} m{i}"), "ticket_id": ticket}),
                )
                .await;
            assert_eq!(res.status(), 201);
        }
        tickets.push((who, ticket));
    }
    // From the start (beyond the actors' recent windows: the database), 4 rounds at once.
    let reads = (0..4)
        .flat_map(|_| tickets.iter().enumerate())
        .map(|(t, (who, ticket))| {
            let (app, team) = (&app, &team);
            async move {
                let limit = if t % 2 == 0 { "12" } else { "5" };
                let page =
                    messages_page(app, team, ticket, &[("distinct_id", who), ("limit", limit)])
                        .await;
                (t, page)
            }
        });
    for (t, page) in futures_util::future::join_all(reads).await {
        let want: Vec<String> = (0..=11).map(|i| format!("t{t} m{i}")).collect();
        let n = if t % 2 == 0 { 12 } else { 5 };
        assert_eq!(contents(&page), want[..n], "ticket {t}");
        assert_eq!(page["has_more"], t % 2 == 1, "ticket {t}");
    }
}
