//! The operator API (bearer team secret key, every call scoped to that team): the inbox, a
//! ticket with every message (private notes included, unescaped), replies and private notes
//! (appended through the same ticket actor as visitors' messages), status and assignment,
//! typing, and erasing a visitor.

use super::errors::ApiError;
use super::extract::{self, json_object, operator_team, opt_str, req_str};
use super::AppState;
use crate::store::InboxFilter;
use crate::teams::{SettingsPatch, Team};
use actix_web::{web, HttpRequest, HttpResponse};
use colloquy_actors::domain::{format_utc, AuthorName, AuthorType, MessageContent, TicketStatus};
use colloquy_actors::store::{AppendResult, NewMessage};
use serde_json::{json, Value};
use uuid::Uuid;

/// Registers the operator routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/conversations")
            .route("/tickets", web::get().to(inbox))
            .route("/tickets/{ticket_id}", web::get().to(ticket))
            .route("/tickets/{ticket_id}", web::patch().to(patch_ticket))
            .route("/tickets/{ticket_id}/messages", web::post().to(post_reply))
            .route("/tickets/{ticket_id}/typing", web::post().to(typing))
            .route("/persons/{distinct_id}", web::delete().to(erase_person))
            .route("/suspicious", web::get().to(suspicious))
            .route("/blocks", web::get().to(list_blocks))
            .route("/blocks", web::post().to(create_block))
            .route("/blocks/{block_id}", web::delete().to(delete_block))
            .route("/settings", web::get().to(get_settings))
            .route("/settings", web::patch().to(patch_settings))
            .route(
                "/settings/rotate_public_token",
                web::post().to(rotate_public_token),
            )
            .route(
                "/settings/rotate_identity_secret",
                web::post().to(rotate_identity_secret),
            ),
    );
}

/// `GET /api/conversations/tickets`: the inbox, newest activity first.
async fn inbox(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let team = operator_team(&req, &state).await?;
    let q = extract::query(&req)?;
    let non_empty = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
    let filter = InboxFilter {
        status: non_empty("status")
            .map(|s| TicketStatus::parse(&s, "status"))
            .transpose()?,
        distinct_id: non_empty("distinct_id"),
        assignee: non_empty("assignee"),
    };
    let limit = extract::clamped(&q, "limit", 50, 1, 500)?;
    let offset = extract::clamped(&q, "offset", 0, 0, 1_000_000_000)?;
    let (count, results) = state.store.inbox(team.id, &filter, limit, offset).await?;
    Ok(HttpResponse::Ok().json(json!({"count": count, "results": results})))
}

/// `GET /api/conversations/tickets/{id}`: the ticket and all its messages.
async fn ticket(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let team = operator_team(&req, &state).await?;
    let ticket_id = extract::uuid(&path, "ticket_id")?;
    let found = state.store.ticket_with_messages(team.id, ticket_id).await?;
    Ok(HttpResponse::Ok().json(found.ok_or(ApiError::NotFound)?))
}

/// `PATCH /api/conversations/tickets/{id}` `{status?, assignee?}`.
async fn patch_ticket(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let team = operator_team(&req, &state).await?;
    let ticket_id = extract::uuid(&path, "ticket_id")?;
    let body = json_object(&req, payload).await?;
    if let Some(unknown) = body
        .keys()
        .find(|k| !["status", "assignee"].contains(&k.as_str()))
    {
        return Err(ApiError::invalid(unknown, "unknown field"));
    }
    let status = opt_str(&body, "status")?
        .map(|s| TicketStatus::parse(s, "status"))
        .transpose()?;
    let assignee = match body.get("assignee") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(s)) if s.chars().count() <= 200 => {
            Some(Some(s.trim().to_owned()).filter(|s| !s.is_empty()))
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "assignee",
                "assignee must be a string of at most 200 characters or null",
            ))
        }
    };
    let facts = state
        .store
        .patch_ticket(team.id, ticket_id, status, assignee)
        .await?
        .ok_or(ApiError::NotFound)?;
    state.tickets.refresh(ticket_id, facts);
    let found = state.store.ticket_with_messages(team.id, ticket_id).await?;
    let mut ticket = found.ok_or(ApiError::NotFound)?;
    if let Some(obj) = ticket.as_object_mut() {
        obj.remove("messages");
    }
    Ok(HttpResponse::Ok().json(ticket))
}

/// `POST /api/conversations/tickets/{id}/typing`: tells the visitor's open streams.
async fn typing(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let team = operator_team(&req, &state).await?;
    let ticket_id = extract::uuid(&path, "ticket_id")?;
    state.tickets.typing(team.id, ticket_id, None).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `DELETE /api/conversations/persons/{distinct_id}`: erases the visitor's tickets and messages.
async fn erase_person(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let team = operator_team(&req, &state).await?;
    let distinct_id = path.trim();
    if distinct_id.is_empty() || distinct_id.chars().count() > 400 {
        return Err(ApiError::invalid(
            "distinct_id",
            "distinct_id must be 1 to 400 characters",
        ));
    }
    let erased = state.store.erase_person(team.id, distinct_id).await?;
    for id in &erased {
        state.tickets.evict(*id).await;
    }
    tracing::info!(team_id = %team.id, tickets = erased.len(), "erased a visitor");
    Ok(HttpResponse::Ok().json(json!({"deleted_tickets": erased.len()})))
}

/// `POST /api/conversations/tickets/{id}/messages`: a reply (`human` or `AI`) or a private note.
#[tracing::instrument(skip_all, fields(team_id))]
async fn post_reply(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let team = operator_team(&req, &state).await?;
    tracing::Span::current().record("team_id", tracing::field::display(team.id));
    let ticket_id = extract::uuid(&path, "ticket_id")?;
    let body = json_object(&req, payload).await?;
    let content = MessageContent::parse(req_str(&body, "content")?, "content")?;
    let author_type = match opt_str(&body, "author_type")? {
        None => AuthorType::Human,
        Some(raw) => AuthorType::parse_operator(raw)?,
    };
    let author_name = opt_str(&body, "author_name")?
        .map(|n| AuthorName::parse(n, "author_name"))
        .transpose()?
        .flatten();
    let is_private = match body.get("is_private") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::invalid(
                "is_private",
                "is_private must be a boolean",
            ))
        }
    };
    let message = NewMessage {
        id: Uuid::now_v7(),
        content: content.into_string(),
        author_type,
        author_name: author_name.map(|n| n.as_str().to_owned()),
        is_private,
        distinct_id: None,
        client_message_id: None,
        traits: None,
        reopens: false,
    };
    let appended = state
        .tickets
        .append(team.id, ticket_id, None, message)
        .await?;
    let AppendResult::Stored(m) = appended.result else {
        return Err(ApiError::Internal("operator message was not stored".into()));
    };
    Ok(HttpResponse::Created().json(json!({
        "id": m.id,
        "ticket_id": ticket_id,
        "content": m.content,
        "rich_content": m.rich_content,
        "author_type": m.author_type.as_str(),
        "author_name": m.author_name,
        "is_private": m.is_private,
        "created_at": format_utc(m.created_at),
        "ticket_status": appended.status.as_str(),
    })))
}

fn settings_json(team: &Team) -> Value {
    json!({
        "team_id": team.id,
        "name": team.name,
        "public_token": team.public_token,
        "conversations_enabled": team.conversations_enabled,
        "allowed_widget_domains": team.allowed_widget_domains.entries(),
        "rate_limits": team.rate_limits,
        "identity_verification": team.identity_verification,
        "identity_secret": team.identity_secret,
        "notification_recipients": team.notification_recipients,
        "suspicion": team.suspicion,
    })
}

/// `GET /api/conversations/settings`.
async fn get_settings(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let team = operator_team(&req, &state).await?;
    Ok(HttpResponse::Ok().json(settings_json(&team)))
}

/// `PATCH /api/conversations/settings`: takes effect on the next request (cache dropped).
async fn patch_settings(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let team = operator_team(&req, &state).await?;
    let body = json_object(&req, payload).await?;
    let patch = SettingsPatch::parse(&team, &body)?;
    let updated = state
        .store
        .update_settings(team.id, &patch)
        .await?
        .ok_or(ApiError::NotFound)?;
    state.teams.invalidate(team.id);
    Ok(HttpResponse::Ok().json(settings_json(&updated)))
}

/// `POST /api/conversations/settings/rotate_public_token`: the old token stops working at once.
async fn rotate_public_token(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let team = operator_team(&req, &state).await?;
    let token = crate::teams::new_public_token();
    state.store.set_public_token(team.id, &token).await?;
    state.teams.invalidate(team.id);
    Ok(HttpResponse::Ok().json(json!({"public_token": token})))
}

/// `POST /api/conversations/settings/rotate_identity_secret`.
async fn rotate_identity_secret(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let team = operator_team(&req, &state).await?;
    let secret = crate::teams::new_identity_secret();
    state.store.set_identity_secret(team.id, &secret).await?;
    state.teams.invalidate(team.id);
    Ok(HttpResponse::Ok().json(json!({"identity_secret": secret})))
}

/// `GET /api/conversations/suspicious?hours=24`: visitors and IPs at or above the team's
/// flag threshold, with scores, reasons and tickets.
async fn suspicious(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let team = operator_team(&req, &state).await?;
    let q = extract::query(&req)?;
    let hours = extract::clamped(&q, "hours", 24, 1, 24 * 30)? as i32;
    let threshold = i16::from(team.suspicion.flag_threshold);
    let results = state.store.suspicious(team.id, threshold, hours).await?;
    Ok(HttpResponse::Ok().json(json!({
        "flag_threshold": threshold,
        "block_threshold": team.suspicion.block_threshold,
        "results": results,
    })))
}

/// `GET /api/conversations/blocks`: the team's active blocks.
async fn list_blocks(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let team = operator_team(&req, &state).await?;
    let results = state.store.list_blocks(team.id).await?;
    Ok(HttpResponse::Ok().json(json!({"results": results})))
}

/// `POST /api/conversations/blocks` `{ip | distinct_id, reason, expires_at?}`: takes effect on
/// this node at once and on every node within 2 s.
async fn create_block(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let team = operator_team(&req, &state).await?;
    let body = json_object(&req, payload).await?;
    if let Some(unknown) = body
        .keys()
        .find(|k| !["ip", "distinct_id", "reason", "expires_at"].contains(&k.as_str()))
    {
        return Err(ApiError::invalid(unknown, "unknown field"));
    }
    let ip = opt_str(&body, "ip")?
        .map(|s| s.trim().parse::<std::net::IpAddr>())
        .transpose()
        .map_err(|_| ApiError::invalid("ip", "ip must be an IPv4 or IPv6 address"))?;
    let distinct_id = opt_str(&body, "distinct_id")?
        .map(str::trim)
        .filter(|d| !d.is_empty());
    if distinct_id.is_some_and(|d| d.chars().count() > 400) {
        return Err(ApiError::invalid(
            "distinct_id",
            "distinct_id must be at most 400 characters",
        ));
    }
    if ip.is_some() == distinct_id.is_some() {
        return Err(ApiError::invalid(
            "ip",
            "give exactly one of ip and distinct_id",
        ));
    }
    let reason = opt_str(&body, "reason")?.unwrap_or_default().trim();
    if reason.chars().count() > 500 {
        return Err(ApiError::invalid(
            "reason",
            "reason must be at most 500 characters",
        ));
    }
    let expires_at = opt_str(&body, "expires_at")?
        .map(|s| colloquy_actors::domain::parse_timestamp(s, "expires_at"))
        .transpose()?;
    let block = state
        .store
        .create_block(team.id, ip, distinct_id, reason, expires_at)
        .await?;
    state.blocks.refresh(&state.store).await;
    Ok(HttpResponse::Created().json(block))
}

/// `DELETE /api/conversations/blocks/{id}`.
async fn delete_block(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let team = operator_team(&req, &state).await?;
    let id = extract::uuid(&path, "block_id")?;
    if !state.store.delete_block(team.id, id).await? {
        return Err(ApiError::NotFound);
    }
    state.blocks.refresh(&state.store).await;
    Ok(HttpResponse::NoContent().finish())
}
