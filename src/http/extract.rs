//! Turning raw requests into trusted values: the team behind a token, the client IP, the
//! origin check, a size-limited JSON object body and query parameters. Each failure is the
//! contract's error, never actix's default.

use super::client_ip::client_ip;
use super::errors::ApiError;
use super::AppState;
use crate::teams::{secrets_equal, Team};
use actix_web::http::header;
use actix_web::{web, HttpRequest};
use colloquy_actors::domain::client_network;
use futures_util::StreamExt;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

/// The largest body any endpoint accepts.
pub const MAX_BODY: usize = 64 * 1024;

/// Reads the body (at most [`MAX_BODY`]) and parses a JSON object.
pub async fn json_object(
    req: &HttpRequest,
    mut payload: web::Payload,
) -> Result<Map<String, Value>, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ApiError::PayloadTooLarge);
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|_| ApiError::InvalidJson("the request body could not be read"))?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(ApiError::PayloadTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::InvalidJson(
            "the request body must be a JSON object",
        )),
        Err(_) => Err(ApiError::InvalidJson("the request body is not valid JSON")),
    }
}

/// A request's query parameters by name. A map of one request, dropped with it: its keys
/// cannot pile up, so it takes the fast (randomly seeded) hasher rather than SipHash.
pub type Query = HashMap<String, String, foldhash::fast::RandomState>;

/// Query parameters; the first of a repeated name wins, unknown names are ignored.
/// `application/x-www-form-urlencoded` as serde_urlencoded (form_urlencoded) parses it —
/// pairs split on `&`, name and value on the first `=`, empty pairs skipped, `+` a space,
/// `%XX` a byte (a `%` without two hex digits stays as it is), invalid UTF-8 replaced —
/// with the decoding done here: form_urlencoded's byte-by-byte iterator was a twentieth of
/// a tail poll's instructions (bench/NOTES.md). `form_decodes_as_form_urlencoded` checks
/// the two agree.
pub fn query(req: &HttpRequest) -> Result<Query, ApiError> {
    let mut map = Query::default();
    for (k, v) in form_pairs(req.query_string().as_bytes()) {
        let k = form_decode(k);
        if map.contains_key(&k) {
            continue;
        }
        let v = form_decode(v);
        if v.contains('\0') {
            return Err(no_nul(&k));
        }
        map.insert(k, v);
    }
    Ok(map)
}

/// The raw name and value of each pair of a form-encoded string (see [`query`]).
fn form_pairs(raw: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    raw.split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.iter().position(|&b| b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &[][..]),
        })
}

/// One form-encoded name or value, decoded (see [`query`]).
fn form_decode(raw: &[u8]) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    // runs without `%` or `+` are copied whole
    while let Some(at) = rest.iter().position(|&b| b == b'%' || b == b'+') {
        out.extend_from_slice(&rest[..at]);
        rest = &rest[at..];
        match (
            rest[0],
            rest.get(1).copied().and_then(hex),
            rest.get(2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(hi << 4 | lo);
                rest = &rest[3..];
            }
            (b'+', ..) => {
                out.push(b' ');
                rest = &rest[1..];
            }
            _ => {
                out.push(b'%');
                rest = &rest[1..];
            }
        }
    }
    out.extend_from_slice(rest);
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A clamped integer query parameter: absent → `default`; digits beyond range clamp;
/// anything that is not an integer is a validation error.
pub fn clamped<S: std::hash::BuildHasher>(
    q: &HashMap<String, String, S>,
    name: &str,
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64, ApiError> {
    let Some(raw) = q.get(name).map(|s| s.trim()) else {
        return Ok(default);
    };
    let digits = raw.strip_prefix('-').unwrap_or(raw);
    if digits.is_empty() || digits.len() > 4096 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::invalid(
            name,
            format!("{name} must be an integer"),
        ));
    }
    let n = raw.parse::<i64>().unwrap_or(if raw.starts_with('-') {
        i64::MIN
    } else {
        i64::MAX
    });
    Ok(n.clamp(min, max))
}

/// The client IP that rate limits, scores and blocks key on (see [`client_ip`]), as its
/// network: an IPv6 client by its /64, which it could otherwise rotate through to get a
/// fresh budget per request ([`client_network`]).
pub fn peer_ip(req: &HttpRequest, state: &AppState) -> IpAddr {
    let peer = req
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let forwarded: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .collect();
    client_network(client_ip(peer, &forwarded, &state.trusted_proxies))
}

/// The widget request's team: token known (401), widget on (403), origin allowed (403).
pub async fn widget_team(req: &HttpRequest, state: &AppState) -> Result<Arc<Team>, ApiError> {
    widget_team_or(req, state, None).await
}

/// [`widget_team`], with a fallback token for clients that cannot send headers
/// (EventSource passes it as a query parameter).
pub async fn widget_team_or(
    req: &HttpRequest,
    state: &AppState,
    fallback: Option<&str>,
) -> Result<Arc<Team>, ApiError> {
    let team = widget_team_unchecked(req, state, fallback).await?;
    check_origin(req, &team)?;
    Ok(team)
}

/// `403 origin_not_allowed` unless the Origin (else Referer) host is one of the team's.
pub fn check_origin(req: &HttpRequest, team: &Team) -> Result<(), ApiError> {
    let origin = [header::ORIGIN, header::REFERER]
        .iter()
        .find_map(|h| req.headers().get(h).and_then(|v| v.to_str().ok()));
    if team.allowed_widget_domains.permits(origin) {
        Ok(())
    } else {
        Err(ApiError::OriginNotAllowed)
    }
}

/// The team of a widget token (401 unknown, 403 switched off), without the origin check,
/// which the posthog-js surface applies only to some endpoints.
pub async fn widget_team_unchecked(
    req: &HttpRequest,
    state: &AppState,
    fallback: Option<&str>,
) -> Result<Arc<Team>, ApiError> {
    let token = req
        .headers()
        .get("x-conversations-token")
        .and_then(|v| v.to_str().ok())
        .or(fallback)
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 200)
        .ok_or(ApiError::InvalidToken)?;
    let team = state
        .teams
        .by_public_token(&state.store, token)
        .await?
        .ok_or(ApiError::InvalidToken)?;
    if !team.conversations_enabled {
        return Err(ApiError::ConversationsDisabled);
    }
    Ok(team)
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 200)
}

/// The operator request's team, from its secret key.
pub async fn operator_team(req: &HttpRequest, state: &AppState) -> Result<Arc<Team>, ApiError> {
    let key = bearer(req).ok_or(ApiError::InvalidToken)?;
    state
        .teams
        .by_secret_key(&state.store, key)
        .await?
        .ok_or(ApiError::InvalidToken)
}

/// Checks the admin bearer token (constant time); no token configured → always refused.
pub fn require_admin(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    match (bearer(req), state.admin_token.as_deref()) {
        (Some(given), Some(expected)) if secrets_equal(given, expected) => Ok(()),
        _ => Err(ApiError::InvalidToken),
    }
}

/// PostgreSQL text cannot hold NUL: refuse it up front rather than fail the write.
pub fn no_nul(field: &str) -> ApiError {
    ApiError::invalid(field, format!("{field} must not contain NUL characters"))
}

/// An optional string field: absent or null → `None`; another type, or a NUL inside (which
/// PostgreSQL cannot store), → validation error.
pub fn opt_str<'a>(body: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, ApiError> {
    match opt_text(body, field)? {
        Some(s) if s.contains('\0') => Err(no_nul(field)),
        other => Ok(other),
    }
}

/// A required text field whose parser removes control characters itself (message bodies):
/// NUL is allowed in, the contract says it is removed.
pub fn req_text<'a>(body: &'a Map<String, Value>, field: &str) -> Result<&'a str, ApiError> {
    opt_text(body, field)?.ok_or_else(|| ApiError::invalid(field, format!("{field} is required")))
}

fn opt_text<'a>(body: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::invalid(
            field,
            format!("{field} must be a string"),
        )),
    }
}

/// A required string field.
pub fn req_str<'a>(body: &'a Map<String, Value>, field: &str) -> Result<&'a str, ApiError> {
    opt_str(body, field)?.ok_or_else(|| ApiError::invalid(field, format!("{field} is required")))
}

/// A UUID given as text (path or body); not a UUID → validation error naming `field`.
pub fn uuid(raw: &str, field: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(raw.trim())
        .map_err(|_| ApiError::invalid(field, format!("{field} must be a UUID")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decodes_as_form_urlencoded() {
        use proptest::prelude::*;
        let bytes = prop::collection::vec(
            prop::sample::select(b"ab=&+%%0aF9gZ\x00\xc3\xa9\xff ".to_vec()),
            0..40,
        );
        proptest!(|(raw in bytes)| {
            let ours: Vec<(String, String)> = form_pairs(&raw)
                .map(|(k, v)| (form_decode(k), form_decode(v)))
                .collect();
            let theirs: Vec<(String, String)> = form_urlencoded::parse(&raw)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            prop_assert_eq!(ours, theirs);
        });
    }

    fn q(pairs: &[(&str, &str)]) -> Query {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn limits_clamp_and_garbage_is_refused() {
        assert_eq!(clamped(&q(&[]), "limit", 100, 1, 500).unwrap(), 100);
        assert_eq!(
            clamped(&q(&[("limit", "0")]), "limit", 100, 1, 500).unwrap(),
            1
        );
        assert_eq!(
            clamped(&q(&[("limit", "-5")]), "limit", 100, 1, 500).unwrap(),
            1
        );
        assert_eq!(
            clamped(
                &q(&[("limit", "99999999999999999999999")]),
                "limit",
                100,
                1,
                500
            )
            .unwrap(),
            500
        );
        assert_eq!(
            clamped(
                &q(&[("limit", "-99999999999999999999999")]),
                "limit",
                1,
                1,
                500
            )
            .unwrap(),
            1
        );
        for bad in ["", "ten", "1.5", "1e3", "-", "0x10"] {
            assert!(
                clamped(&q(&[("limit", bad)]), "limit", 100, 1, 500).is_err(),
                "{bad:?}"
            );
        }
    }
}
