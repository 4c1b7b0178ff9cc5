//! The one place errors become HTTP: every refusal is `{"error", "code"}` (plus `field` or
//! `retry_after`) with the contract's status. 5xx bodies say nothing internal; the cause is
//! logged once, here.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use colloquy_actors::domain::ValidationError;
use colloquy_actors::rate_limiter::RateRefusal;
use colloquy_actors::store::StoreError;
use colloquy_actors::ticket::TicketError;
use serde_json::json;
use std::time::Duration;

/// Every way a request can fail, each with its status and machine code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Body is not JSON, or not an object.
    #[error("{0}")]
    InvalidJson(&'static str),
    /// A field is missing, mistyped or out of range.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// Missing or unknown token / key.
    #[error("missing or invalid token")]
    InvalidToken,
    /// The IP or visitor is blocked.
    #[error("requests from here are blocked")]
    Blocked,
    /// Missing or unknown token on the posthog-js surface, which answers 403 for it.
    #[error("missing or invalid token")]
    TokenRefused,
    /// The team switched the widget off.
    #[error("conversations are disabled for this team")]
    ConversationsDisabled,
    /// Origin/Referer not in the team's allowed domains.
    #[error("this website is not allowed to use the widget")]
    OriginNotAllowed,
    /// The ticket belongs to another visitor.
    #[error("this ticket belongs to another visitor")]
    Forbidden,
    /// The team requires identity verification and no hash was sent.
    #[error("identity verification is required: send identity_hash")]
    IdentityRequired,
    /// The identity hash is wrong.
    #[error("identity_hash does not match distinct_id")]
    IdentityInvalid,
    /// Unknown ticket (or another team's), or unknown route.
    #[error("not found")]
    NotFound,
    /// Body over 64 KiB.
    #[error("request body is larger than 64 KiB")]
    PayloadTooLarge,
    /// A budget ran out.
    #[error("too many requests; retry later")]
    RateLimited(Duration),
    /// The database cannot be reached.
    #[error("the service is temporarily unavailable; retry shortly")]
    Unavailable,
    /// Load shed.
    #[error("the service is overloaded; retry shortly")]
    Overloaded,
    /// A bug: logged, never described to the client.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// The contract's machine code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::Validation(_) => "validation_error",
            ApiError::InvalidToken | ApiError::TokenRefused => "invalid_token",
            ApiError::Blocked => "blocked",
            ApiError::ConversationsDisabled => "conversations_disabled",
            ApiError::OriginNotAllowed => "origin_not_allowed",
            ApiError::Forbidden => "forbidden",
            ApiError::IdentityRequired => "identity_required",
            ApiError::IdentityInvalid => "identity_invalid",
            ApiError::NotFound => "not_found",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::Unavailable => "unavailable",
            ApiError::Overloaded => "overloaded",
            ApiError::Internal(_) => "internal_error",
        }
    }

    /// A shorthand for validation errors raised in handlers.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        ApiError::Validation(ValidationError::new(field, message))
    }
}

/// Whole seconds to wait, rounded up, at least 1.
fn retry_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson(_) | ApiError::Validation(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidToken => StatusCode::UNAUTHORIZED,
            ApiError::ConversationsDisabled
            | ApiError::TokenRefused
            | ApiError::Blocked
            | ApiError::OriginNotAllowed
            | ApiError::Forbidden
            | ApiError::IdentityRequired
            | ApiError::IdentityInvalid => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable | ApiError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = json!({"error": self.to_string(), "code": self.code()});
        let mut res = HttpResponse::build(self.status_code());
        match self {
            ApiError::Validation(v) => {
                body["error"] = json!(v.message);
                body["field"] = json!(v.field);
            }
            ApiError::RateLimited(wait) => {
                let secs = retry_secs(*wait);
                body["retry_after"] = json!(secs);
                res.insert_header((header::RETRY_AFTER, secs.to_string()));
            }
            ApiError::Unavailable | ApiError::Overloaded => {
                res.insert_header((header::RETRY_AFTER, "1"));
            }
            ApiError::Internal(cause) => tracing::error!(%cause, "internal error"),
            _ => {}
        }
        res.json(body)
    }
}

impl From<colloquy_actors::domain::IdentityError> for ApiError {
    fn from(e: colloquy_actors::domain::IdentityError) -> Self {
        match e {
            colloquy_actors::domain::IdentityError::Required => ApiError::IdentityRequired,
            colloquy_actors::domain::IdentityError::Invalid => ApiError::IdentityInvalid,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => ApiError::Unavailable,
            StoreError::NotFound => ApiError::NotFound,
            StoreError::Busy => ApiError::Overloaded,
            StoreError::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl From<TicketError> for ApiError {
    fn from(e: TicketError) -> Self {
        match e {
            TicketError::NotFound => ApiError::NotFound,
            TicketError::Forbidden => ApiError::Forbidden,
            TicketError::Overloaded => ApiError::Overloaded,
            TicketError::Unavailable(_) => ApiError::Unavailable,
            TicketError::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl From<RateRefusal> for ApiError {
    fn from(r: RateRefusal) -> Self {
        ApiError::RateLimited(r.retry_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_secs(Duration::from_millis(5_500)), 6);
        assert_eq!(retry_secs(Duration::from_secs(6)), 6);
        assert_eq!(retry_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_secs(Duration::ZERO), 1);
    }
}
