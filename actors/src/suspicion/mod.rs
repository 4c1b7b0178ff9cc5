//! The SuspicionDetector: fed observations off the request path (`try_send`, never
//! awaited), it keeps short bounded windows of recent activity, applies plain scoring rules
//! ([`Rules`]) and writes the flags and blocks they raise to the database in batches.
//!
//! Scores: each rule that fires adds its weight (per team, [`SuspicionSettings`]) to both the
//! visitor (when known) and the IP, once per reason per 10-minute window; a score is the sum,
//! at most 100, and a firing's score is the higher of the two. Every firing is stored as a
//! flag with that score; a score at or above the team's block threshold blocks the IP for
//! `block_minutes`.
//!
//! A full mailbox drops the observation and counts it: spam defence must never slow or
//! fail a widget request. Every window and map is bounded, and a full map forgets its
//! least recently active keys (counted as evictions) so that new visitors are always scored.
//!
//! Several nodes share their windows through a [`shared::SharedWindows`] store (Redis) when
//! one is given: observations are then batched to it (one round trip per batch, one batch in
//! flight) and scored on what all nodes saw. The local windows are kept up to date all the
//! same: when the store fails, the node scores alone on them (warning, metric) and shares
//! again once a probe reaches the store.
//!
//! The module is split by job: `observation` (what requests report), `rules` (the
//! scoring rules and their windows), `windows` (bounded windows and maps), `detector`
//! (the actor and its database writes), `sharing` (scoring on the shared windows) and
//! `handle` (how request handlers reach the detector, and its counters).
//!
//! [`SuspicionSettings`]: crate::domain::SuspicionSettings

pub mod shared;

mod detector;
mod handle;
mod observation;
mod rules;
mod sharing;
mod windows;

pub use detector::{FlushFlags, SuspicionDetector};
pub use handle::{Counters, SharingStatus, SuspicionHandle};
pub use observation::{MessageSeen, Observation, TextFeatures};
pub use rules::{Rules, Verdict, BURST_SPAN, MAX_EVENTS, MAX_KEYS, WINDOW};
