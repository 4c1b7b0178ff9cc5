//! Operations: liveness, readiness and a look inside the actors.

use super::errors::ApiError;
use super::extract::require_admin;
use super::openapi as api;
use super::{AppState, Endpoint};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;
use std::time::Duration;

/// The ops routes (registered at the root by [`super::routes`]).
pub fn endpoints() -> (&'static str, Vec<Endpoint>) {
    (
        "",
        vec![
            Endpoint::new(Method::GET, "/healthz", healthz),
            Endpoint::new(Method::GET, "/readyz", readyz),
            Endpoint::new(Method::GET, "/api/ops/actors", actors),
            Endpoint::new(Method::GET, "/api/ops/cluster", cluster),
            Endpoint::new(Method::GET, "/metrics", metrics),
        ],
    )
}

/// The longest any request may take before it is answered `503 unavailable`.
pub const REQUEST_DEADLINE: std::time::Duration = std::time::Duration::from_millis(1800);

/// The contract's promise of an answer within 2 s, also when the database hangs rather than
/// fails (a frozen server, a partition), where no driver timeout fires. Wrapped around each
/// route (after routing: the request can then be kept for the answer). What runs past the
/// deadline is dropped; a write it was waiting for may still commit, which a retry with the
/// same `client_message_id` finds.
pub async fn deadline(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let http_req = req.request().clone();
    // In a cluster, a request first waits until this node has heard every change committed
    // before it arrived (read-your-writes through a round-robin balancer); the probes and
    // metrics are about this node and do not wait.
    let state = req
        .app_data::<web::Data<AppState>>()
        .filter(|s| s.cluster.has_feed())
        .filter(|_| !matches!(req.path(), "/healthz" | "/readyz" | "/metrics"))
        .cloned();
    let work = async move {
        if let Some(state) = state {
            if !state.cluster.catch_up().await {
                return Err(ApiError::Unavailable.into());
            }
        }
        next.call(req).await
    };
    match tokio::time::timeout(REQUEST_DEADLINE, work).await {
        Ok(res) => Ok(res?.map_into_left_body()),
        Err(_) => {
            let res = actix_web::ResponseError::error_response(&ApiError::Unavailable);
            Ok(actix_web::dev::ServiceResponse::new(http_req, res).map_into_right_body())
        }
    }
}

/// Wraps every request: a tracing span with a fresh request id (so every log line of the
/// request carries it; the id is also returned as `X-Request-Id`), one log line at the end
/// with the route pattern — never the raw path or query, which hold visitor ids and tokens —
/// and the Prometheus counters and latency histogram by route, method and status.
pub async fn observe_request(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    use tracing::Instrument;
    let started = std::time::Instant::now();
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    let method = method_label(req.method());
    let draining = req
        .app_data::<web::Data<AppState>>()
        .is_some_and(|s| s.draining.load(std::sync::atomic::Ordering::Relaxed));
    if draining {
        let mut res = actix_web::ResponseError::error_response(&ApiError::Overloaded);
        res.headers_mut().insert(
            actix_web::http::header::CONNECTION,
            actix_web::http::header::HeaderValue::from_static("close"),
        );
        return Ok(req.into_response(res).map_into_right_body());
    }
    // Formatted once, for the span and the header.
    let mut id_buf = uuid::Uuid::encode_buffer();
    let request_id: &str = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut id_buf);
    // Handlers record `team_id` into this span (`Span::current()`): one span per request.
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %method,
        team_id = tracing::field::Empty
    );
    // The answer's line is logged inside the instrumented future, so the span is current
    // there without a second handle on it (each handle costs a clone and a close).
    let (mut res, route, elapsed, status) = async move {
        let res = next.call(req).await?.map_into_left_body();
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        let elapsed = started.elapsed();
        let status = res.status();
        // One line per request costs a fifth of a poll's CPU (measured, BENCHMARKS.md):
        // access lines are debug (`RUST_LOG=debug` shows them), server errors always show.
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        if status == actix_web::http::StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(route = %route, status = status.as_u16(), latency_ms, "request failed");
        } else {
            tracing::debug!(route = %route, status = status.as_u16(), latency_ms, "request finished");
        }
        Ok::<_, actix_web::Error>((res, route, elapsed, status))
    }
    .instrument(span)
    .await?;
    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(request_id) {
        res.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static("x-request-id"),
            v,
        );
    }
    if let Some(m) = metrics {
        m.observe_request(&route, method, status, elapsed.as_secs_f64());
    }
    Ok(res)
}

/// The method as a metric label and log field: the standard methods by name, anything else
/// `OTHER`, so a stranger inventing methods (`ZZZ1 /`, `ZZZ2 /`, …) cannot add series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// `GET /metrics`: Prometheus text format (admin token: the series name routes, load and
/// refusals, which a stranger has no business reading).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 401, description = "invalid_token: missing or unknown token or key", body = api::ErrorBody)
    ),
    security(("admin_token" = []))
)]
async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let m = &state.metrics;
    m.set_actor("rate_limiter", &state.limiters.stats());
    m.set_actor("ticket", &state.tickets.stats());
    m.set_actor("suspicion_detector", &state.suspicion.stats());
    m.set_actor("mailer", &state.mailer.stats());
    m.set_pool(state.store.pool().status(), state.store.read_connections());
    let (flags, blocks) = state.suspicion.verdicts();
    m.set_suspicion(flags, blocks);
    m.set_actor("ticket_supervisor", &state.tickets.supervisor_stats());
    m.set_group_commit(&state.store.group_commit_stats());
    m.set_cluster(&state.cluster.status());
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(m.render()))
}

/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "ops",
    responses(
        (status = 200, description = "The process is up", body = api::Health)
    )
)]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// The database answers within a second.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    responses(
        (status = 200, description = "The database answers", body = api::Health),
        (status = 503, description = "unavailable (database unreachable) or overloaded (load shed); Retry-After header", body = api::ErrorBody)
    )
)]
async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match tokio::time::timeout(Duration::from_secs(1), state.store.ping()).await {
        Ok(Ok(())) => Ok(HttpResponse::Ok().json(json!({"status": "ready"}))),
        _ => Err(ApiError::Unavailable),
    }
}

/// Counters of every actor kind (admin token).
#[utoipa::path(
    get,
    path = "/api/ops/actors",
    tag = "ops",
    responses(
        (status = 200, description = "Counters of every actor kind", body = api::Actors),
        (status = 401, description = "invalid_token: missing or unknown token or key", body = api::ErrorBody)
    ),
    security(("admin_token" = []))
)]
async fn actors(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let pool = state.store.pool().status();
    let (requests, server_errors) = state.metrics.requests_answered();
    Ok(HttpResponse::Ok().json(json!({
        "rate_limiters": state.limiters.stats(),
        "rate_limiter_keys_per_team": state
            .limiters
            .keys_per_team()
            .into_iter()
            .take(100)
            .map(|(team, keys)| json!({"team_id": team, "keys": keys}))
            .collect::<Vec<_>>(),
        "ticket_actors": state.tickets.stats(),
        "suspicion_detector": state.suspicion.stats(),
        "mailer": state.mailer.stats(),
        "database_pool": {"size": pool.size, "max_size": pool.max_size, "available": pool.available, "waiting": pool.waiting},
        "ticket_supervisor": state.tickets.supervisor_stats(),
        "group_committer": state.store.group_commit_stats(),
        "sse_streams_open": state.metrics.streams_open.get(),
        "rate_limited": state.metrics.rate_limited_by_tier(),
        "http": {"requests": requests, "server_errors": server_errors},
    })))
}

/// What this node believes about the cluster (admin token): the other live nodes, the change
/// feed, and whether reads are answered from memory.
#[utoipa::path(
    get,
    path = "/api/ops/cluster",
    tag = "ops",
    responses(
        (status = 200, description = "This node's view of the cluster", body = crate::cluster::ClusterStatus),
        (status = 401, description = "invalid_token: missing or unknown token or key", body = api::ErrorBody)
    ),
    security(("admin_token" = []))
)]
async fn cluster(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    Ok(HttpResponse::Ok().json(state.cluster.status()))
}
