//! Logging: tracing with a request id on every line of a request (the span
//! `http::ops::observe_request` opens), as text or JSON. Secrets and message bodies are never logged.

use crate::config::LogFormat;
use colloquy_actors::suspicion::SharingStatus;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls (tests) are ignored.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,actix_server=warn"));
    // Colours only on a terminal: escape codes are noise in a log file or collector, and
    // styling every request span's fields showed in every poll's profile (nu_ansi_term).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.fmt_fields(text_fields()).try_init(),
    };
}

/// Text fields as `name=value`, separated by spaces: what the default formatter writes
/// without styling, but cheaper. Every request's span formats its fields when it is created
/// (`request_id`, `method`, then `team_id`), logged or not; the default formatter's styling
/// of each name (nu_ansi_term, even with colours off) made that half of the span's cost
/// (bench/NOTES.md, "Work per request").
fn text_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| match field.name() {
        "message" => write!(w, "{value:?}"),
        name => write!(w, "{name}={value:?}"),
    })
    .delimited(" ")
}

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// The Prometheus metrics colloquy exports at `/metrics`.
pub struct Metrics {
    registry: Registry,
    /// Requests by route pattern, method and status.
    pub requests: IntCounterVec,
    /// Request latency by route pattern and method.
    pub latency: HistogramVec,
    /// Rate-limit refusals by tier.
    pub rate_limited: IntCounterVec,
    /// SSE streams open now.
    pub streams_open: IntGauge,
    /// SSE streams the server ended, by reason (`lifetime`, `revoked`, `page`).
    pub streams_ended: IntCounterVec,
    actors: IntGaugeVec,
    pool: IntGaugeVec,
    verdicts: IntGaugeVec,
    suspicion_sharing: IntGaugeVec,
    group_commit: IntGaugeVec,
    cluster: IntGaugeVec,
    budgets: IntGaugeVec,
    /// The request series' handles by route, method and status, so that a request costs a
    /// lookup of its route and not a hash of its label values in each metric vector
    /// (bounded: routes are the registered patterns, methods and statuses are few).
    handles: std::sync::Mutex<RequestHandles>,
}

type RequestHandles = std::collections::HashMap<
    String,
    Vec<(
        &'static str,
        u16,
        prometheus::IntCounter,
        prometheus::Histogram,
    )>,
    foldhash::fast::RandomState,
>;

/// Every rate-limit tier, so each has a `colloquy_rate_limited_total` series (at 0) from the
/// start: dashboards and alert rules see a tier before its first refusal.
const TIERS: [colloquy_actors::rate_limiter::Tier; 9] = {
    use colloquy_actors::rate_limiter::Tier::*;
    [
        MessageDistinctId,
        MessageIp,
        MessageTeam,
        ReadDistinctId,
        WidgetSession,
        TeamReads,
        TeamWrites,
        RestoreEmail,
        RestoreIp,
    ]
};

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "colloquy_http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "colloquy_http_request_duration_seconds",
                "HTTP request latency",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["route", "method"],
        )?;
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "colloquy_rate_limited_total",
                "Requests refused by a rate limit, by tier",
            ),
            &["tier"],
        )?;
        let streams_open = IntGauge::new(
            "colloquy_sse_streams_open",
            "Server-Sent Event streams open now",
        )?;
        let streams_ended = IntCounterVec::new(
            Opts::new(
                "colloquy_sse_streams_ended_total",
                "Server-Sent Event streams the server ended, by reason",
            ),
            &["reason"],
        )?;
        let actors = IntGaugeVec::new(
            Opts::new("colloquy_actors", "Actor counters by kind and measure"),
            &["kind", "measure"],
        )?;
        let pool = IntGaugeVec::new(
            Opts::new(
                "colloquy_db_pool_connections",
                "Database pool connections by state",
            ),
            &["state"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(rate_limited.clone()))?;
        registry.register(Box::new(streams_open.clone()))?;
        registry.register(Box::new(streams_ended.clone()))?;
        registry.register(Box::new(actors.clone()))?;
        registry.register(Box::new(pool.clone()))?;
        let verdicts = IntGaugeVec::new(
            Opts::new(
                "colloquy_suspicion_verdicts_total",
                "Suspicion flags and automatic blocks since start",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(verdicts.clone()))?;
        let suspicion_sharing = IntGaugeVec::new(
            Opts::new(
                "colloquy_suspicion_sharing",
                "Spam windows shared through Redis: shared (1 yes, 0 this node scores alone, -1 not configured), failed round trips and observations scored alone since start",
            ),
            &["measure"],
        )?;
        registry.register(Box::new(suspicion_sharing.clone()))?;
        let group_commit = IntGaugeVec::new(
            Opts::new(
                "colloquy_group_commit",
                "The group committer: queued appends, transactions in flight, totals",
            ),
            &["measure"],
        )?;
        registry.register(Box::new(group_commit.clone()))?;
        let cluster = IntGaugeVec::new(
            Opts::new(
                "colloquy_cluster",
                "This node's view of the cluster: feed health, trust in memory, other live nodes",
            ),
            &["measure"],
        )?;
        registry.register(Box::new(cluster.clone()))?;
        let budgets = IntGaugeVec::new(
            Opts::new(
                "colloquy_rate_budgets",
                "Where rate budgets are decided: shared (Redis) or this node's fallback",
            ),
            &["measure"],
        )?;
        registry.register(Box::new(budgets.clone()))?;
        for tier in TIERS {
            rate_limited.with_label_values(&[tier.as_str()]);
        }
        Ok(Self {
            registry,
            requests,
            latency,
            rate_limited,
            streams_open,
            streams_ended,
            actors,
            pool,
            verdicts,
            suspicion_sharing,
            group_commit,
            cluster,
            budgets,
            handles: Default::default(),
        })
    }

    /// Counts a request and its latency under its route pattern, method and status.
    pub fn observe_request(
        &self,
        route: &str,
        method: &'static str,
        status: actix_web::http::StatusCode,
        seconds: f64,
    ) {
        let code = status.as_u16();
        let mut handles = self
            .handles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let of_route = match handles.get_mut(route) {
            Some(hs) => hs,
            None => handles.entry(route.to_owned()).or_default(),
        };
        let at = match of_route
            .iter()
            .position(|(m, c, ..)| *m == method && *c == code)
        {
            Some(at) => at,
            None => {
                of_route.push((
                    method,
                    code,
                    self.requests
                        .with_label_values(&[route, method, status.as_str()]),
                    self.latency.with_label_values(&[route, method]),
                ));
                of_route.len() - 1
            }
        };
        let (.., count, latency) = &of_route[at];
        count.inc();
        latency.observe(seconds);
    }

    /// Sets the group committer's gauges.
    pub fn set_group_commit(&self, s: &crate::store::GroupCommitStats) {
        let values: [(&str, i64); 7] = [
            ("queued", s.queued),
            ("capacity", s.capacity),
            ("in_flight", s.in_flight),
            ("max_in_flight", s.max_in_flight),
            ("transactions", s.transactions as i64),
            ("failed", s.failed as i64),
            ("dropped", s.dropped as i64),
        ];
        for (measure, v) in values {
            self.group_commit.with_label_values(&[measure]).set(v);
        }
    }

    /// The node's view of the cluster, read at scrape time (`/api/ops/cluster` in numbers).
    pub fn set_cluster(&self, s: &crate::cluster::ClusterStatus) {
        let feed_on = s.feed != crate::cluster::ChangeFeed::Off;
        let values: [(&str, i64); 6] = [
            ("feed_configured", i64::from(feed_on)),
            ("feed_healthy", i64::from(s.feed_healthy)),
            ("memory_trusted", i64::from(s.memory_trusted)),
            ("other_nodes_alive", s.other_nodes_alive as i64),
            (
                "other_nodes_without_feed",
                s.other_nodes_without_feed as i64,
            ),
            ("times_distrusted", s.times_distrusted),
        ];
        for (measure, v) in values {
            self.cluster.with_label_values(&[measure]).set(v);
        }
    }

    /// Where rate budgets are decided, read at scrape time: `fallback` is 1 while Redis is
    /// configured but unreachable (each node then allows limit / `live_nodes`).
    pub fn set_budgets(&self, b: &colloquy_actors::rate_limiter::BudgetsStatus) {
        let values: [(&str, i64); 6] = [
            ("shared", i64::from(b.mode == "cluster")),
            ("fallback", i64::from(b.mode == "fallback")),
            ("live_nodes", b.live_nodes as i64),
            ("fallbacks", b.fallbacks as i64),
            ("fallback_checks", b.fallback_checks as i64),
            ("store_calls", b.store_calls as i64),
        ];
        for (measure, v) in values {
            self.budgets.with_label_values(&[measure]).set(v);
        }
    }

    /// Rate-limit refusals since start, by tier (every tier, zeros included).
    pub fn rate_limited_by_tier(&self) -> std::collections::BTreeMap<String, u64> {
        use prometheus::core::Collector;
        let mut out = std::collections::BTreeMap::new();
        for family in self.rate_limited.collect() {
            for m in family.get_metric() {
                let tier = m
                    .get_label()
                    .iter()
                    .find(|l| l.name() == "tier")
                    .map(|l| l.value().to_owned());
                if let Some(tier) = tier {
                    out.insert(tier, m.get_counter().get_value() as u64);
                }
            }
        }
        out
    }

    /// HTTP requests answered since start, and how many of them with a 5xx.
    pub fn requests_answered(&self) -> (u64, u64) {
        use prometheus::core::Collector;
        let (mut all, mut server_errors) = (0u64, 0u64);
        for family in self.requests.collect() {
            for m in family.get_metric() {
                let n = m.get_counter().get_value() as u64;
                all += n;
                let is_5xx = m
                    .get_label()
                    .iter()
                    .any(|l| l.name() == "status" && l.value().starts_with('5'));
                if is_5xx {
                    server_errors += n;
                }
            }
        }
        (all, server_errors)
    }

    /// Sets an actor gauge (called at scrape time from the actors' own counters).
    pub fn set_actor(&self, kind: &str, s: &colloquy_actors::stats::ActorStatsSnapshot) {
        let values: [(&str, i64); 8] = [
            ("alive", s.alive),
            ("queued", s.queued),
            ("peak_queued", s.peak_queued),
            ("handled", s.handled as i64),
            ("errors", s.errors as i64),
            ("restarts", s.restarts as i64),
            ("evictions", s.evictions as i64),
            ("dropped", s.dropped as i64),
        ];
        for (measure, v) in values {
            self.actors.with_label_values(&[kind, measure]).set(v);
        }
    }

    /// Sets the pool gauges.
    pub fn set_pool(&self, status: deadpool_postgres::Status, readers: usize) {
        self.pool.with_label_values(&["reader"]).set(readers as i64);
        let in_use = status.size.saturating_sub(status.available);
        self.pool.with_label_values(&["in_use"]).set(in_use as i64);
        self.pool
            .with_label_values(&["idle"])
            .set(status.available as i64);
        self.pool
            .with_label_values(&["waiting"])
            .set(status.waiting as i64);
        self.pool
            .with_label_values(&["max"])
            .set(status.max_size as i64);
    }

    /// Sets the suspicion totals.
    pub fn set_suspicion(&self, flags: u64, blocks: u64) {
        self.verdicts
            .with_label_values(&["flags"])
            .set(flags as i64);
        self.verdicts
            .with_label_values(&["blocks"])
            .set(blocks as i64);
    }

    /// Sets whether the spam windows are shared (see [`SharingStatus`]).
    pub fn set_suspicion_sharing(&self, s: &SharingStatus) {
        let shared = match s.mode {
            "shared" => 1,
            "alone" => 0,
            _ => -1,
        };
        let g = &self.suspicion_sharing;
        g.with_label_values(&["shared"]).set(shared);
        g.with_label_values(&["failures"]).set(s.failures as i64);
        g.with_label_values(&["scored_alone"])
            .set(s.scored_alone as i64);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
