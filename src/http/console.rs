//! The practitioner console: its page at `/`, its sign-in and sign-out, and the `Practitioner` extractor that
//! lets any route accept either the bearer API key or the console's session cookie.
//!
//! Routes:
//! - `GET /` — `web/console.html` (a small built-in page when the web directory has none);
//! - `POST /console/login` `{"key":"…"}` — checks the API key, starts a session, sets the cookie;
//! - `GET /console/login?token=…` — the one-time link of the start-up banner: sets the cookie, 303 to `/`;
//! - `POST /console/logout` — ends the session server-side and clears the cookie;
//! - `GET /console/session` — the session's CSRF token and the clinic's name and time zone.
//!
//! The cookie is HttpOnly (page scripts never see it), SameSite=Strict (no other site's page can make the
//! browser send it), Path=/, `Secure` when the request came over the HTTPS listener, and lives as long as the
//! session (`CONSOLE_SESSION_HOURS`). SameSite is the first CSRF defence; the second is that every
//! state-changing request authenticated by the cookie must echo the session's CSRF token in `X-CSRF-Token`,
//! which only a page of ours can read (from `GET /console/session`). A bearer key needs no CSRF token: a
//! browser never attaches one on its own.

use super::caller::{ListenerScheme, require_key};
use super::error::ApiError;
use crate::app::AppState;
use crate::auth::Caller;
use crate::auth::console::ConsoleSession;
use crate::store::AuditActor;
use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Extension, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

/// The session cookie's name. Its value is a random id, nothing else.
pub const SESSION_COOKIE: &str = "telehealth_console";
/// The header carrying the session's CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";

const NO_CREDENTIALS: &str = "an API key is required (Authorization: Bearer <key>)";

/// The console's page and session routes; the sign-in is `sign_in`, which the router rate-limits with the API.
pub fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(page))
        .route("/console/logout", post(logout))
        .route("/console/session", get(session))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
}

/// `/console/login`: both ways of signing in (the key in a form, the banner's one-time link).
pub fn sign_in(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/console/login", get(login_link).post(login))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
}

// ---------- the extractor ----------

/// How a practitioner proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `Authorization: Bearer <API key>`.
    ApiKey,
    /// The console's session cookie (plus `X-CSRF-Token` on anything but GET/HEAD/OPTIONS).
    Session,
}

/// A caller allowed to act for the practice: a bearer API key, or a console session (a session signed in with a
/// key acts as that key, by fingerprint; one from the banner's one-time link acts as `console`).
///
/// Use it as a handler argument; it rejects with the contract's 401 (no or bad credentials, expired session)
/// or 403 (cookie without the right `X-CSRF-Token` on a state-changing method):
///
/// ```ignore
/// async fn cancel(State(state): State<AppState>, who: Practitioner, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
///     state.appointments.cancel(&id, &who.actor()).await?; …
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Practitioner {
    pub caller: Caller,
    pub via: Via,
}

impl Practitioner {
    /// Who the audit log says acted.
    pub fn actor(&self) -> AuditActor {
        audit_actor(&self.caller)
    }
}

/// The audit log's actor for a caller.
pub fn audit_actor(caller: &Caller) -> AuditActor {
    match caller {
        Caller::ApiKey { fingerprint } => AuditActor::ApiKey { fingerprint: fingerprint.clone() },
        Caller::Invite { .. } => AuditActor::Invite,
        Caller::Console => AuditActor::Console,
    }
}

impl FromRequestParts<AppState> for Practitioner {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        authenticate(state, &parts.method, &parts.headers)
    }
}

/// The bearer key when an `Authorization` header is present (exactly as the API always checked it), otherwise
/// the session cookie, with the CSRF check for state-changing methods.
pub fn authenticate(state: &AppState, method: &Method, headers: &HeaderMap) -> Result<Practitioner, ApiError> {
    if headers.contains_key(header::AUTHORIZATION) {
        return require_key(state, headers).map(|caller| Practitioner { caller, via: Via::ApiKey });
    }
    let ids = session_ids(headers);
    if ids.is_empty() {
        return Err(ApiError::unauthorized(NO_CREDENTIALS));
    }
    let session = find_session(state, &ids)
        .ok_or_else(|| ApiError::unauthorized("the console session has expired or was signed out; sign in again"))?;
    if !is_safe(method) {
        check_csrf(&session, headers)?;
    }
    Ok(Practitioner { caller: session.caller, via: Via::Session })
}

/// Methods that change nothing, so need no CSRF token.
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn check_csrf(session: &ConsoleSession, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    if presented.is_empty() || !session.csrf_matches(presented) {
        return Err(ApiError::forbidden(
            "the X-CSRF-Token header is missing or wrong (read the token from GET /console/session)",
        ));
    }
    Ok(())
}

/// Every value of our cookie in the request. Usually one; more when a browser holds an older one for another
/// path or listener, so each is tried.
fn session_ids(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, value)| *name == SESSION_COOKIE && !value.is_empty())
        .map(|(_, value)| value.trim_matches('"'))
        .take(4)
        .collect()
}

fn find_session(state: &AppState, ids: &[&str]) -> Option<ConsoleSession> {
    ids.iter().find_map(|id| state.auth.console().find(id))
}

/// Who the request's live console session acts as, if it has one (no CSRF check: the throttle only needs to
/// know whose budget a request spends, the handler still authenticates it).
pub(super) fn session_caller(state: &AppState, headers: &HeaderMap) -> Option<Caller> {
    find_session(state, &session_ids(headers)).map(|s| s.caller)
}

// ---------- cookies ----------

fn secure(scheme: Option<Extension<ListenerScheme>>) -> bool {
    matches!(scheme, Some(Extension(ListenerScheme::Https)))
}

fn cookie(value: &str, max_age_secs: u64, secure: bool) -> Result<HeaderValue, ApiError> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{SESSION_COOKIE}={value}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{secure}"))
        .map_err(|e| ApiError::internal(&e))
}

/// Starts a session for `caller` and returns the `Set-Cookie` value.
fn start_session(state: &AppState, caller: Caller, secure: bool) -> Result<HeaderValue, ApiError> {
    let sessions = state.auth.console();
    let new = sessions.start(caller);
    tracing::info!(actor = %new.session.caller.audit_actor(), "console signed in");
    cookie(&new.id, sessions.ttl().as_secs(), secure)
}

/// Nothing a console answer carries may be cached: CSRF tokens, the signed-in state.
fn no_store(mut res: Response) -> Response {
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

// ---------- handlers ----------

/// `GET /`: the console page. Its scripts and styles come from this origin only, and no other site may frame
/// it (the console is a clickjacking target: Cancel and Copy link are one click each).
async fn page(State(state): State<AppState>) -> Response {
    let path = state.config.web_dir.join("console.html");
    let html = match tokio::fs::read_to_string(&path).await {
        Ok(html) => html,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => super::INDEX.to_owned(),
        Err(e) => return ApiError::internal(&e).into_response(),
    };
    let mut res = Html(html).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

#[derive(Deserialize)]
struct LoginBody {
    key: String,
}

/// `POST /console/login`.
async fn login(
    State(state): State<AppState>,
    scheme: Option<Extension<ListenerScheme>>,
    body: Result<Json<LoginBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(LoginBody { key }) = body?;
    let Some(caller) = state.auth.check_api_key(key.trim()) else {
        tracing::info!("console sign-in refused: wrong key");
        return Err(ApiError::unauthorized("the API key is not valid"));
    };
    let set_cookie = start_session(&state, caller, secure(scheme))?;
    Ok(no_store(([(header::SET_COOKIE, set_cookie)], Json(json!({"success": true}))).into_response()))
}

#[derive(Deserialize)]
struct LinkQuery {
    token: Option<String>,
}

/// `GET /console/login?token=…`: the banner's one-time link.
async fn login_link(
    State(state): State<AppState>,
    scheme: Option<Extension<ListenerScheme>>,
    query: Result<Query<LinkQuery>, QueryRejection>,
) -> Response {
    let token = query.ok().and_then(|Query(q)| q.token).unwrap_or_default();
    if token.is_empty() {
        return see_other("/");
    }
    if state.auth.console().redeem_login_link(&token).is_err() {
        tracing::info!("console sign-in link refused: used or expired");
        return no_store((StatusCode::GONE, Html(LINK_USED)).into_response());
    }
    match start_session(&state, Caller::Console, secure(scheme)) {
        Ok(set_cookie) => {
            let mut res = see_other("/");
            res.headers_mut().insert(header::SET_COOKIE, set_cookie);
            res
        }
        Err(e) => e.into_response(),
    }
}

fn see_other(to: &'static str) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    res.headers_mut().insert(header::LOCATION, HeaderValue::from_static(to));
    // The link's token must not travel on in a Referer header.
    res.headers_mut().insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    no_store(res)
}

/// `POST /console/logout`: ends the session (with its CSRF token: another site must not sign a practitioner
/// out) and clears the cookie. Without a live session there is nothing to end; the cookie is cleared anyway.
async fn logout(
    State(state): State<AppState>,
    scheme: Option<Extension<ListenerScheme>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let ids = session_ids(&headers);
    if let Some(session) = find_session(&state, &ids) {
        check_csrf(&session, &headers)?;
        for id in &ids {
            state.auth.console().end(id);
        }
        tracing::info!(actor = %session.caller.audit_actor(), "console signed out");
    }
    let clear = cookie("", 0, secure(scheme))?;
    Ok(no_store(([(header::SET_COOKIE, clear)], Json(json!({"success": true}))).into_response()))
}

/// `GET /console/session`: 200 with the CSRF token and the clinic's settings while signed in, else 401. Only
/// the cookie counts here: a bearer caller has no session and needs no CSRF token.
async fn session(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let session = find_session(&state, &session_ids(&headers)).ok_or_else(|| ApiError::unauthorized("not signed in"))?;
    let body = json!({
        "success": true,
        "csrfToken": session.csrf_token,
        "clinicName": state.config.notify.practice_name,
        "clinicTimezone": state.config.notify.timezone.name(),
    });
    Ok(no_store(Json(body).into_response()))
}

const LINK_USED: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow"><title>Sign-in link used or expired</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 36rem; margin: 3rem auto; padding: 0 1rem; line-height: 1.5">
<h1>This sign-in link was already used or has expired</h1>
<p>A sign-in link from the gateway's start-up message works once, for 15 minutes.</p>
<p><a href="/">Sign in with the API key</a> instead, or restart the gateway for a new link.</p>
</body></html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_of_our_cookie_is_found_and_others_are_ignored() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; telehealth_console=abc; b=2"));
        h.append(header::COOKIE, HeaderValue::from_static("telehealth_console=\"def\""));
        h.append(header::COOKIE, HeaderValue::from_static("telehealth_console_x=zzz; telehealth_console="));
        assert_eq!(session_ids(&h), ["abc", "def"]);
        assert!(session_ids(&HeaderMap::new()).is_empty());
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_only_on_https() {
        let plain = cookie("id", 60, false).unwrap();
        let plain = plain.to_str().unwrap();
        assert!(plain.contains("HttpOnly") && plain.contains("SameSite=Strict") && plain.contains("Path=/"), "{plain}");
        assert!(!plain.contains("Secure"));
        assert!(cookie("id", 60, true).unwrap().to_str().unwrap().ends_with("; Secure"));
    }
}
