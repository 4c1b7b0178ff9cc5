//! Graceful shutdown: SIGTERM under load loses nothing that was acknowledged, and no
//! request that reached the server is cut off before its answer.

use crate::helpers::ADMIN_TOKEN;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::Duration;
use tokio_postgres::NoTls;

#[actix_web::test]
async fn sigterm_under_load_keeps_every_acknowledged_message_and_answers_every_request() {
    // Arrange: the real binary on a fresh database.
    let server = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let base = tokio_postgres::Config::from_str(&server).unwrap();
    let db = format!("colloquy_test_{}", uuid::Uuid::new_v4().simple());
    let (admin, conn) = base.connect(NoTls).await.unwrap();
    actix_web::rt::spawn(conn);
    admin
        .simple_query(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    let mut cfg = base.clone();
    cfg.dbname(&db);
    // The same server URL with the fresh database's name in place of the last path segment.
    let (without_query, query) = server
        .split_once('?')
        .map_or((server.as_str(), None), |(u, q)| (u, Some(q)));
    let (prefix, _) = without_query
        .rsplit_once('/')
        .expect("DATABASE_URL names a database");
    let url = format!(
        "{prefix}/{db}{}",
        query.map(|q| format!("?{q}")).unwrap_or_default()
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_colloquy"))
        .arg("serve")
        .env("DATABASE_URL", &url)
        .env("BIND", "127.0.0.1:0")
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("LOG_FORMAT", "text")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start colloquy");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let _ = tx.send(rest.trim().to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the server logs its address");
    let base_url = format!("http://{addr}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let team: Value = client
        .post(format!("{base_url}/api/teams"))
        .bearer_auth(ADMIN_TOKEN)
        .json(
            &json!({"name": "shutdown", "rate_limits": {"message_distinct_id_per_minute": 100000000,
            "message_ip_per_minute": 100000000, "message_team_per_hour": 100000000}}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = team["public_token"].as_str().unwrap().to_owned();

    // Act: 16 writers post until the server is gone; SIGTERM after half a second.
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let (client, base_url, token) = (client.clone(), base_url.clone(), token.clone());
            actix_web::rt::spawn(async move {
                let (mut acked, mut cut_off) = (Vec::new(), Vec::new());
                let mut ticket: Option<String> = None;
                for i in 0..10_000 {
                    let mut body = json!({"distinct_id": format!("writer{w}@example.com"), "message": format!("m{i}")});
                    if let Some(t) = &ticket {
                        body["ticket_id"] = json!(t);
                    }
                    let res = client
                        .post(format!("{base_url}/api/conversations/widget/message"))
                        .header("X-Conversations-Token", &token)
                        .json(&body)
                        .send()
                        .await;
                    match res {
                        Ok(r) if r.status() == 201 => {
                            let v: Value = r.json().await.unwrap();
                            ticket = Some(v["ticket_id"].as_str().unwrap().to_owned());
                            acked.push(v["message_id"].as_str().unwrap().to_owned());
                        }
                        Ok(r) => {
                            // Draining: a well-behaved client goes away.
                            assert_eq!(r.status(), 503, "only 503 while draining");
                            break;
                        }
                        Err(e) if e.is_connect() => break, // the listener is closed: done
                        Err(e) => {
                            cut_off.push(e.to_string());
                            break;
                        }
                    }
                }
                (acked, cut_off)
            })
        })
        .collect();
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut acked = Vec::new();
    let mut cut_off = Vec::new();
    for w in writers {
        let (a, c) = w.await.unwrap();
        acked.extend(a);
        cut_off.extend(c);
    }
    let status = child.wait().expect("the server exits");

    // Assert
    assert!(status.success(), "a clean exit after SIGTERM, got {status}");
    assert!(
        cut_off.is_empty(),
        "requests cut off before their answer: {cut_off:?}"
    );
    assert!(
        acked.len() > 16,
        "the load ran ({} acknowledged)",
        acked.len()
    );
    let (db_client, conn) = cfg.connect(NoTls).await.unwrap();
    actix_web::rt::spawn(conn);
    let stored: HashSet<String> = db_client
        .query("SELECT id::text FROM messages", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged messages lost: {lost:?}",
        lost.len()
    );
}
