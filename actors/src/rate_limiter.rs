//! Admission control: per-team GCRA state (one timestamp per tier and key) behind a short
//! mutex, so one tenant's visitors never use up another's budget and no database is touched
//! to decide. HTTP handlers ask through [`RateLimiters`]; refusals carry the wait.
//!
//! A stranger can name any number of keys (distinct_ids, sessions), so a team's table is
//! bounded and full means *forget the oldest*, never *refuse the newcomer*: the keys evicted
//! first are those whose budgets are most nearly whole (earliest theoretical arrival time),
//! so forgetting one gives a visitor back at most what time would soon have returned. A
//! request refused after admission (an unknown or another visitor's ticket) takes its charge
//! back with [`Charged::settle`], so it leaves no key behind.

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

/// The charges of one admitted request. Dropping it keeps them; [`Charged::settle`] takes
/// them back when the request is then refused, so a refused request leaves no key behind.
pub struct Charged {
    limiter: Arc<TeamLimiter>,
    epoch: Instant,
    changes: Changes,
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

    /// Takes the request's charges back.
    pub fn refund(self) {
        let now = self.epoch.elapsed();
        let mut state = self.limiter.lock();
        state.refund(&self.changes, now);
        self.limiter.keys.store(state.tats.len(), Relaxed);
    }
}

impl std::fmt::Debug for Charged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Charged")
            .field("keys", &self.changes.len())
            .finish()
    }
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
    teams: Arc<DashMap<Uuid, Arc<TeamLimiter>, foldhash::fast::RandomState>>,
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
    /// Admitted: every budget is charged, and the returned [`Charged`] can take it back.
    pub fn check(&self, team_id: Uuid, checks: &[RateCheck]) -> Result<Charged, RateRefusal> {
        let limiter = self.limiter(team_id);
        let now = self.epoch.elapsed();
        let mut state = limiter.lock();
        let res = state.check(checks, now);
        limiter.keys.store(state.tats.len(), Relaxed);
        drop(state);
        self.stats.handled();
        let (changes, evicted) = res?;
        self.stats.evicted_many(evicted as u64);
        Ok(Charged {
            limiter,
            epoch: self.epoch,
            changes,
        })
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

    #[test]
    fn a_refund_forgets_created_keys_and_restores_charged_ones() {
        let limiters = RateLimiters::default();
        let team = Uuid::now_v7();
        limiters.check(team, &one("known")).unwrap();
        let keys = |l: &RateLimiters| l.keys_per_team()[0].1;
        assert_eq!(keys(&limiters), 1);
        let mut both = one("known").to_vec();
        both.extend(one("new"));
        let charged = limiters.check(team, &both).unwrap();
        assert_eq!(keys(&limiters), 2);
        charged.settle(Err::<(), ()>(())).unwrap_err();
        assert_eq!(keys(&limiters), 1, "the refused request's new key is gone");
        for _ in 0..9 {
            limiters.check(team, &one("known")).unwrap();
        }
        assert!(
            limiters.check(team, &one("known")).is_err(),
            "the known key was charged once, not twice"
        );
        let kept = limiters.check(team, &one("other")).unwrap();
        assert_eq!(kept.settle(Ok::<u8, ()>(1)), Ok(1));
        assert_eq!(keys(&limiters), 2, "a served request keeps its charge");
    }

    #[test]
    fn a_refund_leaves_a_key_alone_that_another_request_charged_since() {
        let limiters = RateLimiters::default();
        let team = Uuid::now_v7();
        let first = limiters.check(team, &one("shared")).unwrap();
        limiters.check(team, &one("shared")).unwrap();
        first.refund();
        assert_eq!(limiters.keys_per_team(), vec![(team, 1)]);
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
