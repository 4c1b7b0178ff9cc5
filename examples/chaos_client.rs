//! Test-only load client and checker for `scripts/chaos.sh` (the reliability tests).
//!
//! ```text
//! chaos_client load    --base URL --token TOK --run RUN --out DIR [--workers N] [--tickets K]
//!                      [--duration-secs S] [--stop-file PATH] [--new-every N] [--read-every N]
//!                      [--timeout-ms MS] [--backoff-ms MS] [--no-retry]
//! chaos_client analyze --responses FILE [--from-ms T] [--to-ms T] [--recovery-after-ms T]
//! chaos_client verify  --db URL --acks FILE [--acks FILE ...]
//! ```
//!
//! `load` runs `--workers` concurrent visitors (one HTTP/1.1 connection each at most) against
//! `--tickets` tickets it opens first. Worker `w` writes to ticket `w % K` with that ticket's
//! distinct_id, one message at a time, each with a unique content `chaos:RUN:wW:SEQ` and the
//! idempotency key `RUN-wW-SEQ`; every `--new-every`-th message opens a new ticket instead.
//! A retryable answer (503, 429, connection error, timeout) is retried with the same key
//! (unless `--no-retry`) until it is acknowledged or the run ends. Files in `--out`:
//!
//! * `acks.tsv`: one line per acknowledged write (201, or 200 idempotent replay):
//!   `worker seq ticket_id message_id created_at status content`
//! * `responses.tsv`: one line per request: `t_send_ms t_recv_ms worker op class status`
//!   (epoch milliseconds; class is 201, 200, 429, 503_unavailable, 503_overloaded, 503_other,
//!   500, 5xx_other, 401, 400, 403, 404, 4xx_other, read_ok, conn_error, timeout, other).
//!
//! It prints a one-line summary (`key=value …`). `analyze` summarises `responses.tsv` for the
//! requests sent in a time window (counts per class, max latency, answers slower than 2 s)
//! and the time from `--recovery-after-ms` to the first 201 of a request sent after it.
//! `verify` reads every acknowledged write and checks the database: each acknowledged message
//! is stored exactly once with the acknowledged ticket and created_at; no content is stored
//! twice; per ticket `created_at` is strictly increasing; each worker's acknowledged sequence
//! on a ticket is stored in acknowledgement order; the ticket counters match the messages.
//! Exits 1 when a check fails.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use uuid::Uuid;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Load(LoadArgs),
    Analyze(AnalyzeArgs),
    Verify(VerifyArgs),
}

#[derive(clap::Args, Clone)]
struct LoadArgs {
    #[arg(long)]
    base: String,
    #[arg(long)]
    token: String,
    #[arg(long)]
    run: String,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 32)]
    workers: usize,
    #[arg(long, default_value_t = 8)]
    tickets: usize,
    #[arg(long, default_value_t = 10.0)]
    duration_secs: f64,
    /// The run ends early when this file exists.
    #[arg(long)]
    stop_file: Option<PathBuf>,
    /// Every N-th message of a worker opens a new ticket (0: never).
    #[arg(long, default_value_t = 0)]
    new_every: u64,
    /// After every N-th acknowledged write, poll the ticket once (0: never).
    #[arg(long, default_value_t = 0)]
    read_every: u64,
    /// Client-side request timeout; a request without an answer by then is a `timeout`.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Pause before retrying / after a refusal.
    #[arg(long, default_value_t = 50)]
    backoff_ms: u64,
    /// Do not retry: move to the next message after any answer.
    #[arg(long)]
    no_retry: bool,
    /// Send no `client_message_id` (implies `--no-retry`: a retry could store a message twice).
    #[arg(long)]
    no_cmid: bool,
}

#[derive(clap::Args)]
struct AnalyzeArgs {
    #[arg(long)]
    responses: Vec<PathBuf>,
    #[arg(long)]
    from_ms: Option<u64>,
    #[arg(long)]
    to_ms: Option<u64>,
    #[arg(long)]
    recovery_after_ms: Option<u64>,
}

#[derive(clap::Args)]
struct VerifyArgs {
    #[arg(long)]
    db: String,
    #[arg(long)]
    acks: Vec<PathBuf>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

enum Line {
    Ack(String),
    Resp(String),
}

#[derive(Clone)]
struct Ticket {
    id: String,
    distinct_id: String,
}

struct Outcome {
    class: &'static str,
    status: u16,
    body: Option<Value>,
    retry_after: Option<u64>,
}

fn classify(status: u16, body: &Option<Value>, is_read: bool) -> &'static str {
    let code = body
        .as_ref()
        .and_then(|b| b.get("code"))
        .and_then(Value::as_str)
        .unwrap_or("");
    match status {
        200 if is_read => "read_ok",
        200 => "200",
        201 => "201",
        429 => "429",
        503 if code == "unavailable" => "503_unavailable",
        503 if code == "overloaded" => "503_overloaded",
        503 => "503_other",
        500 => "500",
        501..=599 => "5xx_other",
        401 => "401",
        400 => "400",
        403 => "403",
        404 => "404",
        402 | 405..=499 => "4xx_other",
        _ => "other",
    }
}

async fn send(req: reqwest::RequestBuilder, is_read: bool) -> Outcome {
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            match resp.bytes().await {
                Ok(bytes) => {
                    let body = serde_json::from_slice(&bytes).ok();
                    Outcome {
                        class: classify(status, &body, is_read),
                        status,
                        body,
                        retry_after,
                    }
                }
                Err(e) => Outcome {
                    class: if e.is_timeout() {
                        "timeout"
                    } else {
                        "conn_error"
                    },
                    status,
                    body: None,
                    retry_after: None,
                },
            }
        }
        Err(e) => Outcome {
            class: if e.is_timeout() {
                "timeout"
            } else {
                "conn_error"
            },
            status: 0,
            body: None,
            retry_after: None,
        },
    }
}

struct Shared {
    args: LoadArgs,
    client: reqwest::Client,
    deadline: Instant,
    tx: mpsc::UnboundedSender<Line>,
    counts: std::sync::Mutex<BTreeMap<&'static str, u64>>,
    max_latency: std::sync::Mutex<BTreeMap<&'static str, u64>>,
    acked: AtomicU64,
    requests: AtomicU64,
}

impl Shared {
    fn stopped(&self) -> bool {
        Instant::now() >= self.deadline || self.args.stop_file.as_ref().is_some_and(|p| p.exists())
    }

    fn record(&self, t_send: u64, worker: &str, op: &str, o: &Outcome) {
        let t_recv = now_ms();
        let lat = t_recv.saturating_sub(t_send);
        self.requests.fetch_add(1, Ordering::Relaxed);
        *self.counts.lock().unwrap().entry(o.class).or_default() += 1;
        let mut m = self.max_latency.lock().unwrap();
        let e = m.entry(o.class).or_default();
        *e = (*e).max(lat);
        drop(m);
        let _ = self.tx.send(Line::Resp(format!(
            "{t_send}\t{t_recv}\t{worker}\t{op}\t{}\t{}\n",
            o.class, o.status
        )));
    }

    /// POSTs one message until it is acknowledged (or the run ends / the answer is final).
    async fn post(
        &self,
        worker: &str,
        seq: u64,
        distinct_id: &str,
        ticket: Option<&str>,
    ) -> Option<Value> {
        let content = format!("chaos:{}:{worker}:{seq}", self.args.run);
        let cmid = format!("{}-{worker}-{seq}", self.args.run);
        let mut body = json!({"distinct_id": distinct_id, "message": content});
        if !self.args.no_cmid {
            body["client_message_id"] = json!(cmid);
        }
        if let Some(t) = ticket {
            body["ticket_id"] = json!(t);
        }
        loop {
            if self.stopped() {
                return None;
            }
            let t_send = now_ms();
            let req = self
                .client
                .post(format!(
                    "{}/api/conversations/widget/message",
                    self.args.base
                ))
                .header("X-Conversations-Token", &self.args.token)
                .json(&body);
            let o = send(req, false).await;
            self.record(t_send, worker, "post", &o);
            if o.status == 201 || o.status == 200 {
                let b = o.body.unwrap_or_default();
                let s = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
                self.acked.fetch_add(1, Ordering::Relaxed);
                let _ = self.tx.send(Line::Ack(format!(
                    "{worker}\t{seq}\t{}\t{}\t{}\t{}\t{content}\n",
                    s("ticket_id"),
                    s("message_id"),
                    s("created_at"),
                    o.status
                )));
                return Some(b);
            }
            let retryable = matches!(o.status, 0 | 429 | 502..=504);
            let pause = if o.status == 429 {
                // Honour Retry-After, but at most 1 s so the run keeps probing.
                o.retry_after.unwrap_or(1).min(1) * 1000
            } else {
                self.args.backoff_ms
            };
            tokio::time::sleep(Duration::from_millis(pause)).await;
            if !retryable || self.args.no_retry || self.args.no_cmid {
                return None;
            }
        }
    }

    async fn read(&self, worker: &str, t: &Ticket) {
        let t_send = now_ms();
        let req = self
            .client
            .get(format!(
                "{}/api/conversations/widget/messages/{}",
                self.args.base, t.id
            ))
            .query(&[("distinct_id", t.distinct_id.as_str()), ("limit", "5")])
            .header("X-Conversations-Token", &self.args.token);
        let o = send(req, true).await;
        self.record(t_send, worker, "get", &o);
    }
}

async fn load(args: LoadArgs) -> anyhow::Result<i32> {
    std::fs::create_dir_all(&args.out)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(args.timeout_ms))
        .connect_timeout(Duration::from_millis(args.timeout_ms.min(2000)))
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(30))
        .build()?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Line>();
    let out = args.out.clone();
    let writer = tokio::spawn(async move {
        let open = |name: &str| {
            let p = out.join(name);
            async move {
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .await
                    .map(|f| tokio::io::BufWriter::with_capacity(1 << 16, f))
            }
        };
        let mut acks = open("acks.tsv").await?;
        let mut resps = open("responses.tsv").await?;
        while let Some(line) = rx.recv().await {
            match line {
                // Acks are flushed at once: a client that is killed still leaves its log.
                Line::Ack(s) => {
                    acks.write_all(s.as_bytes()).await?;
                    acks.flush().await?;
                }
                Line::Resp(s) => resps.write_all(s.as_bytes()).await?,
            }
        }
        acks.flush().await?;
        resps.flush().await?;
        anyhow::Ok(())
    });

    let shared = Arc::new(Shared {
        deadline: Instant::now() + Duration::from_secs_f64(args.duration_secs),
        args: args.clone(),
        client,
        tx,
        counts: Default::default(),
        max_latency: Default::default(),
        acked: AtomicU64::new(0),
        requests: AtomicU64::new(0),
    });

    // Open the tickets (retried until acknowledged: the server may still be starting).
    let mut tickets = Vec::new();
    let setup: Vec<_> = (0..args.tickets.max(1))
        .map(|k| {
            let sh = shared.clone();
            tokio::spawn(async move {
                let did = format!("chaos-{}-v{k}", sh.args.run);
                let worker = format!("s{k}");
                let mut seq = 0;
                loop {
                    // Open failures that are final (4xx): try again with a new key.
                    if let Some(b) = sh.post(&worker, seq, &did, None).await {
                        let id = b.get("ticket_id").and_then(Value::as_str).unwrap_or("");
                        return Some(Ticket {
                            id: id.to_owned(),
                            distinct_id: did,
                        });
                    }
                    if sh.stopped() {
                        return None;
                    }
                    seq += 1;
                }
            })
        })
        .collect();
    for h in setup {
        if let Some(t) = h.await? {
            tickets.push(t);
        }
    }
    let mut handles = Vec::new();
    if !tickets.is_empty() {
        let tickets = Arc::new(tickets);
        for w in 0..args.workers {
            let sh = shared.clone();
            let tickets = tickets.clone();
            handles.push(tokio::spawn(async move {
                let worker = format!("w{w}");
                let t = &tickets[w % tickets.len()];
                let mut seq = 1u64;
                let mut ok = 0u64;
                while !sh.stopped() {
                    let new = sh.args.new_every > 0 && seq.is_multiple_of(sh.args.new_every);
                    let acked = sh
                        .post(
                            &worker,
                            seq,
                            &t.distinct_id,
                            (!new).then_some(t.id.as_str()),
                        )
                        .await;
                    if acked.is_some() {
                        ok += 1;
                        if sh.args.read_every > 0 && ok.is_multiple_of(sh.args.read_every) {
                            sh.read(&worker, t).await;
                        }
                    }
                    seq += 1;
                }
            }));
        }
    }
    for h in handles {
        h.await?;
    }
    let requests = shared.requests.load(Ordering::Relaxed);
    let acked = shared.acked.load(Ordering::Relaxed);
    let counts = shared.counts.lock().unwrap().clone();
    let maxlat = shared.max_latency.lock().unwrap().clone();
    drop(shared);
    writer.await??;
    let mut line = format!("requests={requests} acked={acked}");
    for (k, v) in &counts {
        line += &format!(" n_{k}={v} maxms_{k}={}", maxlat[k]);
    }
    println!("{line}");
    Ok(0)
}

fn analyze(args: AnalyzeArgs) -> anyhow::Result<i32> {
    let from = args.from_ms.unwrap_or(0);
    let to = args.to_ms.unwrap_or(u64::MAX);
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut maxlat: BTreeMap<String, u64> = BTreeMap::new();
    let (mut n, mut slow, mut max_all, mut s5xx) = (0u64, 0u64, 0u64, 0u64);
    let mut first_ok: Option<u64> = None;
    for path in &args.responses {
        let text = std::fs::read_to_string(path)?;
        for l in text.lines() {
            let f: Vec<&str> = l.split('\t').collect();
            if f.len() < 6 {
                continue;
            }
            let (ts, tr): (u64, u64) = (f[0].parse()?, f[1].parse()?);
            if let Some(after) = args.recovery_after_ms {
                if ts >= after && f[4] == "201" {
                    first_ok = Some(first_ok.map_or(tr, |x: u64| x.min(tr)));
                }
            }
            if ts < from || ts > to {
                continue;
            }
            let lat = tr.saturating_sub(ts);
            n += 1;
            if lat > 2000 {
                slow += 1;
            }
            let status: u16 = f[5].parse().unwrap_or(0);
            if (500..600).contains(&status) && status != 503 {
                s5xx += 1;
            }
            max_all = max_all.max(lat);
            *counts.entry(f[4].to_owned()).or_default() += 1;
            let e = maxlat.entry(f[4].to_owned()).or_default();
            *e = (*e).max(lat);
        }
    }
    let mut line =
        format!("requests={n} slow_over_2s={slow} max_latency_ms={max_all} bad_5xx={s5xx}");
    for (k, v) in &counts {
        line += &format!(" n_{k}={v} maxms_{k}={}", maxlat[k]);
    }
    if let Some(after) = args.recovery_after_ms {
        match first_ok {
            Some(t) => line += &format!(" recovery_ms={}", t.saturating_sub(after)),
            None => line += " recovery_ms=none",
        }
    }
    println!("{line}");
    Ok(0)
}

/// (worker, ticket)
type WorkerTicket = (String, Uuid);

struct Ack {
    worker: String,
    seq: u64,
    ticket: Uuid,
    message: Uuid,
    created_at: String,
    content: String,
}

async fn verify(args: VerifyArgs) -> anyhow::Result<i32> {
    let mut acks = Vec::new();
    for path in &args.acks {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        for l in text.lines() {
            let f: Vec<&str> = l.splitn(7, '\t').collect();
            if f.len() < 7 {
                continue; // a line torn by a kill
            }
            acks.push(Ack {
                worker: format!("{}:{}", path.display(), f[0]),
                seq: f[1].parse()?,
                ticket: f[2].parse()?,
                message: f[3].parse()?,
                created_at: f[4].to_owned(),
                content: f[6].to_owned(),
            });
        }
    }
    let (client, conn) = tokio_postgres::connect(&args.db, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let rows = client
        .query(
            "SELECT id, ticket_id, created_at, content FROM messages WHERE content LIKE 'chaos:%'",
            &[],
        )
        .await?;
    struct Row {
        ticket: Uuid,
        created_at: DateTime<Utc>,
        content: String,
    }
    let mut db: HashMap<Uuid, Row> = HashMap::new();
    let mut by_content: HashMap<String, u64> = HashMap::new();
    let mut by_ticket: HashMap<Uuid, Vec<(DateTime<Utc>, Uuid)>> = HashMap::new();
    for r in &rows {
        let id: Uuid = r.get(0);
        let row = Row {
            ticket: r.get(1),
            created_at: r.get(2),
            content: r.get(3),
        };
        *by_content.entry(row.content.clone()).or_default() += 1;
        by_ticket
            .entry(row.ticket)
            .or_default()
            .push((row.created_at, id));
        db.insert(id, row);
    }
    let mut problems: Vec<String> = Vec::new();
    let (mut lost, mut mismatch, mut order_bad) = (0u64, 0u64, 0u64);
    // Duplicates: a content stored more than once, or one (worker, seq) acknowledged twice
    // with different message ids.
    let mut duplicates: u64 = by_content.values().filter(|&&c| c > 1).map(|c| c - 1).sum();
    for (c, n) in &by_content {
        if *n > 1 && problems.len() < 20 {
            problems.push(format!("content {c:?} stored {n} times"));
        }
    }
    let mut ack_ids: HashMap<(String, u64), Uuid> = HashMap::new();
    let mut unique_acked: HashSet<Uuid> = HashSet::new();
    for a in &acks {
        if let Some(prev) = ack_ids.insert((a.worker.clone(), a.seq), a.message) {
            if prev != a.message {
                duplicates += 1;
                problems.push(format!(
                    "{} seq {} acknowledged as {prev} and {}",
                    a.worker, a.seq, a.message
                ));
            }
        }
        if !unique_acked.insert(a.message) {
            continue;
        }
        match db.get(&a.message) {
            None => {
                lost += 1;
                if problems.len() < 40 {
                    problems.push(format!(
                        "LOST: acknowledged message {} ({:?}, ticket {}) is not in the database",
                        a.message, a.content, a.ticket
                    ));
                }
            }
            Some(r) => {
                let ts_ok = DateTime::parse_from_rfc3339(&a.created_at)
                    .map(|t| t.with_timezone(&Utc) == r.created_at)
                    .unwrap_or(false);
                if r.ticket != a.ticket || r.content != a.content || !ts_ok {
                    mismatch += 1;
                    if problems.len() < 40 {
                        problems.push(format!(
                            "message {} acknowledged as ({}, {}, {:?}) stored as ({}, {}, {:?})",
                            a.message,
                            a.ticket,
                            a.created_at,
                            a.content,
                            r.ticket,
                            r.created_at.to_rfc3339(),
                            r.content
                        ));
                    }
                }
            }
        }
    }
    // Per ticket: created_at strictly increasing (no two equal).
    for (t, v) in by_ticket.iter_mut() {
        v.sort();
        for w in v.windows(2) {
            if w[0].0 >= w[1].0 {
                order_bad += 1;
                if problems.len() < 40 {
                    problems.push(format!(
                        "ticket {t}: messages {} and {} share created_at {}",
                        w[0].1, w[1].1, w[0].0
                    ));
                }
            }
        }
    }
    // Per (worker, ticket): acknowledgement order = stored order.
    let mut seqs: BTreeMap<WorkerTicket, Vec<(u64, DateTime<Utc>)>> = BTreeMap::new();
    for a in &acks {
        if let Some(r) = db.get(&a.message) {
            seqs.entry((a.worker.clone(), a.ticket))
                .or_default()
                .push((a.seq, r.created_at));
        }
    }
    for ((w, t), mut v) in seqs {
        v.sort_by_key(|x| x.0);
        v.dedup_by_key(|x| x.0);
        for p in v.windows(2) {
            if p[0].1 >= p[1].1 {
                order_bad += 1;
                if problems.len() < 40 {
                    problems.push(format!(
                        "{w} on ticket {t}: seq {} stored at {} not before seq {} at {}",
                        p[0].0, p[0].1, p[1].0, p[1].1
                    ));
                }
            }
        }
    }
    // The ticket counters agree with the messages.
    let counters = client
        .query(
            "SELECT t.id, t.message_count, t.last_created_at,
                    count(m.id) FILTER (WHERE NOT m.is_private), max(m.created_at)
             FROM tickets t LEFT JOIN messages m ON m.ticket_id = t.id
             GROUP BY t.id, t.message_count, t.last_created_at",
            &[],
        )
        .await?;
    let mut counter_bad = 0u64;
    for r in &counters {
        let id: Uuid = r.get(0);
        let count: i32 = r.get(1);
        let last: Option<DateTime<Utc>> = r.get(2);
        let real: i64 = r.get(3);
        let real_last: Option<DateTime<Utc>> = r.get(4);
        if i64::from(count) != real || last != real_last {
            counter_bad += 1;
            if problems.len() < 40 {
                problems.push(format!(
                    "ticket {id}: message_count {count} / last_created_at {last:?} but {real} messages, newest {real_last:?}"
                ));
            }
        }
    }
    let stored_unacked = db.keys().filter(|id| !unique_acked.contains(id)).count();
    for p in &problems {
        eprintln!("verify: {p}");
    }
    println!(
        "acked={} stored={} stored_unacked={stored_unacked} lost={lost} duplicates={duplicates} mismatch={mismatch} order_violations={order_bad} counter_mismatch={counter_bad}",
        unique_acked.len(),
        db.len()
    );
    Ok(
        if lost + duplicates + mismatch + order_bad + counter_bad > 0 {
            1
        } else {
            0
        },
    )
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Load(a) => load(a).await,
        Cmd::Analyze(a) => analyze(a),
        Cmd::Verify(a) => verify(a).await,
    };
    match r {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("chaos_client: {e:#}");
            std::process::exit(2);
        }
    }
}
