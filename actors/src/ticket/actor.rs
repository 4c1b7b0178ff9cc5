//! One actor per live ticket. It owns the ticket's append order: appends queue here, and
//! whatever queues up while a transaction is in flight is committed together in the next
//! one (group commit), each append still answered on its own. It also keeps the recent
//! messages and publishes them with the ticket's facts in a [`super::view`], so polling at
//! the tail needs no query and no round trip to the actor.
//!
//! Sent by the [`super::TicketRouter`] (HTTP handlers) and by the
//! [`super::TicketSupervisor`], which started it. When it goes idle, or its ticket is gone, it
//! asks the supervisor to remove it from the registry and stops once that is done; after a
//! restart it asks to be registered again.
//!
//! Longer than 500 lines for a reason: an actix actor's handlers must sit with the actor's
//! state they change (the append queue, the batch in flight, catch-up and subscriptions), and
//! splitting them across files would scatter one ordering argument over several rooms.

use super::env::TicketEnv;
use super::supervisor::{Retire, SupervisorLink};
use super::view::{self, View, ViewCell};
use super::{Recent, TicketError};
use crate::domain::{TicketStatus, VisitorKey};
use crate::store::{
    AppendOutcome, AppendResult, MessagePage, NewMessage, StoreError, StoredMessage, TicketFacts,
    TicketState,
};
use actix::prelude::*;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::oneshot;
use uuid::Uuid;

/// How soon an actor of a deleted ticket, restarted because its address was still held,
/// stops again.
const GONE_RESTOP: Duration = Duration::from_millis(50);

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

/// Something that happened to a ticket, as its live subscribers (SSE streams) see it.
#[derive(Debug, Clone, PartialEq)]
pub enum TicketEvent {
    /// A committed message (private notes only reach operator subscribers). Shared: one
    /// copy however many streams watch the ticket, and a small slot in each stream's queue.
    Message(Arc<StoredMessage>),
    /// The status changed.
    Status(TicketStatus),
    /// Someone is typing: the visitor (`customer: true`) or an operator.
    Typing {
        /// Whether the visitor is the one typing.
        customer: bool,
    },
    /// The visitor marked the ticket read.
    Read,
}

/// New facts from a change made outside the actor (operator PATCH, mark-read); applied only
/// if newer than what the actor holds, then told to subscribers.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Refresh(pub TicketFacts);

/// The ticket changed outside this node (the cluster's change feed said so, or, without a
/// trusted feed, the periodic check of a watched ticket): reload its facts and key, and pass
/// the messages written elsewhere to subscribers in order.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CatchUp;

/// Someone is typing on a ticket whose request reached another node.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct TypingElsewhere {
    /// Whether the visitor is the one typing.
    pub customer: bool,
}

/// Ends the ticket's live streams (at shutdown, so open SSE connections do not hold the
/// server until its timeout; clients reconnect elsewhere and are replayed what they missed).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct EndStreams;

/// The ticket was deleted: stop and never come back.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Evict;

/// Tells subscribers someone is typing, after checking the request may.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), TicketError>")]
pub struct Typing {
    /// The requesting team.
    pub team_id: Uuid,
    /// The visitor's key, or `None` for an operator.
    pub visitor: Option<VisitorKey>,
}

/// Opens a live subscription: the messages after `after` now, then every event as it happens.
#[derive(Debug, Message)]
#[rtype(result = "Result<Subscription, TicketError>")]
pub struct Subscribe {
    /// The requesting team.
    pub team_id: Uuid,
    /// The visitor's key, or `None` for an operator.
    pub visitor: Option<VisitorKey>,
    /// Replay messages strictly after this (None: from the first), at most one page
    /// ([`super::TicketConfig::replay_page`]).
    pub after: Option<DateTime<Utc>>,
    /// Operators see private notes; widgets never do.
    pub include_private: bool,
}

/// A live subscription. Messages in `replay` and from [`Subscription::next`] may overlap (a
/// commit can land while the replay is read): consumers skip messages not after the last
/// they passed on.
pub struct Subscription {
    /// Current status.
    pub status: TicketStatus,
    /// Messages after the requested point, ascending: at most one page.
    pub replay: Vec<StoredMessage>,
    /// More messages follow the replayed page than it holds: a consumer that forwarded
    /// live events now would skip them, so it ends and resumes after the page's last one.
    pub has_more: bool,
    events: broadcast::Receiver<TicketEvent>,
    include_private: bool,
    env: Arc<TicketEnv>,
}

impl Subscription {
    /// The next event; `None` once the subscriber fell behind (counted as dropped: it should
    /// reconnect with `Last-Event-ID` and be replayed what it missed) or the actor stopped.
    pub async fn next(&mut self) -> Option<TicketEvent> {
        loop {
            match self.events.recv().await {
                Ok(TicketEvent::Message(m)) if m.is_private && !self.include_private => {}
                Ok(event) => return Some(event),
                Err(RecvError::Lagged(_)) => {
                    self.env.stats.dropped();
                    return None;
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// Events a subscriber may fall behind by before it is cut off.
const SUBSCRIBER_BUFFER: usize = 64;
/// Live subscribers per ticket.
const MAX_SUBSCRIBERS: usize = 20_000;

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
    /// One channel for all of the ticket's subscribers, while it has any: an event is
    /// stored once (messages behind an `Arc`) however many streams watch, and a stream
    /// costs a receiver, not a queue of its own.
    subscribers: Option<broadcast::Sender<TicketEvent>>,
    gone: bool,
    /// A catch-up is loading from the database; another one asked for meanwhile runs after.
    catching_up: bool,
    catch_up_again: bool,
    view: Arc<ViewCell>,
    env: Arc<TicketEnv>,
    supervisor: SupervisorLink,
    /// The trust epoch the state was last loaded from the database in (see [`View`]).
    epoch: u64,
    /// Waiting for the supervisor to remove it from the registry, then stopping.
    retiring: bool,
}

/// How often a watched ticket checks the database while memory is not trusted.
const UNTRUSTED_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// Messages one catch-up passes on; a ticket further behind cuts its subscribers off (they
/// reconnect and are replayed from the database).
const CATCH_UP_LIMIT: usize = 500;

impl TicketActor {
    /// An actor for a loaded ticket; `recent` is what is already known of its messages.
    /// `view` is where it publishes what reads need (see [`super::view`]).
    pub(super) fn new(
        state: TicketState,
        recent: Recent,
        view: Arc<ViewCell>,
        env: Arc<TicketEnv>,
        epoch: u64,
        supervisor: SupervisorLink,
    ) -> Self {
        Self {
            state,
            recent,
            pending: Vec::new(),
            in_flight: false,
            last_used: Instant::now(),
            draining: false,
            drained: Vec::new(),
            subscribers: None,
            gone: false,
            catching_up: false,
            catch_up_again: false,
            view,
            env,
            supervisor,
            epoch,
            retiring: false,
        }
    }

    /// Makes the current state what readers see. Called after every change, and before
    /// answering the writes that made it, so a visitor reads their own message.
    fn publish(&self) {
        self.view
            .publish(View::of(&self.state, &self.recent, self.epoch));
    }

    fn check_access(&self, team_id: Uuid, visitor: Option<&VisitorKey>) -> Result<(), TicketError> {
        view::check_access(
            self.state.team_id,
            &self.state.owner,
            self.state.linked_distinct_id.as_deref(),
            team_id,
            visitor,
        )
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
        let take = self.pending.len().min(self.env.config.max_batch);
        let batch: Vec<Pending> = self.pending.drain(..take).collect();
        let (messages, replies): (Vec<NewMessage>, Vec<_>) =
            batch.into_iter().map(|p| (p.message, p.reply)).unzip();
        let store = Arc::clone(&self.env.store);
        let (team_id, ticket_id) = (self.state.team_id, self.state.id);
        let timeout = self.env.config.write_timeout;
        let write = async move {
            match tokio::time::timeout(timeout, store.append(team_id, ticket_id, messages)).await {
                Ok(res) => res,
                Err(_) => Err(StoreError::Unavailable("append timed out".into())),
            }
        };
        ctx.spawn(write.into_actor(self).map(move |res, act, ctx| {
            act.in_flight = false;
            act.env.stats.dequeued(replies.len() as i64);
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
                self.apply(TicketFacts {
                    status: outcome.status,
                    unread_customer: outcome.unread_customer,
                    version: outcome.version,
                });
                let stored: Vec<_> = outcome
                    .results
                    .iter()
                    .filter_map(|r| match r {
                        AppendResult::Stored(m) => Some(m.clone()),
                        AppendResult::Replayed(_) => None,
                    })
                    .collect();
                // Someone else wrote since the newest message we passed on (another node,
                // or a commit whose outcome we never learnt): subscribers get those first,
                // in order, from the database, together with ours.
                let gap = outcome.prev_last_created_at != self.state.last_created_at;
                if gap {
                    self.catch_up(ctx);
                } else {
                    if let Some(last) = stored.last() {
                        self.state.last_created_at = Some(last.created_at);
                    }
                    for m in &stored {
                        self.broadcast(&TicketEvent::Message(Arc::new(m.clone())));
                    }
                }
                self.recent.extend(outcome.prev_last_created_at, stored);
                self.publish();
                for (reply, result) in replies.into_iter().zip(outcome.results) {
                    let _ = reply.send(Ok(Appended {
                        result,
                        status: outcome.status,
                        unread_customer: outcome.unread_customer,
                    }));
                }
            }
            Err(e) => {
                self.env.stats.error();
                // The commit may or may not have happened: forget what we think we know.
                self.recent.invalidate();
                self.publish();
                let err = TicketError::from(e.clone());
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
                match e {
                    StoreError::NotFound => {
                        self.fail_pending(TicketError::NotFound);
                        self.retire(ctx);
                    }
                    StoreError::Internal(_) => ctx.stop(), // restarted by the Supervisor
                    StoreError::Unavailable(_) | StoreError::Busy => {}
                }
            }
        }
    }

    /// Takes newer facts, telling subscribers what changed.
    fn apply(&mut self, facts: TicketFacts) {
        if facts.version <= self.state.version {
            return;
        }
        let before = (self.state.status, self.state.unread_customer);
        self.state.status = facts.status;
        self.state.unread_customer = facts.unread_customer;
        self.state.version = facts.version;
        if before.0 != facts.status {
            self.broadcast(&TicketEvent::Status(facts.status));
        }
        if before.1 > 0 && facts.unread_customer == 0 {
            self.broadcast(&TicketEvent::Read);
        }
    }

    /// Hands an event to every subscriber without waiting; one that falls too far behind
    /// is cut off (it reconnects and is replayed what it missed), so a slow client never
    /// holds up the ticket or the others.
    fn broadcast(&mut self, event: &TicketEvent) {
        if let Some(tx) = &self.subscribers {
            if tx.send(event.clone()).is_err() {
                self.subscribers = None; // nobody listens any more
            }
        }
    }

    fn fail_pending(&mut self, err: TicketError) {
        let n = self.pending.len() as i64;
        for p in self.pending.drain(..) {
            let _ = p.reply.send(Err(err.clone()));
        }
        self.env.stats.dequeued(n);
    }

    /// Asks the supervisor to remove this actor from the registry, then stops. Its mailbox
    /// waits meanwhile: a request that still reached it restarts it after the stop (see
    /// `restarting`). If the supervisor does not answer in time the actor stops anyway, and
    /// since its entry still holds its address actix restarts it: it stays registered and
    /// retires at a later idle check.
    fn retire(&mut self, ctx: &mut Context<Self>) {
        if std::mem::replace(&mut self.retiring, true) {
            return;
        }
        let supervisor = self.supervisor.clone();
        let retire = Retire {
            ticket_id: self.state.id,
            view: Arc::clone(&self.view),
        };
        let timeout = self.env.config.request_timeout;
        let done = async move { supervisor.ask(retire, Some(timeout)).await };
        ctx.wait(done.into_actor(self).map(|_, _, ctx| ctx.stop()));
    }

    /// Reloads the ticket and the messages after the newest one passed on, with the actor's
    /// mailbox paused meanwhile (two reads), so nothing it does interleaves with the result.
    fn catch_up(&mut self, ctx: &mut Context<Self>) {
        if self.gone {
            return;
        }
        if self.catching_up {
            self.catch_up_again = true;
            return;
        }
        self.catching_up = true;
        // Read before loading: what the load returns is current for this epoch and has
        // every change heard so far.
        let epoch = self.env.epoch();
        let heard = self.view.changes_heard();
        let from = self.state.last_created_at;
        let store = Arc::clone(&self.env.store);
        let (team_id, ticket_id) = (self.state.team_id, self.state.id);
        let timeout = self.env.config.write_timeout;
        let load = async move {
            let fresh = store.load_ticket(team_id, ticket_id).await?;
            let page = match &fresh {
                Some(t) if t.last_created_at > from => {
                    store
                        .page_messages(team_id, ticket_id, from, CATCH_UP_LIMIT, true)
                        .await?
                }
                _ => MessagePage {
                    messages: Vec::new(),
                    has_more: false,
                },
            };
            Ok::<_, StoreError>((fresh, page))
        };
        let load = async move {
            tokio::time::timeout(timeout, load)
                .await
                .unwrap_or_else(|_| Err(StoreError::Unavailable("catch-up timed out".into())))
        };
        ctx.wait(load.into_actor(self).map(move |res, act, ctx| {
            act.catching_up = false;
            let loaded = matches!(res, Ok((Some(_), _)));
            act.finish_catch_up(from, epoch, res, ctx);
            if loaded {
                act.view.caught_up_to(heard);
            }
            if std::mem::take(&mut act.catch_up_again) {
                act.catch_up(ctx);
            }
        }));
    }

    fn finish_catch_up(
        &mut self,
        from: Option<DateTime<Utc>>,
        epoch: u64,
        res: Result<(Option<TicketState>, MessagePage), StoreError>,
        ctx: &mut Context<Self>,
    ) {
        self.env.stats.handled();
        match res {
            Err(_) => {
                // Unknown: answer reads from the database until our next commit.
                self.env.stats.error();
                self.recent.invalidate();
                self.publish();
            }
            Ok((None, _)) => {
                // Erased elsewhere: end its streams and forget it.
                self.gone = true;
                self.subscribers = None;
                self.recent.invalidate();
                self.publish();
                self.retire(ctx);
            }
            Ok((Some(fresh), page)) => {
                self.epoch = epoch;
                // A restore re-keys tickets: the key is the database's, not ours.
                self.state.owner = fresh.owner.clone();
                self.state.linked_distinct_id = fresh.linked_distinct_id.clone();
                self.apply(TicketFacts {
                    status: fresh.status,
                    unread_customer: fresh.unread_customer,
                    version: fresh.version,
                });
                if page.has_more {
                    self.subscribers = None; // too far behind: they reconnect and replay
                    self.recent = Recent::at_tail(self.recent_capacity(), fresh.last_created_at);
                } else if !page.messages.is_empty() {
                    for m in &page.messages {
                        self.broadcast(&TicketEvent::Message(Arc::new(m.clone())));
                    }
                    self.recent.extend(from, page.messages);
                } else if fresh.last_created_at != from {
                    self.recent = Recent::at_tail(self.recent_capacity(), fresh.last_created_at);
                }
                self.state.last_created_at = fresh.last_created_at.max(from);
                self.publish();
            }
        }
    }

    fn recent_capacity(&self) -> usize {
        self.env.config.recent_capacity
    }

    /// Without a trusted change feed, a watched ticket looks for changes made elsewhere.
    fn poll_if_untrusted(&mut self, ctx: &mut Context<Self>) {
        if !self.env.memory_trusted() && self.subscribers.is_some() {
            self.catch_up(ctx);
        }
    }

    fn check_idle(&mut self, ctx: &mut Context<Self>) {
        if self.view.take_read() {
            self.last_used = Instant::now();
        }
        if self
            .subscribers
            .as_ref()
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            self.subscribers = None;
        }
        let idle =
            self.last_used.elapsed() >= self.env.config.idle_after && self.subscribers.is_none();
        if idle && !self.in_flight && self.pending.is_empty() {
            self.env.stats.evicted();
            self.retire(ctx);
        }
    }
}

impl Actor for TicketActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.env.stats.started();
        ctx.set_mailbox_capacity(self.env.config.mailbox_capacity);
        let every = self
            .env
            .config
            .idle_after
            .max(std::time::Duration::from_millis(10))
            / 2;
        ctx.run_interval(every, |act, ctx| act.check_idle(ctx));
        ctx.run_interval(UNTRUSTED_POLL, |act, ctx| act.poll_if_untrusted(ctx));
        // Appends that queued while a restart was under way are written now.
        self.flush(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.fail_pending(TicketError::Unavailable("ticket actor stopped".into()));
        self.env.stats.stopped();
    }
}

impl Supervised for TicketActor {
    fn restarting(&mut self, ctx: &mut Self::Context) {
        self.env.stats.restarted();
        self.in_flight = false;
        self.recent.invalidate();
        self.publish();
        self.last_used = Instant::now();
        self.retiring = false;
        if self.gone {
            // Its ticket was deleted and it is in no registry: actix restarted it only because
            // something still held its address when it stopped. It answers "not found" to
            // whatever that sends and stops again shortly, until nothing holds it.
            ctx.run_later(GONE_RESTOP, |_, ctx| ctx.stop());
            return;
        }
        // Registered again if a retirement raced a request that still held our address.
        self.supervisor
            .restarted(self.state.id, ctx.address(), Arc::clone(&self.view));
    }
}

impl Handler<Append> for TicketActor {
    type Result = ResponseFuture<Result<Appended, TicketError>>;

    fn handle(&mut self, msg: Append, ctx: &mut Self::Context) -> Self::Result {
        self.last_used = Instant::now();
        if let Err(e) = self.check_access(msg.team_id, msg.visitor.as_ref()) {
            return Box::pin(async move { Err(e) });
        }
        if self.pending.len() >= self.env.config.max_pending || self.draining {
            self.env.stats.dropped();
            return Box::pin(async { Err(TicketError::Overloaded) });
        }
        let (reply, rx) = oneshot::channel();
        self.pending.push(Pending {
            message: msg.message,
            reply,
        });
        self.env.stats.enqueued(1);
        self.flush(ctx);
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(TicketError::Unavailable("ticket actor stopped".into())))
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

impl Handler<Refresh> for TicketActor {
    type Result = ();

    fn handle(&mut self, msg: Refresh, _: &mut Self::Context) {
        self.env.stats.handled();
        self.apply(msg.0);
        self.publish();
    }
}

impl Handler<Evict> for TicketActor {
    type Result = ();

    fn handle(&mut self, _: Evict, ctx: &mut Self::Context) {
        // Sent by the supervisor, which has removed it from the registry already.
        self.gone = true;
        self.subscribers = None; // their streams end
        self.recent.invalidate();
        self.publish();
        ctx.stop();
    }
}

impl Handler<CatchUp> for TicketActor {
    type Result = ();

    fn handle(&mut self, _: CatchUp, ctx: &mut Self::Context) {
        self.catch_up(ctx);
    }
}

impl Handler<TypingElsewhere> for TicketActor {
    type Result = ();

    fn handle(&mut self, msg: TypingElsewhere, _: &mut Self::Context) {
        self.env.stats.handled();
        self.broadcast(&TicketEvent::Typing {
            customer: msg.customer,
        });
    }
}

impl Handler<EndStreams> for TicketActor {
    type Result = ();

    fn handle(&mut self, _: EndStreams, _: &mut Self::Context) {
        self.subscribers = None;
    }
}

impl Handler<Typing> for TicketActor {
    type Result = Result<(), TicketError>;

    fn handle(&mut self, msg: Typing, _: &mut Self::Context) -> Self::Result {
        self.env.stats.handled();
        self.check_access(msg.team_id, msg.visitor.as_ref())?;
        self.broadcast(&TicketEvent::Typing {
            customer: msg.visitor.is_some(),
        });
        Ok(())
    }
}

impl Handler<Subscribe> for TicketActor {
    type Result = ResponseFuture<Result<Subscription, TicketError>>;

    fn handle(&mut self, msg: Subscribe, _: &mut Self::Context) -> Self::Result {
        self.last_used = Instant::now();
        self.env.stats.handled();
        if let Err(e) = self.check_access(msg.team_id, msg.visitor.as_ref()) {
            return Box::pin(async move { Err(e) });
        }
        let tx = self
            .subscribers
            .get_or_insert_with(|| broadcast::channel(SUBSCRIBER_BUFFER).0);
        if tx.receiver_count() >= MAX_SUBSCRIBERS {
            self.env.stats.dropped();
            return Box::pin(async { Err(TicketError::Overloaded) });
        }
        let events = tx.subscribe();
        let (include_private, env) = (msg.include_private, Arc::clone(&self.env));
        let status = self.state.status;
        let limit = self.env.config.replay_page;
        let remembered = (self.env.memory_trusted() && self.epoch == self.env.epoch())
            .then(|| self.recent.page(msg.after, limit, msg.include_private))
            .flatten();
        if let Some(page) = remembered {
            return Box::pin(async move {
                Ok(Subscription {
                    status,
                    replay: page.messages,
                    has_more: page.has_more,
                    events,
                    include_private,
                    env,
                })
            });
        }
        let store = Arc::clone(&self.env.store);
        let (team_id, ticket_id) = (self.state.team_id, self.state.id);
        Box::pin(async move {
            let page = store
                .page_messages(team_id, ticket_id, msg.after, limit, msg.include_private)
                .await?;
            Ok(Subscription {
                status,
                replay: page.messages,
                has_more: page.has_more,
                events,
                include_private,
                env,
            })
        })
    }
}
