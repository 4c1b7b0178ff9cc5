//! Server-Sent Events: `GET /api/conversations/widget/stream/{ticket_id}`. A reply reaches
//! the visitor the moment it is committed, not at the next poll.
//!
//! The stream first replays what the client missed (after `Last-Event-ID` or `after`), then
//! forwards the ticket actor's events. Each message event's id is its `created_at`, so a
//! reconnect resumes exactly where it stopped. The actor never waits for a stream: a client
//! that falls behind is cut off and reconnects with replay. Heartbeats keep proxies from
//! closing idle streams.

use super::errors::ApiError;
use super::extract::{self, widget_team_or};
use super::openapi as api;
use super::widget::{admit, read_check, visitor_param, WidgetMessage};
use super::AppState;
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
use std::collections::VecDeque;
use std::time::Duration;

/// How often an idle stream sends a comment line.
const HEARTBEAT: Duration = Duration::from_secs(15);

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
        (status = 200, description = "Server-Sent Events: `status`, `message` (a WidgetMessage), `typing`, `read`", content_type = "text/event-stream"),
        (status = 400, description = "invalid_json or validation_error (`field` names the field)", body = api::ErrorBody),
        (status = 401, description = "invalid_token: missing or unknown token or key", body = api::ErrorBody),
        (status = 403, description = "conversations_disabled, origin_not_allowed, forbidden (another visitor's ticket), identity_required, identity_invalid or blocked", body = api::ErrorBody),
        (status = 404, description = "not_found: unknown ticket (or another team's)", body = api::ErrorBody),
        (status = 429, description = "rate_limited; Retry-After header", body = api::ErrorBody),
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
    let resume = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
        .map(|v| parse_timestamp(v.trim(), "Last-Event-ID"))
        .or_else(|| q.get("after").map(|a| parse_timestamp(a, "after")))
        .transpose()?;
    let ip = extract::peer_ip(&req, &state);
    let charged = admit(&state, &team, vec![budget], ip, Some(visitor.as_str()))?;
    let sub = state
        .tickets
        .subscribe(team.id, ticket_id, Some(key), resume, false)
        .await;
    let sub = charged.settle(sub)?;
    Ok(HttpResponse::Ok()
        .insert_header(("content-type", "text/event-stream"))
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(events(
            sub,
            resume,
            OpenStream::new(&state.metrics.streams_open),
        )))
}

/// Counts a stream as open for as long as it lives.
struct OpenStream(prometheus::IntGauge);

impl OpenStream {
    fn new(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}

struct Feed {
    status: Option<String>,
    replay: VecDeque<StoredMessage>,
    sub: Subscription,
    last: Option<DateTime<Utc>>,
    heartbeat: tokio::time::Interval,
    greeted: bool,
    _open: OpenStream,
}

impl Feed {
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

fn events(
    mut sub: Subscription,
    resume: Option<DateTime<Utc>>,
    open: OpenStream,
) -> impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>> {
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.reset();
    let feed = Feed {
        status: Some(sub.status.as_str().to_owned()),
        replay: std::mem::take(&mut sub.replay).into(),
        sub,
        last: resume,
        heartbeat,
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
                _ = feed.heartbeat.tick() => Bytes::from_static(b": heartbeat\n\n"),
            };
            return Some((Ok(bytes), feed));
        }
    })
}
