//! The operator console at `/console/`: a small web page (plain HTML, CSS and JavaScript
//! modules, no framework, no build step) that shows the actors live with the admin token and
//! works the inbox with a team's secret key — through the same HTTP API as everyone else.
//!
//! The files live in `console/` and are embedded in the binary at build time
//! (`include_bytes!`), so `colloquy serve` needs nothing beside it. Every answer under
//! `/console` carries a strict Content-Security-Policy (scripts, styles and connections from
//! this origin only; no inline code, no frames), `nosniff` and its exact content type: the
//! page shows text that strangers wrote, so a slip in rendering must not become script.
//!
//! The console is not part of the API: its routes are registered here, outside
//! [`super::route_table`] and the OpenAPI document.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};

/// Scripts, styles, images and connections from this origin only; no inline code, no
/// plugins, no `<base>`, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file: its path under `/console/` and content type.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Every file of the console (the index is `""`).
const ASSETS: &[Asset] = &[
    Asset {
        path: "",
        content_type: HTML,
        body: include_bytes!("../../console/index.html"),
    },
    Asset {
        path: "console.css",
        content_type: CSS,
        body: include_bytes!("../../console/console.css"),
    },
    Asset {
        path: "favicon.svg",
        content_type: SVG,
        body: include_bytes!("../../console/favicon.svg"),
    },
    Asset {
        path: "js/app.js",
        content_type: JS,
        body: include_bytes!("../../console/js/app.js"),
    },
    Asset {
        path: "js/api.js",
        content_type: JS,
        body: include_bytes!("../../console/js/api.js"),
    },
    Asset {
        path: "js/dom.js",
        content_type: JS,
        body: include_bytes!("../../console/js/dom.js"),
    },
    Asset {
        path: "js/chart.js",
        content_type: JS,
        body: include_bytes!("../../console/js/chart.js"),
    },
    Asset {
        path: "js/actors.js",
        content_type: JS,
        body: include_bytes!("../../console/js/actors.js"),
    },
    Asset {
        path: "js/inbox.js",
        content_type: JS,
        body: include_bytes!("../../console/js/inbox.js"),
    },
];

/// Registers `/console` (a redirect), `/console/` and `/console/{file}`.
pub fn register(cfg: &mut web::ServiceConfig) {
    cfg.route("/console", web::get().to(to_index))
        .route("/console/{file:.*}", web::get().to(asset));
}

/// `/console` → `/console/`, so the page's relative links resolve under `/console/`.
async fn to_index() -> HttpResponse {
    let mut res = HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/console/"))
        .finish();
    harden(&mut res);
    res
}

/// An embedded file, or `404 not_found` in the API's error shape.
async fn asset(req: HttpRequest) -> HttpResponse {
    let file = req.match_info().get("file").unwrap_or_default();
    let mut res = match ASSETS.iter().find(|a| a.path == file) {
        Some(a) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, a.content_type))
            // Revalidated on every load: a new binary's console is never mixed with an old one.
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .body(a.body),
        None => actix_web::ResponseError::error_response(&super::errors::ApiError::NotFound),
    };
    harden(&mut res);
    res
}

/// The headers every console answer carries.
fn harden(res: &mut HttpResponse) {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}
