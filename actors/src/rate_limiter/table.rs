//! The budgets themselves: tiers, the checks a request makes, GCRA for one key, and one
//! team's bounded table of keys (forgets the oldest when full, never refuses a newcomer).

use crate::domain::Limit;
use std::collections::HashMap;
use std::time::Duration;

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

pub(super) type Key = (Tier, String);

/// One team's GCRA state: one timestamp per tier and key.
pub(super) struct TeamState {
    pub(super) tats: HashMap<Key, Duration>,
    max_keys: usize,
}

impl Default for TeamState {
    fn default() -> Self {
        Self::with_max_keys(MAX_KEYS)
    }
}

/// What one admitted request changed: each key with its TAT before and after.
pub(super) type Changes = Vec<(Key, Option<Duration>, Duration)>;

impl TeamState {
    pub(super) fn with_max_keys(max_keys: usize) -> Self {
        Self {
            tats: HashMap::new(),
            max_keys: max_keys.max(1),
        }
    }

    /// Checks every budget of a request at once: admitted only if all admit, and then all
    /// are charged; a refused request charges nothing. Returns what changed, and how many
    /// keys were evicted to make room.
    pub(super) fn check(
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
    pub(super) fn refund(&mut self, changes: &Changes, now: Duration) {
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

    pub(super) fn sweep(&mut self, now: Duration) {
        self.tats.retain(|_, tat| *tat > now);
    }
}
