//! 413 before the body: a request whose `Content-Length` is over `MAX_BODY_BYTES` is answered at once, without
//! reading a byte of its body, and the connection is closed. Without this, the JSON extractor would wait for
//! the body (axum's `DefaultBodyLimit` only counts bytes as they arrive), so a client could announce a huge
//! body, send a little, and hold the connection until the request timeout.
//!
//! A body without a length (chunked) is counted as it arrives by `DefaultBodyLimit` on every route that reads
//! one, which answers 413 as soon as the limit is crossed; nothing needs adding for that.

use super::error::{ApiError, ErrorCode};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub async fn early_413(State(max): State<usize>, req: Request, next: Next) -> Response {
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        let mut res = ApiError::new(ErrorCode::PayloadTooLarge, "the request body is too large").into_response();
        // The body was never read: the connection cannot carry another request.
        res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return res;
    }
    next.run(req).await
}
