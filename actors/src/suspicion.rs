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

pub mod shared;

use crate::domain::SuspicionSettings;
use crate::rate_limiter::Tier;
use crate::stats::{ActorStats, ActorStatsSnapshot};
use crate::store::{NewBlock, Store, SuspicionFlag};
use actix::prelude::*;
use chrono::Utc;
use shared::{ScoreOp, SharedError, SharedWindows, WindowOp};
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Something a request did that may be spam.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub enum Observation {
    /// A bot filled the honeypot field. Scored against the IP only: the distinct_id a bot
    /// names is unproven, and naming a victim's must not flag the victim.
    Honeypot {
        /// The team whose widget was hit.
        team_id: Uuid,
        /// The client IP.
        ip: IpAddr,
        /// The team's settings.
        settings: SuspicionSettings,
    },
    /// A visitor's message was stored.
    Message(MessageSeen),
    /// A rate limit refused a request.
    RateLimited {
        /// The team.
        team_id: Uuid,
        /// The tier that ran out.
        tier: Tier,
        /// The visitor key, when known.
        visitor: Option<String>,
        /// The client IP.
        ip: IpAddr,
        /// The team's settings.
        settings: SuspicionSettings,
    },
}

/// The features of a stored message the rules look at (never the text itself).
#[derive(Debug, Clone)]
pub struct MessageSeen {
    /// The team.
    pub team_id: Uuid,
    /// The ticket written to.
    pub ticket_id: Uuid,
    /// Whether this message opened the ticket.
    pub opened_ticket: bool,
    /// The visitor key (distinct_id, or `session:<id>`).
    pub visitor: String,
    /// The client IP.
    pub ip: IpAddr,
    /// See [`TextFeatures`].
    pub text: TextFeatures,
    /// The team's settings.
    pub settings: SuspicionSettings,
}

/// What the rules need to know about a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextFeatures {
    /// Hash of the normalized text (case and whitespace ignored).
    pub hash: u64,
    /// Words.
    pub words: u32,
    /// Links (`http://`, `https://`, `www.`).
    pub links: u32,
    /// Characters.
    pub chars: u32,
}

impl TextFeatures {
    /// Reads the features off a message text.
    pub fn of(text: &str) -> Self {
        let mut h = DefaultHasher::new();
        let (mut words, mut links) = (0u32, 0u32);
        for word in text.split_whitespace() {
            let lower = word.to_lowercase();
            if lower.contains("http://") || lower.contains("https://") || lower.starts_with("www.")
            {
                links += 1;
            }
            lower.hash(&mut h);
            words += 1;
        }
        Self {
            hash: h.finish(),
            words,
            links,
            chars: u32::try_from(text.chars().count()).unwrap_or(u32::MAX),
        }
    }

    /// Link spam: several links, or a message that is mostly links.
    pub fn is_link_heavy(&self) -> bool {
        self.links >= 3 || (self.links >= 1 && self.links * 3 >= self.words.max(1))
    }
}

/// How long activity is remembered.
pub const WINDOW: Duration = Duration::from_secs(600);
/// Identical messages from one visitor that fire `repeated_message`.
const REPEATS: usize = 3;
/// Visitors sending the same text that fire `repeated_across_visitors`.
const SAME_TEXT_VISITORS: usize = 4;
/// Texts shorter than this are too common ("hi", "thanks") to compare across visitors.
const MIN_CHARS_ACROSS: u32 = 40;
/// Distinct visitor keys from one IP that fire `enumeration`.
const KEYS_PER_IP: usize = 10;
/// Rate-limit refusals from one IP that fire `rate_limited`.
const TRIPS: usize = 3;
/// Messages within [`BURST_SPAN`] of a ticket's creation that fire `burst_after_creation`.
const BURST_MESSAGES: u32 = 8;
/// How long after a ticket's creation its messages count as a burst.
pub const BURST_SPAN: Duration = Duration::from_secs(60);
/// Most keys any one map holds, by default.
pub const MAX_KEYS: usize = 50_000;
/// Most events any one window holds.
pub const MAX_EVENTS: usize = 64;
/// Most flags or blocks waiting for the database; more are dropped and counted.
const MAX_UNWRITTEN: usize = 10_000;

/// Who a score belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Subject {
    Visitor(String),
    Ip(IpAddr),
}

#[derive(Debug, Default)]
struct Score {
    /// Reason → when it last fired.
    reasons: HashMap<&'static str, Instant>,
    blocked_until: Option<Instant>,
}

/// What the rules decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Store this flag.
    Flag(SuspicionFlag),
    /// Block this IP.
    Block(NewBlock),
}

/// The scoring rules and the bounded windows they read. Plain code: unit-tested without
/// actors or a database.
#[derive(Debug)]
pub struct Rules {
    scores: HashMap<(Uuid, Subject), Score>,
    texts: HashMap<(Uuid, String), VecDeque<(Instant, u64)>>,
    /// Senders of a text and visitor keys of an IP, as keyed hashes of the visitor key
    /// (`visitor_hasher`): these windows are only ever counted for distinct
    /// visitors, which sorting up to 64 strings per message made a tenth of a POST's work.
    text_senders: HashMap<(Uuid, u64), VecDeque<(Instant, u64)>>,
    ip_keys: HashMap<(Uuid, IpAddr), VecDeque<(Instant, u64)>>,
    /// SipHash with this process's random key: strangers choose visitor keys, and must not
    /// be able to make two of them count as one.
    visitor_hasher: std::hash::RandomState,
    trips: HashMap<(Uuid, IpAddr), VecDeque<Instant>>,
    bursts: HashMap<(Uuid, Uuid), (Instant, u32)>,
    max_keys: usize,
    /// Keys forgotten because their map was full, not yet reported.
    evicted: u64,
}

impl Default for Rules {
    fn default() -> Self {
        Self::with_max_keys(MAX_KEYS)
    }
}

/// Context of one firing, for the flag row.
struct Firing<'a> {
    team_id: Uuid,
    reason: &'static str,
    detail: String,
    ticket_id: Option<Uuid>,
    visitor: Option<&'a str>,
    ip: IpAddr,
    settings: &'a SuspicionSettings,
}

impl Firing<'_> {
    /// The flag of a firing whose reason was new in a score's window, and the IP's block
    /// when a score reached the block threshold.
    fn verdicts(self, best: u8, block: bool, mut reasons: Vec<String>, out: &mut Vec<Verdict>) {
        out.push(Verdict::Flag(SuspicionFlag {
            team_id: self.team_id,
            ticket_id: self.ticket_id,
            distinct_id: self.visitor.map(str::to_owned),
            ip: Some(self.ip),
            reason: self.reason,
            score: i16::from(best),
            detail: self.detail,
            observed_at: Utc::now(),
        }));
        if block {
            reasons.sort_unstable();
            let minutes = self.settings.block_minutes;
            out.push(Verdict::Block(NewBlock {
                team_id: self.team_id,
                ip: self.ip,
                reason: format!("automatic: score {best} ({})", reasons.join(", ")),
                expires_at: Utc::now() + chrono::Duration::minutes(i64::from(minutes)),
            }));
        }
    }
}

/// What the windows hold for one message: the input of the message rules, counted by this
/// node's windows or by the shared ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct MessageCounts {
    /// This visitor's messages with this text in the window, this one included.
    same_text: usize,
    /// Distinct visitors who sent this text (texts of at least [`MIN_CHARS_ACROSS`] only).
    senders: Option<usize>,
    /// Distinct visitor keys from this IP.
    ip_keys: usize,
    /// Messages so far in the ticket's first minute, while it lasts (not for the opener).
    burst: Option<u32>,
}

/// The message rules: which reasons fire for `m` given what the windows hold.
fn message_reasons(m: &MessageSeen, c: &MessageCounts) -> Vec<(&'static str, String)> {
    let mut fired = Vec::new();
    if c.same_text >= REPEATS {
        fired.push((
            "repeated_message",
            format!("the same text {} times within 10 minutes", c.same_text),
        ));
    }
    if let Some(distinct) = c.senders.filter(|n| *n >= SAME_TEXT_VISITORS) {
        fired.push((
            "repeated_across_visitors",
            format!("the same text from {distinct} visitors within 10 minutes"),
        ));
    }
    if m.text.is_link_heavy() {
        fired.push((
            "link_density",
            format!("{} links in {} words", m.text.links, m.text.words),
        ));
    }
    if c.ip_keys >= KEYS_PER_IP {
        fired.push((
            "enumeration",
            format!("{} visitor ids from one IP within 10 minutes", c.ip_keys),
        ));
    }
    if let Some(n) = c.burst.filter(|n| *n >= BURST_MESSAGES) {
        fired.push((
            "burst_after_creation",
            format!("{n} messages in the first minute of a ticket"),
        ));
    }
    fired
}

/// The rate-limit rule: whether `trips` refusals from one IP in the window fire.
fn trips_reason(trips: usize, tier: Tier) -> Option<(&'static str, String)> {
    (trips >= TRIPS).then(|| {
        (
            "rate_limited",
            format!(
                "{trips} rate-limit refusals ({}) within 10 minutes",
                tier.as_str()
            ),
        )
    })
}

impl Rules {
    /// Rules whose maps each hold at most `max_keys` keys.
    pub fn with_max_keys(max_keys: usize) -> Self {
        Self {
            scores: HashMap::new(),
            texts: HashMap::new(),
            text_senders: HashMap::new(),
            ip_keys: HashMap::new(),
            visitor_hasher: std::hash::RandomState::new(),
            trips: HashMap::new(),
            bursts: HashMap::new(),
            max_keys: max_keys.max(1),
            evicted: 0,
        }
    }

    /// Applies the rules to one observation at `now`.
    pub fn observe(&mut self, obs: &Observation, now: Instant) -> Vec<Verdict> {
        let mut out = Vec::new();
        match obs {
            Observation::Honeypot {
                team_id,
                ip,
                settings,
            } => self.fire(
                Firing {
                    team_id: *team_id,
                    reason: "honeypot",
                    detail: "filled the hidden honeypot field".into(),
                    ticket_id: None,
                    visitor: None,
                    ip: *ip,
                    settings,
                },
                now,
                &mut out,
            ),
            Observation::RateLimited {
                team_id,
                tier,
                visitor,
                ip,
                settings,
            } => {
                let w = bounded_entry(
                    &mut self.trips,
                    (*team_id, *ip),
                    self.max_keys,
                    &mut self.evicted,
                );
                push(w, now, now, |t| *t);
                if let Some((reason, detail)) = trips_reason(w.len(), *tier) {
                    self.fire(
                        Firing {
                            team_id: *team_id,
                            reason,
                            detail,
                            ticket_id: None,
                            visitor: visitor.as_deref(),
                            ip: *ip,
                            settings,
                        },
                        now,
                        &mut out,
                    );
                }
            }
            Observation::Message(m) => self.message(m, now, &mut out),
        }
        out
    }

    fn message(&mut self, m: &MessageSeen, now: Instant, out: &mut Vec<Verdict>) {
        let team = m.team_id;
        let visitor = std::hash::BuildHasher::hash_one(&self.visitor_hasher, m.visitor.as_str());
        let mut counts = MessageCounts::default();

        let own = bounded_entry(
            &mut self.texts,
            (team, m.visitor.clone()),
            self.max_keys,
            &mut self.evicted,
        );
        push(own, (now, m.text.hash), now, |(t, _)| *t);
        counts.same_text = own.iter().filter(|(_, h)| *h == m.text.hash).count();

        if m.text.chars >= MIN_CHARS_ACROSS {
            let senders = bounded_entry(
                &mut self.text_senders,
                (team, m.text.hash),
                self.max_keys,
                &mut self.evicted,
            );
            push(senders, (now, visitor), now, |(t, _)| *t);
            counts.senders = Some(distinct_visitors(senders));
        }

        let keys = bounded_entry(
            &mut self.ip_keys,
            (team, m.ip),
            self.max_keys,
            &mut self.evicted,
        );
        push(keys, (now, visitor), now, |(t, _)| *t);
        counts.ip_keys = distinct_visitors(keys);

        if m.opened_ticket {
            let key = (team, m.ticket_id);
            make_room(&mut self.bursts, &key, self.max_keys, &mut self.evicted);
            self.bursts.insert(key, (now, 1));
        } else if let Some((opened, n)) = self.bursts.get_mut(&(team, m.ticket_id)) {
            if now.duration_since(*opened) <= BURST_SPAN {
                *n += 1;
                counts.burst = Some(*n);
            }
        }

        let fired = message_reasons(m, &counts);
        for (reason, detail) in fired {
            self.fire(
                Firing {
                    team_id: team,
                    reason,
                    detail,
                    ticket_id: Some(m.ticket_id),
                    visitor: Some(&m.visitor),
                    ip: m.ip,
                    settings: &m.settings,
                },
                now,
                out,
            );
        }
    }

    /// Adds a rule's weight to the visitor and the IP (once per window per reason each),
    /// records a flag with the higher score and blocks the IP at the block threshold.
    fn fire(&mut self, f: Firing<'_>, now: Instant, out: &mut Vec<Verdict>) {
        let mut subjects = vec![Subject::Ip(f.ip)];
        if let Some(v) = f.visitor {
            subjects.push(Subject::Visitor(v.to_owned()));
        }
        let (mut best, mut new, mut block) = (0u8, false, false);
        let mut reasons: Vec<&'static str> = Vec::new();
        for subject in subjects {
            let score = bounded_entry(
                &mut self.scores,
                (f.team_id, subject),
                self.max_keys,
                &mut self.evicted,
            );
            score
                .reasons
                .retain(|_, at| now.duration_since(*at) <= WINDOW);
            new |= score.reasons.insert(f.reason, now).is_none();
            let total: u32 = score
                .reasons
                .keys()
                .map(|r| u32::from(f.settings.weights.of(r)))
                .sum();
            let total = total.min(100) as u8;
            if total > best {
                best = total;
                reasons = score.reasons.keys().copied().collect();
            }
            let blocked = score.blocked_until.is_some_and(|until| until > now);
            if total >= f.settings.block_threshold && !blocked {
                score.blocked_until =
                    Some(now + Duration::from_secs(u64::from(f.settings.block_minutes) * 60));
                block = true;
            }
        }
        if !new {
            return; // already counted in this window
        }
        f.verdicts(
            best,
            block,
            reasons.iter().map(|r| (*r).to_owned()).collect(),
            out,
        );
    }

    /// Forgets everything older than the window.
    pub fn sweep(&mut self, now: Instant) {
        let fresh = |t: &Instant| now.duration_since(*t) <= WINDOW;
        self.scores.retain(|_, s| {
            s.reasons.retain(|_, at| fresh(at));
            !s.reasons.is_empty() || s.blocked_until.is_some_and(|u| u > now)
        });
        self.texts.retain(|_, w| {
            w.retain(|(t, _)| fresh(t));
            !w.is_empty()
        });
        self.text_senders.retain(|_, w| {
            w.retain(|(t, _)| fresh(t));
            !w.is_empty()
        });
        self.ip_keys.retain(|_, w| {
            w.retain(|(t, _)| fresh(t));
            !w.is_empty()
        });
        self.trips.retain(|_, w| {
            w.retain(fresh);
            !w.is_empty()
        });
        self.bursts
            .retain(|_, (opened, _)| now.duration_since(*opened) <= BURST_SPAN);
    }

    /// Keys forgotten because their map was full since the last call.
    pub fn take_evictions(&mut self) -> u64 {
        std::mem::take(&mut self.evicted)
    }

    /// How many keys are remembered, to show the bound holds.
    pub fn tracked_keys(&self) -> usize {
        self.scores.len()
            + self.texts.len()
            + self.text_senders.len()
            + self.ip_keys.len()
            + self.trips.len()
            + self.bursts.len()
    }
}

/// Appends to a window, dropping what is too old or beyond [`MAX_EVENTS`].
/// How many distinct visitors a window of (time, visitor hash) holds (at most `MAX_EVENTS`).
fn distinct_visitors(window: &VecDeque<(Instant, u64)>) -> usize {
    let mut hashes: Vec<u64> = window.iter().map(|(_, v)| *v).collect();
    hashes.sort_unstable();
    hashes.dedup();
    hashes.len()
}

fn push<T>(window: &mut VecDeque<T>, item: T, now: Instant, at: impl Fn(&T) -> Instant) {
    window.push_back(item);
    while window
        .front()
        .is_some_and(|e| now.duration_since(at(e)) > WINDOW)
        || window.len() > MAX_EVENTS
    {
        window.pop_front();
    }
}

/// When an entry was last active: what a full map evicts by.
trait LastActive {
    /// The newest instant the entry holds (`None`: empty).
    fn last_active(&self) -> Option<Instant>;
}

impl<T> LastActive for VecDeque<(Instant, T)> {
    fn last_active(&self) -> Option<Instant> {
        self.back().map(|(t, _)| *t)
    }
}

impl LastActive for VecDeque<Instant> {
    fn last_active(&self) -> Option<Instant> {
        self.back().copied()
    }
}

impl LastActive for Score {
    fn last_active(&self) -> Option<Instant> {
        self.reasons.values().max().copied()
    }
}

impl LastActive for (Instant, u32) {
    fn last_active(&self) -> Option<Instant> {
        Some(self.0)
    }
}

/// The entry for `key`, making room first when the map is full (see [`make_room`]).
fn bounded_entry<'a, K: Hash + Eq + Clone, V: Default + LastActive>(
    map: &'a mut HashMap<K, V>,
    key: K,
    max_keys: usize,
    evicted: &mut u64,
) -> &'a mut V {
    make_room(map, &key, max_keys, evicted);
    map.entry(key).or_default()
}

/// Before `key` is added to a full map, forgets its least recently active sixteenth (one
/// O(n) pass per n/16 new keys), so a flood of new keys can neither grow the map nor stop a
/// new key from being tracked. Adds the number forgotten to `evicted`.
fn make_room<K: Hash + Eq + Clone, V: LastActive>(
    map: &mut HashMap<K, V>,
    key: &K,
    max_keys: usize,
    evicted: &mut u64,
) {
    if map.len() < max_keys || map.contains_key(key) {
        return;
    }
    let target = max_keys - max_keys / 16;
    let excess = (map.len() + 1).saturating_sub(target).clamp(1, map.len());
    let mut by_age: Vec<(Option<Instant>, &K)> =
        map.iter().map(|(k, v)| (v.last_active(), k)).collect();
    by_age.select_nth_unstable_by_key(excess - 1, |(t, _)| *t);
    let oldest: Vec<K> = by_age[..excess].iter().map(|(_, k)| (*k).clone()).collect();
    for k in &oldest {
        map.remove(k);
    }
    *evicted += oldest.len() as u64;
}

/// Most observations waiting for the shared store; more are scored by this node alone
/// (counted as `scored_alone`).
const MAX_PENDING: usize = 4096;
/// Most observations in one round trip to the shared store.
const MAX_BATCH: usize = 512;
/// A round trip (both calls) that takes longer counts as a failure of the shared store.
const SHARED_DEADLINE: Duration = Duration::from_secs(2);
/// How often a node scoring alone probes the shared store.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The actor holding [`Rules`] and writing their verdicts.
pub struct SuspicionDetector {
    rules: Rules,
    flags: Vec<SuspicionFlag>,
    blocks: Vec<NewBlock>,
    writing: bool,
    store: Arc<dyn Store>,
    stats: Arc<ActorStats>,
    counters: Arc<Counters>,
    sharing: Option<Sharing>,
}

/// The detector's side of shared windows: the store and the observations waiting for it.
struct Sharing {
    windows: Arc<dyn SharedWindows>,
    /// Each with what this node's own windows decided, used if the store fails.
    pending: VecDeque<(Observation, Vec<Verdict>)>,
    in_flight: bool,
    probing: bool,
}

/// Totals for metrics.
#[derive(Debug, Default)]
pub struct Counters {
    flags: AtomicU64,
    blocks: AtomicU64,
    /// Whether a shared store is configured.
    shared: AtomicBool,
    /// Whether the shared store answered last time.
    shared_up: AtomicBool,
    /// Round trips to the shared store that failed.
    shared_failures: AtomicU64,
    /// Observations scored on this node's windows alone although a store is configured.
    scored_alone: AtomicU64,
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

/// Writes pending verdicts now; answers when they are stored (shutdown and tests).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FlushFlags;

impl SuspicionDetector {
    /// Starts the detector on the current arbiter.
    pub fn start(store: Arc<dyn Store>) -> SuspicionHandle {
        Self::start_with(store, MAX_KEYS)
    }

    /// Starts the detector with maps of at most `max_keys` keys each.
    pub fn start_with(store: Arc<dyn Store>, max_keys: usize) -> SuspicionHandle {
        Self::start_shared(store, max_keys, None)
    }

    /// Starts the detector, sharing its windows through `windows` when given (several nodes
    /// then score one spammer together).
    pub fn start_shared(
        store: Arc<dyn Store>,
        max_keys: usize,
        windows: Option<Arc<dyn SharedWindows>>,
    ) -> SuspicionHandle {
        let stats = Arc::new(ActorStats::default());
        let counters = Arc::new(Counters::default());
        counters.shared.store(windows.is_some(), Relaxed);
        counters.shared_up.store(windows.is_some(), Relaxed);
        let addr = SuspicionDetector {
            rules: Rules::with_max_keys(max_keys),
            flags: Vec::new(),
            blocks: Vec::new(),
            writing: false,
            store,
            stats: Arc::clone(&stats),
            counters: Arc::clone(&counters),
            sharing: windows.map(|windows| Sharing {
                windows,
                pending: VecDeque::new(),
                in_flight: false,
                probing: false,
            }),
        }
        .start();
        SuspicionHandle {
            addr,
            stats,
            counters,
        }
    }

    fn write(&mut self, ctx: &mut Context<Self>) {
        if self.writing || (self.flags.is_empty() && self.blocks.is_empty()) {
            return;
        }
        self.writing = true;
        let flags = std::mem::take(&mut self.flags);
        let blocks = std::mem::take(&mut self.blocks);
        let store = Arc::clone(&self.store);
        let write = async move {
            let res = match store.record_blocks(&blocks).await {
                Ok(()) => store.record_flags(&flags).await,
                Err(e) => Err(e),
            };
            (res, flags, blocks)
        };
        ctx.spawn(write.into_actor(self).map(|(res, flags, blocks), act, _| {
            act.writing = false;
            if let Err(e) = res {
                act.stats.error();
                tracing::warn!(error = %e, flags = flags.len(), "could not store suspicion verdicts; will retry");
                let room = MAX_UNWRITTEN.saturating_sub(act.flags.len());
                act.flags.extend(flags.into_iter().take(room));
                let room = MAX_UNWRITTEN.saturating_sub(act.blocks.len());
                act.blocks.extend(blocks.into_iter().take(room));
            }
        }));
    }

    /// Queues verdicts for the database (blocks at once); beyond the bound they are dropped
    /// and counted.
    fn emit(&mut self, verdicts: Vec<Verdict>, ctx: &mut Context<Self>) {
        let mut urgent = false;
        for verdict in verdicts {
            match verdict {
                Verdict::Flag(f) if self.flags.len() < MAX_UNWRITTEN => {
                    self.counters.flags.fetch_add(1, Relaxed);
                    self.flags.push(f);
                }
                Verdict::Block(b) if self.blocks.len() < MAX_UNWRITTEN => {
                    self.counters.blocks.fetch_add(1, Relaxed);
                    self.blocks.push(b);
                    urgent = true;
                }
                _ => self.stats.dropped(),
            }
        }
        if urgent {
            self.write(ctx);
        }
    }

    /// Sends the next batch of waiting observations to the shared store (one batch in
    /// flight); its verdicts replace the local ones, or, if the store fails, the local
    /// verdicts of everything waiting are used and the node scores alone.
    fn send_batch(&mut self, ctx: &mut Context<Self>) {
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
    fn probe(&mut self, ctx: &mut Context<Self>) {
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

impl Actor for SuspicionDetector {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.stats.started();
        ctx.set_mailbox_capacity(4096);
        ctx.run_interval(Duration::from_millis(250), |act, ctx| act.write(ctx));
        ctx.run_interval(Duration::from_secs(60), |act, _| {
            act.rules.sweep(Instant::now())
        });
        if self.sharing.is_some() {
            ctx.run_interval(PROBE_EVERY, |act, ctx| act.probe(ctx));
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.stats.stopped();
    }
}

impl Handler<Observation> for SuspicionDetector {
    type Result = ();

    fn handle(&mut self, obs: Observation, ctx: &mut Self::Context) {
        self.stats.handled();
        // The local windows always learn, so that a node left alone scores on what it saw.
        let verdicts = self.rules.observe(&obs, Instant::now());
        self.stats.evicted_many(self.rules.take_evictions());
        if let Some(sharing) = self.sharing.as_mut() {
            if self.counters.shared_up.load(Relaxed) && sharing.pending.len() < MAX_PENDING {
                sharing.pending.push_back((obs, verdicts));
                self.send_batch(ctx);
                return;
            }
            self.counters.scored_alone.fetch_add(1, Relaxed);
        }
        self.emit(verdicts, ctx);
    }
}

impl Handler<FlushFlags> for SuspicionDetector {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: FlushFlags, _: &mut Self::Context) -> Self::Result {
        let flags = std::mem::take(&mut self.flags);
        let blocks = std::mem::take(&mut self.blocks);
        let store = Arc::clone(&self.store);
        Box::pin(
            async move {
                let b = store.record_blocks(&blocks).await;
                let f = store.record_flags(&flags).await;
                b.and(f)
            }
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
    counters: Arc<Counters>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([203, 0, 113, n])
    }

    fn settings() -> SuspicionSettings {
        SuspicionSettings::default()
    }

    fn msg(visitor: &str, ip_n: u8, ticket: Uuid, opened: bool, text: &str) -> Observation {
        Observation::Message(MessageSeen {
            team_id: Uuid::nil(),
            ticket_id: ticket,
            opened_ticket: opened,
            visitor: visitor.into(),
            ip: ip(ip_n),
            text: TextFeatures::of(text),
            settings: settings(),
        })
    }

    fn reasons(v: &[Verdict]) -> Vec<&'static str> {
        v.iter()
            .filter_map(|v| match v {
                Verdict::Flag(f) => Some(f.reason),
                Verdict::Block(_) => None,
            })
            .collect()
    }

    fn blocks(v: &[Verdict]) -> usize {
        v.iter().filter(|v| matches!(v, Verdict::Block(_))).count()
    }

    #[test]
    fn text_features_count_links_and_ignore_case_and_spacing() {
        let a = TextFeatures::of("Buy NOW at https://x.test");
        let b = TextFeatures::of("buy now   at HTTPS://X.TEST");
        assert_eq!(a.hash, b.hash);
        assert_eq!((a.words, a.links), (4, 1));
        assert!(!TextFeatures::of(
            "my order https://shop.test/o/1 never arrived, can you check it please"
        )
        .is_link_heavy());
        assert!(TextFeatures::of("https://a.test https://b.test https://c.test").is_link_heavy());
        assert!(TextFeatures::of("www.cheap.test").is_link_heavy());
    }

    #[test]
    fn a_honeypot_hit_scores_high_enough_to_block_the_ip() {
        let mut r = Rules::default();
        let v = r.observe(
            &Observation::Honeypot {
                team_id: Uuid::nil(),
                ip: ip(1),
                settings: settings(),
            },
            Instant::now(),
        );
        assert_eq!(reasons(&v), ["honeypot"]);
        assert_eq!(blocks(&v), 1);
    }

    #[test]
    fn a_normal_conversation_raises_nothing() {
        let mut r = Rules::default();
        let now = Instant::now();
        let t = Uuid::now_v7();
        let mut all = vec![];
        for (i, text) in [
            "Hi, my parcel is late",
            "Order 1234, placed Monday",
            "see https://shop.test/o/1234 for the order",
            "thanks!",
        ]
        .iter()
        .enumerate()
        {
            all.extend(r.observe(&msg("ann@example.com", 1, t, i == 0, text), now));
        }
        assert!(all.is_empty(), "{all:?}");
    }

    #[test]
    fn a_repeating_link_spammer_is_flagged_then_blocked() {
        let mut r = Rules::default();
        let now = Instant::now();
        let t = Uuid::now_v7();
        let spam = "CHEAP PILLS https://a.test https://b.test https://c.test";
        let mut all = vec![];
        for i in 0..3 {
            all.extend(r.observe(&msg("bot-1@x.test", 9, t, i == 0, spam), now));
        }
        assert_eq!(reasons(&all), ["link_density", "repeated_message"]);
        let scores: Vec<i16> = all
            .iter()
            .filter_map(|v| match v {
                Verdict::Flag(f) => Some(f.score),
                _ => None,
            })
            .collect();
        assert_eq!(scores, [50, 90], "scores add up per visitor");
        assert_eq!(blocks(&all), 1, "90 reaches the block threshold of 80");
        for _ in 0..3 {
            all.extend(r.observe(
                &Observation::RateLimited {
                    team_id: Uuid::nil(),
                    tier: Tier::MessageDistinctId,
                    visitor: Some("bot-1@x.test".into()),
                    ip: ip(9),
                    settings: settings(),
                },
                now,
            ));
        }
        assert!(reasons(&all).contains(&"rate_limited"));
    }

    #[test]
    fn many_visitor_ids_from_one_ip_is_enumeration() {
        let mut r = Rules::default();
        let now = Instant::now();
        let mut all = vec![];
        for i in 0..KEYS_PER_IP {
            all.extend(r.observe(
                &msg(&format!("user{i}@x.test"), 7, Uuid::now_v7(), true, "hello"),
                now,
            ));
        }
        assert_eq!(reasons(&all), ["enumeration"]);
    }

    #[test]
    fn the_same_text_from_several_visitors_is_flagged_but_short_greetings_are_not() {
        let mut r = Rules::default();
        let now = Instant::now();
        let mut all = vec![];
        for i in 0..5u8 {
            all.extend(r.observe(
                &msg(
                    &format!("v{i}@x.test"),
                    10 + i,
                    Uuid::now_v7(),
                    true,
                    "Thanks for looking into it.",
                ),
                now,
            ));
        }
        assert!(all.is_empty(), "common short phrases are not a campaign");
        for i in 0..4u8 {
            all.extend(r.observe(
                &msg(
                    &format!("v{i}@x.test"),
                    10 + i,
                    Uuid::now_v7(),
                    true,
                    "Earn money fast working from home today, ask me how",
                ),
                now,
            ));
        }
        assert_eq!(reasons(&all), ["repeated_across_visitors"]);
    }

    #[test]
    fn a_burst_right_after_opening_a_ticket_is_flagged() {
        let mut r = Rules::default();
        let now = Instant::now();
        let t = Uuid::now_v7();
        let mut all = vec![];
        for i in 0..BURST_MESSAGES {
            all.extend(r.observe(
                &msg("fast@x.test", 3, t, i == 0, &format!("message number {i}")),
                now,
            ));
        }
        assert_eq!(reasons(&all), ["burst_after_creation"]);
    }

    #[test]
    fn per_team_weights_and_thresholds_apply() {
        let mut r = Rules::default();
        let mut s = settings();
        s.weights.honeypot = 10;
        let v = r.observe(
            &Observation::Honeypot {
                team_id: Uuid::nil(),
                ip: ip(1),
                settings: s,
            },
            Instant::now(),
        );
        assert_eq!(blocks(&v), 0);
        match &v[0] {
            Verdict::Flag(f) => assert_eq!(f.score, 10),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_honeypot_hit_is_scored_against_the_ip_only() {
        let mut r = Rules::default();
        let v = r.observe(
            &Observation::Honeypot {
                team_id: Uuid::nil(),
                ip: ip(1),
                settings: settings(),
            },
            Instant::now(),
        );
        let Some(Verdict::Flag(f)) = v.first() else {
            panic!("a flag: {v:?}");
        };
        assert_eq!(f.distinct_id, None);
        assert!(r.scores.keys().all(|(_, s)| matches!(s, Subject::Ip(_))));
    }

    #[test]
    fn a_full_map_forgets_its_oldest_keys_so_new_visitors_are_still_scored() {
        let mut r = Rules::with_max_keys(32);
        let start = Instant::now();
        for i in 0..100u8 {
            r.observe(
                &Observation::Honeypot {
                    team_id: Uuid::nil(),
                    ip: ip(i),
                    settings: settings(),
                },
                start + Duration::from_millis(u64::from(i)),
            );
            assert!(r.scores.len() <= 32, "the score map stays bounded");
        }
        assert!(
            r.take_evictions() >= 68,
            "the overflow was evicted and counted"
        );
        assert!(
            r.scores.contains_key(&(Uuid::nil(), Subject::Ip(ip(99)))),
            "the newest key is kept"
        );
        assert!(
            !r.scores.contains_key(&(Uuid::nil(), Subject::Ip(ip(0)))),
            "the oldest key went first"
        );
        let v = r.observe(
            &msg(
                "newcomer@x.test",
                200,
                Uuid::now_v7(),
                true,
                "https://a.test https://b.test https://c.test",
            ),
            start + Duration::from_secs(1),
        );
        assert_eq!(reasons(&v), ["link_density"], "the newcomer is scored");
    }

    #[test]
    fn old_activity_is_forgotten_and_memory_is_bounded() {
        let mut r = Rules::default();
        let start = Instant::now();
        for i in 0..(MAX_KEYS + 100) {
            r.observe(
                &msg(&format!("v{i}"), (i % 250) as u8, Uuid::nil(), false, "x"),
                start,
            );
        }
        assert!(
            r.texts.len() <= MAX_KEYS && r.ip_keys.len() <= MAX_KEYS && r.scores.len() <= MAX_KEYS
        );
        r.sweep(start + WINDOW + Duration::from_secs(1));
        assert_eq!(r.tracked_keys(), 0);
    }
}
