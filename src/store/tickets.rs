//! Ticket listings for the widget surfaces.

use super::{db_error, PgStore};
use chrono::{DateTime, Utc};
use colloquy_actors::domain::{TicketStatus, VisitorKey};
use colloquy_actors::store::StoreError;
use uuid::Uuid;

/// One row of a visitor's ticket list (public messages only).
#[derive(Debug, Clone)]
pub struct TicketSummary {
    /// Ticket id.
    pub id: Uuid,
    /// Per-team number.
    pub ticket_number: i64,
    /// Status.
    pub status: TicketStatus,
    /// Newest public message text.
    pub last_message: Option<String>,
    /// Its time.
    pub last_message_at: Option<DateTime<Utc>>,
    /// Public messages.
    pub message_count: i32,
    /// Operator messages the visitor has not read.
    pub unread_count: i32,
    /// When the ticket was opened.
    pub created_at: DateTime<Utc>,
}

/// A page of tickets and the total matching the filter.
#[derive(Debug, Clone)]
pub struct TicketListing {
    /// Total matching, regardless of paging.
    pub count: i64,
    /// The page, newest activity first.
    pub results: Vec<TicketSummary>,
}

impl PgStore {
    /// The tickets a visitor key reaches, newest `last_message_at` first: a distinct_id's own
    /// tickets, a widget session's, or every ticket of a verified person.
    pub async fn visitor_tickets(
        &self,
        team_id: Uuid,
        key: &VisitorKey,
        status: Option<TicketStatus>,
        limit: i64,
        offset: i64,
    ) -> Result<TicketListing, StoreError> {
        let client = self.reader().await?;
        let (owner, id) = match key {
            VisitorKey::DistinctId(d) => ("distinct_id = $2", d.to_string()),
            VisitorKey::WidgetSession(s) => ("widget_session_id = ($2::text)::uuid", s.to_string()),
            VisitorKey::Verified(d) => (
                "(distinct_id = $2 OR linked_distinct_id = $2)",
                d.to_string(),
            ),
        };
        let filter =
            format!("WHERE team_id = $1 AND {owner} AND ($3::text IS NULL OR status = $3)");
        let page = client
            .prepare_cached(&format!(
                "SELECT id, ticket_number, status, last_message, last_message_at, message_count,
                        unread_customer_count, created_at
                 FROM tickets {filter}
                 ORDER BY last_message_at DESC NULLS LAST, id DESC
                 LIMIT $4 OFFSET $5"
            ))
            .await
            .map_err(db_error)?;
        let count = client
            .prepare_cached(&format!("SELECT count(*) FROM tickets {filter}"))
            .await
            .map_err(db_error)?;
        let status = status.map(TicketStatus::as_str);
        // Both queries go out at once on the one connection (tokio-postgres pipelines them).
        let page_params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
            [&team_id, &id, &status, &limit, &offset];
        let count_params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
            [&team_id, &id, &status];
        let (rows, total) = tokio::try_join!(
            client.query(&page, &page_params),
            client.query_one(&count, &count_params),
        )
        .map_err(db_error)?;
        let results = rows
            .iter()
            .map(|r| TicketSummary {
                id: r.get(0),
                ticket_number: r.get(1),
                status: TicketStatus::from_stored(r.get(2)),
                last_message: r.get(3),
                last_message_at: r.get(4),
                message_count: r.get(5),
                unread_count: r.get(6),
                created_at: r.get(7),
            })
            .collect();
        Ok(TicketListing {
            count: total.get(0),
            results,
        })
    }

    /// The current status of a ticket, for answering an idempotent replay.
    pub async fn ticket_status(
        &self,
        team_id: Uuid,
        ticket_id: Uuid,
    ) -> Result<Option<(TicketStatus, i32)>, StoreError> {
        let client = self.reader().await?;
        let stmt = client
            .prepare_cached(
                "SELECT status, unread_customer_count FROM tickets WHERE id = $1 AND team_id = $2",
            )
            .await
            .map_err(db_error)?;
        let row = client
            .query_opt(&stmt, &[&ticket_id, &team_id])
            .await
            .map_err(db_error)?;
        Ok(row.map(|r| (TicketStatus::from_stored(r.get(0)), r.get(1))))
    }
}
