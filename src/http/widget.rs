//! The documented widget surface, `/api/conversations/widget/…`: the visitor's distinct_id
//! is the key to their tickets, a new message answers 201, and all returned text is
//! HTML-escaped. Only the HTTP shapes live here; what both surfaces share (admission, who
//! the visitor is, the honeypot rule, posting a message) is `http::visitor`'s.

use super::errors::{ApiError, NotFound, PayloadTooLarge, WidgetRefusals};
use super::extract::{self, json_object, opt_str, req_str, widget_team};
use super::openapi as api;
use super::visitor::{
    admit, honeypot_filled, honeypot_hit, ip_key, list_tickets, mark_read_by, post_visitor_message,
    read_check, read_page, Blank, Listing, Named, Poll, Posted, VisitorPost,
};
use super::wire::{self, ReadMarked};
use super::{AppState, Endpoint};
use crate::teams::Team;
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use colloquy_actors::domain::{
    format_utc, html_escape, ClientMessageId, DistinctId, Limit, MessageContent, TicketStatus,
    Traits,
};
use colloquy_actors::rate_limiter::{Charged, RateCheck, Tier};
use colloquy_actors::store::{Replay, StoredMessage};
use serde::Serialize;
use serde_json::{Map, Value};
use std::net::IpAddr;
use utoipa::ToSchema;
use uuid::Uuid;

/// The documented widget routes (registered by [`super::routes`]).
pub fn endpoints() -> (&'static str, Vec<Endpoint>) {
    (
        "/api/conversations/widget",
        vec![
            Endpoint::new(Method::POST, "/message", post_message),
            Endpoint::new(Method::GET, "/messages/{ticket_id}", get_messages),
            Endpoint::new(Method::GET, "/tickets", get_tickets),
            Endpoint::new(Method::POST, "/messages/{ticket_id}/read", mark_read),
            Endpoint::new(Method::POST, "/typing", typing),
            Endpoint::new(Method::GET, "/stream/{ticket_id}", super::stream::stream),
        ],
    )
}

/// A validated POST body.
struct MessageInput {
    distinct_id: DistinctId,
    message: MessageContent,
    traits: Option<Traits>,
    ticket_id: Option<Uuid>,
    client_message_id: Option<ClientMessageId>,
}

impl MessageInput {
    fn parse(body: &Map<String, Value>) -> Result<Self, ApiError> {
        let distinct_id = DistinctId::parse(req_str(body, "distinct_id")?)?;
        let message = MessageContent::parse(extract::req_text(body, "message")?, "message")?;
        let traits = match body.get("traits") {
            None | Some(Value::Null) => None,
            Some(v) => Some(Traits::parse(v)?),
        };
        let ticket_id = opt_str(body, "ticket_id")?
            .map(|s| extract::uuid(s, "ticket_id"))
            .transpose()?;
        let client_message_id = opt_str(body, "client_message_id")?
            .map(ClientMessageId::parse)
            .transpose()?;
        Ok(Self {
            distinct_id,
            message,
            traits,
            ticket_id,
            client_message_id,
        })
    }
}

/// The answer to a widget POST (`201` new, `200` idempotent replay).
#[derive(Serialize, ToSchema)]
pub struct MessageCreated {
    /// The ticket.
    ticket_id: Uuid,
    /// The message.
    message_id: Uuid,
    /// The ticket's status now.
    #[schema(value_type = wire::TicketStatus)]
    ticket_status: &'static str,
    /// RFC 3339, UTC, microseconds.
    #[schema(format = DateTime)]
    created_at: String,
    /// Operator messages the visitor has not read.
    unread_count: i32,
}

/// Admission of a documented-surface request that reads (or marks) for one visitor: their
/// read budget of the endpoint `what`.
async fn admit_read(
    state: &AppState,
    team: &Team,
    what: &str,
    visitor: &Named,
    ip: IpAddr,
) -> Result<Charged, ApiError> {
    let distinct_id = &visitor.distinct_id;
    let checks = vec![read_check(team, what, distinct_id)];
    admit(state, team, checks, ip, Some(distinct_id.as_str())).await
}

/// `POST /api/conversations/widget/message`: a message, and a ticket if `ticket_id` is absent.
#[utoipa::path(
    post,
    path = "/api/conversations/widget/message",
    tag = "widget",
    request_body(content = api::MessageRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored (and the ticket opened if `ticket_id` was absent)", body = MessageCreated),
        (status = 200, description = "An idempotent replay: the first call's ids", body = MessageCreated),
        WidgetRefusals,
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
    let team = widget_team(&req, &state).await?;
    tracing::Span::current().record("team_id", tracing::field::display(team.id));
    let ip = extract::peer_ip(&req, &state);
    let body = json_object(&req, payload).await?;
    if honeypot_filled(&body) {
        honeypot_hit(&state, &team, ip).await?;
        return Ok(decoy(&body));
    }
    let input = MessageInput::parse(&body)?;
    let visitor = Named::verify(&team, input.distinct_id, opt_str(&body, "identity_hash")?)?;
    let distinct_id = &visitor.distinct_id;

    if let Some(cmid) = &input.client_message_id {
        let found = state
            .store
            .find_replay(team.id, distinct_id.as_str(), cmid.as_str())
            .await?;
        if let Some(replay) = found {
            let charged = admit_read(&state, &team, "messages", &visitor, ip).await?;
            return charged.settle(replayed(&state, &team, replay).await);
        }
    }

    let limits = &team.rate_limits;
    let checks = vec![
        RateCheck {
            tier: Tier::MessageDistinctId,
            key: distinct_id.to_string(),
            limit: Limit::per_minute(limits.message_distinct_id_per_minute),
        },
        RateCheck {
            tier: Tier::MessageIp,
            key: ip_key(ip),
            limit: Limit::per_minute(limits.message_ip_per_minute),
        },
        RateCheck {
            tier: Tier::MessageTeam,
            key: String::new(),
            limit: Limit::per_hour(limits.message_team_per_hour),
        },
    ];
    let charged = admit(&state, &team, checks, ip, Some(distinct_id.as_str())).await?;

    let post = VisitorPost {
        ticket_id: input.ticket_id,
        owner: visitor.key.clone(),
        key: visitor.key,
        linked_distinct_id: None,
        claimed_distinct_id: None,
        label: visitor.distinct_id.to_string(),
        message: input.message,
        traits: input.traits,
        distinct_id: Some(visitor.distinct_id.to_string()),
        client_message_id: input.client_message_id.map(|c| c.as_str().to_owned()),
        reopens: true,
    };
    match charged.settle(post_visitor_message(&state, &team, ip, post).await)? {
        Posted::Stored {
            ticket_id,
            message,
            status,
            unread,
        } => Ok(HttpResponse::Created().json(MessageCreated {
            ticket_id,
            message_id: message.id,
            ticket_status: status.as_str(),
            created_at: format_utc(message.created_at),
            unread_count: unread,
        })),
        Posted::Replayed(r) => replayed(&state, &team, r).await,
    }
}

/// A retried POST: the first call's ids, the ticket's current status, `200`.
async fn replayed(state: &AppState, team: &Team, r: Replay) -> Result<HttpResponse, ApiError> {
    let (status, unread) = state
        .store
        .ticket_status(team.id, r.ticket_id)
        .await?
        .unwrap_or((TicketStatus::New, 0));
    Ok(HttpResponse::Ok().json(MessageCreated {
        ticket_id: r.ticket_id,
        message_id: r.message_id,
        ticket_status: status.as_str(),
        created_at: format_utc(r.created_at),
        unread_count: unread,
    }))
}

/// The honeypot's answer: looks like success, stores nothing (the detector was told by
/// [`honeypot_hit`]).
fn decoy(body: &Map<String, Value>) -> HttpResponse {
    let ticket_id = body
        .get("ticket_id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
        .unwrap_or_else(Uuid::now_v7);
    HttpResponse::Created().json(MessageCreated {
        ticket_id,
        message_id: Uuid::now_v7(),
        ticket_status: TicketStatus::New.as_str(),
        created_at: format_utc(Utc::now()),
        unread_count: 0,
    })
}

/// One message as the documented surface shows it: escaped, never private.
#[derive(Serialize, ToSchema)]
pub struct WidgetMessage {
    /// Message id.
    id: Uuid,
    /// HTML-escaped text.
    content: String,
    /// Who wrote it.
    author_type: wire::AuthorType,
    /// HTML-escaped author name.
    #[schema(required = true)]
    author_name: Option<String>,
    /// RFC 3339, UTC, microseconds.
    #[schema(format = DateTime)]
    created_at: String,
    /// Always false.
    is_private: bool,
}

impl From<&StoredMessage> for WidgetMessage {
    /// Escapes what a widget might insert as HTML.
    fn from(m: &StoredMessage) -> Self {
        Self {
            id: m.id,
            content: html_escape(&m.content),
            author_type: m.author_type.into(),
            author_name: m.author_name.as_deref().map(html_escape),
            created_at: format_utc(m.created_at),
            is_private: false,
        }
    }
}

/// `GET /api/conversations/widget/messages/{ticket_id}`.
#[derive(Serialize, ToSchema)]
pub struct MessagesPage {
    /// The ticket.
    ticket_id: Uuid,
    /// Its status.
    ticket_status: wire::TicketStatus,
    /// Ascending `created_at`.
    messages: Vec<WidgetMessage>,
    /// More messages exist after the last one returned.
    has_more: bool,
    /// Operator messages the visitor has not read.
    unread_count: i32,
}

/// `GET /api/conversations/widget/messages/{ticket_id}`: the visitor's messages after `after`.
#[utoipa::path(
    get,
    path = "/api/conversations/widget/messages/{ticket_id}",
    tag = "widget",
    params(
        ("ticket_id" = Uuid, Path, description = "The ticket"),
        ("distinct_id" = String, Query, description = "The visitor"),
        ("identity_hash" = Option<String>, Query, description = "hex(HMAC-SHA256(identity_secret, distinct_id)), as the team requires"),
        ("after" = Option<String>, Query, format = DateTime, description = "Only messages strictly after this RFC 3339 timestamp"),
        ("limit" = Option<i64>, Query, description = "Default 100, clamped to 1..500")
    ),
    responses(
        (status = 200, description = "The visitor's messages after `after`", body = MessagesPage),
        WidgetRefusals,
        NotFound,
    ),
    security(("widget_token" = []))
)]
async fn get_messages(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let team = widget_team(&req, &state).await?;
    tracing::Span::current().record("team_id", tracing::field::display(team.id));
    let q = extract::query(&req)?;
    let visitor = Named::from_fields(&team, &q)?;
    let poll = Poll::parse(&q, 100, Blank::Invalid)?;
    let ticket_id = extract::uuid(&path, "ticket_id")?;
    let ip = extract::peer_ip(&req, &state);
    let charged = admit_read(&state, &team, "messages", &visitor, ip).await?;
    let page = charged.settle(read_page(&state, &team, ticket_id, visitor.key, poll).await)?;
    Ok(HttpResponse::Ok().json(MessagesPage {
        ticket_id,
        ticket_status: page.status.into(),
        messages: page.page.messages.iter().map(WidgetMessage::from).collect(),
        has_more: page.page.has_more,
        unread_count: page.unread_customer,
    }))
}

/// A ticket in the visitor's list.
#[derive(Serialize, ToSchema)]
#[schema(as = WidgetTicket)]
pub struct TicketRow {
    /// Ticket id.
    id: Uuid,
    /// Status.
    status: wire::TicketStatus,
    /// HTML-escaped preview of the last public message.
    #[schema(required = true)]
    last_message: Option<String>,
    /// When the last message was written.
    #[schema(required = true, format = DateTime)]
    last_message_at: Option<String>,
    /// Public messages.
    message_count: i32,
    /// Unread operator messages.
    unread_count: i32,
    /// RFC 3339, UTC.
    #[schema(format = DateTime)]
    created_at: String,
}

/// `GET /api/conversations/widget/tickets`.
#[derive(Serialize, ToSchema)]
#[schema(as = WidgetTickets)]
pub struct TicketsPage {
    /// Total matching the filter.
    count: i64,
    /// Newest activity first.
    results: Vec<TicketRow>,
}

/// `GET /api/conversations/widget/tickets`: the visitor's tickets, newest activity first.
#[utoipa::path(
    get,
    path = "/api/conversations/widget/tickets",
    tag = "widget",
    params(
        ("distinct_id" = String, Query, description = "The visitor"),
        ("identity_hash" = Option<String>, Query, description = "hex(HMAC-SHA256(identity_secret, distinct_id)), as the team requires"),
        ("status" = Option<wire::TicketStatus>, Query, description = "Only this status"),
        ("limit" = Option<i64>, Query, description = "Default 10, clamped to 1..50"),
        ("offset" = Option<i64>, Query, description = "Default 0")
    ),
    responses(
        (status = 200, description = "The visitor's tickets, newest activity first", body = TicketsPage),
        WidgetRefusals,
    ),
    security(("widget_token" = []))
)]
async fn get_tickets(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let team = widget_team(&req, &state).await?;
    tracing::Span::current().record("team_id", tracing::field::display(team.id));
    let q = extract::query(&req)?;
    let visitor = Named::from_fields(&team, &q)?;
    let listing = Listing::parse(&q, 10, 50)?;
    let ip = extract::peer_ip(&req, &state);
    let charged = admit_read(&state, &team, "tickets", &visitor, ip).await?;
    let listing = charged.settle(list_tickets(&state, &team, &visitor.key, listing).await)?;
    Ok(HttpResponse::Ok().json(TicketsPage {
        count: listing.count,
        results: listing
            .results
            .iter()
            .map(|t| TicketRow {
                id: t.id,
                status: t.status.into(),
                last_message: t.last_message.as_deref().map(html_escape),
                last_message_at: t.last_message_at.map(format_utc),
                message_count: t.message_count,
                unread_count: t.unread_count,
                created_at: format_utc(t.created_at),
            })
            .collect(),
    }))
}

/// `POST /api/conversations/widget/messages/{ticket_id}/read`: the visitor has read the
/// operators' replies; their unread count drops to 0 and operators' streams are told.
#[utoipa::path(
    post,
    path = "/api/conversations/widget/messages/{ticket_id}/read",
    tag = "widget",
    params(
        ("ticket_id" = Uuid, Path, description = "The ticket")
    ),
    request_body(content = api::VisitorRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Marked read", body = ReadMarked),
        WidgetRefusals,
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
    let team = widget_team(&req, &state).await?;
    let ticket_id = extract::uuid(&path, "ticket_id")?;
    let body = json_object(&req, payload).await?;
    let visitor = Named::from_fields(&team, &body)?;
    let ip = extract::peer_ip(&req, &state);
    let charged = admit_read(&state, &team, "read", &visitor, ip).await?;
    charged.settle(mark_read_by(&state, team.id, ticket_id, visitor.key).await)?;
    Ok(HttpResponse::Ok().json(ReadMarked::DONE))
}

/// `POST /api/conversations/widget/typing` `{distinct_id, ticket_id}`: tells operators' streams.
#[utoipa::path(
    post,
    path = "/api/conversations/widget/typing",
    tag = "widget",
    request_body(content = api::TypingRequest, content_type = "application/json"),
    responses(
        (status = 204, description = "Operators' streams were told"),
        WidgetRefusals,
        NotFound,
        PayloadTooLarge,
    ),
    security(("widget_token" = []))
)]
async fn typing(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let team = widget_team(&req, &state).await?;
    let body = json_object(&req, payload).await?;
    let visitor = Named::from_fields(&team, &body)?;
    let ticket_id = extract::uuid(req_str(&body, "ticket_id")?, "ticket_id")?;
    let ip = extract::peer_ip(&req, &state);
    let charged = admit_read(&state, &team, "typing", &visitor, ip).await?;
    charged.settle(
        state
            .tickets
            .typing(team.id, ticket_id, Some(visitor.key))
            .await,
    )?;
    state.cluster.typing(ticket_id, true);
    Ok(HttpResponse::NoContent().finish())
}
