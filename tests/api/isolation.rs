//! Tenant isolation: one team's keys never reach, list, change or reveal another team's
//! tickets — another team's ticket answers exactly like a ticket that does not exist.

use crate::helpers::{assert_error, spawn_app, TestApp, TestTeam};
use reqwest::Method;
use serde_json::{json, Value};

struct Two {
    app: TestApp,
    a: TestTeam,
    b: TestTeam,
    b_visitor: &'static str,
    b_ticket: String,
}

async fn two_teams() -> Two {
    let app = spawn_app().await;
    let a = app.create_unlimited_team().await;
    let b = app.create_unlimited_team().await;
    app.open_ticket(&a.token, "alice@a.example", "A's ticket")
        .await;
    let b_visitor = "bob@b.example";
    let b_ticket = app.open_ticket(&b.token, b_visitor, "B's ticket").await;
    let res = app
        .operator_post(
            &b.secret,
            &b_ticket,
            &json!({"content": "B's note", "is_private": true}),
        )
        .await;
    assert_eq!(res.status(), 201);
    Two {
        app,
        a,
        b,
        b_visitor,
        b_ticket,
    }
}

#[actix_web::test]
async fn another_teams_ticket_is_not_found_on_every_operator_endpoint() {
    let t = two_teams().await;
    let before = t.app.operator_ticket(&t.b.secret, &t.b_ticket).await;
    let unknown = uuid::Uuid::now_v7().to_string();

    for ticket in [t.b_ticket.as_str(), unknown.as_str()] {
        let path = format!("/api/conversations/tickets/{ticket}");
        let calls: Vec<(&str, Method, String, Option<Value>)> = vec![
            ("GET ticket", Method::GET, path.clone(), None),
            (
                "PATCH status",
                Method::PATCH,
                path.clone(),
                Some(json!({"status": "resolved"})),
            ),
            (
                "PATCH assignee",
                Method::PATCH,
                path.clone(),
                Some(json!({"assignee": "mallory"})),
            ),
            (
                "POST reply",
                Method::POST,
                format!("{path}/messages"),
                Some(json!({"content": "injected", "author_type": "human"})),
            ),
            (
                "POST note",
                Method::POST,
                format!("{path}/messages"),
                Some(json!({"content": "injected", "is_private": true})),
            ),
            ("POST typing", Method::POST, format!("{path}/typing"), None),
        ];
        for (what, method, p, body) in calls {
            let res = t.app.operator(&t.a.secret, method, &p, body.as_ref()).await;
            let got = res.status().as_u16();
            let v = assert_error(res, 404, "not_found").await;
            assert_eq!(got, 404, "{what} on {ticket}");
            assert!(!v.to_string().contains("B's"), "{what}: {v}");
        }
    }

    let after = t.app.operator_ticket(&t.b.secret, &t.b_ticket).await;
    assert_eq!(after, before, "B's ticket is unchanged");
    assert_eq!(
        t.app
            .count(&format!(
                "SELECT count(*) FROM messages WHERE ticket_id = '{}'",
                t.b_ticket
            ))
            .await,
        2
    );
}

#[actix_web::test]
async fn the_inbox_never_lists_another_teams_tickets() {
    let t = two_teams().await;
    for q in [
        vec![],
        vec![("distinct_id", t.b_visitor)],
        vec![("status", "new")],
        vec![("limit", "500")],
    ] {
        let res = t.app.inbox(&t.a.secret, &q).await;
        assert_eq!(res.status(), 200);
        let v: Value = res.json().await.unwrap();
        assert!(!v.to_string().contains(&t.b_ticket), "{q:?}: {v}");
        assert!(!v.to_string().contains("B's"), "{q:?}: {v}");
        if q.is_empty() {
            assert_eq!(v["count"], 1);
        }
        if q.first().is_some_and(|(k, _)| *k == "distinct_id") {
            assert_eq!(v["count"], 0);
        }
    }
    let res = t.app.inbox(&t.b.secret, &[]).await;
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["count"], 1);
    assert_eq!(v["results"][0]["id"], t.b_ticket.as_str());
}

#[actix_web::test]
async fn erasing_a_person_never_touches_another_team() {
    let t = two_teams().await;
    let res = t
        .app
        .operator(
            &t.a.secret,
            Method::DELETE,
            &format!("/api/conversations/persons/{}", t.b_visitor),
            None,
        )
        .await;
    let status = res.status().as_u16();
    assert!(
        status == 200 || status == 204 || status == 404,
        "got {status}"
    );
    if status == 200 {
        let v: Value = res.json().await.unwrap();
        if let Some(n) = v.get("deleted_tickets") {
            assert_eq!(n, 0, "nothing of B's counted as deleted");
        }
    }
    assert_eq!(
        t.app
            .count(&format!(
                "SELECT count(*) FROM tickets WHERE id = '{}'",
                t.b_ticket
            ))
            .await,
        1
    );
    assert_eq!(
        t.app
            .count(&format!(
                "SELECT count(*) FROM messages WHERE ticket_id = '{}'",
                t.b_ticket
            ))
            .await,
        2
    );
    let res = t
        .app
        .get_messages(&t.b.token, &t.b_ticket, &[("distinct_id", t.b_visitor)])
        .await;
    assert_eq!(res.status(), 200);

    // The same distinct_id in team A is erased in A only.
    t.app
        .open_ticket(&t.a.token, t.b_visitor, "same person, other team")
        .await;
    let res = t
        .app
        .operator(
            &t.a.secret,
            Method::DELETE,
            &format!("/api/conversations/persons/{}", t.b_visitor),
            None,
        )
        .await;
    assert!(res.status().is_success());
    assert_eq!(
        t.app
            .count(&format!(
                "SELECT count(*) FROM tickets WHERE distinct_id = '{}'",
                t.b_visitor
            ))
            .await,
        1,
        "B's ticket survives"
    );
}

#[actix_web::test]
async fn another_teams_public_token_cannot_reach_the_ticket() {
    let t = two_teams().await;
    let v = t.b_visitor;
    let res = t
        .app
        .get_messages(&t.a.token, &t.b_ticket, &[("distinct_id", v)])
        .await;
    assert_error(res, 404, "not_found").await;

    let res = t
        .app
        .open_stream(
            &t.b_ticket,
            &[("distinct_id", v), ("token", &t.a.token)],
            &[],
        )
        .await;
    assert_error(res, 404, "not_found").await;
    let res = t
        .app
        .open_stream(
            &t.b_ticket,
            &[("distinct_id", v)],
            &[("X-Conversations-Token", &t.a.token)],
        )
        .await;
    assert_error(res, 404, "not_found").await;

    let res = t
        .app
        .post_message(
            &t.a.token,
            &json!({"distinct_id": v, "ticket_id": t.b_ticket, "message": "hijack"}),
        )
        .await;
    assert_error(res, 404, "not_found").await;

    let res = t
        .app
        .mark_read(&t.a.token, &t.b_ticket, &json!({"distinct_id": v}))
        .await;
    assert_error(res, 404, "not_found").await;
    let res = t
        .app
        .widget_typing(
            &t.a.token,
            &json!({"distinct_id": v, "ticket_id": t.b_ticket}),
        )
        .await;
    assert_error(res, 404, "not_found").await;

    let res = t.app.get_tickets(&t.a.token, &[("distinct_id", v)]).await;
    let listed: Value = res.json().await.unwrap();
    assert_eq!(listed["count"], 0, "{listed}");

    assert_eq!(
        t.app
            .count(&format!(
                "SELECT count(*) FROM messages WHERE ticket_id = '{}'",
                t.b_ticket
            ))
            .await,
        2
    );
}
