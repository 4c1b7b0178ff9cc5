//! The suspicion detector's shared windows on Redis (`REDIS_URL`): every node appends what it
//! observes to the same windows and reads back what all nodes saw, so a spammer spread over
//! the nodes by a load balancer is scored as one node would score him (docs/spam-defence.md).
//!
//! It talks through the node's one [`RedisHandle`] (shared with the rate budgets: one
//! connection, one health flag, one probe). Each batch of observations is one Lua script call (and one
//! more when a rule fired); scripts are atomic, so two nodes never both report the same
//! reason as new, nor both block one IP. Time is the Redis server's (`TIME`), so node clocks
//! need not agree. Keys are `{prefix}sus:…` and expire with their window (10 minutes, a
//! block's length for scores). Needs one Redis (not Redis Cluster: a script touches keys of
//! many slots).

use super::redis::RedisHandle;
use async_trait::async_trait;
use colloquy_actors::suspicion::shared::{
    ScoreOp, ScoreOutcome, SharedError, SharedWindows, WindowOp,
};
use colloquy_actors::suspicion::{BURST_SPAN, MAX_EVENTS, WINDOW};
use redis::Script;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Appends to windows and answers their counts (see [`WindowOp`]). ARGV: window ms, burst ms,
/// most events; then per key a kind (`c` count, `d` distinct, `o` burst open, `n` burst next)
/// and a member.
const WINDOWS_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local win, burst, most = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for i, key in ipairs(KEYS) do
  local kind, member = ARGV[2 + 2 * i], ARGV[3 + 2 * i]
  if kind == 'c' or kind == 'd' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. (now - win))
    redis.call('ZADD', key, now, member)
    redis.call('ZREMRANGEBYRANK', key, 0, -(most + 1))
    redis.call('PEXPIRE', key, win)
    out[i] = redis.call('ZCARD', key)
  elseif kind == 'o' then
    redis.call('SET', key, 1, 'PX', burst)
    out[i] = 1
  elseif redis.call('EXISTS', key) == 1 then
    out[i] = redis.call('INCR', key)
  else
    out[i] = 0
  end
end
return out
"#;

/// Adds reasons to scores (see [`ScoreOp`]): per op ARGV holds the number of subjects (its
/// keys), the reason, the block threshold, the block's ms, the number of weights and
/// `reason, weight` pairs. A score is a hash reason → ms when it last fired, plus `!blocked`
/// → ms until which its IP is blocked. Answers per op {best, new, block, reasons of best}.
const SCORES_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local win = tonumber(ARGV[1])
local a, k, out = 2, 1, {}
while a <= #ARGV do
  local nsubj, reason = tonumber(ARGV[a]), ARGV[a + 1]
  local threshold, block_ms = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local nw, weights = tonumber(ARGV[a + 4]), {}
  for j = 1, nw do
    weights[ARGV[a + 3 + 2 * j]] = tonumber(ARGV[a + 4 + 2 * j])
  end
  a = a + 5 + 2 * nw
  local best, new, block, best_reasons = 0, 0, 0, ''
  for _ = 1, nsubj do
    local key = KEYS[k]
    k = k + 1
    local fields = redis.call('HGETALL', key)
    local present, blocked_until = {}, 0
    for f = 1, #fields, 2 do
      local name, at = fields[f], tonumber(fields[f + 1])
      if name == '!blocked' then
        blocked_until = at
      elseif at < now - win then
        redis.call('HDEL', key, name)
      else
        present[name] = true
      end
    end
    if not present[reason] then new = 1 end
    present[reason] = true
    redis.call('HSET', key, reason, now)
    local total, names = 0, {}
    for name in pairs(present) do
      total = total + (weights[name] or 0)
      names[#names + 1] = name
    end
    if total > 100 then total = 100 end
    if total > best then
      best = total
      table.sort(names)
      best_reasons = table.concat(names, ',')
    end
    if total >= threshold and blocked_until <= now then
      blocked_until = now + block_ms
      redis.call('HSET', key, '!blocked', blocked_until)
      block = 1
    end
    redis.call('PEXPIRE', key, math.max(win, blocked_until - now))
  end
  out[#out + 1] = {best, new, block, best_reasons}
end
return out
"#;

/// The detector's Redis: a connection that reconnects by itself, the scripts, and whether
/// the last call was answered.
#[derive(Clone)]
pub struct SpamRedis {
    inner: Arc<Inner>,
}

struct Inner {
    redis: RedisHandle,
    prefix: String,
    /// Distinguishes this process's events in counting windows (members must be unique).
    node: String,
    seq: AtomicU64,
    windows: Script,
    scores: Script,
}

impl SpamRedis {
    /// Windows on the node's Redis under keys starting with `prefix` (`REDIS_PREFIX`); a Redis
    /// that is away at start-up only means the node scores alone until it is there.
    pub fn new(redis: RedisHandle, prefix: &str, node: uuid::Uuid) -> Self {
        Self {
            inner: Arc::new(Inner {
                redis,
                prefix: format!("{prefix}sus:"),
                node: node.simple().to_string(),
                seq: AtomicU64::new(0),
                windows: Script::new(WINDOWS_LUA),
                scores: Script::new(SCORES_LUA),
            }),
        }
    }

    /// Whether Redis answered the node's last call.
    pub fn healthy(&self) -> bool {
        self.inner.redis.is_healthy()
    }
}

fn answered<T>(res: redis::RedisResult<T>) -> Result<T, SharedError> {
    res.map_err(|e| SharedError(format!("redis: {e}")))
}

#[async_trait]
impl SharedWindows for SpamRedis {
    async fn count(&self, ops: Vec<WindowOp>) -> Result<Vec<u64>, SharedError> {
        let i = &self.inner;
        let mut call = i.windows.prepare_invoke();
        call.arg(WINDOW.as_millis() as u64)
            .arg(BURST_SPAN.as_millis() as u64)
            .arg(MAX_EVENTS as u64);
        for op in ops {
            let (kind, key, member) = match op {
                WindowOp::Count { key } => {
                    let n = i.seq.fetch_add(1, Ordering::Relaxed);
                    ("c", key, format!("{}:{n}", i.node))
                }
                WindowOp::Distinct { key, member } => ("d", key, member),
                WindowOp::BurstOpen { key } => ("o", key, String::new()),
                WindowOp::BurstNext { key } => ("n", key, String::new()),
            };
            call.key(format!("{}{key}", i.prefix)).arg(kind).arg(member);
        }
        let res = i
            .redis
            .call(|mut conn| async move { call.invoke_async(&mut conn).await })
            .await;
        answered(res)
    }

    async fn score(&self, ops: Vec<ScoreOp>) -> Result<Vec<ScoreOutcome>, SharedError> {
        let i = &self.inner;
        let mut call = i.scores.prepare_invoke();
        call.arg(WINDOW.as_millis() as u64);
        for op in ops {
            call.arg(op.subjects.len())
                .arg(op.reason)
                .arg(op.block_threshold)
                .arg(op.block_secs.saturating_mul(1000))
                .arg(op.weights.len());
            for (reason, weight) in op.weights {
                call.arg(reason).arg(weight);
            }
            for subject in op.subjects {
                call.key(format!("{}{subject}", i.prefix));
            }
        }
        let res: redis::RedisResult<Vec<(i64, i64, i64, String)>> = i
            .redis
            .call(|mut conn| async move { call.invoke_async(&mut conn).await })
            .await;
        let rows = answered(res)?;
        Ok(rows
            .into_iter()
            .map(|(best, new, block, reasons)| ScoreOutcome {
                best: u8::try_from(best.clamp(0, 100)).unwrap_or(100),
                new: new == 1,
                block: block == 1,
                reasons: reasons
                    .split(',')
                    .filter(|r| !r.is_empty())
                    .map(str::to_owned)
                    .collect(),
            })
            .collect())
    }

    async fn probe(&self) -> Result<(), SharedError> {
        let res: redis::RedisResult<String> = self
            .inner
            .redis
            .call(|mut conn| async move { redis::cmd("PING").query_async(&mut conn).await })
            .await;
        answered(res).map(|_| ())
    }
}
