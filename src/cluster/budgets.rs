//! Rate budgets every node counts together, in Redis: the [`SharedBudgets`] port of the
//! team actors (`colloquy_actors::rate_limiter`) on the cluster's [`RedisHandle`].
//!
//! One request is one atomic Lua script (`EVALSHA`) covering every tier it is charged: GCRA
//! as in the actors (the same burst and emission interval), one key per tier and key,
//! holding the theoretical arrival time in microseconds of Redis's own clock (`TIME`), so
//! nodes with skewed clocks still agree. Keys expire when their budget is whole again. The
//! gate (the per-IP budget) is charged first and kept even when the request's other tiers
//! refuse, as on one node. Keys share a hash tag per team (`{team_id}`), so one script's keys
//! live in one slot of a Redis Cluster too.

use super::redis::RedisHandle;
use super::Cluster;
use async_trait::async_trait;
use colloquy_actors::domain::Limit;
use colloquy_actors::rate_limiter::{
    RateCheck, RateRefusal, SharedBudgets, SharedCharge, SharedDown,
};
use redis::Script;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use uuid::Uuid;

/// KEYS: the gate's keys, then the checks'. ARGV[1]: how many keys are the gate's; then per
/// key its emission interval and tolerance (µs). Returns {1, before, after, …} for the
/// checks' keys (before -1: the key did not exist), or {0, index, wait µs} on a refusal.
static CHECK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ngate = tonumber(ARGV[1])
local function pass(first, last)
  local old, new = {}, {}
  for i = first, last do
    local interval = tonumber(ARGV[2 * i])
    local tolerance = tonumber(ARGV[2 * i + 1])
    local v = redis.call('GET', KEYS[i])
    local before = -1
    if v then before = tonumber(v) end
    local tat = before
    if tat < now then tat = now end
    if tat - now > tolerance then
      return nil, {0, i, tat - now - tolerance}
    end
    old[i] = before
    new[i] = tat + interval
  end
  for i = first, last do
    redis.call('SET', KEYS[i], string.format('%d', new[i]), 'PX',
      math.floor((new[i] - now) / 1000) + 1)
  end
  return {old, new}
end
local _, refused = pass(1, ngate)
if refused then return refused end
local charged
charged, refused = pass(ngate + 1, #KEYS)
if refused then return refused end
local out = {1}
for i = ngate + 1, #KEYS do
  out[#out + 1] = charged[1][i]
  out[#out + 1] = charged[2][i]
end
return out
",
    )
});

/// KEYS: a charge's keys; ARGV: per key its TAT before (-1: none) and after. A key another
/// request charged since is left alone.
static REFUND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i = 1, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v and tonumber(v) == tonumber(ARGV[2 * i]) then
    local before = tonumber(ARGV[2 * i - 1])
    if before > now then
      redis.call('SET', KEYS[i], string.format('%d', before), 'PX',
        math.floor((before - now) / 1000) + 1)
    else
      redis.call('DEL', KEYS[i])
    end
  end
end
return 0
",
    )
});

/// Budgets in Redis, with the node registry's count of live nodes for the fallback.
pub struct RedisBudgets {
    redis: RedisHandle,
    /// `REDIS_PREFIX` + `rl:`: what every budget key starts with.
    prefix: String,
    cluster: Cluster,
    calls: AtomicU64,
}

impl RedisBudgets {
    /// Budgets on `redis` under keys starting with `prefix` (`REDIS_PREFIX`); `cluster` says
    /// how many nodes share them.
    pub fn new(redis: RedisHandle, prefix: &str, cluster: Cluster) -> Self {
        Self {
            redis,
            prefix: format!("{prefix}rl:"),
            cluster,
            calls: AtomicU64::new(0),
        }
    }
}

/// The budgets nodes share when the node has the cluster's Redis (`REDIS_URL`; its handle
/// connects in the background, so a node starts while Redis is away, on local budgets);
/// none without it.
pub fn shared(
    redis: Option<&RedisHandle>,
    prefix: &str,
    cluster: &Cluster,
) -> Option<Arc<dyn SharedBudgets>> {
    let redis = redis?.clone();
    Some(Arc::new(RedisBudgets::new(redis, prefix, cluster.clone())))
}

/// A check's key in Redis.
fn key(prefix: &str, team_id: Uuid, c: &RateCheck) -> String {
    format!("{prefix}{{{team_id}}}:{}:{}", c.tier.as_str(), c.key)
}

/// GCRA's emission interval and tolerance in µs, as `rate_limiter::gcra` computes them.
fn gcra_args(limit: Limit) -> (u64, u64) {
    let count = limit.count.max(1);
    let interval = limit.period / count;
    let tolerance = limit.period.saturating_sub(interval);
    (micros(interval), micros(tolerance))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[async_trait]
impl SharedBudgets for RedisBudgets {
    async fn check(
        &self,
        team_id: Uuid,
        gate: &[RateCheck],
        checks: &[RateCheck],
    ) -> Result<Result<SharedCharge, RateRefusal>, SharedDown> {
        let all: Vec<&RateCheck> = gate.iter().chain(checks).collect();
        let keys: Vec<String> = all.iter().map(|c| key(&self.prefix, team_id, c)).collect();
        let mut inv = CHECK.prepare_invoke();
        for k in &keys {
            inv.key(k);
        }
        inv.arg(gate.len());
        for c in &all {
            let (interval, tolerance) = gcra_args(c.limit);
            inv.arg(interval).arg(tolerance);
        }
        self.calls.fetch_add(1, Relaxed);
        let reply: Vec<i64> = self
            .redis
            .call(|mut conn| async move { inv.invoke_async(&mut conn).await })
            .await
            .map_err(|e| {
                tracing::debug!(error = %e, "rate budget check in Redis failed");
                SharedDown
            })?;
        match reply.as_slice() {
            [0, index, wait] => {
                let at = usize::try_from(*index).unwrap_or(0).saturating_sub(1);
                let Some(c) = all.get(at) else {
                    return Err(SharedDown);
                };
                Ok(Err(RateRefusal {
                    tier: c.tier,
                    retry_after: Duration::from_micros(u64::try_from(*wait).unwrap_or(0)),
                }))
            }
            [1, pairs @ ..] if pairs.len() == 2 * checks.len() => {
                let charged = keys[gate.len()..]
                    .iter()
                    .zip(pairs.chunks_exact(2))
                    .map(|(k, p)| (k.clone(), (p[0] >= 0).then_some(p[0]), p[1]))
                    .collect();
                Ok(Ok(SharedCharge { keys: charged }))
            }
            other => {
                tracing::warn!(reply = ?other, "unexpected answer of the rate budget script");
                Err(SharedDown)
            }
        }
    }

    async fn refund(&self, charge: SharedCharge) {
        let mut inv = REFUND.prepare_invoke();
        for (k, before, after) in &charge.keys {
            inv.key(k).arg(before.unwrap_or(-1)).arg(*after);
        }
        self.calls.fetch_add(1, Relaxed);
        let res: Result<i64, _> = self
            .redis
            .call(|mut conn| async move { inv.invoke_async(&mut conn).await })
            .await;
        if let Err(e) = res {
            // The visitor keeps the charge: at worst one request less, never more.
            tracing::debug!(error = %e, "rate budget refund in Redis failed");
        }
    }

    fn healthy(&self) -> bool {
        self.redis.is_healthy()
    }

    fn live_nodes(&self) -> usize {
        self.cluster.live_nodes()
    }

    fn calls(&self) -> u64 {
        self.calls.load(Relaxed)
    }
}
