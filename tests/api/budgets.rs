//! Budgets that hold across nodes: with `REDIS_URL` two nodes on one database count one
//! visitor's requests together (a limit of 10 is 10 for the cluster, not 10 per node); with
//! Redis away no request fails, each node allows its share (limit / live nodes) and the
//! shared budgets come back by themselves. Every test's keys are under its own random team
//! id in the shared Redis; the outage test runs a private `redis-server` it kills.

use crate::helpers::{spawn_app_with, spawn_node, visitor, TestApp, TestTeam, ADMIN_TOKEN};
use colloquy::cluster::ChangeFeed;
use colloquy::config::Settings;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HIGH: u32 = 1_000_000;

/// The shared Redis of the test machine (`REDIS_URL`, default the local server).
fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn node(redis: Option<String>) -> impl FnOnce(&mut Settings) {
    move |s: &mut Settings| {
        s.cluster.feed = ChangeFeed::Postgres;
        s.cluster.heartbeat = Duration::from_millis(300);
        s.cluster.redis_url = redis;
    }
}

/// Two nodes on one database and one Redis, each seeing the other alive.
async fn pair(redis: &str) -> (TestApp, TestApp) {
    let a = spawn_app_with(node(Some(redis.to_owned()))).await;
    let b = spawn_node(&a, node(Some(redis.to_owned()))).await;
    for n in [&a, &b] {
        until(n, "the other node is seen", |v| {
            v["rate_limit_budgets"]["live_nodes"] == 2
        })
        .await;
    }
    (a, b)
}

async fn team(app: &TestApp, limits: Value) -> TestTeam {
    let mut all = json!({
        "message_distinct_id_per_minute": HIGH,
        "message_ip_per_minute": HIGH,
        "message_team_per_hour": HIGH,
        "read_distinct_id_per_minute": HIGH,
        "widget_ip_per_minute": HIGH,
    });
    for (k, v) in limits.as_object().unwrap() {
        all[k] = v.clone();
    }
    app.create_team_with(json!({ "rate_limits": all })).await
}

async fn actors(app: &TestApp) -> Value {
    app.client
        .get(format!("{}/api/ops/actors", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits until `check` holds for the node's `/api/ops/actors` (or panics after 5 s).
async fn until(app: &TestApp, what: &str, check: impl Fn(&Value) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let v = actors(app).await;
        if check(&v) {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{what}: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `n` POSTs by `who`, alternating between the nodes; returns how many were `201`
/// (and asserts the others were `429`: never a 5xx).
async fn posts(nodes: &[&TestApp], team: &TestTeam, who: &str, n: usize) -> usize {
    let mut created = 0;
    for i in 0..n {
        let res = nodes[i % nodes.len()]
            .post_message(
                &team.token,
                &json!({"distinct_id": who, "message": format!("message {i}")}),
            )
            .await;
        match res.status().as_u16() {
            201 => created += 1,
            429 => {}
            s => panic!("POST {i}: status {s}: {}", res.text().await.unwrap()),
        }
    }
    created
}

#[actix_web::test]
async fn twenty_posts_by_one_visitor_alternating_two_nodes_admit_the_limit_not_twice_it() {
    let (a, b) = pair(&redis_url()).await;
    let team = team(&a, json!({"message_distinct_id_per_minute": 10})).await;

    let created = posts(&[&a, &b], &team, &visitor("two-nodes"), 20).await;

    assert!(
        (10..=11).contains(&created),
        "a limit of 10 a minute admits 10 (at most 11) across the cluster, got {created}"
    );
    let stats = actors(&a).await;
    assert_eq!(stats["rate_limit_budgets"]["mode"], "cluster", "{stats}");
    assert!(
        stats["rate_limiters"]["alive"].as_i64().unwrap() >= 1,
        "{stats}"
    );
    let calls = |v: &Value| v["rate_limit_budgets"]["store_calls"].as_u64().unwrap();
    assert_eq!(
        calls(&stats) + calls(&actors(&b).await),
        20,
        "one Redis operation per request"
    );
}

#[actix_web::test]
async fn tail_polls_alternating_two_nodes_stay_within_ten_percent_of_the_read_budget() {
    let (a, b) = pair(&redis_url()).await;
    let team = team(&a, json!({"read_distinct_id_per_minute": 20})).await;
    let who = visitor("reader");
    let ticket = a.open_ticket(&team.token, &who, "hello").await;

    let mut ok = 0;
    for i in 0..60 {
        let node = if i % 2 == 0 { &a } else { &b };
        let res = node
            .get_messages(&team.token, &ticket, &[("distinct_id", who.as_str())])
            .await;
        match res.status().as_u16() {
            200 => ok += 1,
            429 => {}
            s => panic!("poll {i}: status {s}"),
        }
    }

    assert!(
        (18..=22).contains(&ok),
        "20 reads a minute across two nodes, within 10 %: got {ok}"
    );
}

/// A private Redis this test may kill (port in the budgets helper's range 18200-18299).
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian: apt-get install redis-server)");
        let me = Self {
            port,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "redis-server on {port} did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        me
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[actix_web::test]
async fn with_redis_away_each_node_allows_its_share_and_the_cluster_budgets_come_back() {
    let mut redis = PrivateRedis::start(18201).await;
    let (a, b) = pair(&redis.url()).await;
    let team = team(&a, json!({"message_distinct_id_per_minute": 10})).await;
    assert_eq!(
        posts(&[&a, &b], &team, &visitor("before"), 20).await,
        10,
        "with Redis up, 10 across the cluster"
    );

    // Redis goes away: the very next requests are answered (no 5xx, no long wait) ...
    redis.kill();
    let killed = Instant::now();
    let who = visitor("during");
    let created_a = posts(&[&a], &team, &who, 10).await;
    assert!(
        killed.elapsed() < Duration::from_secs(1),
        "10 POSTs answered within 1 s of Redis going away, took {:?}",
        killed.elapsed()
    );
    // ... on this node's share of the budget: 10 / 2 live nodes
    assert_eq!(created_a, 5, "node A alone allows limit / live nodes");
    assert_eq!(posts(&[&b], &team, &who, 10).await, 5, "and so does node B");
    let stats = actors(&a).await;
    let budgets = &stats["rate_limit_budgets"];
    assert_eq!(budgets["mode"], "fallback", "{stats}");
    assert_eq!(budgets["fallbacks"], 1, "{stats}");
    let metrics = a
        .client
        .get(format!("{}/metrics", a.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("colloquy_rate_budgets{measure=\"fallback\"} 1"),
        "the metric says so:\n{metrics}"
    );

    // Redis comes back (empty): the nodes find it by themselves and count together again.
    let _redis = PrivateRedis::start(18201).await;
    for n in [&a, &b] {
        until(n, "cluster budgets resume", |v| {
            v["rate_limit_budgets"]["mode"] == "cluster"
        })
        .await;
    }
    let created = posts(&[&a, &b], &team, &visitor("after"), 20).await;
    assert!(
        (10..=11).contains(&created),
        "after Redis is back, 10 across the cluster again, got {created}"
    );
}

#[actix_web::test]
async fn without_redis_a_node_counts_alone_in_per_team_actors() {
    let app = spawn_app_with(|_| {}).await;
    let (t1, t2) = (
        team(&app, json!({"message_distinct_id_per_minute": 3})).await,
        team(&app, json!({})).await,
    );

    assert_eq!(posts(&[&app], &t1, &visitor("alone"), 5).await, 3);
    assert_eq!(posts(&[&app], &t2, &visitor("other"), 2).await, 2);

    let stats = actors(&app).await;
    assert_eq!(stats["rate_limit_budgets"]["mode"], "local", "{stats}");
    assert_eq!(stats["rate_limit_budgets"]["store_calls"], 0, "{stats}");
    let limiters = &stats["rate_limiters"];
    assert_eq!(limiters["alive"], 2, "one actor per team: {stats}");
    assert_eq!(limiters["handled"], 7, "one check per request: {stats}");
}

#[test]
fn compose_yaml_gives_the_nodes_a_shared_redis() {
    let text = include_str!("../../compose.yaml");
    let mut doc: serde_norway::Value =
        serde_norway::from_str(text).expect("compose.yaml is valid YAML");
    doc.apply_merge().expect("compose.yaml's merge keys apply");
    let services = &doc["services"];
    let image = services["redis"]["image"].as_str().unwrap_or_default();
    assert!(image.starts_with("redis:7"), "a Redis 7 service: {image:?}");
    for node in ["node-a", "node-b"] {
        let env = &services[node]["environment"];
        assert_eq!(
            env["REDIS_URL"].as_str(),
            Some("redis://redis:6379"),
            "{node}"
        );
    }
}
