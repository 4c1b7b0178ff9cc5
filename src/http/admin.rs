//! Administration (bearer `ADMIN_TOKEN`): creating teams.

use super::errors::{ApiError, BadRequest, PayloadTooLarge, Unauthorized, Unavailable};
use super::extract::{json_object, require_admin};
use super::openapi as api;
use super::wire::{Created, IdentityVerification, RateLimits, SuspicionSettings};
use super::{AppState, Endpoint};
use crate::teams::{self, NewTeam};
use actix_web::http::Method;
use actix_web::{web, HttpRequest};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

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
        (status = 201, description = "The team, with its secret API key", body = CreatedTeam),
        BadRequest,
        Unauthorized,
        PayloadTooLarge,
        Unavailable,
    ),
    security(("admin_token" = []))
)]
async fn create_team(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<Created<CreatedTeam>, ApiError> {
    require_admin(&req, &state)?;
    let body = json_object(&req, payload).await?;
    let new = NewTeam::parse(&body)?;
    let created = teams::create(&state.store, new).await?;
    tracing::info!(team_id = %created.id, "team created");
    Ok(Created(created.into()))
}

/// A created team, with its secret API key (shown only here).
#[derive(Serialize, ToSchema)]
pub struct CreatedTeam {
    /// Team id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Widget token.
    pub public_token: String,
    /// Operator key.
    #[schema(required = true)]
    pub secret_api_key: Option<String>,
    /// Identity verification secret.
    pub identity_secret: String,
    /// Widget API switch.
    pub conversations_enabled: bool,
    /// Allowed embedding hosts.
    pub allowed_widget_domains: Vec<String>,
    /// Every budget.
    pub rate_limits: RateLimits,
    /// Identity verification mode.
    pub identity_verification: IdentityVerification,
    /// Spam-defence settings.
    pub suspicion: SuspicionSettings,
}

impl From<teams::CreatedTeam> for CreatedTeam {
    /// Every field (destructured, so a new one does not compile until it is shown here).
    fn from(t: teams::CreatedTeam) -> Self {
        let teams::CreatedTeam {
            id,
            name,
            public_token,
            secret_api_key,
            identity_secret,
            conversations_enabled,
            allowed_widget_domains,
            rate_limits,
            identity_verification,
            suspicion,
        } = t;
        Self {
            id,
            name,
            public_token,
            secret_api_key,
            identity_secret,
            conversations_enabled,
            allowed_widget_domains,
            rate_limits: rate_limits.into(),
            identity_verification: identity_verification.into(),
            suspicion: suspicion.into(),
        }
    }
}
