//! The OpenAPI 3 description of the whole HTTP API, generated from the handlers'
//! `#[utoipa::path]` attributes and served at `GET /api/openapi.json`.
//!
//! Most handlers build their answers with `serde_json::json!`, so the types below exist only
//! to document them: each mirrors, field for field, the JSON its handler (or the store query
//! behind it) produces. Nullable fields are always present (`required` + nullable); fields
//! that may be missing are `Option` without `required`. `tests/api/openapi.rs` checks that
//! this document and the registered routes ([`super::route_table`]) name the same
//! endpoints, and `scripts/fuzz.sh` runs schemathesis against it, which also checks that
//! real answers match these schemas.

use super::Endpoint;
use actix_web::http::Method;
use actix_web::HttpResponse;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use uuid::Uuid;

/// The route serving the document (registered at the root by [`super::routes`]).
pub fn endpoints() -> (&'static str, Vec<Endpoint>) {
    (
        "",
        vec![Endpoint::new(
            Method::GET,
            "/api/openapi.json",
            openapi_json,
        )],
    )
}

/// `GET /api/openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "ops",
    responses((status = 200, description = "The OpenAPI 3 description of this API", content_type = "application/json", body = Object))
)]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "colloquy",
        description = "Backend of an embeddable customer-support chat widget. The contract is \
                       shared/API.md; every error is `{\"error\", \"code\"}` (ErrorBody)."
    ),
    paths(
        super::widget::post_message,
        super::widget::get_messages,
        super::widget::get_tickets,
        super::widget::mark_read,
        super::widget::typing,
        super::stream::stream,
        super::widget_v1::post_message,
        super::widget_v1::get_messages,
        super::widget_v1::mark_read,
        super::widget_v1::get_tickets,
        super::restore::request,
        super::restore::redeem,
        super::operator::inbox,
        super::operator::ticket,
        super::operator::patch_ticket,
        super::operator::post_reply,
        super::operator::typing,
        super::operator_stream::operator_stream,
        super::operator_read::mark_read,
        super::operator::erase_person,
        super::operator::suspicious,
        super::operator::list_blocks,
        super::operator::create_block,
        super::operator::delete_block,
        super::operator::get_settings,
        super::operator::patch_settings,
        super::operator::rotate_public_token,
        super::operator::rotate_identity_secret,
        super::admin::create_team,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::actors,
        super::ops::cluster,
        super::ops::metrics,
        openapi_json,
    ),
    modifiers(&Security),
    tags(
        (name = "widget", description = "The documented widget surface (`X-Conversations-Token`; the visitor's distinct_id is the key)"),
        (name = "widget_v1", description = "The posthog-js compatible surface (`X-Conversations-Token`; a widget_session_id is the key)"),
        (name = "operator", description = "The operator API (bearer: the team's secret API key)"),
        (name = "admin", description = "Administration (bearer: ADMIN_TOKEN)"),
        (name = "ops", description = "Health, readiness, metrics and this document"),
    )
)]
pub struct ApiDoc;

/// Adds the three security schemes the paths refer to.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "widget_token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Conversations-Token",
                "The team's public widget token",
            ))),
        );
        components.add_security_scheme(
            "operator_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The team's secret API key"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The server's ADMIN_TOKEN"))
                    .build(),
            ),
        );
    }
}

// ---------------------------------------------------------------------------------------
// Errors

/// Every error: a sentence for a person and a machine code, plus `field` (validation
/// errors) or `retry_after` (429).
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// For a person.
    pub error: String,
    /// For a machine.
    #[schema(value_type = String, example = "validation_error")]
    pub code: ErrorCode,
    /// The field a `validation_error` is about.
    pub field: Option<String>,
    /// Seconds to wait (`rate_limited`); also the `Retry-After` header.
    #[schema(minimum = 1)]
    pub retry_after: Option<u64>,
}

/// The contract's error codes.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: body is not JSON / not an object.
    InvalidJson,
    /// 400: a field is missing, mistyped or out of range.
    ValidationError,
    /// 401 (403 on the v1 surface): missing or unknown token / key.
    InvalidToken,
    /// 403.
    ConversationsDisabled,
    /// 403.
    OriginNotAllowed,
    /// 403: another visitor's ticket.
    Forbidden,
    /// 403.
    IdentityRequired,
    /// 403.
    IdentityInvalid,
    /// 403.
    Blocked,
    /// 404: unknown ticket (or another team's), or unknown route.
    NotFound,
    /// 413.
    PayloadTooLarge,
    /// 429.
    RateLimited,
    /// 503: the database is unreachable.
    Unavailable,
    /// 503: load shed.
    Overloaded,
}

// ---------------------------------------------------------------------------------------
// Shared pieces

/// A ticket status.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TicketStatus {
    /// Just opened.
    New,
    /// Being worked on.
    Open,
    /// Waiting for the visitor.
    Pending,
    /// Parked.
    OnHold,
    /// Done.
    Resolved,
}

/// Who wrote a message.
#[derive(Serialize, ToSchema)]
pub enum AuthorType {
    /// The visitor.
    #[serde(rename = "customer")]
    Customer,
    /// A bot acting through the operator API.
    #[serde(rename = "AI")]
    Ai,
    /// A human operator.
    #[serde(rename = "human")]
    Human,
}

/// An operator's author type.
#[derive(Serialize, ToSchema)]
pub enum OperatorAuthorType {
    /// A bot.
    #[serde(rename = "AI")]
    Ai,
    /// A human.
    #[serde(rename = "human")]
    Human,
}

/// A trait value: a string (at most 500 characters), number, boolean or null; nothing nested.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum TraitValue {
    /// Text (at most 500 characters).
    String(String),
    /// A number.
    Number(f64),
    /// A boolean.
    Bool(bool),
    /// Null.
    Null,
}

/// The `{"success": true, "unread_count": 0}` of a read mark.
#[derive(Serialize, ToSchema)]
pub struct ReadMarked {
    /// Always true.
    pub success: bool,
    /// Always 0.
    pub unread_count: i32,
}

/// A team's rate budgets (every key present).
#[derive(Serialize, ToSchema)]
pub struct RateLimits {
    /// Documented surface: POSTs per visitor per minute.
    pub message_distinct_id_per_minute: u32,
    /// Documented surface: POSTs per client IP per minute.
    pub message_ip_per_minute: u32,
    /// Documented surface: POSTs per team per hour.
    pub message_team_per_hour: u32,
    /// Documented surface: GETs per visitor per minute.
    pub read_distinct_id_per_minute: u32,
    /// posthog-js surface: calls per widget session (or IP) per minute.
    pub widget_session_per_minute: u32,
    /// posthog-js surface: reads per team per hour.
    pub team_reads_per_hour: u32,
    /// posthog-js surface: writes per team per hour.
    pub team_writes_per_hour: u32,
    /// Restore requests per email per hour.
    pub restore_email_per_hour: u32,
    /// Restore requests per IP per minute.
    pub restore_ip_per_minute: u32,
    /// Both surfaces: every widget request per client IP (IPv6: per /64) per minute, refused
    /// ones and honeypot hits included; charged before any other budget.
    pub widget_ip_per_minute: u32,
}

/// Some rate budgets; the others keep their current (or default) values. Unknown keys: 400.
#[derive(Serialize, ToSchema)]
pub struct RateLimitsPatch {
    /// Documented surface: POSTs per visitor per minute.
    #[schema(minimum = 1)]
    pub message_distinct_id_per_minute: Option<u32>,
    /// Documented surface: POSTs per client IP per minute.
    #[schema(minimum = 1)]
    pub message_ip_per_minute: Option<u32>,
    /// Documented surface: POSTs per team per hour.
    #[schema(minimum = 1)]
    pub message_team_per_hour: Option<u32>,
    /// Documented surface: GETs per visitor per minute.
    #[schema(minimum = 1)]
    pub read_distinct_id_per_minute: Option<u32>,
    /// posthog-js surface: calls per widget session (or IP) per minute.
    #[schema(minimum = 1)]
    pub widget_session_per_minute: Option<u32>,
    /// posthog-js surface: reads per team per hour.
    #[schema(minimum = 1)]
    pub team_reads_per_hour: Option<u32>,
    /// posthog-js surface: writes per team per hour.
    #[schema(minimum = 1)]
    pub team_writes_per_hour: Option<u32>,
    /// Restore requests per email per hour.
    #[schema(minimum = 1)]
    pub restore_email_per_hour: Option<u32>,
    /// Restore requests per IP per minute.
    #[schema(minimum = 1)]
    pub restore_ip_per_minute: Option<u32>,
    /// Both surfaces: every widget request per client IP (IPv6: per /64) per minute.
    #[schema(minimum = 1)]
    pub widget_ip_per_minute: Option<u32>,
}

/// Points each suspicion rule adds, 0–100.
#[derive(Serialize, ToSchema)]
pub struct SuspicionWeights {
    /// Honeypot filled.
    pub honeypot: u8,
    /// The same text three times from one visitor.
    pub repeated_message: u8,
    /// The same text from three visitors.
    pub repeated_across_visitors: u8,
    /// Mostly links.
    pub link_density: u8,
    /// Many visitor keys from one IP.
    pub enumeration: u8,
    /// Repeated rate-limit refusals.
    pub rate_limited: u8,
    /// Many messages right after a ticket was opened.
    pub burst_after_creation: u8,
}

/// A team's spam-defence settings.
#[derive(Serialize, ToSchema)]
pub struct SuspicionSettings {
    /// Score from which a visitor is listed as suspicious.
    pub flag_threshold: u8,
    /// Score from which the IP is blocked.
    pub block_threshold: u8,
    /// How long an automatic block lasts.
    pub block_minutes: u32,
    /// Points per rule.
    pub weights: SuspicionWeights,
}

/// Identity verification mode.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IdentityVerification {
    /// Identity fields are ignored.
    Off,
    /// A wrong hash is refused, a missing one allowed.
    Optional,
    /// A hash is required.
    Required,
}

// ---------------------------------------------------------------------------------------
// The documented widget surface

/// `POST /api/conversations/widget/message`.
#[derive(Serialize, ToSchema)]
pub struct MessageRequest {
    /// The visitor: 1–200 characters, no whitespace or control characters, not trivially
    /// guessable.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^\S+$",
        example = "user@example.com"
    )]
    pub distinct_id: String,
    /// 1–10,000 characters after trimming.
    #[schema(min_length = 1, max_length = 10000)]
    pub message: String,
    /// At most 50 keys of 1–200 characters; scalar values.
    pub traits: Option<BTreeMap<String, TraitValue>>,
    /// A follow-up on this ticket; absent: a new ticket.
    pub ticket_id: Option<Uuid>,
    /// Idempotency key.
    #[schema(min_length = 1, max_length = 200)]
    pub client_message_id: Option<String>,
    /// hex(HMAC-SHA256(identity_secret, distinct_id)).
    pub identity_hash: Option<String>,
    /// Honeypot: real widgets send it empty.
    #[serde(rename = "_hp")]
    #[schema(max_length = 0)]
    pub hp: Option<String>,
}

/// The answer to a widget POST (`201` new, `200` idempotent replay).
#[derive(Serialize, ToSchema)]
pub struct MessageCreated {
    /// The ticket.
    pub ticket_id: Uuid,
    /// The message.
    pub message_id: Uuid,
    /// The ticket's status now.
    pub ticket_status: TicketStatus,
    /// RFC 3339, UTC, microseconds.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Operator messages the visitor has not read.
    pub unread_count: i32,
}

/// A message on the documented widget surface (HTML-escaped, never private).
#[derive(Serialize, ToSchema)]
pub struct WidgetMessage {
    /// Message id.
    pub id: Uuid,
    /// HTML-escaped text.
    pub content: String,
    /// Who wrote it.
    pub author_type: AuthorType,
    /// HTML-escaped author name.
    #[schema(required = true)]
    pub author_name: Option<String>,
    /// RFC 3339, UTC, microseconds.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Always false.
    pub is_private: bool,
}

/// `GET /api/conversations/widget/messages/{ticket_id}`.
#[derive(Serialize, ToSchema)]
pub struct MessagesPage {
    /// The ticket.
    pub ticket_id: Uuid,
    /// Its status.
    pub ticket_status: TicketStatus,
    /// Ascending `created_at`.
    pub messages: Vec<WidgetMessage>,
    /// More messages exist after the last one returned.
    pub has_more: bool,
    /// Operator messages the visitor has not read.
    pub unread_count: i32,
}

/// A ticket in the visitor's list.
#[derive(Serialize, ToSchema)]
pub struct WidgetTicket {
    /// Ticket id.
    pub id: Uuid,
    /// Status.
    pub status: TicketStatus,
    /// HTML-escaped preview of the last public message.
    #[schema(required = true)]
    pub last_message: Option<String>,
    /// When the last message was written.
    #[schema(required = true, format = DateTime)]
    pub last_message_at: Option<String>,
    /// Public messages.
    pub message_count: i32,
    /// Unread operator messages.
    pub unread_count: i32,
    /// RFC 3339, UTC.
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// `GET /api/conversations/widget/tickets`.
#[derive(Serialize, ToSchema)]
pub struct WidgetTickets {
    /// Total matching the filter.
    pub count: i64,
    /// Newest activity first.
    pub results: Vec<WidgetTicket>,
}

/// The visitor of a small POST (`read`).
#[derive(Serialize, ToSchema)]
pub struct VisitorRequest {
    /// The visitor.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^\S+$",
        example = "user@example.com"
    )]
    pub distinct_id: String,
    /// Identity verification hash.
    pub identity_hash: Option<String>,
}

/// `POST /api/conversations/widget/typing`.
#[derive(Serialize, ToSchema)]
pub struct TypingRequest {
    /// The visitor.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^\S+$",
        example = "user@example.com"
    )]
    pub distinct_id: String,
    /// The ticket.
    pub ticket_id: Uuid,
    /// Identity verification hash.
    pub identity_hash: Option<String>,
}

// ---------------------------------------------------------------------------------------
// The posthog-js surface

/// `POST /api/conversations/v1/widget/message`.
#[derive(Serialize, ToSchema)]
pub struct V1MessageRequest {
    /// The key to the visitor's tickets (or the identity fields).
    pub widget_session_id: Option<Uuid>,
    /// With identity verification: the verified person.
    pub identity_distinct_id: Option<String>,
    /// With identity verification: its hash.
    pub identity_hash: Option<String>,
    /// Links the ticket to a person (≤ 400 characters); never grants access.
    #[schema(max_length = 400)]
    pub distinct_id: Option<String>,
    /// 1–10,000 characters after trimming.
    #[schema(min_length = 1, max_length = 10000)]
    pub message: String,
    /// Merged; non-scalar values dropped.
    #[schema(value_type = Option<Object>)]
    pub traits: Option<Value>,
    /// A follow-up on this ticket; null: a new ticket.
    pub ticket_id: Option<Uuid>,
    /// The SDK's session id (ignored).
    pub session_id: Option<String>,
    /// At most 20 scalar values.
    pub session_context: Option<BTreeMap<String, TraitValue>>,
    /// Honeypot: truthy → 400.
    #[serde(rename = "_hp")]
    #[schema(max_length = 0)]
    pub hp: Option<String>,
}

/// The answer to a v1 POST.
#[derive(Serialize, ToSchema)]
pub struct V1MessageCreated {
    /// The ticket.
    pub ticket_id: Uuid,
    /// The message.
    pub message_id: Uuid,
    /// The ticket's status.
    pub ticket_status: TicketStatus,
    /// Unread operator messages.
    pub unread_count: i32,
    /// Microseconds and an explicit offset (`…123456+00:00`), to be sent back verbatim.
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A message on the v1 surface (raw text, no `is_private` key).
#[derive(Serialize, ToSchema)]
pub struct V1Message {
    /// Message id.
    pub id: Uuid,
    /// Raw text.
    pub content: String,
    /// Rich content, if any.
    #[schema(required = true, value_type = Option<Object>)]
    pub rich_content: Option<Value>,
    /// Who wrote it.
    pub author_type: AuthorType,
    /// Author name.
    #[schema(required = true)]
    pub author_name: Option<String>,
    /// Microseconds and an explicit offset.
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// `GET /api/conversations/v1/widget/messages/{ticket_id}`.
#[derive(Serialize, ToSchema)]
pub struct V1MessagesPage {
    /// The ticket.
    pub ticket_id: Uuid,
    /// Its status.
    pub ticket_status: TicketStatus,
    /// Unread operator messages.
    pub unread_count: i32,
    /// Ascending `created_at`.
    pub messages: Vec<V1Message>,
    /// More exist.
    pub has_more: bool,
}

/// `POST /api/conversations/v1/widget/messages/{ticket_id}/read`.
#[derive(Serialize, ToSchema)]
pub struct V1ReadRequest {
    /// The key (or the identity fields).
    pub widget_session_id: Option<Uuid>,
    /// With identity verification.
    pub identity_distinct_id: Option<String>,
    /// With identity verification.
    pub identity_hash: Option<String>,
}

/// A ticket in the v1 list.
#[derive(Serialize, ToSchema)]
pub struct V1Ticket {
    /// Ticket id.
    pub id: Uuid,
    /// Counts up per team from 1.
    pub ticket_number: i64,
    /// Status.
    pub status: TicketStatus,
    /// Unread operator messages.
    pub unread_count: i32,
    /// Raw preview of the last public message.
    #[schema(required = true)]
    pub last_message: Option<String>,
    /// When it was written.
    #[schema(required = true, format = DateTime)]
    pub last_message_at: Option<String>,
    /// Public messages.
    pub message_count: i32,
    /// Opened.
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// `GET /api/conversations/v1/widget/tickets`.
#[derive(Serialize, ToSchema)]
pub struct V1Tickets {
    /// Total.
    pub count: i64,
    /// Newest first.
    pub results: Vec<V1Ticket>,
}

/// `POST /api/conversations/v1/widget/restore/request`.
#[derive(Serialize, ToSchema)]
pub struct RestoreRequest {
    /// Where to mail the link.
    #[schema(max_length = 254, example = "ann@example.com")]
    pub email: String,
    /// The page the link leads back to: an absolute http(s) URL without userinfo, whitespace,
    /// control characters or backslashes, on an allowed widget domain; anything else is
    /// answered the same and mails nothing.
    #[schema(max_length = 2000, example = "https://shop.example.com/help")]
    pub request_url: String,
}

/// Always `{"ok": true}`.
#[derive(Serialize, ToSchema)]
pub struct RestoreRequested {
    /// True.
    pub ok: bool,
}

/// `POST /api/conversations/v1/widget/restore`.
#[derive(Serialize, ToSchema)]
pub struct RedeemRequest {
    /// The token from the mailed link.
    pub restore_token: String,
    /// The new session.
    pub widget_session_id: Uuid,
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
pub struct Redeemed {
    /// Outcome.
    pub status: RedeemStatus,
    /// On success: the session the tickets now belong to.
    pub widget_session_id: Option<Uuid>,
    /// On success: the tickets moved.
    pub migrated_ticket_ids: Option<Vec<Uuid>>,
}

// ---------------------------------------------------------------------------------------
// The operator API

/// A ticket as operators see it (counts and previews include private notes).
#[derive(Serialize, ToSchema)]
pub struct OperatorTicket {
    /// Ticket id.
    pub id: Uuid,
    /// Per team from 1.
    pub ticket_number: i64,
    /// Status.
    pub status: TicketStatus,
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

/// A message as operators see it (unescaped, private notes included).
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
    pub author_type: AuthorType,
    /// Author name.
    #[schema(required = true)]
    pub author_name: Option<String>,
    /// A private note.
    pub is_private: bool,
    /// RFC 3339, UTC.
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// `GET /api/conversations/tickets/{ticket_id}`: the ticket and all its messages.
#[derive(Serialize, ToSchema)]
pub struct OperatorTicketWithMessages {
    /// Ticket id.
    pub id: Uuid,
    /// Per team from 1.
    pub ticket_number: i64,
    /// Status.
    pub status: TicketStatus,
    /// The visitor.
    #[schema(required = true)]
    pub distinct_id: Option<String>,
    /// The v1 session key.
    #[schema(required = true)]
    pub widget_session_id: Option<Uuid>,
    /// Assigned operator.
    #[schema(required = true)]
    pub assignee: Option<String>,
    /// Traits.
    #[schema(value_type = Object)]
    pub traits: Value,
    /// All messages.
    pub message_count: i64,
    /// Unread by operators.
    pub unread_team_count: i32,
    /// Last message.
    #[schema(required = true)]
    pub last_message: Option<String>,
    /// When.
    #[schema(required = true, format = DateTime)]
    pub last_message_at: Option<String>,
    /// Opened.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Highest suspicion score.
    pub suspicion_score: i32,
    /// When the visitor last marked it read.
    #[schema(required = true, format = DateTime)]
    pub visitor_read_at: Option<String>,
    /// Every message, ascending.
    pub messages: Vec<OperatorMessage>,
}

/// `GET /api/conversations/tickets`.
#[derive(Serialize, ToSchema)]
pub struct Inbox {
    /// Total matching.
    pub count: i64,
    /// Newest activity first.
    pub results: Vec<OperatorTicket>,
}

/// `PATCH /api/conversations/tickets/{ticket_id}`; other keys: 400.
#[derive(Serialize, ToSchema)]
pub struct PatchTicketRequest {
    /// New status.
    pub status: Option<TicketStatus>,
    /// New assignee (≤ 200 characters); null unassigns.
    #[schema(max_length = 200)]
    pub assignee: Option<String>,
}

/// `POST /api/conversations/tickets/{ticket_id}/messages`.
#[derive(Serialize, ToSchema)]
pub struct ReplyRequest {
    /// 1–10,000 characters after trimming.
    #[schema(min_length = 1, max_length = 10000)]
    pub content: String,
    /// Default `human`.
    pub author_type: Option<OperatorAuthorType>,
    /// Shown to the visitor.
    #[schema(max_length = 200)]
    pub author_name: Option<String>,
    /// A private note, never shown to the visitor.
    pub is_private: Option<bool>,
}

/// The stored reply.
#[derive(Serialize, ToSchema)]
pub struct ReplyCreated {
    /// Message id.
    pub id: Uuid,
    /// The ticket.
    pub ticket_id: Uuid,
    /// Text.
    pub content: String,
    /// Rich content.
    #[schema(required = true, value_type = Option<Object>)]
    pub rich_content: Option<Value>,
    /// `human` or `AI`.
    pub author_type: AuthorType,
    /// Author name.
    #[schema(required = true)]
    pub author_name: Option<String>,
    /// A private note.
    pub is_private: bool,
    /// RFC 3339, UTC.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The ticket's status after the reply.
    pub ticket_status: TicketStatus,
}

/// `DELETE /api/conversations/persons/{distinct_id}`.
#[derive(Serialize, ToSchema)]
pub struct PersonErased {
    /// Tickets erased.
    pub deleted_tickets: u64,
}

/// A visitor or IP flagged by the suspicion detector.
#[derive(Serialize, ToSchema)]
pub struct SuspiciousEntry {
    /// The visitor, if known.
    #[schema(required = true)]
    pub distinct_id: Option<String>,
    /// The IP, if known.
    #[schema(required = true)]
    pub ip: Option<String>,
    /// Highest score.
    pub score: i32,
    /// Rules that fired.
    pub reasons: Vec<String>,
    /// Tickets involved.
    pub ticket_ids: Vec<Uuid>,
    /// Last observation.
    #[schema(format = DateTime)]
    pub last_seen_at: String,
    /// Details.
    #[schema(required = true)]
    pub details: Option<String>,
}

/// `GET /api/conversations/suspicious`.
#[derive(Serialize, ToSchema)]
pub struct Suspicious {
    /// The team's flag threshold.
    pub flag_threshold: i16,
    /// The team's block threshold.
    pub block_threshold: u8,
    /// Highest score first.
    pub results: Vec<SuspiciousEntry>,
}

/// A block.
#[derive(Serialize, ToSchema)]
pub struct Block {
    /// Block id.
    pub id: Uuid,
    /// Blocked IP.
    #[schema(required = true)]
    pub ip: Option<String>,
    /// Blocked visitor.
    #[schema(required = true)]
    pub distinct_id: Option<String>,
    /// Why.
    pub reason: String,
    /// `operator` or `detector`.
    pub source: String,
    /// When it ends; null: never.
    #[schema(required = true, format = DateTime)]
    pub expires_at: Option<String>,
    /// Created.
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// `GET /api/conversations/blocks`.
#[derive(Serialize, ToSchema)]
pub struct Blocks {
    /// Active blocks, newest first.
    pub results: Vec<Block>,
}

/// `POST /api/conversations/blocks`: exactly one of `ip` and `distinct_id`; other keys: 400.
#[derive(Serialize, ToSchema)]
pub struct BlockRequest {
    /// An IPv4 or IPv6 address; an IPv6 address blocks its whole /64.
    pub ip: Option<String>,
    /// A visitor (≤ 400 characters).
    #[schema(max_length = 400)]
    pub distinct_id: Option<String>,
    /// Why (≤ 500 characters).
    #[schema(max_length = 500)]
    pub reason: Option<String>,
    /// When it ends (RFC 3339).
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
}

/// A team's settings.
#[derive(Serialize, ToSchema)]
pub struct Settings {
    /// Team id.
    pub team_id: Uuid,
    /// Name.
    pub name: String,
    /// Widget token.
    pub public_token: String,
    /// Widget API switch.
    pub conversations_enabled: bool,
    /// Hosts the widget may be embedded on (empty: anywhere).
    pub allowed_widget_domains: Vec<String>,
    /// Rate budgets.
    pub rate_limits: RateLimits,
    /// Identity verification mode.
    pub identity_verification: IdentityVerification,
    /// HMAC key for identity verification.
    pub identity_secret: String,
    /// Who is mailed about new tickets.
    pub notification_recipients: Vec<String>,
    /// Spam-defence settings.
    pub suspicion: SuspicionSettings,
}

/// `PATCH /api/conversations/settings`: only the keys given change; other keys: 400.
#[derive(Serialize, ToSchema)]
pub struct SettingsPatch {
    /// Widget API switch.
    pub conversations_enabled: Option<bool>,
    /// At most 100 host names.
    #[schema(max_items = 100)]
    pub allowed_widget_domains: Option<Vec<String>>,
    /// Some budgets.
    pub rate_limits: Option<RateLimitsPatch>,
    /// Identity verification mode.
    pub identity_verification: Option<IdentityVerification>,
    /// At most 20 email addresses.
    #[schema(max_items = 20)]
    pub notification_recipients: Option<Vec<String>>,
    /// Some spam-defence settings (merged over the current ones).
    #[schema(value_type = Option<Object>)]
    pub suspicion: Option<Value>,
}

/// The new widget token.
#[derive(Serialize, ToSchema)]
pub struct PublicTokenRotated {
    /// The old one stops working at once.
    pub public_token: String,
}

/// The new identity secret.
#[derive(Serialize, ToSchema)]
pub struct IdentitySecretRotated {
    /// The new HMAC key.
    pub identity_secret: String,
}

// ---------------------------------------------------------------------------------------
// Administration and operations

/// `POST /api/teams`; other keys: 400.
#[derive(Serialize, ToSchema)]
pub struct NewTeamRequest {
    /// 1–200 characters.
    #[schema(min_length = 1, max_length = 200, example = "Acme")]
    pub name: String,
    /// Default true.
    pub conversations_enabled: Option<bool>,
    /// At most 100 host names; default: anywhere.
    #[schema(max_items = 100)]
    pub allowed_widget_domains: Option<Vec<String>>,
    /// Budgets (defaults for the keys not given).
    pub rate_limits: Option<RateLimitsPatch>,
    /// Default off.
    pub identity_verification: Option<IdentityVerification>,
    /// Spam-defence settings (defaults for the keys not given).
    #[schema(value_type = Option<Object>)]
    pub suspicion: Option<Value>,
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

/// `{"status": "ok"}` / `{"status": "ready"}`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: String,
}

/// Counters of one actor kind.
#[derive(Serialize, ToSchema)]
pub struct ActorStats {
    /// Running now.
    pub alive: i64,
    /// Waiting in queues now.
    pub queued: i64,
    /// The most that ever waited at once.
    pub peak_queued: i64,
    /// Handled since start.
    pub handled: u64,
    /// Handled with an error.
    pub errors: u64,
    /// Restarts after a fault.
    pub restarts: u64,
    /// Idle stops.
    pub evictions: u64,
    /// Refused or dropped because a queue was full.
    pub dropped: u64,
}

/// The database pool.
#[derive(Serialize, ToSchema)]
pub struct PoolStats {
    /// Open connections.
    pub size: u64,
    /// Most connections.
    pub max_size: u64,
    /// Idle connections.
    pub available: u64,
    /// Requests waiting for a connection.
    pub waiting: u64,
}

/// Where rate budgets are decided (`colloquy_actors::rate_limiter::BudgetsStatus`).
#[derive(Serialize, ToSchema)]
pub struct RateLimitBudgets {
    /// `local` (no `REDIS_URL`), `cluster` (Redis decides) or `fallback` (Redis unreachable:
    /// each node allows limit / `live_nodes`).
    pub mode: String,
    /// Nodes sharing the budgets, this one included.
    pub live_nodes: u64,
    /// Times Redis was given up for local budgets since start.
    pub fallbacks: u64,
    /// Checks decided locally while Redis was unreachable.
    pub fallback_checks: u64,
    /// Calls made to Redis for budgets since start.
    pub store_calls: u64,
}

/// `GET /api/ops/actors`.
#[derive(Serialize, ToSchema)]
pub struct Actors {
    /// Rate limiters: one actor per active team on this node.
    pub rate_limiters: ActorStats,
    /// Where rate budgets are decided: this node alone, the cluster's Redis, or this node's
    /// share while Redis is away.
    pub rate_limit_budgets: RateLimitBudgets,
    /// Ticket actors.
    pub ticket_actors: ActorStats,
    /// The suspicion detector.
    pub suspicion_detector: ActorStats,
    /// The restore queue and mail delivery: `queued` restore requests and wake-ups waiting,
    /// `handled` looked up or delivered, `dropped` refused by a full queue, `errors` failed
    /// lookups or deliveries.
    pub mailer: ActorStats,
    /// The database pool.
    pub database_pool: PoolStats,
    /// The ticket supervisor itself: `handled` counts spawns, sweeps and drains.
    pub ticket_supervisor: ActorStats,
    /// The group committer of message appends.
    pub group_committer: GroupCommitStats,
    /// Server-Sent Event streams open now (visitors' and operators').
    pub sse_streams_open: i64,
    /// Rate-limit refusals since start, by tier (every tier, zeros included).
    #[schema(value_type = Object)]
    pub rate_limited: BTreeMap<String, u64>,
    /// HTTP requests answered since start.
    pub http: HttpTotals,
}

/// `POST /api/conversations/tickets/{ticket_id}/read`.
#[derive(Serialize, ToSchema)]
pub struct OperatorRead {
    /// Always true.
    pub success: bool,
    /// Always 0: the team has read every visitor message of the ticket.
    pub unread_team_count: i32,
}

/// The group committer: appends of many tickets share one transaction.
#[derive(Serialize, ToSchema)]
pub struct GroupCommitStats {
    /// Whether the committer runs.
    pub running: bool,
    /// Appends waiting for a transaction now.
    pub queued: i64,
    /// The most that may wait; beyond it a POST is shed with `503 overloaded`.
    pub capacity: i64,
    /// Transactions running now.
    pub in_flight: i64,
    /// The most that run at once.
    pub max_in_flight: i64,
    /// Transactions since start.
    pub transactions: u64,
    /// Transactions that failed as a whole.
    pub failed: u64,
    /// Appends shed because the queue was full.
    pub dropped: u64,
}

/// Requests answered since start.
#[derive(Serialize, ToSchema)]
pub struct HttpTotals {
    /// Every answer.
    pub requests: u64,
    /// Answers with a 5xx status.
    pub server_errors: u64,
}
