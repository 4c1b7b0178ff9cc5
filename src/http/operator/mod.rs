//! The operator API (bearer team secret key, every call scoped to that team): the inbox, a
//! ticket with every message (private notes included, unescaped), replies and private notes
//! (appended through the same ticket actor as visitors' messages), status and assignment,
//! typing, and erasing a visitor. The team's settings and the spam tools are in the
//! submodules.

pub(super) mod settings;
pub(super) mod spam;

use super::errors::{ApiError, NotFound, OperatorRefusals, PayloadTooLarge};
use super::extract::{self, json_object, operator_team, opt_str};
use super::openapi as api;
use super::wire::{self, Created};
use super::{AppState, Endpoint};
use crate::store::{InboxFilter, OperatorMessageRow, OperatorTicketRow};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use colloquy_actors::domain::{format_utc, AuthorName, AuthorType, MessageContent, TicketStatus};
use colloquy_actors::store::{AppendResult, NewMessage, StoredMessage};
use serde::Serialize;
use serde_json::Value;
use settings::{get_settings, patch_settings, rotate_identity_secret, rotate_public_token};
use spam::{create_block, delete_block, list_blocks, suspicious};
use utoipa::ToSchema;
use uuid::Uuid;

/// The operator routes (registered by [`super::routes`]).
pub fn endpoints() -> (&'static str, Vec<Endpoint>) {
    (
        "/api/conversations",
        vec![
            Endpoint::new(Method::GET, "/tickets", inbox),
            Endpoint::new(Method::GET, "/tickets/{ticket_id}", ticket),
            Endpoint::new(Method::PATCH, "/tickets/{ticket_id}", patch_ticket),
            Endpoint::new(Method::POST, "/tickets/{ticket_id}/messages", post_reply),
            Endpoint::new(Method::POST, "/tickets/{ticket_id}/typing", typing),
            Endpoint::new(
                Method::GET,
                "/tickets/{ticket_id}/stream",
                super::operator_stream::operator_stream,
            ),
            Endpoint::new(
                Method::POST,
                "/tickets/{ticket_id}/read",
                super::operator_read::mark_read,
            ),
            Endpoint::new(Method::DELETE, "/persons/{distinct_id}", erase_person),
            Endpoint::new(Method::GET, "/suspicious", suspicious),
            Endpoint::new(Method::GET, "/blocks", list_blocks),
            Endpoint::new(Method::POST, "/blocks", create_block),
            Endpoint::new(Method::DELETE, "/blocks/{block_id}", delete_block),
            Endpoint::new(Method::GET, "/settings", get_settings),
            Endpoint::new(Method::PATCH, "/settings", patch_settings),
            Endpoint::new(
                Method::POST,
                "/settings/rotate_public_token",
                rotate_public_token,
            ),
            Endpoint::new(
                Method::POST,
                "/settings/rotate_identity_secret",
                rotate_identity_secret,
            ),
        ],
    )
}

/// `GET /api/conversations/tickets`: the inbox, newest activity first.
#[utoipa::path(
    get,
    path = "/api/conversations/tickets",
    tag = "operator",
    params(
        ("status" = Option<wire::TicketStatus>, Query, description = "Only this status"),
        ("distinct_id" = Option<String>, Query, description = "Only this visitor"),
        ("assignee" = Option<String>, Query, description = "Only this assignee"),
        ("limit" = Option<i64>, Query, description = "Default 50, clamped to 1..500"),
        ("offset" = Option<i64>, Query, description = "Default 0")
    ),
    responses(
        (status = 200, description = "The inbox, newest activity first", body = Inbox),
        OperatorRefusals,
    ),
    security(("operator_key" = []))
)]
async fn inbox(req: HttpRequest, state: web::Data<AppState>) -> Result<web::Json<Inbox>, ApiError> {
    let team = operator_team(&req, &state).await?;
    let q = extract::query(&req)?;
    let non_empty = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
    let filter = InboxFilter {
        status: non_empty("status")
            .map(|s| TicketStatus::parse(&s, "status"))
            .transpose()?,
        distinct_id: non_empty("distinct_id"),
        assignee: non_empty("assignee"),
    };
    let limit = extract::clamped(&q, "limit", 50, 1, 500)?;
    let offset = extract::clamped(&q, "offset", 0, 0, 1_000_000_000)?;
    let (count, results) = state.store.inbox(team.id, &filter, limit, offset).await?;
    Ok(web::Json(Inbox {
        count,
        results: results.into_iter().map(OperatorTicket::from).collect(),
    }))
}

/// `GET /api/conversations/tickets`.
#[derive(Serialize, ToSchema)]
pub struct Inbox {
    /// Total matching.
    pub count: i64,
    /// Newest activity first.
    pub results: Vec<OperatorTicket>,
}

/// A ticket as operators see it (counts and previews include private notes).
#[derive(Serialize, ToSchema)]
pub struct OperatorTicket {
    /// Ticket id.
    pub id: Uuid,
    /// Per team from 1.
    pub ticket_number: i64,
    /// Status.
    pub status: wire::TicketStatus,
    /// The visitor (for a v1 ticket: the verified person it is linked to, else the
    /// distinct_id its visitor named, unproven).
    #[schema(required = true)]
    pub distinct_id: Option<String>,
    /// The v1 session key, for tickets opened there.
    #[schema(required = true)]
    pub widget_session_id: Option<Uuid>,
    /// Assigned operator.
    #[schema(required = true)]
    pub assignee: Option<String>,
    /// The visitor's traits.
    #[schema(value_type = Object)]
    pub traits: Value,
    /// All messages.
    pub message_count: i64,
    /// Visitor messages operators have not read.
    pub unread_team_count: i32,
    /// Last message, private notes included.
    #[schema(required = true)]
    pub last_message: Option<String>,
    /// When.
    #[schema(required = true, format = DateTime)]
    pub last_message_at: Option<String>,
    /// Opened.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Highest suspicion score of the ticket.
    pub suspicion_score: i32,
    /// When the visitor last marked it read.
    #[schema(required = true, format = DateTime)]
    pub visitor_read_at: Option<String>,
}

impl From<OperatorTicketRow> for OperatorTicket {
    fn from(t: OperatorTicketRow) -> Self {
        Self {
            id: t.id,
            ticket_number: t.ticket_number,
            status: t.status.into(),
            distinct_id: t.distinct_id,
            widget_session_id: t.widget_session_id,
            assignee: t.assignee,
            traits: t.traits,
            message_count: t.message_count,
            unread_team_count: t.unread_team_count,
            last_message: t.last_message,
            last_message_at: t.last_message_at.map(format_utc),
            created_at: format_utc(t.created_at),
            suspicion_score: t.suspicion_score,
            visitor_read_at: t.visitor_read_at.map(format_utc),
        }
    }
}

/// A message as operators see it (unescaped, private notes included); also the `message`
/// event of their stream.
#[derive(Serialize, ToSchema)]
pub struct OperatorMessage {
    /// Message id.
    pub id: Uuid,
    /// Raw text.
    pub content: String,
    /// Rich content, if any.
    #[schema(required = true, value_type = Option<Object>)]
    pub rich_content: Option<Value>,
    /// Who wrote it.
    pub author_type: wire::AuthorType,
    /// Author name.
    #[schema(required = true)]
    pub author_name: Option<String>,
    /// A private note.
    pub is_private: bool,
    /// RFC 3339, UTC.
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<OperatorMessageRow> for OperatorMessage {
    fn from(m: OperatorMessageRow) -> Self {
        Self {
            id: m.id,
            content: m.content,
            rich_content: m.rich_content,
            author_type: m.author_type.into(),
            author_name: m.author_name,
            is_private: m.is_private,
            created_at: format_utc(m.created_at),
        }
    }
}

impl From<&StoredMessage> for OperatorMessage {
    fn from(m: &StoredMessage) -> Self {
        Self {
            id: m.id,
            content: m.content.clone(),
            rich_content: m.rich_content.clone(),
            author_type: m.author_type.into(),
            author_name: m.author_name.clone(),
            is_private: m.is_private,
            created_at: format_utc(m.created_at),
        }
    }
}

/// `GET /api/conversations/tickets/{ticket_id}`: the ticket and all its messages.
#[derive(Serialize, ToSchema)]
pub struct OperatorTicketWithMessages {
    /// The ticket.
    #[serde(flatten)]
    pub ticket: OperatorTicket,
    /// Every message, ascending.
    pub messages: Vec<OperatorMessage>,
}

/// `GET /api/conversations/tickets/{id}`: the ticket and all its messages.
#[utoipa::path(
    get,
    path = "/api/conversations/tickets/{ticket_id}",
    tag = "operator",
    params(
        ("ticket_id" = Uuid, Path, description = "The ticket")
    ),
    responses(
        (status = 200, description = "The ticket and all its messages", body = OperatorTicketWithMessages),
        OperatorRefusals,
        NotFound,
    ),
    security(("operator_key" = []))
)]
async fn ticket(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<web::Json<OperatorTicketWithMessages>, ApiError> {
    let team = operator_team(&req, &state).await?;
    let ticket_id = extract::uuid(&path, "ticket_id")?;
    let found = state.store.ticket_with_messages(team.id, ticket_id).await?;
    let (ticket, messages) = found.ok_or(ApiError::NotFound)?;
    Ok(web::Json(OperatorTicketWithMessages {
        ticket: ticket.into(),
        messages: messages.into_iter().map(OperatorMessage::from).collect(),
    }))
}

/// `PATCH /api/conversations/tickets/{id}` `{status?, assignee?}`.
#[utoipa::path(
    patch,
    path = "/api/conversations/tickets/{ticket_id}",
    tag = "operator",
    params(
        ("ticket_id" = Uuid, Path, description = "The ticket")
    ),
    request_body(content = api::PatchTicketRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The ticket (without messages)", body = OperatorTicket),
        OperatorRefusals,
        NotFound,
        PayloadTooLarge,
    ),
    security(("operator_key" = []))
)]
async fn patch_ticket(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<web::Json<OperatorTicket>, ApiError> {
    let team = operator_team(&req, &state).await?;
    let ticket_id = extract::uuid(&path, "ticket_id")?;
    let body = json_object(&req, payload).await?;
    if let Some(unknown) = body
        .keys()
        .find(|k| !["status", "assignee"].contains(&k.as_str()))
    {
        return Err(ApiError::invalid(unknown, "unknown field"));
    }
    let status = opt_str(&body, "status")?
        .map(|s| TicketStatus::parse(s, "status"))
        .transpose()?;
    let assignee = match body.get("assignee") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(s)) if s.chars().count() <= 200 && !s.contains('\0') => {
            Some(Some(s.trim().to_owned()).filter(|s| !s.is_empty()))
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "assignee",
                "assignee must be a string of at most 200 characters or null",
            ))
        }
    };
    let facts = state
        .store
        .patch_ticket(team.id, ticket_id, status, assignee)
        .await?
        .ok_or(ApiError::NotFound)?;
    state.tickets.refresh(ticket_id, facts);
    let ticket = state.store.ticket(team.id, ticket_id).await?;
    Ok(web::Json(ticket.ok_or(ApiError::NotFound)?.into()))
}

/// `POST /api/conversations/tickets/{id}/typing`: tells the visitor's open streams.
#[utoipa::path(
    post,
    path = "/api/conversations/tickets/{ticket_id}/typing",
    tag = "operator",
    params(
        ("ticket_id" = Uuid, Path, description = "The ticket")
    ),
    responses(
        (status = 204, description = "The visitor's streams were told"),
        OperatorRefusals,
        NotFound,
    ),
    security(("operator_key" = []))
)]
async fn typing(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let team = operator_team(&req, &state).await?;
    let ticket_id = extract::uuid(&path, "ticket_id")?;
    state.tickets.typing(team.id, ticket_id, None).await?;
    state.cluster.typing(ticket_id, false);
    Ok(HttpResponse::NoContent().finish())
}

/// `DELETE /api/conversations/persons/{distinct_id}`: erases everything stored about the
/// visitor (tickets, messages, flags, blocks, restore tokens, mails) for data-protection requests.
#[utoipa::path(
    delete,
    path = "/api/conversations/persons/{distinct_id}",
    tag = "operator",
    params(
        ("distinct_id" = String, Path, description = "The visitor (1 to 400 characters)")
    ),
    responses(
        (status = 200, description = "Erased", body = PersonErased),
        OperatorRefusals,
    ),
    security(("operator_key" = []))
)]
async fn erase_person(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<web::Json<PersonErased>, ApiError> {
    let team = operator_team(&req, &state).await?;
    let distinct_id = path.trim();
    if distinct_id.contains('\0') {
        return Err(extract::no_nul("distinct_id"));
    }
    if distinct_id.is_empty() || distinct_id.chars().count() > 400 {
        return Err(ApiError::invalid(
            "distinct_id",
            "distinct_id must be 1 to 400 characters",
        ));
    }
    let erased = state.store.erase_person(team.id, distinct_id).await?;
    for id in &erased {
        state.tickets.evict(*id).await;
    }
    tracing::info!(team_id = %team.id, tickets = erased.len(), "erased a visitor");
    Ok(web::Json(PersonErased {
        deleted_tickets: erased.len() as u64,
    }))
}

/// `DELETE /api/conversations/persons/{distinct_id}`.
#[derive(Serialize, ToSchema)]
pub struct PersonErased {
    /// Tickets erased.
    pub deleted_tickets: u64,
}

/// `POST /api/conversations/tickets/{id}/messages`: a reply (`human` or `AI`) or a private note.
#[utoipa::path(
    post,
    path = "/api/conversations/tickets/{ticket_id}/messages",
    tag = "operator",
    params(
        ("ticket_id" = Uuid, Path, description = "The ticket")
    ),
    request_body(content = api::ReplyRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored", body = ReplyCreated),
        OperatorRefusals,
        NotFound,
        PayloadTooLarge,
    ),
    security(("operator_key" = []))
)]
async fn post_reply(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<Created<ReplyCreated>, ApiError> {
    let team = operator_team(&req, &state).await?;
    tracing::Span::current().record("team_id", tracing::field::display(team.id));
    let ticket_id = extract::uuid(&path, "ticket_id")?;
    let body = json_object(&req, payload).await?;
    let content = MessageContent::parse(extract::req_text(&body, "content")?, "content")?;
    let author_type = match opt_str(&body, "author_type")? {
        None => AuthorType::Human,
        Some(raw) => AuthorType::parse_operator(raw)?,
    };
    let author_name = opt_str(&body, "author_name")?
        .map(|n| AuthorName::parse(n, "author_name"))
        .transpose()?
        .flatten();
    let is_private = match body.get("is_private") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::invalid(
                "is_private",
                "is_private must be a boolean",
            ))
        }
    };
    let message = NewMessage {
        author_name: author_name.map(|n| n.as_str().to_owned()),
        is_private,
        ..NewMessage::new(content.into_string(), author_type)
    };
    let appended = state
        .tickets
        .append(team.id, ticket_id, None, message)
        .await?;
    let AppendResult::Stored(m) = appended.result else {
        return Err(ApiError::Internal("operator message was not stored".into()));
    };
    Ok(Created(ReplyCreated {
        message: OperatorMessage::from(&m),
        ticket_id,
        ticket_status: appended.status.into(),
    }))
}

/// The stored reply: the message as operators see it, its ticket and the ticket's status.
#[derive(Serialize, ToSchema)]
pub struct ReplyCreated {
    /// The message.
    #[serde(flatten)]
    pub message: OperatorMessage,
    /// The ticket.
    pub ticket_id: Uuid,
    /// The ticket's status after the reply.
    pub ticket_status: wire::TicketStatus,
}
