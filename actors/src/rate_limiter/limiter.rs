//! The per-team [`RateLimiter`] actor: it owns one team's table on this node, decides checks
//! locally or through the shared store, falls back to its share while the store is away,
//! and stops when idle with no budget left to remember.

use super::handle::{Charge, Registry};
use super::shared::{divided, SharedDown};
use super::table::{Changes, RateCheck, RateRefusal, TeamState};
use actix::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use uuid::Uuid;

/// How many checks may wait in one team's mailbox; beyond it senders wait for room
/// (backpressure: a flood slows its own team, never grows memory), seen in `peak_queued`.
pub const MAILBOX: usize = 1024;

/// One team's budgets on this node: a check is a few hash lookups in the actor's own table,
/// or one call to the shared store. Started on demand by
/// [`RateLimiters`](super::RateLimiters), stopped when it has been idle for a sweep period
/// with no budget left to remember.
pub struct RateLimiter {
    pub(super) team_id: Uuid,
    pub(super) state: TeamState,
    pub(super) reg: Arc<Registry>,
    pub(super) keys: Arc<AtomicUsize>,
    pub(super) last_used: Instant,
    /// Shared-store checks not yet answered: the actor does not stop under them.
    pub(super) in_flight: usize,
}

/// Checks a request's budgets: `gate` first (kept even when `checks` refuse), then `checks`,
/// all or nothing. Answered on `reply`, so a caller whose actor stopped gets it back.
pub(super) struct Check {
    pub(super) gate: Vec<RateCheck>,
    pub(super) checks: Vec<RateCheck>,
    pub(super) reply: oneshot::Sender<Result<Charge, RateRefusal>>,
}

impl Message for Check {
    type Result = ();
}

/// Takes back a local charge.
pub(super) struct Refund(pub(super) Charge);

impl Message for Refund {
    type Result = ();
}

impl RateLimiter {
    /// Decides locally; `divisor` > 1 while the shared store is away.
    fn local(
        &mut self,
        gate: &[RateCheck],
        checks: &[RateCheck],
        divisor: usize,
    ) -> Result<Charge, RateRefusal> {
        let now = self.reg.epoch.elapsed();
        let res = if divisor > 1 {
            let divide = |cs: &[RateCheck]| -> Vec<RateCheck> {
                cs.iter()
                    .map(|c| RateCheck {
                        tier: c.tier,
                        key: c.key.clone(),
                        limit: divided(c.limit, divisor),
                    })
                    .collect()
            };
            self.charge(&divide(gate), &divide(checks), now)
        } else {
            self.charge(gate, checks, now)
        };
        self.keys.store(self.state.tats.len(), Relaxed);
        res.map(Charge::Local)
    }

    fn charge(
        &mut self,
        gate: &[RateCheck],
        checks: &[RateCheck],
        now: Duration,
    ) -> Result<Changes, RateRefusal> {
        if !gate.is_empty() {
            let (_kept, evicted) = self.state.check(gate, now)?;
            self.reg.stats.evicted_many(evicted as u64);
        }
        let (changes, evicted) = self.state.check(checks, now)?;
        self.reg.stats.evicted_many(evicted as u64);
        Ok(changes)
    }
}

impl Actor for RateLimiter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
        ctx.run_interval(self.reg.idle, |act, ctx| {
            act.state.sweep(act.reg.epoch.elapsed());
            act.keys.store(act.state.tats.len(), Relaxed);
            if act.state.tats.is_empty()
                && act.in_flight == 0
                && act.last_used.elapsed() >= act.reg.idle
            {
                // Leave the registry first: a request from now on starts a fresh actor.
                let me = ctx.address();
                act.reg.teams.remove_if(&act.team_id, |_, t| t.addr == me);
                act.reg.stats.evicted();
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        let me = ctx.address();
        self.reg.teams.remove_if(&self.team_id, |_, t| t.addr == me);
        self.reg.stats.stopped();
    }
}

impl Handler<Check> for RateLimiter {
    type Result = ();

    fn handle(&mut self, msg: Check, ctx: &mut Self::Context) {
        self.last_used = Instant::now();
        self.reg.stats.dequeued(1);
        let Some(shared) = self.reg.shared.clone() else {
            let _ = msg.reply.send(self.local(&msg.gate, &msg.checks, 1));
            return;
        };
        if !shared.healthy() {
            let n = shared.live_nodes().max(1);
            self.reg.fell_back(n);
            let _ = msg.reply.send(self.local(&msg.gate, &msg.checks, n));
            return;
        }
        // Not atomic: other checks are handled while the store answers this one.
        self.in_flight += 1;
        let team_id = self.team_id;
        let ask = async move {
            let res = shared.check(team_id, &msg.gate, &msg.checks).await;
            (res, msg, shared)
        };
        ctx.spawn(ask.into_actor(self).map(|(res, msg, shared), act, _| {
            act.in_flight -= 1;
            let answer = match res {
                Ok(r) => {
                    act.reg.resumed();
                    r.map(Charge::Shared)
                }
                Err(SharedDown) => {
                    let n = shared.live_nodes().max(1);
                    act.reg.fell_back(n);
                    act.local(&msg.gate, &msg.checks, n)
                }
            };
            let _ = msg.reply.send(answer);
        }));
    }
}

impl Handler<Refund> for RateLimiter {
    type Result = ();

    fn handle(&mut self, msg: Refund, _ctx: &mut Self::Context) {
        self.reg.stats.handled();
        if let Charge::Local(changes) = msg.0 {
            self.state.refund(&changes, self.reg.epoch.elapsed());
            self.keys.store(self.state.tats.len(), Relaxed);
        }
    }
}
