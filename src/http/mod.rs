//! The HTTP adapters: one module per API surface, sharing [`AppState`] and the extractors.
//! Handlers validate and authenticate, then dispatch to the actors.

pub mod admin;
pub mod client_ip;
pub mod errors;
pub mod extract;
pub mod operator;
pub mod ops;
pub mod restore;
pub mod stream;
pub mod widget;
pub mod widget_v1;

use crate::store::PgStore;
use crate::teams::TeamCache;
use actix_web::web;
use colloquy_actors::rate_limiter::RateLimiters;
use colloquy_actors::suspicion::SuspicionHandle;
use colloquy_actors::ticket::Tickets;
use errors::ApiError;
use ipnet::IpNet;

/// Everything a handler may use; cloned into each worker (all fields are handles).
#[derive(Clone)]
pub struct AppState {
    /// PostgreSQL.
    pub store: PgStore,
    /// Token → team.
    pub teams: TeamCache,
    /// Per-team rate limiters.
    pub limiters: RateLimiters,
    /// Ticket actors.
    pub tickets: Tickets,
    /// The suspicion detector.
    pub suspicion: SuspicionHandle,
    /// Outgoing mail.
    pub mailer: crate::mailer::MailerHandle,
    /// Active blocks.
    pub blocks: crate::blocks::BlockList,
    /// Prometheus metrics.
    pub metrics: std::sync::Arc<crate::telemetry::Metrics>,
    /// Admin bearer token, if the admin API is on.
    pub admin_token: Option<String>,
    /// Proxies whose X-Forwarded-For is believed.
    pub trusted_proxies: Vec<IpNet>,
}

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.configure(widget::routes)
        .configure(widget_v1::routes)
        .configure(operator::routes)
        .configure(admin::routes)
        .configure(ops::routes);
}

/// Unknown routes answer in the contract's error shape, never actix's plain text.
pub async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}
