//! Bench-only load client for `scripts/bench.sh --instructions`: a fixed number of requests,
//! not a duration, so that instruction counts per request (callgrind) do not depend on how
//! fast the machine is.
//!
//! ```text
//! reqload ADDR MODE DATA WARMUP COUNT CONNS [BETWEEN]
//! ```
//!
//! - `ADDR`: `127.0.0.1:PORT` of colloquy or of the hello-world floor;
//! - `MODE`: `poll` (`GET …/widget/messages/{id}?distinct_id=…&after=<tail>`, nothing new) or
//!   `post` (`POST …/widget/message`, a follow-up on the row's ticket), the requests of
//!   `bench/lua/messages.lua` and `bench/lua/post.lua`;
//! - `DATA`: rows as the wrk scripts read them (`id TAB distinct_id TAB token TAB tail TAB mid`);
//! - `WARMUP` requests, then the shell command `BETWEEN` runs (e.g. `callgrind_control -z PID`,
//!   which zeroes the counters), then `COUNT` requests on the same connections;
//! - `CONNS` keep-alive connections, one thread each, one request in flight on each; row `i` of
//!   a connection's sequence is row `conn + i × CONNS` (cycling), so every run sends the same
//!   requests in the same order.
//!
//! Every request is formatted before the first is sent. Exits non-zero if any answer is not
//! 2xx; prints `REQLOAD requests=… non2xx=… seconds=…` for the measured phase.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{exit, Command};
use std::sync::{Arc, Barrier};
use std::time::Instant;

struct Row {
    id: String,
    did: String,
    token: String,
    tail: String,
}

/// Percent-encoding of query values, as `common.q` does in the wrk scripts.
fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn request(mode: &str, host: &str, r: &Row, seq: usize, conn: usize) -> Vec<u8> {
    match mode {
        "poll" => format!(
            "GET /api/conversations/widget/messages/{}?distinct_id={}&after={} HTTP/1.1\r\n\
             Host: {host}\r\nX-Conversations-Token: {}\r\n\r\n",
            r.id,
            q(&r.did),
            q(&r.tail),
            r.token
        )
        .into_bytes(),
        _ => {
            let body = format!(
                "{{\"distinct_id\":\"{}\",\"ticket_id\":\"{}\",\"message\":\"Any news on my order? \
                 It was due on Monday, tracking says it is still in the warehouse ({}/{}).\",\"_hp\":\"\"}}",
                r.did,
                r.id,
                conn + 1,
                seq
            );
            format!(
                "POST /api/conversations/widget/message HTTP/1.1\r\nHost: {host}\r\n\
                 Content-Type: application/json\r\nX-Conversations-Token: {}\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                r.token,
                body.len()
            )
            .into_bytes()
        }
    }
}

/// Reads one HTTP/1.1 answer (Content-Length or chunked body); returns its status.
fn read_answer(rd: &mut BufReader<TcpStream>) -> std::io::Result<u16> {
    let mut line = String::new();
    rd.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let (mut len, mut chunked) = (0usize, false);
    loop {
        line.clear();
        rd.read_line(&mut line)?;
        let h = line.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            } else if k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked") {
                chunked = true;
            }
        }
    }
    if chunked {
        loop {
            line.clear();
            rd.read_line(&mut line)?;
            let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(std::io::Error::other)?;
            let mut skip = vec![0; n + 2];
            rd.read_exact(&mut skip)?;
            if n == 0 {
                break;
            }
        }
    } else {
        let mut body = vec![0; len];
        rd.read_exact(&mut body)?;
    }
    Ok(status)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 7 {
        eprintln!("usage: reqload ADDR poll|post DATA WARMUP COUNT CONNS [BETWEEN]");
        exit(2);
    }
    let (addr, mode, data) = (args[1].clone(), args[2].clone(), &args[3]);
    let num = |i: usize| -> usize {
        args[i].parse().unwrap_or_else(|_| {
            eprintln!("reqload: {} is not a number", args[i]);
            exit(2)
        })
    };
    let (warmup, count, conns) = (num(4), num(5), num(6).max(1));
    let between = args.get(7).cloned();
    let rows: Vec<Row> = std::fs::read_to_string(data)
        .unwrap_or_else(|e| {
            eprintln!("reqload: {data}: {e}");
            exit(2)
        })
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() >= 4).then(|| Row {
                id: f[0].into(),
                did: f[1].into(),
                token: f[2].into(),
                tail: f[3].into(),
            })
        })
        .collect();
    if rows.is_empty() || (mode != "poll" && mode != "post") {
        eprintln!("reqload: no rows in {data}, or mode {mode:?} is neither poll nor post");
        exit(2);
    }
    let rows = Arc::new(rows);
    let barrier = Arc::new(Barrier::new(conns + 1));
    let mut threads = Vec::new();
    for c in 0..conns {
        let (rows, barrier, addr, mode) =
            (rows.clone(), barrier.clone(), addr.clone(), mode.clone());
        // this connection's share of each phase (the first ones take the remainder)
        let share = |n: usize| n / conns + usize::from(c < n % conns);
        let (w, m) = (share(warmup), share(count));
        threads.push(std::thread::spawn(move || -> (usize, usize) {
            let reqs: Vec<Vec<u8>> = (0..w + m)
                .map(|i| request(&mode, &addr, &rows[(c + i * conns) % rows.len()], i, c))
                .collect();
            let stream = TcpStream::connect(&addr).unwrap_or_else(|e| {
                eprintln!("reqload: connect {addr}: {e}");
                exit(1)
            });
            stream.set_nodelay(true).ok();
            let mut wr = stream.try_clone().expect("clone the socket");
            let mut rd = BufReader::new(stream);
            let mut bad = [0usize; 2];
            for (i, req) in reqs.iter().enumerate() {
                if i == w {
                    barrier.wait(); // warm-up done
                    barrier.wait(); // counters zeroed
                }
                let status = wr
                    .write_all(req)
                    .and_then(|()| read_answer(&mut rd))
                    .unwrap_or_else(|e| {
                        eprintln!("reqload: request {i} on connection {c}: {e}");
                        exit(1)
                    });
                if !(200..300).contains(&status) {
                    if bad[usize::from(i >= w)] == 0 {
                        eprintln!("reqload: answer {status} to request {i} on connection {c}");
                    }
                    bad[usize::from(i >= w)] += 1;
                }
            }
            if w == reqs.len() {
                barrier.wait();
                barrier.wait();
            }
            (bad[0], bad[1])
        }));
    }
    barrier.wait();
    if let Some(cmd) = between {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("reqload: `{cmd}` failed");
            exit(1);
        }
    }
    let t0 = Instant::now();
    barrier.wait();
    let (mut bad_warm, mut bad) = (0, 0);
    for t in threads {
        let (a, b) = t.join().expect("a connection thread panicked");
        bad_warm += a;
        bad += b;
    }
    println!(
        "REQLOAD requests={count} non2xx={bad} warmup_non2xx={bad_warm} seconds={:.3}",
        t0.elapsed().as_secs_f64()
    );
    if bad + bad_warm > 0 {
        exit(1);
    }
}
