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

/// Counts every request by route pattern (never the raw path: ids would explode the label
/// set), method and status, and times it.
pub async fn record_metrics(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    let method = req.method().as_str().to_owned();
    let res = next.call(req).await?;
    if let Some(m) = metrics {
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        m.requests
            .with_label_values(&[&route, &method, res.status().as_str()])
            .inc();
        m.latency
            .with_label_values(&[&route, &method])
            .observe(started.elapsed().as_secs_f64());
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
