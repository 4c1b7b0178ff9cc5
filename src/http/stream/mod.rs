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

mod slots;

pub(super) use slots::OpenStream;
pub use slots::{ip_key, StreamCap, StreamSlot, StreamSlots};

use super::errors::{ApiError, ErrorBody, NotFound, WidgetRefusals};
use super::extract::{self, widget_team_or};
use super::visitor::{admit, read_check, Named, Session};
use super::widget::WidgetMessage;
use super::wire::{self, ReadEvent, StatusEvent, TypingEvent};
use super::AppState;
use crate::teams::Team;
use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use colloquy_actors::domain::{format_utc, parse_timestamp, IdentityVerification, Limit};
use colloquy_actors::rate_limiter::{RateCheck, Tier};
use colloquy_actors::store::StoredMessage;
use colloquy_actors::ticket::{Subscription, TicketEvent};
use serde::Serialize;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often an open stream checks its authorisation and lifetime.
const RECHECK: Duration = Duration::from_secs(1);
/// Every how many checks a stream sends a comment line (15 s), so proxies keep it open.
const HEARTBEAT_EVERY: u32 = 15;
/// Longest one authorisation check may wait for the database; past it the stream goes on
/// (an outage revokes nothing, as it refuses no valid token) and checks again next time.
const RECHECK_TIMEOUT: Duration = Duration::from_millis(800);

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
        WidgetRefusals,
        NotFound,
        (status = 429, description = "rate_limited: a read budget, or too many open streams from this IP (IPv6: its /64), for this team or in total; Retry-After header", body = ErrorBody),
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
    let ip = extract::peer_ip(&req, &state);
    let session = q
        .get("widget_session_id")
        .filter(|s| !s.is_empty() && !q.contains_key("distinct_id"));
    let (key, budget, visitor) = match session {
        Some(raw) => {
            // No identity fields here: a session alone never passes a team that requires one.
            if team.identity_verification == IdentityVerification::Required {
                return Err(ApiError::IdentityRequired);
            }
            let who = Session::resolve(&team, Some(raw), None, None)?;
            let budget = RateCheck {
                tier: Tier::WidgetSession,
                key: who.rate_key(ip),
                limit: Limit::per_minute(team.rate_limits.widget_session_per_minute),
            };
            let label = who.label();
            (who.key, budget, label)
        }
        None => {
            let visitor = Named::from_fields(&team, &q)?;
            let budget = read_check(&team, "stream", &visitor.distinct_id);
            (visitor.key, budget, visitor.distinct_id.to_string())
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
    status: Option<wire::TicketStatus>,
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

    fn event(&self, name: &str, data: &impl Serialize) -> Bytes {
        // Serializing these plain structs cannot fail; were it to, the event carries `null`.
        let data = serde_json::to_string(data).unwrap_or_else(|_| "null".to_owned());
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
        status: Some(sub.status.into()),
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
            let bytes = feed.event(
                "status",
                &StatusEvent {
                    ticket_status: status,
                },
            );
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
                    TicketEvent::Status(s) => feed.event("status", &StatusEvent { ticket_status: s.into() }),
                    TicketEvent::Typing { customer } => {
                        if customer {
                            continue; // the visitor's own typing is not echoed back
                        }
                        feed.event("typing", &TypingEvent { author: "operator" })
                    }
                    TicketEvent::Read => feed.event("read", &ReadEvent::DONE),
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

    #[test]
    fn lifetimes_spread_over_the_last_tenth() {
        let max = Duration::from_secs(600);
        for _ in 0..100 {
            let l = lifetime(max);
            assert!(l <= max && l >= Duration::from_secs(540), "{l:?}");
        }
    }
}
