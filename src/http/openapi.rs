//! The OpenAPI 3 description of the whole HTTP API, served at `GET /api/openapi.json` and
//! derived from the code that answers: each handler's `#[utoipa::path]` names the type it
//! returns, which is the struct it serializes (`#[derive(Serialize, ToSchema)]`, beside the
//! handler, or in [`super::wire`] when surfaces share it); every refusal is
//! [`super::errors::ErrorBody`], whose `code` is the [`super::errors::ErrorCode`] the error
//! mapping answers with, and the refusals a path lists are the shared `IntoResponses` types
//! of [`super::errors`]. No response shape is written here.
//!
//! What is written here are the request bodies: handlers parse them field by field (so a
//! refusal names the field), not through a type, and the types below describe what they
//! accept. Nullable fields are always present (`required` + nullable); fields that may be
//! missing are `Option` without `required`. `tests/api/openapi.rs` checks that this document
//! and the registered routes ([`super::route_table`]) name the same endpoints and that it
//! lists every error code, and `scripts/fuzz.sh` runs schemathesis against it, which also
//! checks that real answers match these schemas.

use super::errors::{ErrorBody, ErrorCode};
use super::wire::{IdentityVerification, TicketStatus};
use super::Endpoint;
use actix_web::http::Method;
use actix_web::web;
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
pub async fn openapi_json() -> web::Json<utoipa::openapi::OpenApi> {
    web::Json(ApiDoc::openapi())
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "colloquy",
        description = "Backend of an embeddable customer-support chat widget. Every error is \
                       `{\"error\", \"code\"}` (ErrorBody; `code` is one of ErrorCode)."
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
        super::operator::spam::suspicious,
        super::operator::spam::list_blocks,
        super::operator::spam::create_block,
        super::operator::spam::delete_block,
        super::operator::settings::get_settings,
        super::operator::settings::patch_settings,
        super::operator::settings::rotate_public_token,
        super::operator::settings::rotate_identity_secret,
        super::admin::create_team,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::actors,
        super::ops::cluster,
        super::ops::metrics,
        openapi_json,
    ),
    components(schemas(ErrorBody, ErrorCode)),
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
// Request pieces several bodies share

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

/// `POST /api/conversations/v1/widget/restore`.
#[derive(Serialize, ToSchema)]
pub struct RedeemRequest {
    /// The token from the mailed link.
    pub restore_token: String,
    /// The new session.
    pub widget_session_id: Uuid,
}

// ---------------------------------------------------------------------------------------
// The operator API

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
