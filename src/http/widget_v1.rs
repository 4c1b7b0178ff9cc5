//! The posthog-js compatible surface, `/api/conversations/v1/widget/…`: what the
//! conversations widget of the `posthog-js` SDK (1.449.x) sends and expects, so that it runs
//! against colloquy unmodified. A random `widget_session_id` is the key (or a verified
//! identity), every success answers `200`, text is returned raw (the SDK renders it as text)
//! and `created_at` is written `…123456+00:00`, which the SDK sends back verbatim as `after`.
//!
//! Only the HTTP shapes live here — which fields are read, which budgets are charged, what
//! is answered. Who the visitor is, admission, the honeypot rule and posting a message are
//! `http::visitor`'s, shared with the documented surface.

use super::errors::{ApiError, NotFound, PayloadTooLarge, V1Refusals};
use super::extract::{self, check_origin, json_object, opt_str, widget_team_unchecked};
use super::openapi as api;
use super::visitor::{
    admit_as, honeypot_filled, honeypot_hit, list_tickets, mark_read_by, post_visitor_message,
    read_page, Blank, Listing, Poll, Posted, Session, VisitorPost,
};
use super::wire::{self, ReadMarked};
use super::{AppState, Endpoint};
use crate::teams::Team;
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use colloquy_actors::domain::{format_offset, Limit, MessageContent, Traits, VerifiedId};
use colloquy_actors::rate_limiter::{Charged, RateCheck, Tier};
use colloquy_actors::store::StoredMessage;
use serde::Serialize;
use serde_json::{Map, Value};
use std::net::IpAddr;
use std::sync::Arc;
use utoipa::ToSchema;
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

/// This surface's budgets: per session (or IP) per minute, and the team's reads or writes,
/// after the per-IP gate and the block list. Blocks apply to every key the request names:
/// its session, its verified identity and the distinct_id a POST links (`linked`).
async fn admit_v1(
    state: &AppState,
    team: &Team,
    who: &Session,
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
            key: who.rate_key(ip),
            limit: Limit::per_minute(l.widget_session_per_minute),
        },
        RateCheck {
            tier,
            key: String::new(),
            limit: Limit::per_hour(per_hour),
        },
    ];
    let session = who.session.map(|s| format!("session:{s}"));
    let verified = who.verified().map(VerifiedId::as_str);
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

/// `POST /api/conversations/v1/widget/message`.
#[utoipa::path(
    post,
    path = "/api/conversations/v1/widget/message",
    tag = "widget_v1",
    request_body(content = api::V1MessageRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Stored", body = V1MessageCreated),
        V1Refusals,
        NotFound,
        PayloadTooLarge,
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
    if honeypot_filled(&body) {
        honeypot_hit(&state, &team, ip).await?;
        return Err(ApiError::invalid("_hp", "this field must be empty"));
    }
    let who = Session::from_fields(&team, &body)?;
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

    let post = VisitorPost {
        ticket_id,
        owner: who.owner(),
        key: who.key.clone(),
        linked_distinct_id: who.verified().map(VerifiedId::to_string),
        claimed_distinct_id: linked.map(str::to_owned),
        label: who.label(),
        message,
        traits,
        distinct_id: None,
        client_message_id: None,
        reopens: false,
    };
    let Posted::Stored {
        ticket_id,
        message,
        status,
        unread,
    } = charged.settle(post_visitor_message(&state, &team, ip, post).await)?
    else {
        return Err(ApiError::Internal("replay without idempotency key".into()));
    };
    Ok(HttpResponse::Ok().json(V1MessageCreated {
        ticket_id,
        message_id: message.id,
        ticket_status: status.into(),
        unread_count: unread,
        created_at: format_offset(message.created_at),
    }))
}

/// The answer to a v1 POST.
#[derive(Serialize, ToSchema)]
pub struct V1MessageCreated {
    /// The ticket.
    ticket_id: Uuid,
    /// The message.
    message_id: Uuid,
    /// The ticket's status.
    ticket_status: wire::TicketStatus,
    /// Unread operator messages.
    unread_count: i32,
    /// Microseconds and an explicit offset (`…123456+00:00`), to be sent back verbatim.
    #[schema(format = DateTime)]
    created_at: String,
}

/// A message on the v1 surface (raw text, no `is_private` key).
#[derive(Serialize, ToSchema)]
pub struct V1Message {
    /// Message id.
    id: Uuid,
    /// Raw text.
    content: String,
    /// Rich content, if any.
    #[schema(required = true, value_type = Option<Object>)]
    rich_content: Option<Value>,
    /// Who wrote it.
    author_type: wire::AuthorType,
    /// Author name.
    #[schema(required = true)]
    author_name: Option<String>,
    /// Microseconds and an explicit offset.
    #[schema(format = DateTime)]
    created_at: String,
}

fn v1_message(m: &StoredMessage) -> V1Message {
    V1Message {
        id: m.id,
        content: m.content.clone(),
        rich_content: m.rich_content.clone(),
        author_type: m.author_type.into(),
        author_name: m.author_name.clone(),
        created_at: format_offset(m.created_at),
    }
}

/// `GET /api/conversations/v1/widget/messages/{ticket_id}`.
#[derive(Serialize, ToSchema)]
pub struct V1MessagesPage {
    /// The ticket.
    ticket_id: Uuid,
    /// Its status.
    ticket_status: wire::TicketStatus,
    /// Unread operator messages.
    unread_count: i32,
    /// Ascending `created_at`.
    messages: Vec<V1Message>,
    /// More exist.
    has_more: bool,
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
        (status = 200, description = "The ticket's public messages", body = V1MessagesPage),
        V1Refusals,
        NotFound,
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
    let who = Session::from_fields(&team, &q)?;
    let poll = Poll::parse(&q, 500, Blank::Absent)?;
    let ticket_id = extract::uuid(&path, "ticket_id")?;
    let ip = extract::peer_ip(&req, &state);
    let charged = admit_v1(&state, &team, &who, None, ip, false).await?;
    let page = charged.settle(read_page(&state, &team, ticket_id, who.key, poll).await)?;
    Ok(HttpResponse::Ok().json(V1MessagesPage {
        ticket_id,
        ticket_status: page.status.into(),
        unread_count: page.unread_customer,
        messages: page.page.messages.iter().map(v1_message).collect(),
        has_more: page.page.has_more,
    }))
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
        (status = 200, description = "Marked read", body = ReadMarked),
        V1Refusals,
        NotFound,
        PayloadTooLarge,
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
    let who = Session::from_fields(&team, &body)?;
    let ip = extract::peer_ip(&req, &state);
    let charged = admit_v1(&state, &team, &who, None, ip, true).await?;
    charged.settle(mark_read_by(&state, team.id, ticket_id, who.key).await)?;
    Ok(HttpResponse::Ok().json(ReadMarked::DONE))
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
        ("status" = Option<wire::TicketStatus>, Query, description = "Only this status"),
        ("limit" = Option<i64>, Query, description = "Default 100, clamped to 1..500"),
        ("offset" = Option<i64>, Query, description = "Default 0")
    ),
    responses(
        (status = 200, description = "The session's tickets, newest first", body = V1Tickets),
        V1Refusals,
    ),
    security(("widget_token" = []))
)]
async fn get_tickets(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let team = team(&req, &state, false).await?;
    let q = extract::query(&req)?;
    let who = Session::from_fields(&team, &q)?;
    let listing = Listing::parse(&q, 100, 500)?;
    let ip = extract::peer_ip(&req, &state);
    let charged = admit_v1(&state, &team, &who, None, ip, false).await?;
    let listing = charged.settle(list_tickets(&state, &team, &who.key, listing).await)?;
    let results: Vec<V1Ticket> = listing
        .results
        .iter()
        .map(|t| V1Ticket {
            id: t.id,
            ticket_number: t.ticket_number,
            status: t.status.into(),
            unread_count: t.unread_count,
            last_message: t.last_message.clone(),
            last_message_at: t.last_message_at.map(format_offset),
            message_count: t.message_count,
            created_at: format_offset(t.created_at),
        })
        .collect();
    Ok(HttpResponse::Ok().json(V1Tickets {
        count: listing.count,
        results,
    }))
}

/// A ticket in the v1 list.
#[derive(Serialize, ToSchema)]
pub struct V1Ticket {
    /// Ticket id.
    id: Uuid,
    /// Counts up per team from 1.
    ticket_number: i64,
    /// Status.
    status: wire::TicketStatus,
    /// Unread operator messages.
    unread_count: i32,
    /// Raw preview of the last public message.
    #[schema(required = true)]
    last_message: Option<String>,
    /// When it was written.
    #[schema(required = true, format = DateTime)]
    last_message_at: Option<String>,
    /// Public messages.
    message_count: i32,
    /// Opened.
    #[schema(format = DateTime)]
    created_at: String,
}

/// `GET /api/conversations/v1/widget/tickets`.
#[derive(Serialize, ToSchema)]
pub struct V1Tickets {
    /// Total.
    count: i64,
    /// Newest first.
    results: Vec<V1Ticket>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
