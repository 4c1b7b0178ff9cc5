//! The ticket actors' lifecycle. [`Tickets`] is the handle HTTP handlers hold: it finds the
//! actor of a ticket in a shared registry (so the supervisor's mailbox is no global
//! bottleneck), spawns it on first use — after loading the ticket once, scoped by team, so a
//! stranger's random ids never create actors — under actix's `Supervisor`, which restarts it
//! after a fault. Actors evict themselves when idle. The [`TicketSupervisor`] actor sweeps
//! the registry and drains every ticket at shutdown.

use super::actor::{
    Append, Appended, CatchUp, Drain, EndStreams, Evict, Refresh, Subscribe, Subscription,
    TicketActor, TicketPage, Typing, TypingElsewhere,
};
use super::view::{View, ViewCell};
use super::{Recent, TicketError};
use crate::domain::VisitorKey;
use crate::stats::{ActorStats, ActorStatsSnapshot};
use crate::store::{NewMessage, NewTicket, Opened, Store, StoreError, TicketFacts};
use actix::prelude::*;
use chrono::{DateTime, Utc};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Bounds and timings of ticket actors.
#[derive(Debug, Clone)]
pub struct TicketConfig {
    /// Mailbox bound per ticket actor.
    pub mailbox_capacity: usize,
    /// Appends a ticket may hold queued before refusing with "overloaded".
    pub max_pending: usize,
    /// Most appends committed in one transaction.
    pub max_batch: usize,
    /// Idle time after which a ticket actor stops.
    pub idle_after: Duration,
    /// Longest a write transaction may take before it counts as failed.
    pub write_timeout: Duration,
    /// Longest a request waits for a ticket actor's answer.
    pub request_timeout: Duration,
    /// Recent messages kept per ticket for polling from memory.
    pub recent_capacity: usize,
    /// Most messages one subscription replays: a stream far behind gets one page, ends,
    /// and reconnects from its last one, so no stream holds a whole history in memory.
    pub replay_page: usize,
}

impl Default for TicketConfig {
    fn default() -> Self {
        Self {
            mailbox_capacity: 256,
            max_pending: 512,
            max_batch: 128,
            idle_after: Duration::from_secs(300),
            write_timeout: Duration::from_millis(1200),
            request_timeout: Duration::from_millis(1600),
            recent_capacity: 8,
            replay_page: 500,
        }
    }
}

/// What every ticket actor and the handle share.
pub(super) struct Shared {
    pub(super) store: Arc<dyn Store>,
    pub(super) registry: DashMap<Uuid, Live, foldhash::fast::RandomState>,
    pub(super) stats: ActorStats,
    /// The supervisor's own counters: spawns, sweeps and drains it did, what it swept.
    pub(super) supervisor_stats: ActorStats,
    pub(super) config: TicketConfig,
    /// Whether what actors hold in memory is current: always on one node; in a cluster
    /// only while the change feed is healthy (see the service's `cluster` module).
    memory_trusted: AtomicBool,
    /// Bumped each time memory becomes trusted again: a ticket's memory is current only once
    /// its actor has caught up with the database in the current epoch; until then its reads
    /// and checks go to the database (else a message read from the database during the gap
    /// could vanish from the next answer).
    epoch: AtomicU64,
}

impl Shared {
    /// Whether reads may be answered from memory.
    pub(super) fn memory_trusted(&self) -> bool {
        self.memory_trusted.load(Ordering::Acquire)
    }

    /// The current trust epoch.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }
}

/// A live ticket: its actor, and the view it publishes for reads.
#[derive(Clone)]
pub(super) struct Live {
    pub(super) addr: Addr<TicketActor>,
    pub(super) view: Arc<ViewCell>,
}

/// The handle to every ticket: open, append, read, drain. Cheap to clone.
#[derive(Clone)]
pub struct Tickets {
    shared: Arc<Shared>,
    supervisor: Addr<TicketSupervisor>,
}

impl Tickets {
    /// Starts the supervisor on the current actix arbiter.
    pub fn start(store: Arc<dyn Store>, config: TicketConfig) -> Self {
        let shared = Arc::new(Shared {
            store,
            registry: DashMap::default(),
            stats: ActorStats::default(),
            supervisor_stats: ActorStats::default(),
            config,
            memory_trusted: AtomicBool::new(true),
            epoch: AtomicU64::new(0),
        });
        let supervisor = TicketSupervisor {
            shared: Arc::clone(&shared),
        }
        .start();
        Self { shared, supervisor }
    }

    /// Counters of the ticket actors, for `/api/ops/actors` and metrics.
    pub fn stats(&self) -> ActorStatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// Whether reads may be answered from what the actors hold in memory.
    pub fn memory_trusted(&self) -> bool {
        self.shared.memory_trusted()
    }

    /// Says whether memory is current (the cluster's node registry and change feed decide).
    /// Untrusted, every read and access check goes to the database; trusted again, every
    /// live ticket first catches up with what changed meanwhile.
    pub fn set_memory_trusted(&self, trusted: bool) {
        if trusted && !self.shared.memory_trusted() {
            // Before the flag: whoever sees it trusted also sees every view as behind.
            self.shared.epoch.fetch_add(1, Ordering::AcqRel);
        }
        let was = self.shared.memory_trusted.swap(trusted, Ordering::AcqRel);
        if trusted && !was {
            self.revalidate_all();
        }
    }

    /// Every live ticket reloads from the database (after the change feed reconnected).
    pub fn revalidate_all(&self) {
        for live in self.shared.registry.iter() {
            if live.value().addr.try_send(CatchUp).is_err() {
                self.shared.stats.dropped();
            }
        }
    }

    /// Another node changed this ticket: its live actor here, if any, catches up.
    pub fn changed_elsewhere(&self, ticket_id: Uuid) {
        if let Some(live) = self.live(ticket_id) {
            // At once, not when the actor gets to it: reads skip the snapshot from now on.
            live.view.mark_changed();
            if live.addr.try_send(CatchUp).is_err() {
                self.shared.stats.dropped();
            }
        }
    }

    /// Someone is typing on this ticket through another node: its streams here hear it.
    pub fn typing_elsewhere(&self, ticket_id: Uuid, customer: bool) {
        if let Some(live) = self.live(ticket_id) {
            if live.addr.try_send(TypingElsewhere { customer }).is_err() {
                self.shared.stats.dropped();
            }
        }
    }

    /// Counters of the ticket supervisor itself (one actor): operators tell a stuck
    /// supervisor from busy ticket actors. `handled` counts spawns, sweeps and drains;
    /// `evictions` the dead registry entries its sweeps removed.
    pub fn supervisor_stats(&self) -> ActorStatsSnapshot {
        self.shared.supervisor_stats.snapshot()
    }

    /// Whether a live actor holds this ticket (tests of eviction use it).
    pub fn is_live(&self, ticket_id: Uuid) -> bool {
        self.shared
            .registry
            .get(&ticket_id)
            .is_some_and(|l| l.addr.connected())
    }

    /// Opens a ticket with its first message; the new ticket's actor starts with that
    /// message in memory, since its widget polls right after.
    pub async fn open(&self, ticket: NewTicket) -> Result<Opened, TicketError> {
        let store = Arc::clone(&self.shared.store);
        let epoch = self.shared.epoch();
        let opened = self.bounded(store.open_ticket(ticket)).await??;
        if let Opened::Created { ticket, message } = &opened {
            let mut recent = Recent::unknown(self.shared.config.recent_capacity);
            recent.extend(None, vec![message.clone()]);
            self.spawn(ticket.clone(), recent, epoch);
        }
        Ok(opened)
    }

    /// Appends a message through the ticket's actor, which orders and group-commits it.
    pub async fn append(
        &self,
        team_id: Uuid,
        ticket_id: Uuid,
        visitor: Option<VisitorKey>,
        message: NewMessage,
    ) -> Result<Appended, TicketError> {
        let visitor = self.checked_fresh(team_id, ticket_id, visitor).await?;
        let addr = self.actor(team_id, ticket_id).await?.addr;
        let msg = Append {
            team_id,
            visitor,
            message,
        };
        self.ask(addr, msg).await?
    }

    /// Reads messages strictly after `after`: from the view the ticket's actor published
    /// when its recent window reaches back that far (the common poll: nothing new), else
    /// with one query. Neither waits for the actor's mailbox.
    pub async fn read(
        &self,
        team_id: Uuid,
        ticket_id: Uuid,
        visitor: Option<VisitorKey>,
        after: Option<DateTime<Utc>>,
        limit: usize,
        include_private: bool,
    ) -> Result<TicketPage, TicketError> {
        if !self.memory_trusted() {
            return self
                .read_fresh(team_id, ticket_id, visitor, after, limit, include_private)
                .await;
        }
        let Some(view) = self.view(team_id, ticket_id, visitor.as_ref()).await? else {
            return self
                .read_fresh(team_id, ticket_id, visitor, after, limit, include_private)
                .await;
        };
        let (status, unread_customer) = (view.status, view.unread_customer);
        if let Some(page) = view.recent.page(after, limit, include_private) {
            return Ok(TicketPage {
                status,
                unread_customer,
                page,
                from_memory: true,
            });
        }
        let store = Arc::clone(&self.shared.store);
        let page = self
            .bounded(store.page_messages(team_id, ticket_id, after, limit, include_private))
            .await??;
        Ok(TicketPage {
            status,
            unread_customer,
            page,
            from_memory: false,
        })
    }

    /// [`Tickets::read`] without memory: the ticket and its page from the database.
    async fn read_fresh(
        &self,
        team_id: Uuid,
        ticket_id: Uuid,
        visitor: Option<VisitorKey>,
        after: Option<DateTime<Utc>>,
        limit: usize,
        include_private: bool,
    ) -> Result<TicketPage, TicketError> {
        let state = self
            .load_checked(team_id, ticket_id, visitor.as_ref())
            .await?;
        let store = Arc::clone(&self.shared.store);
        let page = self
            .bounded(store.page_messages(team_id, ticket_id, after, limit, include_private))
            .await??;
        Ok(TicketPage {
            status: state.status,
            unread_customer: state.unread_customer,
            page,
            from_memory: false,
        })
    }

    /// The ticket as the database has it, after checking the request may use it.
    async fn load_checked(
        &self,
        team_id: Uuid,
        ticket_id: Uuid,
        visitor: Option<&VisitorKey>,
    ) -> Result<crate::store::TicketState, TicketError> {
        let store = Arc::clone(&self.shared.store);
        let state = self
            .bounded(store.load_ticket(team_id, ticket_id))
            .await??
            .ok_or(TicketError::NotFound)?;
        super::view::check_access(
            state.team_id,
            &state.owner,
            state.linked_distinct_id.as_deref(),
            team_id,
            visitor,
        )?;
        Ok(state)
    }

    /// While memory is not trusted, checks the request against the database (the ticket may
    /// have been re-keyed or erased elsewhere) and then needs no check by the actor.
    async fn checked_fresh(
        &self,
        team_id: Uuid,
        ticket_id: Uuid,
        visitor: Option<VisitorKey>,
    ) -> Result<Option<VisitorKey>, TicketError> {
        if visitor.is_none() || (self.memory_trusted() && self.caught_up(ticket_id)) {
            return Ok(visitor);
        }
        self.load_checked(team_id, ticket_id, visitor.as_ref())
            .await?;
        Ok(None)
    }

    /// Opens a live subscription to a ticket's events (SSE).
    pub async fn subscribe(
        &self,
        team_id: Uuid,
        ticket_id: Uuid,
        visitor: Option<VisitorKey>,
        after: Option<DateTime<Utc>>,
        include_private: bool,
    ) -> Result<Subscription, TicketError> {
        let visitor = self.checked_fresh(team_id, ticket_id, visitor).await?;
        let addr = self.actor(team_id, ticket_id).await?.addr;
        let msg = Subscribe {
            team_id,
            visitor,
            after,
            include_private,
        };
        self.ask(addr, msg).await?
    }

    /// Checks that a request may use the ticket: 404 for another team's, 403 for another
    /// visitor's.
    pub async fn authorize(
        &self,
        team_id: Uuid,
        ticket_id: Uuid,
        visitor: Option<VisitorKey>,
    ) -> Result<(), TicketError> {
        if !self.memory_trusted() {
            self.load_checked(team_id, ticket_id, visitor.as_ref())
                .await?;
            return Ok(());
        }
        if self
            .view(team_id, ticket_id, visitor.as_ref())
            .await?
            .is_none()
        {
            self.load_checked(team_id, ticket_id, visitor.as_ref())
                .await?;
        }
        Ok(())
    }

    /// Tells a ticket's subscribers someone is typing.
    pub async fn typing(
        &self,
        team_id: Uuid,
        ticket_id: Uuid,
        visitor: Option<VisitorKey>,
    ) -> Result<(), TicketError> {
        let visitor = self.checked_fresh(team_id, ticket_id, visitor).await?;
        let addr = self.actor(team_id, ticket_id).await?.addr;
        self.ask(addr, Typing { team_id, visitor }).await?
    }

    /// Hands newer facts (after a change made outside the actor) to the live actor, if any.
    pub fn refresh(&self, ticket_id: Uuid, facts: TicketFacts) {
        if let Some(live) = self.live(ticket_id) {
            live.view.refresh(facts);
            if live.addr.try_send(Refresh(facts)).is_err() {
                self.shared.stats.dropped();
            }
        }
    }

    /// Stops a deleted ticket's actor so nothing of it stays in memory.
    pub async fn evict(&self, ticket_id: Uuid) {
        if let Some(live) = self.live(ticket_id) {
            let _ = live
                .addr
                .send(Evict)
                .timeout(self.shared.config.request_timeout)
                .await;
        }
    }

    fn live(&self, ticket_id: Uuid) -> Option<Live> {
        self.shared
            .registry
            .get(&ticket_id)
            .map(|l| l.value().clone())
            .filter(|l| l.addr.connected())
    }

    /// The ticket's published view, after checking the request may use the ticket.
    async fn view(
        &self,
        team_id: Uuid,
        ticket_id: Uuid,
        visitor: Option<&VisitorKey>,
    ) -> Result<Option<Arc<View>>, TicketError> {
        // The common case, a live ticket, without cloning its actor's address (an atomic
        // count shared by both worker threads) and without awaiting.
        let live_view = self
            .shared
            .registry
            .get(&ticket_id)
            .filter(|l| l.addr.connected())
            .map(|l| (l.view.load(), l.view.behind()));
        let (view, behind) = match live_view {
            Some(seen) => seen,
            None => {
                let live = self.actor(team_id, ticket_id).await?;
                (live.view.load(), live.view.behind())
            }
        };
        self.shared.stats.handled();
        if view.epoch != self.shared.epoch() || behind {
            // Not caught up since memory became trusted again, or with a change another
            // node announced.
            return Ok(None);
        }
        view.check_access(team_id, visitor)?;
        Ok(Some(view))
    }

    /// Whether the ticket's live actor (if any) has caught up in the current trust epoch; a
    /// ticket without one is loaded from the database when needed.
    fn caught_up(&self, ticket_id: Uuid) -> bool {
        self.live(ticket_id)
            .is_none_or(|l| l.view.load().epoch == self.shared.epoch() && !l.view.behind())
    }

    /// Lets every ticket actor commit what it has queued; new appends are refused.
    pub async fn drain(&self) {
        self.to_supervisor(DrainAll).await;
    }

    /// Ends every live stream (at shutdown).
    pub async fn end_streams(&self) {
        self.to_supervisor(EndAllStreams).await;
    }

    /// Sends the supervisor a message and waits for it, counting it in its queue meanwhile.
    async fn to_supervisor<M>(&self, msg: M)
    where
        M: Message<Result = ()> + Send + 'static,
        TicketSupervisor: Handler<M>,
    {
        let stats = &self.shared.supervisor_stats;
        stats.enqueued(1);
        if self.supervisor.send(msg).await.is_err() {
            stats.dropped();
        }
        stats.dequeued(1);
    }

    async fn ask<M>(&self, addr: Addr<TicketActor>, msg: M) -> Result<M::Result, TicketError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        TicketActor: Handler<M>,
    {
        match addr
            .send(msg)
            .timeout(self.shared.config.request_timeout)
            .await
        {
            Ok(res) => Ok(res),
            Err(MailboxError::Timeout) => {
                self.shared.stats.dropped();
                Err(TicketError::Overloaded)
            }
            Err(MailboxError::Closed) => {
                Err(TicketError::Unavailable("ticket actor stopped".into()))
            }
        }
    }

    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<Result<T, TicketError>, TicketError> {
        match tokio::time::timeout(self.shared.config.write_timeout, fut).await {
            Ok(res) => Ok(res.map_err(TicketError::from)),
            Err(_) => Err(TicketError::Unavailable("database timed out".into())),
        }
    }

    /// The live actor of a ticket, spawning it after loading the ticket if there is none.
    async fn actor(&self, team_id: Uuid, ticket_id: Uuid) -> Result<Live, TicketError> {
        if let Some(live) = self.live(ticket_id) {
            return Ok(live);
        }
        let store = Arc::clone(&self.shared.store);
        let epoch = self.shared.epoch(); // before the load: it is current for this epoch
        let state = self
            .bounded(store.load_ticket(team_id, ticket_id))
            .await??
            .ok_or(TicketError::NotFound)?;
        let recent = Recent::at_tail(self.shared.config.recent_capacity, state.last_created_at);
        Ok(self.spawn(state, recent, epoch))
    }

    fn spawn(&self, state: crate::store::TicketState, recent: Recent, epoch: u64) -> Live {
        let id = state.id;
        let shared = Arc::clone(&self.shared);
        let start = move || {
            let view = Arc::new(ViewCell::new(View::of(&state, &recent, epoch)));
            let cell = Arc::clone(&view);
            let addr = actix::Supervisor::start(move |_| {
                TicketActor::new(state, recent, cell, shared, epoch)
            });
            Live { addr, view }
        };
        // Starting an actor is synchronous: no await happens while the entry is held.
        self.shared.supervisor_stats.handled();
        match self.shared.registry.entry(id) {
            Entry::Occupied(e) if e.get().addr.connected() => e.get().clone(),
            Entry::Occupied(mut e) => {
                let live = start();
                e.insert(live.clone());
                live
            }
            Entry::Vacant(v) => v.insert(start()).clone(),
        }
    }
}

/// Sweeps the registry of dead entries and drains all tickets at shutdown.
pub struct TicketSupervisor {
    shared: Arc<Shared>,
}

/// Drains every live ticket actor; answers when all have committed their queues.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct DrainAll;

/// Ends the streams of every live ticket actor; answers when all have.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct EndAllStreams;

impl Actor for TicketSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(16);
        self.shared.supervisor_stats.started();
        ctx.run_interval(Duration::from_secs(30), |act, _| {
            let stats = &act.shared.supervisor_stats;
            stats.handled();
            act.shared.registry.retain(|_, live| {
                let keep = live.addr.connected();
                if !keep {
                    stats.evicted();
                }
                keep
            });
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.shared.supervisor_stats.stopped();
    }
}

impl TicketSupervisor {
    /// Sends `make()` to every live ticket actor; done when all have handled it.
    fn tell_all<M>(&self, make: impl Fn() -> M) -> ResponseFuture<()>
    where
        M: Message<Result = ()> + Send + 'static,
        TicketActor: Handler<M>,
    {
        let sends: Vec<_> = self
            .shared
            .registry
            .iter()
            .map(|e| {
                let (addr, msg) = (e.value().addr.clone(), make());
                async move {
                    let _ = addr.send(msg).await;
                }
            })
            .collect();
        Box::pin(futures_join_all(sends))
    }
}

impl Handler<DrainAll> for TicketSupervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: DrainAll, _: &mut Self::Context) -> Self::Result {
        self.tell_all(|| Drain)
    }
}

impl Handler<EndAllStreams> for TicketSupervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: EndAllStreams, _: &mut Self::Context) -> Self::Result {
        self.tell_all(|| EndStreams)
    }
}

/// Awaits every future; a tiny stand-in to avoid a dependency for one call.
async fn futures_join_all<F: std::future::Future<Output = ()> + 'static>(
    futs: impl IntoIterator<Item = F>,
) {
    let mut set = tokio::task::JoinSet::new();
    for f in futs {
        set.spawn_local(f);
    }
    while set.join_next().await.is_some() {}
}
