//! Admission control: per-team GCRA state (one timestamp per tier and key) behind a short
//! mutex, so one tenant's visitors never use up another's budget and no database is touched
//! to decide. HTTP handlers ask through [`RateLimiters`]; refusals carry the wait.

use crate::domain::Limit;
use crate::stats::{ActorStats, ActorStatsSnapshot};
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
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

/// The most keys one team's limiter tracks by default; beyond it new keys are refused until a
/// sweep frees expired ones, so a flood of spoofed keys cannot grow memory without bound.
pub const MAX_KEYS: usize = 200_000;

/// How often expired keys are forgotten.
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// One team's GCRA state: one timestamp per tier and key.
struct TeamState {
    tats: HashMap<(Tier, String), Duration>,
    max_keys: usize,
}

impl Default for TeamState {
    fn default() -> Self {
        Self::with_max_keys(MAX_KEYS)
    }
}

impl TeamState {
    fn with_max_keys(max_keys: usize) -> Self {
        Self {
            tats: HashMap::new(),
            max_keys,
        }
    }
}

impl TeamState {
    /// Checks every budget of a request at once: admitted only if all admit, and then all
    /// are charged; a refused request charges nothing.
    fn check(&mut self, checks: &[RateCheck], now: Duration) -> Result<(), Refusal> {
        let mut admitted = Vec::with_capacity(checks.len());
        for c in checks {
            let key = (c.tier, c.key.clone());
            let tat = self.tats.get(&key).copied();
            if tat.is_none() && self.tats.len() >= self.max_keys {
                return Err(Refusal::Full(RateRefusal {
                    tier: c.tier,
                    retry_after: Duration::from_secs(1),
                }));
            }
            match gcra(tat, now, c.limit) {
                Ok(new_tat) => admitted.push((key, new_tat)),
                Err(wait) => {
                    return Err(Refusal::Budget(RateRefusal {
                        tier: c.tier,
                        retry_after: wait,
                    }))
                }
            }
        }
        self.tats.extend(admitted);
        Ok(())
    }

    fn sweep(&mut self, now: Duration) {
        self.tats.retain(|_, tat| *tat > now);
    }
}

enum Refusal {
    Budget(RateRefusal),
    Full(RateRefusal),
}

/// One team's limiter. A short mutex instead of an actor: a check is a few hash lookups,
/// and a mailbox round trip to another worker thread cost more than the check itself
/// (two context switches per request; perf on `scripts/bench.sh` poll-tail).
struct TeamLimiter {
    state: Mutex<TeamState>,
    /// Keys tracked, published after each change for reporting without the lock.
    keys: AtomicUsize,
}

impl TeamLimiter {
    fn new(max_keys: usize) -> Self {
        Self {
            state: Mutex::new(TeamState::with_max_keys(max_keys)),
            keys: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TeamState> {
        // Nothing inside the lock can panic half-way through a change; a poisoned lock
        // still holds consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The per-team limiters; a handle HTTP handlers share. Teams are independent (one team's
/// visitors never use another's budget) and no database is touched to decide.
#[derive(Clone)]
pub struct RateLimiters {
    teams: Arc<DashMap<Uuid, Arc<TeamLimiter>>>,
    stats: Arc<ActorStats>,
    epoch: Instant,
    max_keys: usize,
}

impl Default for RateLimiters {
    fn default() -> Self {
        Self::with_max_keys(MAX_KEYS)
    }
}

impl RateLimiters {
    /// Limiters whose teams each track at most `max_keys` keys.
    pub fn with_max_keys(max_keys: usize) -> Self {
        Self {
            teams: Arc::default(),
            stats: Arc::default(),
            epoch: Instant::now(),
            max_keys: max_keys.max(1),
        }
    }

    /// Checks `checks` against `team_id`'s budgets, creating the team's state on first use.
    pub fn check(&self, team_id: Uuid, checks: &[RateCheck]) -> Result<(), RateRefusal> {
        let limiter = self.limiter(team_id);
        let now = self.epoch.elapsed();
        let mut state = limiter.lock();
        let res = state.check(checks, now);
        limiter.keys.store(state.tats.len(), Relaxed);
        drop(state);
        self.stats.handled();
        match res {
            Ok(()) => Ok(()),
            Err(Refusal::Budget(r)) => Err(r),
            Err(Refusal::Full(r)) => {
                self.stats.dropped();
                Err(r)
            }
        }
    }

    /// Forgets keys whose budget is whole again, and teams with none left.
    pub fn sweep(&self) {
        let now = self.epoch.elapsed();
        let limiters: Vec<(Uuid, Arc<TeamLimiter>)> = self
            .teams
            .iter()
            .map(|e| (*e.key(), Arc::clone(e.value())))
            .collect();
        for (team_id, limiter) in limiters {
            let mut state = limiter.lock();
            state.sweep(now);
            limiter.keys.store(state.tats.len(), Relaxed);
            let empty = state.tats.is_empty();
            drop(state);
            // A check racing this removal charges the old state, which is then dropped:
            // that request gets its budget back, never less than its limit.
            if empty
                && self
                    .teams
                    .remove_if(&team_id, |_, l| Arc::ptr_eq(l, &limiter))
                    .is_some()
            {
                self.stats.stopped();
            }
        }
    }

    /// Sweeps every [`SWEEP_EVERY`] on the current actix/tokio runtime.
    pub fn keep_swept(&self) {
        let me = self.clone();
        actix::spawn(async move {
            let mut every = tokio::time::interval(SWEEP_EVERY);
            every.tick().await;
            loop {
                every.tick().await;
                me.sweep();
            }
        });
    }

    /// How many teams have limiter state, and their counters.
    pub fn stats(&self) -> ActorStatsSnapshot {
        self.stats.snapshot()
    }

    /// Keys tracked per team (distinct_ids, IPs, sessions with recent requests), largest first.
    pub fn keys_per_team(&self) -> Vec<(Uuid, usize)> {
        let mut all: Vec<(Uuid, usize)> = self
            .teams
            .iter()
            .map(|e| (*e.key(), e.value().keys.load(Relaxed)))
            .collect();
        all.sort_by_key(|(_, keys)| std::cmp::Reverse(*keys));
        all
    }

    fn limiter(&self, team_id: Uuid) -> Arc<TeamLimiter> {
        if let Some(l) = self.teams.get(&team_id) {
            return Arc::clone(l.value());
        }
        let entry = self.teams.entry(team_id).or_insert_with(|| {
            self.stats.started();
            Arc::new(TeamLimiter::new(self.max_keys))
        });
        Arc::clone(entry.value())
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
        let Err(Refusal::Budget(refused)) = rl.check(&checks, Duration::ZERO) else {
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

    #[test]
    fn limiters_are_per_team_and_exact_across_threads() {
        let limiters = RateLimiters::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let checks = [RateCheck {
            tier: Tier::MessageTeam,
            key: String::new(),
            limit: Limit::per_hour(50),
        }];
        let admitted = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..20 {
                        if limiters.check(a, &checks).is_ok() {
                            admitted.fetch_add(1, Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(
            admitted.load(Relaxed),
            50,
            "exactly the burst is admitted, however the threads interleave"
        );
        assert!(
            limiters.check(b, &checks).is_ok(),
            "team b has its own budget"
        );
    }

    #[test]
    fn a_sweep_forgets_whole_budgets_and_empty_teams() {
        let limiters = RateLimiters::default();
        let team = Uuid::now_v7();
        let checks = [RateCheck {
            tier: Tier::ReadDistinctId,
            key: "v".into(),
            limit: Limit {
                count: 1,
                period: Duration::from_millis(1),
            },
        }];
        assert!(limiters.check(team, &checks).is_ok());
        assert_eq!(limiters.keys_per_team(), vec![(team, 1)]);
        assert_eq!(limiters.stats().alive, 1);
        std::thread::sleep(Duration::from_millis(5));
        limiters.sweep();
        assert_eq!(limiters.keys_per_team(), vec![]);
        assert_eq!(limiters.stats().alive, 0);
        assert!(
            limiters.check(team, &checks).is_ok(),
            "a fresh budget after the sweep"
        );
    }
}
