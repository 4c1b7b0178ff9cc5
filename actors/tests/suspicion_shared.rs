//! The detector with a shared store (several nodes' windows): a store shared by two
//! detectors makes them score a spammer split between them as one would; a failing store
//! leaves each detector scoring on its own windows, and a store that answers again is shared
//! again.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use colloquy_actors::domain::SuspicionSettings;
use colloquy_actors::store::{
    AppendOutcome, MessagePage, NewBlock, NewMessage, NewTicket, Opened, Store, StoreError,
    SuspicionFlag, TicketState,
};
use colloquy_actors::suspicion::shared::{
    ScoreOp, ScoreOutcome, SharedError, SharedWindows, WindowOp,
};
use colloquy_actors::suspicion::{
    MessageSeen, Observation, SuspicionDetector, SuspicionHandle, TextFeatures,
};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// Records the verdicts; the ticket calls are not used by the detector.
#[derive(Default)]
struct Verdicts {
    flags: Mutex<Vec<SuspicionFlag>>,
    blocks: Mutex<Vec<NewBlock>>,
}

fn unused<T>() -> Result<T, StoreError> {
    Err(StoreError::Internal("not used by the detector".into()))
}

#[async_trait]
impl Store for Verdicts {
    async fn load_ticket(&self, _: Uuid, _: Uuid) -> Result<Option<TicketState>, StoreError> {
        unused()
    }
    async fn open_ticket(&self, _: NewTicket) -> Result<Opened, StoreError> {
        unused()
    }
    async fn append(
        &self,
        _: Uuid,
        _: Uuid,
        _: Vec<NewMessage>,
    ) -> Result<AppendOutcome, StoreError> {
        unused()
    }
    async fn page_messages(
        &self,
        _: Uuid,
        _: Uuid,
        _: Option<DateTime<Utc>>,
        _: usize,
        _: bool,
    ) -> Result<MessagePage, StoreError> {
        unused()
    }
    async fn record_flags(&self, flags: &[SuspicionFlag]) -> Result<(), StoreError> {
        self.flags.lock().unwrap().extend_from_slice(flags);
        Ok(())
    }
    async fn record_blocks(&self, blocks: &[NewBlock]) -> Result<(), StoreError> {
        self.blocks.lock().unwrap().extend_from_slice(blocks);
        Ok(())
    }
}

/// An in-memory shared store (no expiry: the tests take less than a window), failing while
/// `down` is set.
#[derive(Default)]
struct Memory {
    down: AtomicBool,
    counts: Mutex<HashMap<String, u64>>,
    members: Mutex<HashMap<String, HashSet<String>>>,
    scores: Mutex<HashMap<String, (HashSet<String>, bool)>>,
}

impl Memory {
    fn check(&self) -> Result<(), SharedError> {
        if self.down.load(Ordering::Relaxed) {
            Err(SharedError("down".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl SharedWindows for Memory {
    async fn count(&self, ops: Vec<WindowOp>) -> Result<Vec<u64>, SharedError> {
        self.check()?;
        let (mut counts, mut members) = (self.counts.lock().unwrap(), self.members.lock().unwrap());
        Ok(ops
            .into_iter()
            .map(|op| match op {
                WindowOp::Count { key } => {
                    let n = counts.entry(key).or_default();
                    *n += 1;
                    *n
                }
                WindowOp::Distinct { key, member } => {
                    let set = members.entry(key).or_default();
                    set.insert(member);
                    set.len() as u64
                }
                WindowOp::BurstOpen { key } => {
                    counts.insert(key, 1);
                    1
                }
                WindowOp::BurstNext { key } => counts.get_mut(&key).map_or(0, |n| {
                    *n += 1;
                    *n
                }),
            })
            .collect())
    }

    async fn score(&self, ops: Vec<ScoreOp>) -> Result<Vec<ScoreOutcome>, SharedError> {
        self.check()?;
        let mut scores = self.scores.lock().unwrap();
        Ok(ops
            .into_iter()
            .map(|op| {
                let mut out = ScoreOutcome {
                    best: 0,
                    new: false,
                    block: false,
                    reasons: vec![],
                };
                for subject in op.subjects {
                    let (reasons, blocked) = scores.entry(subject).or_default();
                    out.new |= reasons.insert(op.reason.to_owned());
                    let total: u32 = op
                        .weights
                        .iter()
                        .filter(|(r, _)| reasons.contains(*r))
                        .map(|(_, w)| u32::from(*w))
                        .sum();
                    let total = total.min(100) as u8;
                    if total > out.best {
                        out.best = total;
                        out.reasons = reasons.iter().cloned().collect();
                    }
                    if total >= op.block_threshold && !*blocked {
                        *blocked = true;
                        out.block = true;
                    }
                }
                out
            })
            .collect())
    }

    async fn probe(&self) -> Result<(), SharedError> {
        self.check()
    }
}

const LINK_SPAM: &str = "CHEAP PILLS https://a.test https://b.test https://c.test";

fn spam(team: Uuid, ticket: Uuid, opened: bool) -> Observation {
    Observation::Message(MessageSeen {
        team_id: team,
        ticket_id: ticket,
        opened_ticket: opened,
        visitor: "spammer@x.test".into(),
        ip: IpAddr::from([198, 51, 100, 9]),
        text: TextFeatures::of(LINK_SPAM),
        settings: SuspicionSettings::default(),
    })
}

/// Sends the spammer's four posts alternately to `a` and `b`, then lets both write.
async fn alternate(a: &SuspicionHandle, b: &SuspicionHandle) {
    let (team, ticket) = (Uuid::now_v7(), Uuid::now_v7());
    for (i, node) in [a, b, a, b].into_iter().enumerate() {
        node.observe(spam(team, ticket, i == 0));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.flush().await;
    b.flush().await;
}

fn reasons(store: &Verdicts) -> Vec<&'static str> {
    let mut r: Vec<_> = store
        .flags
        .lock()
        .unwrap()
        .iter()
        .map(|f| f.reason)
        .collect();
    r.sort_unstable();
    r
}

#[actix_rt::test]
async fn two_detectors_sharing_windows_score_a_split_spammer_as_one() {
    let (store, windows) = (Arc::new(Verdicts::default()), Arc::new(Memory::default()));
    let a = SuspicionDetector::start_shared(store.clone(), 1000, Some(windows.clone()));
    let b = SuspicionDetector::start_shared(store.clone(), 1000, Some(windows));
    alternate(&a, &b).await;
    assert_eq!(
        reasons(&store),
        ["link_density", "repeated_message"],
        "each once"
    );
    assert_eq!(
        store.blocks.lock().unwrap().len(),
        1,
        "50 + 40 blocks, once"
    );
    assert_eq!(a.sharing().mode, "shared");
}

#[actix_rt::test]
async fn a_failing_store_leaves_each_detector_scoring_alone_until_it_answers_again() {
    let (store, windows) = (Arc::new(Verdicts::default()), Arc::new(Memory::default()));
    windows.down.store(true, Ordering::Relaxed);
    let a = SuspicionDetector::start_shared(store.clone(), 1000, Some(windows.clone()));
    let b = SuspicionDetector::start_shared(store.clone(), 1000, Some(windows.clone()));

    // Down: each scores its half alone (the links, on both; no repetition, no block).
    alternate(&a, &b).await;
    assert_eq!(reasons(&store), ["link_density", "link_density"]);
    assert!(store.blocks.lock().unwrap().is_empty());
    let s = a.sharing();
    assert_eq!(
        (s.mode, s.failures >= 1, s.scored_alone >= 1),
        ("alone", true, true)
    );

    // Back: a probe (every second) finds it, and the next spammer is scored together.
    windows.down.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!((a.sharing().mode, b.sharing().mode), ("shared", "shared"));
    store.flags.lock().unwrap().clear();
    alternate(&a, &b).await;
    assert_eq!(reasons(&store), ["link_density", "repeated_message"]);
    assert_eq!(store.blocks.lock().unwrap().len(), 1);
}
