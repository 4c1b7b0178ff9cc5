//! Pieces of the wire format that several surfaces' responses share: how a ticket status,
//! an author, a read mark and a team's settings are written out. Each is the type the
//! response serializes and the schema the OpenAPI document shows (`#[derive(Serialize,
//! ToSchema)]`), built from the domain type by an exhaustive `match` or destructuring, so a
//! new status or setting does not compile until its wire form is decided here.

use crate::teams::Team;
use colloquy_actors::domain;
use serde::Serialize;
use utoipa::ToSchema;

/// A ticket status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
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

impl From<domain::TicketStatus> for TicketStatus {
    fn from(s: domain::TicketStatus) -> Self {
        match s {
            domain::TicketStatus::New => TicketStatus::New,
            domain::TicketStatus::Open => TicketStatus::Open,
            domain::TicketStatus::Pending => TicketStatus::Pending,
            domain::TicketStatus::OnHold => TicketStatus::OnHold,
            domain::TicketStatus::Resolved => TicketStatus::Resolved,
        }
    }
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
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

impl From<domain::AuthorType> for AuthorType {
    fn from(a: domain::AuthorType) -> Self {
        match a {
            domain::AuthorType::Customer => AuthorType::Customer,
            domain::AuthorType::Ai => AuthorType::Ai,
            domain::AuthorType::Human => AuthorType::Human,
        }
    }
}

/// The `{"success": true, "unread_count": 0}` of a visitor's read mark.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadMarked {
    /// Always true.
    pub success: bool,
    /// Always 0.
    pub unread_count: i32,
}

impl ReadMarked {
    /// The only answer there is.
    pub const DONE: ReadMarked = ReadMarked {
        success: true,
        unread_count: 0,
    };
}

/// A team's rate budgets (every key present).
#[derive(Debug, Serialize, ToSchema)]
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

impl From<domain::RateLimits> for RateLimits {
    fn from(l: domain::RateLimits) -> Self {
        let domain::RateLimits {
            message_distinct_id_per_minute,
            message_ip_per_minute,
            message_team_per_hour,
            read_distinct_id_per_minute,
            widget_session_per_minute,
            team_reads_per_hour,
            team_writes_per_hour,
            restore_email_per_hour,
            restore_ip_per_minute,
            widget_ip_per_minute,
        } = l;
        Self {
            message_distinct_id_per_minute,
            message_ip_per_minute,
            message_team_per_hour,
            read_distinct_id_per_minute,
            widget_session_per_minute,
            team_reads_per_hour,
            team_writes_per_hour,
            restore_email_per_hour,
            restore_ip_per_minute,
            widget_ip_per_minute,
        }
    }
}

/// Points each suspicion rule adds, 0–100.
#[derive(Debug, Serialize, ToSchema)]
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
#[derive(Debug, Serialize, ToSchema)]
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

impl From<domain::SuspicionSettings> for SuspicionSettings {
    fn from(s: domain::SuspicionSettings) -> Self {
        let domain::SuspicionSettings {
            flag_threshold,
            block_threshold,
            block_minutes,
            weights,
        } = s;
        let domain::SuspicionWeights {
            honeypot,
            repeated_message,
            repeated_across_visitors,
            link_density,
            enumeration,
            rate_limited,
            burst_after_creation,
        } = weights;
        Self {
            flag_threshold,
            block_threshold,
            block_minutes,
            weights: SuspicionWeights {
                honeypot,
                repeated_message,
                repeated_across_visitors,
                link_density,
                enumeration,
                rate_limited,
                burst_after_creation,
            },
        }
    }
}

/// Identity verification mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IdentityVerification {
    /// Identity fields are ignored.
    Off,
    /// A wrong hash is refused, a missing one allowed.
    Optional,
    /// A hash is required.
    Required,
}

impl From<domain::IdentityVerification> for IdentityVerification {
    fn from(v: domain::IdentityVerification) -> Self {
        match v {
            domain::IdentityVerification::Off => IdentityVerification::Off,
            domain::IdentityVerification::Optional => IdentityVerification::Optional,
            domain::IdentityVerification::Required => IdentityVerification::Required,
        }
    }
}

/// A team's settings, as its operators read and change them.
#[derive(Debug, Serialize, ToSchema)]
pub struct Settings {
    /// Team id.
    pub team_id: uuid::Uuid,
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

impl From<&Team> for Settings {
    fn from(team: &Team) -> Self {
        Self {
            team_id: team.id,
            name: team.name.clone(),
            public_token: team.public_token.clone(),
            conversations_enabled: team.conversations_enabled,
            allowed_widget_domains: team.allowed_widget_domains.entries().to_vec(),
            rate_limits: team.rate_limits.into(),
            identity_verification: team.identity_verification.into(),
            identity_secret: team.identity_secret.clone(),
            notification_recipients: team.notification_recipients.clone(),
            suspicion: team.suspicion.into(),
        }
    }
}

/// A `201 Created` answer with a JSON body (`web::Json` answers `200`).
#[derive(Debug)]
pub struct Created<T>(pub T);

impl<T: Serialize> actix_web::Responder for Created<T> {
    type Body = actix_web::body::BoxBody;

    fn respond_to(self, _req: &actix_web::HttpRequest) -> actix_web::HttpResponse {
        actix_web::HttpResponse::Created().json(self.0)
    }
}

/// The data of a stream's `status` event (visitors' and operators' streams).
#[derive(Debug, Serialize)]
pub struct StatusEvent {
    /// The ticket's status now.
    pub ticket_status: TicketStatus,
}

/// The data of a stream's `typing` event: who is typing (`visitor` or `operator`).
#[derive(Debug, Serialize)]
pub struct TypingEvent {
    /// The other side.
    pub author: &'static str,
}

/// The data of a stream's `read` event: the visitor's unread count, now 0.
#[derive(Debug, Serialize)]
pub struct ReadEvent {
    /// Always 0.
    pub unread_count: i32,
}

impl ReadEvent {
    /// The only `read` event there is.
    pub const DONE: ReadEvent = ReadEvent { unread_count: 0 };
}
