//! The port to budgets every node of a cluster counts together (Redis, in the service
//! crate), and the share each node allows on its own while that store is unreachable.

use super::table::{RateCheck, RateRefusal};
use crate::domain::Limit;
use async_trait::async_trait;
use uuid::Uuid;

/// A charge in the shared store, to take back when the request is refused after all: each
/// key with its TAT before (`None`: the key did not exist) and after, in the store's clock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedCharge {
    /// (store key, TAT before, TAT after), in the store's units.
    pub keys: Vec<(String, Option<i64>, i64)>,
}

/// The shared store did not answer in time: this request is decided by the node alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("shared budgets unreachable")]
pub struct SharedDown;

/// Port: budgets every node of a cluster counts together (Redis, in the service crate), so
/// a limit holds across nodes instead of being multiplied by their number.
#[async_trait]
pub trait SharedBudgets: Send + Sync + 'static {
    /// Charges `gate` (kept even when `checks` then refuse), then `checks`, all or nothing,
    /// in one atomic step; the charge returned covers `checks` only.
    async fn check(
        &self,
        team_id: Uuid,
        gate: &[RateCheck],
        checks: &[RateCheck],
    ) -> Result<Result<SharedCharge, RateRefusal>, SharedDown>;

    /// Takes a charge back, key by key, unless another request charged the key since.
    async fn refund(&self, charge: SharedCharge);

    /// Whether the store answered lately; while not, checks are decided locally at once
    /// instead of each waiting for a timeout.
    fn healthy(&self) -> bool;

    /// Nodes sharing the budgets now, this one included: while the store is away each node
    /// allows `limit / live_nodes`, so the cluster as a whole stays near the limit.
    fn live_nodes(&self) -> usize;

    /// Calls made to the store since start (operations per request, for the benchmarks).
    fn calls(&self) -> u64;
}

/// A limit shared by `n` nodes: each gets its share, never less than one request.
pub(super) fn divided(limit: Limit, n: usize) -> Limit {
    let n = u32::try_from(n).unwrap_or(u32::MAX).max(1);
    Limit {
        count: (limit.count / n).max(1),
        period: limit.period,
    }
}
