//! Queries of the operator API: the inbox, one ticket with every message, status and
//! assignment changes, read marks, settings and erasure. Operators see private notes.

use super::{db_error, PgStore};
use chrono::{DateTime, Utc};
use colloquy_actors::domain::{AuthorType, TicketStatus};
use colloquy_actors::store::{StoreError, TicketFacts};
use serde_json::Value;
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::Row;
use uuid::Uuid;

/// The operator view of a ticket: counts and previews include private notes.
const TICKET_SELECT: &str = "
    SELECT t.id, t.ticket_number, t.status, COALESCE(t.distinct_id, t.linked_distinct_id, t.claimed_distinct_id) AS distinct_id,
           t.widget_session_id, t.assignee, t.traits, t.unread_team_count, t.created_at,
           t.last_created_at, t.visitor_read_at,
           (SELECT count(*) FROM messages m WHERE m.ticket_id = t.id) AS message_count,
           (SELECT m.content FROM messages m WHERE m.ticket_id = t.id
              ORDER BY m.created_at DESC LIMIT 1) AS last_message,
           COALESCE((SELECT max(f.score) FROM suspicion_flags f
              WHERE f.team_id = t.team_id AND f.ticket_id = t.id), 0)::int4 AS suspicion_score
    FROM tickets t";

/// A ticket as operators see it: counts and previews include private notes. The HTTP layer
/// decides how it is written out.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorTicketRow {
    /// Ticket id.
    pub id: Uuid,
    /// Per team from 1.
    pub ticket_number: i64,
    /// Status.
    pub status: TicketStatus,
    /// The visitor: the ticket's own distinct_id, else the verified person it is linked to,
    /// else the one its visitor named.
    pub distinct_id: Option<String>,
    /// The v1 session key, for tickets opened there.
    pub widget_session_id: Option<Uuid>,
    /// Assigned operator.
    pub assignee: Option<String>,
    /// The visitor's traits (a JSON object).
    pub traits: Value,
    /// All messages, private notes included.
    pub message_count: i64,
    /// Visitor messages operators have not read.
    pub unread_team_count: i32,
    /// The last message's text, private notes included.
    pub last_message: Option<String>,
    /// When the last message was written.
    pub last_message_at: Option<DateTime<Utc>>,
    /// Opened.
    pub created_at: DateTime<Utc>,
    /// Highest suspicion score of the ticket (0: none).
    pub suspicion_score: i32,
    /// When the visitor last marked it read.
    pub visitor_read_at: Option<DateTime<Utc>>,
}

impl OperatorTicketRow {
    fn read(r: &Row) -> Self {
        Self {
            id: r.get("id"),
            ticket_number: r.get("ticket_number"),
            status: TicketStatus::from_stored(r.get("status")),
            distinct_id: r.get("distinct_id"),
            widget_session_id: r.get("widget_session_id"),
            assignee: r.get("assignee"),
            traits: r.get::<_, Json<Value>>("traits").0,
            message_count: r.get("message_count"),
            unread_team_count: r.get("unread_team_count"),
            last_message: r.get("last_message"),
            last_message_at: r.get("last_created_at"),
            created_at: r.get("created_at"),
            suspicion_score: r.get("suspicion_score"),
            visitor_read_at: r.get("visitor_read_at"),
        }
    }
}

/// A message as operators see it: unescaped, private notes included.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorMessageRow {
    /// Message id.
    pub id: Uuid,
    /// Raw text.
    pub content: String,
    /// Rich content, if any.
    pub rich_content: Option<Value>,
    /// Who wrote it.
    pub author_type: AuthorType,
    /// Author name.
    pub author_name: Option<String>,
    /// A private note.
    pub is_private: bool,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

/// Inbox filters.
#[derive(Debug, Default)]
pub struct InboxFilter {
    /// Only this status.
    pub status: Option<TicketStatus>,
    /// Only this visitor.
    pub distinct_id: Option<String>,
    /// Only this assignee.
    pub assignee: Option<String>,
}

impl PgStore {
    /// The team's tickets, newest activity first, with the total matching.
    pub async fn inbox(
        &self,
        team_id: Uuid,
        f: &InboxFilter,
        limit: i64,
        offset: i64,
    ) -> Result<(i64, Vec<OperatorTicketRow>), StoreError> {
        let client = self.client().await?;
        let filter = "WHERE t.team_id = $1 AND ($2::text IS NULL OR t.status = $2)
            AND ($3::text IS NULL OR COALESCE(t.distinct_id, t.linked_distinct_id, t.claimed_distinct_id) = $3)
            AND ($4::text IS NULL OR t.assignee = $4)";
        let page = client
            .prepare_cached(&format!(
                "{TICKET_SELECT} {filter} ORDER BY t.last_created_at DESC, t.id DESC LIMIT $5 OFFSET $6"
            ))
            .await
            .map_err(db_error)?;
        let count = client
            .prepare_cached(&format!("SELECT count(*) FROM tickets t {filter}"))
            .await
            .map_err(db_error)?;
        let status = f.status.map(TicketStatus::as_str);
        let p: [&(dyn ToSql + Sync); 6] = [
            &team_id,
            &status,
            &f.distinct_id,
            &f.assignee,
            &limit,
            &offset,
        ];
        let (rows, total) =
            tokio::try_join!(client.query(&page, &p), client.query_one(&count, &p[..4]))
                .map_err(db_error)?;
        Ok((
            total.get(0),
            rows.iter().map(OperatorTicketRow::read).collect(),
        ))
    }

    /// One ticket, as operators see it (without its messages), or `None`.
    pub async fn ticket(
        &self,
        team_id: Uuid,
        ticket_id: Uuid,
    ) -> Result<Option<OperatorTicketRow>, StoreError> {
        let client = self.client().await?;
        let one = client
            .prepare_cached(&format!(
                "{TICKET_SELECT} WHERE t.id = $1 AND t.team_id = $2"
            ))
            .await
            .map_err(db_error)?;
        let row = client
            .query_opt(&one, &[&ticket_id, &team_id])
            .await
            .map_err(db_error)?;
        Ok(row.as_ref().map(OperatorTicketRow::read))
    }

    /// One ticket with all its messages (ascending), private notes included, or `None`.
    pub async fn ticket_with_messages(
        &self,
        team_id: Uuid,
        ticket_id: Uuid,
    ) -> Result<Option<(OperatorTicketRow, Vec<OperatorMessageRow>)>, StoreError> {
        let client = self.client().await?;
        let one = client
            .prepare_cached(&format!(
                "{TICKET_SELECT} WHERE t.id = $1 AND t.team_id = $2"
            ))
            .await
            .map_err(db_error)?;
        let msgs = client
            .prepare_cached(
                "SELECT id, content, rich_content, author_type, author_name, is_private, created_at
                 FROM messages WHERE ticket_id = $1 AND team_id = $2 ORDER BY created_at",
            )
            .await
            .map_err(db_error)?;
        let p: [&(dyn ToSql + Sync); 2] = [&ticket_id, &team_id];
        let (ticket, rows) = tokio::try_join!(client.query_opt(&one, &p), client.query(&msgs, &p))
            .map_err(db_error)?;
        let Some(ticket) = ticket else {
            return Ok(None);
        };
        let messages = rows
            .iter()
            .map(|r| OperatorMessageRow {
                id: r.get(0),
                content: r.get(1),
                rich_content: r.get::<_, Option<Json<Value>>>(2).map(|j| j.0),
                author_type: AuthorType::from_stored(r.get(3)),
                author_name: r.get(4),
                is_private: r.get(5),
                created_at: r.get(6),
            })
            .collect();
        Ok(Some((OperatorTicketRow::read(&ticket), messages)))
    }

    /// Changes status and/or assignee (`Some(None)` unassigns); `None` if no such ticket.
    pub async fn patch_ticket(
        &self,
        team_id: Uuid,
        ticket_id: Uuid,
        status: Option<TicketStatus>,
        assignee: Option<Option<String>>,
    ) -> Result<Option<TicketFacts>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE tickets SET status = COALESCE($3, status),
                     assignee = CASE WHEN $4 THEN $5 ELSE assignee END,
                     version = version + 1
                 WHERE id = $1 AND team_id = $2
                 RETURNING status, unread_customer_count, version",
            )
            .await
            .map_err(db_error)?;
        let set_assignee = assignee.is_some();
        let assignee = assignee.flatten();
        let row = client
            .query_opt(
                &stmt,
                &[
                    &ticket_id,
                    &team_id,
                    &status.map(TicketStatus::as_str),
                    &set_assignee,
                    &assignee,
                ],
            )
            .await
            .map_err(db_error)?;
        Ok(row.map(|r| facts(&r)))
    }

    /// Clears the visitor's unread count; `None` if no such ticket.
    pub async fn mark_read_by_visitor(
        &self,
        team_id: Uuid,
        ticket_id: Uuid,
    ) -> Result<Option<TicketFacts>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE tickets SET unread_customer_count = 0, visitor_read_at = now(),
                     version = version + 1
                 WHERE id = $1 AND team_id = $2
                 RETURNING status, unread_customer_count, version",
            )
            .await
            .map_err(db_error)?;
        let row = client
            .query_opt(&stmt, &[&ticket_id, &team_id])
            .await
            .map_err(db_error)?;
        Ok(row.map(|r| facts(&r)))
    }

    /// Clears the operators' unread count (an operator read the ticket); `false` if no such
    /// ticket. The count lives only in the row (appends add to it in SQL), so no actor holds
    /// a copy to refresh.
    pub async fn mark_read_by_team(
        &self,
        team_id: Uuid,
        ticket_id: Uuid,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE tickets SET unread_team_count = 0 WHERE id = $1 AND team_id = $2",
            )
            .await
            .map_err(db_error)?;
        let n = client
            .execute(&stmt, &[&ticket_id, &team_id])
            .await
            .map_err(db_error)?;
        Ok(n > 0)
    }

    /// Erases a visitor, in one transaction: every ticket opened by, linked to or claiming
    /// this distinct_id or naming one of their emails in `traits.email` (the distinct_id itself and
    /// the emails of those tickets, compared case-insensitively), with its messages; their
    /// suspicion flags, blocks of their distinct_id, restore tokens and outbox mails (to
    /// them or naming their email); and their distinct_id on messages kept in others' tickets.
    /// Returns the erased ticket ids.
    pub async fn erase_person(
        &self,
        team_id: Uuid,
        distinct_id: &str,
    ) -> Result<Vec<Uuid>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let emails = tx
            .prepare_cached(
                "SELECT array_agg(DISTINCT e) FROM (
                     SELECT lower($2::text) AS e
                     UNION
                     SELECT lower(traits->>'email') FROM tickets
                     WHERE team_id = $1 AND (distinct_id = $2 OR linked_distinct_id = $2)
                       AND traits->>'email' IS NOT NULL AND traits->>'email' <> ''
                 ) AS x",
            )
            .await
            .map_err(db_error)?;
        let emails: Vec<String> = tx
            .query_one(&emails, &[&team_id, &distinct_id])
            .await
            .map_err(db_error)?
            .get::<_, Option<Vec<String>>>(0)
            .unwrap_or_default();
        let tickets = tx
            .prepare_cached(
                "DELETE FROM tickets WHERE team_id = $1
                   AND (distinct_id = $2 OR linked_distinct_id = $2 OR claimed_distinct_id = $2
                        OR lower(traits->>'email') = ANY($3))
                 RETURNING id",
            )
            .await
            .map_err(db_error)?;
        let erased: Vec<Uuid> = tx
            .query(&tickets, &[&team_id, &distinct_id, &emails])
            .await
            .map_err(db_error)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let statements: [(&str, &[&(dyn ToSql + Sync)]); 5] = [
            (
                "DELETE FROM suspicion_flags WHERE team_id = $1
                   AND (distinct_id = $2 OR lower(distinct_id) = ANY($3) OR ticket_id = ANY($4))",
                &[&team_id, &distinct_id, &emails, &erased],
            ),
            (
                "DELETE FROM blocks WHERE team_id = $1
                   AND (distinct_id = $2 OR lower(distinct_id) = ANY($3))",
                &[&team_id, &distinct_id, &emails],
            ),
            // Deleting a token deletes its mail (ON DELETE CASCADE).
            (
                "DELETE FROM restore_tokens WHERE team_id = $1 AND lower(email) = ANY($2)",
                &[&team_id, &emails],
            ),
            (
                "DELETE FROM outbox o WHERE team_id = $1
                   AND (lower(recipient) = ANY($2)
                        OR EXISTS (SELECT 1 FROM unnest($2::text[]) AS e
                                   WHERE e LIKE '%_@_%' AND strpos(lower(o.body), e) > 0))",
                &[&team_id, &emails],
            ),
            (
                "UPDATE messages SET distinct_id = NULL WHERE team_id = $1 AND distinct_id = $2",
                &[&team_id, &distinct_id],
            ),
        ];
        for (sql, params) in statements {
            let stmt = tx.prepare_cached(sql).await.map_err(db_error)?;
            tx.execute(&stmt, params).await.map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(erased)
    }
}

fn facts(r: &Row) -> TicketFacts {
    TicketFacts {
        status: TicketStatus::from_stored(r.get(0)),
        unread_customer: r.get(1),
        version: r.get(2),
    }
}
