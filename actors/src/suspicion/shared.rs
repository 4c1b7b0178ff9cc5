//! The port through which several nodes share the suspicion detector's windows, so a
//! spammer spread over the nodes by a load balancer is scored as one node would score him.
//!
//! The detector keeps its rules (thresholds, details, verdicts) in Rust; a shared store only
//! keeps windows and scores and answers counts, one round trip per batch of observations:
//! [`SharedWindows::count`] appends to the windows and answers what they hold, and, only when
//! a rule fired, [`SharedWindows::score`] adds the reasons to the scores. The service crate
//! implements it on Redis (`colloquy::cluster::spam_redis`); keys here carry no prefix, the
//! store adds its own.

use async_trait::async_trait;

/// One step on a shared window, in batch order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowOp {
    /// Adds one event to a counting window of [`super::WINDOW`] (at most
    /// [`super::MAX_EVENTS`] events); answers how many it holds.
    Count {
        /// The window.
        key: String,
    },
    /// Adds `member` to a window of distinct members (at most [`super::MAX_EVENTS`], the
    /// least recently seen forgotten first); answers how many it holds.
    Distinct {
        /// The window.
        key: String,
        /// Who was seen (a visitor's hash).
        member: String,
    },
    /// A ticket was opened: its burst counter starts at 1 for [`super::BURST_SPAN`]; answers 1.
    BurstOpen {
        /// The ticket's counter.
        key: String,
    },
    /// One more message on a ticket: answers its burst count, or 0 when the ticket's first
    /// minute is over (or unknown).
    BurstNext {
        /// The ticket's counter.
        key: String,
    },
}

/// A rule fired: add its reason to each subject's score, once per window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoreOp {
    /// The scores (the IP's, and the visitor's when known).
    pub subjects: Vec<String>,
    /// The rule that fired.
    pub reason: &'static str,
    /// Every rule's weight (the team's settings): a score is the sum over its reasons.
    pub weights: Vec<(&'static str, u8)>,
    /// A score at or above this blocks (once per block).
    pub block_threshold: u8,
    /// How long a block lasts, in seconds.
    pub block_secs: u64,
}

/// What a [`ScoreOp`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoreOutcome {
    /// The higher of the subjects' scores (at most 100).
    pub best: u8,
    /// Whether the reason was new in some subject's window (otherwise nothing is reported).
    pub new: bool,
    /// Whether a subject reached the block threshold and was not blocked yet.
    pub block: bool,
    /// The reasons of the best score.
    pub reasons: Vec<String>,
}

/// Why the shared store did not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SharedError(pub String);

/// Windows and scores several nodes share (see the module documentation).
#[async_trait]
pub trait SharedWindows: Send + Sync {
    /// Applies `ops` in order, answering one count per op.
    async fn count(&self, ops: Vec<WindowOp>) -> Result<Vec<u64>, SharedError>;
    /// Applies `ops` in order, answering one outcome per op.
    async fn score(&self, ops: Vec<ScoreOp>) -> Result<Vec<ScoreOutcome>, SharedError>;
    /// Answers whether the store is reachable again (after a failure).
    async fn probe(&self) -> Result<(), SharedError>;
}
