//! Who a widget request speaks for, as the [`VisitorKey`] the ticket actors check access
//! with. Two rules, one per kind of visitor, each written once:
//! - [`Named`]: a visitor named by `distinct_id` (the documented surface and its stream),
//!   proven by `identity_hash` as the team requires;
//! - [`Session`]: a posthog-js widget session (`widget_session_id`), or a verified person
//!   (`identity_distinct_id` + `identity_hash`) where the team verifies identities.
//!
//! Both read their fields through [`Fields`], so a JSON body and a query string give the
//! same answer and the same errors.

use super::super::errors::ApiError;
use super::super::extract::{self, opt_str};
use crate::teams::Team;
use colloquy_actors::domain::{DistinctId, IdentityVerification, VerifiedId, VisitorKey};
use serde_json::{Map, Value};
use std::net::IpAddr;
use uuid::Uuid;

/// Where a request's named text fields come from, so one identity rule serves bodies and
/// query strings alike.
pub(in crate::http) trait Fields {
    /// The field's text if it was sent; a body's non-string (or NUL) is a validation error.
    fn text(&self, name: &str) -> Result<Option<&str>, ApiError>;

    /// The field's text; absent is `400 validation_error` naming it.
    fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.text(name)?
            .ok_or_else(|| ApiError::invalid(name, format!("{name} is required")))
    }
}

impl Fields for Map<String, Value> {
    fn text(&self, name: &str) -> Result<Option<&str>, ApiError> {
        opt_str(self, name)
    }
}

impl Fields for extract::Query {
    fn text(&self, name: &str) -> Result<Option<&str>, ApiError> {
        // NUL was refused when the query was parsed
        Ok(self.get(name).map(String::as_str))
    }
}

/// A visitor named by `distinct_id`, and the key they present.
pub(in crate::http) struct Named {
    /// The visitor's distinct_id: their rate-limit and block key.
    pub distinct_id: DistinctId,
    /// A proven identity (which also reaches the person's posthog-js tickets) when a valid
    /// identity hash came, else the bare distinct_id.
    pub key: VisitorKey,
}

impl Named {
    /// `distinct_id` (required) and `identity_hash`, checked as the team requires.
    pub fn from_fields(team: &Team, fields: &impl Fields) -> Result<Self, ApiError> {
        let distinct_id = DistinctId::parse(fields.required("distinct_id")?)?;
        Self::verify(team, distinct_id, fields.text("identity_hash")?)
    }

    /// An already parsed `distinct_id`, checked against `identity_hash` as the team requires.
    pub fn verify(
        team: &Team,
        distinct_id: DistinctId,
        identity_hash: Option<&str>,
    ) -> Result<Self, ApiError> {
        let key = match team.verify_identity(&distinct_id, identity_hash)? {
            Some(proof) => VisitorKey::Verified(proof),
            None => VisitorKey::DistinctId(distinct_id.clone()),
        };
        Ok(Self { distinct_id, key })
    }
}

/// A posthog-js visitor: the key they present and their widget session, when one was sent.
pub(in crate::http) struct Session {
    /// A verified identity, else the widget session.
    pub key: VisitorKey,
    /// The session id: the rate-limit and block key (with the key's verified person).
    pub session: Option<Uuid>,
}

impl Session {
    /// `widget_session_id`, `identity_distinct_id` and `identity_hash` (see [`Session::resolve`]).
    pub fn from_fields(team: &Team, fields: &impl Fields) -> Result<Self, ApiError> {
        let session = fields.text("widget_session_id")?;
        let identity_id = fields.text("identity_distinct_id")?;
        let identity_hash = fields.text("identity_hash")?;
        Self::resolve(team, session, identity_id, identity_hash)
    }

    /// The one identity rule of the posthog-js visitor: a verified identity when the team
    /// verifies identities and a hash that verifies was sent, else the widget session. An
    /// `identity_distinct_id` without a hash that verifies never becomes a verified key:
    /// under `optional` the request falls back to its widget session (a wrong hash is still
    /// refused), under `required` it is refused.
    pub fn resolve(
        team: &Team,
        session: Option<&str>,
        identity_id: Option<&str>,
        identity_hash: Option<&str>,
    ) -> Result<Self, ApiError> {
        let session = session
            .filter(|s| !s.is_empty())
            .map(|s| extract::uuid(s, "widget_session_id"))
            .transpose()?;
        let mode = team.identity_verification;
        let identity_id = identity_id
            .map(str::trim)
            .filter(|s| !s.is_empty() && mode != IdentityVerification::Off);
        match identity_id {
            Some(raw) => {
                let id = DistinctId::parse(raw).map_err(|_| ApiError::IdentityInvalid)?;
                if let Some(proof) = team.verify_identity(&id, identity_hash)? {
                    return Ok(Self {
                        key: VisitorKey::Verified(proof),
                        session,
                    });
                }
            }
            None if mode == IdentityVerification::Required => {
                return Err(ApiError::IdentityRequired)
            }
            None => {}
        }
        match session {
            Some(s) => Ok(Self {
                key: VisitorKey::WidgetSession(s),
                session: Some(s),
            }),
            None => Err(ApiError::invalid(
                "widget_session_id",
                "widget_session_id is required",
            )),
        }
    }

    /// The verified person, when the key is one.
    pub fn verified(&self) -> Option<&VerifiedId> {
        match &self.key {
            VisitorKey::Verified(d) => Some(d),
            _ => None,
        }
    }

    /// The key a new ticket is opened with: the session, else the verified person's own
    /// distinct_id (never a verified key, which is no ticket's own).
    pub fn owner(&self) -> VisitorKey {
        match (self.session, &self.key) {
            (Some(s), _) => VisitorKey::WidgetSession(s),
            (None, VisitorKey::Verified(d)) => VisitorKey::DistinctId(d.distinct_id().clone()),
            (None, other) => other.clone(),
        }
    }

    /// The key of the per-session budget: the session, else the client IP.
    pub fn rate_key(&self, ip: IpAddr) -> String {
        self.session
            .map_or_else(|| format!("ip:{ip}"), |s| s.to_string())
    }

    /// How blocks and the suspicion detector name this visitor: the verified person, else
    /// `session:<uuid>`.
    pub fn label(&self) -> String {
        match (&self.key, self.session) {
            (VisitorKey::Verified(d), _) => d.to_string(),
            (VisitorKey::DistinctId(d), _) => d.to_string(),
            (_, Some(s)) => format!("session:{s}"),
            (VisitorKey::WidgetSession(s), None) => format!("session:{s}"),
        }
    }
}
