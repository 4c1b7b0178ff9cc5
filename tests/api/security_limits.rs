//! What one stranger can do to a tenant's limits (issue 12, items 5–8): refused requests
//! leave no rate-limit keys and a full key table evicts instead of locking visitors out; every
//! widget endpoint (and the honeypot) charges a per-IP budget; a honeypot hit never flags the
//! distinct_id it names and a full detector still scores new visitors; IPv6 clients are keyed
//! by their /64 in budgets and blocks; v1 requests respect blocks on a distinct_id.

use crate::helpers::{
    assert_error, identity_hash, spawn_app, spawn_app_with, status_json, visitor, TestApp,
    TestTeam, ADMIN_TOKEN,
};
use reqwest::{Method, Response};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use uuid::Uuid;

const HIGH: u32 = 1_000_000;

/// Every budget `HIGH`, except the given ones.
fn limits(overrides: Value) -> Value {
    let mut all = json!({
        "message_distinct_id_per_minute": HIGH,
        "message_ip_per_minute": HIGH,
        "message_team_per_hour": HIGH,
        "read_distinct_id_per_minute": HIGH,
        "widget_session_per_minute": HIGH,
        "team_reads_per_hour": HIGH,
        "team_writes_per_hour": HIGH,
    });
    for (k, v) in overrides.as_object().unwrap() {
        all[k] = v.clone();
    }
    all
}

/// An app that believes `X-Forwarded-For` from 127.0.0.1, so a test can present any client
/// address (the way a reverse proxy in front of colloquy does).
async fn app_behind_proxy(configure: impl FnOnce(&mut colloquy::config::Settings)) -> TestApp {
    spawn_app_with(|s| {
        s.trusted_proxies = colloquy::config::parse_trusted_proxies("127.0.0.1").unwrap();
        configure(s);
    })
    .await
}

fn v1(app: &TestApp, path: &str) -> String {
    app.url(&format!("/api/conversations/v1/widget{path}"))
}

/// A documented-surface POST message from client address `ip` (via the trusted proxy).
async fn post_from(app: &TestApp, team: &TestTeam, ip: &str, body: Value) -> Response {
    app.post_message_with_headers(&team.token, &body, &[("X-Forwarded-For", ip)])
        .await
}

/// A v1 POST message.
async fn v1_post(app: &TestApp, team: &TestTeam, body: Value) -> Response {
    app.client
        .post(v1(app, "/message"))
        .header("X-Conversations-Token", &team.token)
        .json(&body)
        .send()
        .await
        .expect("v1 POST message")
}

/// The rate-limiter keys `/api/ops/actors` reports for the team.
async fn limiter_keys(app: &TestApp, team: &TestTeam) -> u64 {
    let res = app
        .client
        .get(app.url("/api/ops/actors"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("GET /api/ops/actors");
    let (status, body) = status_json(res).await;
    assert_eq!(status, 200, "{body}");
    body["rate_limiter_keys_per_team"]
        .as_array()
        .expect("rate_limiter_keys_per_team")
        .iter()
        .find(|t| t["team_id"] == team.id.as_str())
        .map_or(0, |t| t["keys"].as_u64().expect("a key count"))
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
    assert_eq!(res.status(), 201, "the operator's block is stored");
}

// --- item 5: one IP must not lock a tenant out of its own widget ---------------------------

#[actix_web::test]
async fn security_requests_refused_after_admission_leave_no_rate_limit_keys() {
    // Arrange: a visitor's ticket, and the keys the limiter holds for the team after it.
    let app = spawn_app().await;
    let team = app
        .create_team_with(json!({"rate_limits": limits(json!({}))}))
        .await;
    let owner = visitor("owner");
    let ticket = app.open_ticket(&team.token, &owner, "my problem").await;
    let before = limiter_keys(&app, &team).await;

    // Act: a stranger names random distinct_ids / sessions on someone else's ticket and on
    // tickets that do not exist, on both surfaces.
    for i in 0..20 {
        let stranger = visitor(&format!("stranger{i}"));
        let res = app
            .get_messages(&team.token, &ticket, &[("distinct_id", &stranger)])
            .await;
        assert_error(res, 403, "forbidden").await;
        let res = app
            .get_messages(
                &team.token,
                &Uuid::now_v7().to_string(),
                &[("distinct_id", &stranger)],
            )
            .await;
        assert_error(res, 404, "not_found").await;
        let res = app
            .post_message(
                &team.token,
                &json!({"distinct_id": stranger, "message": "let me in", "ticket_id": ticket}),
            )
            .await;
        assert_error(res, 403, "forbidden").await;
        let res = app
            .client
            .get(v1(&app, &format!("/messages/{ticket}")))
            .query(&[("widget_session_id", Uuid::now_v7().to_string())])
            .header("X-Conversations-Token", &team.token)
            .send()
            .await
            .unwrap();
        assert!(
            matches!(res.status().as_u16(), 403 | 404),
            "a session never reaches a distinct_id's ticket: {}",
            res.status()
        );
    }

    // Assert
    let after = limiter_keys(&app, &team).await;
    assert!(
        after <= before + 1,
        "refused requests created rate-limit keys: {before} before, {after} after 80 refusals \
         (at most the one per-IP key may be new)"
    );
}

#[actix_web::test]
async fn security_a_full_rate_limit_table_evicts_old_keys_instead_of_refusing_new_visitors() {
    // Arrange: a key table of 50 per team.
    let app = spawn_app_with(|s| s.key_tables.rate_limit_keys_per_team = 50).await;
    let team = app
        .create_team_with(json!({"rate_limits": limits(json!({}))}))
        .await;

    // Act: 80 distinct visitors read their (empty) ticket lists, then a new visitor writes.
    for i in 0..80 {
        let _ = app
            .get_tickets(
                &team.token,
                &[("distinct_id", &visitor(&format!("flood{i}")))],
            )
            .await;
    }
    let res = app
        .post_message(
            &team.token,
            &json!({"distinct_id": visitor("newcomer"), "message": "hello, anyone there?"}),
        )
        .await;

    // Assert
    let (status, body) = status_json(res).await;
    assert_eq!(
        status, 201,
        "a new visitor is served although the table was full: {body}"
    );
    let keys = limiter_keys(&app, &team).await;
    assert!(keys <= 50, "the key table stays bounded: {keys} keys");
}

/// One request to a widget endpoint, from 127.0.0.1; the answer's status.
async fn hit(app: &TestApp, team: &TestTeam, endpoint: &str) -> u16 {
    let t = &team.token;
    let who = visitor("ip");
    let ticket = Uuid::now_v7().to_string();
    let session = Uuid::now_v7().to_string();
    let c = &app.client;
    let res = match endpoint {
        "POST message" => {
            app.post_message(t, &json!({"distinct_id": who, "message": "hi"}))
                .await
        }
        "GET messages" => app.get_messages(t, &ticket, &[("distinct_id", &who)]).await,
        "GET tickets" => app.get_tickets(t, &[("distinct_id", &who)]).await,
        "POST typing" => {
            app.widget_typing(t, &json!({"distinct_id": who, "ticket_id": ticket}))
                .await
        }
        "POST read" => {
            app.mark_read(t, &ticket, &json!({"distinct_id": who}))
                .await
        }
        "GET stream" => {
            app.open_stream(&ticket, &[("distinct_id", &who), ("token", t)], &[])
                .await
        }
        "v1 POST message" => {
            v1_post(
                app,
                team,
                json!({"widget_session_id": session, "message": "hi", "ticket_id": null}),
            )
            .await
        }
        "v1 GET messages" => c
            .get(v1(app, &format!("/messages/{ticket}")))
            .query(&[("widget_session_id", &session)])
            .header("X-Conversations-Token", t)
            .send()
            .await
            .unwrap(),
        "v1 GET tickets" => c
            .get(v1(app, "/tickets"))
            .query(&[("widget_session_id", &session)])
            .header("X-Conversations-Token", t)
            .send()
            .await
            .unwrap(),
        "v1 POST read" => c
            .post(v1(app, &format!("/messages/{ticket}/read")))
            .json(&json!({"widget_session_id": session}))
            .header("X-Conversations-Token", t)
            .send()
            .await
            .unwrap(),
        other => panic!("unknown endpoint {other}"),
    };
    res.status().as_u16()
}

#[actix_web::test]
async fn security_every_widget_endpoint_charges_the_per_ip_budget_refused_or_not() {
    let app = spawn_app().await;
    for endpoint in [
        "POST message",
        "GET messages",
        "GET tickets",
        "POST typing",
        "POST read",
        "GET stream",
        "v1 POST message",
        "v1 GET messages",
        "v1 GET tickets",
        "v1 POST read",
    ] {
        // Arrange: a team allowing 3 widget requests per minute per client IP.
        let team = app
            .create_team_with(json!({"rate_limits": limits(json!({"widget_ip_per_minute": 3}))}))
            .await;

        // Act: each request from a new visitor (or session), answered 2xx, 403 or 404.
        let mut statuses = Vec::new();
        for _ in 0..4 {
            statuses.push(hit(&app, &team, endpoint).await);
        }

        // Assert
        assert!(
            statuses[..3].iter().all(|s| *s != 429),
            "{endpoint}: the first 3 fit the budget: {statuses:?}"
        );
        assert_eq!(
            statuses[3], 429,
            "{endpoint}: the 4th request from the IP is refused: {statuses:?}"
        );
    }
}

#[actix_web::test]
async fn security_the_per_ip_budget_defaults_to_a_documented_value_and_can_be_patched() {
    // Arrange
    let app = spawn_app().await;
    let (team, created) = app.create_team_json(json!({})).await;
    assert_eq!(
        created["rate_limits"]["widget_ip_per_minute"], 1200,
        "the default: {created}"
    );

    // Act
    let res = app
        .patch_settings(
            &team.secret,
            &json!({"rate_limits": {"widget_ip_per_minute": 2}}),
        )
        .await;

    // Assert
    let (status, settings) = status_json(res).await;
    assert_eq!(status, 200, "{settings}");
    assert_eq!(settings["rate_limits"]["widget_ip_per_minute"], 2);
    assert_eq!(
        settings["rate_limits"]["message_ip_per_minute"], 100,
        "the other keys keep their values"
    );
    assert_eq!(hit(&app, &team, "GET tickets").await, 200);
    assert_eq!(hit(&app, &team, "v1 GET tickets").await, 200);
    assert_eq!(
        hit(&app, &team, "GET tickets").await,
        429,
        "the patched budget applies"
    );
}

// --- item 6: the honeypot ------------------------------------------------------------------

#[actix_web::test]
async fn security_honeypot_posts_are_rate_limited_per_ip_on_both_surfaces() {
    let app = spawn_app().await;
    // Low honeypot weight: the detector must not block the test's IP while it runs.
    let quiet = json!({"block_threshold": 100, "weights": {"honeypot": 10}});
    for surface in ["documented", "v1"] {
        // Arrange
        let team = app
            .create_team_with(json!({
                "rate_limits": limits(json!({"widget_ip_per_minute": 3})),
                "suspicion": quiet,
            }))
            .await;

        // Act
        let mut statuses = Vec::new();
        for _ in 0..5 {
            let res = if surface == "documented" {
                app.post_message(
                    &team.token,
                    &json!({"distinct_id": visitor("bot"), "message": "spam", "_hp": "x"}),
                )
                .await
            } else {
                v1_post(
                    &app,
                    &team,
                    json!({"widget_session_id": Uuid::now_v7(), "message": "spam", "_hp": "x"}),
                )
                .await
            };
            statuses.push(res.status().as_u16());
        }

        // Assert
        let decoy = if surface == "documented" { 201 } else { 400 };
        assert_eq!(
            statuses,
            [decoy, decoy, decoy, 429, 429],
            "{surface}: honeypot hits count against the per-IP budget"
        );
    }
}

#[actix_web::test]
async fn security_a_honeypot_post_never_flags_the_distinct_id_it_names() {
    // Arrange: a real visitor.
    let app = spawn_app().await;
    let team = app.create_team().await;
    let victim = visitor("victim");
    app.open_ticket(&team.token, &victim, "where is my parcel?")
        .await;

    // Act: a bot fills the honeypot naming the victim.
    let res = app
        .post_message(
            &team.token,
            &json!({"distinct_id": victim, "message": "spam", "_hp": "http://spam.test"}),
        )
        .await;
    assert_eq!(res.status(), 201);

    // Assert: the hit is recorded against the IP only.
    assert!(
        app.wait_for_flag(&team.id, "honeypot").await,
        "the honeypot hit is flagged"
    );
    let db = app.db().await;
    let against_victim: i64 = db
        .query_one(
            "SELECT count(*) FROM suspicion_flags WHERE distinct_id = $1",
            &[&victim],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(against_victim, 0, "no flag names the victim");
    let res = app
        .operator(
            &team.secret,
            Method::GET,
            "/api/conversations/suspicious",
            None,
        )
        .await;
    let (status, listing) = status_json(res).await;
    assert_eq!(status, 200);
    assert!(
        !listing.to_string().contains(&victim),
        "the victim is not listed as suspicious: {listing}"
    );
}

#[actix_web::test]
async fn security_a_full_suspicion_detector_still_scores_new_visitors() {
    // Arrange: detector maps of 20 keys, filled by honeypot bots from 40 addresses.
    let app = app_behind_proxy(|s| s.key_tables.suspicion_keys = 20).await;
    let team = app.create_team().await;
    for i in 1..=40 {
        let res = post_from(
            &app,
            &team,
            &format!("198.51.100.{i}"),
            json!({"distinct_id": visitor("bot"), "message": "spam", "_hp": "x"}),
        )
        .await;
        assert_eq!(res.status(), 201);
    }
    assert!(app.wait_for_flag(&team.id, "honeypot").await);

    // Act: a new link spammer from a fresh address.
    let res = post_from(
        &app,
        &team,
        "203.0.113.50",
        json!({"distinct_id": visitor("spammer"),
               "message": "cheap https://a.test https://b.test https://c.test"}),
    )
    .await;
    assert_eq!(res.status(), 201);

    // Assert
    assert!(
        app.wait_for_flag(&team.id, "link_density").await,
        "the new visitor is scored although the detector's maps were full"
    );
}

// --- item 7: IPv6 clients are keyed by their /64 --------------------------------------------

#[actix_web::test]
async fn security_ipv6_addresses_of_one_64_share_one_per_ip_budget() {
    // Arrange
    let app = app_behind_proxy(|_| {}).await;
    let team = app
        .create_team_with(json!({"rate_limits": {"message_ip_per_minute": 2}}))
        .await;
    let send = |ip: &'static str| {
        let (app, team) = (&app, &team);
        async move {
            post_from(
                app,
                team,
                ip,
                json!({"distinct_id": visitor("v6"), "message": "hello"}),
            )
            .await
            .status()
            .as_u16()
        }
    };

    // Act
    let first = send("2001:db8:1:2::1").await;
    let second = send("2001:db8:1:2:aaaa:bbbb:cccc:dddd").await;
    let rotated = send("2001:db8:1:2::3").await;
    let other_64 = send("2001:db8:1:3::1").await;
    let mapped: Vec<u16> = vec![
        send("::ffff:198.51.100.1").await,
        send("::ffff:198.51.100.2").await,
        send("::ffff:198.51.100.3").await,
    ];

    // Assert
    assert_eq!((first, second), (201, 201));
    assert_eq!(
        rotated, 429,
        "a third address in the same /64 shares its budget"
    );
    assert_eq!(other_64, 201, "another /64 has its own budget");
    assert_eq!(
        mapped,
        [201, 201, 201],
        "IPv4-mapped addresses are separate IPv4 clients, never one /64"
    );
}

#[actix_web::test]
async fn security_an_operator_block_of_one_ipv6_address_blocks_its_64() {
    // Arrange
    let app = app_behind_proxy(|_| {}).await;
    let team = app.create_team().await;
    block(
        &app,
        &team,
        json!({"ip": "2001:db8:1:2::5", "reason": "abuse"}),
    )
    .await;
    block(
        &app,
        &team,
        json!({"ip": "198.51.100.7", "reason": "abuse"}),
    )
    .await;
    let msg = || json!({"distinct_id": visitor("v6"), "message": "hello"});

    // Act
    let same_64 = post_from(&app, &team, "2001:db8:1:2:ffff::9", msg()).await;
    let other_64 = post_from(&app, &team, "2001:db8:1:3::5", msg()).await;
    let mapped = post_from(&app, &team, "::ffff:198.51.100.7", msg()).await;

    // Assert
    assert_error(same_64, 403, "blocked").await;
    assert_eq!(other_64.status(), 201, "another /64 is not blocked");
    assert_error(mapped, 403, "blocked").await;
}

#[actix_web::test]
async fn security_an_automatic_block_covers_the_whole_64() {
    // Arrange: a honeypot bot at one address of a /64 (score 90 blocks its IP).
    let app = app_behind_proxy(|_| {}).await;
    let team = app.create_team().await;
    let res = post_from(
        &app,
        &team,
        "2001:db8:1:2::1",
        json!({"distinct_id": visitor("bot"), "message": "spam", "_hp": "x"}),
    )
    .await;
    assert_eq!(res.status(), 201);

    // Act: the bot rotates to another address of its /64.
    let read_from = |ip: &'static str| {
        let (app, team) = (&app, &team);
        async move {
            let path = format!(
                "/api/conversations/widget/tickets?distinct_id={}",
                visitor("rotated")
            );
            app.get_with_headers(Some(&team.token), &path, &[("X-Forwarded-For", ip)])
                .await
                .status()
                .as_u16()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut status = read_from("2001:db8:1:2::77").await;
    while status != 403 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        status = read_from("2001:db8:1:2::77").await;
    }

    // Assert
    assert_eq!(
        status, 403,
        "the automatic block covers the bot's whole /64"
    );
    assert_eq!(
        read_from("2001:db8:1:3::77").await,
        200,
        "another /64 is not blocked"
    );
}

// --- item 8: v1 requests respect blocks on a distinct_id ------------------------------------

#[actix_web::test]
async fn security_a_v1_post_naming_a_blocked_distinct_id_is_refused() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_team().await;
    let blocked = visitor("blocked");
    block(
        &app,
        &team,
        json!({"distinct_id": blocked, "reason": "spam"}),
    )
    .await;
    let body = |d: &str| {
        json!({"widget_session_id": Uuid::now_v7(), "message": "hi", "ticket_id": null,
               "distinct_id": d})
    };

    // Act
    let refused = v1_post(&app, &team, body(&blocked)).await;
    let other = v1_post(&app, &team, body(&visitor("fine"))).await;

    // Assert
    assert_error(refused, 403, "blocked").await;
    assert_eq!(other.status(), 200, "other people are unaffected");
    assert_eq!(
        app.count("SELECT count(*) FROM tickets").await,
        1,
        "the blocked person's message was not stored"
    );
}

#[actix_web::test]
async fn security_a_blocked_verified_identity_is_refused_on_v1() {
    // Arrange
    let app = spawn_app().await;
    let (team, created) = app
        .create_team_json(json!({"identity_verification": "optional"}))
        .await;
    let secret = created["identity_secret"].as_str().unwrap();
    let blocked = visitor("verified-blocked");
    let hash = identity_hash(secret, &blocked);
    let fine = visitor("verified-fine");
    let fine_hash = identity_hash(secret, &fine);
    block(
        &app,
        &team,
        json!({"distinct_id": blocked, "reason": "abuse"}),
    )
    .await;
    let tickets = |id: &str, h: &str| {
        app.client
            .get(v1(&app, "/tickets"))
            .query(&[("identity_distinct_id", id), ("identity_hash", h)])
            .header("X-Conversations-Token", &team.token)
            .send()
    };

    // Act
    let listed = tickets(&blocked, &hash).await.unwrap();
    let posted = v1_post(
        &app,
        &team,
        json!({"widget_session_id": Uuid::now_v7(), "message": "hi", "ticket_id": null,
               "identity_distinct_id": blocked, "identity_hash": hash}),
    )
    .await;
    let other = tickets(&fine, &fine_hash).await.unwrap();

    // Assert
    assert_error(listed, 403, "blocked").await;
    assert_error(posted, 403, "blocked").await;
    assert_eq!(other.status(), 200, "other verified people are unaffected");
}
