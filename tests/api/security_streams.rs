//! Security of Server-Sent Event streams (issue 12, items 4 and 15): streams are capped per
//! client IP (IPv6 by its /64), per team and in total, live a bounded time, replay at most
//! one page per (re)connect, and end within seconds once their authorisation lapses (a
//! block, a rotated token, the widget switched off, another identity mode).

use crate::helpers::{
    assert_error, identity_hash, spawn_app_with, SseClient, SseEvent, TestApp, TestTeam,
    ADMIN_TOKEN,
};
use colloquy::config::Settings;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(5);
/// How soon a stream must end once its authorisation lapsed.
const REVOKED_WITHIN: Duration = Duration::from_secs(4);
/// Messages one (re)connect replays at most (docs/api.md).
const REPLAY_PAGE: usize = 500;

/// Test apps trust 127.0.0.1 as a proxy, so each request can name its client IP.
async fn app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with(|s| {
        s.trusted_proxies = colloquy::config::parse_trusted_proxies("127.0.0.1").unwrap();
        configure(s);
    })
    .await
}

/// A team whose budgets never interfere (streams count against the visitor's read budget).
async fn unlimited(app: &TestApp, extra: Value) -> (TestTeam, Value) {
    let mut body = json!({"rate_limits": {
        "message_distinct_id_per_minute": 1_000_000,
        "message_ip_per_minute": 1_000_000,
        "message_team_per_hour": 1_000_000,
        "read_distinct_id_per_minute": 1_000_000,
        "widget_session_per_minute": 1_000_000,
        "team_reads_per_hour": 1_000_000,
        "team_writes_per_hour": 1_000_000
    }});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    app.create_team_json(body).await
}

/// `GET stream` for `visitor` from client IP `ip` (through the trusted proxy).
async fn open(
    app: &TestApp,
    team: &TestTeam,
    ticket: &str,
    visitor: &str,
    ip: &str,
) -> reqwest::Response {
    app.open_stream(
        ticket,
        &[("distinct_id", visitor), ("token", &team.token)],
        &[("X-Forwarded-For", ip)],
    )
    .await
}

async fn connect(app: &TestApp, team: &TestTeam, ticket: &str, visitor: &str) -> SseClient {
    let mut s = SseClient::new(open(app, team, ticket, visitor, "198.51.100.10").await);
    assert_eq!(
        s.next_event(WAIT).await.expect("a first event").event,
        "status"
    );
    s
}

async fn reply(app: &TestApp, team: &TestTeam, ticket: &str, text: &str) {
    let res = app
        .operator_post(
            &team.secret,
            ticket,
            &json!({"content": text, "author_type": "human", "author_name": "Op"}),
        )
        .await;
    assert_eq!(res.status(), 201, "operator reply {text}");
}

fn contents(events: &[SseEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.event == "message")
        .map(|e| e.json()["content"].as_str().unwrap().to_owned())
        .collect()
}

/// Reads until the server closes the stream, at most `wait`; whether it closed.
async fn ends_within(s: &mut SseClient, wait: Duration) -> bool {
    s.drain_for(wait).await;
    s.ended()
}

/// Asserts a `429 rate_limited` in the contract's shape, with `Retry-After`.
async fn assert_refused_by_cap(res: reqwest::Response) {
    // Checked before the body is read: an accepted stream's body never ends.
    assert_eq!(res.status(), 429, "a stream beyond the cap is refused");
    let retry = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = assert_error(res, 429, "rate_limited").await;
    assert!(
        retry.is_some_and(|r| r >= 1),
        "Retry-After header: {retry:?}"
    );
    assert_eq!(body["retry_after"].as_u64(), retry, "retry_after field");
}

async fn metrics(app: &TestApp) -> String {
    app.client
        .get(app.url("/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[actix_web::test]
async fn security_streams_beyond_the_per_ip_cap_are_refused_and_ipv6_counts_by_its_64() {
    let app = app_with(|s| s.streams.per_ip = 3).await;
    let (team, _) = unlimited(&app, json!({})).await;
    let visitor = "capped-ip@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "hi").await;

    // Three addresses of one /64: one client that rotates its interface id.
    let mut held = Vec::new();
    for ip in ["2001:db8:1:2::a", "2001:db8:1:2::b", "2001:db8:1:2:ffff::1"] {
        held.push(SseClient::new(
            open(&app, &team, &ticket, visitor, ip).await,
        ));
    }
    let res = open(&app, &team, &ticket, visitor, "2001:db8:1:2::c").await;
    assert_refused_by_cap(res).await;

    // Another /64 and an IPv4 client are not affected; the held streams still work.
    SseClient::new(open(&app, &team, &ticket, visitor, "2001:db8:1:3::a").await);
    SseClient::new(open(&app, &team, &ticket, visitor, "198.51.100.7").await);
    reply(&app, &team, &ticket, "still live").await;
    for s in &mut held {
        assert_eq!(s.expect("message", WAIT).await.json()["content"], "hi");
        assert_eq!(
            s.expect("message", WAIT).await.json()["content"],
            "still live"
        );
    }
    assert!(
        metrics(&app)
            .await
            .contains("colloquy_rate_limited_total{tier=\"stream_ip\"} 1"),
        "the refusal is counted"
    );
}

#[actix_web::test]
async fn security_streams_beyond_the_per_team_cap_are_refused() {
    let app = app_with(|s| s.streams.per_team = 2).await;
    let (team, _) = unlimited(&app, json!({})).await;
    let (other, _) = unlimited(&app, json!({})).await;
    let a = app
        .open_ticket(&team.token, "team-cap-a@example.com", "a")
        .await;
    let b = app
        .open_ticket(&team.token, "team-cap-b@example.com", "b")
        .await;
    let c = app
        .open_ticket(&other.token, "team-cap-c@example.com", "c")
        .await;

    let _s1 = SseClient::new(open(&app, &team, &a, "team-cap-a@example.com", "198.51.100.1").await);
    let _s2 = SseClient::new(open(&app, &team, &b, "team-cap-b@example.com", "198.51.100.2").await);
    let res = open(&app, &team, &a, "team-cap-a@example.com", "198.51.100.3").await;
    assert_refused_by_cap(res).await;
    // Another tenant's visitors are not locked out by this one's streams.
    let _s3 =
        SseClient::new(open(&app, &other, &c, "team-cap-c@example.com", "198.51.100.3").await);
    assert!(metrics(&app)
        .await
        .contains("colloquy_rate_limited_total{tier=\"stream_team\"} 1"));
}

#[actix_web::test]
async fn security_streams_beyond_the_total_cap_are_refused() {
    let app = app_with(|s| s.streams.total = 2).await;
    let mut teams = Vec::new();
    for i in 0..3 {
        let (team, _) = unlimited(&app, json!({})).await;
        let visitor = format!("total-cap-{i}@example.com");
        let ticket = app.open_ticket(&team.token, &visitor, "hi").await;
        teams.push((team, visitor, ticket));
    }
    let mut held = Vec::new();
    for (i, (team, visitor, ticket)) in teams.iter().enumerate() {
        let res = open(
            &app,
            team,
            ticket,
            visitor,
            &format!("198.51.100.{}", i + 1),
        )
        .await;
        if i < 2 {
            held.push(SseClient::new(res));
        } else {
            assert_refused_by_cap(res).await;
        }
    }
    assert!(metrics(&app)
        .await
        .contains("colloquy_rate_limited_total{tier=\"stream_total\"} 1"));
}

#[actix_web::test]
async fn security_a_stream_ends_at_its_lifetime_and_a_reconnect_loses_nothing() {
    // One stream per IP: the reconnect also proves that an ended stream frees its slot.
    let app = app_with(|s| {
        s.streams.max_lifetime = Duration::from_secs(2);
        s.streams.per_ip = 1;
    })
    .await;
    let (team, _) = unlimited(&app, json!({})).await;
    let visitor = "lifetime@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "m0").await;
    let opened = Instant::now();
    let mut s = connect(&app, &team, &ticket, visitor).await;
    assert_eq!(s.expect("message", WAIT).await.json()["content"], "m0");
    reply(&app, &team, &ticket, "m1").await;
    let last = s.expect("message", WAIT).await;
    assert_eq!(last.json()["content"], "m1");
    let last_id = last.id.clone().expect("message events carry an id");

    assert!(
        ends_within(&mut s, Duration::from_secs(4)).await,
        "a stream ends once its lifetime is over: {}",
        s.raw
    );
    let lived = opened.elapsed();
    assert!(
        lived >= Duration::from_millis(1500),
        "ended after {lived:?}"
    );

    // What is written while the client reconnects is replayed, exactly once.
    reply(&app, &team, &ticket, "m2").await;
    let res = app
        .post_message(
            &team.token,
            &json!({"distinct_id": visitor, "ticket_id": ticket, "message": "m3"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let mut again = SseClient::new(
        app.open_stream(
            &ticket,
            &[("distinct_id", visitor), ("token", &team.token)],
            &[
                ("Last-Event-ID", &last_id),
                ("X-Forwarded-For", "198.51.100.10"),
            ],
        )
        .await,
    );
    let events = again.drain_for(Duration::from_millis(700)).await;
    assert_eq!(contents(&events), vec!["m2", "m3"], "{}", again.raw);
    reply(&app, &team, &ticket, "m4").await;
    assert_eq!(again.expect("message", WAIT).await.json()["content"], "m4");
}

#[actix_web::test]
async fn security_a_subscription_replays_at_most_one_page_per_connect() {
    let app = app_with(|_| {}).await;
    let (team, _) = unlimited(&app, json!({})).await;
    let visitor = "long-history@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "r0").await;
    // 520 operator replies, written by a few concurrent writers.
    const REPLIES: usize = 520;
    let mut writers = Vec::new();
    for w in 0..8 {
        let (client, url, secret) = (
            app.client.clone(),
            app.url(&format!("/api/conversations/tickets/{ticket}/messages")),
            team.secret.clone(),
        );
        writers.push(actix_web::rt::spawn(async move {
            for i in (w..REPLIES).step_by(8) {
                let res = client
                    .post(&url)
                    .bearer_auth(&secret)
                    .json(&json!({"content": format!("r{}", i + 1), "author_type": "human"}))
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
    let total = REPLIES + 1;

    // A first connect replays one page, then ends so the client comes back for the next.
    let mut s = SseClient::new(open(&app, &team, &ticket, visitor, "198.51.100.20").await);
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(e) = s
        .next_event(deadline.saturating_duration_since(Instant::now()))
        .await
    {
        events.push(e);
    }
    let first = contents(&events);
    assert!(s.ended(), "the stream ends after a partial replay");
    assert_eq!(first.len(), REPLAY_PAGE, "one page, not the whole history");
    let last_id = events
        .iter()
        .rev()
        .find(|e| e.event == "message")
        .and_then(|e| e.id.clone())
        .expect("message events carry an id");

    // The reconnect gets the rest and stays live.
    let mut s = SseClient::new(
        app.open_stream(
            &ticket,
            &[("distinct_id", visitor), ("token", &team.token)],
            &[
                ("Last-Event-ID", &last_id),
                ("X-Forwarded-For", "198.51.100.20"),
            ],
        )
        .await,
    );
    let rest = contents(&s.drain_for(Duration::from_secs(2)).await);
    assert!(!s.ended(), "nothing more to replay: the stream stays open");
    assert_eq!(rest.len(), total - REPLAY_PAGE);
    let mut all: Vec<String> = first.into_iter().chain(rest).collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "no message twice");
    assert_eq!(n, total, "every message once across the two connects");
}

/// A live stream of `visitor` on a fresh ticket, plus a bystander's stream on the same team
/// that must survive whatever ends the first.
async fn two_streams(
    app: &TestApp,
    team: &TestTeam,
    visitor: &str,
    ip: &str,
) -> (String, SseClient, SseClient) {
    let ticket = app.open_ticket(&team.token, visitor, "hi").await;
    let mut s = SseClient::new(open(app, team, &ticket, visitor, ip).await);
    assert_eq!(s.expect("message", WAIT).await.json()["content"], "hi");
    let bystander = "bystander@example.com";
    let other = app.open_ticket(&team.token, bystander, "me too").await;
    let mut b = SseClient::new(open(app, team, &other, bystander, "198.51.100.99").await);
    b.expect("message", WAIT).await;
    (ticket, s, b)
}

async fn block(app: &TestApp, team: &TestTeam, body: Value) {
    let res = app
        .operator(
            &team.secret,
            Method::POST,
            "/api/conversations/blocks",
            Some(&body),
        )
        .await;
    assert_eq!(res.status(), 201, "block {body}");
}

#[actix_web::test]
async fn security_blocking_the_visitor_ends_their_open_stream() {
    let app = app_with(|_| {}).await;
    let (team, _) = unlimited(&app, json!({})).await;
    let visitor = "to-block@example.com";
    let (ticket, mut s, mut b) = two_streams(&app, &team, visitor, "198.51.100.30").await;
    block(
        &app,
        &team,
        json!({"distinct_id": visitor, "reason": "abuse"}),
    )
    .await;
    assert!(
        ends_within(&mut s, REVOKED_WITHIN).await,
        "a blocked visitor's stream ends: {}",
        s.raw
    );
    assert!(
        !ends_within(&mut b, Duration::from_millis(300)).await,
        "other visitors' streams stay open"
    );
    let res = open(&app, &team, &ticket, visitor, "198.51.100.30").await;
    assert_error(res, 403, "blocked").await;
}

#[actix_web::test]
async fn security_blocking_the_ip_ends_open_streams_from_it() {
    let app = app_with(|_| {}).await;
    let (team, _) = unlimited(&app, json!({})).await;
    let (_, mut s, mut b) = two_streams(&app, &team, "ip-block@example.com", "203.0.113.44").await;
    block(&app, &team, json!({"ip": "203.0.113.44"})).await;
    assert!(
        ends_within(&mut s, REVOKED_WITHIN).await,
        "a stream from a blocked IP ends: {}",
        s.raw
    );
    assert!(
        !ends_within(&mut b, Duration::from_millis(300)).await,
        "streams from other IPs stay open"
    );
}

#[actix_web::test]
async fn security_blocking_a_widget_session_ends_its_open_stream() {
    let app = app_with(|_| {}).await;
    let (team, _) = unlimited(&app, json!({})).await;
    let session = Uuid::now_v7();
    let res = app
        .client
        .post(app.url("/api/conversations/v1/widget/message"))
        .header("X-Conversations-Token", &team.token)
        .json(&json!({"widget_session_id": session, "message": "hello", "ticket_id": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let ticket = res.json::<Value>().await.unwrap()["ticket_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let sid = session.to_string();
    let mut s = SseClient::new(
        app.open_stream(
            &ticket,
            &[("widget_session_id", &sid), ("token", &team.token)],
            &[],
        )
        .await,
    );
    s.expect("message", WAIT).await;
    block(
        &app,
        &team,
        json!({"distinct_id": format!("session:{sid}")}),
    )
    .await;
    assert!(
        ends_within(&mut s, REVOKED_WITHIN).await,
        "a blocked session's stream ends: {}",
        s.raw
    );
}

#[actix_web::test]
async fn security_rotating_the_public_token_ends_open_streams() {
    let app = app_with(|_| {}).await;
    let (team, _) = unlimited(&app, json!({})).await;
    let visitor = "rotated@example.com";
    let (ticket, mut s, _) = two_streams(&app, &team, visitor, "198.51.100.40").await;
    let res = app
        .operator(
            &team.secret,
            Method::POST,
            "/api/conversations/settings/rotate_public_token",
            None,
        )
        .await;
    assert_eq!(res.status(), 200);
    assert!(
        ends_within(&mut s, REVOKED_WITHIN).await,
        "a stream opened with the old token ends: {}",
        s.raw
    );
    let res = open(&app, &team, &ticket, visitor, "198.51.100.40").await;
    assert_error(res, 401, "invalid_token").await;
}

#[actix_web::test]
async fn security_switching_conversations_off_ends_open_streams() {
    let app = app_with(|_| {}).await;
    let (team, _) = unlimited(&app, json!({})).await;
    let (_, mut s, mut b) = two_streams(&app, &team, "off@example.com", "198.51.100.50").await;
    let res = app
        .patch_settings(&team.secret, &json!({"conversations_enabled": false}))
        .await;
    assert_eq!(res.status(), 200);
    assert!(ends_within(&mut s, REVOKED_WITHIN).await, "{}", s.raw);
    assert!(
        ends_within(&mut b, Duration::from_millis(100)).await,
        "{}",
        b.raw
    );
}

#[actix_web::test]
async fn security_changing_the_identity_mode_ends_open_streams() {
    let app = app_with(|_| {}).await;
    let (team, _) = unlimited(&app, json!({})).await;
    let visitor = "mode-change@example.com";
    let (ticket, mut s, _) = two_streams(&app, &team, visitor, "198.51.100.60").await;
    let res = app
        .patch_settings(&team.secret, &json!({"identity_verification": "required"}))
        .await;
    assert_eq!(res.status(), 200);
    assert!(
        ends_within(&mut s, REVOKED_WITHIN).await,
        "a stream authorised under the old mode ends: {}",
        s.raw
    );
    let res = open(&app, &team, &ticket, visitor, "198.51.100.60").await;
    assert_error(res, 403, "identity_required").await;
}

#[actix_web::test]
async fn security_rotating_the_identity_secret_ends_verified_streams() {
    let app = app_with(|_| {}).await;
    let (team, created) = unlimited(&app, json!({"identity_verification": "required"})).await;
    let secret = created["identity_secret"].as_str().unwrap().to_owned();
    let visitor = "verified@example.com";
    let hash = identity_hash(&secret, visitor);
    let res = app
        .post_message(
            &team.token,
            &json!({"distinct_id": visitor, "message": "hi", "identity_hash": hash}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let ticket = res.json::<Value>().await.unwrap()["ticket_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut s = SseClient::new(
        app.open_stream(
            &ticket,
            &[
                ("distinct_id", visitor),
                ("identity_hash", &hash),
                ("token", &team.token),
            ],
            &[],
        )
        .await,
    );
    s.expect("message", WAIT).await;
    let res = app
        .operator(
            &team.secret,
            Method::POST,
            "/api/conversations/settings/rotate_identity_secret",
            None,
        )
        .await;
    assert_eq!(res.status(), 200);
    assert!(
        ends_within(&mut s, REVOKED_WITHIN).await,
        "a hash of the old secret no longer holds a stream open: {}",
        s.raw
    );
}
