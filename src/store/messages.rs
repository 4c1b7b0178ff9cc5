//! The core's storage port on PostgreSQL: opening tickets, appending batches under the
//! ticket's row lock, paging messages, recording suspicion flags.

use super::{db_error, PgStore};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use colloquy_actors::domain::{
    apply_batch, stamp_batch, AuthorType, DistinctId, TicketBefore, TicketStatus, VisitorKey,
};
use colloquy_actors::store::{
    AppendOutcome, MessagePage, NewBlock, NewMessage, NewTicket, Opened, Replay, Store, StoreError,
    StoredMessage, SuspicionFlag, TicketState,
};
use tokio_postgres::types::Json;
use tokio_postgres::Row;
use uuid::Uuid;

const INSERT_MESSAGES: &str = "
    INSERT INTO messages (id, team_id, ticket_id, content, author_type, author_name, is_private,
                          distinct_id, client_message_id, created_at)
    SELECT u.id, u.team_id, u.ticket_id, u.content, u.author_type, u.author_name, u.is_private,
           u.distinct_id, u.client_message_id, u.created_at
    FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[],
                $7::bool[], $8::text[], $9::text[], $10::timestamptz[])
         AS u(team_id, ticket_id, id, content, author_type, author_name, is_private,
              distinct_id, client_message_id, created_at)
    ON CONFLICT (team_id, distinct_id, client_message_id) WHERE client_message_id IS NOT NULL
    DO NOTHING
    RETURNING id";

const FIND_REPLAY: &str = "
    SELECT ticket_id, id, created_at FROM messages
    WHERE team_id = $1 AND distinct_id = $2 AND client_message_id = $3";

/// Column arrays for one multi-row INSERT of messages.
#[derive(Default)]
pub(super) struct Rows {
    team_ids: Vec<Uuid>,
    ticket_ids: Vec<Uuid>,
    ids: Vec<Uuid>,
    contents: Vec<String>,
    author_types: Vec<&'static str>,
    author_names: Vec<Option<String>>,
    privates: Vec<bool>,
    distinct_ids: Vec<Option<String>>,
    client_ids: Vec<Option<String>>,
    created: Vec<DateTime<Utc>>,
}

impl Rows {
    pub(super) fn push(
        &mut self,
        (team_id, ticket_id): (Uuid, Uuid),
        m: &NewMessage,
        author_name: Option<String>,
        at: DateTime<Utc>,
    ) {
        self.team_ids.push(team_id);
        self.ticket_ids.push(ticket_id);
        self.ids.push(m.id);
        self.contents.push(m.content.clone());
        self.author_types.push(m.author_type.as_str());
        self.author_names.push(author_name);
        self.privates.push(m.is_private);
        self.distinct_ids.push(m.distinct_id.clone());
        self.client_ids.push(m.client_message_id.clone());
        self.created.push(at);
    }

    /// Inserts every row; returns the ids written (an idempotency key used before skips its row).
    pub(super) async fn insert(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
    ) -> Result<Vec<Uuid>, StoreError> {
        let stmt = tx.prepare_cached(INSERT_MESSAGES).await.map_err(db_error)?;
        let rows = tx
            .query(
                &stmt,
                &[
                    &self.team_ids,
                    &self.ticket_ids,
                    &self.ids,
                    &self.contents,
                    &self.author_types,
                    &self.author_names,
                    &self.privates,
                    &self.distinct_ids,
                    &self.client_ids,
                    &self.created,
                ],
            )
            .await
            .map_err(db_error)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}

pub(super) fn stored(
    m: &NewMessage,
    author_name: Option<String>,
    created_at: DateTime<Utc>,
) -> StoredMessage {
    StoredMessage {
        id: m.id,
        content: m.content.clone(),
        rich_content: None,
        author_type: m.author_type,
        author_name,
        is_private: m.is_private,
        created_at,
    }
}

/// A message from a row with its columns by name (`id`, `content`, …).
pub(super) fn message_from_row(r: &Row) -> StoredMessage {
    StoredMessage {
        id: r.get("id"),
        content: r.get("content"),
        rich_content: r
            .get::<_, Option<Json<serde_json::Value>>>("rich_content")
            .map(|j| j.0),
        author_type: AuthorType::from_stored(r.get("author_type")),
        author_name: r.get("author_name"),
        is_private: r.get("is_private"),
        created_at: r.get("created_at"),
    }
}

impl PgStore {
    /// The first write of an idempotency key, if any.
    pub async fn find_replay(
        &self,
        team_id: Uuid,
        distinct_id: &str,
        client_message_id: &str,
    ) -> Result<Option<Replay>, StoreError> {
        let client = self.reader().await?;
        let stmt = client.prepare_cached(FIND_REPLAY).await.map_err(db_error)?;
        let row = client
            .query_opt(&stmt, &[&team_id, &distinct_id, &client_message_id])
            .await
            .map_err(db_error)?;
        Ok(row.map(|r| Replay {
            ticket_id: r.get(0),
            message_id: r.get(1),
            created_at: r.get(2),
        }))
    }
}

pub(super) async fn replay_in(
    tx: &deadpool_postgres::Transaction<'_>,
    team_id: Uuid,
    m: &NewMessage,
) -> Result<Replay, StoreError> {
    let stmt = tx.prepare_cached(FIND_REPLAY).await.map_err(db_error)?;
    let row = tx
        .query_one(&stmt, &[&team_id, &m.distinct_id, &m.client_message_id])
        .await
        .map_err(db_error)?;
    Ok(Replay {
        ticket_id: row.get(0),
        message_id: row.get(1),
        created_at: row.get(2),
    })
}

#[async_trait]
impl Store for PgStore {
    async fn load_ticket(
        &self,
        team_id: Uuid,
        ticket_id: Uuid,
    ) -> Result<Option<TicketState>, StoreError> {
        let client = self.reader().await?;
        let stmt = client
            .prepare_cached(
                "SELECT status, distinct_id, widget_session_id, last_created_at,
                        unread_customer_count, version, linked_distinct_id
                 FROM tickets WHERE id = $1 AND team_id = $2",
            )
            .await
            .map_err(db_error)?;
        let Some(row) = client
            .query_opt(&stmt, &[&ticket_id, &team_id])
            .await
            .map_err(db_error)?
        else {
            return Ok(None);
        };
        let owner = match (
            row.get::<_, Option<String>>(1),
            row.get::<_, Option<Uuid>>(2),
        ) {
            (Some(d), _) => VisitorKey::DistinctId(DistinctId::from_stored(d)),
            (None, Some(s)) => VisitorKey::WidgetSession(s),
            (None, None) => {
                return Err(StoreError::Internal(format!(
                    "ticket {ticket_id} has no key"
                )))
            }
        };
        Ok(Some(TicketState {
            id: ticket_id,
            team_id,
            owner,
            status: TicketStatus::from_stored(row.get(0)),
            last_created_at: row.get(3),
            unread_customer: row.get(4),
            version: row.get(5),
            linked_distinct_id: row.get(6),
        }))
    }

    async fn open_ticket(&self, t: NewTicket) -> Result<Opened, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let counter = tx
            .prepare_cached(
                "INSERT INTO ticket_counters (team_id, last_number) VALUES ($1, 1)
                 ON CONFLICT (team_id) DO UPDATE SET last_number = ticket_counters.last_number + 1
                 RETURNING last_number, clock_timestamp()",
            )
            .await
            .map_err(db_error)?;
        let row = tx
            .query_one(&counter, &[&t.team_id])
            .await
            .map_err(db_error)?;
        let number: i64 = row.get(0);
        // The first message is a batch of one on a ticket that has nothing yet.
        let first = std::slice::from_ref(&t.first);
        let before = TicketBefore::opening(t.traits);
        let stamps = stamp_batch(&before, row.get(1), first);
        let (Some(stamp), Some(after)) = (
            stamps.first(),
            apply_batch(&before, first, &stamps, &[true]),
        ) else {
            return Err(StoreError::Internal(
                "a first message without a place".into(),
            ));
        };
        let mut traits = before.traits.unwrap_or_default();
        if let Some(changed) = &after.traits {
            traits.merge(changed);
        }
        let (last_public, last_public_at) = after.last_public.unzip();
        let (distinct_id, session) = match &t.owner {
            VisitorKey::DistinctId(d) => (Some(d.as_str()), None),
            VisitorKey::Verified(d) => (Some(d.as_str()), None),
            VisitorKey::WidgetSession(s) => (None, Some(*s)),
        };
        let insert = tx
            .prepare_cached(
                "INSERT INTO tickets (id, team_id, ticket_number, distinct_id, widget_session_id,
                     linked_distinct_id, claimed_distinct_id, traits, status,
                     unread_team_count, unread_customer_count, message_count, last_message,
                     last_message_at, last_created_at, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15)",
            )
            .await
            .map_err(db_error)?;
        tx.execute(
            &insert,
            &[
                &t.id,
                &t.team_id,
                &number,
                &distinct_id,
                &session,
                &t.linked_distinct_id,
                &t.claimed_distinct_id,
                &Json(traits.to_json()),
                &after.status.as_str(),
                &after.unread_team,
                &after.unread_customer,
                &after.message_count,
                &last_public,
                &last_public_at,
                &after.last_created_at,
            ],
        )
        .await
        .map_err(db_error)?;
        let mut rows = Rows::default();
        rows.push(
            (t.team_id, t.id),
            &t.first,
            stamp.author_name.clone(),
            stamp.created_at,
        );
        if rows.insert(&tx).await?.is_empty() {
            // The idempotency key was used before: undo the ticket, answer with the first write.
            let replay = replay_in(&tx, t.team_id, &t.first).await?;
            tx.rollback().await.map_err(db_error)?;
            return Ok(Opened::Replayed(replay));
        }
        tx.commit().await.map_err(db_error)?;
        Ok(Opened::Created {
            ticket: TicketState {
                id: t.id,
                team_id: t.team_id,
                owner: match t.owner {
                    VisitorKey::Verified(d) => VisitorKey::DistinctId(d.into_distinct_id()),
                    other => other,
                },
                linked_distinct_id: t.linked_distinct_id,
                status: after.status,
                last_created_at: Some(after.last_created_at),
                unread_customer: after.unread_customer,
                version: 0,
            },
            message: stored(&t.first, stamp.author_name.clone(), stamp.created_at),
        })
    }

    async fn append(
        &self,
        team_id: Uuid,
        ticket_id: Uuid,
        batch: Vec<NewMessage>,
    ) -> Result<AppendOutcome, StoreError> {
        self.group_commit(team_id, ticket_id, batch).await
    }

    async fn page_messages(
        &self,
        team_id: Uuid,
        ticket_id: Uuid,
        after: Option<DateTime<Utc>>,
        limit: usize,
        include_private: bool,
    ) -> Result<MessagePage, StoreError> {
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
        let mut messages = self
            .page(super::pages::PageRequest {
                ticket_id,
                team_id,
                after,
                include_private,
                fetch,
            })
            .await?;
        let has_more = messages.len() > limit;
        messages.truncate(limit);
        Ok(MessagePage { messages, has_more })
    }

    async fn record_blocks(&self, blocks: &[NewBlock]) -> Result<(), StoreError> {
        self.insert_detector_blocks(blocks).await
    }

    async fn record_flags(&self, flags: &[SuspicionFlag]) -> Result<(), StoreError> {
        if flags.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO suspicion_flags (team_id, ticket_id, distinct_id, ip, reason, score,
                                              detail, observed_at)
                 SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::inet[], $5::text[],
                                      $6::int2[], $7::text[], $8::timestamptz[])",
            )
            .await
            .map_err(db_error)?;
        let teams: Vec<Uuid> = flags.iter().map(|f| f.team_id).collect();
        let tickets: Vec<Option<Uuid>> = flags.iter().map(|f| f.ticket_id).collect();
        let ids: Vec<Option<String>> = flags.iter().map(|f| f.distinct_id.clone()).collect();
        let ips: Vec<Option<std::net::IpAddr>> = flags.iter().map(|f| f.ip).collect();
        let reasons: Vec<&str> = flags.iter().map(|f| f.reason).collect();
        let scores: Vec<i16> = flags.iter().map(|f| f.score).collect();
        let details: Vec<String> = flags.iter().map(|f| f.detail.clone()).collect();
        let times: Vec<DateTime<Utc>> = flags.iter().map(|f| f.observed_at).collect();
        client
            .execute(
                &stmt,
                &[
                    &teams, &tickets, &ids, &ips, &reasons, &scores, &details, &times,
                ],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }
}
