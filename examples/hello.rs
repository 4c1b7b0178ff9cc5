//! Bench-only HTTP floor: an actix-web hello-world built with the same actix-web version,
//! features and release profile as colloquy. `scripts/bench.sh` serves it and measures it
//! with the same wrk settings as the colloquy loads.
//!
//! `BIND` (default 127.0.0.1:8089) and `WORKERS` (default: CPU cores) as for colloquy.
//! `GET /` answers a small JSON body shaped like a "nothing new" poll.

use actix_web::{web, App, HttpResponse, HttpServer};

async fn hello() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"ticket_id":"00000000-0000-0000-0000-000000000000","ticket_status":"open","messages":[],"has_more":false}"#)
}

/// The same allocator as colloquy, so the floor differs from it only in what a request does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:8089".to_owned());
    let workers = std::env::var("WORKERS")
        .ok()
        .and_then(|w| w.parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let server = HttpServer::new(|| App::new().default_service(web::to(hello)))
        .workers(workers)
        .bind(&bind)?;
    for addr in server.addrs() {
        println!("listening on http://{addr}");
    }
    server.run().await
}
