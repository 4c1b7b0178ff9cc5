//! Security: who a widget request is. Only an identity hash that verifies makes a verified
//! visitor; an unproven `identity_distinct_id` or body `distinct_id` reaches nothing and links
//! nothing; traits cannot grow without bound across follow-ups.

use crate::helpers::{assert_error, identity_hash, spawn_app, TestApp, TestTeam};
use serde_json::{json, Map, Value};
use uuid::Uuid;

fn v1(app: &TestApp, path: &str) -> String {
    format!("{}/api/conversations/v1/widget{path}", app.address)
}

async fn v1_post(app: &TestApp, team: &TestTeam, path: &str, body: Value) -> reqwest::Response {
    app.client
        .post(v1(app, path))
        .header("X-Conversations-Token", &team.token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn v1_get(
    app: &TestApp,
    team: &TestTeam,
    path: &str,
    query: &[(&str, &str)],
) -> reqwest::Response {
    app.client
        .get(v1(app, path))
        .query(query)
        .header("X-Conversations-Token", &team.token)
        .send()
        .await
        .unwrap()
}

/// A team in `mode` with a verified person who has one posthog-js ticket.
async fn verified_person(app: &TestApp, mode: &str) -> (TestTeam, String, String, String) {
    let (team, json) = app
        .create_team_json(json!({"identity_verification": mode}))
        .await;
    let secret = json["identity_secret"].as_str().unwrap().to_owned();
    let person = "victim.verified@example.com".to_owned();
    let hash = identity_hash(&secret, &person);
    let res = v1_post(
        app,
        &team,
        "/message",
        json!({"widget_session_id": Uuid::now_v7(), "message": "my card number is 4111…",
               "identity_distinct_id": person, "identity_hash": hash}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let ticket = res.json::<Value>().await.unwrap()["ticket_id"]
        .as_str()
        .unwrap()
        .to_owned();
    (team, person, hash, ticket)
}

#[actix_web::test]
async fn security_an_identity_without_a_hash_reaches_nothing_on_the_posthog_js_surface() {
    let app = spawn_app().await;
    let (team, person, hash, ticket) = verified_person(&app, "optional").await;
    let stranger = Uuid::now_v7().to_string();
    let claim = [
        ("widget_session_id", stranger.as_str()),
        ("identity_distinct_id", person.as_str()),
    ];

    // The stranger's listing is their own session's: empty.
    let res = v1_get(&app, &team, "/tickets", &claim).await;
    assert_eq!(res.status(), 200);
    let list: Value = res.json().await.unwrap();
    assert_eq!(
        list["count"], 0,
        "an unproven identity lists nobody's tickets: {list}"
    );

    // Reading, writing and marking the person's ticket are refused.
    let res = v1_get(&app, &team, &format!("/messages/{ticket}"), &claim).await;
    assert_error(res, 403, "forbidden").await;
    let res = v1_post(
        &app,
        &team,
        "/message",
        json!({"widget_session_id": stranger, "identity_distinct_id": person,
               "ticket_id": ticket, "message": "hi, it's me"}),
    )
    .await;
    assert_error(res, 403, "forbidden").await;
    let res = v1_post(
        &app,
        &team,
        &format!("/messages/{ticket}/read"),
        json!({"widget_session_id": stranger, "identity_distinct_id": person}),
    )
    .await;
    assert_error(res, 403, "forbidden").await;

    // A wrong hash is refused outright; the right one still works.
    let res = v1_get(
        &app,
        &team,
        "/tickets",
        &[
            ("widget_session_id", stranger.as_str()),
            ("identity_distinct_id", person.as_str()),
            ("identity_hash", "00ff"),
        ],
    )
    .await;
    assert_error(res, 403, "identity_invalid").await;
    let res = v1_get(
        &app,
        &team,
        "/tickets",
        &[
            ("identity_distinct_id", person.as_str()),
            ("identity_hash", hash.as_str()),
        ],
    )
    .await;
    assert_eq!(res.json::<Value>().await.unwrap()["count"], 1);
}

#[actix_web::test]
async fn security_required_mode_refuses_an_identity_without_a_hash_on_the_posthog_js_surface() {
    let app = spawn_app().await;
    let (team, person, _hash, ticket) = verified_person(&app, "required").await;
    let stranger = Uuid::now_v7().to_string();
    let claim = [
        ("widget_session_id", stranger.as_str()),
        ("identity_distinct_id", person.as_str()),
    ];
    let res = v1_get(&app, &team, "/tickets", &claim).await;
    assert_error(res, 403, "identity_required").await;
    let res = v1_get(&app, &team, &format!("/messages/{ticket}"), &claim).await;
    assert_error(res, 403, "identity_required").await;
    let res = v1_post(
        &app,
        &team,
        "/message",
        json!({"widget_session_id": stranger, "identity_distinct_id": person, "message": "x"}),
    )
    .await;
    assert_error(res, 403, "identity_required").await;
}

#[actix_web::test]
async fn security_a_named_distinct_id_does_not_plant_tickets_in_a_verified_persons_history() {
    let app = spawn_app().await;
    let (team, person, hash, _ticket) = verified_person(&app, "optional").await;
    // A stranger names the person in the body, without any proof.
    let res = v1_post(
        &app,
        &team,
        "/message",
        json!({"widget_session_id": Uuid::now_v7(), "distinct_id": person,
               "message": "Your account is locked, log in at evil.example"}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let planted = res.json::<Value>().await.unwrap()["ticket_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The person's verified widget, on either surface, shows only their own ticket.
    let res = v1_get(
        &app,
        &team,
        "/tickets",
        &[
            ("identity_distinct_id", person.as_str()),
            ("identity_hash", hash.as_str()),
        ],
    )
    .await;
    let list: Value = res.json().await.unwrap();
    assert_eq!(list["count"], 1, "{list}");
    assert_ne!(list["results"][0]["id"], planted.as_str());
    let list: Value = app
        .get_tickets(
            &team.token,
            &[
                ("distinct_id", person.as_str()),
                ("identity_hash", hash.as_str()),
            ],
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["count"], 1, "{list}");
    let res = app
        .get_messages(
            &team.token,
            &planted,
            &[
                ("distinct_id", person.as_str()),
                ("identity_hash", hash.as_str()),
            ],
        )
        .await;
    assert_error(res, 403, "forbidden").await;

    // Operators still see whom the visitor claimed to be.
    let seen = app.operator_ticket(&team.secret, &planted).await;
    assert_eq!(seen["distinct_id"], person.as_str(), "{seen}");
}

#[actix_web::test]
async fn security_merged_traits_stay_within_their_cap_across_follow_ups() {
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let traits = |round: usize| -> Value {
        let m: Map<String, Value> = (0..50)
            .map(|i| {
                (
                    format!("k{round}_{i:02}_{}", "x".repeat(150)),
                    json!("v".repeat(500)),
                )
            })
            .collect();
        Value::Object(m)
    };
    let res = app
        .post_message(
            &team.token,
            &json!({"distinct_id": "trait.grower@example.com", "message": "first",
                    "traits": {"name": "Ann", "plan": "free"}}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let ticket = res.json::<Value>().await.unwrap()["ticket_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for round in 0..4 {
        let res = app
            .post_message(
                &team.token,
                &json!({"distinct_id": "trait.grower@example.com", "ticket_id": ticket,
                        "message": format!("follow-up {round}"), "traits": traits(round)}),
            )
            .await;
        assert_eq!(res.status(), 201);
    }
    // A change to a known key is still taken.
    let res = app
        .post_message(
            &team.token,
            &json!({"distinct_id": "trait.grower@example.com", "ticket_id": ticket,
                    "message": "upgraded", "traits": {"plan": "pro"}}),
        )
        .await;
    assert_eq!(res.status(), 201);

    let seen = app.operator_ticket(&team.secret, &ticket).await;
    let stored = seen["traits"].as_object().expect("traits object");
    assert!(stored.len() <= 50, "{} keys stored", stored.len());
    let bytes = serde_json::to_string(&seen["traits"]).unwrap().len();
    assert!(bytes <= 16 * 1024 + 1024, "{bytes} bytes of traits stored");
    assert_eq!(stored["name"], "Ann", "what was known first is kept");
    assert_eq!(stored["plan"], "pro", "known keys still change");
}
