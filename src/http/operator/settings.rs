//! The operator API's team settings: reading and changing them, and rotating the public
//! token and the identity secret (each takes effect on every node at once: the team cache
//! is dropped and, in a cluster, the change feed tells the others).

use crate::http::errors::{ApiError, NotFound, OperatorRefusals, PayloadTooLarge};
use crate::http::extract::{json_object, operator_team};
use crate::http::openapi as api;
use crate::http::wire::Settings;
use crate::http::AppState;
use crate::teams::SettingsPatch;
use actix_web::{web, HttpRequest};
use serde::Serialize;
use utoipa::ToSchema;

/// `GET /api/conversations/settings`.
#[utoipa::path(
    get,
    path = "/api/conversations/settings",
    tag = "operator",
    responses(
        (status = 200, description = "The team's settings", body = Settings),
        OperatorRefusals,
    ),
    security(("operator_key" = []))
)]
pub(in crate::http) async fn get_settings(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<web::Json<Settings>, ApiError> {
    let team = operator_team(&req, &state).await?;
    Ok(web::Json(Settings::from(&*team)))
}

/// `PATCH /api/conversations/settings`: takes effect on the next request (cache dropped).
#[utoipa::path(
    patch,
    path = "/api/conversations/settings",
    tag = "operator",
    request_body(content = api::SettingsPatch, content_type = "application/json"),
    responses(
        (status = 200, description = "The updated settings", body = Settings),
        OperatorRefusals,
        NotFound,
        PayloadTooLarge,
    ),
    security(("operator_key" = []))
)]
pub(in crate::http) async fn patch_settings(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<web::Json<Settings>, ApiError> {
    let team = operator_team(&req, &state).await?;
    let body = json_object(&req, payload).await?;
    let patch = SettingsPatch::parse(&team, &body)?;
    let updated = state
        .store
        .update_settings(team.id, &patch)
        .await?
        .ok_or(ApiError::NotFound)?;
    state.teams.invalidate(team.id);
    Ok(web::Json(Settings::from(&updated)))
}

/// `POST /api/conversations/settings/rotate_public_token`: the old token stops working at once.
#[utoipa::path(
    post,
    path = "/api/conversations/settings/rotate_public_token",
    tag = "operator",
    responses(
        (status = 200, description = "The new token", body = PublicTokenRotated),
        OperatorRefusals,
    ),
    security(("operator_key" = []))
)]
pub(in crate::http) async fn rotate_public_token(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<web::Json<PublicTokenRotated>, ApiError> {
    let team = operator_team(&req, &state).await?;
    let token = crate::teams::new_public_token();
    state.store.set_public_token(team.id, &token).await?;
    state.teams.invalidate(team.id);
    Ok(web::Json(PublicTokenRotated {
        public_token: token,
    }))
}

/// The new widget token.
#[derive(Serialize, ToSchema)]
pub struct PublicTokenRotated {
    /// The old one stops working at once.
    pub public_token: String,
}

/// `POST /api/conversations/settings/rotate_identity_secret`.
#[utoipa::path(
    post,
    path = "/api/conversations/settings/rotate_identity_secret",
    tag = "operator",
    responses(
        (status = 200, description = "The new secret", body = IdentitySecretRotated),
        OperatorRefusals,
    ),
    security(("operator_key" = []))
)]
pub(in crate::http) async fn rotate_identity_secret(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<web::Json<IdentitySecretRotated>, ApiError> {
    let team = operator_team(&req, &state).await?;
    let secret = crate::teams::new_identity_secret();
    state.store.set_identity_secret(team.id, &secret).await?;
    state.teams.invalidate(team.id);
    Ok(web::Json(IdentitySecretRotated {
        identity_secret: secret,
    }))
}

/// The new identity secret.
#[derive(Serialize, ToSchema)]
pub struct IdentitySecretRotated {
    /// The new HMAC key.
    pub identity_secret: String,
}
