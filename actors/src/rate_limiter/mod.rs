//! Admission control: one [`RateLimiter`] actor per active team on each node owns that team's
//! budgets (GCRA: one timestamp per tier and key), so one tenant's visitors never use up
//! another's budget and no database is touched to decide. HTTP handlers ask through the
//! [`RateLimiters`] handle, which starts a team's actor on demand; an actor with no budget
//! left to remember stops when idle. Refusals carry the wait.
//!
//! With a [`SharedBudgets`] store (Redis in a cluster), the actor asks it, so a limit holds
//! across nodes instead of being multiplied by their number; while the store is unreachable
//! the actor decides alone on `limit / live nodes`, and goes back to the store by itself.
//!
//! A stranger can name any number of keys (distinct_ids, sessions), so a team's table is
//! bounded and full means *forget the oldest*, never *refuse the newcomer*: the keys evicted
//! first are those whose budgets are most nearly whole (earliest theoretical arrival time),
//! so forgetting one gives a visitor back at most what time would soon have returned. A
//! request refused after admission (an unknown or another visitor's ticket) takes its charge
//! back with [`Charged::settle`], so it leaves no key behind.
//!
//! The module is split by job: `table` (tiers, checks, GCRA and one team's table of keys),
//! `limiter` (the per-team actor and its messages), `handle` (the [`RateLimiters`] handle,
//! the registry it shares with the actors, and the charges it hands out) and `shared` (the
//! port to budgets shared across nodes, and the fallback share while it is away).

mod handle;
mod limiter;
mod shared;
mod table;

pub use handle::{BudgetsStatus, Charged, RateLimiters};
pub use limiter::{RateLimiter, MAILBOX};
pub use shared::{SharedBudgets, SharedCharge, SharedDown};
pub use table::{gcra, RateCheck, RateRefusal, Tier, MAX_KEYS, SWEEP_EVERY};

#[cfg(test)]
mod tests;
