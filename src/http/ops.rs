//! Operations: liveness, readiness and a look inside the actors.

use super::errors::ApiError;
use super::extract::require_admin;
use super::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;
use std::time::Duration;

/// Registers the ops routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/api/ops/actors", web::get().to(actors))
        .route("/metrics", web::get().to(metrics));
}

/// Wraps every request: a tracing span with a fresh request id (so every log line of the
/// request carries it; the id is also returned as `X-Request-Id`), one log line at the end
/// with the route pattern — never the raw path or query, which hold visitor ids and tokens —
/// and the Prometheus counters and latency histogram by route, method and status.
pub async fn observe_request(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    use tracing::Instrument;
    let started = std::time::Instant::now();
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    let method = req.method().as_str().to_owned();
    let request_id = uuid::Uuid::new_v4();
    let span = tracing::info_span!("request", request_id = %request_id, method = %method);
    let mut res = next.call(req).instrument(span.clone()).await?;
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let elapsed = started.elapsed();
    let status = res.status();
    span.in_scope(|| {
        tracing::info!(route = %route, status = status.as_u16(), latency_ms = elapsed.as_secs_f64() * 1000.0, "request finished")
    });
    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&request_id.to_string()) {
        res.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static("x-request-id"),
            v,
        );
    }
    if let Some(m) = metrics {
        m.requests
            .with_label_values(&[&route, &method, status.as_str()])
            .inc();
        m.latency
            .with_label_values(&[&route, &method])
            .observe(elapsed.as_secs_f64());
    }
    Ok(res)
}

/// `GET /metrics`: Prometheus text format.
async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let m = &state.metrics;
    m.set_actor("rate_limiter", &state.limiters.stats());
    m.set_actor("ticket", &state.tickets.stats());
    m.set_actor("suspicion_detector", &state.suspicion.stats());
    m.set_pool(state.store.pool().status());
    let (flags, blocks) = state.suspicion.verdicts();
    m.set_suspicion(flags, blocks);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(m.render())
}

/// The process is up.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// The database answers within a second.
async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match tokio::time::timeout(Duration::from_secs(1), state.store.ping()).await {
        Ok(Ok(())) => Ok(HttpResponse::Ok().json(json!({"status": "ready"}))),
        _ => Err(ApiError::Unavailable),
    }
}

/// Counters of every actor kind (admin token).
async fn actors(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let pool = state.store.pool().status();
    Ok(HttpResponse::Ok().json(json!({
        "rate_limiters": state.limiters.stats(),
        "ticket_actors": state.tickets.stats(),
        "suspicion_detector": state.suspicion.stats(),
        "database_pool": {"size": pool.size, "max_size": pool.max_size, "available": pool.available, "waiting": pool.waiting},
    })))
}
