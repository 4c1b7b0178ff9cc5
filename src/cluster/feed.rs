//! The change feed on PostgreSQL: one dedicated connection per node that `LISTEN`s on
//! `colloquy_changes`. Triggers raise the notices inside the committing transaction
//! (`sql/V3__cluster.sql`), so a notice is delivered exactly when its commit happened, after
//! it. The feed is healthy from `LISTEN` until the connection ends or stops hearing this
//! node's own pings; then the node reads from PostgreSQL, reconnects, reloads what it holds
//! and trusts its memory again.

use super::Cluster;
use futures_util::StreamExt;
use std::time::{Duration, Instant};
use tokio_postgres::AsyncMessage;

/// The channel every node listens on.
pub const CHANNEL: &str = "colloquy_changes";
/// Notices waiting to be applied; more means the node cannot keep up (see `listen`).
const NOTICE_QUEUE: usize = 16_384;
/// A ping not heard back within this long means the feed is dead even if its socket is not.
const PING_DEADLINE: Duration = Duration::from_secs(3);

/// Runs the feed for as long as the System runs, reconnecting with a growing pause. On a
/// thread of its own: every request waits for the feed's sync ping (`Cluster::catch_up`), so
/// the feed must not queue behind whatever else runs on the System's thread.
pub(super) fn start(cluster: Cluster) {
    let thread = actix::Arbiter::new();
    thread.spawn(async move {
        let mut pause = Duration::from_millis(100);
        loop {
            let started = Instant::now();
            if let Err(e) = listen(&cluster).await {
                tracing::warn!(error = %e, "change feed lost");
            }
            cluster.set_feed_healthy(false);
            if started.elapsed() > Duration::from_secs(10) {
                pause = Duration::from_millis(100);
            }
            actix_web::rt::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    });
}

/// One connection's life: listen, revalidate, then apply notices until it ends.
async fn listen(cluster: &Cluster) -> anyhow::Result<()> {
    let mut config = cluster.store.config().clone();
    config.application_name("colloquy-feed");
    config.connect_timeout(Duration::from_millis(1500));
    let (client, mut connection) = config.connect(tokio_postgres::NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(NOTICE_QUEUE);
    // The connection is driven here; its notices go to `rx`. A notice that does not fit is
    // not dropped silently: the connection is given up, so the node reads PostgreSQL until it
    // has reconnected and reloaded what it holds (counted in `times_distrusted`).
    let driver = actix_web::rt::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    if let Err(e) = tx.try_send(n.payload().to_owned()) {
                        if matches!(e, tokio::sync::mpsc::error::TrySendError::Full(_)) {
                            tracing::warn!(
                                "change feed: {NOTICE_QUEUE} notices waiting; reconnecting"
                            );
                        }
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "change feed connection ended");
                    break;
                }
            }
        }
    });
    let result = async {
        // The pings need no durability: not waiting for their WAL flush makes each one (and
        // so each request's `catch_up`) cost no disk write.
        client
            .batch_execute(&format!("SET synchronous_commit TO off; LISTEN {CHANNEL}"))
            .await?;
        // Whatever changed before LISTEN took effect is reloaded; what changes from now on
        // arrives as notices, so nothing falls between the two.
        cluster.revalidate().await;
        cluster.set_feed_healthy(true);
        tracing::info!("change feed listening");
        let me = cluster.node_id().to_string();
        let ping = format!("p {me} ");
        let mut heard = Instant::now();
        let mut every = actix_web::rt::time::interval(PING_DEADLINE / 3);
        // A sync ping (`p <node> <n>`, see `Cluster::catch_up`) is on its way.
        let mut sync_pending = false;
        loop {
            tokio::select! {
                n = rx.recv() => match n {
                    Some(payload) if payload.starts_with(&ping) => {
                        heard = Instant::now();
                        if let Ok(n) = payload[ping.len()..].parse::<u64>() {
                            cluster.sync_heard(n);
                            sync_pending = false;
                        }
                    }
                    Some(payload) => cluster.on_notice(&payload).await,
                    None => anyhow::bail!("the feed's connection closed"),
                },
                _ = cluster.census.sync.wake.notified(), if !sync_pending => {}
                _ = every.tick() => {
                    if heard.elapsed() > PING_DEADLINE {
                        anyhow::bail!("no ping heard back for {PING_DEADLINE:?}");
                    }
                    // Through the feed's own connection: a healthy socket echoes it back.
                    let notify = format!("NOTIFY {CHANNEL}, '{ping}'");
                    tokio::time::timeout(PING_DEADLINE, client.batch_execute(&notify))
                        .await
                        .map_err(|_| anyhow::anyhow!("ping not sent within {PING_DEADLINE:?}"))??;
                }
            }
            if !sync_pending {
                if let Some(n) = cluster.next_sync_ping() {
                    // Not heard back within PING_DEADLINE: the check above gives the feed up.
                    let notify = format!("NOTIFY {CHANNEL}, '{ping}{n}'");
                    tokio::time::timeout(PING_DEADLINE, client.batch_execute(&notify))
                        .await
                        .map_err(|_| {
                            anyhow::anyhow!("sync ping not sent within {PING_DEADLINE:?}")
                        })??;
                    sync_pending = true;
                }
            }
        }
    }
    .await;
    driver.abort();
    result
}
