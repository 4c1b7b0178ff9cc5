//! Builds the application — pool, migrations, actors, HTTP server — and runs it until a
//! signal, then shuts down in order: stop accepting, finish in-flight requests, let every
//! ticket actor commit its queue, write pending suspicion flags.

use crate::cluster::{ChangeFeed, Cluster};
use crate::config::Settings;
use crate::http::{self, AppState};
use crate::store;
use crate::teams::TeamCache;
use actix_cors::Cors;
use actix_web::dev::Server;
use actix_web::http::header;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use colloquy_actors::rate_limiter::RateLimiters;
use colloquy_actors::store::Store;
use colloquy_actors::suspicion::shared::SharedWindows;
use colloquy_actors::suspicion::SuspicionDetector;
use colloquy_actors::ticket::{TicketConfig, TicketRouter};
use std::net::TcpListener;
use std::sync::Arc;

/// A built, not yet running, colloquy.
pub struct Application {
    port: u16,
    server: Server,
    state: AppState,
}

impl Application {
    /// Connects, migrates, starts the actors and binds the listener. Must run inside an
    /// actix System (`#[actix_web::main]` / `#[actix_web::test]`).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        store::migrate(&settings.database.config).await?;
        let node_id = uuid::Uuid::now_v7();
        let announce = (settings.cluster.feed != ChangeFeed::Off).then_some(node_id);
        let pg = store::connect(&settings.database, announce)?;
        let _first = pg
            .pool()
            .get()
            .await
            .context("open a first database connection")?;
        pg.start_group_commit();
        let port_store: Arc<dyn Store> = Arc::new(pg.clone());
        let tickets = TicketRouter::start(Arc::clone(&port_store), TicketConfig::default());
        let (teams, blocks) = (TeamCache::default(), crate::blocks::BlockList::default());
        // Bound before joining the cluster: the node is named host:port (the port it really
        // listens on, also with BIND=…:0), and a row of the same name is this node's crashed
        // predecessor (two live processes cannot share the port).
        let listener = TcpListener::bind(settings.bind)
            .with_context(|| format!("listen on {}", settings.bind))?;
        let port = listener.local_addr()?.port();
        let mut cluster_settings = settings.cluster.clone();
        if cluster_settings.name.is_empty() {
            cluster_settings.name = format!("{}:{port}", crate::cluster::host_name());
        } else if let Some(host) = cluster_settings.name.strip_suffix(":0") {
            cluster_settings.name = format!("{host}:{port}");
        }
        let cluster = Cluster::start(
            cluster_settings,
            node_id,
            pg.clone(),
            tickets.clone(),
            teams.clone(),
            blocks.clone(),
        )
        .await?;
        // The cluster's Redis (`REDIS_URL`), one handle for everything nodes count together:
        // rate budgets (docs/scale-out.md) and spam windows (docs/spam-defence.md). Unset,
        // each node counts and scores alone.
        let redis = settings
            .cluster
            .redis_url
            .as_deref()
            .map(crate::cluster::redis::RedisHandle::connect)
            .transpose()?;
        let prefix = &settings.cluster.redis_prefix;
        let limiters = RateLimiters::new(
            settings.key_tables.rate_limit_keys_per_team,
            crate::cluster::budgets::shared(redis.as_ref(), prefix, &cluster),
        );
        let spam_windows = redis.map(|redis| {
            Arc::new(crate::cluster::spam_redis::SpamRedis::new(
                redis, prefix, node_id,
            )) as Arc<dyn SharedWindows>
        });
        let state = AppState {
            store: pg.clone(),
            teams,
            limiters,
            tickets,
            cluster,
            suspicion: SuspicionDetector::start_shared(
                port_store,
                settings.key_tables.suspicion_keys,
                spam_windows,
            ),
            mailer: crate::mailer::MailerHandle::start(pg.clone(), settings.smtp.clone()),
            blocks,
            draining: Arc::default(),
            metrics: Arc::new(crate::telemetry::Metrics::new().context("register metrics")?),
            admin_token: settings.admin_token.clone(),
            trusted_proxies: settings.trusted_proxies.clone(),
            streams: http::stream::StreamSlots::new(settings.streams),
        };
        state.blocks.refresh(&state.store).await;
        state.blocks.keep_fresh(state.store.clone());
        if state.admin_token.is_none() {
            tracing::warn!("ADMIN_TOKEN is not set: the admin API (POST /api/teams) is disabled");
        }
        let data = web::Data::new(state.clone());
        let mut server = HttpServer::new(move || {
            App::new()
                // The last wrap is the outermost: CORS headers reach every answer, also the
                // deadline's 503.
                .wrap(actix_web::middleware::from_fn(http::ops::observe_request))
                .wrap(widget_cors())
                .app_data(data.clone())
                .configure(http::routes)
                .default_service(web::to(http::not_found))
        })
        .shutdown_timeout(10)
        .disable_signals();
        if let Some(n) = settings.workers {
            server = server.workers(n);
        }
        let server = server.listen(listener)?.run();
        stop_on_signal(
            server.handle(),
            state.draining.clone(),
            state.tickets.clone(),
        );
        tracing::info!("listening on http://{}:{port}", settings.bind.ip());
        Ok(Self {
            port,
            server,
            state,
        })
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGINT/SIGTERM (or the server handle stops), then drains the actors.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.server.await.context("HTTP server failed")?;
        tracing::info!("HTTP stopped; draining ticket actors");
        self.state.tickets.drain().await;
        self.state.suspicion.flush().await;
        self.state.cluster.leave().await;
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// How long new requests are answered `503` (with `Connection: close`) after a stop signal
/// before the listener closes: clients and load balancers move away instead of meeting a
/// closed socket in the middle of a request.
const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// On SIGTERM or SIGINT: drain (new requests get 503), end the open SSE streams (they would
/// otherwise hold the server for its whole shutdown timeout), then stop accepting and let
/// in-flight requests finish (`run_until_stopped` then drains the actors).
fn stop_on_signal(
    server: actix_web::dev::ServerHandle,
    draining: Arc<std::sync::atomic::AtomicBool>,
    tickets: TicketRouter,
) {
    actix_web::rt::spawn(async move {
        use actix_web::rt::signal::unix::{signal, SignalKind};
        let term = async {
            match signal(SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = term => tracing::info!("SIGTERM received"),
            _ = actix_web::rt::signal::ctrl_c() => tracing::info!("SIGINT received"),
        }
        draining.store(true, std::sync::atomic::Ordering::SeqCst);
        actix_web::rt::time::sleep(DRAIN_GRACE).await;
        tickets.end_streams().await;
        server.stop(true).await;
    });
}

/// Browsers call the widget API cross-origin with a custom header: preflights succeed for
/// any origin (the team, and so its allowed domains, is only known from the token of the
/// real request, which is checked there), and every response echoes the origin.
fn widget_cors() -> Cors {
    Cors::default()
        .allow_any_origin()
        .allowed_methods(["GET", "POST", "OPTIONS"])
        .allowed_headers([
            header::CONTENT_TYPE,
            header::HeaderName::from_static("x-conversations-token"),
        ])
        .expose_headers([header::RETRY_AFTER])
        .max_age(86_400)
}
