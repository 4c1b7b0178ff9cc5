//! The HTTP adapters: one module per API surface, sharing [`AppState`] and the extractors.
//! Handlers validate and authenticate, then dispatch to the actors.

pub mod admin;
pub mod client_ip;
pub mod console;
pub mod errors;
pub mod extract;
pub mod openapi;
pub mod operator;
pub mod operator_read;
pub mod operator_stream;
pub mod ops;
pub mod restore;
pub mod stream;
mod visitor;
pub mod widget;
pub mod widget_v1;
pub mod wire;

use crate::store::PgStore;
use crate::teams::TeamCache;
use actix_web::http::Method;
use actix_web::{web, FromRequest, Handler, Responder, Route};
use colloquy_actors::rate_limiter::RateLimiters;
use colloquy_actors::suspicion::SuspicionHandle;
use colloquy_actors::ticket::TicketRouter;
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
    pub tickets: TicketRouter,
    /// This node's place in a cluster: whether its memory may answer reads.
    pub cluster: crate::cluster::Cluster,
    /// The suspicion detector.
    pub suspicion: SuspicionHandle,
    /// Outgoing mail.
    pub mailer: crate::mailer::MailerHandle,
    /// Active blocks.
    pub blocks: crate::blocks::BlockList,
    /// Set once a stop signal arrived: new requests are refused while in-flight ones finish.
    pub draining: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Prometheus metrics.
    pub metrics: std::sync::Arc<crate::telemetry::Metrics>,
    /// Admin bearer token, if the admin API is on.
    pub admin_token: Option<String>,
    /// Proxies whose X-Forwarded-For is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Open SSE streams per client IP, per team and in total, against their caps.
    pub streams: stream::StreamSlots,
}

/// One route of the API: method, path (relative to its surface's scope) and handler.
///
/// Each surface lists its routes as `Endpoint`s; [`routes`] registers exactly that list and
/// [`route_table`] reports it, so the two cannot disagree. `tests/api/openapi.rs` compares
/// the route table with the OpenAPI document (`openapi::ApiDoc`): a route registered
/// without a `#[utoipa::path]` in the document, or a documented path that is not
/// registered, fails that test.
pub struct Endpoint {
    method: Method,
    path: &'static str,
    route: Route,
}

impl Endpoint {
    /// `method path` served by `handler` (the same as `web::method(method).to(handler)`).
    pub fn new<F, Args>(method: Method, path: &'static str, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        Self {
            route: web::method(method.clone())
                .to(handler)
                .wrap(actix_web::middleware::from_fn(ops::deadline)),
            method,
            path,
        }
    }
}

/// Every surface: its scope prefix (empty: registered at the root) and its endpoints, in
/// registration order (a scope registered earlier wins a shared prefix).
fn surfaces() -> Vec<(&'static str, Vec<Endpoint>)> {
    vec![
        widget::endpoints(),
        widget_v1::endpoints(),
        operator::endpoints(),
        admin::endpoints(),
        ops::endpoints(),
        openapi::endpoints(),
    ]
}

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    for (prefix, endpoints) in surfaces() {
        if prefix.is_empty() {
            for e in endpoints {
                cfg.route(e.path, e.route);
            }
        } else {
            let scope = endpoints
                .into_iter()
                .fold(web::scope(prefix), |s, e| s.route(e.path, e.route));
            cfg.service(scope);
        }
    }
    console::register(cfg);
}

/// Every registered route as `(METHOD, full path)`, e.g. `("GET", "/healthz")`, with path
/// parameters in the `{name}` form that OpenAPI uses too.
pub fn route_table() -> Vec<(String, String)> {
    surfaces()
        .into_iter()
        .flat_map(|(prefix, endpoints)| {
            endpoints
                .into_iter()
                .map(move |e| (e.method.to_string(), format!("{prefix}{}", e.path)))
        })
        .collect()
}

/// Unknown routes answer in the contract's error shape, never actix's plain text.
pub async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}
