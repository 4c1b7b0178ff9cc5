//! Server-Sent Events: `GET /api/conversations/widget/stream/{ticket_id}`. A reply reaches
//! the visitor the moment it is committed, not at the next poll.
//!
//! The stream first replays what the client missed (after `Last-Event-ID` or `after`), then
//! forwards the ticket actor's events. Each message event's id is its `created_at`, so a
//! reconnect resumes exactly where it stopped. The actor never waits for a stream: a client
//! that falls behind is cut off and reconnects with replay. Heartbeats keep proxies from
//! closing idle streams.
//!
//! A stream holds a connection and memory for as long as it lives, so it is bounded: at most
//! one page of replay per connect (a client further behind gets the page, the stream ends,
//! and its reconnect resumes after it), a number of open streams per client IP (IPv6 by its
//! /64), per team and in total ([`StreamSlots`]; beyond them `429`), and a maximum lifetime,
//! after which it ends and the client reconnects with `Last-Event-ID`, losing nothing. Its
//! authorisation is checked again every second for as long as it is open ([`Grant`]): a
//! block, a rotated token, the widget switched off, another identity mode or secret, or an
//! origin taken off the team's list ends it. Only streams pay for that check, not polls.

use super::errors::ApiError;
use super::extract::{self, widget_team_or};
use super::openapi as api;
use super::widget::{admit, read_check, visitor_param, WidgetMessage};
use super::AppState;
use crate::config::StreamSettings;
use crate::teams::Team;
use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use colloquy_actors::domain::{
    format_utc, parse_timestamp, IdentityVerification, Limit, VisitorKey,
};
use colloquy_actors::rate_limiter::{RateCheck, Tier};
use colloquy_actors::store::StoredMessage;
use colloquy_actors::ticket::{Subscription, TicketEvent};
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How often an open stream checks its authorisation and lifetime.
const RECHECK: Duration = Duration::from_secs(1);
/// Every how many checks a stream sends a comment line (15 s), so proxies keep it open.
const HEARTBEAT_EVERY: u32 = 15;
/// Longest one authorisation check may wait for the database; past it the stream goes on
/// (an outage revokes nothing, as it refuses no valid token) and checks again next time.
const RECHECK_TIMEOUT: Duration = Duration::from_millis(800);
/// `Retry-After` of a stream refused by a cap: streams end and free slots all the time.
const CAP_RETRY_AFTER: Duration = Duration::from_secs(5);

/// `GET /api/conversations/widget/stream/{ticket_id}?distinct_id=…&token=…[&after=…]`, or
/// `widget_session_id=…` instead of `distinct_id` for a ticket opened through posthog-js.
#[utoipa::path(
    get,
    path = "/api/conversations/widget/stream/{ticket_id}",
    tag = "widget",
    params(
        ("ticket_id" = Uuid, Path, description = "The ticket"),
        ("distinct_id" = Option<String>, Query, description = "The visitor (documented-surface tickets)"),
        ("widget_session_id" = Option<Uuid>, Query, description = "Instead of distinct_id: the widget session a posthog-js ticket was opened with"),
        ("identity_hash" = Option<String>, Query, description = "hex(HMAC-SHA256(identity_secret, distinct_id)), as the team requires"),
        ("token" = Option<String>, Query, description = "The widget token, for EventSource clients that cannot send headers"),
        ("after" = Option<String>, Query, format = DateTime, description = "Only messages strictly after this RFC 3339 timestamp"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id (an RFC 3339 timestamp)")
    ),
    responses(
        (status = 200, description = "Server-Sent Events: `status`, `message` (a WidgetMessage), `typing`, `read`. At most 500 messages are replayed per connect (with more to follow the stream ends after them); a stream ends after STREAM_MAX_LIFETIME, or once its authorisation lapses; reconnect with Last-Event-ID", content_type = "text/event-stream"),
        (status = 400, description = "invalid_json or validation_error (`field` names the field)", body = api::ErrorBody),
        (status = 401, description = "invalid_token: missing or unknown token or key", body = api::ErrorBody),
        (status = 403, description = "conversations_disabled, origin_not_allowed, forbidden (another visitor's ticket), identity_required, identity_invalid or blocked", body = api::ErrorBody),
        (status = 404, description = "not_found: unknown ticket (or another team's)", body = api::ErrorBody),
        (status = 429, description = "rate_limited: a read budget, or too many open streams from this IP (IPv6: its /64), for this team or in total; Retry-After header", body = api::ErrorBody),
        (status = 503, description = "unavailable (database unreachable) or overloaded (load shed); Retry-After header", body = api::ErrorBody)
    ),
    security(("widget_token" = []))
)]
pub async fn stream(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let q = extract::query(&req)?;
    let team = widget_team_or(&req, &state, q.get("token").map(String::as_str)).await?;
    tracing::Span::current().record("team_id", tracing::field::display(team.id));
    let session = q
        .get("widget_session_id")
        .filter(|s| !s.is_empty() && !q.contains_key("distinct_id"));
    let (key, budget, visitor) = match session {
        Some(raw) => {
            if team.identity_verification == IdentityVerification::Required {
                return Err(ApiError::IdentityRequired);
            }
            let sid = extract::uuid(raw, "widget_session_id")?;
            let budget = RateCheck {
                tier: Tier::WidgetSession,
                key: sid.to_string(),
                limit: Limit::per_minute(team.rate_limits.widget_session_per_minute),
            };
            (
                VisitorKey::WidgetSession(sid),
                budget,
                format!("session:{sid}"),
            )
        }
        None => {
            let (distinct_id, key) = visitor_param(&team, &q)?;
            let budget = read_check(&team, "stream", &distinct_id);
            (key, budget, distinct_id.to_string())
        }
    };
    let ticket_id = extract::uuid(&path, "ticket_id")?;
    let resume = resume_point(&req, q.get("after").map(String::as_str))?;
    let ip = extract::peer_ip(&req, &state);
    let charged = admit(&state, &team, vec![budget], ip, Some(visitor.as_str())).await?;
    let open = OpenStream::acquire(&state, team.id, ip)?;
    let sub = state
        .tickets
        .subscribe(team.id, ticket_id, Some(key), resume, false)
        .await;
    let sub = charged.settle(sub)?;
    let grant = Grant {
        token: stream_token(&req, q.get("token").map(String::as_str)),
        origin: [header::ORIGIN, header::REFERER]
            .iter()
            .find_map(|h| req.headers().get(h).and_then(|v| v.to_str().ok()))
            .map(str::to_owned),
        team,
        ip,
        visitor,
        state: state.clone(),
    };
    Ok(HttpResponse::Ok()
        .insert_header(("content-type", "text/event-stream"))
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(events(sub, resume, grant, open)))
}

/// Where a (re)connecting stream resumes: after its `Last-Event-ID`, else after `after`.
/// Shared by the visitor's and the operators' streams.
pub(super) fn resume_point(
    req: &HttpRequest,
    after: Option<&str>,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    Ok(req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
        .map(|v| parse_timestamp(v.trim(), "Last-Event-ID"))
        .or_else(|| after.map(|a| parse_timestamp(a, "after")))
        .transpose()?)
}

/// The widget token a stream was opened with, as [`extract::widget_team_or`] reads it.
fn stream_token(req: &HttpRequest, fallback: Option<&str>) -> String {
    req.headers()
        .get("x-conversations-token")
        .and_then(|v| v.to_str().ok())
        .or(fallback)
        .map(str::trim)
        .unwrap_or_default()
        .to_owned()
}

/// What an open stream was authorised with, checked again while it lives.
struct Grant {
    token: String,
    origin: Option<String>,
    /// The team as it was when the stream was authorised.
    team: Arc<Team>,
    ip: IpAddr,
    /// The key blocks are matched on (`distinct_id` or `session:<uuid>`), as at admission.
    visitor: String,
    state: web::Data<AppState>,
}

impl Grant {
    /// Whether the stream may stay open: the token still names the same team (the cache
    /// forgets a team when its settings or token change), with the widget on, the same
    /// identity mode and secret (a hash of the old secret proves nothing now), the origin
    /// still allowed, and no block on the IP or visitor.
    async fn holds(&self) -> bool {
        let state = &self.state;
        let lookup = state.teams.by_public_token(&state.store, &self.token);
        let team = match tokio::time::timeout(RECHECK_TIMEOUT, lookup).await {
            Ok(Ok(Some(team))) => team,
            Ok(Ok(None)) => return false,
            Ok(Err(_)) | Err(_) => return true,
        };
        let was = &self.team;
        team.id == was.id
            && team.conversations_enabled
            && team.identity_verification == was.identity_verification
            && team.identity_secret == was.identity_secret
            && team.allowed_widget_domains.permits(self.origin.as_deref())
            && !state
                .blocks
                .is_blocked(team.id, self.ip, Some(self.visitor.as_str()))
    }
}

/// Which cap refused a stream; the label it is counted under in
/// `colloquy_rate_limited_total{tier}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamCap {
    /// Streams per client IP (IPv6: per /64).
    Ip,
    /// Streams per team.
    Team,
    /// Streams in the process.
    Total,
}

impl StreamCap {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamCap::Ip => "stream_ip",
            StreamCap::Team => "stream_team",
            StreamCap::Total => "stream_total",
        }
    }
}

/// The key a client IP is counted under: IPv4 as it is, IPv6 by its /64 (what one
/// subscriber is given: rotating the low 64 bits buys no new streams), an IPv4-mapped
/// IPv6 address as its IPv4 address.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    per_team: HashMap<Uuid, usize>,
}

/// The open streams per client IP, per team and in total, so no one client or tenant can
/// hold every connection. A stream takes a [`StreamSlot`] before it subscribes and gives
/// it back when it ends. Entries exist only while streams are open, so the maps are
/// bounded by the total cap.
#[derive(Clone)]
pub struct StreamSlots {
    limits: StreamSettings,
    counts: Arc<Mutex<Counts>>,
}

impl StreamSlots {
    /// Slots bounded by `limits`.
    pub fn new(limits: StreamSettings) -> Self {
        Self {
            limits,
            counts: Arc::default(),
        }
    }

    /// How long a stream may live.
    pub fn max_lifetime(&self) -> Duration {
        self.limits.max_lifetime
    }

    /// Takes a slot for a stream of `team` from `ip`, or names the cap that is full.
    pub fn acquire(&self, team: Uuid, ip: IpAddr) -> Result<StreamSlot, StreamCap> {
        let ip = ip_key(ip);
        let mut c = self.lock();
        if c.total >= self.limits.total {
            return Err(StreamCap::Total);
        }
        if c.per_team.get(&team).copied().unwrap_or(0) >= self.limits.per_team {
            return Err(StreamCap::Team);
        }
        if c.per_ip.get(&ip).copied().unwrap_or(0) >= self.limits.per_ip {
            return Err(StreamCap::Ip);
        }
        c.total += 1;
        *c.per_team.entry(team).or_default() += 1;
        *c.per_ip.entry(ip).or_default() += 1;
        Ok(StreamSlot {
            slots: self.clone(),
            team,
            ip,
        })
    }

    /// Open streams now: in total, of a team, from an IP's key.
    #[cfg(test)]
    fn open(&self, team: Uuid, ip: IpAddr) -> (usize, usize, usize) {
        let c = self.lock();
        (
            c.total,
            c.per_team.get(&team).copied().unwrap_or(0),
            c.per_ip.get(&ip_key(ip)).copied().unwrap_or(0),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent even if a holder panicked: each change is one step.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn release(&self, team: Uuid, ip: IpAddr) {
        let mut c = self.lock();
        c.total = c.total.saturating_sub(1);
        fn down<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K) {
            if let std::collections::hash_map::Entry::Occupied(mut e) = map.entry(key) {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
        down(&mut c.per_team, team);
        down(&mut c.per_ip, ip);
    }
}

/// One open stream's place under the caps; given back when dropped.
pub struct StreamSlot {
    slots: StreamSlots,
    team: Uuid,
    ip: IpAddr,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.slots.release(self.team, self.ip);
    }
}

/// Counts a stream as open, and holds its slot under the stream caps, for as long as it
/// lives; the visitor's and the operators' streams alike.
pub(super) struct OpenStream {
    gauge: prometheus::IntGauge,
    _slot: StreamSlot,
}

impl OpenStream {
    /// Takes a slot for a stream of `team` from `ip`; a full cap answers `429` (counted).
    pub(super) fn acquire(state: &AppState, team: Uuid, ip: IpAddr) -> Result<Self, ApiError> {
        let slot = state.streams.acquire(team, ip).map_err(|cap| {
            state
                .metrics
                .rate_limited
                .with_label_values(&[cap.as_str()])
                .inc();
            ApiError::RateLimited(CAP_RETRY_AFTER)
        })?;
        let gauge = state.metrics.streams_open.clone();
        gauge.inc();
        Ok(Self { gauge, _slot: slot })
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Why the server ended a stream (the label of `colloquy_sse_streams_ended_total`).
#[derive(Debug, Clone, Copy)]
enum Ended {
    /// It lived its maximum lifetime.
    Lifetime,
    /// Its authorisation lapsed.
    Revoked,
    /// It replayed a page and more follow: the reconnect resumes after it.
    Page,
}

impl Ended {
    fn as_str(self) -> &'static str {
        match self {
            Ended::Lifetime => "lifetime",
            Ended::Revoked => "revoked",
            Ended::Page => "page",
        }
    }
}

struct Feed {
    status: Option<String>,
    replay: VecDeque<StoredMessage>,
    /// The replay is one page of more: end after it instead of going live.
    partial: bool,
    sub: Subscription,
    last: Option<DateTime<Utc>>,
    /// Ticks every [`RECHECK`]: authorisation, lifetime and heartbeat.
    tick: tokio::time::Interval,
    ticks: u32,
    ends_at: Instant,
    grant: Grant,
    greeted: bool,
    _open: OpenStream,
}

impl Feed {
    /// Counts why the stream ends; the caller then ends it.
    fn end(&self, why: Ended) {
        self.grant
            .state
            .metrics
            .streams_ended
            .with_label_values(&[why.as_str()])
            .inc();
    }

    /// Prefixes the stream's first chunk with the reconnection delay.
    fn greet(&mut self, bytes: Bytes) -> Bytes {
        if self.greeted {
            return bytes;
        }
        self.greeted = true;
        let mut first = b"retry: 2000\n\n".to_vec();
        first.extend_from_slice(&bytes);
        Bytes::from(first)
    }

    /// Every event's id is the newest message the client has; before any, the epoch, so a
    /// reconnect from there replays the whole history.
    fn id_line(&self) -> String {
        format!(
            "id: {}\n",
            format_utc(self.last.unwrap_or(DateTime::UNIX_EPOCH))
        )
    }

    /// A message event, unless the client already has it (replay and live events overlap).
    fn message(&mut self, m: &StoredMessage) -> Option<Bytes> {
        if m.is_private || self.last.is_some_and(|last| m.created_at <= last) {
            return None;
        }
        self.last = Some(m.created_at);
        let data = serde_json::to_string(&WidgetMessage::from(m)).ok()?;
        Some(Bytes::from(format!(
            "{}event: message\ndata: {data}\n\n",
            self.id_line()
        )))
    }

    fn event(&self, name: &str, data: serde_json::Value) -> Bytes {
        Bytes::from(format!("{}event: {name}\ndata: {data}\n\n", self.id_line()))
    }
}

/// A stream's lifetime: the maximum less up to a tenth, at random, so streams opened
/// together (after a deploy, say) do not all reconnect in the same second.
fn lifetime(max: Duration) -> Duration {
    use rand::Rng;
    max.mul_f64(rand::thread_rng().gen_range(0.9..=1.0))
}

fn events(
    mut sub: Subscription,
    resume: Option<DateTime<Utc>>,
    grant: Grant,
    open: OpenStream,
) -> impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>> {
    let mut tick = tokio::time::interval(RECHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.reset();
    let feed = Feed {
        status: Some(sub.status.as_str().to_owned()),
        replay: std::mem::take(&mut sub.replay).into(),
        partial: sub.has_more,
        sub,
        last: resume,
        tick,
        ticks: 0,
        ends_at: Instant::now() + lifetime(grant.state.streams.max_lifetime()),
        grant,
        greeted: false,
        _open: open,
    };
    futures_util::stream::unfold(feed, |mut feed| async move {
        if let Some(status) = feed.status.take() {
            let bytes = feed.event("status", json!({"ticket_status": status}));
            return Some((Ok(feed.greet(bytes)), feed));
        }
        while let Some(m) = feed.replay.pop_front() {
            if let Some(bytes) = feed.message(&m) {
                return Some((Ok(bytes), feed));
            }
        }
        if feed.partial {
            feed.end(Ended::Page);
            return None;
        }
        loop {
            let bytes = tokio::select! {
                event = feed.sub.next() => match event? {
                    TicketEvent::Message(m) => match feed.message(&m) {
                        Some(b) => b,
                        None => continue,
                    },
                    TicketEvent::Status(s) => feed.event("status", json!({"ticket_status": s.as_str()})),
                    TicketEvent::Typing { customer } => {
                        if customer {
                            continue; // the visitor's own typing is not echoed back
                        }
                        feed.event("typing", json!({"author": "operator"}))
                    }
                    TicketEvent::Read => feed.event("read", json!({"unread_count": 0})),
                },
                _ = feed.tick.tick() => {
                    if Instant::now() >= feed.ends_at {
                        feed.end(Ended::Lifetime);
                        return None;
                    }
                    if !feed.grant.holds().await {
                        feed.end(Ended::Revoked);
                        return None;
                    }
                    feed.ticks = feed.ticks.wrapping_add(1);
                    if feed.ticks % HEARTBEAT_EVERY != 0 {
                        continue;
                    }
                    Bytes::from_static(b": heartbeat\n\n")
                }
            };
            return Some((Ok(bytes), feed));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_counts_by_its_64_and_ipv4_as_it_is() {
        assert_eq!(ip_key(ip("2001:db8:1:2::a")), ip("2001:db8:1:2::"));
        assert_eq!(ip_key(ip("2001:db8:1:2:ffff:1:2:3")), ip("2001:db8:1:2::"));
        assert_ne!(ip_key(ip("2001:db8:1:3::a")), ip_key(ip("2001:db8:1:2::a")));
        assert_eq!(ip_key(ip("198.51.100.7")), ip("198.51.100.7"));
        assert_eq!(ip_key(ip("::ffff:198.51.100.7")), ip("198.51.100.7"));
    }

    #[test]
    fn lifetimes_spread_over_the_last_tenth() {
        let max = Duration::from_secs(600);
        for _ in 0..100 {
            let l = lifetime(max);
            assert!(l <= max && l >= Duration::from_secs(540), "{l:?}");
        }
    }

    fn slots(per_ip: usize, per_team: usize, total: usize) -> StreamSlots {
        StreamSlots::new(StreamSettings {
            per_ip,
            per_team,
            total,
            max_lifetime: Duration::from_secs(60),
        })
    }

    #[test]
    fn each_cap_refuses_the_stream_beyond_it_and_a_dropped_slot_frees_its_place() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let s = slots(2, 3, 4);
        let one = s.acquire(a, ip("2001:db8::1")).unwrap();
        let _two = s.acquire(a, ip("2001:db8::2")).unwrap();
        assert_eq!(s.acquire(a, ip("2001:db8::3")).err(), Some(StreamCap::Ip));
        let _three = s.acquire(a, ip("198.51.100.1")).unwrap();
        assert_eq!(
            s.acquire(a, ip("198.51.100.2")).err(),
            Some(StreamCap::Team)
        );
        let _four = s.acquire(b, ip("198.51.100.2")).unwrap();
        assert_eq!(
            s.acquire(b, ip("198.51.100.3")).err(),
            Some(StreamCap::Total)
        );
        drop(one);
        assert_eq!(s.open(a, ip("2001:db8::9")), (3, 2, 1));
        let _five = s
            .acquire(b, ip("2001:db8::3"))
            .expect("its place is free again");
        assert_eq!(s.open(b, ip("2001:db8::3")), (4, 2, 2));
    }

    #[test]
    fn no_entry_outlives_its_streams() {
        let s = slots(5, 5, 5);
        let held: Vec<_> = (0..5)
            .map(|i| {
                s.acquire(Uuid::now_v7(), ip(&format!("198.51.100.{i}")))
                    .unwrap()
            })
            .collect();
        drop(held);
        let c = s.lock();
        assert_eq!((c.total, c.per_ip.len(), c.per_team.len()), (0, 0, 0));
    }
}
