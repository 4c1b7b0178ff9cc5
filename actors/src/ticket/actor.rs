//! One actor per live ticket. It owns the ticket's append order: appends queue here, and
//! whatever queues up while a transaction is in flight is committed together in the next
//! one (group commit), each append still answered on its own. It also keeps the recent
//! messages, so polling at the tail needs no query.
//!
//! Sent by [`super::Tickets`] (HTTP handlers) and, at shutdown, by the
//! [`super::TicketSupervisor`]. It removes itself from the registry when it goes idle.

use super::supervisor::Shared;
use super::{Recent, TicketError};
use crate::domain::{TicketStatus, VisitorKey};
use crate::store::{AppendOutcome, AppendResult, MessagePage, NewMessage, StoreError, TicketState};
use actix::prelude::*;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;
use uuid::Uuid;

/// Appends one message to the ticket, after checking the request may.
#[derive(Debug, Message)]
#[rtype(result = "Result<Appended, TicketError>")]
pub struct Append {
    /// The requesting team; another team's ticket is "not found".
    pub team_id: Uuid,
    /// The widget key presented, or `None` for an operator.
    pub visitor: Option<VisitorKey>,
    /// The message.
    pub message: NewMessage,
}

/// The answer to one [`Append`].
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    /// Written, or a replay of an earlier write with the same idempotency key.
    pub result: AppendResult,
    /// The ticket's status after the batch.
    pub status: TicketStatus,
    /// The visitor's unread count after the batch.
    pub unread_customer: i32,
}

/// Reads the ticket's messages strictly after `after`, after checking the request may.
#[derive(Debug, Message)]
#[rtype(result = "Result<TicketPage, TicketError>")]
pub struct ReadMessages {
    /// The requesting team.
    pub team_id: Uuid,
    /// The widget key presented, or `None` for an operator.
    pub visitor: Option<VisitorKey>,
    /// Cursor: only messages created strictly after it.
    pub after: Option<DateTime<Utc>>,
    /// At most this many.
    pub limit: usize,
    /// Operators see private notes; widgets never do.
    pub include_private: bool,
}

/// A page of messages plus the ticket facts a widget shows with them.
#[derive(Debug, Clone, PartialEq)]
pub struct TicketPage {
    /// Current status.
    pub status: TicketStatus,
    /// The visitor's unread count.
    pub unread_customer: i32,
    /// The messages and `has_more`.
    pub page: MessagePage,
    /// Whether the page came from memory (for metrics and tests of the fast path).
    pub from_memory: bool,
}

/// Asks the actor to commit what it has queued, refusing new appends: used at shutdown.
/// Answers once nothing is queued or in flight.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Drain;

struct Pending {
    message: NewMessage,
    reply: oneshot::Sender<Result<Appended, TicketError>>,
}

/// The actor serializing one ticket's appends; see the module docs.
pub struct TicketActor {
    state: TicketState,
    recent: Recent,
    pending: Vec<Pending>,
    in_flight: bool,
    last_used: Instant,
    draining: bool,
    drained: Vec<oneshot::Sender<()>>,
    shared: Arc<Shared>,
}

impl TicketActor {
    /// An actor for a loaded ticket; `recent` is what is already known of its messages.
    pub(super) fn new(state: TicketState, recent: Recent, shared: Arc<Shared>) -> Self {
        Self {
            state,
            recent,
            pending: Vec::new(),
            in_flight: false,
            last_used: Instant::now(),
            draining: false,
            drained: Vec::new(),
            shared,
        }
    }

    fn check_access(&self, team_id: Uuid, visitor: Option<&VisitorKey>) -> Result<(), TicketError> {
        if team_id != self.state.team_id {
            return Err(TicketError::NotFound);
        }
        match visitor {
            Some(key) if !self.state.owner.admits(key) => Err(TicketError::Forbidden),
            _ => Ok(()),
        }
    }

    /// Starts the next transaction if none is in flight: the group commit.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight || self.pending.is_empty() {
            if !self.in_flight {
                for done in self.drained.drain(..) {
                    let _ = done.send(());
                }
            }
            return;
        }
        self.in_flight = true;
        let take = self.pending.len().min(self.shared.config.max_batch);
        let batch: Vec<Pending> = self.pending.drain(..take).collect();
        let (messages, replies): (Vec<NewMessage>, Vec<_>) =
            batch.into_iter().map(|p| (p.message, p.reply)).unzip();
        let store = Arc::clone(&self.shared.store);
        let (team_id, ticket_id) = (self.state.team_id, self.state.id);
        let timeout = self.shared.config.write_timeout;
        let write = async move {
            match tokio::time::timeout(timeout, store.append(team_id, ticket_id, &messages)).await {
                Ok(res) => res,
                Err(_) => Err(StoreError::Unavailable("append timed out".into())),
            }
        };
        ctx.spawn(write.into_actor(self).map(move |res, act, ctx| {
            act.in_flight = false;
            act.shared.stats.dequeued(replies.len() as i64);
            act.finish_batch(res, replies, ctx);
            act.flush(ctx);
        }));
    }

    fn finish_batch(
        &mut self,
        res: Result<AppendOutcome, StoreError>,
        replies: Vec<oneshot::Sender<Result<Appended, TicketError>>>,
        ctx: &mut Context<Self>,
    ) {
        match res {
            Ok(outcome) => {
                self.state.status = outcome.status;
                self.state.unread_customer = outcome.unread_customer;
                let stored: Vec<_> = outcome
                    .results
                    .iter()
                    .filter_map(|r| match r {
                        AppendResult::Stored(m) => Some(m.clone()),
                        AppendResult::Replayed(_) => None,
                    })
                    .collect();
                if let Some(last) = stored.last() {
                    self.state.last_created_at = Some(last.created_at);
                }
                self.recent.extend(outcome.prev_last_created_at, stored);
                for (reply, result) in replies.into_iter().zip(outcome.results) {
                    let _ = reply.send(Ok(Appended {
                        result,
                        status: outcome.status,
                        unread_customer: outcome.unread_customer,
                    }));
                }
            }
            Err(e) => {
                self.shared.stats.error();
                // The commit may or may not have happened: forget what we think we know.
                self.recent.invalidate();
                let err = TicketError::from(e.clone());
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
                match e {
                    StoreError::NotFound => {
                        self.fail_pending(TicketError::NotFound);
                        self.evict(ctx);
                    }
                    StoreError::Internal(_) => ctx.stop(), // restarted by the Supervisor
                    StoreError::Unavailable(_) => {}
                }
            }
        }
    }

    fn fail_pending(&mut self, err: TicketError) {
        let n = self.pending.len() as i64;
        for p in self.pending.drain(..) {
            let _ = p.reply.send(Err(err.clone()));
        }
        self.shared.stats.dequeued(n);
    }

    fn evict(&mut self, ctx: &mut Context<Self>) {
        let me = ctx.address();
        self.shared
            .registry
            .remove_if(&self.state.id, |_, addr| *addr == me);
        ctx.stop();
    }

    fn check_idle(&mut self, ctx: &mut Context<Self>) {
        let idle = self.last_used.elapsed() >= self.shared.config.idle_after;
        if idle && !self.in_flight && self.pending.is_empty() {
            self.shared.stats.evicted();
            self.evict(ctx);
        }
    }
}

impl Actor for TicketActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.shared.stats.started();
        ctx.set_mailbox_capacity(self.shared.config.mailbox_capacity);
        let every = self
            .shared
            .config
            .idle_after
            .max(std::time::Duration::from_millis(10))
            / 2;
        ctx.run_interval(every, |act, ctx| act.check_idle(ctx));
        // Appends that queued while a restart was under way are written now.
        self.flush(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.fail_pending(TicketError::Unavailable("ticket actor stopped".into()));
        self.shared.stats.stopped();
    }
}

impl Supervised for TicketActor {
    fn restarting(&mut self, ctx: &mut Self::Context) {
        self.shared.stats.restarted();
        self.in_flight = false;
        self.recent.invalidate();
        self.last_used = Instant::now();
        // Heal the registry if an eviction raced a request that still held our address.
        self.shared
            .registry
            .entry(self.state.id)
            .or_insert_with(|| ctx.address());
    }
}

impl Handler<Append> for TicketActor {
    type Result = ResponseFuture<Result<Appended, TicketError>>;

    fn handle(&mut self, msg: Append, ctx: &mut Self::Context) -> Self::Result {
        self.last_used = Instant::now();
        if let Err(e) = self.check_access(msg.team_id, msg.visitor.as_ref()) {
            return Box::pin(async move { Err(e) });
        }
        if self.pending.len() >= self.shared.config.max_pending || self.draining {
            self.shared.stats.dropped();
            return Box::pin(async { Err(TicketError::Overloaded) });
        }
        let (reply, rx) = oneshot::channel();
        self.pending.push(Pending {
            message: msg.message,
            reply,
        });
        self.shared.stats.enqueued(1);
        self.flush(ctx);
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(TicketError::Unavailable("ticket actor stopped".into())))
        })
    }
}

impl Handler<ReadMessages> for TicketActor {
    type Result = ResponseFuture<Result<TicketPage, TicketError>>;

    fn handle(&mut self, msg: ReadMessages, _ctx: &mut Self::Context) -> Self::Result {
        self.last_used = Instant::now();
        self.shared.stats.handled();
        if let Err(e) = self.check_access(msg.team_id, msg.visitor.as_ref()) {
            return Box::pin(async move { Err(e) });
        }
        let (status, unread_customer) = (self.state.status, self.state.unread_customer);
        if let Some(page) = self.recent.page(msg.after, msg.limit, msg.include_private) {
            return Box::pin(async move {
                Ok(TicketPage {
                    status,
                    unread_customer,
                    page,
                    from_memory: true,
                })
            });
        }
        let store = Arc::clone(&self.shared.store);
        let (team_id, ticket_id) = (self.state.team_id, self.state.id);
        Box::pin(async move {
            let page = store
                .page_messages(
                    team_id,
                    ticket_id,
                    msg.after,
                    msg.limit,
                    msg.include_private,
                )
                .await?;
            Ok(TicketPage {
                status,
                unread_customer,
                page,
                from_memory: false,
            })
        })
    }
}

impl Handler<Drain> for TicketActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, ctx: &mut Self::Context) -> Self::Result {
        self.draining = true;
        let (done, rx) = oneshot::channel();
        self.drained.push(done);
        self.flush(ctx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}
