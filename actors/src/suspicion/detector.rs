//! The detector actor: it feeds observations to the [`Rules`], queues their verdicts and
//! writes them to the database in batches (blocks at once).

use super::handle::{Counters, SuspicionHandle};
use super::observation::Observation;
use super::rules::{Rules, Verdict, MAX_KEYS};
use super::shared::SharedWindows;
use super::sharing::{Sharing, MAX_PENDING, PROBE_EVERY};
use crate::stats::ActorStats;
use crate::store::{NewBlock, Store, SuspicionFlag};
use actix::prelude::*;
use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most flags or blocks waiting for the database; more are dropped and counted.
const MAX_UNWRITTEN: usize = 10_000;

/// The actor holding [`Rules`] and writing their verdicts.
pub struct SuspicionDetector {
    pub(super) rules: Rules,
    pub(super) flags: Vec<SuspicionFlag>,
    pub(super) blocks: Vec<NewBlock>,
    pub(super) writing: bool,
    pub(super) store: Arc<dyn Store>,
    pub(super) stats: Arc<ActorStats>,
    pub(super) counters: Arc<Counters>,
    pub(super) sharing: Option<Sharing>,
}

/// Writes pending verdicts now; answers when they are stored (shutdown and tests).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FlushFlags;

impl SuspicionDetector {
    /// Starts the detector on the current arbiter.
    pub fn start(store: Arc<dyn Store>) -> SuspicionHandle {
        Self::start_with(store, MAX_KEYS)
    }

    /// Starts the detector with maps of at most `max_keys` keys each.
    pub fn start_with(store: Arc<dyn Store>, max_keys: usize) -> SuspicionHandle {
        Self::start_shared(store, max_keys, None)
    }

    /// Starts the detector, sharing its windows through `windows` when given (several nodes
    /// then score one spammer together).
    pub fn start_shared(
        store: Arc<dyn Store>,
        max_keys: usize,
        windows: Option<Arc<dyn SharedWindows>>,
    ) -> SuspicionHandle {
        let stats = Arc::new(ActorStats::default());
        let counters = Arc::new(Counters::default());
        counters.shared.store(windows.is_some(), Relaxed);
        counters.shared_up.store(windows.is_some(), Relaxed);
        let addr = SuspicionDetector {
            rules: Rules::with_max_keys(max_keys),
            flags: Vec::new(),
            blocks: Vec::new(),
            writing: false,
            store,
            stats: Arc::clone(&stats),
            counters: Arc::clone(&counters),
            sharing: windows.map(|windows| Sharing {
                windows,
                pending: VecDeque::new(),
                in_flight: false,
                probing: false,
            }),
        }
        .start();
        SuspicionHandle {
            addr,
            stats,
            counters,
        }
    }

    fn write(&mut self, ctx: &mut Context<Self>) {
        if self.writing || (self.flags.is_empty() && self.blocks.is_empty()) {
            return;
        }
        self.writing = true;
        let flags = std::mem::take(&mut self.flags);
        let blocks = std::mem::take(&mut self.blocks);
        let store = Arc::clone(&self.store);
        let write = async move {
            let res = match store.record_blocks(&blocks).await {
                Ok(()) => store.record_flags(&flags).await,
                Err(e) => Err(e),
            };
            (res, flags, blocks)
        };
        ctx.spawn(write.into_actor(self).map(|(res, flags, blocks), act, _| {
            act.writing = false;
            if let Err(e) = res {
                act.stats.error();
                tracing::warn!(error = %e, flags = flags.len(), "could not store suspicion verdicts; will retry");
                let room = MAX_UNWRITTEN.saturating_sub(act.flags.len());
                act.flags.extend(flags.into_iter().take(room));
                let room = MAX_UNWRITTEN.saturating_sub(act.blocks.len());
                act.blocks.extend(blocks.into_iter().take(room));
            }
        }));
    }

    /// Queues verdicts for the database (blocks at once); beyond the bound they are dropped
    /// and counted.
    pub(super) fn emit(&mut self, verdicts: Vec<Verdict>, ctx: &mut Context<Self>) {
        let mut urgent = false;
        for verdict in verdicts {
            match verdict {
                Verdict::Flag(f) if self.flags.len() < MAX_UNWRITTEN => {
                    self.counters.flags.fetch_add(1, Relaxed);
                    self.flags.push(f);
                }
                Verdict::Block(b) if self.blocks.len() < MAX_UNWRITTEN => {
                    self.counters.blocks.fetch_add(1, Relaxed);
                    self.blocks.push(b);
                    urgent = true;
                }
                _ => self.stats.dropped(),
            }
        }
        if urgent {
            self.write(ctx);
        }
    }
}

impl Actor for SuspicionDetector {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.stats.started();
        ctx.set_mailbox_capacity(4096);
        ctx.run_interval(Duration::from_millis(250), |act, ctx| act.write(ctx));
        ctx.run_interval(Duration::from_secs(60), |act, _| {
            act.rules.sweep(Instant::now())
        });
        if self.sharing.is_some() {
            ctx.run_interval(PROBE_EVERY, |act, ctx| act.probe(ctx));
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.stats.stopped();
    }
}

impl Handler<Observation> for SuspicionDetector {
    type Result = ();

    fn handle(&mut self, obs: Observation, ctx: &mut Self::Context) {
        self.stats.handled();
        // The local windows always learn, so that a node left alone scores on what it saw.
        let verdicts = self.rules.observe(&obs, Instant::now());
        self.stats.evicted_many(self.rules.take_evictions());
        if let Some(sharing) = self.sharing.as_mut() {
            if self.counters.shared_up.load(Relaxed) && sharing.pending.len() < MAX_PENDING {
                sharing.pending.push_back((obs, verdicts));
                self.send_batch(ctx);
                return;
            }
            self.counters.scored_alone.fetch_add(1, Relaxed);
        }
        self.emit(verdicts, ctx);
    }
}

impl Handler<FlushFlags> for SuspicionDetector {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: FlushFlags, _: &mut Self::Context) -> Self::Result {
        let flags = std::mem::take(&mut self.flags);
        let blocks = std::mem::take(&mut self.blocks);
        let store = Arc::clone(&self.store);
        Box::pin(
            async move {
                let b = store.record_blocks(&blocks).await;
                let f = store.record_flags(&flags).await;
                b.and(f)
            }
            .into_actor(self)
            .map(|res, act, _| {
                if res.is_err() {
                    act.stats.error();
                }
            }),
        )
    }
}
