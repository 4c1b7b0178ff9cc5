//! The visitor's side of the API, written once for every surface a visitor uses: the
//! documented widget surface ([`super::widget`]), the posthog-js one ([`super::widget_v1`]),
//! the stream ([`super::stream`]) and restore ([`super::restore`]). Those modules keep only
//! their HTTP shapes — which fields they read, which budgets they charge, what they answer —
//! and call this for the rest:
//! - admission: blocks, the per-IP gate and the endpoint's budgets ([`admission`]);
//! - who is asking, as the [`VisitorKey`](colloquy_actors::domain::VisitorKey) the ticket
//!   actors check ([`identity`]);
//! - the honeypot rule ([`honeypot_filled`]);
//! - posting a message ([`post`]), marking replies read ([`mark_read_by`]), and the query
//!   parameters of polls and listings ([`Poll`], [`Listing`]).

pub mod admission;
pub mod identity;
pub mod post;

pub(super) use admission::{admit, admit_as, honeypot_hit, ip_key, read_check};
pub(super) use identity::{Named, Session};
pub(super) use post::{post_visitor_message, Posted, VisitorPost};

use super::errors::ApiError;
use super::extract::{self, Query};
use super::AppState;
use crate::store::TicketListing;
use crate::teams::Team;
use chrono::{DateTime, Utc};
use colloquy_actors::domain::{parse_timestamp, TicketStatus, VisitorKey};
use colloquy_actors::ticket::TicketPage;
use serde_json::{Map, Value};
use uuid::Uuid;

/// Whether a bot filled the hidden `_hp` field, on either surface: the field is truthy as
/// JavaScript (a widget's own language) judges it. Real widgets send it empty or not at all
/// (posthog-js never sends it); absent, `null`, `false`, `0` and `""` are empty, anything
/// else — `"0"`, `" "`, `[]` and `{}` included — is filled.
pub(super) fn honeypot_filled(body: &Map<String, Value>) -> bool {
    truthy(body.get("_hp"))
}

/// JavaScript's truthiness of a JSON value (`NaN` cannot be written in JSON).
fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

/// What a message poll asks for: messages strictly after `after`, at most `limit`.
pub(super) struct Poll {
    /// Only messages strictly after this.
    pub after: Option<DateTime<Utc>>,
    /// At most this many (the surface's default when absent, clamped to 1..=500).
    pub limit: usize,
}

impl Poll {
    /// `after` and `limit` of a poll's query. `blank_after` says what `after=` means: the
    /// posthog-js widget sends it empty before it has a cursor (absent), on the documented
    /// surface it is an invalid timestamp.
    pub fn parse(q: &Query, default_limit: i64, blank_after: Blank) -> Result<Self, ApiError> {
        let after = q
            .get("after")
            .filter(|a| blank_after == Blank::Invalid || !a.is_empty())
            .map(|a| parse_timestamp(a, "after"))
            .transpose()?;
        let limit = extract::clamped(q, "limit", default_limit, 1, 500)?;
        Ok(Self {
            after,
            limit: limit as usize,
        })
    }
}

/// What an empty query parameter means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Blank {
    /// As if it were not sent.
    Absent,
    /// A value that fails validation.
    Invalid,
}

/// What a ticket listing asks for: one `status` (empty: any), a page of `limit` from `offset`.
pub(super) struct Listing {
    /// Only tickets of this status.
    pub status: Option<TicketStatus>,
    /// Page size (the surface's default when absent, clamped to 1..=`max_limit`).
    pub limit: i64,
    /// Tickets skipped.
    pub offset: i64,
}

impl Listing {
    /// `status`, `limit` and `offset` of a listing's query.
    pub fn parse(q: &Query, default_limit: i64, max_limit: i64) -> Result<Self, ApiError> {
        let status = q
            .get("status")
            .filter(|s| !s.is_empty())
            .map(|s| TicketStatus::parse(s, "status"))
            .transpose()?;
        let limit = extract::clamped(q, "limit", default_limit, 1, max_limit)?;
        let offset = extract::clamped(q, "offset", 0, 0, 1_000_000_000)?;
        Ok(Self {
            status,
            limit,
            offset,
        })
    }
}

/// A page of the visitor's messages on one ticket: the ticket actor checks access and
/// answers from memory when it can.
pub(super) async fn read_page(
    state: &AppState,
    team: &Team,
    ticket_id: Uuid,
    key: VisitorKey,
    poll: Poll,
) -> Result<TicketPage, ApiError> {
    let page = state
        .tickets
        .read(team.id, ticket_id, Some(key), poll.after, poll.limit, false)
        .await?;
    Ok(page)
}

/// The visitor's tickets, newest activity first.
pub(super) async fn list_tickets(
    state: &AppState,
    team: &Team,
    key: &VisitorKey,
    listing: Listing,
) -> Result<TicketListing, ApiError> {
    let tickets = state
        .store
        .visitor_tickets(team.id, key, listing.status, listing.limit, listing.offset)
        .await?;
    Ok(tickets)
}

/// Both surfaces' mark-read: the ticket actor checks access, the store clears the visitor's
/// unread count, and the actor (and through it the open streams) learns the new facts.
pub(super) async fn mark_read_by(
    state: &AppState,
    team_id: Uuid,
    ticket_id: Uuid,
    key: VisitorKey,
) -> Result<(), ApiError> {
    state
        .tickets
        .authorize(team_id, ticket_id, Some(key))
        .await?;
    let facts = state
        .store
        .mark_read_by_visitor(team_id, ticket_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    state.tickets.refresh(ticket_id, facts);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_empty_honeypots_pass() {
        let body = |v: Value| json!({ "_hp": v }).as_object().cloned().unwrap();
        assert!(!honeypot_filled(&Map::new()));
        assert!(!honeypot_filled(&body(json!(""))));
        assert!(!honeypot_filled(&body(json!(null))));
        assert!(!honeypot_filled(&body(json!(false))));
        assert!(honeypot_filled(&body(json!("http://spam"))));
        assert!(honeypot_filled(&body(json!(1))));
        assert!(honeypot_filled(&body(json!(true))));
    }

    #[test]
    fn honeypot_truthiness_follows_javascript() {
        for falsy in [json!(""), json!(null), json!(false), json!(0)] {
            assert!(!truthy(Some(&falsy)), "{falsy}");
        }
        assert!(!truthy(None));
        for yes in [json!("x"), json!(true), json!(1)] {
            assert!(truthy(Some(&yes)), "{yes}");
        }
    }

    #[test]
    fn a_zero_is_empty_and_any_other_value_fills_the_honeypot() {
        for falsy in [json!(0), json!(0.0), json!(-0.0)] {
            assert!(!truthy(Some(&falsy)), "{falsy}");
        }
        for yes in [
            json!("0"),
            json!(" "),
            json!(-1),
            json!(0.5),
            json!([]),
            json!({}),
        ] {
            assert!(truthy(Some(&yes)), "{yes}");
        }
    }
}
