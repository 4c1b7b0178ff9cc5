//! Administration (bearer `ADMIN_TOKEN`): creating teams.

use super::errors::ApiError;
use super::extract::{json_object, require_admin};
use super::openapi as api;
use super::{AppState, Endpoint};
use crate::teams::{self, NewTeam};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};

/// The admin routes (registered at the root by [`super::routes`]).
pub fn endpoints() -> (&'static str, Vec<Endpoint>) {
    (
        "",
        vec![Endpoint::new(Method::POST, "/api/teams", create_team)],
    )
}

/// `POST /api/teams`: a team with fresh credentials; the secret key is shown only here.
#[utoipa::path(
    post,
    path = "/api/teams",
    tag = "admin",
    request_body(content = api::NewTeamRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The team, with its secret API key", body = api::CreatedTeam),
        (status = 400, description = "invalid_json or validation_error (`field` names the field)", body = api::ErrorBody),
        (status = 401, description = "invalid_token: missing or unknown token or key", body = api::ErrorBody),
        (status = 413, description = "payload_too_large: body over 64 KiB", body = api::ErrorBody),
        (status = 503, description = "unavailable (database unreachable) or overloaded (load shed); Retry-After header", body = api::ErrorBody)
    ),
    security(("admin_token" = []))
)]
async fn create_team(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let body = json_object(&req, payload).await?;
    let new = NewTeam::parse(&body)?;
    let created = teams::create(&state.store, new).await?;
    tracing::info!(team_id = %created.id, "team created");
    Ok(HttpResponse::Created().json(created))
}
