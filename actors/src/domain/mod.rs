//! Validated domain types: parse, don't validate; and the ticket's rules for new messages.
//!
//! Every type here has a private field and a `parse` constructor, so a value that exists is
//! valid. HTTP adapters parse raw input at the edge; the rest of the code takes these types.
//! What a batch of messages does to its ticket (counters, reopening, preview, merged traits,
//! author names) is computed here once ([`apply_batch`]); the store only writes it.

mod batch;
mod escape;
mod identity;
mod limits;
mod message;
mod network;
mod origin;
mod suspicion;
mod ticket;
mod time;
mod traits;
mod visitor;

pub use batch::{apply_batch, merges_traits, stamp_batch, Stamp, TicketAfter, TicketBefore};
pub use escape::html_escape;
pub use identity::{identity_hash, IdentityError, IdentityVerification, VerifiedId};
pub use limits::{Limit, RateLimits};
pub use message::{AuthorName, AuthorType, ClientMessageId, MessageContent};
pub use network::client_network;
pub use origin::{AllowedDomains, RestorePage, RESTORE_TOKEN_PARAM};
pub use suspicion::{SuspicionSettings, SuspicionWeights};
pub use ticket::{assign_created_at, TicketStatus};
pub use time::{format_offset, format_utc, parse_timestamp, truncate_to_micros};
pub use traits::{Traits, MAX_MERGED_BYTES, MAX_MERGED_KEYS};
pub use visitor::{DistinctId, VisitorKey};

/// A refused input, naming the field so a client can point at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The request field that failed, as the client spelled it.
    pub field: String,
    /// A sentence for a person saying what is wrong.
    pub message: String,
}

impl ValidationError {
    /// Builds an error for `field`; used by every parser in this module.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}
