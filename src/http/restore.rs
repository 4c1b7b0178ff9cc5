//! Restore by email on the posthog-js surface: a visitor on a new device asks for a link,
//! gets a one-time token by mail, and redeeming it moves their tickets to the new session.
//! The request answers `{"ok": true}` whether or not tickets exist, and whether or not the
//! page may be mailed, so it reveals nothing: the handler checks the origin, the body's shape
//! and the rate limits, parses `request_url` into a [`RestorePage`] (a page on one of the
//! team's hosts, or nothing is mailed), and hands the rest to the mailer's bounded queue. It
//! never looks the email up itself, so a known email takes no longer than an unknown one.

use super::errors::{ApiError, ErrorBody, PayloadTooLarge, V1Refusals};
use super::extract::{self, json_object, req_str, req_text};
use super::openapi as api;
use super::visitor::admit;
use super::widget_v1::team;
use super::AppState;
use crate::mailer::RestoreJob;
use crate::store::Redeemed;
use actix_web::{web, HttpRequest, HttpResponse};
use colloquy_actors::domain::{Limit, RestorePage};
use colloquy_actors::rate_limiter::{RateCheck, Tier};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

fn valid_email(raw: &str) -> Option<String> {
    let e = raw.trim();
    let (local, domain) = e.split_once('@')?;
    let ok = !local.is_empty()
        && domain.contains('.')
        && e.len() <= 254
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then(|| e.to_owned())
}

/// `POST /api/conversations/v1/widget/restore/request` `{email, request_url}`.
#[utoipa::path(
    post,
    path = "/api/conversations/v1/widget/restore/request",
    tag = "widget_v1",
    request_body(content = api::RestoreRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Always `{\"ok\": true}`, whether or not tickets exist and whether or not `request_url` is a page the link may point at (reveals nothing); the lookup and the mail happen afterwards, off the request path", body = RestoreRequested),
        V1Refusals,
        (status = 400, description = "invalid_json or validation_error (`field` names the field): `email` missing or not an address, `request_url` missing or not a string", body = ErrorBody),
        PayloadTooLarge,
    ),
    security(("widget_token" = []))
)]
pub async fn request(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let team = team(&req, &state, true).await?;
    let body = json_object(&req, payload).await?;
    let email = valid_email(req_str(&body, "email")?)
        .ok_or_else(|| ApiError::invalid("email", "email must be an email address"))?;
    // Any string is accepted here; what is not a clean page of the team's is not mailed.
    let request_url = req_text(&body, "request_url")?;
    let ip = extract::peer_ip(&req, &state);
    let l = &team.rate_limits;
    let checks = vec![
        RateCheck {
            tier: Tier::RestoreIp,
            key: ip.to_string(),
            limit: Limit::per_minute(l.restore_ip_per_minute),
        },
        RateCheck {
            tier: Tier::RestoreEmail,
            key: email.to_lowercase(),
            limit: Limit::per_hour(l.restore_email_per_hour),
        },
    ];
    admit(&state, &team, checks, ip, None).await?;
    match RestorePage::parse(request_url, &team.allowed_widget_domains) {
        Some(page) => {
            let job = RestoreJob {
                team_id: team.id,
                email,
                page,
            };
            if !state.mailer.request_restore(job) {
                tracing::debug!(team_id = %team.id, "restore queue full: request dropped (counted)");
            }
        }
        // Links we mail fail closed: only to the team's own pages.
        None => {
            tracing::debug!(team_id = %team.id, "restore request for a page off the team's domains: not mailed")
        }
    }
    Ok(HttpResponse::Ok().json(RestoreRequested { ok: true }))
}

/// Always `{"ok": true}`.
#[derive(Serialize, ToSchema)]
pub struct RestoreRequested {
    /// True.
    ok: bool,
}

/// `POST /api/conversations/v1/widget/restore` `{restore_token, widget_session_id}`.
#[utoipa::path(
    post,
    path = "/api/conversations/v1/widget/restore",
    tag = "widget_v1",
    request_body(content = api::RedeemRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The outcome", body = RedeemAnswer),
        V1Refusals,
        PayloadTooLarge,
    ),
    security(("widget_token" = []))
)]
pub async fn redeem(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let team = team(&req, &state, true).await?;
    let body = json_object(&req, payload).await?;
    let token = req_str(&body, "restore_token")?.trim();
    let session = extract::uuid(req_str(&body, "widget_session_id")?, "widget_session_id")?;
    let ip = extract::peer_ip(&req, &state);
    let checks = vec![RateCheck {
        tier: Tier::RestoreIp,
        key: ip.to_string(),
        limit: Limit::per_minute(team.rate_limits.restore_ip_per_minute),
    }];
    admit(&state, &team, checks, ip, None).await?;
    if token.is_empty() || token.len() > 200 {
        return Ok(HttpResponse::Ok().json(RedeemAnswer::failed(RedeemStatus::Invalid)));
    }
    let answer = match state.store.redeem_restore(team.id, token, session).await? {
        Redeemed::Invalid => RedeemAnswer::failed(RedeemStatus::Invalid),
        Redeemed::Expired => RedeemAnswer::failed(RedeemStatus::Expired),
        Redeemed::Used => RedeemAnswer::failed(RedeemStatus::Used),
        Redeemed::Success(ids) => {
            // The tickets have a new key: their actors must not keep the old one.
            for id in &ids {
                state.tickets.evict(*id).await;
            }
            RedeemAnswer {
                status: RedeemStatus::Success,
                widget_session_id: Some(session),
                migrated_ticket_ids: Some(ids),
            }
        }
    };
    Ok(HttpResponse::Ok().json(answer))
}

/// The outcome of a redemption.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RedeemStatus {
    /// Tickets moved.
    Success,
    /// Too late.
    Expired,
    /// Unknown token.
    Invalid,
    /// Already redeemed.
    Used,
}

/// The answer to a redemption; the ids only on success.
#[derive(Serialize, ToSchema)]
#[schema(as = Redeemed)]
pub struct RedeemAnswer {
    /// Outcome.
    status: RedeemStatus,
    /// On success: the session the tickets now belong to.
    #[serde(skip_serializing_if = "Option::is_none")]
    widget_session_id: Option<Uuid>,
    /// On success: the tickets moved.
    #[serde(skip_serializing_if = "Option::is_none")]
    migrated_ticket_ids: Option<Vec<Uuid>>,
}

impl RedeemAnswer {
    /// A redemption that moved nothing: only its status.
    fn failed(status: RedeemStatus) -> Self {
        Self {
            status,
            widget_session_id: None,
            migrated_ticket_ids: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_checked_loosely() {
        assert_eq!(
            valid_email(" ann@example.com "),
            Some("ann@example.com".into())
        );
        for bad in ["", "ann", "ann@", "@x.com", "a b@x.com", "ann@localhost"] {
            assert!(valid_email(bad).is_none(), "{bad}");
        }
    }
}
