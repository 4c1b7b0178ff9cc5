//! The OpenAPI document (`GET /api/openapi.json`) against the routes that exist.
//!
//! How "the routes that exist" is known: every surface lists its routes once, as
//! `http::Endpoint`s; `http::routes` registers exactly that list and `http::route_table()`
//! reports it (there is no second, hand-kept list). So:
//! - a route added without a `#[utoipa::path]` listed in `openapi::ApiDoc` is in the route
//!   table but not in the document → `document_and_routes_name_the_same_endpoints` fails;
//! - a documented path or method that is not registered (a typo, a removed route) is in the
//!   document but not in the table → the same test fails;
//! - `every_route_in_the_table_is_served` probes each route of the table without credentials
//!   and checks the router did not fall through to the default service (which answers
//!   `404 not_found`; every real route answers 200, 401 or 403 before it looks anything up),
//!   so the table cannot drift from what the server actually routes either.

use crate::helpers::spawn_app;
use serde_json::Value;
use std::collections::BTreeSet;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// `(METHOD, path)` of every operation in an OpenAPI document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("the document has paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect()
}

async fn served_document(address: &str) -> Value {
    let res = reqwest::get(format!("{address}/api/openapi.json"))
        .await
        .expect("GET /api/openapi.json");
    assert_eq!(res.status().as_u16(), 200);
    let doc: Value = res.json().await.expect("the document is JSON");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "not an OpenAPI 3 document: {:?}",
        doc["openapi"]
    );
    doc
}

#[actix_web::test]
async fn document_and_routes_name_the_same_endpoints() {
    let app = spawn_app().await;
    let documented = operations(&served_document(&app.address).await);
    let table = colloquy::http::route_table();
    let routed: BTreeSet<(String, String)> = table.iter().cloned().collect();
    assert_eq!(routed.len(), table.len(), "a route is registered twice");

    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "the OpenAPI document and the routes disagree.\n\
         registered but not documented (add #[utoipa::path] and list it in openapi::ApiDoc): \
         {undocumented:?}\n\
         documented but not registered: {unrouted:?}"
    );
}

#[actix_web::test]
async fn every_route_in_the_table_is_served() {
    let app = spawn_app().await;
    // The probe is meaningful: an unknown route is the default service's 404 not_found.
    let res = app
        .client
        .get(format!("{}/api/no/such/route", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "not_found");

    for (method, path) in colloquy::http::route_table() {
        // Every `{param}` becomes a fresh UUID (a distinct_id accepts one too).
        let mut concrete = String::new();
        let mut rest = path.as_str();
        while let Some(open) = rest.find('{') {
            let close = rest[open..].find('}').expect("balanced braces") + open;
            concrete.push_str(&rest[..open]);
            concrete.push_str(&uuid::Uuid::new_v4().to_string());
            rest = &rest[close + 1..];
        }
        concrete.push_str(rest);
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let res = app
            .client
            .request(m, format!("{}{concrete}", app.address))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {concrete}: {e}"));
        let status = res.status().as_u16();
        assert!(
            matches!(status, 200 | 401 | 403),
            "{method} {path} (as {concrete}) without credentials answered {status}: the route \
             table names a route the server does not route"
        );
    }
}

#[actix_web::test]
async fn every_operation_documents_success_errors_and_security() {
    let app = spawn_app().await;
    let doc = served_document(&app.address).await;
    let public: BTreeSet<&str> = ["/healthz", "/readyz", "/api/openapi.json"].into();
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes");
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS {
            let Some(op) = item.get(m) else { continue };
            let what = format!("{} {path}", m.to_uppercase());
            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{what}: no success response"
            );
            assert!(
                !responses.contains_key("500"),
                "{what}: a 500 is a bug, never part of the contract"
            );
            if public.contains(path.as_str()) {
                continue;
            }
            let security = op["security"].as_array().expect("{what}: no security");
            for requirement in security {
                for name in requirement.as_object().unwrap().keys() {
                    assert!(schemes.contains_key(name), "{what}: unknown scheme {name}");
                }
            }
            assert!(
                responses.contains_key("401") || responses.contains_key("403"),
                "{what}: a refused token is not documented"
            );
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{what} {status}: errors are ErrorBody"
                    );
                }
            }
        }
    }
}

/// One of every error the server can answer with. The `match` has no wildcard, so a new
/// `ApiError` variant does not compile until it has a sample here (and so is checked below).
fn every_api_error() -> Vec<colloquy::http::errors::ApiError> {
    use colloquy::http::errors::ApiError;
    let all = vec![
        ApiError::InvalidJson("not JSON"),
        ApiError::invalid("field", "bad"),
        ApiError::InvalidToken,
        ApiError::Blocked,
        ApiError::TokenRefused,
        ApiError::ConversationsDisabled,
        ApiError::OriginNotAllowed,
        ApiError::Forbidden,
        ApiError::IdentityRequired,
        ApiError::IdentityInvalid,
        ApiError::NotFound,
        ApiError::PayloadTooLarge,
        ApiError::RateLimited(std::time::Duration::from_secs(3)),
        ApiError::Unavailable("database down".into()),
        ApiError::Overloaded,
        ApiError::Internal("a bug".into()),
    ];
    for e in &all {
        match e {
            ApiError::InvalidJson(_)
            | ApiError::Validation(_)
            | ApiError::InvalidToken
            | ApiError::Blocked
            | ApiError::TokenRefused
            | ApiError::ConversationsDisabled
            | ApiError::OriginNotAllowed
            | ApiError::Forbidden
            | ApiError::IdentityRequired
            | ApiError::IdentityInvalid
            | ApiError::NotFound
            | ApiError::PayloadTooLarge
            | ApiError::RateLimited(_)
            | ApiError::Unavailable(_)
            | ApiError::Overloaded
            | ApiError::Internal(_) => {}
        }
    }
    all
}

#[actix_web::test]
async fn every_error_code_the_server_can_send_is_in_the_document() {
    let app = spawn_app().await;
    let doc = served_document(&app.address).await;
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["ErrorBody"]["properties"]["code"]["$ref"], "#/components/schemas/ErrorCode",
        "ErrorBody.code is not the ErrorCode enum"
    );
    let documented: BTreeSet<&str> = schemas["ErrorCode"]["enum"]
        .as_array()
        .expect("ErrorCode lists its codes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for e in every_api_error() {
        let res = actix_web::ResponseError::error_response(&e);
        let bytes = actix_web::body::to_bytes(res.into_body())
            .await
            .expect("an error body");
        let body: Value = serde_json::from_slice(&bytes).expect("the error body is JSON");
        let code = body["code"].as_str().expect("the body has a code");
        assert!(
            documented.contains(code),
            "{e:?} answers code {code:?}, which the document's ErrorCode does not list: \
             {documented:?}"
        );
    }
}
