//! The [`RateLimiters`] handle HTTP handlers share: it finds (or starts) a team's actor and
//! asks it, hands out the [`Charged`] charges a refused request takes back, and reports
//! where budgets are decided ([`BudgetsStatus`]).

use super::limiter::{Check, RateLimiter, Refund};
use super::shared::{SharedBudgets, SharedCharge};
use super::table::{Changes, RateCheck, RateRefusal, TeamState, MAX_KEYS, SWEEP_EVERY};
use crate::stats::{ActorStats, ActorStatsSnapshot};
use actix::prelude::*;
use dashmap::DashMap;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use uuid::Uuid;

/// What one admitted request charged, wherever it was charged.
#[derive(Debug)]
pub(super) enum Charge {
    Local(Changes),
    Shared(SharedCharge),
}

/// The charges of one admitted request. Dropping it keeps them; [`Charged::settle`] takes
/// them back when the request is then refused, so a refused request leaves no key behind.
pub struct Charged {
    reg: Arc<Registry>,
    addr: Option<Addr<RateLimiter>>,
    charge: Option<Charge>,
}

impl Charged {
    /// Passes `res` through; on `Err` first takes the request's charges back (keys it
    /// created are forgotten), as the request was not served after all.
    pub fn settle<T, E>(self, res: Result<T, E>) -> Result<T, E> {
        if res.is_err() {
            self.refund();
        }
        res
    }

    /// Takes the request's charges back (asynchronously: the team's actor, or the shared
    /// store, does it; a later check of the same caller is queued behind it).
    pub fn refund(self) {
        match self.charge {
            None => {}
            Some(Charge::Shared(c)) if c.keys.is_empty() => {}
            Some(Charge::Local(c)) if c.is_empty() => {}
            Some(Charge::Shared(c)) => {
                if let Some(shared) = self.reg.shared.clone() {
                    actix::spawn(async move { shared.refund(c).await });
                }
            }
            Some(local) => {
                // A full mailbox loses the refund: the visitor keeps the charge (counted).
                let sent = self.addr.map(|a| a.try_send(Refund(local)));
                if !matches!(sent, Some(Ok(()))) {
                    self.reg.stats.dropped();
                }
            }
        }
    }
}

impl std::fmt::Debug for Charged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Charged")
            .field("charge", &self.charge)
            .finish()
    }
}

/// Where budgets are decided now, for `/api/ops/actors` and `/metrics`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct BudgetsStatus {
    /// `local` (no shared store: this node counts alone), `cluster` (the shared store
    /// decides) or `fallback` (the store is unreachable: each node allows limit / live nodes).
    pub mode: &'static str,
    /// Nodes sharing the budgets (this one included), the fallback's divisor.
    pub live_nodes: usize,
    /// Times the cluster budgets were given up for local ones since start.
    pub fallbacks: u64,
    /// Checks decided locally because the shared store was unreachable.
    pub fallback_checks: u64,
    /// Calls made to the shared store since start (0 without one).
    pub store_calls: u64,
}

/// What the handle and every team's actor share.
pub(super) struct Registry {
    pub(super) teams: DashMap<Uuid, Team, foldhash::fast::RandomState>,
    pub(super) stats: ActorStats,
    pub(super) shared: Option<Arc<dyn SharedBudgets>>,
    pub(super) epoch: Instant,
    pub(super) max_keys: usize,
    pub(super) idle: Duration,
    /// Set while checks fall back to local budgets (for the warning on each change).
    pub(super) degraded: AtomicBool,
    pub(super) fallbacks: AtomicU64,
    pub(super) fallback_checks: AtomicU64,
}

/// A live team actor and its key count, published for reporting without asking it.
pub(super) struct Team {
    pub(super) addr: Addr<RateLimiter>,
    pub(super) keys: Arc<AtomicUsize>,
}

impl Registry {
    /// A check was decided locally although a shared store is configured.
    pub(super) fn fell_back(&self, live_nodes: usize) {
        self.fallback_checks.fetch_add(1, Relaxed);
        if !self.degraded.swap(true, Relaxed) {
            self.fallbacks.fetch_add(1, Relaxed);
            tracing::warn!(
                live_nodes,
                "shared rate budgets unreachable (REDIS_URL): each node now allows limit / \
                 {live_nodes} on its own until they are back"
            );
        }
    }

    /// A check was decided by the shared store again.
    pub(super) fn resumed(&self) {
        if self.degraded.swap(false, Relaxed) {
            tracing::info!("shared rate budgets are back: limits hold across nodes again");
        }
    }
}

/// The handle HTTP handlers share: finds (or starts) a team's [`RateLimiter`] and asks it.
/// Teams are independent (one team's visitors never use another's budget).
#[derive(Clone)]
pub struct RateLimiters {
    reg: Arc<Registry>,
}

impl Default for RateLimiters {
    fn default() -> Self {
        Self::new(MAX_KEYS, None)
    }
}

impl RateLimiters {
    /// Limiters whose teams each track at most `max_keys` keys, counting with the other
    /// nodes through `shared` when given (else this node counts alone).
    pub fn new(max_keys: usize, shared: Option<Arc<dyn SharedBudgets>>) -> Self {
        Self::with_idle(max_keys, shared, SWEEP_EVERY)
    }

    /// As [`RateLimiters::new`], with actors sweeping and stopping after `idle` (tests).
    pub fn with_idle(
        max_keys: usize,
        shared: Option<Arc<dyn SharedBudgets>>,
        idle: Duration,
    ) -> Self {
        Self {
            reg: Arc::new(Registry {
                teams: DashMap::default(),
                stats: ActorStats::default(),
                shared,
                epoch: Instant::now(),
                max_keys: max_keys.max(1),
                idle,
                degraded: AtomicBool::new(false),
                fallbacks: AtomicU64::new(0),
                fallback_checks: AtomicU64::new(0),
            }),
        }
    }

    /// Limiters whose teams each track at most `max_keys` keys, on this node alone.
    pub fn with_max_keys(max_keys: usize) -> Self {
        Self::new(max_keys, None)
    }

    /// Checks `checks` against `team_id`'s budgets. Admitted: every budget is charged, and
    /// the returned [`Charged`] can take it back.
    pub async fn check(
        &self,
        team_id: Uuid,
        checks: Vec<RateCheck>,
    ) -> Result<Charged, RateRefusal> {
        self.check_gated(team_id, Vec::new(), checks).await
    }

    /// Charges `gate` first and keeps it even when `checks` then refuse (a sender pays for
    /// its refused requests too), then `checks`, all or nothing: one message to the team's
    /// actor, one call to the shared store. The returned [`Charged`] covers `checks`.
    pub async fn check_gated(
        &self,
        team_id: Uuid,
        gate: Vec<RateCheck>,
        checks: Vec<RateCheck>,
    ) -> Result<Charged, RateRefusal> {
        let (reply, answer) = oneshot::channel();
        let mut msg = Check {
            gate,
            checks,
            reply,
        };
        let mut addr = self.actor(team_id);
        self.reg.stats.enqueued(1);
        loop {
            match addr.try_send(msg) {
                Ok(()) => break,
                Err(SendError::Full(m)) => {
                    // Wait for room; a refused send means the actor stopped meanwhile.
                    if addr.send(m).await.is_err() {
                        return self.lost();
                    }
                    break;
                }
                Err(SendError::Closed(m)) => {
                    // Stopped between lookup and send: forget it and start a fresh one.
                    self.reg.teams.remove_if(&team_id, |_, t| t.addr == addr);
                    msg = m;
                    addr = self.actor(team_id);
                }
            }
        }
        match answer.await {
            Ok(res) => res.map(|charge| Charged {
                reg: Arc::clone(&self.reg),
                addr: Some(addr),
                charge: Some(charge),
            }),
            Err(_) => self.lost(),
        }
    }

    /// The team's actor stopped with the check still queued (it went idle at that very
    /// moment): the request is admitted uncharged rather than refused for our reason,
    /// counted as an error.
    fn lost(&self) -> Result<Charged, RateRefusal> {
        self.reg.stats.dequeued(1);
        self.reg.stats.error();
        Ok(Charged {
            reg: Arc::clone(&self.reg),
            addr: None,
            charge: None,
        })
    }

    /// How many teams have a live actor on this node, and their counters.
    pub fn stats(&self) -> ActorStatsSnapshot {
        self.reg.stats.snapshot()
    }

    /// Where budgets are decided now.
    pub fn budgets(&self) -> BudgetsStatus {
        let (mode, live_nodes) = match &self.reg.shared {
            None => ("local", 1),
            Some(s) if s.healthy() => ("cluster", s.live_nodes().max(1)),
            Some(s) => ("fallback", s.live_nodes().max(1)),
        };
        BudgetsStatus {
            mode,
            live_nodes,
            fallbacks: self.reg.fallbacks.load(Relaxed),
            fallback_checks: self.reg.fallback_checks.load(Relaxed),
            store_calls: self.reg.shared.as_ref().map_or(0, |s| s.calls()),
        }
    }

    /// Keys tracked per team on this node (distinct_ids, IPs, sessions with recent
    /// requests), largest first; in a healthy cluster they live in the shared store instead.
    pub fn keys_per_team(&self) -> Vec<(Uuid, usize)> {
        let mut all: Vec<(Uuid, usize)> = self
            .reg
            .teams
            .iter()
            .map(|e| (*e.key(), e.value().keys.load(Relaxed)))
            .collect();
        all.sort_by_key(|(_, keys)| std::cmp::Reverse(*keys));
        all
    }

    fn actor(&self, team_id: Uuid) -> Addr<RateLimiter> {
        if let Some(t) = self.reg.teams.get(&team_id) {
            return t.addr.clone();
        }
        let entry = self.reg.teams.entry(team_id).or_insert_with(|| {
            self.reg.stats.started();
            let keys = Arc::new(AtomicUsize::new(0));
            let addr = RateLimiter {
                team_id,
                state: TeamState::with_max_keys(self.reg.max_keys),
                reg: Arc::clone(&self.reg),
                keys: Arc::clone(&keys),
                last_used: Instant::now(),
                in_flight: 0,
            }
            .start();
            Team { addr, keys }
        });
        entry.addr.clone()
    }
}
