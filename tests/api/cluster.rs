//! Two nodes on one database behave like one: a change made through one node is what the
//! other answers — at once with the PostgreSQL change feed, and without a feed by reading
//! PostgreSQL instead of memory (slower, never stale).

use crate::helpers::{
    assert_error, spawn_node, spawn_single_node_with, SseClient, TestApp, TestTeam, ADMIN_TOKEN,
};
use colloquy::cluster::ChangeFeed;
use colloquy::config::Settings;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn feed(on: bool) -> impl FnOnce(&mut Settings) {
    move |s: &mut Settings| {
        s.cluster.feed = if on {
            ChangeFeed::Postgres
        } else {
            ChangeFeed::Off
        };
        s.cluster.heartbeat = Duration::from_millis(300);
    }
}

async fn pair(with_feed: bool) -> (TestApp, TestApp) {
    let a = spawn_single_node_with(feed(with_feed)).await;
    let b = spawn_node(&a, feed(with_feed)).await;
    (a, b)
}

async fn cluster_status(app: &TestApp) -> Value {
    app.client
        .get(format!("{}/api/ops/cluster", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits until `check` holds for the node's cluster status (or panics after 5 s).
async fn until_status(app: &TestApp, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = cluster_status(app).await;
        if check(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const VISITOR: &str = "cluster.visitor@example.com";

/// A ticket opened through A with a follow-up through B (so B's ticket actor is live and
/// holds the ticket in memory); returns it and the follow-up's `created_at`.
async fn ticket_live_on_both(a: &TestApp, b: &TestApp, team: &TestTeam) -> (String, String) {
    let ticket = a.open_ticket(&team.token, VISITOR, "hello from A").await;
    let res = b
        .post_message(
            &team.token,
            &json!({"distinct_id": VISITOR, "ticket_id": ticket, "message": "follow-up via B"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let at = res.json::<Value>().await.unwrap()["created_at"]
        .as_str()
        .unwrap()
        .to_owned();
    // B answers the tail poll (from memory when it may).
    let page = poll(b, team, &ticket, &at).await;
    assert_eq!(page["messages"], json!([]));
    (ticket, at)
}

async fn poll(app: &TestApp, team: &TestTeam, ticket: &str, after: &str) -> Value {
    let res = app
        .get_messages(
            &team.token,
            ticket,
            &[("distinct_id", VISITOR), ("after", after)],
        )
        .await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn reply(app: &TestApp, team: &TestTeam, ticket: &str, text: &str) {
    let res = app
        .operator_post(
            &team.secret,
            ticket,
            &json!({"content": text, "author_type": "human", "author_name": "Sam"}),
        )
        .await;
    assert_eq!(res.status(), 201);
}

/// Polls B until the reply shows (or 3 s pass); returns how long it took.
async fn seen_after(b: &TestApp, team: &TestTeam, ticket: &str, at: &str, text: &str) -> Duration {
    let started = Instant::now();
    loop {
        let page = poll(b, team, ticket, at).await;
        if page["messages"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["content"] == text))
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "B never answered the reply made through A: {page}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[actix_web::test]
async fn two_nodes_without_a_feed_read_postgresql_instead_of_stale_memory() {
    let (a, b) = pair(false).await;
    let team = a.create_unlimited_team().await;
    let s = cluster_status(&b).await;
    assert_eq!(s["memory_trusted"], false, "B saw A at start: {s}");
    until_status(&a, "A notices B", |s| s["memory_trusted"] == false).await;

    let (ticket, at) = ticket_live_on_both(&a, &b, &team).await;
    reply(&a, &team, &ticket, "answer through A").await;
    let page = poll(&b, &team, &ticket, &at).await;
    assert_eq!(
        page["messages"][0]["content"], "answer through A",
        "B answers from PostgreSQL at once: {page}"
    );

    // A status change through A is what B shows.
    let res = a
        .patch_ticket(&team.secret, &ticket, &json!({"status": "resolved"}))
        .await;
    assert_eq!(res.status(), 200);
    let page = poll(&b, &team, &ticket, &at).await;
    assert_eq!(page["ticket_status"], "resolved");
}

#[actix_web::test]
async fn a_node_alone_trusts_its_memory_again_when_the_other_leaves() {
    let a = spawn_single_node_with(feed(false)).await;
    assert_eq!(cluster_status(&a).await["memory_trusted"], true);
    {
        let b = spawn_node(&a, feed(false)).await;
        until_status(&a, "A notices B", |s| s["other_nodes_alive"] == 1).await;
        assert_eq!(cluster_status(&b).await["memory_trusted"], false);
        // B stops beating (its row ages out of the window): simulate by deleting it.
        let db = a.db().await;
        let id = cluster_status(&b).await["node_id"]
            .as_str()
            .unwrap()
            .to_owned();
        db.execute("DELETE FROM nodes WHERE id = $1::text::uuid", &[&id])
            .await
            .unwrap();
    }
    // B still beats in this test process, so it comes back; its feed is off: A distrusts.
    until_status(&a, "A still sees B", |s| s["memory_trusted"] == false).await;
}

#[actix_web::test]
async fn with_the_postgres_feed_a_change_through_one_node_reaches_the_other_at_once() {
    let (a, b) = pair(true).await;
    let team = a.create_unlimited_team().await;
    for node in [&a, &b] {
        until_status(node, "feed up and memory trusted", |s| {
            s["feed_healthy"] == true && s["memory_trusted"] == true && s["other_nodes_alive"] == 1
        })
        .await;
    }
    let (ticket, mut at) = ticket_live_on_both(&a, &b, &team).await;

    // Replies through A, each polled through B: how long until B shows it.
    let mut waits = Vec::new();
    for i in 0..20 {
        let text = format!("answer {i} through A");
        reply(&a, &team, &ticket, &text).await;
        waits.push(seen_after(&b, &team, &ticket, &at, &text).await);
        let page = poll(&b, &team, &ticket, &at).await;
        at = page["messages"]
            .as_array()
            .and_then(|m| m.last())
            .map(|m| m["created_at"].as_str().unwrap().to_owned())
            .unwrap_or(at);
    }
    waits.sort();
    let (p50, max) = (waits[waits.len() / 2], waits[waits.len() - 1]);
    eprintln!("write through A visible to a poll through B: p50 {p50:?}, max {max:?}");
    assert!(max < Duration::from_secs(1), "max {max:?}");

    // B's memory still answers (trusted) and nothing stale: a status change too.
    let res = a
        .patch_ticket(&team.secret, &ticket, &json!({"status": "pending"}))
        .await;
    assert_eq!(res.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(1);
    while poll(&b, &team, &ticket, &at).await["ticket_status"] != "pending" {
        assert!(
            Instant::now() < deadline,
            "B never showed the status set through A"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(cluster_status(&b).await["memory_trusted"], true);
}

/// Read-your-writes through a round-robin balancer: what one node acknowledged is in the
/// other node's very next answer (not a few milliseconds later, when its notice arrives) —
/// messages, a ticket's status, a team's settings.
#[actix_web::test]
async fn with_the_feed_what_one_node_acknowledged_the_other_answers_on_the_next_request() {
    let (a, b) = pair(true).await;
    let team = a.create_unlimited_team().await;
    for node in [&a, &b] {
        until_status(node, "feed up and memory trusted", |s| {
            s["feed_healthy"] == true && s["memory_trusted"] == true && s["other_nodes_alive"] == 1
        })
        .await;
    }
    let (ticket, mut at) = ticket_live_on_both(&a, &b, &team).await;
    for i in 0..20 {
        let (writer, reader) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let text = format!("answer {i}");
        reply(writer, &team, &ticket, &text).await;
        let page = poll(reader, &team, &ticket, &at).await;
        let got: Vec<&str> = page["messages"]
            .as_array()
            .map(|m| m.iter().filter_map(|m| m["content"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(got, [text.as_str()], "round {i}: {page}");
        at = page["messages"][0]["created_at"]
            .as_str()
            .unwrap()
            .to_owned();

        let status = if i % 2 == 0 { "resolved" } else { "pending" };
        let res = writer
            .patch_ticket(&team.secret, &ticket, &json!({"status": status}))
            .await;
        assert_eq!(res.status(), 200);
        let page = poll(reader, &team, &ticket, &at).await;
        assert_eq!(page["ticket_status"], status, "round {i}: {page}");
    }
    assert_eq!(cluster_status(&a).await["memory_trusted"], true);
    assert_eq!(cluster_status(&b).await["memory_trusted"], true);

    // A team setting changed through A holds on B's next request (B has the team cached).
    let res = a
        .patch_settings(&team.secret, &json!({"conversations_enabled": false}))
        .await;
    assert_eq!(res.status(), 200);
    assert_error(
        b.get_messages(&team.token, &ticket, &[("distinct_id", VISITOR)])
            .await,
        403,
        "conversations_disabled",
    )
    .await;
}

#[actix_web::test]
async fn with_the_feed_a_stream_on_one_node_hears_replies_and_typing_from_the_other() {
    let (a, b) = pair(true).await;
    let team = a.create_unlimited_team().await;
    until_status(&b, "feed up", |s| {
        s["memory_trusted"] == true && s["feed_healthy"] == true
    })
    .await;
    let (ticket, at) = ticket_live_on_both(&a, &b, &team).await;
    let res = b
        .open_stream(
            &ticket,
            &[
                ("distinct_id", VISITOR),
                ("token", &team.token),
                ("after", &at),
            ],
            &[],
        )
        .await;
    assert_eq!(res.status(), 200);
    let mut sse = SseClient::new(res);
    sse.expect("status", Duration::from_secs(2)).await;
    let started = Instant::now();
    reply(&a, &team, &ticket, "live through A").await;
    let ev = sse.expect("message", Duration::from_secs(2)).await;
    eprintln!(
        "reply through A reached a stream on B after {:?}",
        started.elapsed()
    );
    assert!(ev.data.contains("live through A"), "{}", ev.data);

    let res = a
        .operator(
            &team.secret,
            reqwest::Method::POST,
            &format!("/api/conversations/tickets/{ticket}/typing"),
            None,
        )
        .await;
    assert_eq!(res.status(), 204);
    sse.expect("typing", Duration::from_secs(2)).await;
}

#[actix_web::test]
async fn with_the_feed_erasure_and_token_rotation_through_one_node_hold_on_the_other() {
    let (a, b) = pair(true).await;
    let team = a.create_unlimited_team().await;
    until_status(&b, "feed up", |s| {
        s["memory_trusted"] == true && s["feed_healthy"] == true
    })
    .await;
    let (ticket, at) = ticket_live_on_both(&a, &b, &team).await;

    let res = a
        .operator(
            &team.secret,
            reqwest::Method::DELETE,
            &format!("/api/conversations/persons/{VISITOR}"),
            None,
        )
        .await;
    assert_eq!(res.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let res = b
            .get_messages(
                &team.token,
                &ticket,
                &[("distinct_id", VISITOR), ("after", &at)],
            )
            .await;
        if res.status() == 404 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B still serves the erased ticket"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Warm B's team cache, rotate the token through A: B refuses the old one within 1 s.
    b.open_ticket(&team.token, "second.visitor@example.com", "hi")
        .await;
    let res = a
        .operator(
            &team.secret,
            reqwest::Method::POST,
            "/api/conversations/settings/rotate_public_token",
            None,
        )
        .await;
    assert_eq!(res.status(), 200);
    let started = Instant::now();
    loop {
        let res = b
            .get_tickets(
                &team.token,
                &[("distinct_id", "second.visitor@example.com")],
            )
            .await;
        if res.status() == 401 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "B still takes the old token"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!("rotated token refused on B after {:?}", started.elapsed());
    let res = b
        .get_tickets(&team.token, &[("distinct_id", "x.y@example.com")])
        .await;
    assert_error(res, 401, "invalid_token").await;
}

#[actix_web::test]
async fn when_the_feed_drops_the_node_reads_postgresql_and_recovers_by_itself() {
    let (a, b) = pair(true).await;
    let team = a.create_unlimited_team().await;
    until_status(&b, "feed up", |s| {
        s["memory_trusted"] == true && s["feed_healthy"] == true
    })
    .await;
    let (ticket, at) = ticket_live_on_both(&a, &b, &team).await;

    // Cut every feed connection of the database (both nodes') and write at once.
    let db = a.db().await;
    db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = 'colloquy-feed'",
        &[],
    )
    .await
    .unwrap();
    until_status(&b, "B notices", |s| {
        s["memory_trusted"] == false || s["times_distrusted"] != 0
    })
    .await;
    reply(&a, &team, &ticket, "written while the feed was down").await;
    let waited = seen_after(&b, &team, &ticket, &at, "written while the feed was down").await;
    assert!(waited < Duration::from_secs(1), "{waited:?}");

    let s = until_status(&b, "B recovers", |s| {
        s["memory_trusted"] == true && s["feed_healthy"] == true
    })
    .await;
    assert!(s["times_distrusted"].as_i64().unwrap() >= 1, "{s}");
    let page = poll(&b, &team, &ticket, &at).await;
    assert_eq!(
        page["messages"][0]["content"],
        "written while the feed was down"
    );
}

#[actix_web::test]
async fn a_restarted_node_replaces_its_crashed_predecessor_in_the_registry() {
    let a = spawn_single_node_with(feed(false)).await;
    let db = a.db().await;
    // A node that crashed on host:port `ghost:9` a moment ago: its beat still looks alive.
    let ghost = uuid::Uuid::new_v4();
    db.execute(
        "INSERT INTO nodes (id, name, feed) VALUES ($1, 'ghost:9', 'off')",
        &[&ghost],
    )
    .await
    .unwrap();
    let b = spawn_node(&a, |s: &mut Settings| {
        feed(false)(s);
        s.cluster.name = "ghost:9".into();
    })
    .await;
    let left = db
        .query_one("SELECT count(*) FROM nodes WHERE id = $1", &[&ghost])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(left, 0, "the predecessor's row is gone");
    let s = until_status(&b, "B counts only A", |s| s["other_nodes_alive"] == 1).await;
    assert_eq!(s["name"], "ghost:9");
}

/// With `BIND=…:0` (scripts/cluster.sh, the tests) the node is known by the port it really
/// listens on, in `/api/ops/cluster` and in `nodes`, not by `…:0`.
#[actix_web::test]
async fn a_node_on_port_zero_is_named_by_the_port_it_listens_on() {
    let a = spawn_single_node_with(|s| {
        feed(true)(s);
        s.cluster.name = s.bind.to_string(); // a name given with port 0
    })
    .await;
    let port = a.address.rsplit(':').next().unwrap().to_owned();
    let s = cluster_status(&a).await;
    assert_eq!(s["name"], format!("127.0.0.1:{port}"), "{s}");
    let client = a.db().await;
    let row = client
        .query_one(
            "SELECT name FROM nodes WHERE id = $1",
            &[&uuid::Uuid::parse_str(s["node_id"].as_str().unwrap()).unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), format!("127.0.0.1:{port}"));
}

/// Two nodes started at the same moment on a fresh database (compose.yaml, a rolling
/// deployment's first start) both come up: one migrates, the other waits for it.
#[actix_web::test]
async fn two_nodes_starting_together_on_a_fresh_database_both_come_up() {
    for _ in 0..3 {
        let (name, config) = crate::helpers::create_database().await;
        let (a, b) = futures_util::future::join(
            crate::helpers::serve_on(name.clone(), config.clone(), feed(true)),
            crate::helpers::serve_on(name, config, feed(true)),
        )
        .await;
        for node in [&a, &b] {
            let res = node
                .client
                .get(format!("{}/readyz", node.address))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
        }
    }
}

/// `compose.yaml` (docs/scale-out.md) is valid YAML and describes the cluster: PostgreSQL,
/// two nodes with the PostgreSQL feed on it, HAProxy checking `/readyz` on both.
#[test]
fn compose_yaml_describes_the_cluster() {
    let text = include_str!("../../compose.yaml");
    let mut doc: serde_norway::Value =
        serde_norway::from_str(text).expect("compose.yaml is valid YAML");
    doc.apply_merge().expect("compose.yaml's merge keys apply");
    let services = &doc["services"];
    for s in ["postgres", "node-a", "node-b", "haproxy"] {
        assert!(services.get(s).is_some(), "service {s} missing");
    }
    for node in ["node-a", "node-b"] {
        let env = &services[node]["environment"];
        assert_eq!(env["CHANGE_FEED"].as_str(), Some("postgres"), "{node}");
        let url = env["DATABASE_URL"].as_str().unwrap_or_default();
        assert!(url.contains("@postgres:5432/"), "{node}: {url}");
        assert_eq!(env["BIND"].as_str(), Some("0.0.0.0:8080"), "{node}");
        assert!(env["TRUSTED_PROXIES"].as_str().is_some(), "{node}");
        let check = format!("{:?}", services[node]["healthcheck"]["test"]);
        assert!(check.contains("/readyz"), "{node}: {check}");
    }
    let cfg = doc["configs"]["haproxy_cfg"]["content"]
        .as_str()
        .expect("the HAProxy configuration");
    for line in [
        "balance roundrobin",
        "option httpchk GET /readyz",
        "server a node-a:8080 check",
        "server b node-b:8080 check",
        "option forwardfor",
    ] {
        assert!(cfg.contains(line), "haproxy.cfg lacks {line:?}");
    }
}

/// A node configured with a feed answers from memory only while the feed is healthy, also
/// when it is alone: a node that appears while the feed is down would not be heard.
#[actix_web::test]
async fn a_node_alone_with_its_feed_down_reads_postgresql_until_the_feed_is_back() {
    let a = spawn_single_node_with(feed(true)).await;
    until_status(&a, "feed up", |s| {
        s["memory_trusted"] == true && s["feed_healthy"] == true && s["other_nodes_alive"] == 0
    })
    .await;
    let db = a.db().await;
    db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = 'colloquy-feed'",
        &[],
    )
    .await
    .unwrap();
    let s = until_status(&a, "A distrusts its memory while the feed is down", |s| {
        s["times_distrusted"].as_i64().unwrap_or(0) >= 1
    })
    .await;
    assert_eq!(s["other_nodes_alive"], 0, "{s}");
    until_status(&a, "A trusts its memory again", |s| {
        s["memory_trusted"] == true && s["feed_healthy"] == true
    })
    .await;
}
