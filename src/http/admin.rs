//! Administration (bearer `ADMIN_TOKEN`): creating teams.

use super::errors::ApiError;
use super::extract::{json_object, require_admin};
use super::AppState;
use crate::teams::{self, NewTeam};
use actix_web::{web, HttpRequest, HttpResponse};

/// Registers the admin routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/teams", web::post().to(create_team));
}

/// `POST /api/teams`: a team with fresh credentials; the secret key is shown only here.
#[tracing::instrument(skip_all)]
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
