//! `POST /api/conversations/tickets/{id}/read` (bearer team secret key): an operator read the
//! ticket, so its count of unread visitor messages (`unread_team_count` in the inbox) goes back
//! to 0 until the visitor writes again. Without it the inbox's unread counts only ever grew.

use super::errors::ApiError;
use super::extract::{self, operator_team};
use super::openapi as api;
use super::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

/// Clears the team's unread count of a ticket.
#[utoipa::path(
    post,
    path = "/api/conversations/tickets/{ticket_id}/read",
    tag = "operator",
    params(
        ("ticket_id" = Uuid, Path, description = "The ticket")
    ),
    responses(
        (status = 200, description = "The operators' unread count is 0", body = api::OperatorRead),
        (status = 400, description = "invalid_json or validation_error (`field` names the field)", body = api::ErrorBody),
        (status = 401, description = "invalid_token: missing or unknown token or key", body = api::ErrorBody),
        (status = 404, description = "not_found: unknown ticket (or another team's)", body = api::ErrorBody),
        (status = 503, description = "unavailable (database unreachable) or overloaded (load shed); Retry-After header", body = api::ErrorBody)
    ),
    security(("operator_key" = []))
)]
pub async fn mark_read(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let team = operator_team(&req, &state).await?;
    tracing::Span::current().record("team_id", tracing::field::display(team.id));
    let ticket_id = extract::uuid(&path, "ticket_id")?;
    if !state.store.mark_read_by_team(team.id, ticket_id).await? {
        return Err(ApiError::NotFound);
    }
    Ok(HttpResponse::Ok().json(json!({"success": true, "unread_team_count": 0})))
}
