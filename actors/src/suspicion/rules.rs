//! The scoring rules: thresholds, the windows they read, the scores they add up and the
//! verdicts (flags and blocks) they raise. Plain code, unit-tested without actors or a
//! database; the shared-window path ([`super::sharing`]) applies the same rules to counts.

use super::observation::{MessageSeen, Observation};
use super::windows::{bounded_entry, distinct_visitors, make_room, push};
use crate::domain::SuspicionSettings;
use crate::rate_limiter::Tier;
use crate::store::{NewBlock, SuspicionFlag};
use chrono::Utc;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long activity is remembered.
pub const WINDOW: Duration = Duration::from_secs(600);
/// Identical messages from one visitor that fire `repeated_message`.
const REPEATS: usize = 3;
/// Visitors sending the same text that fire `repeated_across_visitors`.
const SAME_TEXT_VISITORS: usize = 4;
/// Texts shorter than this are too common ("hi", "thanks") to compare across visitors.
pub(super) const MIN_CHARS_ACROSS: u32 = 40;
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

/// Who a score belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Subject {
    Visitor(String),
    Ip(IpAddr),
}

#[derive(Debug, Default)]
pub(super) struct Score {
    /// Reason → when it last fired.
    pub(super) reasons: HashMap<&'static str, Instant>,
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
pub(super) struct Firing<'a> {
    pub(super) team_id: Uuid,
    pub(super) reason: &'static str,
    pub(super) detail: String,
    pub(super) ticket_id: Option<Uuid>,
    pub(super) visitor: Option<&'a str>,
    pub(super) ip: IpAddr,
    pub(super) settings: &'a SuspicionSettings,
}

impl Firing<'_> {
    /// The flag of a firing whose reason was new in a score's window, and the IP's block
    /// when a score reached the block threshold.
    pub(super) fn verdicts(
        self,
        best: u8,
        block: bool,
        mut reasons: Vec<String>,
        out: &mut Vec<Verdict>,
    ) {
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
pub(super) struct MessageCounts {
    /// This visitor's messages with this text in the window, this one included.
    pub(super) same_text: usize,
    /// Distinct visitors who sent this text (texts of at least [`MIN_CHARS_ACROSS`] only).
    pub(super) senders: Option<usize>,
    /// Distinct visitor keys from this IP.
    pub(super) ip_keys: usize,
    /// Messages so far in the ticket's first minute, while it lasts (not for the opener).
    pub(super) burst: Option<u32>,
}

/// The message rules: which reasons fire for `m` given what the windows hold.
pub(super) fn message_reasons(m: &MessageSeen, c: &MessageCounts) -> Vec<(&'static str, String)> {
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
pub(super) fn trips_reason(trips: usize, tier: Tier) -> Option<(&'static str, String)> {
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

#[cfg(test)]
mod tests;
