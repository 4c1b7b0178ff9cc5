//! What the ticket actors, their supervisor and the router share: the storage port, the
//! bounds, the counters, the registry of live tickets (read by everyone, changed only by the
//! supervisor) and whether memory may be trusted.

use super::supervisor::Registry;
use crate::stats::ActorStats;
use crate::store::Store;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Bounds and timings of ticket actors.
#[derive(Debug, Clone)]
pub struct TicketConfig {
    /// Mailbox bound per ticket actor.
    pub mailbox_capacity: usize,
    /// Appends a ticket may hold queued before refusing with "overloaded".
    pub max_pending: usize,
    /// Most appends committed in one transaction.
    pub max_batch: usize,
    /// Idle time after which a ticket actor stops.
    pub idle_after: Duration,
    /// Longest a write transaction may take before it counts as failed.
    pub write_timeout: Duration,
    /// Longest a request waits for a ticket actor's answer.
    pub request_timeout: Duration,
    /// Recent messages kept per ticket for polling from memory.
    pub recent_capacity: usize,
    /// Most messages one subscription replays: a stream far behind gets one page, ends,
    /// and reconnects from its last one, so no stream holds a whole history in memory.
    pub replay_page: usize,
}

impl Default for TicketConfig {
    fn default() -> Self {
        Self {
            mailbox_capacity: 256,
            max_pending: 512,
            max_batch: 128,
            idle_after: Duration::from_secs(300),
            write_timeout: Duration::from_millis(1200),
            request_timeout: Duration::from_millis(1600),
            recent_capacity: 8,
            replay_page: 500,
        }
    }
}

/// The environment every ticket actor, the supervisor and the router run in.
pub(super) struct TicketEnv {
    pub(super) store: Arc<dyn Store>,
    /// The live tickets: looked up without a mailbox round trip, changed only by the
    /// supervisor (see [`Registry`]).
    pub(super) registry: Registry,
    /// The ticket actors' counters.
    pub(super) stats: ActorStats,
    /// The supervisor's own counters: requests it answered, entries it removed, restarts
    /// it re-registered.
    pub(super) supervisor_stats: ActorStats,
    pub(super) config: TicketConfig,
    pub(super) trust: MemoryTrust,
}

impl TicketEnv {
    pub(super) fn new(store: Arc<dyn Store>, config: TicketConfig) -> Self {
        Self {
            store,
            registry: Registry::default(),
            stats: ActorStats::default(),
            supervisor_stats: ActorStats::default(),
            config,
            trust: MemoryTrust::default(),
        }
    }

    /// Whether reads may be answered from memory.
    pub(super) fn memory_trusted(&self) -> bool {
        self.trust.trusted.load(Ordering::Acquire)
    }

    /// The current trust epoch.
    pub(super) fn epoch(&self) -> u64 {
        self.trust.epoch.load(Ordering::Acquire)
    }
}

/// Whether what actors hold in memory is current: always on one node; in a cluster only
/// while the change feed is healthy (see the service's `cluster` module).
pub(super) struct MemoryTrust {
    trusted: AtomicBool,
    /// Bumped each time memory becomes trusted again: a ticket's memory is current only once
    /// its actor has caught up with the database in the current epoch; until then its reads
    /// and checks go to the database (else a message read from the database during the gap
    /// could vanish from the next answer).
    epoch: AtomicU64,
}

impl Default for MemoryTrust {
    fn default() -> Self {
        Self {
            trusted: AtomicBool::new(true),
            epoch: AtomicU64::new(0),
        }
    }
}

impl MemoryTrust {
    /// Sets the flag; true when it turned from untrusted to trusted (the caller then has
    /// every live ticket catch up).
    pub(super) fn set(&self, trusted: bool) -> bool {
        if trusted && !self.trusted.load(Ordering::Acquire) {
            // Before the flag: whoever sees it trusted also sees every view as behind.
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
        let was = self.trusted.swap(trusted, Ordering::AcqRel);
        trusted && !was
    }
}
