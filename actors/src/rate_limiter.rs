//! Admission control: one `RateLimiter` actor per team holding GCRA state (one timestamp per
//! tier and key), so one tenant's visitors never use up another's budget and no database is
//! touched to decide. HTTP handlers ask through [`RateLimiters`]; refusals carry the wait.

use crate::domain::Limit;
use crate::stats::{ActorStats, ActorStatsSnapshot};
use actix::prelude::*;
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
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

/// Checks every budget of a request at once: admitted only if all admit, and then all are
/// charged; a refused request charges nothing.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), RateRefusal>")]
pub struct CheckRate {
    /// The budgets.
    pub checks: Vec<RateCheck>,
}

/// The most keys one team's limiter tracks; beyond it new keys are refused until a sweep
/// frees expired ones, so a flood of spoofed keys cannot grow memory without bound.
const MAX_KEYS: usize = 200_000;

/// One team's GCRA state.
pub struct RateLimiter {
    epoch: Instant,
    tats: HashMap<(Tier, String), Duration>,
    stats: Arc<ActorStats>,
    /// `tats.len()`, published for reporting.
    keys: Arc<AtomicUsize>,
}

impl RateLimiter {
    fn check(&mut self, checks: &[RateCheck], now: Duration) -> Result<(), RateRefusal> {
        let mut admitted = Vec::with_capacity(checks.len());
        for c in checks {
            let key = (c.tier, c.key.clone());
            let tat = self.tats.get(&key).copied();
            if tat.is_none() && self.tats.len() >= MAX_KEYS {
                self.stats.dropped();
                return Err(RateRefusal {
                    tier: c.tier,
                    retry_after: Duration::from_secs(1),
                });
            }
            match gcra(tat, now, c.limit) {
                Ok(new_tat) => admitted.push((key, new_tat)),
                Err(wait) => {
                    return Err(RateRefusal {
                        tier: c.tier,
                        retry_after: wait,
                    })
                }
            }
        }
        self.tats.extend(admitted);
        self.keys.store(self.tats.len(), Relaxed);
        Ok(())
    }

    fn sweep(&mut self) {
        let now = self.epoch.elapsed();
        self.tats.retain(|_, tat| *tat > now);
        self.keys.store(self.tats.len(), Relaxed);
    }
}

impl Actor for RateLimiter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.stats.started();
        ctx.set_mailbox_capacity(1024);
        ctx.run_interval(Duration::from_secs(30), |act, _| act.sweep());
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.stats.stopped();
    }
}

impl Handler<CheckRate> for RateLimiter {
    type Result = Result<(), RateRefusal>;

    fn handle(&mut self, msg: CheckRate, _: &mut Self::Context) -> Self::Result {
        self.stats.handled();
        let now = self.epoch.elapsed();
        self.check(&msg.checks, now)
    }
}

/// Why admission could not be decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// A budget ran out.
    #[error(transparent)]
    Refused(#[from] RateRefusal),
    /// The team's limiter is swamped: shed load.
    #[error("rate limiter overloaded")]
    Overloaded,
}

/// The per-team limiters; a handle HTTP handlers share.
#[derive(Clone, Default)]
pub struct RateLimiters {
    teams: Arc<DashMap<Uuid, Limiter>>,
    stats: Arc<ActorStats>,
}

/// A team's limiter and the number of keys it tracks (published by the actor, so reporting
/// never has to ask it).
#[derive(Clone)]
struct Limiter {
    addr: Addr<RateLimiter>,
    keys: Arc<AtomicUsize>,
}

impl RateLimiters {
    /// Checks `checks` against `team_id`'s limiter, starting it on first use.
    pub async fn check(&self, team_id: Uuid, checks: Vec<RateCheck>) -> Result<(), AdmissionError> {
        let addr = self.limiter(team_id);
        match addr
            .send(CheckRate { checks })
            .timeout(Duration::from_secs(1))
            .await
        {
            Ok(res) => res.map_err(AdmissionError::from),
            Err(_) => {
                self.stats.dropped();
                Err(AdmissionError::Overloaded)
            }
        }
    }

    /// How many teams have a live limiter, and their counters.
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

    fn limiter(&self, team_id: Uuid) -> Addr<RateLimiter> {
        if let Some(l) = self.teams.get(&team_id).map(|a| a.value().clone()) {
            if l.addr.connected() {
                return l.addr;
            }
        }
        // Starting an actor is synchronous: no await happens while the entry is held.
        let mut entry = self.teams.entry(team_id).or_insert_with(|| self.start());
        if !entry.addr.connected() {
            *entry = self.start();
        }
        entry.value().addr.clone()
    }

    fn start(&self) -> Limiter {
        let keys = Arc::new(AtomicUsize::new(0));
        let addr = RateLimiter {
            epoch: Instant::now(),
            tats: HashMap::new(),
            stats: Arc::clone(&self.stats),
            keys: Arc::clone(&keys),
        }
        .start();
        Limiter { addr, keys }
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
        let stats = Arc::new(ActorStats::default());
        let mut rl = RateLimiter {
            epoch: Instant::now(),
            tats: HashMap::new(),
            stats,
            keys: Arc::default(),
        };
        let c = |tier, n| RateCheck {
            tier,
            key: "k".into(),
            limit: Limit::per_minute(n),
        };
        let checks = [c(Tier::MessageIp, 100), c(Tier::MessageDistinctId, 1)];
        assert!(rl.check(&checks, Duration::ZERO).is_ok());
        let refused = rl.check(&checks, Duration::ZERO).unwrap_err();
        assert_eq!(refused.tier, Tier::MessageDistinctId);
        let ip_tat = rl.tats[&(Tier::MessageIp, "k".to_string())];
        assert_eq!(
            ip_tat,
            Duration::from_millis(600),
            "only the admitted request was charged"
        );
    }

    #[actix_rt::test]
    async fn limiters_are_per_team_and_exact_under_concurrency() {
        let limiters = RateLimiters::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let checks = || {
            vec![RateCheck {
                tier: Tier::MessageTeam,
                key: String::new(),
                limit: Limit::per_hour(50),
            }]
        };
        let tries: Vec<_> = (0..80)
            .map(|_| {
                let l = limiters.clone();
                actix_rt::spawn(async move { l.check(a, checks()).await })
            })
            .collect();
        let mut ok = 0;
        for t in tries {
            if matches!(t.await, Ok(Ok(()))) {
                ok += 1;
            }
        }
        assert_eq!(
            ok, 50,
            "exactly the burst is admitted, however the requests interleave"
        );
        assert!(
            limiters.check(b, checks()).await.is_ok(),
            "team b has its own budget"
        );
    }
}
