//! Spam defence across nodes (issue 17): with `REDIS_URL` the nodes share the suspicion
//! detector's windows, so a spammer whose posts a load balancer spreads over two nodes is
//! flagged and blocked as one node would flag and block him; with Redis away each node answers
//! as before (no 5xx) and scores on its own windows, and shares again once Redis is back.
//!
//! Needs Redis at 127.0.0.1:6379 (shared: every test uses its own key prefix, never FLUSHALL)
//! and, for the recovery test, the `redis-server` binary (private server on port 18518).

use crate::helpers::{spawn_app_with, spawn_node, status_json, visitor, TestApp, ADMIN_TOKEN};
use colloquy::cluster::ChangeFeed;
use colloquy::config::Settings;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const REDIS: &str = "redis://127.0.0.1:6379";
/// Nothing listens here (this suite's port range is 18500–18549).
const NO_REDIS: &str = "redis://127.0.0.1:18517";
/// A private redis-server for the recovery test.
const PRIVATE_REDIS_PORT: u16 = 18518;
/// Link spam: `link_density` (50) on the first post, `repeated_message` (40) on the third
/// of one visitor: 90 reaches the default block threshold (80).
const LINK_SPAM: &str = "CHEAP PILLS https://a.test https://b.test https://c.test";

/// A node that believes X-Forwarded-For from 127.0.0.1, with the Postgres feed, sharing its
/// spam windows through `redis` under `prefix`.
fn node(redis: Option<&str>, prefix: &str) -> impl FnOnce(&mut Settings) {
    let (redis, prefix) = (redis.map(str::to_owned), prefix.to_owned());
    move |s: &mut Settings| {
        s.trusted_proxies = colloquy::config::parse_trusted_proxies("127.0.0.1").unwrap();
        s.cluster.feed = ChangeFeed::Postgres;
        s.cluster.heartbeat = Duration::from_millis(300);
        s.cluster.redis_url = redis;
        s.cluster.redis_prefix = prefix;
    }
}

/// A key prefix no other test (or run) uses.
fn unique_prefix() -> String {
    format!("colloquy-test:{}:", uuid::Uuid::new_v4().simple())
}

async fn pair(redis: Option<&str>) -> (TestApp, TestApp) {
    let prefix = unique_prefix();
    let a = spawn_app_with(node(redis, &prefix)).await;
    let b = spawn_node(&a, node(redis, &prefix)).await;
    (a, b)
}

/// One post of `body` from `ip` through `app`; its status.
async fn post(app: &TestApp, token: &str, ip: &str, body: Value) -> u16 {
    app.post_message_with_headers(token, &body, &[("X-Forwarded-For", ip)])
        .await
        .status()
        .as_u16()
}

/// Flags of `reason` stored for the team, waiting up to `wait` for at least `at_least`.
async fn flags(app: &TestApp, team_id: &str, reason: &str, at_least: i64, wait: Duration) -> i64 {
    let sql = format!(
        "SELECT count(*) FROM suspicion_flags WHERE team_id = '{team_id}' AND reason = '{reason}'"
    );
    let deadline = Instant::now() + wait;
    loop {
        let n = app.count(&sql).await;
        if n >= at_least || Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Automatic blocks stored for `ip`, waiting up to `wait` for one.
async fn blocks(app: &TestApp, team_id: &str, ip: &str, wait: Duration) -> i64 {
    let sql =
        format!("SELECT count(*) FROM blocks WHERE team_id = '{team_id}' AND host(ip) = '{ip}'");
    let deadline = Instant::now() + wait;
    loop {
        let n = app.count(&sql).await;
        if n > 0 || Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sharing(app: &TestApp) -> Value {
    let res = app
        .client
        .get(app.url("/api/ops/actors"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("GET /api/ops/actors");
    let (status, body) = status_json(res).await;
    assert_eq!(status, 200, "{body}");
    body["suspicion_sharing"].clone()
}

async fn until_mode(app: &TestApp, mode: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let s = sharing(app).await;
        if s["mode"] == mode || Instant::now() >= deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The link spammer posts four times, alternating between `a` and `b` (as a round-robin
/// balancer spreads him): each node alone sees the text only twice.
async fn alternating_link_spammer(a: &TestApp, b: &TestApp, token: &str, ip: &str) {
    let spammer = visitor("spammer");
    for (i, app) in [a, b, a, b].into_iter().enumerate() {
        let status = post(
            app,
            token,
            ip,
            json!({"distinct_id": spammer, "message": LINK_SPAM}),
        )
        .await;
        assert!(
            status == 201 || (i == 3 && status == 403),
            "post {i}: {status} (the last may meet the new block)"
        );
    }
}

#[actix_web::test]
async fn a_spammer_alternating_between_two_nodes_is_flagged_and_blocked_as_on_one_node() {
    // Arrange: two nodes sharing their windows through Redis.
    let (a, b) = pair(Some(REDIS)).await;
    let team = a.create_unlimited_team().await;
    let ip = "198.51.100.23";

    // Act
    alternating_link_spammer(&a, &b, &team.token, ip).await;

    // Assert: the third post (on node a) repeats the text a third time cluster-wide.
    assert_eq!(
        flags(&a, &team.id, "repeated_message", 1, Duration::from_secs(5)).await,
        1,
        "the repetition is flagged once for the cluster"
    );
    assert_eq!(
        blocks(&a, &team.id, ip, Duration::from_secs(5)).await,
        1,
        "link density (50) and repetition (40) add up across the nodes to a block"
    );
    assert_eq!(
        flags(&b, &team.id, "link_density", 1, Duration::ZERO).await,
        1,
        "a reason already counted by one node is not reported again by the other"
    );
    // Both nodes refuse the spammer's address now (blocks live in PostgreSQL).
    let other = visitor("other");
    for app in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut status = post(
            app,
            &team.token,
            ip,
            json!({"distinct_id": other, "message": "hi"}),
        )
        .await;
        while status != 403 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            status = post(
                app,
                &team.token,
                ip,
                json!({"distinct_id": other, "message": "hi"}),
            )
            .await;
        }
        assert_eq!(status, 403, "{} refuses the blocked address", app.address);
    }
    assert_eq!(sharing(&a).await["mode"], "shared");
    assert_eq!(sharing(&b).await["failures"], 0);
}

#[actix_web::test]
async fn without_redis_the_same_spammer_spread_over_two_nodes_goes_unblocked() {
    // The baseline the shared windows fix: each node scores alone (as with REDIS_URL unset).
    let (a, b) = pair(None).await;
    let team = a.create_unlimited_team().await;
    let ip = "198.51.100.24";
    alternating_link_spammer(&a, &b, &team.token, ip).await;
    assert!(
        flags(&a, &team.id, "link_density", 1, Duration::from_secs(3)).await >= 1,
        "each node still sees the links"
    );
    tokio::time::sleep(Duration::from_millis(600)).await; // flags are written every 250 ms
    assert_eq!(
        flags(&a, &team.id, "repeated_message", 1, Duration::ZERO).await,
        0,
        "no node saw the text three times"
    );
    assert_eq!(blocks(&a, &team.id, ip, Duration::ZERO).await, 0);
    assert_eq!(sharing(&a).await["mode"], "off");
}

#[actix_web::test]
async fn with_redis_unreachable_nodes_answer_and_score_alone() {
    // Arrange: REDIS_URL points where nothing listens.
    let (a, b) = pair(Some(NO_REDIS)).await;
    let team = a.create_unlimited_team().await;
    let ip = "198.51.100.25";
    let spammer = visitor("flooder");

    // Act: a spammer on node a alone, and ordinary traffic on both.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            post(
                &a,
                &team.token,
                ip,
                json!({"distinct_id": spammer, "message": LINK_SPAM}),
            )
            .await,
        );
    }
    for app in [&a, &b] {
        statuses.push(
            post(
                app,
                &team.token,
                "198.51.100.26",
                json!({"distinct_id": visitor("ann"), "message": "Where is my parcel?"}),
            )
            .await,
        );
    }

    // Assert: no 5xx, node a blocked the spammer on its own windows, and says it scores alone.
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 403),
        "{statuses:?}"
    );
    assert_eq!(
        blocks(&a, &team.id, ip, Duration::from_secs(5)).await,
        1,
        "local scoring continues without Redis"
    );
    assert!(flags(&a, &team.id, "repeated_message", 1, Duration::from_secs(3)).await >= 1);
    let s = until_mode(&a, "alone", Duration::from_secs(3)).await;
    assert_eq!(s["mode"], "alone", "{s}");
    assert!(s["failures"].as_u64().unwrap_or(0) >= 1, "{s}");
    let metrics = a
        .client
        .get(a.url("/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("colloquy_suspicion_sharing{measure=\"shared\"} 0"),
        "the metric says the node scores alone"
    );
}

/// A private `redis-server` on [`PRIVATE_REDIS_PORT`], killed when dropped.
struct PrivateRedis(tokio::process::Child);

impl PrivateRedis {
    async fn start() -> Self {
        let child = tokio::process::Command::new("redis-server")
            .args([
                "--port",
                &PRIVATE_REDIS_PORT.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server (Debian: apt-get install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(("127.0.0.1", PRIVATE_REDIS_PORT))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self(child)
    }

    async fn stop(mut self) {
        let _ = self.0.kill().await;
    }
}

#[actix_web::test]
async fn when_redis_returns_the_nodes_share_again_by_themselves() {
    // Arrange: Redis is away when the nodes start and score their first traffic.
    let redis_url = format!("redis://127.0.0.1:{PRIVATE_REDIS_PORT}");
    let (a, b) = pair(Some(&redis_url)).await;
    let team = a.create_unlimited_team().await;
    assert_eq!(
        post(
            &a,
            &team.token,
            "198.51.100.30",
            json!({"distinct_id": visitor("early"), "message": "hello"})
        )
        .await,
        201
    );
    assert_eq!(
        until_mode(&a, "alone", Duration::from_secs(3)).await["mode"],
        "alone"
    );

    // Act: Redis comes up.
    let redis = PrivateRedis::start().await;
    for app in [&a, &b] {
        let s = until_mode(app, "shared", Duration::from_secs(5)).await;
        assert_eq!(s["mode"], "shared", "{} shares again: {s}", app.address);
    }
    let ip = "198.51.100.31";
    alternating_link_spammer(&a, &b, &team.token, ip).await;

    // Assert: scored together again.
    assert_eq!(
        blocks(&a, &team.id, ip, Duration::from_secs(5)).await,
        1,
        "the spread spammer is blocked once the windows are shared again"
    );
    redis.stop().await;
}
