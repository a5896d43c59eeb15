//! Who is calling and through which door: the listener a request came in on, the bearer API key (checked in
//! this one place; the console's extractor and the JSON API both call it), and the origin that links we hand
//! out point back to.

use super::error::ApiError;
use crate::app::AppState;
use crate::auth::Caller;
use crate::meetings::Origin;
use axum::http::{HeaderMap, Uri, header};

/// Which listener a request arrived on; set as an extension by the server so URLs we hand out
/// (`SignalingUrl`) use the same scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerScheme {
    Http,
    Https,
}

fn bearer(headers: &HeaderMap) -> Option<Result<&str, ApiError>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let parsed = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <API key>`"));
    Some(parsed)
}

/// The bearer key, checked exactly as always; the one place that does (the console's extractor calls it too).
pub(super) fn require_key(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let key = bearer(headers).ok_or_else(|| ApiError::unauthorized("an API key is required (Authorization: Bearer <key>)"))??;
    state.auth.check_api_key(key).ok_or_else(|| ApiError::unauthorized("the API key is not valid"))
}

/// The caller a bearer key names, without refusing anything: None when there is no `Authorization` header,
/// `Some(None)` when it holds no valid key.
pub(super) fn bearer_caller(state: &AppState, headers: &HeaderMap) -> Option<Option<Caller>> {
    bearer(headers).map(|key| key.ok().and_then(|k| state.auth.check_api_key(k)))
}

/// The base URL a local meeting's URLs point at: `APP_URL` if set, else the request's own Host and the
/// listener's scheme.
pub(super) fn origin(state: &AppState, scheme: ListenerScheme, headers: &HeaderMap, uri: &Uri) -> Origin {
    if let Some(o) = state.config.app_url.as_deref().and_then(Origin::from_app_url) {
        return o;
    }
    let scheme = match scheme {
        ListenerScheme::Http => "http",
        ListenerScheme::Https => "https",
    };
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned))
        // Only host[:port] characters: the value is echoed into URLs we hand out.
        .filter(|a| !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c)))
        .unwrap_or_else(|| state.config.http_addr.to_string());
    Origin { scheme, authority }
}
