//! The operators' live view of one ticket: `GET /api/conversations/tickets/{id}/stream`
//! (bearer team secret key), Server-Sent Events. An operator sees the visitor typing and
//! new messages — private notes included — the moment they are committed, instead of
//! polling the ticket.
//!
//! The same ticket-actor subscription as the visitor's stream (`stream.rs`), seen from the
//! other side: messages in the operator shape (with `is_private`), `typing` only when the
//! visitor types (an operator's own typing is not echoed back), `read` when the visitor read
//! the ticket. The key travels in the `Authorization` header only, never in the URL (where
//! logs and browser history would keep it); browsers read the stream with `fetch()`, since
//! `EventSource` cannot send headers.

use super::errors::{ApiError, BadRequest, ErrorBody, NotFound, Unauthorized};
use super::extract::{self, operator_team};
use super::operator::OperatorMessage;
use super::stream::{resume_point, OpenStream};
use super::wire::{self, ReadEvent, StatusEvent, TypingEvent};
use super::AppState;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use colloquy_actors::domain::format_utc;
use colloquy_actors::store::StoredMessage;
use colloquy_actors::ticket::{Subscription, TicketEvent};
use serde::Serialize;
use std::collections::VecDeque;
use std::time::Duration;

/// How often an idle stream sends a comment line (keeps proxies from closing it).
const HEARTBEAT: Duration = Duration::from_secs(15);

/// `GET /api/conversations/tickets/{id}/stream[?after=…]`: the ticket's events, live.
#[utoipa::path(
    get,
    path = "/api/conversations/tickets/{ticket_id}/stream",
    tag = "operator",
    params(
        ("ticket_id" = Uuid, Path, description = "The ticket"),
        ("after" = Option<String>, Query, format = DateTime, description = "Replay only messages strictly after this RFC 3339 timestamp (default: every message)"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id (an RFC 3339 timestamp); wins over `after`")
    ),
    responses(
        (status = 200, description = "Server-Sent Events: `status` `{ticket_status}`, `message` (an OperatorMessage, private notes included), `typing` `{author: \"visitor\"}`, `read` `{unread_count}`", content_type = "text/event-stream"),
        BadRequest,
        Unauthorized,
        NotFound,
        (status = 429, description = "rate_limited: too many open streams from this IP (IPv6: its /64), for this team or in total (the caps visitors' streams share); Retry-After header", body = ErrorBody),
        (status = 503, description = "unavailable (database unreachable) or overloaded (load shed, or too many streams on the ticket); Retry-After header", body = ErrorBody)
    ),
    security(("operator_key" = []))
)]
pub async fn operator_stream(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let team = operator_team(&req, &state).await?;
    tracing::Span::current().record("team_id", tracing::field::display(team.id));
    let ticket_id = extract::uuid(&path, "ticket_id")?;
    let q = extract::query(&req)?;
    let after = q.get("after").map(String::as_str).filter(|a| !a.is_empty());
    let resume = resume_point(&req, after)?;
    let open = OpenStream::acquire(&state, team.id, extract::peer_ip(&req, &state))?;
    let sub = state
        .tickets
        .subscribe(team.id, ticket_id, None, resume, true)
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header(("content-type", "text/event-stream"))
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(events(sub, resume, open)))
}

/// One stream's state: what is left to replay, the newest message sent, the heartbeat.
struct Feed {
    status: Option<wire::TicketStatus>,
    replay: VecDeque<StoredMessage>,
    sub: Subscription,
    last: Option<DateTime<Utc>>,
    heartbeat: tokio::time::Interval,
    /// The replay is one page of more: the stream ends after it, and the client's
    /// reconnect (with `Last-Event-ID`) gets the next page. Going live instead would skip
    /// every message between the page and the first live one.
    partial: bool,
    _open: OpenStream,
}

impl Feed {
    /// Every event's id is the newest message the client has (the epoch before any), so a
    /// reconnect with `Last-Event-ID` replays exactly what was missed.
    fn id_line(&self) -> String {
        format!(
            "id: {}\n",
            format_utc(self.last.unwrap_or(DateTime::UNIX_EPOCH))
        )
    }

    /// A message event, unless the client already has it (replay and live events overlap).
    fn message(&mut self, m: &StoredMessage) -> Option<Bytes> {
        if self.last.is_some_and(|last| m.created_at <= last) {
            return None;
        }
        self.last = Some(m.created_at);
        Some(self.event("message", &OperatorMessage::from(m)))
    }

    /// One event: its id line, name and JSON data.
    fn event(&self, name: &str, data: &impl Serialize) -> Bytes {
        // Serializing these plain structs cannot fail; were it to, the event carries `null`.
        let data = serde_json::to_string(data).unwrap_or_else(|_| "null".to_owned());
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
        status: Some(sub.status.into()),
        replay: std::mem::take(&mut sub.replay).into(),
        partial: sub.has_more,
        sub,
        last: resume,
        heartbeat,
        _open: open,
    };
    futures_util::stream::unfold(feed, |mut feed| async move {
        if let Some(status) = feed.status.take() {
            let mut first = b"retry: 2000\n\n".to_vec();
            first.extend_from_slice(&feed.event(
                "status",
                &StatusEvent {
                    ticket_status: status,
                },
            ));
            return Some((Ok(Bytes::from(first)), feed));
        }
        while let Some(m) = feed.replay.pop_front() {
            if let Some(bytes) = feed.message(&m) {
                return Some((Ok(bytes), feed));
            }
        }
        if feed.partial {
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
                        if !customer {
                            continue; // operators' own typing is not echoed back
                        }
                        feed.event("typing", &TypingEvent { author: "visitor" })
                    }
                    TicketEvent::Read => feed.event("read", &ReadEvent::DONE),
                },
                _ = feed.heartbeat.tick() => Bytes::from_static(b": heartbeat\n\n"),
            };
            return Some((Ok(bytes), feed));
        }
    })
}
