//! The SuspicionDetector: fed observations off the request path (`try_send`, never
//! awaited), it keeps short bounded windows of recent activity, applies plain scoring rules
//! ([`Rules`]) and writes the flags they raise to the database in batches.
//!
//! A full mailbox drops the observation and counts it: spam defence must never slow or
//! fail a widget request.

use crate::rate_limiter::Tier;
use crate::stats::{ActorStats, ActorStatsSnapshot};
use crate::store::{Store, SuspicionFlag};
use actix::prelude::*;
use chrono::Utc;
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Something a request did that may be spam.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub enum Observation {
    /// A bot filled the honeypot field.
    Honeypot {
        /// The team whose widget was hit.
        team_id: Uuid,
        /// The client IP.
        ip: IpAddr,
        /// The distinct_id it sent, if any was readable.
        distinct_id: Option<String>,
    },
    /// A visitor's message was stored.
    Message {
        /// The team.
        team_id: Uuid,
        /// The ticket written to.
        ticket_id: Uuid,
        /// The visitor.
        distinct_id: String,
        /// The client IP.
        ip: IpAddr,
        /// A hash of the normalized text (the text itself is never kept).
        content_hash: u64,
    },
    /// A rate limit refused a request.
    RateLimited {
        /// The team.
        team_id: Uuid,
        /// The tier that ran out.
        tier: Tier,
        /// The visitor, when known.
        distinct_id: Option<String>,
        /// The client IP.
        ip: IpAddr,
    },
}

/// A hash of message text that ignores case and whitespace, so "BUY NOW" and "buy  now"
/// count as one repeated text.
pub fn content_hash(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    for word in text.split_whitespace() {
        word.to_lowercase().hash(&mut h);
    }
    h.finish()
}

/// How long activity is remembered.
const WINDOW: Duration = Duration::from_secs(600);
/// Identical messages from one visitor in the window that raise a flag.
const REPEATS_TO_FLAG: usize = 3;
/// Rate-limit refusals for one key in the window that raise a flag.
const TRIPS_TO_FLAG: usize = 3;
/// Most keys a window map holds; the oldest are forgotten first.
const MAX_KEYS: usize = 50_000;
/// Most flags waiting for the database; more are dropped and counted.
const MAX_UNWRITTEN: usize = 10_000;

/// The scoring rules and the bounded windows they read. Plain code: unit-tested without
/// actors or a database.
#[derive(Debug, Default)]
pub struct Rules {
    texts: HashMap<(Uuid, String), VecDeque<(Instant, u64)>>,
    trips: HashMap<(Uuid, IpAddr), VecDeque<Instant>>,
}

impl Rules {
    /// Applies the rules to one observation at `now`, returning the flags it raises.
    pub fn observe(&mut self, obs: &Observation, now: Instant) -> Vec<SuspicionFlag> {
        let flag =
            |team_id, ticket_id, distinct_id, ip, reason, score, detail: String| SuspicionFlag {
                team_id,
                ticket_id,
                distinct_id,
                ip: Some(ip),
                reason,
                score,
                detail,
                observed_at: Utc::now(),
            };
        match obs {
            Observation::Honeypot {
                team_id,
                ip,
                distinct_id,
            } => vec![flag(
                *team_id,
                None,
                distinct_id.clone(),
                *ip,
                "honeypot",
                90,
                "filled the hidden honeypot field".into(),
            )],
            Observation::Message {
                team_id,
                ticket_id,
                distinct_id,
                ip,
                content_hash,
            } => {
                let window = bounded_entry(&mut self.texts, (*team_id, distinct_id.clone()));
                prune(window, now, |(t, _)| *t);
                window.push_back((now, *content_hash));
                let same = window.iter().filter(|(_, h)| h == content_hash).count();
                if same == REPEATS_TO_FLAG {
                    vec![flag(
                        *team_id,
                        Some(*ticket_id),
                        Some(distinct_id.clone()),
                        *ip,
                        "repeated_message",
                        60,
                        format!("the same text {same} times within 10 minutes"),
                    )]
                } else {
                    Vec::new()
                }
            }
            Observation::RateLimited {
                team_id,
                tier,
                distinct_id,
                ip,
            } => {
                let window = bounded_entry(&mut self.trips, (*team_id, *ip));
                prune(window, now, |t| *t);
                window.push_back(now);
                if window.len() == TRIPS_TO_FLAG {
                    vec![flag(
                        *team_id,
                        None,
                        distinct_id.clone(),
                        *ip,
                        "rate_limited",
                        50,
                        format!(
                            "{} rate-limit refusals ({}) within 10 minutes",
                            window.len(),
                            tier.as_str()
                        ),
                    )]
                } else {
                    Vec::new()
                }
            }
        }
    }

    /// Forgets windows with nothing in the last [`WINDOW`].
    pub fn sweep(&mut self, now: Instant) {
        self.texts.retain(|_, w| {
            prune(w, now, |(t, _)| *t);
            !w.is_empty()
        });
        self.trips.retain(|_, w| {
            prune(w, now, |t| *t);
            !w.is_empty()
        });
    }

    /// How many keys are remembered, to show the bound holds.
    pub fn tracked_keys(&self) -> usize {
        self.texts.len() + self.trips.len()
    }
}

fn prune<T>(window: &mut VecDeque<T>, now: Instant, at: impl Fn(&T) -> Instant) {
    while window
        .front()
        .is_some_and(|e| now.duration_since(at(e)) > WINDOW)
    {
        window.pop_front();
    }
    while window.len() > 64 {
        window.pop_front();
    }
}

fn bounded_entry<K: Hash + Eq + Clone, V: Default>(map: &mut HashMap<K, V>, key: K) -> &mut V {
    if map.len() >= MAX_KEYS && !map.contains_key(&key) {
        // Forget an arbitrary key: under a flood, old windows matter least.
        if let Some(k) = map.keys().next().cloned() {
            map.remove(&k);
        }
    }
    map.entry(key).or_default()
}

/// The actor holding [`Rules`] and writing their flags.
pub struct SuspicionDetector {
    rules: Rules,
    unwritten: Vec<SuspicionFlag>,
    writing: bool,
    store: Arc<dyn Store>,
    stats: Arc<ActorStats>,
}

/// Writes pending flags now; answers when they are stored (used at shutdown and by tests).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FlushFlags;

impl SuspicionDetector {
    /// Starts the detector on the current arbiter.
    pub fn start(store: Arc<dyn Store>) -> SuspicionHandle {
        let stats = Arc::new(ActorStats::default());
        let addr = SuspicionDetector {
            rules: Rules::default(),
            unwritten: Vec::new(),
            writing: false,
            store,
            stats: Arc::clone(&stats),
        }
        .start();
        SuspicionHandle { addr, stats }
    }

    fn write(&mut self, ctx: &mut Context<Self>) {
        if self.writing || self.unwritten.is_empty() {
            return;
        }
        self.writing = true;
        let flags = std::mem::take(&mut self.unwritten);
        let store = Arc::clone(&self.store);
        ctx.spawn(
            async move { (store.record_flags(&flags).await, flags) }
                .into_actor(self)
                .map(|(res, flags), act, _| {
                    act.writing = false;
                    if let Err(e) = res {
                        act.stats.error();
                        tracing::warn!(error = %e, flags = flags.len(), "could not store suspicion flags; will retry");
                        let room = MAX_UNWRITTEN.saturating_sub(act.unwritten.len());
                        act.unwritten.extend(flags.into_iter().take(room));
                    }
                }),
        );
    }
}

impl Actor for SuspicionDetector {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.stats.started();
        ctx.set_mailbox_capacity(4096);
        ctx.run_interval(Duration::from_millis(500), |act, ctx| act.write(ctx));
        ctx.run_interval(Duration::from_secs(60), |act, _| {
            act.rules.sweep(Instant::now())
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.stats.stopped();
    }
}

impl Handler<Observation> for SuspicionDetector {
    type Result = ();

    fn handle(&mut self, obs: Observation, _: &mut Self::Context) {
        self.stats.handled();
        for flag in self.rules.observe(&obs, Instant::now()) {
            if self.unwritten.len() >= MAX_UNWRITTEN {
                self.stats.dropped();
            } else {
                self.unwritten.push(flag);
            }
        }
    }
}

impl Handler<FlushFlags> for SuspicionDetector {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: FlushFlags, _: &mut Self::Context) -> Self::Result {
        let flags = std::mem::take(&mut self.unwritten);
        let store = Arc::clone(&self.store);
        Box::pin(
            async move { store.record_flags(&flags).await }
                .into_actor(self)
                .map(|res, act, _| {
                    if res.is_err() {
                        act.stats.error();
                    }
                }),
        )
    }
}

/// How request handlers reach the detector: fire-and-forget, dropping when full.
#[derive(Clone)]
pub struct SuspicionHandle {
    addr: Addr<SuspicionDetector>,
    stats: Arc<ActorStats>,
}

impl SuspicionHandle {
    /// Hands over an observation without waiting; a full mailbox drops it and counts.
    pub fn observe(&self, obs: Observation) {
        if self.addr.try_send(obs).is_err() {
            self.stats.dropped();
        }
    }

    /// Writes pending flags and waits until they are stored.
    pub async fn flush(&self) {
        let _ = self.addr.send(FlushFlags).await;
    }

    /// The detector's counters.
    pub fn stats(&self) -> ActorStatsSnapshot {
        self.stats.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip() -> IpAddr {
        IpAddr::from([203, 0, 113, 7])
    }

    #[test]
    fn honeypot_hits_are_flagged_at_once() {
        let mut r = Rules::default();
        let flags = r.observe(
            &Observation::Honeypot {
                team_id: Uuid::nil(),
                ip: ip(),
                distinct_id: None,
            },
            Instant::now(),
        );
        assert_eq!(flags.len(), 1);
        assert_eq!(flags[0].reason, "honeypot");
    }

    #[test]
    fn the_third_identical_message_is_flagged_once() {
        let mut r = Rules::default();
        let now = Instant::now();
        let msg = |text: &str| Observation::Message {
            team_id: Uuid::nil(),
            ticket_id: Uuid::nil(),
            distinct_id: "v@example.com".into(),
            ip: ip(),
            content_hash: content_hash(text),
        };
        assert!(r.observe(&msg("Buy now"), now).is_empty());
        assert!(r.observe(&msg("something else"), now).is_empty());
        assert!(r.observe(&msg("buy   NOW"), now).is_empty());
        let flags = r.observe(&msg("BUY now"), now);
        assert_eq!(
            flags.iter().map(|f| f.reason).collect::<Vec<_>>(),
            ["repeated_message"]
        );
        assert!(
            r.observe(&msg("buy now"), now).is_empty(),
            "flagged once, not on every repeat"
        );
    }

    #[test]
    fn repeated_rate_limit_trips_are_flagged() {
        let mut r = Rules::default();
        let now = Instant::now();
        let trip = Observation::RateLimited {
            team_id: Uuid::nil(),
            tier: Tier::MessageDistinctId,
            distinct_id: Some("v@example.com".into()),
            ip: ip(),
        };
        assert!(r.observe(&trip, now).is_empty());
        assert!(r.observe(&trip, now).is_empty());
        assert_eq!(r.observe(&trip, now)[0].reason, "rate_limited");
    }

    #[test]
    fn old_activity_is_forgotten_and_memory_is_bounded() {
        let mut r = Rules::default();
        let start = Instant::now();
        for i in 0..(MAX_KEYS + 100) {
            r.observe(
                &Observation::Message {
                    team_id: Uuid::nil(),
                    ticket_id: Uuid::nil(),
                    distinct_id: format!("v{i}"),
                    ip: ip(),
                    content_hash: 1,
                },
                start,
            );
        }
        assert!(r.tracked_keys() <= MAX_KEYS);
        r.sweep(start + WINDOW + Duration::from_secs(1));
        assert_eq!(r.tracked_keys(), 0);
    }
}
