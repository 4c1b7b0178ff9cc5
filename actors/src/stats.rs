//! Counters every actor kind keeps, so operators can see inside the actors
//! (`/api/ops/actors`, `/metrics`) without asking the actors themselves.

use serde::Serialize;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Lock-free counters for one actor kind, shared by all its actors and by whoever reports.
#[derive(Debug, Default)]
pub struct ActorStats {
    alive: AtomicI64,
    queued: AtomicI64,
    peak_queued: AtomicI64,
    handled: AtomicU64,
    errors: AtomicU64,
    restarts: AtomicU64,
    evictions: AtomicU64,
    dropped: AtomicU64,
}

/// A point-in-time copy of [`ActorStats`], ready to serialize.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct ActorStatsSnapshot {
    /// Actors of this kind running now.
    pub alive: i64,
    /// Requests waiting in these actors' queues now.
    pub queued: i64,
    /// The most that ever waited at once.
    pub peak_queued: i64,
    /// Messages handled since start.
    pub handled: u64,
    /// Handled messages that ended in an error.
    pub errors: u64,
    /// Restarts after a fault.
    pub restarts: u64,
    /// Stops because the actor was idle.
    pub evictions: u64,
    /// Work refused or dropped because a queue was full.
    pub dropped: u64,
}

impl ActorStats {
    /// Counts an actor starting.
    pub fn started(&self) {
        self.alive.fetch_add(1, Relaxed);
    }
    /// Counts an actor stopping for good.
    pub fn stopped(&self) {
        self.alive.fetch_sub(1, Relaxed);
    }
    /// Counts `n` requests entering a queue.
    pub fn enqueued(&self, n: i64) {
        let now = self.queued.fetch_add(n, Relaxed) + n;
        self.peak_queued.fetch_max(now, Relaxed);
    }
    /// Counts `n` requests leaving a queue, handled.
    pub fn dequeued(&self, n: i64) {
        self.queued.fetch_sub(n, Relaxed);
        self.handled.fetch_add(n as u64, Relaxed);
    }
    /// Counts one handled message.
    pub fn handled(&self) {
        self.handled.fetch_add(1, Relaxed);
    }
    /// Counts a failure.
    pub fn error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }
    /// Counts a restart.
    pub fn restarted(&self) {
        self.restarts.fetch_add(1, Relaxed);
    }
    /// Counts an idle eviction.
    pub fn evicted(&self) {
        self.evictions.fetch_add(1, Relaxed);
    }
    /// Counts `n` keys forgotten because a bounded table was full.
    pub fn evicted_many(&self, n: u64) {
        if n > 0 {
            self.evictions.fetch_add(n, Relaxed);
        }
    }
    /// Counts work dropped or refused because a bound was reached.
    pub fn dropped(&self) {
        self.dropped.fetch_add(1, Relaxed);
    }
    /// Reads every counter.
    pub fn snapshot(&self) -> ActorStatsSnapshot {
        ActorStatsSnapshot {
            alive: self.alive.load(Relaxed),
            queued: self.queued.load(Relaxed),
            peak_queued: self.peak_queued.load(Relaxed),
            handled: self.handled.load(Relaxed),
            errors: self.errors.load(Relaxed),
            restarts: self.restarts.load(Relaxed),
            evictions: self.evictions.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
        }
    }
}
