//! How request handlers reach the detector (fire-and-forget) and read its counters: the
//! verdict totals and whether its windows are shared.

use super::detector::{FlushFlags, SuspicionDetector};
use super::observation::Observation;
use crate::stats::{ActorStats, ActorStatsSnapshot};
use actix::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Totals for metrics.
#[derive(Debug, Default)]
pub struct Counters {
    pub(super) flags: AtomicU64,
    pub(super) blocks: AtomicU64,
    /// Whether a shared store is configured.
    pub(super) shared: AtomicBool,
    /// Whether the shared store answered last time.
    pub(super) shared_up: AtomicBool,
    /// Round trips to the shared store that failed.
    pub(super) shared_failures: AtomicU64,
    /// Observations scored on this node's windows alone although a store is configured.
    pub(super) scored_alone: AtomicU64,
}

/// Whether the detector shares its windows, for `/api/ops/actors` and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SharingStatus {
    /// `off` (no shared store configured), `shared`, or `alone` (the store failed; this node
    /// scores on its own windows until a probe reaches it again).
    pub mode: &'static str,
    /// Round trips to the shared store that failed since start.
    pub failures: u64,
    /// Observations scored by this node alone since start although a store is configured
    /// (while it was unreachable, or when too many waited for it).
    pub scored_alone: u64,
}

/// How request handlers reach the detector: fire-and-forget, dropping when full.
#[derive(Clone)]
pub struct SuspicionHandle {
    pub(super) addr: Addr<SuspicionDetector>,
    pub(super) stats: Arc<ActorStats>,
    pub(super) counters: Arc<Counters>,
}

impl SuspicionHandle {
    /// Hands over an observation without waiting; a full mailbox drops it and counts.
    pub fn observe(&self, obs: Observation) {
        if self.addr.try_send(obs).is_err() {
            self.stats.dropped();
        }
    }

    /// Writes pending verdicts and waits until they are stored.
    pub async fn flush(&self) {
        let _ = self.addr.send(FlushFlags).await;
    }

    /// The detector's counters.
    pub fn stats(&self) -> ActorStatsSnapshot {
        self.stats.snapshot()
    }

    /// Whether the windows are shared, and how often they were not.
    pub fn sharing(&self) -> SharingStatus {
        let c = &self.counters;
        let mode = match (c.shared.load(Relaxed), c.shared_up.load(Relaxed)) {
            (false, _) => "off",
            (true, true) => "shared",
            (true, false) => "alone",
        };
        SharingStatus {
            mode,
            failures: c.shared_failures.load(Relaxed),
            scored_alone: c.scored_alone.load(Relaxed),
        }
    }

    /// Flags and automatic blocks raised since start.
    pub fn verdicts(&self) -> (u64, u64) {
        (
            self.counters.flags.load(Relaxed),
            self.counters.blocks.load(Relaxed),
        )
    }
}
