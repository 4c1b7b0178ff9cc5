//! What a read needs of a live ticket, published by its actor after every change. Polls are
//! answered from it without a mailbox round trip: the actor stays the only writer, readers
//! take the latest snapshot with one atomic load. A round trip to an actor that lives on the
//! other worker thread cost two context switches per poll, more than the answer itself
//! (perf on `scripts/bench.sh` poll-tail).

use super::{Recent, TicketError};
use crate::domain::{TicketStatus, VisitorKey};
use crate::store::{TicketFacts, TicketState};
use arc_swap::ArcSwap;
use std::sync::atomic::{
    AtomicBool, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::Arc;
use uuid::Uuid;

/// One published state of a ticket: who may read it, its facts and its recent messages.
#[derive(Debug, Clone)]
pub(super) struct View {
    pub(super) team_id: Uuid,
    owner: VisitorKey,
    linked_distinct_id: Option<String>,
    pub(super) status: TicketStatus,
    pub(super) unread_customer: i32,
    /// The row version `status` and `unread_customer` belong to.
    version: i64,
    pub(super) recent: Recent,
    /// The trust epoch its actor last caught up with the database in: memory trusted again
    /// after a gap is only current for tickets that caught up since (`Shared::epoch`).
    pub(super) epoch: u64,
}

impl View {
    /// A snapshot of the actor's state.
    pub(super) fn of(state: &TicketState, recent: &Recent, epoch: u64) -> Self {
        Self {
            epoch,
            team_id: state.team_id,
            owner: state.owner.clone(),
            linked_distinct_id: state.linked_distinct_id.clone(),
            status: state.status,
            unread_customer: state.unread_customer,
            version: state.version,
            recent: recent.clone(),
        }
    }

    /// This view with `facts` in place of its own.
    fn with_facts(&self, facts: TicketFacts) -> Self {
        Self {
            status: facts.status,
            unread_customer: facts.unread_customer,
            version: facts.version,
            ..self.clone()
        }
    }

    fn facts(&self) -> TicketFacts {
        TicketFacts {
            status: self.status,
            unread_customer: self.unread_customer,
            version: self.version,
        }
    }

    /// Another team's ticket is "not found"; another visitor's is "forbidden".
    pub(super) fn check_access(
        &self,
        team_id: Uuid,
        visitor: Option<&VisitorKey>,
    ) -> Result<(), TicketError> {
        check_access(
            self.team_id,
            &self.owner,
            self.linked_distinct_id.as_deref(),
            team_id,
            visitor,
        )
    }
}

/// The access rule, shared by the actor and its published view.
pub(super) fn check_access(
    ticket_team: Uuid,
    owner: &VisitorKey,
    linked_distinct_id: Option<&str>,
    team_id: Uuid,
    visitor: Option<&VisitorKey>,
) -> Result<(), TicketError> {
    if team_id != ticket_team {
        return Err(TicketError::NotFound);
    }
    match visitor {
        Some(key) if !owner.admits(linked_distinct_id, key) => Err(TicketError::Forbidden),
        _ => Ok(()),
    }
}

/// Where the actor publishes its [`View`], and where readers leave word that they came (so
/// an actor read only through its view does not count as idle).
#[derive(Debug)]
pub(super) struct ViewCell {
    current: ArcSwap<View>,
    read: AtomicBool,
    /// Changes other nodes announced for this ticket, and how many of them the actor has
    /// caught up with: while behind, the snapshot must not answer (a read that follows a
    /// write through another node goes to the database instead of missing it).
    heard: AtomicU64,
    applied: AtomicU64,
}

impl ViewCell {
    pub(super) fn new(view: View) -> Self {
        Self {
            current: ArcSwap::from_pointee(view),
            read: AtomicBool::new(false),
            heard: AtomicU64::new(0),
            applied: AtomicU64::new(0),
        }
    }

    /// Another node changed the ticket: the snapshot is behind until the actor caught up.
    pub(super) fn mark_changed(&self) {
        self.heard.fetch_add(1, Release);
    }

    /// The changes heard so far (the actor takes it before loading what changed).
    pub(super) fn changes_heard(&self) -> u64 {
        self.heard.load(Acquire)
    }

    /// The actor has loaded everything up to the `heard` changes (after publishing).
    pub(super) fn caught_up_to(&self, heard: u64) {
        self.applied.fetch_max(heard, Release);
    }

    /// Whether a change made elsewhere is not in the snapshot yet.
    pub(super) fn behind(&self) -> bool {
        self.heard.load(Acquire) > self.applied.load(Acquire)
    }

    /// The latest snapshot, marking the ticket as in use.
    pub(super) fn load(&self) -> Arc<View> {
        self.read.store(true, Relaxed);
        self.current.load_full()
    }

    /// Replaces the snapshot; only the ticket's actor calls this. Facts newer than the
    /// actor's (put here by [`ViewCell::refresh`] before the actor saw them) are kept.
    pub(super) fn publish(&self, view: View) {
        let view = Arc::new(view);
        self.current.rcu(|cur| {
            if cur.version > view.version {
                Arc::new(view.with_facts(cur.facts()))
            } else {
                Arc::clone(&view)
            }
        });
    }

    /// Takes newer facts from a change made outside the actor (operator PATCH, mark-read)
    /// at once, so the request that made the change is followed by reads that see it, even
    /// before the actor has handled its `Refresh`.
    pub(super) fn refresh(&self, facts: TicketFacts) {
        self.current.rcu(|cur| {
            if facts.version > cur.version {
                Arc::new(cur.with_facts(facts))
            } else {
                Arc::clone(cur)
            }
        });
    }

    /// Whether anyone read the view since the last call.
    pub(super) fn take_read(&self) -> bool {
        self.read.swap(false, Relaxed)
    }
}
