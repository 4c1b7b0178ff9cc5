//! Scoring on the windows several nodes share (Redis, through [`super::shared`]): the
//! detector batches observations to the store, one batch in flight, scores on what all
//! nodes saw, and scores alone on its own windows while the store fails.

use super::detector::SuspicionDetector;
use super::observation::Observation;
use super::rules::{
    message_reasons, trips_reason, Firing, MessageCounts, Verdict, MIN_CHARS_ACROSS,
};
use super::shared::{ScoreOp, SharedError, SharedWindows, WindowOp};
use actix::prelude::*;
use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// Most observations waiting for the shared store; more are scored by this node alone
/// (counted as `scored_alone`).
pub(super) const MAX_PENDING: usize = 4096;
/// Most observations in one round trip to the shared store.
const MAX_BATCH: usize = 512;
/// A round trip (both calls) that takes longer counts as a failure of the shared store.
const SHARED_DEADLINE: Duration = Duration::from_secs(2);
/// How often a node scoring alone probes the shared store.
pub(super) const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The detector's side of shared windows: the store and the observations waiting for it.
pub(super) struct Sharing {
    pub(super) windows: Arc<dyn SharedWindows>,
    /// Each with what this node's own windows decided, used if the store fails.
    pub(super) pending: VecDeque<(Observation, Vec<Verdict>)>,
    pub(super) in_flight: bool,
    pub(super) probing: bool,
}

impl SuspicionDetector {
    /// Sends the next batch of waiting observations to the shared store (one batch in
    /// flight); its verdicts replace the local ones, or, if the store fails, the local
    /// verdicts of everything waiting are used and the node scores alone.
    pub(super) fn send_batch(&mut self, ctx: &mut Context<Self>) {
        let Some(sharing) = self.sharing.as_mut() else {
            return;
        };
        if sharing.in_flight || sharing.pending.is_empty() {
            return;
        }
        sharing.in_flight = true;
        let n = sharing.pending.len().min(MAX_BATCH);
        let batch: Vec<(Observation, Vec<Verdict>)> = sharing.pending.drain(..n).collect();
        let windows = Arc::clone(&sharing.windows);
        let round_trip = async move {
            let res = tokio::time::timeout(SHARED_DEADLINE, score_shared(&*windows, &batch))
                .await
                .unwrap_or_else(|_| Err(SharedError("no answer within 2 s".into())));
            (res, batch)
        };
        ctx.spawn(round_trip.into_actor(self).map(|(res, batch), act, ctx| {
            if let Some(sharing) = act.sharing.as_mut() {
                sharing.in_flight = false;
            }
            match res {
                Ok(verdicts) => act.emit(verdicts, ctx),
                Err(e) => {
                    let local: Vec<Verdict> = batch.into_iter().flat_map(|(_, v)| v).collect();
                    act.emit(local, ctx);
                    act.score_alone(&e, ctx);
                }
            }
            act.send_batch(ctx);
        }));
    }

    /// The shared store failed: warn once, count, and use the local verdicts of whatever
    /// still waits for it.
    fn score_alone(&mut self, e: &SharedError, ctx: &mut Context<Self>) {
        self.counters.shared_failures.fetch_add(1, Relaxed);
        if self.counters.shared_up.swap(false, Relaxed) {
            tracing::warn!(error = %e, "suspicion windows are not shared (the shared store failed): this node scores on its own windows until it is back");
        }
        let waiting = self
            .sharing
            .as_mut()
            .map(|s| std::mem::take(&mut s.pending))
            .unwrap_or_default();
        self.counters
            .scored_alone
            .fetch_add(waiting.len() as u64, Relaxed);
        let local: Vec<Verdict> = waiting.into_iter().flat_map(|(_, v)| v).collect();
        self.emit(local, ctx);
    }

    /// While scoring alone, asks whether the shared store is back; if so, shares again.
    pub(super) fn probe(&mut self, ctx: &mut Context<Self>) {
        if self.counters.shared_up.load(Relaxed) {
            return;
        }
        let Some(sharing) = self.sharing.as_mut() else {
            return;
        };
        if sharing.probing {
            return;
        }
        sharing.probing = true;
        let windows = Arc::clone(&sharing.windows);
        let probe = async move {
            tokio::time::timeout(SHARED_DEADLINE, windows.probe())
                .await
                .unwrap_or_else(|_| Err(SharedError("no answer within 2 s".into())))
        };
        ctx.spawn(probe.into_actor(self).map(|res, act, _| {
            if let Some(sharing) = act.sharing.as_mut() {
                sharing.probing = false;
            }
            match res {
                Ok(()) => {
                    act.counters.shared_up.store(true, Relaxed);
                    tracing::info!("suspicion windows are shared again: the shared store answers");
                }
                Err(e) => tracing::debug!(error = %e, "the shared suspicion store is still away"),
            }
        }));
    }
}

/// Visitor keys as the shared store knows them: a hash (the same on every node; the store
/// need not hold email addresses), 128 bits so that no one can make two count as one.
fn shared_visitor(visitor: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(visitor.as_bytes());
    hex::encode(&digest[..16])
}

/// The shared store's keys of one observation's windows, and where its counts go.
fn window_ops(obs: &Observation, ops: &mut Vec<WindowOp>) {
    match obs {
        Observation::Honeypot { .. } => {}
        Observation::RateLimited { team_id, ip, .. } => ops.push(WindowOp::Count {
            key: format!("r:{team_id}:{ip}"),
        }),
        Observation::Message(m) => {
            let (team, v, h) = (m.team_id, shared_visitor(&m.visitor), m.text.hash);
            ops.push(WindowOp::Count {
                key: format!("t:{team}:{v}:{h:016x}"),
            });
            if m.text.chars >= MIN_CHARS_ACROSS {
                ops.push(WindowOp::Distinct {
                    key: format!("s:{team}:{h:016x}"),
                    member: v.clone(),
                });
            }
            ops.push(WindowOp::Distinct {
                key: format!("k:{team}:{}", m.ip),
                member: v,
            });
            let key = format!("b:{team}:{}", m.ticket_id);
            ops.push(if m.opened_ticket {
                WindowOp::BurstOpen { key }
            } else {
                WindowOp::BurstNext { key }
            });
        }
    }
}

/// Scores a batch on the shared windows: one call for the windows, and one for the scores
/// when a rule fired. Pure apart from the store: the rules are the same as the local ones.
async fn score_shared(
    windows: &dyn SharedWindows,
    batch: &[(Observation, Vec<Verdict>)],
) -> Result<Vec<Verdict>, SharedError> {
    let mut ops = Vec::with_capacity(batch.len() * 4);
    for (obs, _) in batch {
        window_ops(obs, &mut ops);
    }
    let expected = ops.len();
    let counts = if ops.is_empty() {
        Vec::new()
    } else {
        windows.count(ops).await?
    };
    if counts.len() != expected {
        return Err(SharedError(format!(
            "the store answered {} counts for {expected} windows",
            counts.len()
        )));
    }
    let mut counts = counts
        .into_iter()
        .map(|c| usize::try_from(c).unwrap_or(usize::MAX));
    let mut next = || counts.next().unwrap_or(0);
    let mut firings: Vec<Firing<'_>> = Vec::new();
    for (obs, _) in batch {
        match obs {
            Observation::Honeypot {
                team_id,
                ip,
                settings,
            } => firings.push(Firing {
                team_id: *team_id,
                reason: "honeypot",
                detail: "filled the hidden honeypot field".into(),
                ticket_id: None,
                visitor: None,
                ip: *ip,
                settings,
            }),
            Observation::RateLimited {
                team_id,
                tier,
                visitor,
                ip,
                settings,
            } => {
                if let Some((reason, detail)) = trips_reason(next(), *tier) {
                    firings.push(Firing {
                        team_id: *team_id,
                        reason,
                        detail,
                        ticket_id: None,
                        visitor: visitor.as_deref(),
                        ip: *ip,
                        settings,
                    });
                }
            }
            Observation::Message(m) => {
                let same_text = next();
                let senders = (m.text.chars >= MIN_CHARS_ACROSS).then(&mut next);
                let ip_keys = next();
                let burst = next();
                let counts = MessageCounts {
                    same_text,
                    senders,
                    ip_keys,
                    burst: (!m.opened_ticket && burst > 0)
                        .then(|| u32::try_from(burst).unwrap_or(u32::MAX)),
                };
                for (reason, detail) in message_reasons(m, &counts) {
                    firings.push(Firing {
                        team_id: m.team_id,
                        reason,
                        detail,
                        ticket_id: Some(m.ticket_id),
                        visitor: Some(&m.visitor),
                        ip: m.ip,
                        settings: &m.settings,
                    });
                }
            }
        }
    }
    if firings.is_empty() {
        return Ok(Vec::new());
    }
    let score_ops: Vec<ScoreOp> = firings
        .iter()
        .map(|f| {
            let mut subjects = vec![format!("sc:{}:i:{}", f.team_id, f.ip)];
            if let Some(v) = f.visitor {
                subjects.push(format!("sc:{}:v:{}", f.team_id, shared_visitor(v)));
            }
            ScoreOp {
                subjects,
                reason: f.reason,
                weights: REASONS
                    .iter()
                    .map(|r| (*r, f.settings.weights.of(r)))
                    .collect(),
                block_threshold: f.settings.block_threshold,
                block_secs: u64::from(f.settings.block_minutes) * 60,
            }
        })
        .collect();
    let outcomes = windows.score(score_ops).await?;
    if outcomes.len() != firings.len() {
        return Err(SharedError(format!(
            "the store answered {} scores for {} firings",
            outcomes.len(),
            firings.len()
        )));
    }
    let mut out = Vec::new();
    for (f, o) in firings.into_iter().zip(outcomes) {
        if o.new {
            f.verdicts(o.best.min(100), o.block, o.reasons, &mut out);
        }
    }
    Ok(out)
}

/// Every rule's reason (the weights a shared score sums over).
const REASONS: [&str; 7] = [
    "honeypot",
    "repeated_message",
    "repeated_across_visitors",
    "link_density",
    "enumeration",
    "rate_limited",
    "burst_after_creation",
];
