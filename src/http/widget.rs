//! The documented widget surface, `/api/conversations/widget/…`: the visitor's distinct_id
//! is the key to their tickets, a new message answers 201, and all returned text is
//! HTML-escaped.

use super::errors::ApiError;
use super::extract::{self, json_object, opt_str, req_str, widget_team};
use super::openapi as api;
use super::{AppState, Endpoint};
use crate::teams::Team;
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use colloquy_actors::domain::AuthorType;
use colloquy_actors::domain::{
    format_utc, html_escape, parse_timestamp, ClientMessageId, DistinctId, Limit, MessageContent,
    TicketStatus, Traits, VerifiedId, VisitorKey,
};
use colloquy_actors::rate_limiter::{Charged, RateCheck, RateRefusal, Tier};
use colloquy_actors::store::{AppendResult, NewMessage, NewTicket, Opened, Replay, StoredMessage};
use colloquy_actors::suspicion::{MessageSeen, Observation, TextFeatures};
use serde::Serialize;
use serde_json::{Map, Value};
use std::net::IpAddr;
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

/// Whether a bot filled the hidden field: anything but absent, null, "" or false.
fn honeypot_filled(body: &Map<String, Value>) -> bool {
    !matches!(
        body.get("_hp"),
        None | Some(Value::Null) | Some(Value::Bool(false))
    ) && body.get("_hp") != Some(&Value::String(String::new()))
}

/// The POST answer.
#[derive(Serialize)]
struct MessageCreated {
    ticket_id: Uuid,
    message_id: Uuid,
    ticket_status: &'static str,
    created_at: String,
    unread_count: i32,
}

/// The first gate of every widget request on both surfaces, before anything is keyed to a
/// visitor: the IP's block, then the team's per-IP budget (`widget_ip_per_minute`; IPv6 by
/// its /64). Never taken back: requests refused later still cost their sender, so one IP
/// cannot flood a tenant with refused requests. The honeypot passes this gate alone.
pub(super) async fn admit_ip(state: &AppState, team: &Team, ip: IpAddr) -> Result<(), ApiError> {
    if state.blocks.is_blocked(team.id, ip, None) {
        return Err(ApiError::Blocked);
    }
    match state.limiters.check(team.id, ip_gate(team, ip)).await {
        Ok(_kept) => Ok(()),
        Err(r) => Err(refused(state, team, r, None, ip)),
    }
}

/// The per-IP budget of [`admit_ip`], charged with the endpoint's budgets in one step.
fn ip_gate(team: &Team, ip: IpAddr) -> Vec<RateCheck> {
    vec![RateCheck {
        tier: Tier::WidgetIp,
        key: ip_key(ip),
        limit: Limit::per_minute(team.rate_limits.widget_ip_per_minute),
    }]
}

/// An IP as a rate-limit key: what `ip.to_string()` writes, without the formatting
/// machinery for IPv4 (every widget request formats one; bench/NOTES.md).
pub(super) fn ip_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mut key = String::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    key.push('.');
                }
                if octet >= 100 {
                    key.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    key.push(char::from(b'0' + octet / 10 % 10));
                }
                key.push(char::from(b'0' + octet % 10));
            }
            key
        }
        IpAddr::V6(_) => ip.to_string(),
    }
}

/// A budget refused the request: counted, reported to the suspicion detector, answered 429.
fn refused(
    state: &AppState,
    team: &Team,
    r: RateRefusal,
    visitor: Option<&str>,
    ip: IpAddr,
) -> ApiError {
    state
        .metrics
        .rate_limited
        .with_label_values(&[r.tier.as_str()])
        .inc();
    state.suspicion.observe(Observation::RateLimited {
        team_id: team.id,
        tier: r.tier,
        visitor: visitor.map(str::to_owned),
        ip,
        settings: team.suspicion,
    });
    ApiError::from(r)
}

/// Admission of a widget request naming one visitor key: see [`admit_as`].
pub(super) async fn admit(
    state: &AppState,
    team: &Team,
    checks: Vec<RateCheck>,
    ip: IpAddr,
    visitor: Option<&str>,
) -> Result<Charged, ApiError> {
    admit_as(state, team, checks, ip, visitor.as_slice()).await
}

/// Admission of a widget request: blocks on the IP and on every visitor key the request
/// names, the per-IP gate ([`admit_ip`]), then the endpoint's budgets. A refusal by a budget
/// is counted and reported to the suspicion detector. The budgets' charges come back as
/// [`Charged`]: a handler whose request is then refused (`403`, `404`, …) settles its result
/// through it, so refused requests leave no rate-limit keys behind.
pub(super) async fn admit_as(
    state: &AppState,
    team: &Team,
    checks: Vec<RateCheck>,
    ip: IpAddr,
    visitors: &[&str],
) -> Result<Charged, ApiError> {
    // `is_blocked` with a visitor checks the IP too: the IP alone only when none is named
    let blocked = if visitors.is_empty() {
        state.blocks.is_blocked(team.id, ip, None)
    } else {
        visitors
            .iter()
            .any(|v| state.blocks.is_blocked(team.id, ip, Some(v)))
    };
    if blocked {
        return Err(ApiError::Blocked);
    }
    state
        .limiters
        .check_gated(team.id, ip_gate(team, ip), checks)
        .await
        .map_err(|r| {
            // the per-IP gate's refusal is the IP's, not the visitor's
            let visitor = visitors
                .first()
                .copied()
                .filter(|_| r.tier != Tier::WidgetIp);
            refused(state, team, r, visitor, ip)
        })
}

/// A honeypot hit on either surface: it passes the per-IP gate (so a bot's flood is
/// limited like any other traffic) and is reported against the IP only — the distinct_id a
/// bot names is unproven, and naming a victim's must never flag the victim.
pub(super) async fn honeypot_hit(
    state: &AppState,
    team: &Team,
    ip: IpAddr,
) -> Result<(), ApiError> {
    admit_ip(state, team, ip).await?;
    state.suspicion.observe(Observation::Honeypot {
        team_id: team.id,
        ip,
        settings: team.suspicion,
    });
    Ok(())
}

pub(super) fn read_check(team: &Team, what: &str, distinct_id: &DistinctId) -> RateCheck {
    RateCheck {
        tier: Tier::ReadDistinctId,
        key: [what, ":", distinct_id.as_str()].concat(),
        limit: Limit::per_minute(team.rate_limits.read_distinct_id_per_minute),
    }
}

/// `POST /api/conversations/widget/message`: a message, and a ticket if `ticket_id` is absent.
#[utoipa::path(
    post,
    path = "/api/conversations/widget/message",
    tag = "widget",
    request_body(content = api::MessageRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored (and the ticket opened if `ticket_id` was absent)", body = api::MessageCreated),
        (status = 200, description = "An idempotent replay: the first call's ids", body = api::MessageCreated),
        (status = 400, description = "invalid_json or validation_error (`field` names the field)", body = api::ErrorBody),
        (status = 401, description = "invalid_token: missing or unknown token or key", body = api::ErrorBody),
        (status = 403, description = "conversations_disabled, origin_not_allowed, forbidden (another visitor's ticket), identity_required, identity_invalid or blocked", body = api::ErrorBody),
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
    let team = widget_team(&req, &state).await?;
    tracing::Span::current().record("team_id", tracing::field::display(team.id));
    let ip = extract::peer_ip(&req, &state);
    let body = json_object(&req, payload).await?;
    if honeypot_filled(&body) {
        honeypot_hit(&state, &team, ip).await?;
        return Ok(decoy(&body));
    }
    let input = MessageInput::parse(&body)?;
    let verified = team.verify_identity(&input.distinct_id, opt_str(&body, "identity_hash")?)?;

    if let Some(cmid) = &input.client_message_id {
        let found = state
            .store
            .find_replay(team.id, input.distinct_id.as_str(), cmid.as_str())
            .await?;
        if let Some(replay) = found {
            let charged = admit(
                &state,
                &team,
                vec![read_check(&team, "messages", &input.distinct_id)],
                ip,
                Some(input.distinct_id.as_str()),
            )
            .await?;
            return charged.settle(replayed(&state, &team, replay).await);
        }
    }

    let limits = &team.rate_limits;
    let checks = vec![
        RateCheck {
            tier: Tier::MessageDistinctId,
            key: input.distinct_id.to_string(),
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
    let charged = admit(&state, &team, checks, ip, Some(input.distinct_id.as_str())).await?;

    let features = TextFeatures::of(input.message.as_str());
    let opened_ticket = input.ticket_id.is_none();
    let key = visitor_key(&input.distinct_id, verified);
    let message = NewMessage {
        id: Uuid::now_v7(),
        content: input.message.into_string(),
        author_type: AuthorType::Customer,
        author_name: None,
        is_private: false,
        distinct_id: Some(input.distinct_id.to_string()),
        client_message_id: input.client_message_id.map(|c| c.as_str().to_owned()),
        traits: input.traits.clone(),
        reopens: true,
    };
    let (ticket_id, result, status, unread) = match input.ticket_id {
        None => {
            let opened = charged.settle(
                state
                    .tickets
                    .open(NewTicket {
                        id: Uuid::now_v7(),
                        team_id: team.id,
                        owner: key,
                        linked_distinct_id: None,
                        claimed_distinct_id: None,
                        traits: input.traits.unwrap_or_default(),
                        first: message,
                    })
                    .await,
            )?;
            match opened {
                Opened::Created { ticket, message } => {
                    (ticket.id, AppendResult::Stored(message), ticket.status, 0)
                }
                Opened::Replayed(r) => return replayed(&state, &team, r).await,
            }
        }
        Some(ticket_id) => {
            // Access is checked here: a refused follow-up takes its charges back.
            let a = charged.settle(
                state
                    .tickets
                    .append(team.id, ticket_id, Some(key), message)
                    .await,
            )?;
            (ticket_id, a.result, a.status, a.unread_customer)
        }
    };
    match result {
        AppendResult::Stored(m) => {
            state.suspicion.observe(Observation::Message(MessageSeen {
                team_id: team.id,
                ticket_id,
                opened_ticket,
                visitor: input.distinct_id.to_string(),
                ip,
                text: features,
                settings: team.suspicion,
            }));
            Ok(HttpResponse::Created().json(MessageCreated {
                ticket_id,
                message_id: m.id,
                ticket_status: status.as_str(),
                created_at: format_utc(m.created_at),
                unread_count: unread,
            }))
        }
        AppendResult::Replayed(r) => replayed(&state, &team, r).await,
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
#[derive(Serialize)]
pub(super) struct WidgetMessage {
    id: Uuid,
    content: String,
    author_type: &'static str,
    author_name: Option<String>,
    created_at: String,
    is_private: bool,
}

impl From<&StoredMessage> for WidgetMessage {
    /// Escapes what a widget might insert as HTML.
    fn from(m: &StoredMessage) -> Self {
        Self {
            id: m.id,
            content: html_escape(&m.content),
            author_type: m.author_type.as_str(),
            author_name: m.author_name.as_deref().map(html_escape),
            created_at: format_utc(m.created_at),
            is_private: false,
        }
    }
}

#[derive(Serialize)]
struct MessagesPage {
    ticket_id: Uuid,
    ticket_status: &'static str,
    messages: Vec<WidgetMessage>,
    has_more: bool,
    unread_count: i32,
}

/// The key a documented-surface request presents: a proven identity (which also reaches the
/// person's posthog-js tickets) when a valid identity hash came, else the bare distinct_id.
fn visitor_key(id: &DistinctId, verified: Option<VerifiedId>) -> VisitorKey {
    match verified {
        Some(proof) => VisitorKey::Verified(proof),
        None => VisitorKey::DistinctId(id.clone()),
    }
}

/// The visitor of a GET: `distinct_id`, checked against `identity_hash` as the team requires,
/// and the key it presents.
pub(super) fn visitor_param(
    team: &Team,
    q: &extract::Query,
) -> Result<(DistinctId, VisitorKey), ApiError> {
    let raw = q
        .get("distinct_id")
        .ok_or_else(|| ApiError::invalid("distinct_id", "distinct_id is required"))?;
    let id = DistinctId::parse(raw)?;
    let verified = team.verify_identity(&id, q.get("identity_hash").map(String::as_str))?;
    let key = visitor_key(&id, verified);
    Ok((id, key))
}

/// The visitor of a small POST (`typing`, `read`): `distinct_id` and `identity_hash`.
fn visitor_body(
    team: &Team,
    body: &Map<String, Value>,
) -> Result<(DistinctId, VisitorKey), ApiError> {
    let id = DistinctId::parse(req_str(body, "distinct_id")?)?;
    let verified = team.verify_identity(&id, opt_str(body, "identity_hash")?)?;
    let key = visitor_key(&id, verified);
    Ok((id, key))
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
        (status = 200, description = "The visitor's messages after `after`", body = api::MessagesPage),
        (status = 400, description = "invalid_json or validation_error (`field` names the field)", body = api::ErrorBody),
        (status = 401, description = "invalid_token: missing or unknown token or key", body = api::ErrorBody),
        (status = 403, description = "conversations_disabled, origin_not_allowed, forbidden (another visitor's ticket), identity_required, identity_invalid or blocked", body = api::ErrorBody),
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
    let team = widget_team(&req, &state).await?;
    tracing::Span::current().record("team_id", tracing::field::display(team.id));
    let q = extract::query(&req)?;
    let (distinct_id, key) = visitor_param(&team, &q)?;
    let after = q
        .get("after")
        .map(|a| parse_timestamp(a, "after"))
        .transpose()?;
    let limit = extract::clamped(&q, "limit", 100, 1, 500)?;
    let ticket_id = extract::uuid(&path, "ticket_id")?;
    let ip = extract::peer_ip(&req, &state);
    let charged = admit(
        &state,
        &team,
        vec![read_check(&team, "messages", &distinct_id)],
        ip,
        Some(distinct_id.as_str()),
    )
    .await?;

    let page = charged.settle(
        state
            .tickets
            .read(team.id, ticket_id, Some(key), after, limit as usize, false)
            .await,
    )?;
    Ok(HttpResponse::Ok().json(MessagesPage {
        ticket_id,
        ticket_status: page.status.as_str(),
        messages: page.page.messages.iter().map(WidgetMessage::from).collect(),
        has_more: page.page.has_more,
        unread_count: page.unread_customer,
    }))
}

#[derive(Serialize)]
struct TicketRow {
    id: Uuid,
    status: &'static str,
    last_message: Option<String>,
    last_message_at: Option<String>,
    message_count: i32,
    unread_count: i32,
    created_at: String,
}

#[derive(Serialize)]
struct TicketsPage {
    count: i64,
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
        ("status" = Option<api::TicketStatus>, Query, description = "Only this status"),
        ("limit" = Option<i64>, Query, description = "Default 10, clamped to 1..50"),
        ("offset" = Option<i64>, Query, description = "Default 0")
    ),
    responses(
        (status = 200, description = "The visitor's tickets, newest activity first", body = api::WidgetTickets),
        (status = 400, description = "invalid_json or validation_error (`field` names the field)", body = api::ErrorBody),
        (status = 401, description = "invalid_token: missing or unknown token or key", body = api::ErrorBody),
        (status = 403, description = "conversations_disabled, origin_not_allowed, forbidden (another visitor's ticket), identity_required, identity_invalid or blocked", body = api::ErrorBody),
        (status = 429, description = "rate_limited; Retry-After header", body = api::ErrorBody),
        (status = 503, description = "unavailable (database unreachable) or overloaded (load shed); Retry-After header", body = api::ErrorBody)
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
    let (distinct_id, key) = visitor_param(&team, &q)?;
    let status = q
        .get("status")
        .filter(|s| !s.is_empty())
        .map(|s| TicketStatus::parse(s, "status"))
        .transpose()?;
    let limit = extract::clamped(&q, "limit", 10, 1, 50)?;
    let offset = extract::clamped(&q, "offset", 0, 0, 1_000_000_000)?;
    let ip = extract::peer_ip(&req, &state);
    let charged = admit(
        &state,
        &team,
        vec![read_check(&team, "tickets", &distinct_id)],
        ip,
        Some(distinct_id.as_str()),
    )
    .await?;

    let listing = charged.settle(
        state
            .store
            .visitor_tickets(team.id, &key, status, limit, offset)
            .await,
    )?;
    Ok(HttpResponse::Ok().json(TicketsPage {
        count: listing.count,
        results: listing
            .results
            .iter()
            .map(|t| TicketRow {
                id: t.id,
                status: t.status.as_str(),
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
        (status = 200, description = "Marked read", body = api::ReadMarked),
        (status = 400, description = "invalid_json or validation_error (`field` names the field)", body = api::ErrorBody),
        (status = 401, description = "invalid_token: missing or unknown token or key", body = api::ErrorBody),
        (status = 403, description = "conversations_disabled, origin_not_allowed, forbidden (another visitor's ticket), identity_required, identity_invalid or blocked", body = api::ErrorBody),
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
    let team = widget_team(&req, &state).await?;
    let ticket_id = extract::uuid(&path, "ticket_id")?;
    let body = json_object(&req, payload).await?;
    let (distinct_id, key) = visitor_body(&team, &body)?;
    let ip = extract::peer_ip(&req, &state);
    let charged = admit(
        &state,
        &team,
        vec![read_check(&team, "read", &distinct_id)],
        ip,
        Some(distinct_id.as_str()),
    )
    .await?;
    charged.settle(mark_read_by(&state, team.id, ticket_id, key).await)
}

/// Both surfaces' mark-read: the ticket actor checks access, the store clears the visitor's
/// unread count, and the actor (and through it the open streams) learns the new facts.
pub(super) async fn mark_read_by(
    state: &AppState,
    team_id: Uuid,
    ticket_id: Uuid,
    key: VisitorKey,
) -> Result<HttpResponse, ApiError> {
    state
        .tickets
        .authorize(team_id, ticket_id, Some(key))
        .await?;
    let facts = state
        .store
        .mark_read_by_visitor(team_id, ticket_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    state.tickets.refresh(ticket_id, facts);
    Ok(HttpResponse::Ok().json(serde_json::json!({"success": true, "unread_count": 0})))
}

/// `POST /api/conversations/widget/typing` `{distinct_id, ticket_id}`: tells operators' streams.
#[utoipa::path(
    post,
    path = "/api/conversations/widget/typing",
    tag = "widget",
    request_body(content = api::TypingRequest, content_type = "application/json"),
    responses(
        (status = 204, description = "Operators' streams were told"),
        (status = 400, description = "invalid_json or validation_error (`field` names the field)", body = api::ErrorBody),
        (status = 401, description = "invalid_token: missing or unknown token or key", body = api::ErrorBody),
        (status = 403, description = "conversations_disabled, origin_not_allowed, forbidden (another visitor's ticket), identity_required, identity_invalid or blocked", body = api::ErrorBody),
        (status = 404, description = "not_found: unknown ticket (or another team's)", body = api::ErrorBody),
        (status = 413, description = "payload_too_large: body over 64 KiB", body = api::ErrorBody),
        (status = 429, description = "rate_limited; Retry-After header", body = api::ErrorBody),
        (status = 503, description = "unavailable (database unreachable) or overloaded (load shed); Retry-After header", body = api::ErrorBody)
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
    let (distinct_id, key) = visitor_body(&team, &body)?;
    let ticket_id = extract::uuid(req_str(&body, "ticket_id")?, "ticket_id")?;
    let ip = extract::peer_ip(&req, &state);
    let charged = admit(
        &state,
        &team,
        vec![read_check(&team, "typing", &distinct_id)],
        ip,
        Some(distinct_id.as_str()),
    )
    .await?;
    charged.settle(state.tickets.typing(team.id, ticket_id, Some(key)).await)?;
    state.cluster.typing(ticket_id, true);
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_empty_honeypots_pass() {
        let body = |v: Value| json!({ "_hp": v }).as_object().cloned().unwrap();
        assert!(!honeypot_filled(&Map::new()));
        assert!(!honeypot_filled(&body(json!(""))));
        assert!(!honeypot_filled(&body(json!(null))));
        assert!(!honeypot_filled(&body(json!(false))));
        assert!(honeypot_filled(&body(json!("http://spam"))));
        assert!(honeypot_filled(&body(json!(1))));
        assert!(honeypot_filled(&body(json!(true))));
    }

    #[test]
    fn ip_keys_are_what_to_string_writes() {
        for o in 0..=255u8 {
            for ip in [
                IpAddr::from([o, 0, 9, 10]),
                IpAddr::from([99, o, 100, 255]),
                IpAddr::from([1, 10, o, 200]),
                IpAddr::from([127, 0, 0, o]),
                IpAddr::from([0, 0, 0, 0, 0, 0xffff, u16::from(o), 1]),
            ] {
                assert_eq!(ip_key(ip), ip.to_string());
            }
        }
    }
}
