//! The PostgreSQL implementation of the core's storage port, plus the queries only the HTTP
//! adapters need (ticket listings, teams, idempotency lookups).
//!
//! One pool, built once; every statement is `prepare_cached`; multi-statement writes are
//! transactions; every query is scoped by `team_id`.

mod blocks;
mod commit;
mod messages;
mod nodes;
mod operator;
mod pages;
mod readers;
mod restore;
mod teams;
mod tickets;

pub use blocks::{ActiveBlock, BlockRow, SuspiciousRow};
pub use commit::GroupCommitStats;
pub use operator::{InboxFilter, OperatorMessageRow, OperatorTicketRow};
pub use restore::{Mail, Redeemed};
pub use tickets::{TicketListing, TicketSummary};

use crate::config::DatabaseSettings;
use anyhow::Context;
use colloquy_actors::store::StoreError;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

mod embedded {
    refinery::embed_migrations!("sql");
}

/// How long a request waits for a pooled connection before answering 503.
const POOL_WAIT: Duration = Duration::from_millis(700);
/// Every connection's session settings: a runaway statement or an abandoned transaction
/// must not hold a connection (and a ticket's row lock) for long.
const SESSION_OPTIONS: &str =
    "-c statement_timeout=5000 -c idle_in_transaction_session_timeout=10000";
/// How long opening a new connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);

/// The advisory lock key migrations run under ("colloquy" in ASCII), so nodes starting
/// together take turns.
const MIGRATION_LOCK: i64 = 0x636f_6c6c_6f71_7579;

/// Applies the migrations in `sql/` (embedded at build time) over a dedicated connection.
pub async fn migrate(config: &tokio_postgres::Config) -> anyhow::Result<()> {
    let mut config = config.clone();
    config.connect_timeout(Duration::from_secs(5));
    let (mut client, connection) = config.connect(NoTls).await.context(
        "connect to the database to migrate it (is DATABASE_URL right and the server up?)",
    )?;
    let driver = tokio::spawn(connection);
    // Nodes starting together on a fresh database take turns: the first migrates, the others
    // find the migrations applied. The lock ends with this session.
    client
        .batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
        .await
        .context("wait for another node's migrations")?;
    let report = embedded::migrations::runner()
        .run_async(&mut client)
        .await
        .context("apply migrations from sql/")?;
    for m in report.applied_migrations() {
        tracing::info!(migration = %m, "applied migration");
    }
    drop(client);
    let _ = driver.await;
    Ok(())
}

/// Builds the store: a pool with bounded waits for writes (an outage answers 503 quickly
/// instead of hanging) and shared per-thread connections for reads. With `announce_as`,
/// this node's writes raise change notices for the others (the `colloquy.feed` and
/// `colloquy.node` session settings the triggers of `sql/V3__cluster.sql` read).
pub fn connect(db: &DatabaseSettings, announce_as: Option<uuid::Uuid>) -> anyhow::Result<PgStore> {
    let mut config = db.config.clone();
    config.connect_timeout(CONNECT_TIMEOUT);
    let feed_options = announce_as
        .map(|node| format!(" -c colloquy.feed=on -c colloquy.node={node}"))
        .unwrap_or_default();
    config.options(format!("{SESSION_OPTIONS}{feed_options}"));
    config.application_name("colloquy");
    // Read statements are written to keep one plan for any parameters; PostgreSQL would
    // re-plan the page batch on every execution (its array length changes the estimate),
    // and planning cost more than running it.
    let mut read_config = config.clone();
    read_config.options(format!(
        "{SESSION_OPTIONS} -c plan_cache_mode=force_generic_plan"
    ));
    let readers = readers::Readers::new(read_config);
    let plain = db.config.clone();
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(db.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(POOL_WAIT))
        .build()
        .context("build the database pool")?;
    Ok(PgStore {
        config: Arc::new(plain),
        pool,
        readers: Arc::new(readers),
        pages: Arc::default(),
        commits: commit::Queue::default(),
        commit_counters: Arc::default(),
    })
}

/// The store: a pool for writes, shared connections for reads, and the queries.
#[derive(Clone)]
pub struct PgStore {
    /// The connection settings as configured (the change feed opens its own connection).
    config: Arc<tokio_postgres::Config>,
    pool: Pool,
    /// Per-thread pipelined connections for single-statement reads (see `readers.rs`).
    readers: Arc<readers::Readers>,
    /// Message pages waiting to be read together, per thread (see `pages.rs`).
    pages: Arc<pages::PageQueues>,
    /// The group committer's queue, once started (see `commit.rs`).
    commits: commit::Queue,
    /// What the group committer did, for operators.
    commit_counters: Arc<commit::CommitCounters>,
}

impl PgStore {
    /// The connection settings as configured, for connections of their own (the feed).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The pool, for readiness checks and metrics.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Read connections open now (one per thread that has read), for metrics.
    pub fn read_connections(&self) -> usize {
        self.readers.open_count()
    }

    /// A connection for one single-statement read (or several independent ones, pipelined),
    /// shared with the thread's other requests: never a transaction or a `SET`.
    async fn reader(&self) -> Result<Arc<deadpool_postgres::ClientWrapper>, StoreError> {
        self.readers.client().await
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| match e {
            // Every connection is busy: shed load; the database itself may be fine.
            deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => {
                StoreError::Busy
            }
            e => StoreError::Unavailable(cause_chain(&e)),
        })
    }

    /// Whether the database answers now (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await.map_err(db_error)?;
        Ok(())
    }
}

/// An error and its sources, outermost first, as one line (`a: b: c`); a source whose text
/// its parent already printed is not repeated. The store keeps this string in its errors,
/// since drivers' `Display` often prints only the outer layer ("db error").
pub fn cause_chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    line
}

/// Sorts a driver error into "retry later" (connection trouble, timeouts, restarts, lock
/// contention) and "bug".
pub(crate) fn db_error(e: tokio_postgres::Error) -> StoreError {
    let transient = match e.code() {
        None => true, // I/O error or closed connection
        Some(code) => {
            code.code().starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::QUERY_CANCELED,
                    SqlState::T_R_SERIALIZATION_FAILURE,
                    SqlState::T_R_DEADLOCK_DETECTED,
                    SqlState::LOCK_NOT_AVAILABLE,
                    SqlState::TOO_MANY_CONNECTIONS,
                ]
                .contains(code)
        }
    };
    // Not logged here: whoever meets the error logs it once (a request's answer, a
    // background loop), with this whole chain.
    if transient {
        StoreError::Unavailable(cause_chain(&e))
    } else {
        StoreError::Internal(cause_chain(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::cause_chain;

    /// An error that prints only its own layer, as `tokio_postgres::Error` does ("db error").
    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn the_cause_chain_keeps_what_display_drops() {
        let e = Layer(
            "db error",
            Some(Box::new(Layer(
                "ERROR: relation \"tickets\" does not exist",
                None,
            ))),
        );
        assert_eq!(e.to_string(), "db error");
        assert_eq!(
            cause_chain(&e),
            "db error: ERROR: relation \"tickets\" does not exist"
        );
    }

    #[test]
    fn a_cause_its_parent_already_printed_is_not_repeated() {
        let e = Layer(
            "pool: connection refused",
            Some(Box::new(Layer("connection refused", None))),
        );
        assert_eq!(cause_chain(&e), "pool: connection refused");
    }
}
