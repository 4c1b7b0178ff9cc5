//! Tickets: one [`TicketActor`] per live ticket, serializing its appends; the
//! [`TicketSupervisor`], the one owner of their lifecycle and of the registry of live tickets
//! (spawns, restarts, evictions, the shutdown drain); and the [`TicketRouter`] that HTTP
//! handlers hold, which reads the registry and asks the supervisor only on a miss.

mod actor;
mod env;
mod recent;
mod router;
mod supervisor;
mod view;

pub use actor::{
    Append, Appended, CatchUp, Drain, EndStreams, Evict, Refresh, Subscribe, Subscription,
    TicketActor, TicketEvent, TicketPage, Typing, TypingElsewhere,
};
pub use env::TicketConfig;
pub use recent::Recent;
pub use router::TicketRouter;
pub use supervisor::TicketSupervisor;

/// Why a ticket operation was refused; the HTTP layer maps each to the contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// No such ticket for this team (also: another team's ticket).
    #[error("ticket not found")]
    NotFound,
    /// The ticket belongs to another visitor key.
    #[error("ticket belongs to another visitor")]
    Forbidden,
    /// The ticket's queue or mailbox is full: shed load.
    #[error("ticket is overloaded")]
    Overloaded,
    /// The database could not be reached in time.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<crate::store::StoreError> for TicketError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError as S;
        match e {
            S::NotFound => TicketError::NotFound,
            S::Busy => TicketError::Overloaded,
            S::Unavailable(m) => TicketError::Unavailable(m),
            S::Internal(m) => TicketError::Internal(m),
        }
    }
}
