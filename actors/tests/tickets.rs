//! The ticket actors against an in-memory store: group commit, ordering, eviction and
//! access checks, without a database (the PostgreSQL store is tested through the API tests).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use colloquy_actors::domain::{
    assign_created_at, AuthorType, DistinctId, TicketStatus, Traits, VisitorKey,
};
use colloquy_actors::store::{
    AppendOutcome, AppendResult, MessagePage, NewBlock, NewMessage, NewTicket, Opened, Store,
    StoreError, StoredMessage, SuspicionFlag, TicketFacts, TicketState,
};
use colloquy_actors::ticket::{TicketConfig, TicketError, TicketRouter as Tickets};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// Keeps tickets and messages in memory; each append "transaction" takes `delay`, and the
/// batch sizes are recorded so tests can see group commit.
#[derive(Default)]
struct MemoryStore {
    tickets: Mutex<Vec<(TicketState, Vec<StoredMessage>)>>,
    batches: Mutex<Vec<usize>>,
    delay: Duration,
    /// Milliseconds every `load_ticket` takes (a slow catch-up).
    slow_loads: std::sync::atomic::AtomicU64,
    /// The next append fails with an internal error (a bug: the actor stops and restarts).
    fail_next_append: std::sync::atomic::AtomicBool,
}

fn stored(m: &NewMessage, at: DateTime<Utc>) -> StoredMessage {
    StoredMessage {
        id: m.id,
        content: m.content.clone(),
        rich_content: None,
        author_type: m.author_type,
        author_name: None,
        is_private: m.is_private,
        created_at: at,
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn load_ticket(
        &self,
        team_id: Uuid,
        ticket_id: Uuid,
    ) -> Result<Option<TicketState>, StoreError> {
        let ms = self.slow_loads.load(std::sync::atomic::Ordering::Relaxed);
        if ms > 0 {
            actix_rt::time::sleep(Duration::from_millis(ms)).await;
        }
        let t = self.tickets.lock().unwrap();
        Ok(t.iter()
            .find(|(s, _)| s.id == ticket_id && s.team_id == team_id)
            .map(|(s, _)| s.clone()))
    }

    async fn open_ticket(&self, t: NewTicket) -> Result<Opened, StoreError> {
        let at = assign_created_at(Utc::now(), None, 1)[0];
        let state = TicketState {
            id: t.id,
            team_id: t.team_id,
            owner: t.owner,
            linked_distinct_id: None,
            status: TicketStatus::New,
            last_created_at: Some(at),
            unread_customer: 0,
            version: 0,
        };
        let message = stored(&t.first, at);
        self.tickets
            .lock()
            .unwrap()
            .push((state.clone(), vec![message.clone()]));
        Ok(Opened::Created {
            ticket: state,
            message,
        })
    }

    async fn append(
        &self,
        team_id: Uuid,
        ticket_id: Uuid,
        batch: Vec<NewMessage>,
    ) -> Result<AppendOutcome, StoreError> {
        tokio::time::sleep(self.delay).await;
        if self
            .fail_next_append
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            return Err(StoreError::Internal("injected".into()));
        }
        self.batches.lock().unwrap().push(batch.len());
        let mut all = self.tickets.lock().unwrap();
        let (state, msgs) = all
            .iter_mut()
            .find(|(s, _)| s.id == ticket_id && s.team_id == team_id)
            .ok_or(StoreError::NotFound)?;
        let prev = state.last_created_at;
        let times = assign_created_at(Utc::now(), prev, batch.len());
        let results: Vec<AppendResult> = batch
            .iter()
            .zip(times)
            .map(|(m, at)| AppendResult::Stored(stored(m, at)))
            .collect();
        for r in &results {
            if let AppendResult::Stored(m) = r {
                msgs.push(m.clone());
                state.last_created_at = Some(m.created_at);
            }
        }
        state.version += 1;
        Ok(AppendOutcome {
            prev_last_created_at: prev,
            status: state.status,
            unread_customer: 0,
            version: state.version,
            results,
        })
    }

    async fn page_messages(
        &self,
        team_id: Uuid,
        ticket_id: Uuid,
        after: Option<DateTime<Utc>>,
        limit: usize,
        include_private: bool,
    ) -> Result<MessagePage, StoreError> {
        let all = self.tickets.lock().unwrap();
        let Some((_, msgs)) = all
            .iter()
            .find(|(s, _)| s.id == ticket_id && s.team_id == team_id)
        else {
            return Err(StoreError::NotFound);
        };
        let visible: Vec<StoredMessage> = msgs
            .iter()
            .filter(|m| {
                after.is_none_or(|a| m.created_at > a) && (include_private || !m.is_private)
            })
            .cloned()
            .collect();
        Ok(MessagePage {
            has_more: visible.len() > limit,
            messages: visible.into_iter().take(limit).collect(),
        })
    }

    async fn record_flags(&self, _: &[SuspicionFlag]) -> Result<(), StoreError> {
        Ok(())
    }

    async fn record_blocks(&self, _: &[NewBlock]) -> Result<(), StoreError> {
        Ok(())
    }
}

fn message(text: &str) -> NewMessage {
    NewMessage {
        id: Uuid::now_v7(),
        content: text.into(),
        author_type: AuthorType::Customer,
        author_name: None,
        is_private: false,
        distinct_id: None,
        client_message_id: None,
        traits: None,
        reopens: true,
    }
}

fn visitor() -> VisitorKey {
    VisitorKey::DistinctId(DistinctId::parse("ann@example.com").unwrap())
}

async fn open(tickets: &Tickets, team: Uuid) -> Uuid {
    let id = Uuid::now_v7();
    let opened = tickets
        .open(NewTicket {
            id,
            team_id: team,
            owner: visitor(),
            linked_distinct_id: None,
            claimed_distinct_id: None,
            traits: Traits::default(),
            first: message("first"),
        })
        .await
        .unwrap();
    assert!(matches!(opened, Opened::Created { .. }));
    id
}

#[actix_rt::test]
async fn appends_that_queue_during_a_write_are_committed_together_in_order() {
    let store = Arc::new(MemoryStore {
        delay: Duration::from_millis(30),
        ..Default::default()
    });
    let tickets = Tickets::start(store.clone(), TicketConfig::default());
    let team = Uuid::now_v7();
    let ticket = open(&tickets, team).await;

    let sends: Vec<_> = (0..40)
        .map(|i| {
            let t = tickets.clone();
            actix_rt::spawn(async move {
                t.append(team, ticket, Some(visitor()), message(&format!("m{i}")))
                    .await
            })
        })
        .collect();
    let mut acked = Vec::new();
    for s in sends {
        let a = s.await.unwrap().expect("every append is acknowledged");
        if let AppendResult::Stored(m) = a.result {
            acked.push(m);
        }
    }

    let batches = store.batches.lock().unwrap().clone();
    assert_eq!(batches.iter().sum::<usize>(), 40);
    assert!(
        batches.len() < 10,
        "40 concurrent appends took {} transactions: {batches:?}",
        batches.len()
    );
    let page = tickets
        .read(team, ticket, Some(visitor()), None, 100, false)
        .await
        .unwrap();
    let times: Vec<_> = page.page.messages.iter().map(|m| m.created_at).collect();
    assert_eq!(times.len(), 41);
    assert!(times.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
    assert!(acked
        .iter()
        .all(|m| page.page.messages.iter().any(|p| p.id == m.id)));
}

#[actix_rt::test]
async fn a_polling_read_at_the_tail_is_answered_from_memory() {
    let store = Arc::new(MemoryStore::default());
    let tickets = Tickets::start(store, TicketConfig::default());
    let team = Uuid::now_v7();
    let ticket = open(&tickets, team).await;
    let a = tickets
        .append(team, ticket, Some(visitor()), message("second"))
        .await
        .unwrap();
    let AppendResult::Stored(m) = a.result else {
        panic!("stored")
    };
    let page = tickets
        .read(team, ticket, Some(visitor()), Some(m.created_at), 50, false)
        .await
        .unwrap();
    assert!(page.from_memory && page.page.messages.is_empty());
}

#[actix_rt::test]
async fn other_teams_and_visitors_are_refused_by_the_actor() {
    let store = Arc::new(MemoryStore::default());
    let tickets = Tickets::start(store, TicketConfig::default());
    let team = Uuid::now_v7();
    let ticket = open(&tickets, team).await;
    let other = VisitorKey::DistinctId(DistinctId::parse("bob@example.com").unwrap());
    assert_eq!(
        tickets
            .append(Uuid::now_v7(), ticket, Some(visitor()), message("x"))
            .await
            .unwrap_err(),
        TicketError::NotFound
    );
    assert_eq!(
        tickets
            .append(team, ticket, Some(other), message("x"))
            .await
            .unwrap_err(),
        TicketError::Forbidden
    );
    assert_eq!(
        tickets
            .append(team, Uuid::now_v7(), Some(visitor()), message("x"))
            .await
            .unwrap_err(),
        TicketError::NotFound,
        "an unknown id creates no actor and is not found"
    );
}

#[actix_rt::test]
async fn idle_ticket_actors_are_evicted_and_come_back_on_use() {
    let store = Arc::new(MemoryStore::default());
    let config = TicketConfig {
        idle_after: Duration::from_millis(40),
        ..TicketConfig::default()
    };
    let tickets = Tickets::start(store, config);
    let team = Uuid::now_v7();
    let ticket = open(&tickets, team).await;
    assert!(tickets.is_live(ticket));
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    assert!(!tickets.is_live(ticket), "evicted after being idle");
    assert_eq!(tickets.stats().evictions, 1);
    tickets
        .append(team, ticket, Some(visitor()), message("back"))
        .await
        .expect("a later append reloads it");
    assert!(tickets.is_live(ticket));
}

#[actix_rt::test]
async fn a_change_made_outside_the_actor_is_read_at_once_and_never_rolled_back() {
    let store = Arc::new(MemoryStore::default());
    let tickets = Tickets::start(store, TicketConfig::default());
    let team = Uuid::now_v7();
    let ticket = open(&tickets, team).await;
    // An operator resolved the ticket (row version 2); the actor has not handled it yet.
    tickets.refresh(
        ticket,
        TicketFacts {
            status: TicketStatus::Resolved,
            unread_customer: 1,
            version: 2,
        },
    );
    let page = tickets
        .read(team, ticket, Some(visitor()), None, 50, false)
        .await
        .unwrap();
    assert_eq!(
        (page.status, page.unread_customer),
        (TicketStatus::Resolved, 1),
        "the read right after the change sees it"
    );
    // The actor handles the refresh, and its next publication keeps the facts.
    actix_rt::time::sleep(Duration::from_millis(20)).await;
    let page = tickets
        .read(team, ticket, Some(visitor()), None, 50, false)
        .await
        .unwrap();
    assert_eq!(page.status, TicketStatus::Resolved);
}

#[actix_rt::test]
async fn polls_through_the_view_keep_a_ticket_actor_from_idle_eviction() {
    let store = Arc::new(MemoryStore::default());
    let config = TicketConfig {
        idle_after: Duration::from_millis(60),
        ..TicketConfig::default()
    };
    let tickets = Tickets::start(store, config);
    let team = Uuid::now_v7();
    let ticket = open(&tickets, team).await;
    for _ in 0..20 {
        tickets
            .read(team, ticket, Some(visitor()), None, 50, false)
            .await
            .unwrap();
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(tickets.is_live(ticket), "a polled ticket stays live");
    assert_eq!(tickets.stats().evictions, 0);
}

#[actix_rt::test]
async fn a_subscriber_that_falls_behind_is_cut_off_and_counted() {
    let store = Arc::new(MemoryStore::default());
    let tickets = Tickets::start(store, TicketConfig::default());
    let team = Uuid::now_v7();
    let ticket = open(&tickets, team).await;
    let mut slow = tickets
        .subscribe(team, ticket, Some(visitor()), None, false)
        .await
        .unwrap();
    let mut keeping_up = tickets
        .subscribe(team, ticket, Some(visitor()), None, false)
        .await
        .unwrap();
    let mut seen = 0;
    for i in 0..100 {
        tickets
            .append(team, ticket, Some(visitor()), message(&format!("m{i}")))
            .await
            .unwrap();
        // One subscriber reads every event as it comes; the other reads nothing.
        if keeping_up.next().await.is_some() {
            seen += 1;
        }
    }
    assert_eq!(seen, 100, "a subscriber that keeps up gets every message");
    let mut got = 0;
    while slow.next().await.is_some() {
        got += 1;
    }
    assert_eq!(got, 0, "the one that fell 100 events behind is cut off");
    assert_eq!(tickets.stats().dropped, 1, "and counted as dropped");
}

#[actix_rt::test]
async fn a_subscription_replays_one_page_and_says_when_more_follow() {
    let store = Arc::new(MemoryStore::default());
    let config = TicketConfig {
        replay_page: 3,
        ..TicketConfig::default()
    };
    let tickets = Tickets::start(store, config);
    let team = Uuid::now_v7();
    let ticket = open(&tickets, team).await;
    for i in 0..4 {
        tickets
            .append(team, ticket, Some(visitor()), message(&format!("m{i}")))
            .await
            .unwrap();
    }
    // Five messages (the opening one and four more): one page of three, then the rest.
    let first = tickets
        .subscribe(team, ticket, Some(visitor()), None, false)
        .await
        .unwrap();
    assert_eq!(first.replay.len(), 3);
    assert!(first.has_more, "two more follow the page");
    let after = first.replay.last().map(|m| m.created_at);
    let rest = tickets
        .subscribe(team, ticket, Some(visitor()), after, false)
        .await
        .unwrap();
    assert_eq!(rest.replay.len(), 2);
    assert!(!rest.has_more, "the second page reaches the tail");
}

/// Memory trusted again (the change feed is back) is not yet memory caught up: until a live
/// ticket's actor has reloaded it, its reads go to the store, so a message another node wrote
/// meanwhile (and that was read from the store while memory was untrusted) never vanishes.
#[actix_rt::test]
async fn memory_trusted_again_is_not_read_before_the_ticket_caught_up() {
    let store = Arc::new(MemoryStore::default());
    let tickets = Tickets::start(
        Arc::clone(&store) as Arc<dyn Store>,
        TicketConfig::default(),
    );
    let team = Uuid::now_v7();
    let ticket = open(&tickets, team).await;
    let first = tickets
        .read(team, ticket, Some(visitor()), None, 50, false)
        .await
        .unwrap();
    let tail = first.page.messages.last().unwrap().created_at;

    tickets.set_memory_trusted(false);
    // Another node answers (no notice reaches this one).
    let reply = message("answer from another node");
    {
        let mut all = store.tickets.lock().unwrap();
        let (state, msgs) = all.iter_mut().find(|(s, _)| s.id == ticket).unwrap();
        let at = assign_created_at(Utc::now(), state.last_created_at, 1)[0];
        msgs.push(stored(&reply, at));
        state.last_created_at = Some(at);
    }
    let untrusted = tickets
        .read(team, ticket, Some(visitor()), Some(tail), 50, false)
        .await
        .unwrap();
    assert_eq!(untrusted.page.messages.len(), 1, "read from the store");

    // Trusted again; the ticket's catch-up is slow.
    store
        .slow_loads
        .store(300, std::sync::atomic::Ordering::Relaxed);
    tickets.set_memory_trusted(true);
    let again = tickets
        .read(team, ticket, Some(visitor()), Some(tail), 50, false)
        .await
        .unwrap();
    assert_eq!(
        again.page.messages.len(),
        1,
        "the reply read a moment ago is still answered (from memory: {})",
        again.from_memory
    );
}

/// Requests that miss the same ticket at once (no live actor: here after an idle eviction,
/// with a slow load) all ask the supervisor, which starts one actor and hands it to all.
#[actix_rt::test]
async fn concurrent_misses_of_one_ticket_end_with_one_actor() {
    let store = Arc::new(MemoryStore::default());
    let config = TicketConfig {
        idle_after: Duration::from_millis(40),
        ..TicketConfig::default()
    };
    let tickets = Tickets::start(Arc::clone(&store) as Arc<dyn Store>, config);
    let team = Uuid::now_v7();
    let ticket = open(&tickets, team).await;
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    assert!(!tickets.is_live(ticket), "evicted after being idle");
    assert_eq!(tickets.stats().alive, 0);
    let spawns_before = tickets.supervisor_stats().handled;

    store
        .slow_loads
        .store(30, std::sync::atomic::Ordering::Relaxed);
    let appends: Vec<_> = (0..16)
        .map(|i| {
            let t = tickets.clone();
            actix_rt::spawn(async move {
                t.append(team, ticket, Some(visitor()), message(&format!("m{i}")))
                    .await
            })
        })
        .collect();
    for a in appends {
        a.await.unwrap().expect("every append is acknowledged");
    }
    assert_eq!(tickets.stats().alive, 1, "one actor for the ticket");
    assert!(tickets.is_live(ticket));
    assert_eq!(
        tickets.supervisor_stats().handled - spawns_before,
        16,
        "every miss was answered by the supervisor"
    );
    let page = tickets
        .read(team, ticket, Some(visitor()), None, 100, false)
        .await
        .unwrap();
    assert_eq!(page.page.messages.len(), 17);
}

/// An actor that stops on an internal error is restarted in place: the registry still
/// leads to it, the supervisor counts the restart, and the ticket keeps working.
#[actix_rt::test]
async fn a_ticket_actor_restarted_after_a_fault_stays_registered() {
    let store = Arc::new(MemoryStore::default());
    let tickets = Tickets::start(
        Arc::clone(&store) as Arc<dyn Store>,
        TicketConfig::default(),
    );
    let team = Uuid::now_v7();
    let ticket = open(&tickets, team).await;
    store
        .fail_next_append
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let failed = tickets
        .append(team, ticket, Some(visitor()), message("lost"))
        .await;
    assert!(
        matches!(failed, Err(TicketError::Internal(_))),
        "{failed:?}"
    );
    actix_rt::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(tickets.stats().restarts, 1);
    assert_eq!(
        tickets.supervisor_stats().restarts,
        1,
        "the supervisor heard"
    );
    assert!(tickets.is_live(ticket), "still registered");
    assert_eq!(tickets.stats().alive, 1, "and still one actor");

    let a = tickets
        .append(team, ticket, Some(visitor()), message("after"))
        .await
        .expect("the restarted actor appends");
    let AppendResult::Stored(m) = a.result else {
        panic!("stored")
    };
    let page = tickets
        .read(team, ticket, Some(visitor()), None, 50, false)
        .await
        .unwrap();
    assert_eq!(page.page.messages.last().map(|p| p.id), Some(m.id));
    assert_eq!(tickets.stats().alive, 1);
}

/// The supervisor removes what retires: an idle actor's entry, counted as its eviction.
#[actix_rt::test]
async fn the_supervisor_counts_what_it_spawns_and_evicts() {
    let store = Arc::new(MemoryStore::default());
    let config = TicketConfig {
        idle_after: Duration::from_millis(40),
        ..TicketConfig::default()
    };
    let tickets = Tickets::start(store, config);
    let team = Uuid::now_v7();
    let (a, b) = (open(&tickets, team).await, open(&tickets, team).await);
    assert_eq!(tickets.supervisor_stats().alive, 1);
    assert_eq!(tickets.supervisor_stats().handled, 2, "two spawns");
    assert!(tickets.is_live(a) && tickets.is_live(b));
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    let after = tickets.supervisor_stats();
    assert_eq!(after.evictions, 2, "both removed when idle: {after:?}");
    assert_eq!(after.queued, 0);
    assert!(!tickets.is_live(a) && !tickets.is_live(b));
}
