//! The storage port: what the core needs from a database, in the core's own types.
//!
//! The service crate implements it on PostgreSQL (`colloquy::store::PgStore`). Every call is
//! scoped by team: a ticket id alone never finds a ticket.

use crate::domain::{AuthorType, TicketStatus, Traits, VisitorKey};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::net::IpAddr;
use uuid::Uuid;

/// What the ticket actor keeps in memory about its ticket between writes.
#[derive(Debug, Clone, PartialEq)]
pub struct TicketState {
    /// The ticket.
    pub id: Uuid,
    /// Its team; requests from other teams are answered "not found".
    pub team_id: Uuid,
    /// The key it was opened with; only that key reaches it from a widget.
    pub owner: VisitorKey,
    /// The person a posthog-js ticket is linked to: their verified identity reaches it.
    pub linked_distinct_id: Option<String>,
    /// Current workflow status.
    pub status: TicketStatus,
    /// The newest message's timestamp (private notes included): the ordering anchor.
    pub last_created_at: Option<DateTime<Utc>>,
    /// Operator messages the visitor has not marked read.
    pub unread_customer: i32,
    /// The row's version; a cached copy only takes newer facts.
    pub version: i64,
}

/// The facts about a ticket that change outside appends (status, read marks), with the
/// row version they belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TicketFacts {
    /// Status.
    pub status: TicketStatus,
    /// The visitor's unread count.
    pub unread_customer: i32,
    /// The row's version after the change.
    pub version: i64,
}

/// A message about to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    /// Chosen by the caller (UUID v7) so it can be returned before listing.
    pub id: Uuid,
    /// Cleaned text.
    pub content: String,
    /// Who wrote it.
    pub author_type: AuthorType,
    /// A display name, if known.
    pub author_name: Option<String>,
    /// Operators' private notes are never shown to visitors.
    pub is_private: bool,
    /// The writing visitor's distinct_id, which scopes `client_message_id`.
    pub distinct_id: Option<String>,
    /// Idempotency key: a second message with the same key is not written.
    pub client_message_id: Option<String>,
    /// Visitor traits to merge into the ticket's.
    pub traits: Option<Traits>,
    /// Whether a customer message reopens a resolved ticket (the documented surface does;
    /// the posthog-js surface keeps the status).
    pub reopens: bool,
}

impl NewMessage {
    /// A public message by `author_type` with a fresh id (UUID v7) and nothing else set:
    /// each writer (visitor, operator) sets its own fields over it with `..`, so a field
    /// added here has one default.
    pub fn new(content: String, author_type: AuthorType) -> Self {
        Self {
            id: Uuid::now_v7(),
            content,
            author_type,
            author_name: None,
            is_private: false,
            distinct_id: None,
            client_message_id: None,
            traits: None,
            reopens: false,
        }
    }
}

/// A message as stored, with its position in the ticket's order.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    /// Message id.
    pub id: Uuid,
    /// Text as stored (unescaped).
    pub content: String,
    /// Structured content an operator attached, if any.
    pub rich_content: Option<serde_json::Value>,
    /// Who wrote it.
    pub author_type: AuthorType,
    /// Display name.
    pub author_name: Option<String>,
    /// Private note?
    pub is_private: bool,
    /// Strictly increasing within the ticket, in commit order.
    pub created_at: DateTime<Utc>,
}

/// The first write of an idempotency key, returned again to its retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replay {
    /// The ticket the first call wrote to.
    pub ticket_id: Uuid,
    /// The message the first call created.
    pub message_id: Uuid,
    /// Its timestamp.
    pub created_at: DateTime<Utc>,
}

/// What became of one message of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum AppendResult {
    /// Written now.
    Stored(StoredMessage),
    /// Its idempotency key was already used; nothing was written.
    Replayed(Replay),
}

/// The result of one committed append transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendOutcome {
    /// The ticket's newest timestamp before this batch: tells the actor whether its memory
    /// of recent messages is still contiguous.
    pub prev_last_created_at: Option<DateTime<Utc>>,
    /// Status after the batch.
    pub status: TicketStatus,
    /// Visitor's unread count after the batch.
    pub unread_customer: i32,
    /// The row's version after the batch.
    pub version: i64,
    /// One result per message, in the batch's order.
    pub results: Vec<AppendResult>,
}

/// A ticket to open together with its first message.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTicket {
    /// Chosen by the caller (UUID v7).
    pub id: Uuid,
    /// The team.
    pub team_id: Uuid,
    /// The key that will reach it.
    pub owner: VisitorKey,
    /// The verified person a posthog-js ticket is linked to: their verified identity reaches
    /// it, so only a hash that verified may set it.
    pub linked_distinct_id: Option<String>,
    /// A distinct_id the visitor named without proof: shown to operators, grants nothing.
    pub claimed_distinct_id: Option<String>,
    /// Initial traits.
    pub traits: Traits,
    /// The visitor's first message.
    pub first: NewMessage,
}

/// The outcome of opening a ticket.
#[derive(Debug, Clone, PartialEq)]
pub enum Opened {
    /// Ticket and first message committed.
    Created {
        /// The new ticket.
        ticket: TicketState,
        /// Its first message.
        message: StoredMessage,
    },
    /// The first message's idempotency key was already used; nothing was written.
    Replayed(Replay),
}

/// A slice of a ticket's messages in ascending order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MessagePage {
    /// The messages.
    pub messages: Vec<StoredMessage>,
    /// Whether more exist after the last one.
    pub has_more: bool,
}

/// Something the suspicion detector decided is worth an operator's look.
#[derive(Debug, Clone, PartialEq)]
pub struct SuspicionFlag {
    /// The team it happened in.
    pub team_id: Uuid,
    /// The ticket, when one is involved.
    pub ticket_id: Option<Uuid>,
    /// The visitor, when known.
    pub distinct_id: Option<String>,
    /// The client IP, when known.
    pub ip: Option<IpAddr>,
    /// A stable machine name for the rule that fired.
    pub reason: &'static str,
    /// 0–100: how sure the rule is.
    pub score: i16,
    /// Free text for operators (never message bodies).
    pub detail: String,
    /// When it was observed.
    pub observed_at: DateTime<Utc>,
}

/// A temporary block the suspicion detector imposes on an IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBlock {
    /// The team.
    pub team_id: Uuid,
    /// The blocked address.
    pub ip: IpAddr,
    /// Why (the reasons that added up).
    pub reason: String,
    /// When the block lapses.
    pub expires_at: DateTime<Utc>,
}

/// Why storage failed, in terms the HTTP layer can map to the contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The database is unreachable, slow or restarting: retry later (503).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Every pooled connection is busy: shed load (503 overloaded).
    #[error("database pool exhausted")]
    Busy,
    /// The ticket does not exist for this team.
    #[error("not found")]
    NotFound,
    /// A bug or a broken invariant (500).
    #[error("storage error: {0}")]
    Internal(String),
}

/// The storage the actors need; implemented by the service crate on PostgreSQL.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Loads a ticket's state, or `None` if the team has no such ticket.
    async fn load_ticket(
        &self,
        team_id: Uuid,
        ticket_id: Uuid,
    ) -> Result<Option<TicketState>, StoreError>;

    /// Opens a ticket with its first message in one transaction.
    async fn open_ticket(&self, ticket: NewTicket) -> Result<Opened, StoreError>;

    /// Appends a batch to one ticket in one transaction, under the ticket's row lock, with
    /// timestamps from [`crate::domain::assign_created_at`]. Commits before returning.
    async fn append(
        &self,
        team_id: Uuid,
        ticket_id: Uuid,
        batch: Vec<NewMessage>,
    ) -> Result<AppendOutcome, StoreError>;

    /// Messages strictly after `after`, ascending, at most `limit`.
    async fn page_messages(
        &self,
        team_id: Uuid,
        ticket_id: Uuid,
        after: Option<DateTime<Utc>>,
        limit: usize,
        include_private: bool,
    ) -> Result<MessagePage, StoreError>;

    /// Persists suspicion flags.
    async fn record_flags(&self, flags: &[SuspicionFlag]) -> Result<(), StoreError>;

    /// Persists automatic IP blocks.
    async fn record_blocks(&self, blocks: &[NewBlock]) -> Result<(), StoreError>;
}
