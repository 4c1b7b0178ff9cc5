//! The operator API's spam tools: what the suspicion detector flagged, and the team's blocks
//! of IPs (IPv6 by their /64) and visitors, which every widget request is checked against.

use crate::http::errors::{ApiError, NotFound, OperatorRefusals, PayloadTooLarge};
use crate::http::extract::{self, json_object, operator_team, opt_str};
use crate::http::openapi as api;
use crate::http::wire::Created;
use crate::http::AppState;
use crate::store::{BlockRow, SuspiciousRow};
use actix_web::{web, HttpRequest, HttpResponse};
use colloquy_actors::domain::format_utc;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// `GET /api/conversations/suspicious?hours=24`: visitors and IPs at or above the team's
/// flag threshold, with scores, reasons and tickets.
#[utoipa::path(
    get,
    path = "/api/conversations/suspicious",
    tag = "operator",
    params(
        ("hours" = Option<i64>, Query, description = "Look-back, default 24, clamped to 1..720")
    ),
    responses(
        (status = 200, description = "Flagged visitors and IPs", body = Suspicious),
        OperatorRefusals,
    ),
    security(("operator_key" = []))
)]
pub(in crate::http) async fn suspicious(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<web::Json<Suspicious>, ApiError> {
    let team = operator_team(&req, &state).await?;
    let q = extract::query(&req)?;
    let hours = extract::clamped(&q, "hours", 24, 1, 24 * 30)? as i32;
    let threshold = i16::from(team.suspicion.flag_threshold);
    let results = state.store.suspicious(team.id, threshold, hours).await?;
    Ok(web::Json(Suspicious {
        flag_threshold: threshold,
        block_threshold: team.suspicion.block_threshold,
        results: results.into_iter().map(SuspiciousEntry::from).collect(),
    }))
}

/// `GET /api/conversations/suspicious`.
#[derive(Serialize, ToSchema)]
pub struct Suspicious {
    /// The team's flag threshold.
    pub flag_threshold: i16,
    /// The team's block threshold.
    pub block_threshold: u8,
    /// Highest score first.
    pub results: Vec<SuspiciousEntry>,
}

/// A visitor or IP flagged by the suspicion detector.
#[derive(Serialize, ToSchema)]
pub struct SuspiciousEntry {
    /// The visitor, if known.
    #[schema(required = true)]
    pub distinct_id: Option<String>,
    /// The IP, if known.
    #[schema(required = true)]
    pub ip: Option<String>,
    /// Highest score.
    pub score: i32,
    /// Rules that fired.
    pub reasons: Vec<String>,
    /// Tickets involved.
    pub ticket_ids: Vec<Uuid>,
    /// Last observation.
    #[schema(format = DateTime)]
    pub last_seen_at: String,
    /// Details.
    #[schema(required = true)]
    pub details: Option<String>,
}

impl From<SuspiciousRow> for SuspiciousEntry {
    fn from(r: SuspiciousRow) -> Self {
        Self {
            distinct_id: r.distinct_id,
            ip: r.ip.map(|ip| ip.to_string()),
            score: r.score,
            reasons: r.reasons,
            ticket_ids: r.ticket_ids,
            last_seen_at: format_utc(r.last_seen_at),
            details: r.details,
        }
    }
}

/// `GET /api/conversations/blocks`: the team's active blocks.
#[utoipa::path(
    get,
    path = "/api/conversations/blocks",
    tag = "operator",
    responses(
        (status = 200, description = "Active blocks", body = Blocks),
        OperatorRefusals,
    ),
    security(("operator_key" = []))
)]
pub(in crate::http) async fn list_blocks(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<web::Json<Blocks>, ApiError> {
    let team = operator_team(&req, &state).await?;
    let results = state.store.list_blocks(team.id).await?;
    Ok(web::Json(Blocks {
        results: results.into_iter().map(Block::from).collect(),
    }))
}

/// `GET /api/conversations/blocks`.
#[derive(Serialize, ToSchema)]
pub struct Blocks {
    /// Active blocks, newest first.
    pub results: Vec<Block>,
}

/// A block.
#[derive(Serialize, ToSchema)]
pub struct Block {
    /// Block id.
    pub id: Uuid,
    /// Blocked IP.
    #[schema(required = true)]
    pub ip: Option<String>,
    /// Blocked visitor.
    #[schema(required = true)]
    pub distinct_id: Option<String>,
    /// Why.
    pub reason: String,
    /// `operator` or `detector`.
    pub source: String,
    /// When it ends; null: never.
    #[schema(required = true, format = DateTime)]
    pub expires_at: Option<String>,
    /// Created.
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<BlockRow> for Block {
    fn from(b: BlockRow) -> Self {
        Self {
            id: b.id,
            ip: b.ip.map(|ip| ip.to_string()),
            distinct_id: b.distinct_id,
            reason: b.reason,
            source: b.source,
            expires_at: b.expires_at.map(format_utc),
            created_at: format_utc(b.created_at),
        }
    }
}

/// `POST /api/conversations/blocks` `{ip | distinct_id, reason, expires_at?}`: takes effect on
/// this node at once and on every node within 2 s.
#[utoipa::path(
    post,
    path = "/api/conversations/blocks",
    tag = "operator",
    request_body(content = api::BlockRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The block", body = Block),
        OperatorRefusals,
        PayloadTooLarge,
    ),
    security(("operator_key" = []))
)]
pub(in crate::http) async fn create_block(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<Created<Block>, ApiError> {
    let team = operator_team(&req, &state).await?;
    let body = json_object(&req, payload).await?;
    if let Some(unknown) = body
        .keys()
        .find(|k| !["ip", "distinct_id", "reason", "expires_at"].contains(&k.as_str()))
    {
        return Err(ApiError::invalid(unknown, "unknown field"));
    }
    let ip = opt_str(&body, "ip")?
        .map(|s| s.trim().parse::<std::net::IpAddr>())
        .transpose()
        .map_err(|_| ApiError::invalid("ip", "ip must be an IPv4 or IPv6 address"))?;
    let distinct_id = opt_str(&body, "distinct_id")?
        .map(str::trim)
        .filter(|d| !d.is_empty());
    if distinct_id.is_some_and(|d| d.chars().count() > 400) {
        return Err(ApiError::invalid(
            "distinct_id",
            "distinct_id must be at most 400 characters",
        ));
    }
    if ip.is_some() == distinct_id.is_some() {
        return Err(ApiError::invalid(
            "ip",
            "give exactly one of ip and distinct_id",
        ));
    }
    let reason = opt_str(&body, "reason")?.unwrap_or_default().trim();
    if reason.chars().count() > 500 {
        return Err(ApiError::invalid(
            "reason",
            "reason must be at most 500 characters",
        ));
    }
    let expires_at = opt_str(&body, "expires_at")?
        .map(|s| colloquy_actors::domain::parse_timestamp(s, "expires_at"))
        .transpose()?;
    let block = state
        .store
        .create_block(team.id, ip, distinct_id, reason, expires_at)
        .await?;
    state.blocks.refresh(&state.store).await;
    Ok(Created(block.into()))
}

/// `DELETE /api/conversations/blocks/{id}`.
#[utoipa::path(
    delete,
    path = "/api/conversations/blocks/{block_id}",
    tag = "operator",
    params(
        ("block_id" = Uuid, Path, description = "The block")
    ),
    responses(
        (status = 204, description = "Removed"),
        OperatorRefusals,
        NotFound,
    ),
    security(("operator_key" = []))
)]
pub(in crate::http) async fn delete_block(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let team = operator_team(&req, &state).await?;
    let id = extract::uuid(&path, "block_id")?;
    if !state.store.delete_block(team.id, id).await? {
        return Err(ApiError::NotFound);
    }
    state.blocks.refresh(&state.store).await;
    Ok(HttpResponse::NoContent().finish())
}
