//! Shared read connections: one PostgreSQL connection per thread that reads, on which every
//! single-statement read of that thread's requests is pipelined.
//!
//! A pooled connection serves one request at a time: 64 concurrent polls on 8 connections
//! queue for them, and every query is a round trip that wakes the connection's driver on
//! whichever thread created it. tokio-postgres pipelines concurrent queries on one `Client`,
//! so the reads of one actix worker share one connection whose driver runs on that same
//! worker: queries go out together, answers come back together, and no other thread is
//! woken. Writes (transactions) keep using the pool; nothing here may run a transaction or a
//! session-changing statement, since other requests share the connection.

use super::db_error;
use colloquy_actors::store::StoreError;
use dashmap::DashMap;
use deadpool_postgres::ClientWrapper;
use std::sync::Arc;
use std::thread::ThreadId;
use tokio::sync::OnceCell;
use tokio_postgres::NoTls;

/// One thread's read connection, opened by its first read.
type Slot = Arc<OnceCell<Arc<ClientWrapper>>>;

/// Read connections by thread (see the module doc).
pub(super) struct Readers {
    config: tokio_postgres::Config,
    slots: DashMap<ThreadId, Slot>,
}

impl Readers {
    pub(super) fn new(config: tokio_postgres::Config) -> Self {
        Self {
            config,
            slots: DashMap::new(),
        }
    }

    /// This thread's read connection: opened on first use and again after it closed (a
    /// database restart), by one request while the thread's others wait for it.
    pub(super) async fn client(&self) -> Result<Arc<ClientWrapper>, StoreError> {
        let slot = this_threads(&self.slots);
        if let Some(client) = slot.get() {
            if !client.is_closed() {
                return Ok(Arc::clone(client));
            }
            // Closed: forget it (unless another request already did) and open a new one.
            let thread = std::thread::current().id();
            self.slots.remove_if(&thread, |_, s| Arc::ptr_eq(s, &slot));
            return self.open(&this_threads(&self.slots)).await;
        }
        self.open(&slot).await
    }

    async fn open(&self, slot: &Slot) -> Result<Arc<ClientWrapper>, StoreError> {
        let client = slot
            .get_or_try_init(|| async {
                // Logged by whoever meets the error (once, with its cause chain).
                let (client, connection) = self.config.connect(NoTls).await.map_err(db_error)?;
                // The driver runs on this thread, beside the requests that use it.
                let driver = tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::warn!(error = %e, "database read connection closed");
                    }
                });
                Ok::<_, StoreError>(Arc::new(ClientWrapper::new(client, driver)))
            })
            .await?;
        Ok(Arc::clone(client))
    }

    /// Read connections open now, for metrics and tests.
    pub(super) fn open_count(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.get().is_some_and(|c| !c.is_closed()))
            .count()
    }
}

/// The calling thread's entry of a per-thread map, created empty on first use (no write lock
/// once it exists, and no guard kept).
pub(super) fn this_threads<T: Default>(map: &DashMap<ThreadId, Arc<T>>) -> Arc<T> {
    let thread = std::thread::current().id();
    let known = map.get(&thread).map(|e| Arc::clone(&e));
    known.unwrap_or_else(|| Arc::clone(&map.entry(thread).or_default()))
}
