//! The node's connection to the cluster's Redis (`REDIS_URL`): what nodes must count
//! together (rate budgets, suspicion windows) lives there. Redis is a helper, never a
//! dependency: the handle connects lazily (a node starts while Redis is down), every call
//! has a short deadline, and a health flag says whether Redis answered lately, so callers
//! can decide alone at once instead of each waiting for a timeout. While unhealthy a probe
//! pings Redis every [`PROBE_EVERY`] and sets the flag again when it answers.
//!
//! Use: [`RedisHandle::connect`] once at start, then [`RedisHandle::call`] with any command
//! or script invocation; [`RedisHandle::is_healthy`] before calling when a local answer is
//! acceptable.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Longest wait for one Redis answer: beyond it the caller decides without Redis (a rate
/// check must never hold a request long).
pub const CALL_TIMEOUT: Duration = Duration::from_millis(250);

/// How often an unhealthy handle pings Redis to find it back.
pub const PROBE_EVERY: Duration = Duration::from_millis(200);

/// How often a healthy handle pings Redis when no call did lately, so an outage is noticed
/// (and reported) within a second also without traffic.
pub const WATCH_EVERY: Duration = Duration::from_millis(500);

/// A cheap-to-clone handle on the cluster's Redis, shared by whatever needs it.
#[derive(Clone)]
pub struct RedisHandle {
    conn: ConnectionManager,
    inner: Arc<Inner>,
}

struct Inner {
    healthy: AtomicBool,
    probing: AtomicBool,
    calls: AtomicU64,
    failures: AtomicU64,
    outages: AtomicU64,
}

impl RedisHandle {
    /// Parses `url` (a bad URL stops the server with a sentence naming it) and starts
    /// connecting in the background, with a watch that pings Redis when idle; must run on a
    /// tokio runtime. Healthy until a call fails.
    pub fn connect(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("REDIS_URL is not a Redis URL ({e})"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            // a failed call is answered locally at once; reconnection is the probe's job
            .set_number_of_retries(1)
            .set_max_delay(PROBE_EVERY);
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| anyhow::anyhow!("Redis connection manager for REDIS_URL: {e}"))?;
        let me = Self {
            conn,
            inner: Arc::new(Inner {
                healthy: AtomicBool::new(true),
                probing: AtomicBool::new(false),
                calls: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                outages: AtomicU64::new(0),
            }),
        };
        let watch = me.clone();
        tokio::spawn(async move { watch.watch().await });
        Ok(me)
    }

    /// Whether Redis answered the last call (or the last probe).
    pub fn is_healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Acquire)
    }

    /// Runs one Redis call on a clone of the connection within [`CALL_TIMEOUT`]. A failure or
    /// timeout marks the handle unhealthy (with a warning) and starts the probe.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, redis::RedisError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.inner.calls.fetch_add(1, Ordering::Relaxed);
        let res = match tokio::time::timeout(CALL_TIMEOUT, f(self.conn.clone())).await {
            Ok(res) => res,
            Err(_) => Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "no answer within the deadline",
            ))),
        };
        if let Err(e) = &res {
            // Any failure (also LOADING or BUSY of a restarting server): decide without
            // Redis until the probe gets an answer.
            self.mark_down(e);
        }
        res
    }

    /// Counters for `/metrics`: calls, failed calls, and times Redis was found away.
    pub fn counters(&self) -> (u64, u64, u64) {
        (
            self.inner.calls.load(Ordering::Relaxed),
            self.inner.failures.load(Ordering::Relaxed),
            self.inner.outages.load(Ordering::Relaxed),
        )
    }

    fn mark_down(&self, e: &redis::RedisError) {
        self.inner.failures.fetch_add(1, Ordering::Relaxed);
        if self.inner.healthy.swap(false, Ordering::AcqRel) {
            self.inner.outages.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "Redis (REDIS_URL) unreachable: deciding without it until it answers again");
        }
        if !self.inner.probing.swap(true, Ordering::AcqRel) {
            let me = self.clone();
            tokio::spawn(async move { me.probe().await });
        }
    }

    /// While healthy and idle, pings every [`WATCH_EVERY`] (a failed ping starts the probe).
    async fn watch(self) {
        let mut seen = u64::MAX;
        loop {
            tokio::time::sleep(WATCH_EVERY).await;
            let calls = self.inner.calls.load(Ordering::Relaxed);
            if self.is_healthy() && calls == seen {
                let ping = self
                    .call(|mut conn| async move {
                        redis::cmd("PING").query_async::<String>(&mut conn).await
                    })
                    .await;
                if ping.is_err() {
                    tracing::debug!("Redis watch: ping failed");
                }
            }
            seen = self.inner.calls.load(Ordering::Relaxed);
        }
    }

    /// Pings until Redis answers, then marks the handle healthy.
    async fn probe(self) {
        loop {
            tokio::time::sleep(PROBE_EVERY).await;
            let mut conn = self.conn.clone();
            let cmd = redis::cmd("PING");
            let ping = cmd.query_async::<String>(&mut conn);
            if let Ok(Ok(_)) = tokio::time::timeout(CALL_TIMEOUT, ping).await {
                self.inner.probing.store(false, Ordering::Release);
                self.inner.healthy.store(true, Ordering::Release);
                tracing::info!("Redis (REDIS_URL) answers again");
                return;
            }
        }
    }
}
