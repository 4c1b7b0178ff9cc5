//! Posting a visitor's message, the one flow of both widget surfaces: open a ticket with it
//! or append it to the visitor's ticket (the ticket actor checks access), then tell the
//! suspicion detector what was written. Each surface validates its own body, admits the
//! request with its own budgets and answers in its own shape; what happens in between is
//! here, once.

use super::super::errors::ApiError;
use super::super::AppState;
use crate::teams::Team;
use colloquy_actors::domain::{AuthorType, MessageContent, TicketStatus, Traits, VisitorKey};
use colloquy_actors::store::{AppendResult, NewMessage, NewTicket, Opened, Replay, StoredMessage};
use colloquy_actors::suspicion::{MessageSeen, Observation, TextFeatures};
use std::net::IpAddr;
use uuid::Uuid;

/// A validated, admitted visitor message, as either surface hands it over.
pub(in crate::http) struct VisitorPost {
    /// The visitor's ticket to follow up; `None` opens a ticket with this message.
    pub ticket_id: Option<Uuid>,
    /// The key the visitor presents: a follow-up is refused unless the ticket admits it.
    pub key: VisitorKey,
    /// The key a new ticket is opened with.
    pub owner: VisitorKey,
    /// The person a new ticket is linked to: only ever a proven identity, as a named one
    /// would plant the ticket in that person's history.
    pub linked_distinct_id: Option<String>,
    /// A distinct_id the visitor named without proof (shown to operators, grants nothing).
    pub claimed_distinct_id: Option<String>,
    /// How the suspicion detector names the visitor.
    pub label: String,
    /// The text.
    pub message: MessageContent,
    /// Traits: a new ticket's, or merged into the ticket's on a follow-up.
    pub traits: Option<Traits>,
    /// The distinct_id stored with the message: the scope of `client_message_id`.
    pub distinct_id: Option<String>,
    /// The idempotency key, if the surface takes one.
    pub client_message_id: Option<String>,
    /// Whether the message reopens a resolved ticket (the documented surface's rule).
    pub reopens: bool,
}

/// What a post came to.
pub(in crate::http) enum Posted {
    /// Written now.
    Stored {
        /// The ticket it was written to (opened by it when the post named none).
        ticket_id: Uuid,
        /// The message as stored.
        message: StoredMessage,
        /// The ticket's status after it.
        status: TicketStatus,
        /// The visitor's unread count after it.
        unread: i32,
    },
    /// Its idempotency key was used before: nothing was written.
    Replayed(Replay),
}

/// Opens a ticket with the visitor's message or appends it to theirs; a stored message is
/// reported to the suspicion detector (with the client IP). The caller settles the result
/// through its admission's [`Charged`](colloquy_actors::rate_limiter::Charged), so a refused
/// post (`403`, `404`, …) costs no budget.
pub(in crate::http) async fn post_visitor_message(
    state: &AppState,
    team: &Team,
    ip: IpAddr,
    post: VisitorPost,
) -> Result<Posted, ApiError> {
    let features = TextFeatures::of(post.message.as_str());
    let message = NewMessage {
        distinct_id: post.distinct_id,
        client_message_id: post.client_message_id,
        traits: post.traits.clone(),
        reopens: post.reopens,
        ..NewMessage::new(post.message.into_string(), AuthorType::Customer)
    };
    let (ticket_id, result, status, unread) = match post.ticket_id {
        None => {
            let opened = state
                .tickets
                .open(NewTicket {
                    id: Uuid::now_v7(),
                    team_id: team.id,
                    owner: post.owner,
                    linked_distinct_id: post.linked_distinct_id,
                    claimed_distinct_id: post.claimed_distinct_id,
                    traits: post.traits.unwrap_or_default(),
                    first: message,
                })
                .await?;
            match opened {
                Opened::Created { ticket, message } => {
                    (ticket.id, AppendResult::Stored(message), ticket.status, 0)
                }
                Opened::Replayed(r) => return Ok(Posted::Replayed(r)),
            }
        }
        Some(ticket_id) => {
            // Access is checked here, by the ticket's actor.
            let a = state
                .tickets
                .append(team.id, ticket_id, Some(post.key), message)
                .await?;
            (ticket_id, a.result, a.status, a.unread_customer)
        }
    };
    let message = match result {
        AppendResult::Stored(m) => m,
        AppendResult::Replayed(r) => return Ok(Posted::Replayed(r)),
    };
    state.suspicion.observe(Observation::Message(MessageSeen {
        team_id: team.id,
        ticket_id,
        opened_ticket: post.ticket_id.is_none(),
        visitor: post.label,
        ip,
        text: features,
        settings: team.suspicion,
    }));
    Ok(Posted::Stored {
        ticket_id,
        message,
        status,
        unread,
    })
}
