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

/// The real binary on a fresh database, with a team whose limits the tests do not meet.
struct Running {
    child: std::process::Child,
    base_url: String,
    client: reqwest::Client,
    token: String,
    cfg: tokio_postgres::Config,
}

impl Running {
    fn sigterm(&self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
    }
}

async fn start_binary() -> Running {
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
            "message_ip_per_minute": 100000000, "message_team_per_hour": 100000000,
            "widget_ip_per_minute": 100000000}}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = team["public_token"].as_str().unwrap().to_owned();

    Running {
        child,
        base_url,
        client,
        token,
        cfg,
    }
}

#[actix_web::test]
async fn sigterm_under_load_keeps_every_acknowledged_message_and_answers_every_request() {
    // Arrange: the real binary on a fresh database.
    let Running {
        mut child,
        base_url,
        client,
        token,
        cfg,
    } = start_binary().await;

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

#[actix_web::test]
async fn sigterm_ends_open_streams_so_the_server_stops_without_waiting_out_its_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Arrange: 20 visitors, each with an open SSE stream read as an EventSource would: one
    // raw HTTP/1.1 connection per stream.
    let mut app = start_binary().await;
    let host = app.base_url.trim_start_matches("http://").to_owned();
    let mut streams = Vec::new();
    for v in 0..20 {
        let visitor = format!("streamer{v}@example.com");
        let opened: Value = app
            .client
            .post(format!("{}/api/conversations/widget/message", app.base_url))
            .header("X-Conversations-Token", &app.token)
            .json(&json!({"distinct_id": visitor, "message": "hello"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ticket = opened["ticket_id"].as_str().unwrap();
        let mut conn = tokio::net::TcpStream::connect(&host).await.unwrap();
        let request = format!(
            "GET /api/conversations/widget/stream/{ticket}?distinct_id={visitor}&token={} HTTP/1.1\r\n\
             Host: {host}\r\nAccept: text/event-stream\r\n\r\n",
            app.token
        );
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut head = vec![0u8; 4096];
        let n = conn.read(&mut head).await.unwrap();
        let head = String::from_utf8_lossy(&head[..n]).to_string();
        assert!(head.starts_with("HTTP/1.1 200"), "stream opened: {head}");
        streams.push(conn);
    }

    // Act
    let signalled = std::time::Instant::now();
    app.sigterm();

    // Assert: every stream ends with the chunked body's last chunk (the server ended it; the
    // client reconnects elsewhere), and the server exits well before its 10 s shutdown
    // timeout, which open streams used to make it wait out (12 s with 4,000 streams).
    for mut conn in streams {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("a stream was cut off: {e}"),
            }
        }
        assert!(
            got.ends_with(b"0\r\n\r\n"),
            "the stream ended with its last chunk: {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    let status = app.child.wait().expect("the server exits");
    assert!(status.success(), "a clean exit after SIGTERM, got {status}");
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "the server took {took:?} to stop: open streams held it"
    );
}
