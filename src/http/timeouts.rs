//! The request timeout (`HTTP_REQUEST_TIMEOUT_MS`) of every route but the signaling socket: a request must be
//! answered within it, its body included (the handlers read bodies themselves), so a client that trickles a
//! body, or a handler stuck behind something slow, cannot hold a connection and a task for ever. A response
//! that has begun is not cut: static files stream at the client's pace. (The header-read timeout, which comes
//! before any of this, is the listeners', see `server`.)
//!
//! The answer is 503 `ServiceUnavailable`, a Chime code that contract clients already retry, rather than 408:
//! the timeout cannot tell a slow client from a slow gateway, and a client that was merely slow loses nothing
//! by retrying. The connection is closed after it, since the body may be half read.

use super::error::{ApiError, ErrorCode};
use crate::metrics::Metrics;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Duration;

pub async fn request(State((limit, metrics)): State<(Duration, Arc<Metrics>)>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => {
            metrics.request_timed_out();
            let message = "the request took longer than the gateway allows; try again";
            let mut res = ApiError::new(ErrorCode::ServiceUnavailable, message).into_response();
            res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            res
        }
    }
}
