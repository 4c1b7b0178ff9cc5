//! What request handlers report to the detector: the observations and the features of a
//! message text the rules look at (never the text itself).

use crate::domain::SuspicionSettings;
use crate::rate_limiter::Tier;
use actix::prelude::*;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
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
