//! Restore by email on the posthog-js surface: a visitor on a new device asks for a link,
//! gets a one-time token by mail, and redeeming it moves their tickets to the new session.
//! The request answers `{"ok": true}` whether or not tickets exist, so it reveals nothing.

use super::errors::ApiError;
use super::extract::{self, json_object, req_str};
use super::openapi as api;
use super::widget::admit;
use super::widget_v1::team;
use super::AppState;
use crate::store::Redeemed;
use actix_web::{web, HttpRequest, HttpResponse};
use colloquy_actors::domain::Limit;
use colloquy_actors::rate_limiter::{RateCheck, Tier};
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde_json::json;

fn valid_email(raw: &str) -> Option<String> {
    let e = raw.trim();
    let (local, domain) = e.split_once('@')?;
    let ok = !local.is_empty()
        && domain.contains('.')
        && e.len() <= 254
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then(|| e.to_owned())
}

/// The link mailed to the visitor: `request_url` with `ph_conv_restore=<token>` added.
fn restore_link(request_url: &str, token: &str) -> String {
    let (base, fragment) = request_url
        .split_once('#')
        .map_or((request_url, None), |(b, f)| (b, Some(f)));
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut link = format!("{base}{sep}ph_conv_restore={token}");
    if let Some(f) = fragment {
        link.push('#');
        link.push_str(f);
    }
    link
}

/// `POST /api/conversations/v1/widget/restore/request` `{email, request_url}`.
#[utoipa::path(
    post,
    path = "/api/conversations/v1/widget/restore/request",
    tag = "widget_v1",
    request_body(content = api::RestoreRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Always `{\"ok\": true}` (reveals nothing)", body = api::RestoreRequested),
        (status = 400, description = "invalid_json or validation_error (`field` names the field)", body = api::ErrorBody),
        (status = 403, description = "invalid_token (this surface answers 403 for a missing or unknown token), conversations_disabled, origin_not_allowed, forbidden, identity_required, identity_invalid or blocked", body = api::ErrorBody),
        (status = 413, description = "payload_too_large: body over 64 KiB", body = api::ErrorBody),
        (status = 429, description = "rate_limited; Retry-After header", body = api::ErrorBody),
        (status = 503, description = "unavailable (database unreachable) or overloaded (load shed); Retry-After header", body = api::ErrorBody)
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
    let request_url = req_str(&body, "request_url")?.trim();
    let url_ok = (request_url.starts_with("https://") || request_url.starts_with("http://"))
        && request_url.len() <= 2000
        && !team.allowed_widget_domains.entries().is_empty()
        && team.allowed_widget_domains.permits(Some(request_url));
    if !url_ok {
        // Links we mail fail closed: only to the team's own sites.
        return Err(ApiError::invalid(
            "request_url",
            "request_url must be a page on one of the team's allowed_widget_domains",
        ));
    }
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
    admit(&state, &team, checks, ip, None)?;
    let token: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    let link = restore_link(request_url, &token);
    let subject = "Your support conversations";
    let text = format!(
        "Hello,\n\nSomeone (hopefully you) asked to continue your support conversations on another \
         device. Open this link within 60 minutes:\n\n{link}\n\nIf you did not ask for this, ignore this mail.\n"
    );
    let queued = state
        .store
        .request_restore(team.id, &email, &token, subject, &text)
        .await?;
    if queued {
        tracing::info!(team_id = %team.id, "restore link queued in the outbox");
        state.mailer.wake();
    }
    Ok(HttpResponse::Ok().json(json!({"ok": true})))
}

/// `POST /api/conversations/v1/widget/restore` `{restore_token, widget_session_id}`.
#[utoipa::path(
    post,
    path = "/api/conversations/v1/widget/restore",
    tag = "widget_v1",
    request_body(content = api::RedeemRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The outcome", body = api::Redeemed),
        (status = 400, description = "invalid_json or validation_error (`field` names the field)", body = api::ErrorBody),
        (status = 403, description = "invalid_token (this surface answers 403 for a missing or unknown token), conversations_disabled, origin_not_allowed, forbidden, identity_required, identity_invalid or blocked", body = api::ErrorBody),
        (status = 413, description = "payload_too_large: body over 64 KiB", body = api::ErrorBody),
        (status = 429, description = "rate_limited; Retry-After header", body = api::ErrorBody),
        (status = 503, description = "unavailable (database unreachable) or overloaded (load shed); Retry-After header", body = api::ErrorBody)
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
    admit(&state, &team, checks, ip, None)?;
    if token.is_empty() || token.len() > 200 {
        return Ok(HttpResponse::Ok().json(json!({"status": "invalid"})));
    }
    let answer = match state.store.redeem_restore(team.id, token, session).await? {
        Redeemed::Invalid => json!({"status": "invalid"}),
        Redeemed::Expired => json!({"status": "expired"}),
        Redeemed::Used => json!({"status": "used"}),
        Redeemed::Success(ids) => {
            // The tickets have a new key: their actors must not keep the old one.
            for id in &ids {
                state.tickets.evict(*id).await;
            }
            json!({"status": "success", "widget_session_id": session, "migrated_ticket_ids": ids})
        }
    };
    Ok(HttpResponse::Ok().json(answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_keep_the_page_and_add_the_token() {
        assert_eq!(
            restore_link("https://a.test/help", "T"),
            "https://a.test/help?ph_conv_restore=T"
        );
        assert_eq!(
            restore_link("https://a.test/?x=1#top", "T"),
            "https://a.test/?x=1&ph_conv_restore=T#top"
        );
    }

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
