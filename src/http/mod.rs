//! HTTP surface: the JSON API, the clinic's appointments and outbox (`appointments`), the practitioner console
//! (`console`: its page, sign-in and the `Practitioner` extractor), the signaling socket, health, metrics, and
//! the browser assets from `web/`.
//! Every asset is served by the gateway itself (no CDN), so an offline clinic works.
//!
//! Limits at the edge, each in its own module: `body_limit` (413 from `Content-Length` alone), `throttle` (429
//! per API key and per client address), `sockets` (caps on open signaling sockets), `timeouts` (the request
//! timeout); the header-read timeout is the listeners' (`server`).

pub mod api;
pub mod appointments;
pub mod body_limit;
pub mod caller;
pub mod client;
pub mod console;
pub mod error;
pub mod json;
pub mod sockets;
pub mod throttle;
pub mod timeouts;
pub mod ws;

use crate::app::AppState;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{any, get, post};
use serde_json::json;
use std::sync::Arc;
use tower_http::compression::CompressionLayer;
use tower_http::services::ServeDir;
use tower_http::trace::TraceLayer;

pub use caller::ListenerScheme;
pub use console::{Practitioner, Via};

pub fn router(state: AppState) -> Router {
    // Compressed for browsers that accept gzip: the Chime SDK bundle is 1.2 MB, 0.25 MB gzipped, and patients join
    // from phones on slow networks.
    let web = tower::ServiceBuilder::new()
        .layer(CompressionLayer::new())
        .service(ServeDir::new(&state.config.web_dir).fallback(get(not_found).post(not_found)));
    let limits = &state.config.limits;
    let throttle = Arc::new(throttle::Throttle::new(limits, state.metrics.clone()));
    let sockets = sockets::Sockets::new(limits, state.metrics.clone());
    // The API and the console's sign-in, rate-limited per client address and per API key.
    let throttled = Router::new()
        .route(
            "/api/aws-chime-video",
            post(api::handle)
                .fallback(api::method_not_allowed)
                .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
                .layer(middleware::from_fn_with_state(state.clone(), api::timed)),
        )
        // A wrong method gets the contract's JSON error too, not axum's empty 405.
        .route(
            "/api/appointments",
            get(appointments::list)
                .post(appointments::create)
                .fallback(async || appointments::wrong_method("GET, POST"))
                .layer(DefaultBodyLimit::max(state.config.max_body_bytes)),
        )
        .route(
            "/api/appointments/{id}",
            get(appointments::get)
                .patch(appointments::update)
                .fallback(async || appointments::wrong_method("GET, PATCH"))
                .layer(DefaultBodyLimit::max(state.config.max_body_bytes)),
        )
        .route("/api/appointments/{id}/cancel", post(appointments::cancel).fallback(async || appointments::wrong_method("POST")))
        .route("/api/outbox", get(appointments::outbox_list).fallback(async || appointments::wrong_method("GET")))
        .route("/api/outbox/{id}/retry", post(appointments::outbox_retry).fallback(async || appointments::wrong_method("POST")))
        // Any other path under /api/ gets the contract's JSON 404, not the static files' plain one or an empty 405.
        .route("/api/{*rest}", any(api::no_such_route))
        .merge(console::sign_in(&state))
        .route_layer(middleware::from_fn_with_state((state.clone(), throttle.clone()), throttle::api));
    // Everything but the socket is answered within the request timeout.
    let timed = throttled
        .merge(console::routes(&state))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback_service(web)
        .layer(middleware::from_fn_with_state((limits.request_timeout, state.metrics.clone()), timeouts::request));
    // The socket lives as long as the visit: no request timeout. Join attempts per address first, then the caps,
    // both answered before the upgrade.
    let socket = Router::new().route(
        "/ws",
        get(ws::upgrade)
            .layer(middleware::from_fn_with_state(sockets, sockets::admit))
            .layer(middleware::from_fn_with_state(throttle, throttle::join)),
    );
    timed
        .merge(socket)
        .layer(middleware::from_fn_with_state(state.config.max_body_bytes, body_limit::early_413))
        // Spans carry the method and the path only: query strings hold invites (`?invite=…`) and the console's
        // one-time sign-in tokens (`?token=…`), so the URI as a whole must never be recorded.
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            tracing::debug_span!("http", method = %req.method(), path = %req.uri().path())
        }))
        .with_state(state)
}

async fn healthz(State(state): State<AppState>) -> Response {
    if state.shutdown.is_triggered() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "draining"}))).into_response();
    }
    Json(json!({"status": "ok"})).into_response()
}

/// Prometheus text exposition. Unauthenticated, as scrapers expect, which is safe only because it holds
/// aggregate numbers and nothing else: no meeting or attendee ids, names, IPs or tokens, and no label value a
/// client chose (see `metrics`). Keep it that way; anything per-patient belongs behind the API key.
async fn metrics(State(state): State<AppState>) -> Response {
    let mut res = state.metrics.render().into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    res
}

/// Anything not routed and not under `web/` (`/` is the console's route).
async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

/// `/` when `web/console.html` does not exist (a gateway run with an empty or custom `WEB_DIR`).
pub(crate) const INDEX: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>telehealth-gateway</title></head>
<body>
<h1>telehealth-gateway</h1>
<p>The gateway is running. Create a meeting with <code>POST /api/aws-chime-video</code>
(<code>{"action":"create-meeting"}</code>, <code>Authorization: Bearer &lt;API key&gt;</code>),
then open the <code>link</code> it returns: <code>/telehealth-aws.html?meeting=…</code>.</p>
<p><a href="/healthz">/healthz</a> · <a href="/metrics">/metrics</a></p>
</body></html>
"#;
