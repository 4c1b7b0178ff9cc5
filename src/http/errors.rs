//! The one place errors become HTTP: every refusal is an [`ErrorBody`] (`{"error", "code"}`,
//! plus `field` or `retry_after`) with the contract's status, and its `code` is an
//! [`ErrorCode`], the same enum the OpenAPI document lists. 5xx bodies say nothing internal;
//! the cause rides on the response ([`FailureCause`]) to `ops::observe_request`, which logs
//! it once, with the route. The refusals operations document are the [`IntoResponses`] types
//! at the end ([`OperatorRefusals`], [`NotFound`], …), written once for every path.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use colloquy_actors::domain::ValidationError;
use colloquy_actors::rate_limiter::RateRefusal;
use colloquy_actors::store::StoreError;
use colloquy_actors::ticket::TicketError;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, ToSchema};

/// Every error: a sentence for a person and a machine code, plus `field` (validation
/// errors) or `retry_after` (429).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// For a person.
    pub error: String,
    /// For a machine.
    pub code: ErrorCode,
    /// The field a `validation_error` is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Seconds to wait (`rate_limited`); also the `Retry-After` header.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub retry_after: Option<u64>,
}

/// The contract's machine codes: the error mapping answers with these and the document
/// lists them, one enum for both, so a code cannot be sent without being documented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: body is not JSON / not an object.
    InvalidJson,
    /// 400: a field is missing, mistyped or out of range.
    ValidationError,
    /// 401 (403 on the v1 surface): missing or unknown token / key.
    InvalidToken,
    /// 403.
    ConversationsDisabled,
    /// 403.
    OriginNotAllowed,
    /// 403: another visitor's ticket.
    Forbidden,
    /// 403.
    IdentityRequired,
    /// 403.
    IdentityInvalid,
    /// 403.
    Blocked,
    /// 404: unknown ticket (or another team's), or unknown route.
    NotFound,
    /// 413.
    PayloadTooLarge,
    /// 429.
    RateLimited,
    /// 503: the database is unreachable.
    Unavailable,
    /// 503: load shed.
    Overloaded,
    /// 500: a bug (never documented as a response, but a client may meet it).
    InternalError,
}

/// Why a request failed on the server's side (a 500, or a 503 with a cause), carried in the
/// response's extensions from [`ApiError::error_response`] to `ops::observe_request`, which
/// logs it once with the route: the error's whole cause chain, never shown to the client.
#[derive(Debug, Clone)]
pub struct FailureCause(pub String);

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
    /// The database cannot be reached, or the answer took too long; the cause is logged.
    #[error("the service is temporarily unavailable; retry shortly")]
    Unavailable(String),
    /// Load shed.
    #[error("the service is overloaded; retry shortly")]
    Overloaded,
    /// A bug: logged, never described to the client.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// The contract's machine code.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::InvalidJson(_) => ErrorCode::InvalidJson,
            ApiError::Validation(_) => ErrorCode::ValidationError,
            ApiError::InvalidToken | ApiError::TokenRefused => ErrorCode::InvalidToken,
            ApiError::Blocked => ErrorCode::Blocked,
            ApiError::ConversationsDisabled => ErrorCode::ConversationsDisabled,
            ApiError::OriginNotAllowed => ErrorCode::OriginNotAllowed,
            ApiError::Forbidden => ErrorCode::Forbidden,
            ApiError::IdentityRequired => ErrorCode::IdentityRequired,
            ApiError::IdentityInvalid => ErrorCode::IdentityInvalid,
            ApiError::NotFound => ErrorCode::NotFound,
            ApiError::PayloadTooLarge => ErrorCode::PayloadTooLarge,
            ApiError::RateLimited(_) => ErrorCode::RateLimited,
            ApiError::Unavailable(_) => ErrorCode::Unavailable,
            ApiError::Overloaded => ErrorCode::Overloaded,
            ApiError::Internal(_) => ErrorCode::InternalError,
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
            ApiError::Unavailable(_) | ApiError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = ErrorBody {
            error: self.to_string(),
            code: self.code(),
            field: None,
            retry_after: None,
        };
        let mut res = HttpResponse::build(self.status_code());
        match self {
            ApiError::Validation(v) => {
                body.error = v.message.clone();
                body.field = Some(v.field.clone());
            }
            ApiError::RateLimited(wait) => {
                let secs = retry_secs(*wait);
                body.retry_after = Some(secs);
                res.insert_header((header::RETRY_AFTER, secs.to_string()));
            }
            ApiError::Unavailable(cause) => {
                res.insert_header((header::RETRY_AFTER, "1"));
                res.extensions_mut().insert(FailureCause(cause.clone()));
            }
            ApiError::Overloaded => {
                res.insert_header((header::RETRY_AFTER, "1"));
            }
            ApiError::Internal(cause) => {
                res.extensions_mut().insert(FailureCause(cause.clone()));
            }
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
            StoreError::Unavailable(cause) => ApiError::Unavailable(cause),
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
            TicketError::Unavailable(cause) => ApiError::Unavailable(cause),
            TicketError::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl From<RateRefusal> for ApiError {
    fn from(r: RateRefusal) -> Self {
        ApiError::RateLimited(r.retry_after)
    }
}

// ---------------------------------------------------------------------------------------
// The refusals operations document, each written once. A path lists the ones it can answer
// after its success responses, e.g. `responses((status = 200, body = Inbox),
// OperatorRefusals, NotFound)`; each is an `ErrorBody`.

/// One documented refusal: `status`, described, with an [`ErrorBody`].
fn refusal(status: &str, description: &str) -> (String, RefOr<Response>) {
    let body = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorBody")))
        .build();
    let response = ResponseBuilder::new()
        .description(description)
        .content("application/json", body)
        .build();
    (status.to_owned(), RefOr::T(response))
}

/// Declares unit types whose documentation is a list of refusals.
macro_rules! refusals {
    ($($(#[$doc:meta])* $name:ident = [$($status:literal => $description:expr),+ $(,)?];)+) => {$(
        $(#[$doc])*
        pub struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                [$(refusal($status, $description)),+].into_iter().collect()
            }
        }
    )+};
}

const BAD_REQUEST: &str = "invalid_json or validation_error (`field` names the field)";
const UNAUTHORIZED: &str = "invalid_token: missing or unknown token or key";
const WIDGET_FORBIDDEN: &str = "conversations_disabled, origin_not_allowed, forbidden (another \
    visitor's ticket), identity_required, identity_invalid or blocked";
const V1_FORBIDDEN: &str = "invalid_token (this surface answers 403 for a missing or unknown \
    token), conversations_disabled, origin_not_allowed, forbidden, identity_required, \
    identity_invalid or blocked";
const RATE_LIMITED: &str = "rate_limited; Retry-After header";
const UNAVAILABLE: &str =
    "unavailable (database unreachable) or overloaded (load shed); Retry-After header";

refusals! {
    /// What every operator call may answer: 400, 401, 503.
    OperatorRefusals = [
        "400" => BAD_REQUEST,
        "401" => UNAUTHORIZED,
        "503" => UNAVAILABLE,
    ];
    /// What every call of the documented widget surface may answer: 400, 401, 403, 429, 503.
    WidgetRefusals = [
        "400" => BAD_REQUEST,
        "401" => UNAUTHORIZED,
        "403" => WIDGET_FORBIDDEN,
        "429" => RATE_LIMITED,
        "503" => UNAVAILABLE,
    ];
    /// What every call of the posthog-js surface may answer: 400, 403 (also for a bad
    /// token), 429, 503.
    V1Refusals = [
        "400" => BAD_REQUEST,
        "403" => V1_FORBIDDEN,
        "429" => RATE_LIMITED,
        "503" => UNAVAILABLE,
    ];
    /// 400 `invalid_json` or `validation_error`.
    BadRequest = ["400" => BAD_REQUEST];
    /// 401 `invalid_token`.
    Unauthorized = ["401" => UNAUTHORIZED];
    /// 404 `not_found`.
    NotFound = ["404" => "not_found: unknown ticket (or another team's)"];
    /// 413 `payload_too_large`.
    PayloadTooLarge = ["413" => "payload_too_large: body over 64 KiB"];
    /// 503 `unavailable` or `overloaded`.
    Unavailable = ["503" => UNAVAILABLE];
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

    async fn answer(e: ApiError) -> (HttpResponse<()>, serde_json::Value) {
        let res = e.error_response();
        let (res, body) = res.into_parts();
        let bytes = actix_web::body::to_bytes(body).await.unwrap();
        (res.drop_body(), serde_json::from_slice(&bytes).unwrap())
    }

    #[actix_web::test]
    async fn a_failure_keeps_its_cause_for_the_log_and_never_shows_it() {
        let cause = "database unavailable: error connecting to server: Connection refused";
        for (e, status) in [
            (ApiError::from(StoreError::Unavailable(cause.into())), 503),
            (ApiError::from(TicketError::Internal(cause.into())), 500),
        ] {
            let (res, body) = answer(e).await;
            assert_eq!(res.status().as_u16(), status);
            let kept = res.extensions().get::<FailureCause>().cloned();
            assert_eq!(
                kept.map(|c| c.0).as_deref(),
                Some(cause),
                "the log loses the cause"
            );
            assert!(
                !body.to_string().contains("refused"),
                "the client sees the cause: {body}"
            );
        }
    }

    #[actix_web::test]
    async fn refusals_carry_no_cause_to_log() {
        for e in [
            ApiError::Overloaded,
            ApiError::NotFound,
            ApiError::InvalidToken,
        ] {
            let (res, _) = answer(e).await;
            assert!(res.extensions().get::<FailureCause>().is_none());
        }
    }

    #[actix_web::test]
    async fn bodies_keep_their_keys() {
        let (_, body) = answer(ApiError::invalid("distinct_id", "too long")).await;
        assert_eq!(
            body,
            serde_json::json!({"error": "too long", "code": "validation_error", "field": "distinct_id"})
        );
        let (_, body) = answer(ApiError::RateLimited(Duration::from_millis(1500))).await;
        assert_eq!(
            body,
            serde_json::json!({"error": "too many requests; retry later", "code": "rate_limited", "retry_after": 2})
        );
        let (_, body) = answer(ApiError::Internal("secret".into())).await;
        assert_eq!(
            body,
            serde_json::json!({"error": "internal error", "code": "internal_error"})
        );
    }
}
