//! The [`TicketRouter`], what HTTP handlers hold to reach the tickets. It answers each
//! request where that is cheapest: a poll from the view the ticket's actor published (one
//! atomic load, no mailbox), an append or a subscription through the ticket's actor, found in
//! the [`super::supervisor::Registry`] without a mailbox round trip. Only a miss (no live
//! actor) loads the ticket once, scoped by team, so a stranger's random ids never create
//! actors, and asks the [`TicketSupervisor`] for an actor. While memory is not trusted (see
//! [`super::env::MemoryTrust`]) reads and access checks go to the database.

use super::actor::{
    Append, Appended, CatchUp, Refresh, Subscribe, Subscription, TicketActor, TicketPage, Typing,
    TypingElsewhere,
};
use super::env::{TicketConfig, TicketEnv};
use super::supervisor::{
    DrainAll, EndAllStreams, EvictTicket, LiveTicket, Spawn, SupervisorLink, TicketSupervisor,
};
use super::view::View;
use super::{Recent, TicketError};
use crate::domain::VisitorKey;
use crate::stats::ActorStatsSnapshot;
use crate::store::{NewMessage, NewTicket, Opened, Store, StoreError, TicketFacts, TicketState};
use actix::prelude::*;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use uuid::Uuid;

/// Routes requests to the tickets: open, append, read, subscribe, drain. Cheap to clone.
#[derive(Clone)]
pub struct TicketRouter {
    env: Arc<TicketEnv>,
    supervisor: SupervisorLink,
}

impl TicketRouter {
    /// Starts the [`TicketSupervisor`] on the current actix arbiter.
    pub fn start(store: Arc<dyn Store>, config: TicketConfig) -> Self {
        let env = Arc::new(TicketEnv::new(store, config));
        let supervisor = TicketSupervisor::start_here(Arc::clone(&env));
        Self { env, supervisor }
    }

    /// Counters of the ticket actors, for `/api/ops/actors` and metrics.
    pub fn stats(&self) -> ActorStatsSnapshot {
        self.env.stats.snapshot()
    }

    /// Whether reads may be answered from what the actors hold in memory.
    pub fn memory_trusted(&self) -> bool {
        self.env.memory_trusted()
    }

    /// Says whether memory is current (the cluster's node registry and change feed decide).
    /// Untrusted, every read and access check goes to the database; trusted again, every
    /// live ticket first catches up with what changed meanwhile.
    pub fn set_memory_trusted(&self, trusted: bool) {
        if self.env.trust.set(trusted) {
            self.revalidate_all();
        }
    }

    /// Every live ticket reloads from the database (after the change feed reconnected).
    pub fn revalidate_all(&self) {
        self.env.registry.for_each(|live| {
            if live.addr.try_send(CatchUp).is_err() {
                self.env.stats.dropped();
            }
        });
    }

    /// Another node changed this ticket: its live actor here, if any, catches up.
    pub fn changed_elsewhere(&self, ticket_id: Uuid) {
        if let Some(live) = self.live(ticket_id) {
            // At once, not when the actor gets to it: reads skip the snapshot from now on.
            live.view.mark_changed();
            if live.addr.try_send(CatchUp).is_err() {
                self.env.stats.dropped();
            }
        }
    }

    /// Someone is typing on this ticket through another node: its streams here hear it.
    pub fn typing_elsewhere(&self, ticket_id: Uuid, customer: bool) {
        if let Some(live) = self.live(ticket_id) {
            if live.addr.try_send(TypingElsewhere { customer }).is_err() {
                self.env.stats.dropped();
            }
        }
    }

    /// Counters of the ticket supervisor itself: operators tell a stuck supervisor from busy
    /// ticket actors. `handled` counts the requests it answered (spawns, retirements,
    /// evictions, drains), restart notices and sweeps; `evictions` the registry entries it
    /// removed; `restarts` the ticket actors' restarts it heard of; `queued` the requests
    /// waiting in its mailbox; `dropped` those it did not answer in time or could not take.
    pub fn supervisor_stats(&self) -> ActorStatsSnapshot {
        self.env.supervisor_stats.snapshot()
    }

    /// Whether a live actor holds this ticket (tests of eviction use it).
    pub fn is_live(&self, ticket_id: Uuid) -> bool {
        self.env.registry.live(ticket_id).is_some()
    }

    /// Opens a ticket with its first message; the new ticket's actor starts with that
    /// message in memory, since its widget polls right after.
    pub async fn open(&self, ticket: NewTicket) -> Result<Opened, TicketError> {
        let store = Arc::clone(&self.env.store);
        let epoch = self.env.epoch();
        let opened = self.bounded(store.open_ticket(ticket)).await??;
        if let Opened::Created { ticket, message } = &opened {
            let mut recent = Recent::unknown(self.env.config.recent_capacity);
            recent.extend(None, vec![message.clone()]);
            // The ticket is committed: if the supervisor is too busy to start its actor now,
            // the next request for it starts one (from the database) instead.
            let _ = self.spawn(ticket.clone(), recent, epoch).await;
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
        let store = Arc::clone(&self.env.store);
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

    /// [`TicketRouter::read`] without memory: the ticket and its page from the database.
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
        let store = Arc::clone(&self.env.store);
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
        let store = Arc::clone(&self.env.store);
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
                self.env.stats.dropped();
            }
        }
    }

    /// Stops a deleted ticket's actor so nothing of it stays in memory (the supervisor
    /// removes it and waits for it to stop).
    pub async fn evict(&self, ticket_id: Uuid) {
        if self.env.registry.contains(ticket_id) {
            let timeout = 2 * self.env.config.request_timeout;
            let _ = self
                .supervisor
                .ask(EvictTicket(ticket_id), Some(timeout))
                .await;
        }
    }

    fn live(&self, ticket_id: Uuid) -> Option<LiveTicket> {
        self.env.registry.live(ticket_id)
    }

    /// The ticket's published view, after checking the request may use the ticket.
    async fn view(
        &self,
        team_id: Uuid,
        ticket_id: Uuid,
        visitor: Option<&VisitorKey>,
    ) -> Result<Option<Arc<View>>, TicketError> {
        // The common case, a live ticket, without cloning its actor's address and without
        // awaiting.
        let (view, behind) = match self.env.registry.view(ticket_id) {
            Some(seen) => seen,
            None => {
                let live = self.actor(team_id, ticket_id).await?;
                (live.view.load(), live.view.behind())
            }
        };
        self.env.stats.handled();
        if view.epoch != self.env.epoch() || behind {
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
            .is_none_or(|l| l.view.load().epoch == self.env.epoch() && !l.view.behind())
    }

    /// Lets every ticket actor commit what it has queued; new appends are refused.
    pub async fn drain(&self) {
        self.supervisor.ask(DrainAll, None).await;
    }

    /// Ends every live stream (at shutdown).
    pub async fn end_streams(&self) {
        self.supervisor.ask(EndAllStreams, None).await;
    }

    async fn ask<M>(&self, addr: Addr<TicketActor>, msg: M) -> Result<M::Result, TicketError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        TicketActor: Handler<M>,
    {
        match addr
            .send(msg)
            .timeout(self.env.config.request_timeout)
            .await
        {
            Ok(res) => Ok(res),
            Err(MailboxError::Timeout) => {
                self.env.stats.dropped();
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
        match tokio::time::timeout(self.env.config.write_timeout, fut).await {
            Ok(res) => Ok(res.map_err(TicketError::from)),
            Err(_) => Err(TicketError::Unavailable("database timed out".into())),
        }
    }

    /// The live actor of a ticket; on a miss, loads the ticket and asks the supervisor for
    /// its actor.
    async fn actor(&self, team_id: Uuid, ticket_id: Uuid) -> Result<LiveTicket, TicketError> {
        if let Some(live) = self.live(ticket_id) {
            return Ok(live);
        }
        let store = Arc::clone(&self.env.store);
        let epoch = self.env.epoch(); // before the load: it is current for this epoch
        let state = self
            .bounded(store.load_ticket(team_id, ticket_id))
            .await??
            .ok_or(TicketError::NotFound)?;
        let recent = Recent::at_tail(self.env.config.recent_capacity, state.last_created_at);
        self.spawn(state, recent, epoch).await
    }

    /// Asks the supervisor for the ticket's actor, started on this worker's arbiter if the
    /// ticket has none (another request may have won the race: then that one's).
    async fn spawn(
        &self,
        state: TicketState,
        recent: Recent,
        epoch: u64,
    ) -> Result<LiveTicket, TicketError> {
        let spawn = Spawn {
            state,
            recent,
            epoch,
            arbiter: Arbiter::try_current(),
        };
        self.supervisor
            .ask(spawn, Some(self.env.config.request_timeout))
            .await
            .ok_or(TicketError::Overloaded)
    }
}
