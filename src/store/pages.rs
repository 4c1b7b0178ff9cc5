//! Group reads of message pages: the pages that requests on one thread ask for while that
//! thread's previous batch is at the database go out together as one statement.
//!
//! A poll that finds new messages costs PostgreSQL more to receive, plan-cache, start and
//! answer than to run; with many widgets polling, most of its work was per statement. One
//! `unnest … CROSS JOIN LATERAL` statement answers every waiting poll of a thread (each its
//! own ticket, `after` and limit), as the group committer does for writes (`commit.rs`).
//! When nothing is waiting a page goes out alone at once, so a lone poll waits for nobody.

use super::{db_error, PgStore};
use chrono::{DateTime, Utc};
use colloquy_actors::store::{StoreError, StoredMessage};
use dashmap::DashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::ThreadId;
use tokio::sync::oneshot;
use uuid::Uuid;

/// Pages in one statement at most.
const MAX_BATCH: usize = 128;
/// Pages waiting on one thread at most; beyond, a read is shed with `503 overloaded`.
const MAX_WAITING: usize = 4096;

const PAGES: &str = "
    SELECT q.i, m.id, m.content, m.rich_content, m.author_type, m.author_name, m.is_private,
           m.created_at
    FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::bool[], $5::int8[])
         WITH ORDINALITY AS q(ticket_id, team_id, after, include_private, fetch_rows, i)
    CROSS JOIN LATERAL (
        SELECT id, content, rich_content, author_type, author_name, is_private, created_at
        FROM messages
        WHERE ticket_id = q.ticket_id AND team_id = q.team_id
          AND created_at > COALESCE(q.after, '-infinity')
          AND (q.include_private OR NOT is_private)
        ORDER BY created_at
        LIMIT q.fetch_rows) m";

/// One page asked for: up to `fetch` messages of a ticket after `after`.
pub(super) struct PageRequest {
    pub(super) ticket_id: Uuid,
    pub(super) team_id: Uuid,
    pub(super) after: Option<DateTime<Utc>>,
    pub(super) include_private: bool,
    pub(super) fetch: i64,
}

type Reply = oneshot::Sender<Result<Vec<StoredMessage>, StoreError>>;

#[derive(Default)]
struct Waiting {
    pages: Vec<(PageRequest, Reply)>,
    /// Whether a task is sending this thread's batches.
    sending: bool,
}

/// The waiting pages of each thread that reads.
#[derive(Default)]
pub(super) struct PageQueues {
    by_thread: DashMap<ThreadId, Arc<Mutex<Waiting>>>,
}

impl PgStore {
    /// One page of messages, read together with the other pages this thread is waiting for.
    pub(super) async fn page(&self, page: PageRequest) -> Result<Vec<StoredMessage>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let queue = super::readers::this_threads(&self.pages.by_thread);
        let start = {
            let mut waiting = queue.lock().unwrap_or_else(PoisonError::into_inner);
            if waiting.pages.len() >= MAX_WAITING {
                return Err(StoreError::Busy);
            }
            waiting.pages.push((page, reply));
            !std::mem::replace(&mut waiting.sending, true)
        };
        if start {
            let store = self.clone();
            tokio::spawn(async move { store.send_pages(queue).await });
        }
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("the page read was dropped".into())))
    }

    /// Sends the thread's waiting pages, a batch at a time, until none wait.
    async fn send_pages(&self, queue: Arc<Mutex<Waiting>>) {
        loop {
            let batch: Vec<(PageRequest, Reply)> = {
                let mut waiting = queue.lock().unwrap_or_else(PoisonError::into_inner);
                // A request that gave up (deadline, client gone) costs no query.
                waiting.pages.retain(|(_, reply)| !reply.is_closed());
                if waiting.pages.is_empty() {
                    waiting.sending = false;
                    return;
                }
                let n = waiting.pages.len().min(MAX_BATCH);
                waiting.pages.drain(..n).collect()
            };
            let (pages, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            match self.read_pages(&pages).await {
                Ok(answers) => {
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(Ok(answer));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    /// One statement for every page; the answers in the order asked.
    async fn read_pages(
        &self,
        pages: &[PageRequest],
    ) -> Result<Vec<Vec<StoredMessage>>, StoreError> {
        let client = self.reader().await?;
        let stmt = client.prepare_cached(PAGES).await.map_err(db_error)?;
        let tickets: Vec<Uuid> = pages.iter().map(|p| p.ticket_id).collect();
        let teams: Vec<Uuid> = pages.iter().map(|p| p.team_id).collect();
        let afters: Vec<Option<DateTime<Utc>>> = pages.iter().map(|p| p.after).collect();
        let private: Vec<bool> = pages.iter().map(|p| p.include_private).collect();
        let fetch: Vec<i64> = pages.iter().map(|p| p.fetch).collect();
        let rows = client
            .query(&stmt, &[&tickets, &teams, &afters, &private, &fetch])
            .await
            .map_err(db_error)?;
        let mut answers: Vec<Vec<StoredMessage>> = pages.iter().map(|_| Vec::new()).collect();
        for r in &rows {
            let i: i64 = r.get(0);
            let Some(answer) = usize::try_from(i - 1).ok().and_then(|i| answers.get_mut(i)) else {
                return Err(StoreError::Internal(format!("page batch row for page {i}")));
            };
            answer.push(super::messages::message_from_row(r));
        }
        // Each page's rows come in order from its index scan; SQL does not promise to keep
        // that order through the join, so it is restored here (cheap: already sorted).
        for answer in &mut answers {
            answer.sort_by_key(|m| m.created_at);
        }
        Ok(answers)
    }
}
