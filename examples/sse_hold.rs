//! Bench-only client for `scripts/bench.sh` (the `sse-memory` load): opens many Server-Sent
//! Event streams against colloquy at once and holds them open, so the script can measure
//! colloquy's memory while they are open.
//!
//! ```text
//! sse_hold --addr 127.0.0.1:PORT --data FILE --streams N [--per-ticket K]
//!          [--connect-concurrency C] [--timeout-secs S] [--stdin]
//! ```
//!
//! `FILE` has the rows `scripts/bench.sh` exports for wrk, one ticket a line:
//! `ticket_id <TAB> distinct_id <TAB> public_token <TAB> tail <TAB> mid`. Stream `i` goes to
//! row `i / K` (so `N / K` tickets with `K` streams each; rows are reused if the file has
//! fewer), as an EventSource in a page would ask for it, in raw HTTP/1.1 over a TCP socket:
//!
//! ```text
//! GET /api/conversations/widget/stream/{ticket_id}?distinct_id=…&token=…&after=<tail> HTTP/1.1
//! Accept: text/event-stream
//! ```
//!
//! (`after` = the newest message: nothing to replay). At most `C` streams are being opened at a
//! time (default 64: the server's listen backlog is small). A stream counts as open when the
//! answer is `200` with `content-type: text/event-stream` and its first event
//! (`event: status`) arrived within `S` seconds (default 15).
//!
//! Once every stream was tried it prints one line,
//! `BENCH_SSE open=… failed=… tickets=… per_ticket=… secs=… first_error="…"`,
//! then reads and discards what the streams send until SIGTERM or SIGINT (or, with `--stdin`,
//! until its standard input closes), and prints
//! `BENCH_SSE_DONE held=… closed_early=… bytes=… heartbeats=…` (`closed_early`: streams
//! the server ended while held; `bytes`: all the streams received, headers included). Exits 1 if a stream failed to open or was closed early.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};

#[derive(Parser)]
struct Args {
    /// colloquy's address, host:port
    #[arg(long)]
    addr: String,
    /// ticket rows (TSV: ticket_id, distinct_id, public_token, tail, mid)
    #[arg(long)]
    data: std::path::PathBuf,
    /// streams to open
    #[arg(long)]
    streams: usize,
    /// streams per ticket
    #[arg(long, default_value_t = 4)]
    per_ticket: usize,
    /// streams being opened at the same time
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// seconds for a stream to connect, answer and send its first event
    #[arg(long, default_value_t = 15)]
    timeout_secs: u64,
    /// also stop when standard input closes
    #[arg(long)]
    stdin: bool,
}

/// Counters shared by the stream tasks.
#[derive(Default)]
struct Totals {
    bytes: AtomicU64,
    heartbeats: AtomicU64,
    closed_early: AtomicU64,
}

/// Percent-encodes a query value (everything but RFC 3986 unreserved characters).
fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Connects, sends the request and waits for the `200`, the event-stream content type and
/// the first event. Returns the socket, the rest of the stream unread, and the bytes read.
async fn open(addr: &str, request: &str) -> Result<(TcpStream, usize), String> {
    let mut sock = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    sock.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let mut head_end = None;
    loop {
        let n = sock
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            let text = String::from_utf8_lossy(&buf);
            return Err(format!(
                "closed before the first event: {}",
                text.lines().next().unwrap_or("(nothing)")
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if head_end.is_none() {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..i]).to_string();
                let status = head.lines().next().unwrap_or_default().to_owned();
                if status.split_whitespace().nth(1) != Some("200") {
                    let body = String::from_utf8_lossy(&buf[i + 4..]).to_string();
                    return Err(format!("{status} {}", body.trim()));
                }
                let event_stream = head.lines().skip(1).any(|l| {
                    l.split_once(':').is_some_and(|(k, v)| {
                        k.trim().eq_ignore_ascii_case("content-type")
                            && v.trim().starts_with("text/event-stream")
                    })
                });
                if !event_stream {
                    return Err(format!("{status} without content-type: text/event-stream"));
                }
                head_end = Some(i + 4);
            }
        }
        if let Some(i) = head_end {
            if find(&buf[i..], b"event: status").is_some() {
                return Ok((sock, buf.len()));
            }
        }
        if buf.len() > 64 * 1024 {
            return Err("no status event in the first 64 KiB".to_owned());
        }
    }
}

/// Reads and discards the stream until it ends or `stop` turns true.
async fn hold(mut sock: TcpStream, mut stop: watch::Receiver<bool>, totals: Arc<Totals>) {
    let mut chunk = [0u8; 512];
    loop {
        tokio::select! {
            r = sock.read(&mut chunk) => match r {
                Ok(0) | Err(_) => {
                    if !*stop.borrow() {
                        totals.closed_early.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
                Ok(n) => {
                    totals.bytes.fetch_add(n as u64, Ordering::Relaxed);
                    if find(&chunk[..n], b": heartbeat").is_some() {
                        totals.heartbeats.fetch_add(1, Ordering::Relaxed);
                    }
                }
            },
            _ = stop.changed() => return,
        }
    }
}

async fn stopped(watch_stdin: bool) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let stdin_closed = async {
        if watch_stdin {
            let mut sink = Vec::new();
            let _ = tokio::io::stdin().read_to_end(&mut sink).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = stdin_closed => {}
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.data)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", args.data.display()));
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    assert!(!rows.is_empty(), "no rows in {}", args.data.display());
    let per_ticket = args.per_ticket.max(1);
    let host = args.addr.clone();

    let totals = Arc::new(Totals::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let permits = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let timeout = Duration::from_secs(args.timeout_secs);
    let started = Instant::now();
    let mut tickets = std::collections::HashSet::new();
    for i in 0..args.streams {
        let row = &rows[(i / per_ticket) % rows.len()];
        tickets.insert(row[0].to_owned());
        let request = format!(
            "GET /api/conversations/widget/stream/{}?distinct_id={}&token={}&after={} HTTP/1.1\r\n\
             Host: {host}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\
             Origin: https://shop.bench.test\r\n\r\n",
            row[0],
            q(row[1]),
            q(row[2]),
            q(row[3]),
        );
        let (addr, permits, done, stop, totals) = (
            args.addr.clone(),
            Arc::clone(&permits),
            done_tx.clone(),
            stop_rx.clone(),
            Arc::clone(&totals),
        );
        tokio::spawn(async move {
            let permit = permits.acquire_owned().await.expect("semaphore");
            let opened = match tokio::time::timeout(timeout, open(&addr, &request)).await {
                Ok(r) => r,
                Err(_) => Err(format!("no first event within {}s", timeout.as_secs())),
            };
            drop(permit);
            match opened {
                Ok((sock, read)) => {
                    totals.bytes.fetch_add(read as u64, Ordering::Relaxed);
                    let _ = done.send(Ok(()));
                    hold(sock, stop, totals).await;
                }
                Err(e) => {
                    let _ = done.send(Err(e));
                }
            }
        });
    }
    drop(done_tx);

    let (mut open_n, mut failed, mut first_error) = (0usize, 0usize, String::new());
    for _ in 0..args.streams {
        match done_rx.recv().await {
            Some(Ok(())) => open_n += 1,
            Some(Err(e)) => {
                failed += 1;
                if first_error.is_empty() {
                    first_error = e;
                }
            }
            None => break,
        }
    }
    println!(
        "BENCH_SSE open={open_n} failed={failed} tickets={} per_ticket={per_ticket} secs={:.1} first_error=\"{}\"",
        tickets.len(),
        started.elapsed().as_secs_f64(),
        first_error.replace(['"', '\n', '\r'], " "),
    );
    let _ = std::io::stdout().flush();

    stopped(args.stdin).await;
    let closed_early = totals.closed_early.load(Ordering::Relaxed);
    let _ = stop_tx.send(true);
    println!(
        "BENCH_SSE_DONE held={} closed_early={closed_early} bytes={} heartbeats={}",
        open_n as u64 - closed_early.min(open_n as u64),
        totals.bytes.load(Ordering::Relaxed),
        totals.heartbeats.load(Ordering::Relaxed),
    );
    let _ = std::io::stdout().flush();
    std::process::exit(if failed > 0 || closed_early > 0 { 1 } else { 0 });
}
