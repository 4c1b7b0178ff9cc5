//! Several nodes on one database, each answering exactly as one node would.
//!
//! A node keeps things in memory to answer fast: each live ticket's recent messages and facts
//! (`colloquy_actors::ticket`), teams by token ([`crate::teams::TeamCache`]). That is only
//! right while nothing else writes. So every node registers in PostgreSQL (`nodes`) and beats
//! every second. Without a change feed, memory is trusted only while no other node is alive;
//! with one ([`feed`]), only while the feed is healthy and every other live node announces
//! its changes too. Untrusted, reads and access checks go to PostgreSQL: a misconfigured pair is slower,
//! never wrong. The feed is PostgreSQL `LISTEN/NOTIFY`, raised by triggers inside the
//! committing transaction (`sql/V3__cluster.sql`): a notice exists exactly when the commit
//! does, one per statement of a group commit, not one per message.

pub mod budgets;
pub mod feed;
pub mod redis;
pub mod spam_redis;

use crate::blocks::BlockList;
use crate::store::PgStore;
use crate::teams::TeamCache;
use colloquy_actors::ticket::TicketRouter;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// This machine's name, for naming the node (`/proc/sys/kernel/hostname`, else `HOSTNAME`,
/// else `localhost`).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// How a node learns what other nodes changed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ChangeFeed {
    /// None: right for one node; with others alive, this node reads from PostgreSQL.
    #[default]
    Off,
    /// PostgreSQL `LISTEN/NOTIFY` on the database the nodes share.
    Postgres,
}

/// Cluster settings.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// The change feed.
    pub feed: ChangeFeed,
    /// How often the node beats and looks at the others; three missed beats and a node
    /// counts as gone.
    pub heartbeat: Duration,
    /// How the node names itself in `nodes` and `/api/ops/cluster`; empty: `host:port`. A
    /// registered node of the same name is taken for this one's crashed predecessor.
    pub name: String,
    /// Redis 7 for what nodes must count together (rate budgets, suspicion windows); unset:
    /// each node counts alone, as one node does.
    pub redis_url: Option<String>,
    /// What every Redis key of this cluster starts with (`REDIS_PREFIX`), so that several
    /// clusters (or tests) can share one Redis.
    pub redis_prefix: String,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            feed: ChangeFeed::Off,
            heartbeat: Duration::from_secs(1),
            name: String::new(),
            redis_url: None,
            redis_prefix: "colloquy:".to_owned(),
        }
    }
}

/// How long a request waits for its node to have heard every change committed before it
/// arrived; beyond that the feed is too far behind to answer from memory: 503 `unavailable`.
const CATCH_UP_DEADLINE: Duration = Duration::from_millis(1500);

/// Read-your-writes across nodes. A client that got a 201 through node A and reads through B
/// must see its write, but A's notice reaches B a few milliseconds later. NOTIFY delivers
/// notices in commit order, so once B hears back a ping it sent after the request arrived,
/// every change committed before the request has been applied. One ping in flight serves
/// every request that arrived before it was sent.
#[derive(Debug)]
struct SyncPoint {
    /// The number of the last sync ping sent.
    sent: AtomicU64,
    /// The highest ping number a request waits for.
    wanted: AtomicU64,
    /// Wakes the feed to send a ping.
    wake: tokio::sync::Notify,
    /// The highest ping number heard back (also nudged when memory stops being trusted).
    heard: tokio::sync::watch::Sender<u64>,
}

impl Default for SyncPoint {
    fn default() -> Self {
        Self {
            sent: AtomicU64::new(0),
            wanted: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
            heard: tokio::sync::watch::Sender::new(0),
        }
    }
}

/// What this node knows of the cluster, shared by the heartbeat, the feed and `/api/ops`.
#[derive(Debug, Default)]
struct Census {
    others_alive: AtomicUsize,
    others_without_feed: AtomicUsize,
    feed_healthy: AtomicBool,
    trusted: AtomicBool,
    /// Times memory was given up (feed lost, or a node without a feed appeared).
    distrusted: AtomicI64,
    notices: AtomicI64,
    sync: SyncPoint,
}

/// The node's membership: registration, heartbeat, the feed and the trust they decide.
#[derive(Clone)]
pub struct Cluster {
    node_id: Uuid,
    settings: Arc<ClusterSettings>,
    census: Arc<Census>,
    store: PgStore,
    tickets: TicketRouter,
    teams: TeamCache,
    blocks: BlockList,
}

/// `/api/ops/cluster`: what this node believes about the cluster.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClusterStatus {
    /// This node's id in `nodes`.
    pub node_id: Uuid,
    /// Its name (listen address).
    pub name: String,
    /// `off` or `postgres`.
    pub feed: ChangeFeed,
    /// Whether the feed is connected and listening (always false when `off`).
    pub feed_healthy: bool,
    /// Other nodes whose heartbeat is recent.
    pub other_nodes_alive: usize,
    /// How many of those announce no changes.
    pub other_nodes_without_feed: usize,
    /// Whether reads are answered from memory; false means every read goes to PostgreSQL.
    pub memory_trusted: bool,
    /// Times this node stopped trusting its memory.
    pub times_distrusted: i64,
    /// Change notices received from other nodes.
    pub notices_received: i64,
}

impl Cluster {
    /// Registers this node and starts its heartbeat and, if configured, its change feed.
    /// Returns once the first census is known, so the node never serves a read from memory
    /// it cannot trust.
    pub async fn start(
        settings: ClusterSettings,
        node_id: Uuid,
        store: PgStore,
        tickets: TicketRouter,
        teams: TeamCache,
        blocks: BlockList,
    ) -> anyhow::Result<Self> {
        let cluster = Self {
            node_id,
            settings: Arc::new(settings),
            census: Arc::default(),
            store,
            tickets,
            teams,
            blocks,
        };
        cluster
            .store
            .register_node(node_id, &cluster.settings.name, cluster.feed_name())
            .await
            .map_err(|e| anyhow::anyhow!("register this node in `nodes`: {e}"))?;
        cluster.beat().await;
        if cluster.settings.feed == ChangeFeed::Off
            && cluster.census.others_alive.load(Ordering::Acquire) > 0
        {
            // Nodes without a feed trust their memory until their next beat shows us: give
            // them that beat before we write anything. (A crashed predecessor on this host
            // and port was removed at registration, so a restart does not wait.)
            actix_web::rt::time::sleep(cluster.settings.heartbeat * 3 / 2).await;
        }
        if cluster.settings.feed == ChangeFeed::Postgres {
            feed::start(cluster.clone());
        }
        let me = cluster.clone();
        actix_web::rt::spawn(async move {
            let mut every = actix_web::rt::time::interval(me.settings.heartbeat);
            loop {
                every.tick().await;
                me.beat().await;
            }
        });
        Ok(cluster)
    }

    /// Nodes alive now, this one included (by the last heartbeat): the share of a budget
    /// each node allows while the shared budgets are away is limit / this.
    pub fn live_nodes(&self) -> usize {
        self.census.others_alive.load(Ordering::Acquire) + 1
    }

    /// This node's id (also in every notice it raises).
    pub fn node_id(&self) -> Uuid {
        self.node_id
    }

    fn feed_name(&self) -> &'static str {
        match self.settings.feed {
            ChangeFeed::Off => "off",
            ChangeFeed::Postgres => "postgres",
        }
    }

    /// One heartbeat: say we are alive, count the others, decide trust.
    async fn beat(&self) {
        let window = self.settings.heartbeat * 3;
        let beat =
            self.store
                .node_heartbeat(self.node_id, &self.settings.name, self.feed_name(), window);
        match beat.await {
            Ok(others) => {
                let without = others.iter().filter(|feed| feed.as_str() == "off").count();
                self.census
                    .others_alive
                    .store(others.len(), Ordering::Release);
                self.census
                    .others_without_feed
                    .store(without, Ordering::Release);
                self.apply_trust();
            }
            // The database is away: reads fail anyway; keep the last census.
            Err(e) => tracing::debug!(error = %e, "heartbeat not written"),
        }
    }

    /// Called by the feed when it connects or drops.
    fn set_feed_healthy(&self, healthy: bool) {
        self.census.feed_healthy.store(healthy, Ordering::Release);
        self.apply_trust();
        // Requests waiting in `catch_up` read PostgreSQL now instead.
        self.census.sync.heard.send_modify(|_| {});
    }

    /// Whether this node runs a change feed (and so [`Cluster::catch_up`] may wait).
    pub fn has_feed(&self) -> bool {
        self.settings.feed == ChangeFeed::Postgres
    }

    /// Before a request is handled: waits until this node has heard every change committed
    /// anywhere before the request arrived (see [`SyncPoint`]), so it answers what a write
    /// through another node just acknowledged. Only while memory is trusted: otherwise reads
    /// go to PostgreSQL anyway. `false` when the feed did not answer within
    /// [`CATCH_UP_DEADLINE`].
    pub async fn catch_up(&self) -> bool {
        let trusted = || self.census.trusted.load(Ordering::Acquire);
        if self.settings.feed != ChangeFeed::Postgres || !trusted() {
            return true;
        }
        let sync = &self.census.sync;
        // A ping numbered above what was sent by now is sent after this request arrived.
        let target = sync.sent.load(Ordering::SeqCst) + 1;
        sync.wanted.fetch_max(target, Ordering::SeqCst);
        let mut heard = sync.heard.subscribe();
        sync.wake.notify_one();
        let caught = actix_web::rt::time::timeout(
            CATCH_UP_DEADLINE,
            heard.wait_for(|h| *h >= target || !trusted()),
        )
        .await;
        matches!(caught, Ok(Ok(_)))
    }

    /// The feed's side of [`Cluster::catch_up`]: whether a request waits for a ping not sent
    /// yet; if so, the number of the ping to send now.
    fn next_sync_ping(&self) -> Option<u64> {
        let sync = &self.census.sync;
        (sync.wanted.load(Ordering::SeqCst) > *sync.heard.borrow())
            .then(|| sync.sent.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// The feed heard back its sync ping `n`.
    fn sync_heard(&self, n: u64) {
        self.census.sync.heard.send_modify(|h| *h = (*h).max(n));
    }

    /// Trust memory only if every writer's changes reach us: with a feed configured, while
    /// it is healthy and every other live node announces its changes (a node that is alone
    /// now may not be at its next beat); without one, while no other node is alive.
    fn apply_trust(&self) {
        let others = self.census.others_alive.load(Ordering::Acquire);
        let without = self.census.others_without_feed.load(Ordering::Acquire);
        let feed = self.census.feed_healthy.load(Ordering::Acquire);
        let trusted = match self.settings.feed {
            ChangeFeed::Off => others == 0,
            ChangeFeed::Postgres => feed && without == 0,
        };
        let was = self.census.trusted.swap(trusted, Ordering::AcqRel);
        if was && !trusted {
            self.census.distrusted.fetch_add(1, Ordering::Relaxed);
            if self.settings.feed == ChangeFeed::Off {
                tracing::warn!(
                    other_nodes = others,
                    "another colloquy node is serving this database and CHANGE_FEED is off: \
                     answering every read from PostgreSQL (slower, never stale); set \
                     CHANGE_FEED=postgres on every node"
                );
            } else if !feed {
                tracing::warn!(
                    "change feed down: answering reads from PostgreSQL until it is back"
                );
            } else {
                tracing::warn!(
                    nodes_without_feed = without,
                    "a node without a change feed serves this database: answering reads from \
                     PostgreSQL; set CHANGE_FEED=postgres on every node"
                );
            }
        } else if trusted && !was {
            tracing::info!(other_nodes = others, "answering reads from memory");
        }
        self.tickets.set_memory_trusted(trusted);
        self.teams.set_trusted(trusted);
    }

    /// A notice from the feed (see `sql/V3__cluster.sql` for the payloads); applied before
    /// the next notice, so a sync ping heard after it finds it in force.
    async fn on_notice(&self, payload: &str) {
        let mut parts = payload.splitn(3, ' ');
        let (kind, node, rest) = (parts.next(), parts.next(), parts.next().unwrap_or(""));
        if node == Some(self.node_id.to_string().as_str()) {
            return; // our own change: memory already has it
        }
        if kind != Some("p") {
            self.census.notices.fetch_add(1, Ordering::Relaxed);
        }
        match kind {
            Some("t") => {
                for id in rest.split(',').filter_map(|s| Uuid::parse_str(s).ok()) {
                    self.tickets.changed_elsewhere(id);
                }
            }
            Some("y") => {
                let mut it = rest.split(' ');
                if let (Some(Ok(id)), Some(who)) = (it.next().map(Uuid::parse_str), it.next()) {
                    self.tickets.typing_elsewhere(id, who == "c");
                }
            }
            Some("T") => match Uuid::parse_str(rest) {
                Ok(team) => self.teams.invalidate(team),
                Err(_) => self.teams.clear(),
            },
            Some("B") => self.blocks.refresh(&self.store).await,
            Some("p") => {} // another node's ping of its own feed
            _ => tracing::debug!(payload, "unknown change notice"),
        }
    }

    /// Tells other nodes' streams of the ticket that someone is typing (no commit announces
    /// it); never waits.
    pub fn typing(&self, ticket_id: Uuid, customer: bool) {
        if self.settings.feed == ChangeFeed::Off {
            return;
        }
        let (store, node) = (self.store.clone(), self.node_id);
        actix_web::rt::spawn(async move {
            if let Err(e) = store.announce_typing(node, ticket_id, customer).await {
                tracing::debug!(error = %e, "typing not announced");
            }
        });
    }

    /// After the feed (re)connected: whatever changed while it was down is reloaded.
    async fn revalidate(&self) {
        self.teams.clear();
        self.blocks.refresh(&self.store).await;
        self.tickets.revalidate_all();
    }

    /// What `/api/ops/cluster` shows.
    pub fn status(&self) -> ClusterStatus {
        let c = &self.census;
        ClusterStatus {
            node_id: self.node_id,
            name: self.settings.name.clone(),
            feed: self.settings.feed,
            feed_healthy: c.feed_healthy.load(Ordering::Acquire),
            other_nodes_alive: c.others_alive.load(Ordering::Acquire),
            other_nodes_without_feed: c.others_without_feed.load(Ordering::Acquire),
            memory_trusted: c.trusted.load(Ordering::Acquire),
            times_distrusted: c.distrusted.load(Ordering::Relaxed),
            notices_received: c.notices.load(Ordering::Relaxed),
        }
    }

    /// Leaves the registry at shutdown, so the others trust their memory again at once.
    pub async fn leave(&self) {
        if let Err(e) = self.store.deregister_node(self.node_id).await {
            tracing::debug!(error = %e, "node not deregistered");
        }
    }
}
