//! `POST /api/conversations/tickets/{id}/read` (bearer team secret key): an operator read the
//! ticket, so its count of unread visitor messages (`unread_team_count` in the inbox) goes back
//! to 0 until the visitor writes again. Without it the inbox's unread counts only ever grew.

use super::errors::{ApiError, NotFound, OperatorRefusals};
use super::extract::{self, operator_team};
use super::AppState;
use actix_web::{web, HttpRequest};
use serde::Serialize;
use utoipa::ToSchema;

/// Clears the team's unread count of a ticket.
#[utoipa::path(
    post,
    path = "/api/conversations/tickets/{ticket_id}/read",
    tag = "operator",
    params(
        ("ticket_id" = Uuid, Path, description = "The ticket")
    ),
    responses(
        (status = 200, description = "The operators' unread count is 0", body = OperatorRead),
        OperatorRefusals,
        NotFound,
    ),
    security(("operator_key" = []))
)]
pub async fn mark_read(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<web::Json<OperatorRead>, ApiError> {
    let team = operator_team(&req, &state).await?;
    tracing::Span::current().record("team_id", tracing::field::display(team.id));
    let ticket_id = extract::uuid(&path, "ticket_id")?;
    if !state.store.mark_read_by_team(team.id, ticket_id).await? {
        return Err(ApiError::NotFound);
    }
    Ok(web::Json(OperatorRead {
        success: true,
        unread_team_count: 0,
    }))
}

/// `POST /api/conversations/tickets/{ticket_id}/read`.
#[derive(Serialize, ToSchema)]
pub struct OperatorRead {
    /// Always true.
    pub success: bool,
    /// Always 0: the team has read every visitor message of the ticket.
    pub unread_team_count: i32,
}
