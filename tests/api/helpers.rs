//! Starting the real app for a test, and talking to it.
#![allow(dead_code)]

use colloquy::config::{DatabaseSettings, LogFormat, Settings};
use colloquy::startup::Application;
use reqwest::{Client, Response};
use serde_json::{json, Value};
use std::str::FromStr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::NoTls;

/// The admin token every test app is started with.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A running colloquy with its own database.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`: the node, or in cluster topology the load balancer.
    pub address: String,
    /// The fresh database's name.
    pub db_name: String,
    /// The server's connection settings (pointing at the fresh database).
    pub db_config: tokio_postgres::Config,
    /// An HTTP client.
    pub client: Client,
    /// In cluster topology: the nodes' addresses (the load balancer alternates between them).
    pub nodes: Vec<String>,
    /// In cluster topology: the HAProxy process, stopped when the app is dropped.
    lb: Option<LoadBalancer>,
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
    spawn_app_with(|_| {}).await
}

/// [`spawn_app`] with settings changed by `configure` (e.g. an SMTP server).
///
/// With `COLLOQUY_TEST_TOPOLOGY=cluster` the same test runs against a cluster instead: two
/// nodes on the fresh database with the PostgreSQL change feed (both with `configure`'s
/// settings, and `REDIS_URL` when set), behind a real HAProxy (round-robin per request,
/// health checks on `/readyz`), whose address is `TestApp::address`.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let (db_name, db_config) = create_database().await;
    if !cluster_topology() {
        return serve_on(db_name, db_config, configure).await;
    }
    let mut settings = base_settings(&db_config);
    configure(&mut settings);
    settings.cluster.feed = colloquy::cluster::ChangeFeed::Postgres;
    settings.cluster.heartbeat = Duration::from_millis(300);
    if let Ok(url) = std::env::var("REDIS_URL") {
        if !url.is_empty() {
            settings.cluster.redis_url = Some(url);
        }
    }
    // Node a first: it runs the migrations; b starts on the migrated database.
    let a = serve_settings(db_name.clone(), db_config.clone(), settings.clone()).await;
    let b = serve_settings(db_name, db_config, settings).await;
    let lb = LoadBalancer::start(&[&a.address, &b.address]).await;
    TestApp {
        address: lb.address.clone(),
        nodes: vec![a.address.clone(), b.address.clone()],
        lb: Some(lb),
        ..a
    }
}

/// One node on a fresh database whatever `COLLOQUY_TEST_TOPOLOGY` says, for tests that
/// build their own cluster node by node ([`spawn_node`]).
pub async fn spawn_single_node_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let (db_name, db_config) = create_database().await;
    serve_on(db_name, db_config, configure).await
}

/// Whether the black-box tests run through a load balancer in front of two nodes
/// (`COLLOQUY_TEST_TOPOLOGY=cluster`, scripts/test.sh's cluster section) instead of
/// against one node.
pub fn cluster_topology() -> bool {
    std::env::var("COLLOQUY_TEST_TOPOLOGY").is_ok_and(|t| t == "cluster")
}

/// For a test that inspects one node (its memory, metrics or per-node budgets) and so cannot
/// be run through a load balancer: in cluster topology, prints why it is skipped and returns
/// `true` (the test then returns); otherwise `false`. docs/scale-out.md lists these tests.
pub fn skip_in_cluster(reason: &str) -> bool {
    if !cluster_topology() {
        return false;
    }
    let name = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_owned();
    println!("SKIP in cluster topology: {name}: {reason}");
    eprintln!("SKIP in cluster topology: {name}: {reason}");
    true
}

/// For a test that counts what the nodes count each alone today (rate budgets, the
/// suspicion detector's windows) until they count together in Redis (issue 17): skipped like
/// [`skip_in_cluster`] unless `REDIS_URL` is set, which both nodes are then given.
pub fn skip_in_cluster_without_shared_counters(reason: &str) -> bool {
    let shared = std::env::var("REDIS_URL").is_ok_and(|u| !u.is_empty());
    !shared && skip_in_cluster(reason)
}

/// A real HAProxy in front of the test's nodes. It runs under a small `sh` that stops it (and
/// removes its directory) as soon as its standard input closes, which happens when this value
/// is dropped and also when the test process dies any other way (a panic that aborts, a
/// runner's kill -9), so no HAProxy outlives its test.
struct LoadBalancer {
    address: String,
    guard: std::process::Child,
    dir: std::path::PathBuf,
}

impl LoadBalancer {
    async fn start(nodes: &[&str]) -> Self {
        let dir =
            std::env::temp_dir().join(format!("colloquy-lb-{}", uuid::Uuid::new_v4().simple()));
        let mut last_log = String::new();
        // A free port can be taken by someone else before HAProxy binds it: try a few.
        for _ in 0..5 {
            // The guard removes the directory when HAProxy has stopped (also after a failed try).
            std::fs::create_dir_all(&dir).expect("create the load balancer's directory");
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let cfg = dir.join("haproxy.cfg");
            let log = dir.join("haproxy.log");
            std::fs::write(&cfg, haproxy_cfg(port, nodes)).expect("write haproxy.cfg");
            let log_file = std::fs::File::create(&log).expect("create haproxy.log");
            let guard = std::process::Command::new("sh")
                .arg("-c")
                .arg(r#"haproxy -db -f "$1" </dev/null & hp=$!; read -r _; kill "$hp" 2>/dev/null; wait "$hp"; rm -rf "${1%/*}""#)
                .arg("sh")
                .arg(&cfg)
                .stdin(std::process::Stdio::piped())
                .stdout(log_file.try_clone().expect("clone the log file"))
                .stderr(log_file)
                .spawn()
                .expect("start haproxy (COLLOQUY_TEST_TOPOLOGY=cluster needs it on PATH)");
            let mut lb = Self {
                address: format!("http://127.0.0.1:{port}"),
                guard,
                dir: dir.clone(),
            };
            if lb.wait_ready().await {
                return lb;
            }
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
            lb.stop();
        }
        panic!("HAProxy did not come up in front of {nodes:?}; its log: {last_log}");
    }

    /// Both nodes answer `/readyz` through HAProxy (two answers in a row, round-robin).
    async fn wait_ready(&mut self) -> bool {
        let client = Client::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut ok_in_a_row = 0;
        while Instant::now() < deadline {
            if matches!(self.guard.try_wait(), Ok(Some(_))) {
                return false;
            }
            let ok = client
                .get(format!("{}/readyz", self.address))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            ok_in_a_row = if ok { ok_in_a_row + 1 } else { 0 };
            if ok_in_a_row >= 2 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(if ok { 10 } else { 50 })).await;
        }
        false
    }

    fn stop(&mut self) {
        // Closing the guard's standard input makes it stop HAProxy and wait for it.
        drop(self.guard.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.guard.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.guard.kill();
        let _ = self.guard.wait();
    }
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The test load balancer's configuration: scripts/cluster.sh's, with timeouts long enough
/// for the streaming tests, no logging, and health checks that a busy test machine does not
/// fail (the tests do not take nodes down).
fn haproxy_cfg(port: u16, nodes: &[&str]) -> String {
    let servers: String = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "    server n{i} {} check\n",
                n.trim_start_matches("http://")
            )
        })
        .collect();
    format!(
        "global
    maxconn 2000

defaults
    mode http
    option forwardfor
    timeout connect 2s
    timeout client 5m
    timeout server 5m
    timeout http-request 10s
    timeout http-keep-alive 30s
    retries 2
    option redispatch

frontend colloquy
    bind 127.0.0.1:{port}
    default_backend nodes

backend nodes
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    timeout check 2s
    default-server inter 500ms fastinter 250ms downinter 500ms fall 4 rise 1
{servers}"
    )
}

/// A fresh, empty database (not yet migrated): its name and connection settings.
pub async fn create_database() -> (String, tokio_postgres::Config) {
    let base =
        tokio_postgres::Config::from_str(&server_url()).expect("DATABASE_URL is a valid URL");
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
    (db_name, db_config)
}

/// A second node on `first`'s database (the two make a cluster), with settings changed by
/// `configure` (e.g. its change feed).
pub async fn spawn_node(first: &TestApp, configure: impl FnOnce(&mut Settings)) -> TestApp {
    serve_on(first.db_name.clone(), first.db_config.clone(), configure).await
}

/// Builds a node on the database `db_name` and serves it in the background.
pub async fn serve_on(
    db_name: String,
    db_config: tokio_postgres::Config,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    let mut settings = base_settings(&db_config);
    configure(&mut settings);
    serve_settings(db_name, db_config, settings).await
}

/// A test node's settings before the test changes them.
fn base_settings(db_config: &tokio_postgres::Config) -> Settings {
    Settings {
        database: DatabaseSettings {
            config: db_config.clone(),
            pool_size: 8,
        },
        bind: "127.0.0.1:0".parse().unwrap(),
        admin_token: Some(ADMIN_TOKEN.to_owned()),
        trusted_proxies: vec![],
        log_format: LogFormat::Text,
        workers: Some(2),
        smtp: None,
        key_tables: Default::default(),
        streams: Default::default(),
        cluster: Default::default(),
    }
}

async fn serve_settings(
    db_name: String,
    db_config: tokio_postgres::Config,
    settings: Settings,
) -> TestApp {
    let app = Application::build(settings).await.expect("build the app");
    let address = format!("http://127.0.0.1:{}", app.port());
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        address,
        db_name,
        db_config,
        client: Client::new(),
        nodes: Vec::new(),
        lb: None,
    }
}

impl TestApp {
    /// A direct connection to the app's database, for checking what was stored.
    pub async fn db(&self) -> tokio_postgres::Client {
        let (client, conn) = self
            .db_config
            .connect(NoTls)
            .await
            .expect("connect to the test database");
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
            "read_distinct_id_per_minute": 1_000_000,
            "widget_ip_per_minute": 1_000_000
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
    pub async fn get_messages(
        &self,
        token: &str,
        ticket: &str,
        query: &[(&str, &str)],
    ) -> Response {
        self.client
            .get(format!(
                "{}/api/conversations/widget/messages/{ticket}",
                self.address
            ))
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
            .post(format!(
                "{}/api/conversations/tickets/{ticket}/messages",
                self.address
            ))
            .bearer_auth(secret)
            .json(body)
            .send()
            .await
            .expect("operator POST")
    }

    /// How many rows `sql` counts (a `SELECT count(*) …` without parameters).
    pub async fn count(&self, sql: &str) -> i64 {
        self.db()
            .await
            .query_one(sql, &[])
            .await
            .expect("count query")
            .get(0)
    }
}

/// Asserts the contract's error shape and code, returning the body.
pub async fn assert_error(res: Response, status: u16, code: &str) -> Value {
    let got = res.status().as_u16();
    let body: Value = res.json().await.expect("error bodies are JSON");
    assert_eq!(got, status, "status for {body}");
    assert_eq!(body["code"], code, "code in {body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "a sentence in {body}"
    );
    body
}

// --- Operator API, identity verification and SSE helpers (operator, stream, identity,
// idempotency and isolation tests) ---

/// `hex(HMAC-SHA256(identity_secret, distinct_id))`, as a customer's server computes it.
pub fn identity_hash(identity_secret: &str, distinct_id: &str) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(identity_secret.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(distinct_id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

impl TestApp {
    /// Creates a team like [`TestApp::create_team_with`] and also returns the whole
    /// creation answer (with `identity_secret`, `rate_limits`, …).
    pub async fn create_team_json(&self, extra: Value) -> (TestTeam, Value) {
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
        let team = TestTeam {
            id: v["id"].as_str().unwrap().to_owned(),
            token: v["public_token"].as_str().unwrap().to_owned(),
            secret: v["secret_api_key"].as_str().unwrap().to_owned(),
        };
        (team, v)
    }

    /// An operator-API request (`Authorization: Bearer secret`) to `path`, with an optional
    /// JSON body.
    pub async fn operator(
        &self,
        secret: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Response {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.address))
            .bearer_auth(secret);
        if let Some(b) = body {
            req = req.json(b);
        }
        req.send().await.expect("operator request")
    }

    /// `GET /api/conversations/tickets/{ticket}` as an operator; asserts `200`.
    pub async fn operator_ticket(&self, secret: &str, ticket: &str) -> Value {
        let res = self
            .operator(
                secret,
                reqwest::Method::GET,
                &format!("/api/conversations/tickets/{ticket}"),
                None,
            )
            .await;
        assert_eq!(res.status(), 200, "operator GET ticket");
        res.json().await.unwrap()
    }

    /// `GET /api/conversations/tickets?…` (the inbox) as an operator.
    pub async fn inbox(&self, secret: &str, query: &[(&str, &str)]) -> Response {
        self.client
            .get(format!("{}/api/conversations/tickets", self.address))
            .bearer_auth(secret)
            .query(query)
            .send()
            .await
            .expect("GET inbox")
    }

    /// `PATCH /api/conversations/tickets/{ticket}` as an operator.
    pub async fn patch_ticket(&self, secret: &str, ticket: &str, body: &Value) -> Response {
        self.operator(
            secret,
            reqwest::Method::PATCH,
            &format!("/api/conversations/tickets/{ticket}"),
            Some(body),
        )
        .await
    }

    /// `PATCH /api/conversations/settings` as an operator.
    pub async fn patch_settings(&self, secret: &str, body: &Value) -> Response {
        self.operator(
            secret,
            reqwest::Method::PATCH,
            "/api/conversations/settings",
            Some(body),
        )
        .await
    }

    /// `POST /api/conversations/widget/messages/{ticket}/read`.
    pub async fn mark_read(&self, token: &str, ticket: &str, body: &Value) -> Response {
        self.client
            .post(format!(
                "{}/api/conversations/widget/messages/{ticket}/read",
                self.address
            ))
            .header("X-Conversations-Token", token)
            .json(body)
            .send()
            .await
            .expect("POST read")
    }

    /// `POST /api/conversations/widget/typing`.
    pub async fn widget_typing(&self, token: &str, body: &Value) -> Response {
        self.client
            .post(format!("{}/api/conversations/widget/typing", self.address))
            .header("X-Conversations-Token", token)
            .json(body)
            .send()
            .await
            .expect("POST typing")
    }

    /// `GET /api/conversations/widget/stream/{ticket}` with query pairs and extra headers
    /// (the token goes in the query as `token=…` unless the caller passes it otherwise).
    pub async fn open_stream(
        &self,
        ticket: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Response {
        let mut req = self
            .client
            .get(format!(
                "{}/api/conversations/widget/stream/{ticket}",
                self.address
            ))
            .query(query);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("GET stream")
    }
}

/// One Server-Sent Event.
#[derive(Clone, Debug)]
pub struct SseEvent {
    /// The `id:` line, if any.
    pub id: Option<String>,
    /// The `event:` name (`message` when absent).
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

impl SseEvent {
    /// `data` parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("data {:?}: {e}", self.data))
    }
}

/// Reads events off a `text/event-stream` response, chunk by chunk.
pub struct SseClient {
    res: Response,
    buf: String,
    /// Every raw byte received so far, for "never contains" checks.
    pub raw: String,
    ended: bool,
}

impl SseClient {
    /// Wraps a `200 text/event-stream` response (asserts both).
    pub fn new(res: Response) -> Self {
        assert_eq!(res.status(), 200, "stream status");
        let ct = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(ct.starts_with("text/event-stream"), "content-type {ct}");
        Self {
            res,
            buf: String::new(),
            raw: String::new(),
            ended: false,
        }
    }

    fn take_event(&mut self) -> Option<SseEvent> {
        loop {
            let normalized = self.buf.replace("\r\n", "\n");
            self.buf = normalized;
            let end = self.buf.find("\n\n")?;
            let block: String = self.buf[..end].to_owned();
            self.buf.drain(..end + 2);
            let (mut id, mut event, mut data, mut any) = (None, None, Vec::new(), false);
            for line in block.lines() {
                if line.starts_with(':') {
                    continue;
                }
                let (field, value) = match line.split_once(':') {
                    Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                    None => (line, ""),
                };
                match field {
                    "id" => id = Some(value.to_owned()),
                    "event" => {
                        event = Some(value.to_owned());
                        any = true
                    }
                    "data" => {
                        data.push(value.to_owned());
                        any = true
                    }
                    _ => {}
                }
            }
            if any {
                return Some(SseEvent {
                    id,
                    event: event.unwrap_or_else(|| "message".to_owned()),
                    data: data.join("\n"),
                });
            }
        }
    }

    /// The next event, or `None` if none arrives within `wait` (or the stream ended).
    pub async fn next_event(&mut self, wait: std::time::Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(e) = self.take_event() {
                return Some(e);
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.res.chunk()).await {
                Err(_) => return None,
                Ok(Ok(Some(bytes))) => {
                    let text = String::from_utf8_lossy(&bytes);
                    self.raw.push_str(&text);
                    self.buf.push_str(&text);
                }
                Ok(Ok(None)) | Ok(Err(_)) => self.ended = true,
            }
        }
    }

    /// The next event named `name` within `wait`, skipping others; panics if none comes.
    pub async fn expect(&mut self, name: &str, wait: std::time::Duration) -> SseEvent {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(e) if e.event == name => return e,
                Some(_) => continue,
                None => panic!(
                    "no `{name}` event within {wait:?}; got so far: {}",
                    self.raw
                ),
            }
        }
    }

    /// Whether the server has closed the stream (as seen by the last read).
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Every event that arrives within `wait`.
    pub async fn drain_for(&mut self, wait: std::time::Duration) -> Vec<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(e) => out.push(e),
                None => return out,
            }
        }
    }
}

/// A response read off a raw socket: status, lower-cased headers, body text.
#[derive(Debug)]
pub struct RawResponse {
    /// HTTP status code.
    pub status: u16,
    /// `(name, value)` pairs, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body (chunked encoding already removed).
    pub body: String,
}

impl RawResponse {
    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

impl TestApp {
    /// `self.address` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// How many messages and tickets the database holds, in that order.
    pub async fn stored(&self) -> (i64, i64) {
        (
            self.count("SELECT count(*) FROM messages").await,
            self.count("SELECT count(*) FROM tickets").await,
        )
    }

    /// Polls `suspicion_flags` for up to 3 seconds until a row with `reason` exists for
    /// `team_id`; whether it appeared.
    pub async fn wait_for_flag(&self, team_id: &str, reason: &str) -> bool {
        let sql = format!(
            "SELECT count(*) FROM suspicion_flags WHERE team_id = '{team_id}' AND reason = '{reason}'"
        );
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            if self.count(&sql).await > 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `POST /api/conversations/widget/message` with a JSON body and extra headers.
    pub async fn post_message_with_headers(
        &self,
        token: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Response {
        let mut req = self
            .client
            .post(self.url("/api/conversations/widget/message"))
            .header("X-Conversations-Token", token)
            .json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("POST message")
    }

    /// A GET on `path` (query already in it) with the widget token and extra headers.
    pub async fn get_with_headers(
        &self,
        token: Option<&str>,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Response {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.header("X-Conversations-Token", t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("GET")
    }

    /// Sends `head` (request line and headers, without the blank line) and `body` over a
    /// plain TCP connection, so a test controls every byte (chunked bodies, bad UTF-8 …).
    /// Write errors are ignored: a server may answer and close before reading everything.
    pub async fn raw_request(&self, head: &str, body: &[u8]) -> RawResponse {
        let host = self.address.trim_start_matches("http://").to_owned();
        let mut stream = tokio::net::TcpStream::connect(&host)
            .await
            .expect("connect to the app");
        let mut bytes = format!("{head}\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes();
        bytes.extend_from_slice(body);
        let _ = stream.write_all(&bytes).await;
        let _ = stream.flush().await;
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = [0u8; 8192];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(read.is_ok(), "the server answered within 10 seconds");
        parse_raw_response(&out)
    }
}

fn parse_raw_response(raw: &[u8]) -> RawResponse {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("an HTTP response, got {text:?}"));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        let mut rest = body;
        let mut out = String::new();
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || after.len() < n {
                break;
            }
            out.push_str(&after[..n]);
            rest = after[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        body.to_owned()
    };
    RawResponse {
        status,
        headers,
        body,
    }
}

/// Whether `s` is `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC, microseconds), the contract's format.
pub fn is_utc_micros(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 27
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            26 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// Whether `s` parses as a UUID.
pub fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok()
}

/// Status and JSON body of a response.
pub async fn status_json(res: Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let text = res.text().await.expect("a body");
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text:?}"));
    (status, v)
}

/// A distinct_id unique to the call, so tests never collide.
pub fn visitor(tag: &str) -> String {
    format!("{tag}-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// The HTML escaping the documented surface applies to returned text.
pub fn escaped(raw: &str) -> String {
    raw.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
}
