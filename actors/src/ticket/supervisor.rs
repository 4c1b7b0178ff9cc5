//! The ticket supervisor: the one owner of the live tickets' lifecycle. It spawns a ticket's
//! actor (under actix's `Supervisor`, which restarts it after a fault), re-registers it after
//! a restart, removes it when it retires (idle, or its ticket gone), evicts deleted tickets,
//! sweeps out dead entries, and drains every ticket at shutdown.
//!
//! The [`Registry`] of live tickets is read by everyone without a mailbox round trip (the hot
//! path: an append to a live ticket, a poll answered from its view), and changed only here.
//! That is guaranteed by the compiler: the map is a private field of [`Registry`], declared in
//! this module, and the methods that insert or remove are private to this module, where only
//! the [`TicketSupervisor`]'s handlers and its sweep call them. The router and the actors hold
//! the registry through [`TicketEnv`] and can only look things up; to change it they send the
//! supervisor a message ([`Spawn`] on a miss, [`Retire`], [`Restarted`], [`EvictTicket`]).
//! Because the supervisor handles one message at a time, two requests that miss the same
//! ticket at once end with one actor: the second [`Spawn`] finds the first's actor.

use super::actor::{Drain, EndStreams, Evict, TicketActor};
use super::env::TicketEnv;
use super::view::{View, ViewCell};
use super::Recent;
use crate::store::TicketState;
use actix::dev::ToEnvelope;
use actix::prelude::*;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Mailbox bound of the supervisor: every miss (a ticket without a live actor) passes
/// through it, each handled in microseconds; senders beyond it wait, up to their timeout.
const SUPERVISOR_MAILBOX: usize = 256;

/// How often the supervisor sweeps out entries whose actor died without retiring (a panic).
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// The live tickets by id, for lookups that must not wait for any mailbox. Only the
/// supervisor changes it (see the module docs).
#[derive(Default)]
pub(super) struct Registry {
    map: DashMap<Uuid, LiveTicket, foldhash::fast::RandomState>,
}

/// A live ticket: its actor, and the view the actor publishes for reads.
#[derive(Clone)]
pub(super) struct LiveTicket {
    pub(super) addr: Addr<TicketActor>,
    pub(super) view: Arc<ViewCell>,
}

impl Registry {
    /// The ticket's live actor, if its mailbox is still open.
    pub(super) fn live(&self, ticket_id: Uuid) -> Option<LiveTicket> {
        self.map
            .get(&ticket_id)
            .filter(|l| l.addr.connected())
            .map(|l| l.value().clone())
    }

    /// The live ticket's latest view, and whether a change another node announced is not
    /// in it yet, without cloning its actor's address (an atomic count shared by every
    /// worker thread): the hot path of polls.
    pub(super) fn view(&self, ticket_id: Uuid) -> Option<(Arc<View>, bool)> {
        self.map
            .get(&ticket_id)
            .filter(|l| l.addr.connected())
            .map(|l| (l.view.load(), l.view.behind()))
    }

    /// Whether the ticket has an entry at all, live or dead.
    pub(super) fn contains(&self, ticket_id: Uuid) -> bool {
        self.map.contains_key(&ticket_id)
    }

    /// Calls `f` with every entry (no await may happen inside: shards stay read-locked).
    pub(super) fn for_each(&self, mut f: impl FnMut(&LiveTicket)) {
        for e in self.map.iter() {
            f(e.value());
        }
    }

    /// Private: an entry to insert into.
    fn entry(&self, ticket_id: Uuid) -> Entry<'_, Uuid, LiveTicket> {
        self.map.entry(ticket_id)
    }

    /// Private: removes the entry if it is still `view`'s actor's (not a successor's).
    fn remove_if_view(&self, ticket_id: Uuid, view: &Arc<ViewCell>) -> bool {
        self.map
            .remove_if(&ticket_id, |_, l| Arc::ptr_eq(&l.view, view))
            .is_some()
    }

    /// Private: removes the entry, whoever's it is.
    fn remove(&self, ticket_id: Uuid) -> Option<LiveTicket> {
        self.map.remove(&ticket_id).map(|(_, l)| l)
    }

    /// Private: removes every entry whose actor is gone; returns how many.
    fn remove_dead(&self) -> u64 {
        let mut removed = 0;
        self.map.retain(|_, l| {
            let keep = l.addr.connected();
            removed += u64::from(!keep);
            keep
        });
        removed
    }
}

/// Owns the lifecycle of the ticket actors; see the module docs.
pub struct TicketSupervisor {
    env: Arc<TicketEnv>,
}

impl TicketSupervisor {
    /// Starts the supervisor on the current arbiter and returns the way to reach it.
    pub(super) fn start_here(env: Arc<TicketEnv>) -> SupervisorLink {
        let addr = TicketSupervisor {
            env: Arc::clone(&env),
        }
        .start();
        SupervisorLink { addr, env }
    }
}

/// The way the router and the ticket actors reach the supervisor, counting what waits in its
/// mailbox and what could not be delivered.
#[derive(Clone)]
pub(super) struct SupervisorLink {
    addr: Addr<TicketSupervisor>,
    env: Arc<TicketEnv>,
}

impl SupervisorLink {
    /// Sends a request and waits for its answer (at most `timeout`, if given); `None` when
    /// the supervisor did not answer (counted as dropped).
    pub(super) async fn ask<M>(&self, msg: M, timeout: Option<Duration>) -> Option<M::Result>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        TicketSupervisor: Handler<M>,
        <TicketSupervisor as Actor>::Context: ToEnvelope<TicketSupervisor, M>,
    {
        let stats = &self.env.supervisor_stats;
        stats.enqueued(1);
        let request = self.addr.send(msg);
        let answer = match timeout {
            Some(t) => request.timeout(t).await,
            None => request.await,
        };
        stats.dequeued(1);
        if answer.is_err() {
            stats.dropped();
        }
        answer.ok()
    }

    /// Sends a notice without waiting; a full mailbox drops it (counted).
    fn tell<M>(&self, msg: M)
    where
        M: Message + Send + 'static,
        M::Result: Send,
        TicketSupervisor: Handler<M>,
        <TicketSupervisor as Actor>::Context: ToEnvelope<TicketSupervisor, M>,
    {
        if self.addr.try_send(msg).is_err() {
            self.env.supervisor_stats.dropped();
        }
    }

    /// A ticket actor restarted after a fault: re-register it if its entry was removed.
    pub(super) fn restarted(&self, ticket_id: Uuid, addr: Addr<TicketActor>, view: Arc<ViewCell>) {
        self.tell(Restarted {
            ticket_id,
            addr,
            view,
        });
    }
}

/// Asks for the live actor of a loaded ticket: the registered one if it is alive, else a new
/// one started from `state` and `recent`, on `arbiter` (the requester's worker thread, so
/// actors spread over the workers as requests do) or else the supervisor's own.
#[derive(Message)]
#[rtype(result = "LiveTicket")]
pub(super) struct Spawn {
    pub(super) state: TicketState,
    pub(super) recent: Recent,
    /// The trust epoch `state` was loaded in.
    pub(super) epoch: u64,
    pub(super) arbiter: Option<ArbiterHandle>,
}

/// A ticket actor is about to stop (idle, or its ticket gone): remove its entry unless a
/// successor holds it by now. Answered once done; the actor stops after the answer, so no
/// request finds a registered actor that has stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Retire {
    pub(super) ticket_id: Uuid,
    pub(super) view: Arc<ViewCell>,
}

/// A ticket actor restarted (after a fault, or because a request still held its address when
/// it retired): it is registered again unless another live actor holds the ticket by now
/// (then the restarted one finishes what it was sent and retires when idle).
#[derive(Message)]
#[rtype(result = "()")]
struct Restarted {
    ticket_id: Uuid,
    addr: Addr<TicketActor>,
    view: Arc<ViewCell>,
}

/// The ticket was deleted: remove it and stop its actor; answered once the actor has.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct EvictTicket(pub(super) Uuid);

/// Drains every live ticket actor; answers when all have committed their queues.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(super) struct DrainAll;

/// Ends the streams of every live ticket actor; answers when all have.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(super) struct EndAllStreams;

impl Actor for TicketSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(SUPERVISOR_MAILBOX);
        self.env.supervisor_stats.started();
        ctx.run_interval(SWEEP_EVERY, |act, _| {
            let stats = &act.env.supervisor_stats;
            stats.handled();
            stats.evicted_many(act.env.registry.remove_dead());
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.env.supervisor_stats.stopped();
    }
}

impl TicketSupervisor {
    /// Sends `make()` to every live ticket actor; done when all have handled it.
    fn tell_all<M>(&self, make: impl Fn() -> M) -> ResponseFuture<()>
    where
        M: Message<Result = ()> + Send + 'static,
        TicketActor: Handler<M>,
    {
        let mut sends = Vec::new();
        self.env.registry.for_each(|live| {
            let (addr, msg) = (live.addr.clone(), make());
            sends.push(async move {
                let _ = addr.send(msg).await;
            });
        });
        Box::pin(join_all(sends))
    }
}

impl Handler<Spawn> for TicketSupervisor {
    type Result = MessageResult<Spawn>;

    fn handle(&mut self, msg: Spawn, ctx: &mut Self::Context) -> Self::Result {
        let Spawn {
            state,
            recent,
            epoch,
            arbiter,
        } = msg;
        let ticket_id = state.id;
        let (env, link) = (
            Arc::clone(&self.env),
            SupervisorLink {
                addr: ctx.address(),
                env: Arc::clone(&self.env),
            },
        );
        let start = move || {
            let view = Arc::new(ViewCell::new(View::of(&state, &recent, epoch)));
            let cell = Arc::clone(&view);
            let arbiter = arbiter.unwrap_or_else(Arbiter::current);
            let addr = actix::Supervisor::start_in_arbiter(&arbiter, move |_| {
                TicketActor::new(state, recent, cell, env, epoch, link)
            });
            LiveTicket { addr, view }
        };
        // Starting an actor does not wait: nothing awaits while the entry is held.
        let live = match self.env.registry.entry(ticket_id) {
            Entry::Occupied(e) if e.get().addr.connected() => e.get().clone(),
            Entry::Occupied(mut e) => {
                self.env.supervisor_stats.evicted(); // its actor died without retiring
                let live = start();
                e.insert(live.clone());
                live
            }
            Entry::Vacant(v) => v.insert(start()).clone(),
        };
        MessageResult(live)
    }
}

impl Handler<Retire> for TicketSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Retire, _: &mut Self::Context) {
        if self.env.registry.remove_if_view(msg.ticket_id, &msg.view) {
            self.env.supervisor_stats.evicted();
        }
    }
}

impl Handler<Restarted> for TicketSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Restarted, _: &mut Self::Context) {
        let stats = &self.env.supervisor_stats;
        stats.handled();
        stats.restarted();
        match self.env.registry.entry(msg.ticket_id) {
            Entry::Occupied(e) if Arc::ptr_eq(&e.get().view, &msg.view) => {}
            Entry::Occupied(e) if e.get().addr.connected() => {}
            Entry::Occupied(mut e) => {
                e.insert(LiveTicket {
                    addr: msg.addr,
                    view: msg.view,
                });
            }
            Entry::Vacant(v) => {
                v.insert(LiveTicket {
                    addr: msg.addr,
                    view: msg.view,
                });
            }
        }
    }
}

impl Handler<EvictTicket> for TicketSupervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: EvictTicket, _: &mut Self::Context) -> Self::Result {
        let removed = self.env.registry.remove(msg.0);
        if removed.is_some() {
            self.env.supervisor_stats.evicted();
        }
        let timeout = self.env.config.request_timeout;
        // The request is made here and the address dropped before waiting: held across the
        // wait, it would count as a user and have actix restart the stopping actor.
        let stopped = removed.map(|live| live.addr.send(Evict).timeout(timeout));
        Box::pin(async move {
            if let Some(stopped) = stopped {
                let _ = stopped.await;
            }
        })
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
async fn join_all<F: std::future::Future<Output = ()> + 'static>(
    futs: impl IntoIterator<Item = F>,
) {
    let mut set = tokio::task::JoinSet::new();
    for f in futs {
        set.spawn_local(f);
    }
    while set.join_next().await.is_some() {}
}
