//! Admission control: one [`RateLimiter`] actor per active team on each node owns that team's
//! budgets (GCRA: one timestamp per tier and key), so one tenant's visitors never use up
//! another's budget and no database is touched to decide. HTTP handlers ask through the
//! [`RateLimiters`] handle, which starts a team's actor on demand; an actor with no budget
//! left to remember stops when idle. Refusals carry the wait.
//!
//! With a [`SharedBudgets`] store (Redis in a cluster), the actor asks it, so a limit holds
//! across nodes instead of being multiplied by their number; while the store is unreachable
//! the actor decides alone on `limit / live nodes`, and goes back to the store by itself.
//!
//! A stranger can name any number of keys (distinct_ids, sessions), so a team's table is
//! bounded and full means *forget the oldest*, never *refuse the newcomer*: the keys evicted
//! first are those whose budgets are most nearly whole (earliest theoretical arrival time),
//! so forgetting one gives a visitor back at most what time would soon have returned. A
//! request refused after admission (an unknown or another visitor's ticket) takes its charge
//! back with [`Charged::settle`], so it leaves no key behind.

use crate::domain::Limit;
use crate::stats::{ActorStats, ActorStatsSnapshot};
use actix::prelude::*;
use async_trait::async_trait;
use dashmap::DashMap;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use uuid::Uuid;

/// A budget's dimension: what the key counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// POST message per distinct_id.
    MessageDistinctId,
    /// POST message per client IP.
    MessageIp,
    /// POST message per team.
    MessageTeam,
    /// GETs per distinct_id.
    ReadDistinctId,
    /// posthog-js surface: every call per widget session (or IP).
    WidgetSession,
    /// posthog-js surface: reads per team.
    TeamReads,
    /// posthog-js surface: writes per team.
    TeamWrites,
    /// Restore requests per email.
    RestoreEmail,
    /// Restore requests per IP.
    RestoreIp,
    /// Every widget request per client IP (IPv6: per /64), charged before anything else.
    WidgetIp,
}

impl Tier {
    /// A stable label for metrics and suspicion flags.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::MessageDistinctId => "message_distinct_id",
            Tier::MessageIp => "message_ip",
            Tier::MessageTeam => "message_team",
            Tier::ReadDistinctId => "read_distinct_id",
            Tier::WidgetSession => "widget_session",
            Tier::TeamReads => "team_reads",
            Tier::TeamWrites => "team_writes",
            Tier::RestoreEmail => "restore_email",
            Tier::RestoreIp => "restore_ip",
            Tier::WidgetIp => "widget_ip",
        }
    }
}

/// One budget to check: tier, key within the tier, and the team's limit for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateCheck {
    /// The tier.
    pub tier: Tier,
    /// The key within the tier (a distinct_id, an IP; empty for team-wide tiers).
    pub key: String,
    /// The limit that applies.
    pub limit: Limit,
}

/// A refused request: which budget ran out and how long until one more is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limit {} exceeded; retry after {retry_after:?}", tier.as_str())]
pub struct RateRefusal {
    /// The tier that ran out.
    pub tier: Tier,
    /// How long until a retry can succeed.
    pub retry_after: Duration,
}

/// GCRA for one key: `tat` is the theoretical arrival time of the next request (as time
/// since the limiter's epoch). Returns the new TAT on admission, or the wait on refusal.
/// A burst of up to `limit.count` is admitted at once, then one per `period / count`.
pub fn gcra(tat: Option<Duration>, now: Duration, limit: Limit) -> Result<Duration, Duration> {
    let count = limit.count.max(1);
    let interval = limit.period / count;
    let tolerance = limit.period.saturating_sub(interval);
    let tat = tat.map_or(now, |t| t.max(now));
    let ahead = tat - now;
    if ahead > tolerance {
        Err(ahead - tolerance)
    } else {
        Ok(tat + interval)
    }
}

/// The most keys one team's limiter tracks by default; beyond it the oldest are forgotten,
/// so a flood of made-up keys costs bounded memory and never refuses a newcomer.
pub const MAX_KEYS: usize = 200_000;

/// How often expired keys are forgotten.
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);

type Key = (Tier, String);

/// One team's GCRA state: one timestamp per tier and key.
struct TeamState {
    tats: HashMap<Key, Duration>,
    max_keys: usize,
}

impl Default for TeamState {
    fn default() -> Self {
        Self::with_max_keys(MAX_KEYS)
    }
}

/// What one admitted request changed: each key with its TAT before and after.
type Changes = Vec<(Key, Option<Duration>, Duration)>;

impl TeamState {
    fn with_max_keys(max_keys: usize) -> Self {
        Self {
            tats: HashMap::new(),
            max_keys: max_keys.max(1),
        }
    }

    /// Checks every budget of a request at once: admitted only if all admit, and then all
    /// are charged; a refused request charges nothing. Returns what changed, and how many
    /// keys were evicted to make room.
    fn check(
        &mut self,
        checks: &[RateCheck],
        now: Duration,
    ) -> Result<(Changes, usize), RateRefusal> {
        let mut changes = Vec::with_capacity(checks.len());
        for c in checks {
            let key = (c.tier, c.key.clone());
            let tat = self.tats.get(&key).copied();
            match gcra(tat, now, c.limit) {
                Ok(new_tat) => changes.push((key, tat, new_tat)),
                Err(wait) => {
                    return Err(RateRefusal {
                        tier: c.tier,
                        retry_after: wait,
                    })
                }
            }
        }
        for (key, _, tat) in &changes {
            // an existing key (the usual case) is updated in place: no copy of the key
            match self.tats.get_mut(key) {
                Some(t) => *t = *tat,
                None => {
                    self.tats.insert(key.clone(), *tat);
                }
            }
        }
        let evicted = if self.tats.len() > self.max_keys {
            self.evict(now)
        } else {
            0
        };
        Ok((changes, evicted))
    }

    /// Undoes an admitted request's charges, key by key, unless another request has charged
    /// that key since (then its state is theirs). A key the request created goes away.
    fn refund(&mut self, changes: &Changes, now: Duration) {
        for (key, before, after) in changes {
            if self.tats.get(key) != Some(after) {
                continue;
            }
            match before {
                Some(tat) if *tat > now => {
                    self.tats.insert(key.clone(), *tat);
                }
                _ => {
                    self.tats.remove(key);
                }
            }
        }
    }

    /// Makes room: forgets whole budgets, then the oldest keys (earliest TAT) until a
    /// sixteenth of the table is free, so a flood pays one O(n) pass per n/16 new keys.
    /// Returns how many were forgotten.
    fn evict(&mut self, now: Duration) -> usize {
        let before = self.tats.len();
        self.sweep(now);
        let target = self.max_keys - self.max_keys / 16;
        if self.tats.len() > target {
            let excess = self.tats.len() - target;
            let mut by_age: Vec<(Duration, &Key)> =
                self.tats.iter().map(|(k, tat)| (*tat, k)).collect();
            by_age.select_nth_unstable_by_key(excess - 1, |(tat, _)| *tat);
            let oldest: Vec<Key> = by_age[..excess].iter().map(|(_, k)| (*k).clone()).collect();
            for k in &oldest {
                self.tats.remove(k);
            }
        }
        before - self.tats.len()
    }

    fn sweep(&mut self, now: Duration) {
        self.tats.retain(|_, tat| *tat > now);
    }
}

/// How many checks may wait in one team's mailbox; beyond it senders wait for room
/// (backpressure: a flood slows its own team, never grows memory), seen in `peak_queued`.
pub const MAILBOX: usize = 1024;

/// A charge in the shared store, to take back when the request is refused after all: each
/// key with its TAT before (`None`: the key did not exist) and after, in the store's clock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedCharge {
    /// (store key, TAT before, TAT after), in the store's units.
    pub keys: Vec<(String, Option<i64>, i64)>,
}

/// The shared store did not answer in time: this request is decided by the node alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("shared budgets unreachable")]
pub struct SharedDown;

/// Port: budgets every node of a cluster counts together (Redis, in the service crate), so
/// a limit holds across nodes instead of being multiplied by their number.
#[async_trait]
pub trait SharedBudgets: Send + Sync + 'static {
    /// Charges `gate` (kept even when `checks` then refuse), then `checks`, all or nothing,
    /// in one atomic step; the charge returned covers `checks` only.
    async fn check(
        &self,
        team_id: Uuid,
        gate: &[RateCheck],
        checks: &[RateCheck],
    ) -> Result<Result<SharedCharge, RateRefusal>, SharedDown>;

    /// Takes a charge back, key by key, unless another request charged the key since.
    async fn refund(&self, charge: SharedCharge);

    /// Whether the store answered lately; while not, checks are decided locally at once
    /// instead of each waiting for a timeout.
    fn healthy(&self) -> bool;

    /// Nodes sharing the budgets now, this one included: while the store is away each node
    /// allows `limit / live_nodes`, so the cluster as a whole stays near the limit.
    fn live_nodes(&self) -> usize;

    /// Calls made to the store since start (operations per request, for the benchmarks).
    fn calls(&self) -> u64;
}

/// What one admitted request charged, wherever it was charged.
#[derive(Debug)]
enum Charge {
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
struct Registry {
    teams: DashMap<Uuid, Team, foldhash::fast::RandomState>,
    stats: ActorStats,
    shared: Option<Arc<dyn SharedBudgets>>,
    epoch: Instant,
    max_keys: usize,
    idle: Duration,
    /// Set while checks fall back to local budgets (for the warning on each change).
    degraded: AtomicBool,
    fallbacks: AtomicU64,
    fallback_checks: AtomicU64,
}

/// A live team actor and its key count, published for reporting without asking it.
struct Team {
    addr: Addr<RateLimiter>,
    keys: Arc<AtomicUsize>,
}

impl Registry {
    /// A check was decided locally although a shared store is configured.
    fn fell_back(&self, live_nodes: usize) {
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
    fn resumed(&self) {
        if self.degraded.swap(false, Relaxed) {
            tracing::info!("shared rate budgets are back: limits hold across nodes again");
        }
    }
}

/// One team's budgets on this node: a check is a few hash lookups in the actor's own table,
/// or one call to the shared store. Started on demand by [`RateLimiters`], stopped when it
/// has been idle for a sweep period with no budget left to remember.
pub struct RateLimiter {
    team_id: Uuid,
    state: TeamState,
    reg: Arc<Registry>,
    keys: Arc<AtomicUsize>,
    last_used: Instant,
    /// Shared-store checks not yet answered: the actor does not stop under them.
    in_flight: usize,
}

/// Checks a request's budgets: `gate` first (kept even when `checks` refuse), then `checks`,
/// all or nothing. Answered on `reply`, so a caller whose actor stopped gets it back.
struct Check {
    gate: Vec<RateCheck>,
    checks: Vec<RateCheck>,
    reply: oneshot::Sender<Result<Charge, RateRefusal>>,
}

impl Message for Check {
    type Result = ();
}

/// Takes back a local charge.
struct Refund(Charge);

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

/// A limit shared by `n` nodes: each gets its share, never less than one request.
fn divided(limit: Limit, n: usize) -> Limit {
    let n = u32::try_from(n).unwrap_or(u32::MAX).max(1);
    Limit {
        count: (limit.count / n).max(1),
        period: limit.period,
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

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn admits_a_burst_of_the_limit_then_refuses() {
        let limit = Limit::per_minute(10);
        let mut tat = None;
        for i in 0..10 {
            tat = Some(gcra(tat, Duration::ZERO, limit).unwrap_or_else(|_| panic!("request {i}")));
        }
        assert_eq!(gcra(tat, Duration::ZERO, limit), Err(6 * S));
    }

    #[test]
    fn refills_at_the_sustained_rate_never_a_doubled_burst() {
        let limit = Limit::per_minute(10);
        let mut tat = None;
        for _ in 0..10 {
            tat = Some(gcra(tat, Duration::ZERO, limit).unwrap());
        }
        // A fixed window would allow another 10 at t = 60 s; GCRA allows one per 6 s.
        assert!(gcra(tat, 5 * S, limit).is_err());
        let tat = Some(gcra(tat, 6 * S, limit).unwrap());
        assert!(gcra(tat, 6 * S, limit).is_err());
        let mut tat2 = tat;
        let mut admitted = 0;
        for t in 0..=60 {
            if let Ok(n) = gcra(tat2, (6 + t) * S, limit) {
                tat2 = Some(n);
                admitted += 1;
            }
        }
        assert_eq!(
            admitted, 10,
            "in 60 s after exhaustion, exactly the sustained rate"
        );
    }

    #[test]
    fn a_refused_request_charges_no_tier() {
        let mut rl = TeamState::default();
        let c = |tier, n| RateCheck {
            tier,
            key: "k".into(),
            limit: Limit::per_minute(n),
        };
        let checks = [c(Tier::MessageIp, 100), c(Tier::MessageDistinctId, 1)];
        assert!(rl.check(&checks, Duration::ZERO).is_ok());
        let Err(refused) = rl.check(&checks, Duration::ZERO) else {
            panic!("the second request must be refused by a budget");
        };
        assert_eq!(refused.tier, Tier::MessageDistinctId);
        let ip_tat = rl.tats[&(Tier::MessageIp, "k".to_string())];
        assert_eq!(
            ip_tat,
            Duration::from_millis(600),
            "only the admitted request was charged"
        );
    }

    fn one(key: &str) -> [RateCheck; 1] {
        [RateCheck {
            tier: Tier::ReadDistinctId,
            key: key.into(),
            limit: Limit::per_minute(10),
        }]
    }

    #[test]
    fn a_full_table_forgets_its_oldest_keys_and_admits_the_newcomer() {
        let mut rl = TeamState::with_max_keys(32);
        // A busy visitor (budget nearly spent) and 40 one-off keys, one second apart.
        for _ in 0..9 {
            assert!(rl.check(&one("busy"), Duration::ZERO).is_ok());
        }
        for i in 0..40u64 {
            let r = rl.check(&one(&format!("k{i}")), Duration::from_secs(i) / 10);
            assert!(r.is_ok(), "key {i} is admitted although the table is full");
            assert!(rl.tats.len() <= 32, "the table stays bounded");
        }
        assert!(
            rl.tats
                .contains_key(&(Tier::ReadDistinctId, "busy".to_string())),
            "the busy key (latest TAT) is kept"
        );
        assert!(
            !rl.tats
                .contains_key(&(Tier::ReadDistinctId, "k0".to_string())),
            "the oldest one-off key went first"
        );
        assert!(rl.check(&one("busy"), Duration::from_secs(4)).is_ok());
        assert!(
            rl.check(&one("busy"), Duration::from_secs(4)).is_err(),
            "the busy visitor's budget survived the flood"
        );
    }

    #[actix::test]
    async fn a_refund_forgets_created_keys_and_restores_charged_ones() {
        let limiters = RateLimiters::default();
        let team = Uuid::now_v7();
        limiters.check(team, one("known").to_vec()).await.unwrap();
        let keys = |l: &RateLimiters| l.keys_per_team()[0].1;
        assert_eq!(keys(&limiters), 1);
        let mut both = one("known").to_vec();
        both.extend(one("new"));
        let charged = limiters.check(team, both).await.unwrap();
        assert_eq!(keys(&limiters), 2);
        charged.settle(Err::<(), ()>(())).unwrap_err();
        for _ in 0..9 {
            limiters.check(team, one("known").to_vec()).await.unwrap();
        }
        assert_eq!(keys(&limiters), 1, "the refused request's new key is gone");
        assert!(
            limiters.check(team, one("known").to_vec()).await.is_err(),
            "the known key was charged once, not twice"
        );
        let kept = limiters.check(team, one("other").to_vec()).await.unwrap();
        assert_eq!(kept.settle(Ok::<u8, ()>(1)), Ok(1));
        assert_eq!(keys(&limiters), 2, "a served request keeps its charge");
    }

    #[actix::test]
    async fn a_refund_leaves_a_key_alone_that_another_request_charged_since() {
        let limiters = RateLimiters::default();
        let team = Uuid::now_v7();
        let first = limiters.check(team, one("shared").to_vec()).await.unwrap();
        limiters.check(team, one("shared").to_vec()).await.unwrap();
        first.refund();
        limiters.check(team, one("other").to_vec()).await.unwrap();
        assert_eq!(limiters.keys_per_team(), vec![(team, 2)]);
    }

    #[actix::test]
    async fn the_gate_is_charged_even_when_the_request_is_refused() {
        let limiters = RateLimiters::default();
        let team = Uuid::now_v7();
        let gate = || {
            vec![RateCheck {
                tier: Tier::WidgetIp,
                key: "1.2.3.4".into(),
                limit: Limit::per_minute(3),
            }]
        };
        let tight = || {
            vec![RateCheck {
                tier: Tier::MessageDistinctId,
                key: "v".into(),
                limit: Limit::per_minute(1),
            }]
        };
        assert!(limiters.check_gated(team, gate(), tight()).await.is_ok());
        let r = limiters
            .check_gated(team, gate(), tight())
            .await
            .unwrap_err();
        assert_eq!(r.tier, Tier::MessageDistinctId);
        assert!(limiters.check_gated(team, gate(), vec![]).await.is_ok());
        let r = limiters
            .check_gated(team, gate(), vec![])
            .await
            .unwrap_err();
        assert_eq!(r.tier, Tier::WidgetIp, "three requests paid the gate");
    }

    #[actix::test]
    async fn limiters_are_per_team_and_exact_under_concurrent_requests() {
        let limiters = RateLimiters::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let checks = || {
            vec![RateCheck {
                tier: Tier::MessageTeam,
                key: String::new(),
                limit: Limit::per_hour(50),
            }]
        };
        let mut asks = Vec::new();
        for _ in 0..80 {
            let (l, c) = (limiters.clone(), checks());
            asks.push(actix::spawn(async move { l.check(a, c).await.is_ok() }));
        }
        let mut admitted = 0;
        for ask in asks {
            admitted += usize::from(ask.await.unwrap());
        }
        assert_eq!(admitted, 50, "exactly the burst is admitted");
        assert!(
            limiters.check(b, checks()).await.is_ok(),
            "team b has its own budget"
        );
        let s = limiters.stats();
        assert_eq!(
            (s.alive, s.handled),
            (2, 81),
            "one actor per team, every check"
        );
    }

    #[actix::test]
    async fn an_idle_team_actor_forgets_whole_budgets_and_stops() {
        let limiters = RateLimiters::with_idle(MAX_KEYS, None, Duration::from_millis(40));
        let team = Uuid::now_v7();
        let checks = || {
            vec![RateCheck {
                tier: Tier::ReadDistinctId,
                key: "v".into(),
                limit: Limit {
                    count: 1,
                    period: Duration::from_millis(1),
                },
            }]
        };
        assert!(limiters.check(team, checks()).await.is_ok());
        assert_eq!(limiters.keys_per_team(), vec![(team, 1)]);
        assert_eq!(limiters.stats().alive, 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(limiters.keys_per_team(), vec![]);
        let s = limiters.stats();
        assert_eq!((s.alive, s.evictions), (0, 1));
        assert!(
            limiters.check(team, checks()).await.is_ok(),
            "a fresh actor and budget after the eviction"
        );
        assert_eq!(limiters.stats().alive, 1);
    }

    /// A shared store in memory that can be switched off.
    #[derive(Default)]
    struct FakeShared {
        down: AtomicBool,
        calls: AtomicUsize,
        state: std::sync::Mutex<TeamState>,
    }

    #[async_trait]
    impl SharedBudgets for FakeShared {
        async fn check(
            &self,
            _team_id: Uuid,
            gate: &[RateCheck],
            checks: &[RateCheck],
        ) -> Result<Result<SharedCharge, RateRefusal>, SharedDown> {
            self.calls.fetch_add(1, Relaxed);
            if self.down.load(Relaxed) {
                return Err(SharedDown);
            }
            let mut state = self.state.lock().unwrap();
            let now = Duration::ZERO;
            if let Err(r) = state.check(gate, now) {
                return Ok(Err(r));
            }
            Ok(state.check(checks, now).map(|_| SharedCharge::default()))
        }
        async fn refund(&self, _charge: SharedCharge) {}
        fn healthy(&self) -> bool {
            !self.down.load(Relaxed)
        }
        fn live_nodes(&self) -> usize {
            2
        }
        fn calls(&self) -> u64 {
            self.calls.load(Relaxed) as u64
        }
    }

    #[actix::test]
    async fn without_the_shared_store_each_node_allows_its_share_and_goes_back_by_itself() {
        let shared = Arc::new(FakeShared::default());
        let limiters = RateLimiters::new(MAX_KEYS, Some(shared.clone()));
        let team = Uuid::now_v7();
        let check = |key: &str| one(key).to_vec();
        let admitted = |l: RateLimiters, key: &'static str| async move {
            let mut n = 0;
            for _ in 0..20 {
                n += usize::from(l.check(team, check(key)).await.is_ok());
            }
            n
        };
        assert_eq!(admitted(limiters.clone(), "a").await, 10);
        assert_eq!(limiters.budgets().mode, "cluster");
        assert_eq!(shared.calls.load(Relaxed), 20);

        shared.down.store(true, Relaxed);
        assert_eq!(
            admitted(limiters.clone(), "b").await,
            5,
            "limit 10 over 2 live nodes"
        );
        let b = limiters.budgets();
        assert_eq!((b.mode, b.live_nodes, b.fallbacks), ("fallback", 2, 1));
        assert_eq!(b.fallback_checks, 20);
        assert_eq!(
            shared.calls.load(Relaxed),
            20,
            "no waiting on a store known down"
        );

        shared.down.store(false, Relaxed);
        assert_eq!(admitted(limiters.clone(), "c").await, 10);
        let b = limiters.budgets();
        assert_eq!((b.mode, b.fallbacks, b.fallback_checks), ("cluster", 1, 20));
    }

    #[actix::test]
    async fn a_store_failing_mid_check_is_answered_locally() {
        struct Flaky;
        #[async_trait]
        impl SharedBudgets for Flaky {
            async fn check(
                &self,
                _: Uuid,
                _: &[RateCheck],
                _: &[RateCheck],
            ) -> Result<Result<SharedCharge, RateRefusal>, SharedDown> {
                Err(SharedDown)
            }
            async fn refund(&self, _charge: SharedCharge) {}
            fn healthy(&self) -> bool {
                true
            }
            fn live_nodes(&self) -> usize {
                3
            }
            fn calls(&self) -> u64 {
                0
            }
        }
        let limiters = RateLimiters::new(MAX_KEYS, Some(Arc::new(Flaky)));
        let team = Uuid::now_v7();
        let mut n = 0;
        for _ in 0..10 {
            n += usize::from(limiters.check(team, one("v").to_vec()).await.is_ok());
        }
        assert_eq!(n, 3, "10 / 3 live nodes");
        assert_eq!(limiters.budgets().fallback_checks, 10);
    }
}
