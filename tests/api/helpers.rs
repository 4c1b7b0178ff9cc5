//! Starting the real app for a test, and talking to it.

use colloquy::config::{DatabaseSettings, LogFormat, Settings};
use colloquy::startup::Application;
use reqwest::{Client, Response};
use serde_json::{json, Value};
use std::str::FromStr;
use tokio_postgres::NoTls;

/// The admin token every test app is started with.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A running colloquy with its own database.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`
    pub address: String,
    /// The fresh database's name.
    pub db_name: String,
    /// The server's connection settings (pointing at the fresh database).
    pub db_config: tokio_postgres::Config,
    /// An HTTP client.
    pub client: Client,
}

/// A team created through the admin API.
#[derive(Clone, Debug)]
pub struct TestTeam {
    /// Team id.
    pub id: String,
    /// Widget token.
    pub token: String,
    /// Operator key.
    pub secret: String,
}

fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Creates a fresh database, builds the app on port 0 and serves it in the background.
pub async fn spawn_app() -> TestApp {
    let base = tokio_postgres::Config::from_str(&server_url()).expect("DATABASE_URL is a valid URL");
    let db_name = format!("colloquy_test_{}", uuid::Uuid::new_v4().simple());
    let (admin, conn) = base
        .connect(NoTls)
        .await
        .expect("connect to PostgreSQL: set DATABASE_URL or run scripts/test.sh");
    actix_web::rt::spawn(conn);
    admin
        .simple_query(&format!("CREATE DATABASE {db_name}"))
        .await
        .expect("create the test database");
    let mut db_config = base.clone();
    db_config.dbname(&db_name);
    let settings = Settings {
        database: DatabaseSettings {
            config: db_config.clone(),
            pool_size: 8,
        },
        bind: "127.0.0.1:0".parse().unwrap(),
        admin_token: Some(ADMIN_TOKEN.to_owned()),
        trusted_proxies: vec![],
        log_format: LogFormat::Text,
        workers: Some(2),
    };
    let app = Application::build(settings).await.expect("build the app");
    let address = format!("http://127.0.0.1:{}", app.port());
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        address,
        db_name,
        db_config,
        client: Client::new(),
    }
}

impl TestApp {
    /// A direct connection to the app's database, for checking what was stored.
    pub async fn db(&self) -> tokio_postgres::Client {
        let (client, conn) = self.db_config.connect(NoTls).await.expect("connect to the test database");
        actix_web::rt::spawn(conn);
        client
    }

    /// Creates a team with the given extra settings (merged over a unique name).
    pub async fn create_team_with(&self, extra: Value) -> TestTeam {
        let mut body = json!({"name": format!("team-{}", uuid::Uuid::new_v4())});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let res = self
            .client
            .post(format!("{}/api/teams", self.address))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("POST /api/teams");
        assert_eq!(res.status(), 201, "team creation should succeed");
        let v: Value = res.json().await.unwrap();
        TestTeam {
            id: v["id"].as_str().unwrap().to_owned(),
            token: v["public_token"].as_str().unwrap().to_owned(),
            secret: v["secret_api_key"].as_str().unwrap().to_owned(),
        }
    }

    /// A team with default settings.
    pub async fn create_team(&self) -> TestTeam {
        self.create_team_with(json!({})).await
    }

    /// A team whose rate limits are high enough not to interfere with the test.
    pub async fn create_unlimited_team(&self) -> TestTeam {
        self.create_team_with(json!({"rate_limits": {
            "message_distinct_id_per_minute": 1_000_000,
            "message_ip_per_minute": 1_000_000,
            "message_team_per_hour": 1_000_000,
            "read_distinct_id_per_minute": 1_000_000
        }}))
        .await
    }

    /// `POST /api/conversations/widget/message` with a JSON body.
    pub async fn post_message(&self, token: &str, body: &Value) -> Response {
        self.client
            .post(format!("{}/api/conversations/widget/message", self.address))
            .header("X-Conversations-Token", token)
            .json(body)
            .send()
            .await
            .expect("POST message")
    }

    /// `POST /api/conversations/widget/message` with a raw body.
    pub async fn post_raw(&self, token: &str, body: impl Into<reqwest::Body>) -> Response {
        self.client
            .post(format!("{}/api/conversations/widget/message", self.address))
            .header("X-Conversations-Token", token)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST raw message")
    }

    /// Opens a ticket for `distinct_id` and returns its id.
    pub async fn open_ticket(&self, token: &str, distinct_id: &str, text: &str) -> String {
        let res = self
            .post_message(token, &json!({"distinct_id": distinct_id, "message": text}))
            .await;
        assert_eq!(res.status(), 201, "opening a ticket should succeed");
        let v: Value = res.json().await.unwrap();
        v["ticket_id"].as_str().unwrap().to_owned()
    }

    /// `GET /api/conversations/widget/messages/{ticket}` with query pairs.
    pub async fn get_messages(&self, token: &str, ticket: &str, query: &[(&str, &str)]) -> Response {
        self.client
            .get(format!("{}/api/conversations/widget/messages/{ticket}", self.address))
            .header("X-Conversations-Token", token)
            .query(query)
            .send()
            .await
            .expect("GET messages")
    }

    /// `GET /api/conversations/widget/tickets` with query pairs.
    pub async fn get_tickets(&self, token: &str, query: &[(&str, &str)]) -> Response {
        self.client
            .get(format!("{}/api/conversations/widget/tickets", self.address))
            .header("X-Conversations-Token", token)
            .query(query)
            .send()
            .await
            .expect("GET tickets")
    }

    /// `POST /api/conversations/tickets/{ticket}/messages` as an operator.
    pub async fn operator_post(&self, secret: &str, ticket: &str, body: &Value) -> Response {
        self.client
            .post(format!("{}/api/conversations/tickets/{ticket}/messages", self.address))
            .bearer_auth(secret)
            .json(body)
            .send()
            .await
            .expect("operator POST")
    }

    /// How many rows `sql` counts (a `SELECT count(*) …` without parameters).
    pub async fn count(&self, sql: &str) -> i64 {
        self.db().await.query_one(sql, &[]).await.expect("count query").get(0)
    }
}

/// Asserts the contract's error shape and code, returning the body.
pub async fn assert_error(res: Response, status: u16, code: &str) -> Value {
    let got = res.status().as_u16();
    let body: Value = res.json().await.expect("error bodies are JSON");
    assert_eq!(got, status, "status for {body}");
    assert_eq!(body["code"], code, "code in {body}");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "a sentence in {body}");
    body
}
