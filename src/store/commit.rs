//! Group commit across tickets. Each ticket actor already commits what queued up on its own
//! ticket together; with thousands of tickets, though, two writes rarely meet on one ticket,
//! and every POST paid a transaction and a WAL flush of its own. Here the appends of many
//! tickets share one transaction: one lock query for all their rows, one INSERT of all the
//! messages, one UPDATE of all the tickets, one COMMIT (one flush), then every ticket actor
//! gets its own outcome. A ticket's order is unchanged: its actor sends one batch at a time,
//! and a transaction never carries two batches of one ticket.

use super::messages::{replay_in, stored, Rows};
use super::{db_error, PgStore};
use chrono::{DateTime, Utc};
use colloquy_actors::domain::{
    apply_batch, merges_traits, stamp_batch, Stamp, TicketAfter, TicketBefore, TicketStatus, Traits,
};
use colloquy_actors::store::{AppendOutcome, AppendResult, NewMessage, StoreError};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_postgres::types::Json;
use uuid::Uuid;

/// Appends waiting for a transaction; beyond it a POST is shed with 503 (counted in the
/// HTTP status metrics) rather than queued without bound.
const QUEUE: usize = 4096;
/// Transactions in flight at once. While they run, new appends queue and go together in the
/// next one; more than a few only split the batches (measured with `scripts/bench.sh`).
const IN_FLIGHT: usize = 2;
/// Most tickets in one transaction.
const MAX_TICKETS: usize = 128;
/// Most messages in one transaction (a ticket's batch is never split).
const MAX_MESSAGES: usize = 1024;

/// One ticket's batch, waiting for a transaction.
pub(super) struct Job {
    team_id: Uuid,
    ticket_id: Uuid,
    batch: Vec<NewMessage>,
    reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
}

/// Where appends queue for the committer.
pub(super) type Queue = Arc<std::sync::OnceLock<mpsc::Sender<Job>>>;

/// What the committer did, for operators (`/api/ops/actors`, `/metrics`): a queue that
/// stays near [`QUEUE`] or transactions stuck at [`IN_FLIGHT`] say the database is the
/// bottleneck before POSTs start being shed.
#[derive(Debug, Default)]
pub(super) struct CommitCounters {
    in_flight: AtomicI64,
    transactions: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

/// A point-in-time copy of the group committer's state.
#[derive(Debug, Clone, Copy, serde::Serialize, PartialEq, Eq)]
pub struct GroupCommitStats {
    /// Whether the committer runs (it does in the server; CLI commands commit directly).
    pub running: bool,
    /// Appends waiting for a transaction now.
    pub queued: i64,
    /// The most that may wait; beyond it a POST is shed with 503.
    pub capacity: i64,
    /// Transactions running now.
    pub in_flight: i64,
    /// The most that run at once.
    pub max_in_flight: i64,
    /// Transactions committed or failed since start.
    pub transactions: u64,
    /// Transactions that failed as a whole (each ticket's append answered with the error).
    pub failed: u64,
    /// Appends shed because the queue was full.
    pub dropped: u64,
}

impl PgStore {
    /// Starts the committer on the current actix arbiter: from now on appends of different
    /// tickets share transactions. Without it (CLI commands, some tests) each append runs
    /// the same multi-ticket transaction on its own.
    pub fn start_group_commit(&self) {
        let (tx, rx) = mpsc::channel(QUEUE);
        if self.commits.set(tx).is_err() {
            return; // already running
        }
        actix::spawn(self.clone().committer(rx));
    }

    async fn committer(self, mut rx: mpsc::Receiver<Job>) {
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        let mut held: VecDeque<Job> = VecDeque::new();
        loop {
            // Wait for a free slot first: what arrives meanwhile joins the next transaction.
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let first = match held.pop_front() {
                Some(job) => job,
                None => match rx.recv().await {
                    Some(job) => job,
                    None => return,
                },
            };
            let mut tickets: HashSet<Uuid> = HashSet::from([first.ticket_id]);
            let mut messages = first.batch.len();
            let mut jobs = vec![first];
            // A second batch of a ticket already in this transaction waits for the next one.
            let mut later = VecDeque::new();
            while jobs.len() < MAX_TICKETS && messages < MAX_MESSAGES {
                let Some(job) = held.pop_front().or_else(|| rx.try_recv().ok()) else {
                    break;
                };
                if tickets.insert(job.ticket_id) {
                    messages += job.batch.len();
                    jobs.push(job);
                } else {
                    later.push_back(job);
                }
            }
            later.extend(held.drain(..));
            held = later;
            let store = self.clone();
            self.commit_counters.in_flight.fetch_add(1, Relaxed);
            actix::spawn(async move {
                store.commit_jobs(jobs).await;
                store.commit_counters.in_flight.fetch_sub(1, Relaxed);
                drop(slot);
            });
        }
    }

    /// Appends one ticket's batch, through the committer when it runs.
    pub(super) async fn group_commit(
        &self,
        team_id: Uuid,
        ticket_id: Uuid,
        batch: Vec<NewMessage>,
    ) -> Result<AppendOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            team_id,
            ticket_id,
            batch,
            reply,
        };
        match self.commits.get() {
            Some(queue) => {
                queue.try_send(job).map_err(|e| match e {
                    mpsc::error::TrySendError::Full(_) => {
                        self.commit_counters.dropped.fetch_add(1, Relaxed);
                        StoreError::Busy
                    }
                    mpsc::error::TrySendError::Closed(_) => {
                        StoreError::Unavailable("the committer stopped".into())
                    }
                })?;
            }
            None => self.commit_jobs(vec![job]).await,
        }
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("the committer stopped".into())))
    }

    /// The group committer's queue, transactions and sheds now.
    pub fn group_commit_stats(&self) -> GroupCommitStats {
        let c = &self.commit_counters;
        let (running, queued) = match self.commits.get() {
            Some(tx) => (true, (tx.max_capacity() - tx.capacity()) as i64),
            None => (false, 0),
        };
        GroupCommitStats {
            running,
            queued,
            capacity: QUEUE as i64,
            in_flight: c.in_flight.load(Relaxed),
            max_in_flight: IN_FLIGHT as i64,
            transactions: c.transactions.load(Relaxed),
            failed: c.failed.load(Relaxed),
            dropped: c.dropped.load(Relaxed),
        }
    }

    /// Runs one transaction for `jobs` and answers each.
    async fn commit_jobs(&self, jobs: Vec<Job>) {
        let result = self.append_many(&jobs).await;
        self.commit_counters.transactions.fetch_add(1, Relaxed);
        if result.is_err() {
            self.commit_counters.failed.fetch_add(1, Relaxed);
        }
        match result {
            Ok(outcomes) => {
                for (job, outcome) in jobs.into_iter().zip(outcomes) {
                    let _ = job.reply.send(outcome);
                }
            }
            Err(e) => {
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// The transaction: lock every ticket row (in id order, so concurrent transactions never
    /// deadlock on each other), insert every message, update every ticket, commit. What the
    /// rows become is computed by the ticket's rules (`colloquy_actors::domain::apply_batch`)
    /// from what the lock read; the SQL only writes it. A ticket that is gone answers "not
    /// found" without failing the others.
    async fn append_many(
        &self,
        jobs: &[Job],
    ) -> Result<Vec<Result<AppendOutcome, StoreError>>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        // The stored traits are read only for the batches that merge some.
        let lock = tx
            .prepare_cached(
                "SELECT id, team_id, status, last_created_at, clock_timestamp(), message_count,
                        unread_team_count, unread_customer_count, traits->>'name',
                        CASE WHEN id = ANY($2) THEN traits END, version
                 FROM tickets WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            )
            .await
            .map_err(db_error)?;
        let ids: Vec<Uuid> = jobs.iter().map(|j| j.ticket_id).collect();
        let with_traits: Vec<Uuid> = jobs
            .iter()
            .filter(|j| merges_traits(&j.batch))
            .map(|j| j.ticket_id)
            .collect();
        let locked: HashMap<Uuid, tokio_postgres::Row> = tx
            .query(&lock, &[&ids, &with_traits])
            .await
            .map_err(db_error)?
            .into_iter()
            .map(|r| (r.get(0), r))
            .collect();

        // What each ticket had, and its new messages' timestamps and author names.
        let mut plans: Vec<Option<Plan>> = Vec::with_capacity(jobs.len());
        let mut rows = Rows::default();
        for job in jobs {
            let plan = locked
                .get(&job.ticket_id)
                .filter(|row| row.get::<_, Uuid>(1) == job.team_id)
                .map(|row| {
                    let before = TicketBefore {
                        status: TicketStatus::from_stored(row.get(2)),
                        last_created_at: row.get(3),
                        message_count: row.get(5),
                        unread_team: row.get(6),
                        unread_customer: row.get(7),
                        name: row.get(8),
                        traits: row
                            .get::<_, Option<Json<serde_json::Value>>>(9)
                            .map(|j| Traits::from_stored(j.0)),
                    };
                    let stamps = stamp_batch(&before, row.get(4), &job.batch);
                    Plan {
                        before,
                        stamps,
                        version: row.get(10),
                    }
                });
            if let Some(plan) = &plan {
                for (m, stamp) in job.batch.iter().zip(&plan.stamps) {
                    let author = stamp.author_name.clone();
                    rows.push((job.team_id, job.ticket_id), m, author, stamp.created_at);
                }
            }
            plans.push(plan);
        }
        let inserted: HashSet<Uuid> = rows.insert(&tx).await?.into_iter().collect();

        let mut outcomes: Vec<Result<AppendOutcome, StoreError>> = Vec::with_capacity(jobs.len());
        let mut update = Updates::default();
        for (job, plan) in jobs.iter().zip(plans) {
            let Some(Plan {
                before,
                stamps,
                version,
            }) = plan
            else {
                outcomes.push(Err(StoreError::NotFound));
                continue;
            };
            let written: Vec<bool> = job.batch.iter().map(|m| inserted.contains(&m.id)).collect();
            let after = apply_batch(&before, &job.batch, &stamps, &written);
            let mut results = Vec::with_capacity(job.batch.len());
            for ((m, stamp), written) in job.batch.iter().zip(stamps).zip(written) {
                results.push(if written {
                    AppendResult::Stored(stored(m, stamp.author_name, stamp.created_at))
                } else {
                    AppendResult::Replayed(replay_in(&tx, job.team_id, m).await?)
                });
            }
            let (status, unread_customer) = match &after {
                Some(a) => (a.status, a.unread_customer),
                None => (before.status, before.unread_customer),
            };
            if let Some(after) = after {
                update.push(job.ticket_id, after);
            }
            outcomes.push(Ok(AppendOutcome {
                prev_last_created_at: before.last_created_at,
                status,
                unread_customer,
                version,
                results,
            }));
        }
        let versions = update.run(&tx).await?;
        tx.commit().await.map_err(db_error)?;
        for (job, outcome) in jobs.iter().zip(outcomes.iter_mut()) {
            if let (Ok(o), Some(v)) = (outcome, versions.get(&job.ticket_id)) {
                o.version = *v;
            }
        }
        Ok(outcomes)
    }
}

/// What the lock query told about one ticket, and its batch's timestamps and author names.
struct Plan {
    before: TicketBefore,
    stamps: Vec<Stamp>,
    version: i64,
}

/// Column arrays for one UPDATE of every ticket that got messages: what
/// `apply_batch` computed, written as it is (a preview or traits left `NULL` stay).
#[derive(Default)]
struct Updates {
    ids: Vec<Uuid>,
    statuses: Vec<&'static str>,
    last_at: Vec<DateTime<Utc>>,
    message_counts: Vec<i32>,
    last_public: Vec<Option<String>>,
    last_public_at: Vec<Option<DateTime<Utc>>>,
    unread_team: Vec<i32>,
    unread_customer: Vec<i32>,
    traits: Vec<Option<Json<serde_json::Value>>>,
}

impl Updates {
    fn push(&mut self, id: Uuid, after: TicketAfter) {
        let (last_public, last_public_at) = after.last_public.unzip();
        self.ids.push(id);
        self.statuses.push(after.status.as_str());
        self.last_at.push(after.last_created_at);
        self.message_counts.push(after.message_count);
        self.last_public.push(last_public);
        self.last_public_at.push(last_public_at);
        self.unread_team.push(after.unread_team);
        self.unread_customer.push(after.unread_customer);
        self.traits.push(after.traits.map(|t| Json(t.to_json())));
    }

    /// Updates the tickets; returns each one's new row version.
    async fn run(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
    ) -> Result<HashMap<Uuid, i64>, StoreError> {
        if self.ids.is_empty() {
            return Ok(HashMap::new());
        }
        // `traits` holds only the keys that change: set over the stored ones.
        let stmt = tx
            .prepare_cached(
                "UPDATE tickets t SET status = u.status, last_created_at = u.last_at,
                     message_count = u.message_count,
                     last_message = COALESCE(u.last_public, t.last_message),
                     last_message_at = COALESCE(u.last_public_at, t.last_message_at),
                     unread_team_count = u.unread_team,
                     unread_customer_count = u.unread_customer,
                     traits = CASE WHEN u.traits IS NULL THEN t.traits ELSE t.traits || u.traits END,
                     version = t.version + 1
                 FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::int[], $5::text[],
                             $6::timestamptz[], $7::int[], $8::int[], $9::jsonb[])
                      AS u(id, status, last_at, message_count, last_public, last_public_at,
                           unread_team, unread_customer, traits)
                 WHERE t.id = u.id
                 RETURNING t.id, t.version",
            )
            .await
            .map_err(db_error)?;
        let rows = tx
            .query(
                &stmt,
                &[
                    &self.ids,
                    &self.statuses,
                    &self.last_at,
                    &self.message_counts,
                    &self.last_public,
                    &self.last_public_at,
                    &self.unread_team,
                    &self.unread_customer,
                    &self.traits,
                ],
            )
            .await
            .map_err(db_error)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
