//! Identity verification (per team: off | optional | required):
//! `identity_hash = hex(HMAC-SHA256(identity_secret, distinct_id))`, a body field on POSTs and
//! a query parameter on GETs (messages, tickets, stream).

use crate::helpers::{assert_error, identity_hash, spawn_app, TestApp, TestTeam};
use reqwest::{Method, Response};
use serde_json::{json, Value};

const VISITOR: &str = "verified@example.com";

struct Verified {
    app: TestApp,
    team: TestTeam,
    secret: String,
    ticket: String,
}

async fn team_in(mode: &str) -> Verified {
    let app = spawn_app().await;
    let (team, created) = app
        .create_team_json(json!({
            "identity_verification": mode,
            "rate_limits": {"message_distinct_id_per_minute": 100000,
                            "message_ip_per_minute": 100000,
                            "read_distinct_id_per_minute": 100000}
        }))
        .await;
    assert_eq!(created["identity_verification"], mode);
    let secret = created["identity_secret"]
        .as_str()
        .expect("identity_secret at creation")
        .to_owned();
    assert!(!secret.is_empty());
    let res = app
        .post_message(
            &team.token,
            &json!({"distinct_id": VISITOR, "message": "first",
                    "identity_hash": identity_hash(&secret, VISITOR)}),
        )
        .await;
    assert_eq!(res.status(), 201, "a correct hash is accepted");
    let ticket = res.json::<Value>().await.unwrap()["ticket_id"]
        .as_str()
        .unwrap()
        .to_owned();
    Verified {
        app,
        team,
        secret,
        ticket,
    }
}

impl Verified {
    /// The four requests, with `hash` (None: no identity_hash at all).
    async fn post(&self, hash: Option<&str>) -> Response {
        let mut b =
            json!({"distinct_id": VISITOR, "ticket_id": self.ticket, "message": "follow-up"});
        if let Some(h) = hash {
            b["identity_hash"] = json!(h);
        }
        self.app.post_message(&self.team.token, &b).await
    }
    async fn post_new(&self, hash: Option<&str>) -> Response {
        let mut b = json!({"distinct_id": VISITOR, "message": "a new ticket"});
        if let Some(h) = hash {
            b["identity_hash"] = json!(h);
        }
        self.app.post_message(&self.team.token, &b).await
    }
    async fn messages(&self, hash: Option<&str>) -> Response {
        let mut q = vec![("distinct_id", VISITOR)];
        if let Some(h) = hash {
            q.push(("identity_hash", h));
        }
        self.app
            .get_messages(&self.team.token, &self.ticket, &q)
            .await
    }
    async fn tickets(&self, hash: Option<&str>) -> Response {
        let mut q = vec![("distinct_id", VISITOR)];
        if let Some(h) = hash {
            q.push(("identity_hash", h));
        }
        self.app.get_tickets(&self.team.token, &q).await
    }
    async fn stream(&self, hash: Option<&str>) -> Response {
        let mut q = vec![
            ("distinct_id", VISITOR),
            ("token", self.team.token.as_str()),
        ];
        if let Some(h) = hash {
            q.push(("identity_hash", h));
        }
        self.app.open_stream(&self.ticket, &q, &[]).await
    }

    /// Each of the five requests is refused with `403 code`, or (`None`) succeeds.
    async fn check_all(&self, hash: Option<&str>, code: Option<&str>) {
        let results = [
            ("POST message (follow-up)", 201, self.post(hash).await),
            ("POST message (new ticket)", 201, self.post_new(hash).await),
            ("GET messages", 200, self.messages(hash).await),
            ("GET tickets", 200, self.tickets(hash).await),
            ("GET stream", 200, self.stream(hash).await),
        ];
        for (what, ok, res) in results {
            let got = res.status().as_u16();
            match code {
                Some(c) => {
                    assert_eq!(got, 403, "{what} with hash {hash:?}");
                    assert_error(res, 403, c).await;
                }
                None => assert_eq!(got, ok, "{what} with hash {hash:?}"),
            }
        }
    }

    fn good(&self) -> String {
        identity_hash(&self.secret, VISITOR)
    }

    async fn stored(&self) -> i64 {
        self.app.count("SELECT count(*) FROM messages").await
    }
}

fn wrong_hashes(secret: &str) -> Vec<String> {
    vec![
        // Someone else's valid hash.
        identity_hash(secret, "someone-else@example.com"),
        // The right distinct_id under another secret.
        identity_hash("not-the-team-secret", VISITOR),
        // Not hex at all, and a truncated hash.
        "zz-not-hex".to_owned(),
        identity_hash(secret, VISITOR)[..32].to_owned(),
    ]
}

#[actix_web::test]
async fn required_mode_refuses_missing_and_wrong_hashes_everywhere() {
    let v = team_in("required").await;
    let before = v.stored().await;
    v.check_all(None, Some("identity_required")).await;
    for wrong in wrong_hashes(&v.secret) {
        v.check_all(Some(&wrong), Some("identity_invalid")).await;
    }
    // An empty hash is a missing one.
    v.check_all(Some(""), Some("identity_required")).await;
    assert_eq!(v.stored().await, before, "refused requests store nothing");

    let good = v.good();
    v.check_all(Some(&good), None).await;
    let res = v.messages(Some(&good)).await;
    assert_eq!(res.status(), 200);
    let page: Value = res.json().await.unwrap();
    assert!(page["messages"].as_array().unwrap().len() >= 2);
}

#[actix_web::test]
async fn required_mode_also_guards_read_marks_and_typing() {
    let v = team_in("required").await;
    let read = |h: Option<String>| {
        let mut b = json!({"distinct_id": VISITOR});
        if let Some(h) = h {
            b["identity_hash"] = json!(h);
        }
        b
    };
    let res = v.app.mark_read(&v.team.token, &v.ticket, &read(None)).await;
    assert_error(res, 403, "identity_required").await;
    let res = v
        .app
        .mark_read(
            &v.team.token,
            &v.ticket,
            &read(Some(wrong_hashes(&v.secret)[0].clone())),
        )
        .await;
    assert_error(res, 403, "identity_invalid").await;
    let res = v
        .app
        .mark_read(&v.team.token, &v.ticket, &read(Some(v.good())))
        .await;
    assert_eq!(res.status(), 200);

    let mut typing = read(None);
    typing["ticket_id"] = json!(v.ticket);
    assert_error(
        v.app.widget_typing(&v.team.token, &typing).await,
        403,
        "identity_required",
    )
    .await;
    typing["identity_hash"] = json!(v.good());
    assert_eq!(
        v.app.widget_typing(&v.team.token, &typing).await.status(),
        204
    );
}

#[actix_web::test]
async fn optional_mode_refuses_a_wrong_hash_and_allows_a_missing_one() {
    let v = team_in("optional").await;
    let before = v.stored().await;
    for wrong in wrong_hashes(&v.secret) {
        v.check_all(Some(&wrong), Some("identity_invalid")).await;
    }
    assert_eq!(v.stored().await, before);
    v.check_all(None, None).await;
    let good = v.good();
    v.check_all(Some(&good), None).await;
}

#[actix_web::test]
async fn off_mode_needs_no_hash() {
    let v = team_in("off").await;
    v.check_all(None, None).await;
}

#[actix_web::test]
async fn switching_to_required_applies_on_the_next_request() {
    let v = team_in("off").await;
    assert_eq!(v.messages(None).await.status(), 200);
    let res = v
        .app
        .patch_settings(
            &v.team.secret,
            &json!({"identity_verification": "required"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_error(v.messages(None).await, 403, "identity_required").await;
    assert_eq!(v.messages(Some(&v.good())).await.status(), 200);
}

#[actix_web::test]
async fn rotating_the_identity_secret_retires_old_hashes() {
    let v = team_in("required").await;
    let old = v.good();
    assert_eq!(v.messages(Some(&old)).await.status(), 200);

    let res = v
        .app
        .operator(
            &v.team.secret,
            Method::POST,
            "/api/conversations/settings/rotate_identity_secret",
            None,
        )
        .await;
    assert_eq!(res.status(), 200);
    let new_secret = res.json::<Value>().await.unwrap()["identity_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_secret, v.secret);

    // Old hashes are refused at once, on every request kind.
    v.check_all(Some(&old), Some("identity_invalid")).await;
    let new = identity_hash(&new_secret, VISITOR);
    v.check_all(Some(&new), None).await;
}
