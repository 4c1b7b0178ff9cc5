//! The posthog-js compatible surface, `/api/conversations/v1/widget/…`: what the
//! conversations widget of the `posthog-js` SDK (1.449.x) sends and expects, so that it runs
//! against colloquy unmodified. A random `widget_session_id` is the key (or a verified
//! identity), every success answers `200`, text is returned raw (the SDK renders it as text)
//! and `created_at` is written `…123456+00:00`, which the SDK sends back verbatim as `after`.
//!
//! Only the HTTP shapes live here: access, ordering, validation and counters are the same
//! core calls as the documented surface's.

use super::errors::ApiError;
use super::extract::{self, check_origin, json_object, opt_str, widget_team_unchecked};
use super::openapi as api;
use super::widget::{admit_as, honeypot_hit};
use super::{AppState, Endpoint};
use crate::teams::Team;
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use colloquy_actors::domain::{
    format_offset, parse_timestamp, AuthorType, DistinctId, IdentityVerification, Limit,
    MessageContent, TicketStatus, Traits, VisitorKey,
};
use colloquy_actors::rate_limiter::{Charged, RateCheck, Tier};
use colloquy_actors::store::{AppendResult, NewMessage, NewTicket, Opened, StoredMessage};
use colloquy_actors::suspicion::{MessageSeen, Observation, TextFeatures};
use serde_json::{json, Map, Value};
use std::net::IpAddr;
use std::sync::Arc;
use uuid::Uuid;

/// The posthog-js routes (no trailing slashes, as the SDK calls them; registered by
/// [`super::routes`]).
pub fn endpoints() -> (&'static str, Vec<Endpoint>) {
    (
        "/api/conversations/v1/widget",
        vec![
            Endpoint::new(Method::POST, "/message", post_message),
            Endpoint::new(Method::GET, "/messages/{ticket_id}", get_messages),
            Endpoint::new(Method::POST, "/messages/{ticket_id}/read", mark_read),
            Endpoint::new(Method::GET, "/tickets", get_tickets),
            Endpoint::new(Method::POST, "/restore/request", super::restore::request),
            Endpoint::new(Method::POST, "/restore", super::restore::redeem),
        ],
    )
}

/// The team, with this surface's rule: a missing or unknown token is a 403.
pub(super) async fn team(
    req: &HttpRequest,
    state: &AppState,
    origin_checked: bool,
) -> Result<Arc<Team>, ApiError> {
    let team = widget_team_unchecked(req, state, None)
        .await
        .map_err(|e| match e {
            ApiError::InvalidToken => ApiError::TokenRefused,
            other => other,
        })?;
    if origin_checked {
        check_origin(req, &team)?;
    }
    Ok(team)
}

/// Who is asking: a verified identity when the team verifies identities and a hash that
/// verifies was sent, else the widget session. `session` is the session id, when one was sent.
struct Access {
    key: VisitorKey,
    session: Option<Uuid>,
}

/// The one identity rule of this surface. An `identity_distinct_id` without a hash that
/// verifies never becomes a verified key: under `optional` the request falls back to its
/// widget session (a wrong hash is still refused), under `required` it is refused.
fn access(
    team: &Team,
    session: Option<&str>,
    identity_id: Option<&str>,
    identity_hash: Option<&str>,
) -> Result<Access, ApiError> {
    let session = session
        .filter(|s| !s.is_empty())
        .map(|s| extract::uuid(s, "widget_session_id"))
        .transpose()?;
    let mode = team.identity_verification;
    let identity_id = identity_id
        .map(str::trim)
        .filter(|s| !s.is_empty() && mode != IdentityVerification::Off);
    match identity_id {
        Some(raw) => {
            let id = DistinctId::parse(raw).map_err(|_| ApiError::IdentityInvalid)?;
            if let Some(proof) = team.verify_identity(&id, identity_hash)? {
                return Ok(Access {
                    key: VisitorKey::Verified(proof),
                    session,
                });
            }
        }
        None if mode == IdentityVerification::Required => return Err(ApiError::IdentityRequired),
        None => {}
    }
    match session {
        Some(s) => Ok(Access {
            key: VisitorKey::WidgetSession(s),
            session: Some(s),
        }),
        None => Err(ApiError::invalid(
            "widget_session_id",
            "widget_session_id is required",
        )),
    }
}

/// This surface's budgets: per session (or IP) per minute, and the team's reads or writes,
/// after the per-IP gate and the block list. Blocks apply to every key the request names:
/// its session, its verified identity and the distinct_id a POST links (`linked`).
async fn admit_v1(
    state: &AppState,
    team: &Team,
    who: &Access,
    linked: Option<&str>,
    ip: IpAddr,
    write: bool,
) -> Result<Charged, ApiError> {
    let l = &team.rate_limits;
    let (tier, per_hour) = if write {
        (Tier::TeamWrites, l.team_writes_per_hour)
    } else {
        (Tier::TeamReads, l.team_reads_per_hour)
    };
    let checks = vec![
        RateCheck {
            tier: Tier::WidgetSession,
            key: who
                .session
                .map_or_else(|| format!("ip:{ip}"), |s| s.to_string()),
            limit: Limit::per_minute(l.widget_session_per_minute),
        },
        RateCheck {
            tier,
            key: String::new(),
            limit: Limit::per_hour(per_hour),
        },
    ];
    let session = who.session.map(|s| format!("session:{s}"));
    let verified = match &who.key {
        VisitorKey::Verified(d) => Some(d.as_str()),
        _ => None,
    };
    let visitors: Vec<&str> = [session.as_deref(), verified, linked]
        .into_iter()
        .flatten()
        .collect();
    admit_as(state, team, checks, ip, &visitors).await
}

/// Traits as the SDK sends them (`{name, email}`, often nulls): scalars kept, the rest
/// dropped, nulls ignored so they never erase what is known.
fn lenient_traits(v: Option<&Value>) -> Option<Traits> {
    let Some(Value::Object(map)) = v else {
        return None;
    };
    let kept: Map<String, Value> = map
        .iter()
        .filter(|(k, v)| {
            !k.is_empty()
                && k.chars().count() <= 200
                && !k.contains('\0')
                && match v {
                    Value::String(s) => s.chars().count() <= 500 && !s.contains('\0'),
                    Value::Number(_) | Value::Bool(_) => true,
                    _ => false,
                }
        })
        .take(50)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Traits::parse(&Value::Object(kept))
        .ok()
        .filter(|t| !t.is_empty())
}

fn truthy(v: Option<&Value>) -> bool {
    !matches!(v, None | Some(Value::Null) | Some(Value::Bool(false)))
        && v != Some(&Value::String(String::new()))
        && v != Some(&json!(0))
}

/// `POST /api/conversations/v1/widget/message`.
#[utoipa::path(
    post,
    path = "/api/conversations/v1/widget/message",
    tag = "widget_v1",
    request_body(content = api::V1MessageRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Stored", body = api::V1MessageCreated),
        (status = 400, description = "invalid_json or validation_error (`field` names the field)", body = api::ErrorBody),
        (status = 403, description = "invalid_token (this surface answers 403 for a missing or unknown token), conversations_disabled, origin_not_allowed, forbidden, identity_required, identity_invalid or blocked", body = api::ErrorBody),
        (status = 404, description = "not_found: unknown ticket (or another team's)", body = api::ErrorBody),
        (status = 413, description = "payload_too_large: body over 64 KiB", body = api::ErrorBody),
        (status = 429, description = "rate_limited; Retry-After header", body = api::ErrorBody),
        (status = 503, description = "unavailable (database unreachable) or overloaded (load shed); Retry-After header", body = api::ErrorBody)
    ),
    security(("widget_token" = []))
)]
async fn post_message(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let team = team(&req, &state, true).await?;
    tracing::Span::current().record("team_id", tracing::field::display(team.id));
    let ip = extract::peer_ip(&req, &state);
    let body = json_object(&req, payload).await?;
    if truthy(body.get("_hp")) {
        honeypot_hit(&state, &team, ip).await?;
        return Err(ApiError::invalid("_hp", "this field must be empty"));
    }
    let who = access(
        &team,
        opt_str(&body, "widget_session_id")?,
        opt_str(&body, "identity_distinct_id")?,
        opt_str(&body, "identity_hash")?,
    )?;
    let message = MessageContent::parse(extract::req_text(&body, "message")?, "message")?;
    let linked = opt_str(&body, "distinct_id")?
        .map(str::trim)
        .filter(|d| !d.is_empty());
    if linked.is_some_and(|d| d.chars().count() > 400) {
        return Err(ApiError::invalid(
            "distinct_id",
            "distinct_id must be at most 400 characters",
        ));
    }
    let ticket_id = opt_str(&body, "ticket_id")?
        .filter(|s| !s.is_empty())
        .map(|s| extract::uuid(s, "ticket_id"))
        .transpose()?;
    match body.get("session_context") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m))
            if m.len() <= 20 && m.values().all(|v| !v.is_object() && !v.is_array()) => {}
        Some(_) => {
            return Err(ApiError::invalid(
                "session_context",
                "session_context must be an object of at most 20 scalar values",
            ))
        }
    }
    let traits = lenient_traits(body.get("traits"));
    let charged = admit_v1(&state, &team, &who, linked, ip, true).await?;

    let features = TextFeatures::of(message.as_str());
    let opened_ticket = ticket_id.is_none();
    let verified = match &who.key {
        VisitorKey::Verified(d) => Some(d.to_string()),
        _ => None,
    };
    let new = NewMessage {
        id: Uuid::now_v7(),
        content: message.into_string(),
        author_type: AuthorType::Customer,
        author_name: None,
        is_private: false,
        distinct_id: None,
        client_message_id: None,
        traits: traits.clone(),
        reopens: false,
    };
    let (ticket_id, stored, status, unread) = match ticket_id {
        None => {
            let owner = match (who.session, &who.key) {
                (Some(s), _) => VisitorKey::WidgetSession(s),
                (None, VisitorKey::Verified(d)) => VisitorKey::DistinctId(d.distinct_id().clone()),
                (None, other) => other.clone(),
            };
            let opened = state
                .tickets
                .open(NewTicket {
                    id: Uuid::now_v7(),
                    team_id: team.id,
                    owner,
                    // Only a proven identity links: a named one would plant this ticket in
                    // that person's history, where their verified widget would show it.
                    linked_distinct_id: verified,
                    claimed_distinct_id: linked.map(str::to_owned),
                    traits: traits.unwrap_or_default(),
                    first: new,
                })
                .await?;
            match opened {
                Opened::Created { ticket, message } => (ticket.id, message, ticket.status, 0),
                Opened::Replayed(_) => {
                    return Err(ApiError::Internal("replay without idempotency key".into()))
                }
            }
        }
        Some(id) => {
            let a = state
                .tickets
                .append(team.id, id, Some(who.key.clone()), new)
                .await;
            let a = charged.settle(a)?;
            let AppendResult::Stored(m) = a.result else {
                return Err(ApiError::Internal("replay without idempotency key".into()));
            };
            (id, m, a.status, a.unread_customer)
        }
    };
    state.suspicion.observe(Observation::Message(MessageSeen {
        team_id: team.id,
        ticket_id,
        opened_ticket,
        visitor: visitor_label(&who),
        ip,
        text: features,
        settings: team.suspicion,
    }));
    Ok(HttpResponse::Ok().json(json!({
        "ticket_id": ticket_id,
        "message_id": stored.id,
        "ticket_status": status.as_str(),
        "unread_count": unread,
        "created_at": format_offset(stored.created_at),
    })))
}

/// How the suspicion detector names the visitor: the verified person, else the session.
fn visitor_label(who: &Access) -> String {
    match (&who.key, who.session) {
        (VisitorKey::Verified(d), _) => d.to_string(),
        (VisitorKey::DistinctId(d), _) => d.to_string(),
        (_, Some(s)) => format!("session:{s}"),
        (VisitorKey::WidgetSession(s), None) => format!("session:{s}"),
    }
}

fn query_access(team: &Team, q: &extract::Query) -> Result<Access, ApiError> {
    let get = |k: &str| q.get(k).map(String::as_str);
    access(
        team,
        get("widget_session_id"),
        get("identity_distinct_id"),
        get("identity_hash"),
    )
}

fn v1_message(m: &StoredMessage) -> Value {
    json!({
        "id": m.id,
        "content": m.content,
        "rich_content": m.rich_content,
        "author_type": m.author_type.as_str(),
        "author_name": m.author_name,
        "created_at": format_offset(m.created_at),
    })
}

/// `GET /api/conversations/v1/widget/messages/{ticket_id}`.
#[utoipa::path(
    get,
    path = "/api/conversations/v1/widget/messages/{ticket_id}",
    tag = "widget_v1",
    params(
        ("ticket_id" = Uuid, Path, description = "The ticket"),
        ("widget_session_id" = Option<Uuid>, Query, description = "The widget session (or the identity parameters)"),
        ("identity_distinct_id" = Option<String>, Query, description = "With identity verification: the verified person"),
        ("identity_hash" = Option<String>, Query, description = "hex(HMAC-SHA256(identity_secret, distinct_id)), as the team requires"),
        ("after" = Option<String>, Query, format = DateTime, description = "Only messages strictly after this RFC 3339 timestamp"),
        ("limit" = Option<i64>, Query, description = "Default 500, clamped to 1..500")
    ),
    responses(
        (status = 200, description = "The ticket's public messages", body = api::V1MessagesPage),
        (status = 400, description = "invalid_json or validation_error (`field` names the field)", body = api::ErrorBody),
        (status = 403, description = "invalid_token (this surface answers 403 for a missing or unknown token), conversations_disabled, origin_not_allowed, forbidden, identity_required, identity_invalid or blocked", body = api::ErrorBody),
        (status = 404, description = "not_found: unknown ticket (or another team's)", body = api::ErrorBody),
        (status = 429, description = "rate_limited; Retry-After header", body = api::ErrorBody),
        (status = 503, description = "unavailable (database unreachable) or overloaded (load shed); Retry-After header", body = api::ErrorBody)
    ),
    security(("widget_token" = []))
)]
async fn get_messages(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let team = team(&req, &state, false).await?;
    let q = extract::query(&req)?;
    let who = query_access(&team, &q)?;
    let after = q
        .get("after")
        .filter(|a| !a.is_empty())
        .map(|a| parse_timestamp(a, "after"))
        .transpose()?;
    let limit = extract::clamped(&q, "limit", 500, 1, 500)?;
    let ticket_id = extract::uuid(&path, "ticket_id")?;
    let ip = extract::peer_ip(&req, &state);
    let charged = admit_v1(&state, &team, &who, None, ip, false).await?;
    let page = state
        .tickets
        .read(
            team.id,
            ticket_id,
            Some(who.key),
            after,
            limit as usize,
            false,
        )
        .await;
    let page = charged.settle(page)?;
    Ok(HttpResponse::Ok().json(json!({
        "ticket_id": ticket_id,
        "ticket_status": page.status.as_str(),
        "unread_count": page.unread_customer,
        "messages": page.page.messages.iter().map(v1_message).collect::<Vec<_>>(),
        "has_more": page.page.has_more,
    })))
}

/// `POST /api/conversations/v1/widget/messages/{ticket_id}/read`.
#[utoipa::path(
    post,
    path = "/api/conversations/v1/widget/messages/{ticket_id}/read",
    tag = "widget_v1",
    params(
        ("ticket_id" = Uuid, Path, description = "The ticket")
    ),
    request_body(content = api::V1ReadRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Marked read", body = api::ReadMarked),
        (status = 400, description = "invalid_json or validation_error (`field` names the field)", body = api::ErrorBody),
        (status = 403, description = "invalid_token (this surface answers 403 for a missing or unknown token), conversations_disabled, origin_not_allowed, forbidden, identity_required, identity_invalid or blocked", body = api::ErrorBody),
        (status = 404, description = "not_found: unknown ticket (or another team's)", body = api::ErrorBody),
        (status = 413, description = "payload_too_large: body over 64 KiB", body = api::ErrorBody),
        (status = 429, description = "rate_limited; Retry-After header", body = api::ErrorBody),
        (status = 503, description = "unavailable (database unreachable) or overloaded (load shed); Retry-After header", body = api::ErrorBody)
    ),
    security(("widget_token" = []))
)]
async fn mark_read(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let team = team(&req, &state, false).await?;
    let ticket_id = extract::uuid(&path, "ticket_id")?;
    let body = json_object(&req, payload).await?;
    let who = access(
        &team,
        opt_str(&body, "widget_session_id")?,
        opt_str(&body, "identity_distinct_id")?,
        opt_str(&body, "identity_hash")?,
    )?;
    let ip = extract::peer_ip(&req, &state);
    let charged = admit_v1(&state, &team, &who, None, ip, true).await?;
    charged.settle(super::widget::mark_read_by(&state, team.id, ticket_id, who.key).await)
}

/// `GET /api/conversations/v1/widget/tickets`.
#[utoipa::path(
    get,
    path = "/api/conversations/v1/widget/tickets",
    tag = "widget_v1",
    params(
        ("widget_session_id" = Option<Uuid>, Query, description = "The widget session (or the identity parameters)"),
        ("identity_distinct_id" = Option<String>, Query, description = "With identity verification: the verified person"),
        ("identity_hash" = Option<String>, Query, description = "hex(HMAC-SHA256(identity_secret, distinct_id)), as the team requires"),
        ("status" = Option<api::TicketStatus>, Query, description = "Only this status"),
        ("limit" = Option<i64>, Query, description = "Default 100, clamped to 1..500"),
        ("offset" = Option<i64>, Query, description = "Default 0")
    ),
    responses(
        (status = 200, description = "The session's tickets, newest first", body = api::V1Tickets),
        (status = 400, description = "invalid_json or validation_error (`field` names the field)", body = api::ErrorBody),
        (status = 403, description = "invalid_token (this surface answers 403 for a missing or unknown token), conversations_disabled, origin_not_allowed, forbidden, identity_required, identity_invalid or blocked", body = api::ErrorBody),
        (status = 429, description = "rate_limited; Retry-After header", body = api::ErrorBody),
        (status = 503, description = "unavailable (database unreachable) or overloaded (load shed); Retry-After header", body = api::ErrorBody)
    ),
    security(("widget_token" = []))
)]
async fn get_tickets(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let team = team(&req, &state, false).await?;
    let q = extract::query(&req)?;
    let who = query_access(&team, &q)?;
    let status = q
        .get("status")
        .filter(|s| !s.is_empty())
        .map(|s| TicketStatus::parse(s, "status"))
        .transpose()?;
    let limit = extract::clamped(&q, "limit", 100, 1, 500)?;
    let offset = extract::clamped(&q, "offset", 0, 0, 1_000_000_000)?;
    let ip = extract::peer_ip(&req, &state);
    let charged = admit_v1(&state, &team, &who, None, ip, false).await?;
    let listing = state
        .store
        .visitor_tickets(team.id, &who.key, status, limit, offset)
        .await;
    let listing = charged.settle(listing)?;
    let results: Vec<Value> = listing
        .results
        .iter()
        .map(|t| {
            json!({
                "id": t.id,
                "ticket_number": t.ticket_number,
                "status": t.status.as_str(),
                "unread_count": t.unread_count,
                "last_message": t.last_message,
                "last_message_at": t.last_message_at.map(format_offset),
                "message_count": t.message_count,
                "created_at": format_offset(t.created_at),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"count": listing.count, "results": results})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_traits_keep_scalars_and_drop_nulls_and_nesting() {
        let t = lenient_traits(Some(
            &json!({"name": "Ann", "email": null, "x": {"y": 1}, "n": 3}),
        ))
        .unwrap();
        assert_eq!(t.to_json(), json!({"name": "Ann", "n": 3}));
        assert!(lenient_traits(Some(&json!({"name": null, "email": null}))).is_none());
        assert!(lenient_traits(Some(&json!("x"))).is_none());
    }

    #[test]
    fn honeypot_truthiness_follows_javascript() {
        for falsy in [json!(""), json!(null), json!(false), json!(0)] {
            assert!(!truthy(Some(&falsy)), "{falsy}");
        }
        assert!(!truthy(None));
        for yes in [json!("x"), json!(true), json!(1)] {
            assert!(truthy(Some(&yes)), "{yes}");
        }
    }
}
