//! Server-Sent Events: `GET /api/conversations/widget/stream/{ticket_id}`. Replies arrive
//! live, reconnects replay exactly what was missed, private notes never appear, and the
//! stream is as closed to other visitors and teams as GET messages.

use crate::helpers::{
    assert_error, spawn_app, spawn_app_with, SseClient, SseEvent, TestApp, TestTeam,
};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(5);

async fn connect(app: &TestApp, team: &TestTeam, ticket: &str, visitor: &str) -> SseClient {
    SseClient::new(
        app.open_stream(
            ticket,
            &[("distinct_id", visitor), ("token", &team.token)],
            &[],
        )
        .await,
    )
}

async fn reply(app: &TestApp, team: &TestTeam, ticket: &str, text: &str) -> Value {
    let res = app
        .operator_post(
            &team.secret,
            ticket,
            &json!({"content": text, "author_type": "human", "author_name": "Op"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    res.json().await.unwrap()
}

fn contents(events: &[SseEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.event == "message")
        .map(|e| e.json()["content"].as_str().unwrap().to_owned())
        .collect()
}

#[actix_web::test]
async fn the_stream_starts_with_the_status_and_the_history() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let visitor = "history@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "first <b>").await;
    reply(&app, &team, &ticket, "second").await;

    let mut s = connect(&app, &team, &ticket, visitor).await;
    let first = s.next_event(WAIT).await.expect("a first event");
    assert_eq!(first.event, "status");
    assert_eq!(first.json()["ticket_status"], "new");
    let m1 = s.expect("message", WAIT).await;
    let m2 = s.expect("message", WAIT).await;
    assert_eq!(
        m1.json()["content"],
        "first &lt;b&gt;",
        "escaped like GET messages"
    );
    assert_eq!(m1.json()["author_type"], "customer");
    assert_eq!(m2.json()["content"], "second");
    assert_eq!(m2.json()["author_type"], "human");
    assert_eq!(m2.json()["author_name"], "Op");
    // Each message event's id is its created_at.
    assert_eq!(m1.id.as_deref(), m1.json()["created_at"].as_str());
    assert_eq!(m2.id.as_deref(), m2.json()["created_at"].as_str());

    // The token is also accepted as a header.
    let res = app
        .open_stream(
            &ticket,
            &[("distinct_id", visitor)],
            &[("X-Conversations-Token", &team.token)],
        )
        .await;
    let mut h = SseClient::new(res);
    assert_eq!(h.next_event(WAIT).await.unwrap().event, "status");
}

#[actix_web::test]
async fn an_operator_reply_reaches_an_open_stream_within_a_second() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let visitor = "live@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "hello?").await;
    let mut s = connect(&app, &team, &ticket, visitor).await;
    s.expect("status", WAIT).await;
    s.expect("message", WAIT).await;

    let started = Instant::now();
    let sent = reply(&app, &team, &ticket, "live reply").await;
    let got = s.expect("message", WAIT).await;
    let elapsed = started.elapsed();
    assert_eq!(got.json()["id"], sent["id"]);
    assert_eq!(got.json()["content"], "live reply");
    assert!(elapsed < Duration::from_secs(1), "reply took {elapsed:?}");

    // The visitor's own follow-up arrives too, from the same stream.
    let started = Instant::now();
    let res = app
        .post_message(
            &team.token,
            &json!({"distinct_id": visitor, "ticket_id": ticket, "message": "thanks"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let got = s.expect("message", WAIT).await;
    assert_eq!(got.json()["content"], "thanks");
    assert!(started.elapsed() < Duration::from_secs(1));
}

async fn resume_test(use_header: bool) {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let visitor = "resume@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "m0").await;
    let mut s = connect(&app, &team, &ticket, visitor).await;
    s.expect("message", WAIT).await;
    reply(&app, &team, &ticket, "m1").await;
    let last = s.expect("message", WAIT).await;
    assert_eq!(last.json()["content"], "m1");
    let last_id = last.id.clone().expect("message events carry an id");
    drop(s);

    // Three messages while disconnected (one of them the visitor's own).
    reply(&app, &team, &ticket, "m2").await;
    let res = app
        .post_message(
            &team.token,
            &json!({"distinct_id": visitor, "ticket_id": ticket, "message": "m3"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    reply(&app, &team, &ticket, "m4").await;

    let res = if use_header {
        app.open_stream(
            &ticket,
            &[("distinct_id", visitor), ("token", &team.token)],
            &[("Last-Event-ID", &last_id)],
        )
        .await
    } else {
        app.open_stream(
            &ticket,
            &[
                ("distinct_id", visitor),
                ("token", &team.token),
                ("after", &last_id),
            ],
            &[],
        )
        .await
    };
    let mut s = SseClient::new(res);
    let events = s.drain_for(Duration::from_millis(700)).await;
    assert_eq!(events[0].event, "status");
    assert_eq!(
        contents(&events),
        vec!["m2", "m3", "m4"],
        "exactly the missed messages: {}",
        s.raw
    );
    // And it stays live.
    reply(&app, &team, &ticket, "m5").await;
    assert_eq!(s.expect("message", WAIT).await.json()["content"], "m5");
}

#[actix_web::test]
async fn reconnecting_with_last_event_id_replays_exactly_the_missed_messages() {
    resume_test(true).await;
}

#[actix_web::test]
async fn reconnecting_with_after_replays_exactly_the_missed_messages() {
    resume_test(false).await;
}

#[actix_web::test]
async fn a_reconnect_after_a_non_message_event_loses_nothing() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let visitor = "resume-status@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "m0").await;
    let mut s = connect(&app, &team, &ticket, visitor).await;
    s.expect("message", WAIT).await;
    let res = app
        .patch_ticket(&team.secret, &ticket, &json!({"status": "pending"}))
        .await;
    assert_eq!(res.status(), 200);
    let status = s.expect("status", WAIT).await;
    assert_eq!(status.json()["ticket_status"], "pending");
    let id = status.id.clone().expect("every event has an id");
    drop(s);
    reply(&app, &team, &ticket, "m1").await;
    let mut s = SseClient::new(
        app.open_stream(
            &ticket,
            &[("distinct_id", visitor), ("token", &team.token)],
            &[("Last-Event-ID", &id)],
        )
        .await,
    );
    let events = s.drain_for(Duration::from_millis(700)).await;
    assert_eq!(contents(&events), vec!["m1"], "{}", s.raw);
    assert_eq!(events[0].json()["ticket_status"], "pending");
}

#[actix_web::test]
async fn a_garbage_last_event_id_is_a_validation_error() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let visitor = "garbage@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "m0").await;
    let res = app
        .open_stream(
            &ticket,
            &[("distinct_id", visitor), ("token", &team.token)],
            &[("Last-Event-ID", "yesterday")],
        )
        .await;
    assert_error(res, 400, "validation_error").await;
}

#[actix_web::test]
async fn a_thousand_streams_on_one_ticket_each_receive_the_reply() {
    // All from one IP: the per-IP stream cap (100 by default) is raised for this fan-out test.
    let app = spawn_app_with(|s| s.streams.per_ip = 2_000).await;
    let team = app.create_unlimited_team().await;
    let visitor = "crowd@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "hi all").await;
    const N: usize = 1000;

    // Open them concurrently; each task reports once subscribed, then waits for the reply.
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<Result<(), String>>(N);
    let mut tasks = Vec::with_capacity(N);
    for _ in 0..N {
        let (client, address, token, ticket, ready) = (
            app.client.clone(),
            app.address.clone(),
            team.token.clone(),
            ticket.clone(),
            ready_tx.clone(),
        );
        tasks.push(actix_web::rt::spawn(async move {
            let res = client
                .get(format!(
                    "{address}/api/conversations/widget/stream/{ticket}"
                ))
                .query(&[("distinct_id", visitor), ("token", &token)])
                .send()
                .await;
            let res = match res {
                Ok(r) if r.status() == 200 => r,
                Ok(r) => {
                    let _ = ready.send(Err(format!("status {}", r.status()))).await;
                    return None;
                }
                Err(e) => {
                    let _ = ready.send(Err(format!("connect: {e}"))).await;
                    return None;
                }
            };
            let mut s = SseClient::new(res);
            if s.next_event(Duration::from_secs(30)).await.map(|e| e.event) != Some("status".into())
            {
                let _ = ready.send(Err("no status event".into())).await;
                return None;
            }
            let _ = ready.send(Ok(())).await;
            // The history (1 message), then the reply.
            let mut seen = Vec::new();
            while let Some(e) = s.next_event(Duration::from_secs(30)).await {
                if e.event == "message" {
                    seen.push(e.json()["content"].as_str().unwrap().to_owned());
                    if seen.len() == 2 {
                        break;
                    }
                }
            }
            Some(seen)
        }));
    }
    drop(ready_tx);
    let mut failures = Vec::new();
    for _ in 0..N {
        match ready_rx.recv().await.expect("every task reports") {
            Ok(()) => {}
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {N} streams failed to open: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );

    let started = Instant::now();
    reply(&app, &team, &ticket, "hello crowd").await;
    let mut received = 0;
    for t in tasks {
        if let Some(seen) = t.await.unwrap() {
            if seen == ["hi all", "hello crowd"] {
                received += 1;
            }
        }
    }
    assert_eq!(received, N, "every stream got the reply exactly once");
    eprintln!(
        "{N} streams received the reply within {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[actix_web::test]
async fn the_stream_refuses_other_visitors_teams_and_bad_tokens() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let other_team = app.create_unlimited_team().await;
    let visitor = "owner@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "mine").await;

    let res = app
        .open_stream(
            &ticket,
            &[
                ("distinct_id", "intruder@example.com"),
                ("token", &team.token),
            ],
            &[],
        )
        .await;
    assert_error(res, 403, "forbidden").await;

    let res = app
        .open_stream(
            &ticket,
            &[("distinct_id", visitor), ("token", &other_team.token)],
            &[],
        )
        .await;
    assert_error(res, 404, "not_found").await;

    let unknown = uuid::Uuid::now_v7().to_string();
    let res = app
        .open_stream(
            &unknown,
            &[("distinct_id", visitor), ("token", &team.token)],
            &[],
        )
        .await;
    assert_error(res, 404, "not_found").await;

    let res = app
        .open_stream(
            &ticket,
            &[("distinct_id", visitor), ("token", "pub_nope")],
            &[],
        )
        .await;
    assert_error(res, 401, "invalid_token").await;
    let res = app
        .open_stream(&ticket, &[("distinct_id", visitor)], &[])
        .await;
    assert_error(res, 401, "invalid_token").await;

    let res = app
        .open_stream(&ticket, &[("token", &team.token)], &[])
        .await;
    assert_error(res, 400, "validation_error").await;
}

#[actix_web::test]
async fn a_private_note_never_appears_on_the_stream() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let visitor = "nosy@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "hi").await;
    let note = json!({"content": "PRIVATE-NOTE-1 do not show", "is_private": true});
    assert_eq!(
        app.operator_post(&team.secret, &ticket, &note)
            .await
            .status(),
        201
    );

    let mut s = connect(&app, &team, &ticket, visitor).await;
    s.expect("message", WAIT).await;
    let note2 = json!({"content": "PRIVATE-NOTE-2 live", "is_private": true, "author_type": "AI"});
    assert_eq!(
        app.operator_post(&team.secret, &ticket, &note2)
            .await
            .status(),
        201
    );
    reply(&app, &team, &ticket, "public").await;
    let got = s.expect("message", WAIT).await;
    assert_eq!(got.json()["content"], "public");
    s.drain_for(Duration::from_millis(300)).await;
    assert!(!s.raw.contains("PRIVATE-NOTE"), "{}", s.raw);

    // A full replay from the beginning has no notes either.
    let mut fresh = connect(&app, &team, &ticket, visitor).await;
    let events = fresh.drain_for(Duration::from_millis(700)).await;
    assert_eq!(contents(&events), vec!["hi", "public"]);
    assert!(!fresh.raw.contains("PRIVATE-NOTE"), "{}", fresh.raw);
}

#[actix_web::test]
async fn operator_typing_reaches_the_stream() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let visitor = "typing@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "hi").await;
    let mut s = connect(&app, &team, &ticket, visitor).await;
    s.expect("message", WAIT).await;

    let res = app
        .operator(
            &team.secret,
            Method::POST,
            &format!("/api/conversations/tickets/{ticket}/typing"),
            None,
        )
        .await;
    assert_eq!(res.status(), 204);
    let typing = s.expect("typing", Duration::from_secs(1)).await;
    assert_eq!(typing.json()["author"], "operator");

    // The visitor's typing answers 204 and is not echoed back to the visitor.
    let res = app
        .widget_typing(
            &team.token,
            &json!({"distinct_id": visitor, "ticket_id": ticket}),
        )
        .await;
    assert_eq!(res.status(), 204);
    let res = app
        .widget_typing(
            &team.token,
            &json!({"distinct_id": "other@example.com", "ticket_id": ticket}),
        )
        .await;
    assert_error(res, 403, "forbidden").await;
}

#[actix_web::test]
async fn marking_read_and_status_changes_reach_the_stream() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let visitor = "reader@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "hi").await;
    let mut s = connect(&app, &team, &ticket, visitor).await;
    s.expect("message", WAIT).await;
    reply(&app, &team, &ticket, "answer").await;
    s.expect("message", WAIT).await;

    let res = app
        .mark_read(&team.token, &ticket, &json!({"distinct_id": visitor}))
        .await;
    assert_eq!(res.status(), 200);
    let read = s.expect("read", Duration::from_secs(1)).await;
    assert_eq!(read.json()["unread_count"], 0);

    let res = app
        .patch_ticket(&team.secret, &ticket, &json!({"status": "resolved"}))
        .await;
    assert_eq!(res.status(), 200);
    let status = s.expect("status", Duration::from_secs(1)).await;
    assert_eq!(status.json()["ticket_status"], "resolved");

    // A customer message reopens it: the stream says so.
    let res = app
        .post_message(
            &team.token,
            &json!({"distinct_id": visitor, "ticket_id": ticket, "message": "again"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let events = s.drain_for(Duration::from_millis(700)).await;
    assert!(
        events
            .iter()
            .any(|e| e.event == "status" && e.json()["ticket_status"] == "open"),
        "a status event for the reopening: {}",
        s.raw
    );
}

#[actix_web::test]
async fn every_event_carries_an_id() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let visitor = "ids@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "hi").await;
    let mut s = connect(&app, &team, &ticket, visitor).await;
    reply(&app, &team, &ticket, "answer").await;
    let res = app
        .operator(
            &team.secret,
            Method::POST,
            &format!("/api/conversations/tickets/{ticket}/typing"),
            None,
        )
        .await;
    assert_eq!(res.status(), 204);
    let events = s.drain_for(Duration::from_millis(700)).await;
    assert!(events.len() >= 4, "{}", s.raw);
    for e in &events {
        assert!(
            e.id.as_deref().is_some_and(|i| !i.is_empty()),
            "`{}` event without an id: {}",
            e.event,
            s.raw
        );
    }
}

#[actix_web::test]
async fn erasing_the_person_ends_their_open_streams() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let visitor = "erased-live@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "hi").await;
    let mut s = connect(&app, &team, &ticket, visitor).await;
    s.expect("message", WAIT).await;
    let res = app
        .operator(
            &team.secret,
            Method::DELETE,
            &format!("/api/conversations/persons/{visitor}"),
            None,
        )
        .await;
    assert!(res.status().is_success());
    let after = s.drain_for(Duration::from_secs(1)).await;
    assert!(s.ended(), "the stream is closed; got {after:?}");
    let res = app
        .open_stream(
            &ticket,
            &[("distinct_id", visitor), ("token", &team.token)],
            &[],
        )
        .await;
    assert_error(res, 404, "not_found").await;
    let res = app
        .operator_post(&team.secret, &ticket, &json!({"content": "too late"}))
        .await;
    assert_error(res, 404, "not_found").await;
}
