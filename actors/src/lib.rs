//! The core of colloquy: the rules of a support conversation and the actors that enforce them.
//!
//! Nothing here knows HTTP or SQL. The service crate (`colloquy`) parses requests into the
//! validated types of [`domain`], asks a per-team [`rate_limiter::RateLimiter`] for admission,
//! hands appends to a per-ticket [`ticket::TicketActor`] (found through the
//! [`ticket::TicketRouter`]) and reports what it saw to the
//! [`suspicion::SuspicionDetector`]. Storage is reached only through the [`store::Store`] port.
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod domain;
pub mod rate_limiter;
pub mod stats;
pub mod store;
pub mod suspicion;
pub mod ticket;
