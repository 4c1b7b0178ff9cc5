//! Test-only probe of the change feed, for `scripts/bench.sh` (cluster loads) and
//! `scripts/chaos.sh` (cluster scenarios): how long a message written through one node takes
//! to be answered by another node's tail poll, and whether any read stays stale.
//!
//! ```text
//! feed_probe --write URL --read URL --token TOK [--tickets N] [--duration-secs S]
//!            [--stop-file PATH] [--stale-ms MS] [--give-up-ms MS] [--out FILE]
//! ```
//!
//! `--tickets` visitors each open a ticket through `--write` and make it live on `--read` with
//! a first tail poll (so the reading node's ticket actor holds the ticket in memory, the case
//! a missed change would leave stale). Then each, one message at a time: POST through
//! `--write`; once acknowledged (201), poll `--read` with `after=<the previous message's
//! created_at>` every 2 ms until the message is in the answer. The time from the
//! acknowledgement to that answer is one sample. A message not answered within `--stale-ms`
//! (default 1000) counts as a stale read; one not answered within `--give-up-ms` (default
//! 10000) as never seen. Prints one summary line (`key=value …`: samples, p50_ms, p99_ms,
//! max_ms, stale, never, write_errors, read_errors); `--out` gets one line per sample:
//! `t_ack_ms latency_ms` (epoch milliseconds). Exits 1 when a read was stale or never seen.

use clap::Parser;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;

#[derive(Parser, Clone)]
struct Args {
    /// Node (or load balancer) the messages are written through.
    #[arg(long)]
    write: String,
    /// Node whose tail polls must answer them.
    #[arg(long)]
    read: String,
    /// The team's public token (its read and write budgets must allow the probe's rate).
    #[arg(long)]
    token: String,
    #[arg(long, default_value_t = 4)]
    tickets: usize,
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Stop early once this file exists.
    #[arg(long)]
    stop_file: Option<PathBuf>,
    #[arg(long, default_value_t = 1000)]
    stale_ms: u64,
    #[arg(long, default_value_t = 10_000)]
    give_up_ms: u64,
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Default)]
struct Tally {
    samples: Vec<(u128, f64)>,
    stale: u64,
    never: u64,
    write_errors: u64,
    read_errors: u64,
}

fn epoch_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

const MESSAGE: &str = "/api/conversations/widget/message";

async fn post(c: &reqwest::Client, a: &Args, body: Value) -> Option<Value> {
    let res = c
        .post(format!("{}{MESSAGE}", a.write))
        .header("X-Conversations-Token", &a.token)
        .json(&body)
        .send()
        .await
        .ok()?;
    if res.status() != 201 {
        return None;
    }
    res.json().await.ok()
}

/// The ticket's messages after `after` as answered by the reading node (None: no 200).
async fn poll(
    c: &reqwest::Client,
    a: &Args,
    visitor: &str,
    ticket: &str,
    after: &str,
) -> Option<Vec<Value>> {
    let res = c
        .get(format!(
            "{}/api/conversations/widget/messages/{ticket}",
            a.read
        ))
        .header("X-Conversations-Token", &a.token)
        .query(&[("distinct_id", visitor), ("after", after)])
        .send()
        .await
        .ok()?;
    if res.status() != 200 {
        return None;
    }
    let page: Value = res.json().await.ok()?;
    page["messages"].as_array().cloned()
}

async fn visitor(i: usize, a: Arc<Args>, tally: Arc<Mutex<Tally>>, deadline: Instant) {
    let c = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(_) => return,
    };
    let run = epoch_ms();
    let who = format!("feed-probe-{run}-{i}@example.com");
    let mut opened = None;
    while opened.is_none() && Instant::now() < deadline {
        opened = post(
            &c,
            &a,
            json!({"distinct_id": who, "message": "probe opens"}),
        )
        .await;
        if opened.is_none() {
            tally.lock().await.write_errors += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let Some(opened) = opened else { return };
    let ticket = opened["ticket_id"].as_str().unwrap_or_default().to_owned();
    let mut after = opened["created_at"].as_str().unwrap_or_default().to_owned();
    // Live on the reading node from here on.
    let _ = poll(&c, &a, &who, &ticket, &after).await;
    let mut seq = 0u64;
    let stopped = |a: &Args| a.stop_file.as_ref().is_some_and(|p| p.exists());
    while Instant::now() < deadline && !stopped(&a) {
        seq += 1;
        let body =
            json!({"distinct_id": who, "ticket_id": ticket, "message": format!("probe {i} {seq}")});
        let Some(ack) = post(&c, &a, body).await else {
            tally.lock().await.write_errors += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let acked = Instant::now();
        let t_ack = epoch_ms();
        let id = ack["message_id"].as_str().unwrap_or_default().to_owned();
        let mut seen = None;
        while acked.elapsed() < Duration::from_millis(a.give_up_ms) {
            match poll(&c, &a, &who, &ticket, &after).await {
                Some(msgs) if msgs.iter().any(|m| m["id"] == id.as_str()) => {
                    seen = Some(acked.elapsed());
                    break;
                }
                Some(_) => {}
                None => tally.lock().await.read_errors += 1,
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut t = tally.lock().await;
        match seen {
            Some(d) => {
                let ms = d.as_secs_f64() * 1000.0;
                if ms > a.stale_ms as f64 {
                    t.stale += 1;
                }
                t.samples.push((t_ack, ms));
            }
            None => t.never += 1,
        }
        drop(t);
        after = ack["created_at"].as_str().unwrap_or_default().to_owned();
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    args.write = args.write.trim_end_matches('/').to_owned();
    args.read = args.read.trim_end_matches('/').to_owned();
    let args = Arc::new(args);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
    let tasks: Vec<_> = (0..args.tickets)
        .map(|i| tokio::spawn(visitor(i, args.clone(), tally.clone(), deadline)))
        .collect();
    for t in tasks {
        t.await?;
    }
    let t = tally.lock().await;
    let mut ms: Vec<f64> = t.samples.iter().map(|s| s.1).collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    if let Some(path) = &args.out {
        let lines: String = t
            .samples
            .iter()
            .map(|(at, l)| format!("{at} {l:.2}\n"))
            .collect();
        std::fs::write(path, lines)?;
    }
    println!(
        "samples={} p50_ms={:.1} p99_ms={:.1} max_ms={:.1} stale={} never={} write_errors={} read_errors={}",
        ms.len(),
        pct(&ms, 50.0),
        pct(&ms, 99.0),
        ms.last().copied().unwrap_or(0.0),
        t.stale,
        t.never,
        t.write_errors,
        t.read_errors
    );
    if t.stale > 0 || t.never > 0 {
        std::process::exit(1);
    }
    Ok(())
}
