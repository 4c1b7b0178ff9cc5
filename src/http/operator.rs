//! The operator API (bearer team secret key, every call scoped to that team). So far: the
//! reply / private-note endpoint, whose appends take the same per-ticket path as visitors'.

use super::errors::ApiError;
use super::extract::{self, json_object, operator_team, opt_str, req_str};
use super::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use colloquy_actors::domain::{format_utc, AuthorName, AuthorType, MessageContent};
use colloquy_actors::store::{AppendResult, NewMessage};
use serde_json::{json, Value};
use uuid::Uuid;

/// Registers the operator routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/api/conversations/tickets/{ticket_id}/messages",
        web::post().to(post_reply),
    );
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
