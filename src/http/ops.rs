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
        .route("/api/ops/actors", web::get().to(actors));
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
