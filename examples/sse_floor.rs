//! Bench-only floor for open SSE streams: actix-web with the same features, allocator and
//! release profile as colloquy, answering every request with a `text/event-stream` that sends
//! one event and then stays open. What one open stream costs here is actix-web's own share.

use actix_web::web::Bytes;
use actix_web::{web, App, HttpResponse, HttpServer};

async fn stream() -> HttpResponse {
    let first = futures_util::stream::once(async {
        Ok::<_, actix_web::Error>(Bytes::from_static(
            b"retry: 2000\n\nevent: status\ndata: {\"ticket_status\":\"open\"}\n\n",
        ))
    });
    HttpResponse::Ok()
        .insert_header(("content-type", "text/event-stream"))
        .streaming(futures_util::StreamExt::chain(
            first,
            futures_util::stream::pending(),
        ))
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:8090".to_owned());
    let workers = std::env::var("WORKERS")
        .ok()
        .and_then(|w| w.parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let server = HttpServer::new(|| App::new().default_service(web::to(stream)))
        .workers(workers)
        // Its streams never end: stop at once instead of waiting for them.
        .shutdown_timeout(0)
        .bind(&bind)?;
    for addr in server.addrs() {
        println!("listening on http://{addr}");
    }
    server.run().await
}
