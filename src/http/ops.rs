//! Operations: liveness, readiness and a look inside the actors.
//!
//! Longer than 500 lines for a reason: most of it is the typed answer of `/api/ops/actors`
//! (one documented struct per counter group, from which the OpenAPI document is derived) and
//! its conversions from the actors' counters, plus their tests; the handlers are short.

use super::errors::{ApiError, FailureCause, Unauthorized, Unavailable};
use super::extract::require_admin;
use super::{AppState, Endpoint};
use crate::store::GroupCommitStats;
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use colloquy_actors::rate_limiter::BudgetsStatus;
use colloquy_actors::stats::ActorStatsSnapshot;
use colloquy_actors::suspicion::SharingStatus;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;
use utoipa::ToSchema;
use uuid::Uuid;

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
                return Err(ApiError::Unavailable(
                    "this node has not heard its change feed catch up (read-your-writes)".into(),
                )
                .into());
            }
        }
        next.call(req).await
    };
    match tokio::time::timeout(REQUEST_DEADLINE, work).await {
        Ok(res) => Ok(res?.map_into_left_body()),
        Err(_) => {
            let late = ApiError::Unavailable(format!(
                "no answer within the request deadline ({} ms)",
                REQUEST_DEADLINE.as_millis()
            ));
            let res = actix_web::ResponseError::error_response(&late);
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
        // access lines are debug (`RUST_LOG=debug` shows them). A failure is logged here and
        // only here, once, with its route and the cause chain the error carried.
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        let cause = res.response().extensions().get::<FailureCause>().cloned();
        let code = status.as_u16();
        match cause {
            _ if status == actix_web::http::StatusCode::INTERNAL_SERVER_ERROR => {
                let cause = cause.map_or_else(|| "unknown".to_owned(), |c| c.0);
                tracing::error!(route = %route, status = code, latency_ms, %cause, "internal error");
            }
            Some(FailureCause(cause)) => {
                tracing::warn!(route = %route, status = code, latency_ms, %cause, "request failed");
            }
            None => {
                tracing::debug!(route = %route, status = code, latency_ms, "request finished");
            }
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
        Unauthorized
    ),
    security(("admin_token" = []))
)]
async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let m = &state.metrics;
    m.set_actor("rate_limiter", &state.limiters.stats());
    m.set_budgets(&state.limiters.budgets());
    m.set_actor("ticket", &state.tickets.stats());
    m.set_actor("suspicion_detector", &state.suspicion.stats());
    m.set_actor("mailer", &state.mailer.stats());
    m.set_pool(state.store.pool().status(), state.store.read_connections());
    let (flags, blocks) = state.suspicion.verdicts();
    m.set_suspicion(flags, blocks);
    m.set_suspicion_sharing(&state.suspicion.sharing());
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
        (status = 200, description = "The process is up", body = Health)
    )
)]
async fn healthz() -> web::Json<Health> {
    web::Json(Health { status: "ok" })
}

/// `{"status": "ok"}` / `{"status": "ready"}`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: &'static str,
}

/// The database answers within a second.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    responses(
        (status = 200, description = "The database answers", body = Health),
        Unavailable
    )
)]
async fn readyz(state: web::Data<AppState>) -> Result<web::Json<Health>, ApiError> {
    match tokio::time::timeout(Duration::from_secs(1), state.store.ping()).await {
        Ok(Ok(())) => Ok(web::Json(Health { status: "ready" })),
        Ok(Err(e)) => Err(ApiError::Unavailable(format!("readiness ping: {e}"))),
        Err(_) => Err(ApiError::Unavailable(
            "readiness ping: no answer within 1 s".into(),
        )),
    }
}

/// Counters of every actor kind (admin token).
#[utoipa::path(
    get,
    path = "/api/ops/actors",
    tag = "ops",
    responses(
        (status = 200, description = "Counters of every actor kind", body = Actors),
        Unauthorized
    ),
    security(("admin_token" = []))
)]
async fn actors(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<web::Json<Actors>, ApiError> {
    require_admin(&req, &state)?;
    let pool = state.store.pool().status();
    let (requests, server_errors) = state.metrics.requests_answered();
    Ok(web::Json(Actors {
        rate_limiters: state.limiters.stats().into(),
        rate_limit_budgets: state.limiters.budgets().into(),
        rate_limiter_keys_per_team: state
            .limiters
            .keys_per_team()
            .into_iter()
            .take(100)
            .map(|(team_id, keys)| TeamKeys { team_id, keys })
            .collect(),
        ticket_actors: state.tickets.stats().into(),
        suspicion_detector: state.suspicion.stats().into(),
        suspicion_sharing: state.suspicion.sharing().into(),
        mailer: state.mailer.stats().into(),
        database_pool: PoolCounters {
            size: pool.size,
            max_size: pool.max_size,
            available: pool.available,
            waiting: pool.waiting,
        },
        ticket_supervisor: state.tickets.supervisor_stats().into(),
        group_committer: state.store.group_commit_stats().into(),
        sse_streams_open: state.metrics.streams_open.get(),
        rate_limited: state.metrics.rate_limited_by_tier(),
        http: HttpTotals {
            requests,
            server_errors,
        },
    }))
}

/// `GET /api/ops/actors`.
#[derive(Serialize, ToSchema)]
pub struct Actors {
    /// Rate limiters: one actor per active team on this node.
    pub rate_limiters: ActorCounters,
    /// Where rate budgets are decided: this node alone, the cluster's Redis, or this node's
    /// share while Redis is away.
    pub rate_limit_budgets: RateLimitBudgets,
    /// Rate-limit keys held per team, largest first (at most 100 teams).
    pub rate_limiter_keys_per_team: Vec<TeamKeys>,
    /// Ticket actors.
    pub ticket_actors: ActorCounters,
    /// The suspicion detector.
    pub suspicion_detector: ActorCounters,
    /// Whether the detector's windows are shared with the other nodes (Redis).
    pub suspicion_sharing: SuspicionSharing,
    /// The restore queue and mail delivery: `queued` restore requests and wake-ups waiting,
    /// `handled` looked up or delivered, `dropped` refused by a full queue, `errors` failed
    /// lookups or deliveries.
    pub mailer: ActorCounters,
    /// The database pool.
    pub database_pool: PoolCounters,
    /// The ticket supervisor itself: `handled` counts spawns, sweeps and drains.
    pub ticket_supervisor: ActorCounters,
    /// The group committer of message appends.
    pub group_committer: GroupCommitCounters,
    /// Server-Sent Event streams open now (visitors' and operators').
    pub sse_streams_open: i64,
    /// Rate-limit refusals since start, by tier (every tier, zeros included).
    pub rate_limited: BTreeMap<String, u64>,
    /// HTTP requests answered since start.
    pub http: HttpTotals,
}

/// How many rate-limit keys one team holds.
#[derive(Serialize, ToSchema)]
pub struct TeamKeys {
    /// The team.
    pub team_id: Uuid,
    /// Keys held.
    pub keys: usize,
}

/// Counters of one actor kind.
#[derive(Serialize, ToSchema)]
pub struct ActorCounters {
    /// Running now.
    pub alive: i64,
    /// Waiting in queues now.
    pub queued: i64,
    /// The most that ever waited at once.
    pub peak_queued: i64,
    /// Handled since start.
    pub handled: u64,
    /// Handled with an error.
    pub errors: u64,
    /// Restarts after a fault.
    pub restarts: u64,
    /// Idle stops.
    pub evictions: u64,
    /// Refused or dropped because a queue was full.
    pub dropped: u64,
}

/// Where rate budgets are decided (`colloquy_actors::rate_limiter::BudgetsStatus`).
#[derive(Serialize, ToSchema)]
pub struct RateLimitBudgets {
    /// `local` (no `REDIS_URL`), `cluster` (Redis decides) or `fallback` (Redis unreachable:
    /// each node allows limit / `live_nodes`).
    pub mode: &'static str,
    /// Nodes sharing the budgets, this one included.
    pub live_nodes: usize,
    /// Times Redis was given up for local budgets since start.
    pub fallbacks: u64,
    /// Checks decided locally while Redis was unreachable.
    pub fallback_checks: u64,
    /// Calls made to Redis for budgets since start.
    pub store_calls: u64,
}

impl From<BudgetsStatus> for RateLimitBudgets {
    fn from(b: BudgetsStatus) -> Self {
        Self {
            mode: b.mode,
            live_nodes: b.live_nodes,
            fallbacks: b.fallbacks,
            fallback_checks: b.fallback_checks,
            store_calls: b.store_calls,
        }
    }
}

/// Whether the suspicion detector's windows are shared (`colloquy_actors::suspicion::SharingStatus`).
#[derive(Serialize, ToSchema)]
pub struct SuspicionSharing {
    /// `off` (no `REDIS_URL`), `shared`, or `alone` (Redis failed; this node scores on its
    /// own windows until a probe reaches it again).
    pub mode: &'static str,
    /// Round trips to Redis that failed since start.
    pub failures: u64,
    /// Observations scored by this node alone since start although Redis is configured.
    pub scored_alone: u64,
}

impl From<SharingStatus> for SuspicionSharing {
    fn from(s: SharingStatus) -> Self {
        Self {
            mode: s.mode,
            failures: s.failures,
            scored_alone: s.scored_alone,
        }
    }
}

impl From<ActorStatsSnapshot> for ActorCounters {
    /// Every counter (destructured, so a new one does not compile until it is shown here).
    fn from(s: ActorStatsSnapshot) -> Self {
        let ActorStatsSnapshot {
            alive,
            queued,
            peak_queued,
            handled,
            errors,
            restarts,
            evictions,
            dropped,
        } = s;
        Self {
            alive,
            queued,
            peak_queued,
            handled,
            errors,
            restarts,
            evictions,
            dropped,
        }
    }
}

/// The database pool.
#[derive(Serialize, ToSchema)]
pub struct PoolCounters {
    /// Open connections.
    pub size: usize,
    /// Most connections.
    pub max_size: usize,
    /// Idle connections.
    pub available: usize,
    /// Requests waiting for a connection.
    pub waiting: usize,
}

/// The group committer: appends of many tickets share one transaction.
#[derive(Serialize, ToSchema)]
pub struct GroupCommitCounters {
    /// Whether the committer runs.
    pub running: bool,
    /// Appends waiting for a transaction now.
    pub queued: i64,
    /// The most that may wait; beyond it a POST is shed with `503 overloaded`.
    pub capacity: i64,
    /// Transactions running now.
    pub in_flight: i64,
    /// The most that run at once.
    pub max_in_flight: i64,
    /// Transactions since start.
    pub transactions: u64,
    /// Transactions that failed as a whole.
    pub failed: u64,
    /// Appends shed because the queue was full.
    pub dropped: u64,
}

impl From<GroupCommitStats> for GroupCommitCounters {
    /// Every counter (destructured, so a new one does not compile until it is shown here).
    fn from(s: GroupCommitStats) -> Self {
        let GroupCommitStats {
            running,
            queued,
            capacity,
            in_flight,
            max_in_flight,
            transactions,
            failed,
            dropped,
        } = s;
        Self {
            running,
            queued,
            capacity,
            in_flight,
            max_in_flight,
            transactions,
            failed,
            dropped,
        }
    }
}

/// Requests answered since start.
#[derive(Serialize, ToSchema)]
pub struct HttpTotals {
    /// Every answer.
    pub requests: u64,
    /// Answers with a 5xx status.
    pub server_errors: u64,
}

/// What this node believes about the cluster (admin token): the other live nodes, the change
/// feed, and whether reads are answered from memory.
#[utoipa::path(
    get,
    path = "/api/ops/cluster",
    tag = "ops",
    responses(
        (status = 200, description = "This node's view of the cluster", body = crate::cluster::ClusterStatus),
        Unauthorized
    ),
    security(("admin_token" = []))
)]
async fn cluster(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<web::Json<crate::cluster::ClusterStatus>, ApiError> {
    require_admin(&req, &state)?;
    Ok(web::Json(state.cluster.status()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{test, App};
    use std::sync::{Arc, Mutex};

    /// Every log line written while `f` runs on this thread.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    async fn logged_answer(error: fn() -> ApiError) -> (u16, String) {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let app = test::init_service(
            App::new()
                .wrap(actix_web::middleware::from_fn(observe_request))
                .route(
                    "/fails",
                    web::get().to(move || async move { Err::<HttpResponse, _>(error()) }),
                ),
        )
        .await;
        let res =
            test::call_service(&app, test::TestRequest::get().uri("/fails").to_request()).await;
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        (res.status().as_u16(), text)
    }

    #[actix_web::test]
    async fn an_internal_error_is_logged_once_with_its_cause_and_route() {
        let (status, log) =
            logged_answer(|| ApiError::Internal("append: db error: ERROR: boom".into())).await;
        assert_eq!(status, 500);
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 1, "logged more or less than once:\n{log}");
        assert!(lines[0].contains("ERROR"), "{log}");
        assert!(lines[0].contains("internal error"), "{log}");
        assert!(
            lines[0].contains("append: db error: ERROR: boom"),
            "cause lost: {log}"
        );
        assert!(lines[0].contains("route=/fails"), "{log}");
    }

    #[actix_web::test]
    async fn an_unreachable_database_is_logged_once_with_its_cause() {
        let (status, log) = logged_answer(|| {
            ApiError::Unavailable("error connecting to server: Connection refused".into())
        })
        .await;
        assert_eq!(status, 503);
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 1, "logged more or less than once:\n{log}");
        assert!(lines[0].contains("WARN"), "{log}");
        assert!(lines[0].contains("Connection refused"), "cause lost: {log}");
    }

    #[actix_web::test]
    async fn shed_load_and_refusals_are_not_logged_at_info() {
        for error in [|| ApiError::Overloaded, || ApiError::NotFound] {
            let (_, log) = logged_answer(error).await;
            assert!(log.is_empty(), "{log}");
        }
    }
}
