//! The practitioner console's sign-in against the real server: the key and the one-time link start a session,
//! the cookie is HttpOnly, SameSite=Strict (and Secure over HTTPS) and never carries the key, state-changing
//! requests need the session's CSRF token, signing out revokes the session, and the bearer key works as before.

mod common;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request};
use axum::routing::get;
use common::*;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, SET_COOKIE};
use serde_json::{Value, json};
use telehealth_gateway::http::{Practitioner, Via};
use telehealth_gateway::ids::MeetingId;
use tower::ServiceExt;

/// A signed-in console: the cookie pair to send back and the CSRF token.
struct Console {
    cookie: String,
    csrf: String,
}

fn set_cookie(headers: &HeaderMap) -> String {
    headers.get(SET_COOKIE).expect("a Set-Cookie header").to_str().unwrap().to_owned()
}

/// `telehealth_console=<id>` from a Set-Cookie value.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().trim().to_owned()
}

async fn login(s: &TestServer, base: &str, key: &str) -> reqwest::Response {
    s.client.post(format!("{base}/console/login")).json(&json!({"key": key})).send().await.unwrap()
}

async fn session(s: &TestServer, cookie: &str) -> (StatusCode, Value) {
    let res = s.client.get(s.url("/console/session")).header("cookie", cookie).send().await.unwrap();
    (res.status(), res.json().await.unwrap())
}

async fn sign_in(s: &TestServer) -> Console {
    let res = login(s, &s.url(""), &s.key).await;
    assert_eq!(res.status(), StatusCode::OK);
    let cookie = cookie_pair(&set_cookie(res.headers()));
    let (status, body) = session(s, &cookie).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    Console { cookie, csrf: body["csrfToken"].as_str().unwrap().to_owned() }
}

/// POST /api/aws-chime-video with the session cookie and, if given, an X-CSRF-Token.
async fn api_as_console(s: &TestServer, cookie: &str, csrf: Option<&str>, body: Value) -> (StatusCode, Value) {
    let mut req = s.client.post(s.url(API)).header("cookie", cookie).json(&body);
    if let Some(t) = csrf {
        req = req.header("x-csrf-token", t);
    }
    let res = req.send().await.unwrap();
    (res.status(), res.json().await.unwrap())
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// The one-time link's token, from the start-up banner.
fn banner_token(banner: &str) -> String {
    let at = banner.find("/console/login?token=").expect("the banner has a sign-in link");
    banner[at + "/console/login?token=".len()..].split_whitespace().next().unwrap().to_owned()
}

// ---------- signing in ----------

#[tokio::test]
async fn signing_in_with_the_key_sets_an_http_only_strict_cookie_that_does_not_carry_the_key() {
    let s = TestServer::start().await;
    let res = login(&s, &s.url(""), &s.key).await;
    assert_eq!(res.status(), StatusCode::OK);
    let cookie = set_cookie(res.headers());
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"success": true}));
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(cookie.split("; ").any(|a| a == attribute), "{attribute} missing: {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain-HTTP loopback cannot keep a Secure cookie: {cookie}");
    let value = cookie_pair(&cookie);
    assert!(value.starts_with("telehealth_console=") && value.len() > 40, "{value}");
    assert!(!cookie.contains(&s.key), "the cookie carries the API key");
}

#[tokio::test]
async fn over_https_the_cookie_is_also_secure() {
    let s = TestServer::start().await;
    let res = login(&s, &s.https_url(""), &s.key).await;
    assert_eq!(res.status(), StatusCode::OK);
    let cookie = set_cookie(res.headers());
    assert!(cookie.split("; ").any(|a| a == "Secure"), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
}

#[tokio::test]
async fn a_wrong_key_is_401_with_the_contract_error_and_sets_no_cookie() {
    let s = TestServer::start().await;
    for key in ["wrong-key-0123456789", ""] {
        let res = login(&s, &s.url(""), key).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert!(res.headers().get(SET_COOKIE).is_none());
        let body: Value = res.json().await.unwrap();
        assert_eq!(error_code(&body), "Unauthorized");
        assert!(body["error"]["message"].is_string());
    }
    let res = s.client.post(s.url("/console/login")).header("content-type", "application/json").body("{").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(s.state.auth.console().live(), 0);
}

#[tokio::test]
async fn the_session_endpoint_gives_the_csrf_token_and_the_clinic_settings_only_when_signed_in() {
    let s = TestServer::start_with(|c| {
        c.notify.practice_name = "Harbour Street Clinic".into();
        c.notify.timezone = "America/New_York".parse().unwrap();
    })
    .await;
    let (status, body) = session(&s, "telehealth_console=not-a-session").await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNAUTHORIZED, "Unauthorized"));
    let res = s.client.get(s.url("/console/session")).bearer_auth(&s.key).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "a bearer key has no session");

    let c = sign_in(&s).await;
    let (status, body) = session(&s, &c.cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["success"], json!(true));
    assert_eq!(body["clinicName"], json!("Harbour Street Clinic"));
    assert_eq!(body["clinicTimezone"], json!("America/New_York"));
    assert!(c.csrf.len() >= 32 && !c.cookie.contains(&c.csrf), "the CSRF token is not the session id");
}

#[tokio::test]
async fn the_clinic_defaults_are_our_clinic_in_utc() {
    let s = TestServer::start().await;
    let c = sign_in(&s).await;
    let (_, body) = session(&s, &c.cookie).await;
    assert_eq!((body["clinicName"].as_str(), body["clinicTimezone"].as_str()), (Some("Our Clinic"), Some("UTC")));
}

// ---------- CSRF ----------

#[tokio::test]
async fn a_cookie_without_the_right_csrf_token_is_refused_with_403_and_with_it_the_api_answers() {
    let s = TestServer::start().await;
    let c = sign_in(&s).await;
    let usage = json!({"action": "get-usage"});
    for csrf in [None, Some("wrong-token"), Some("")] {
        let (status, body) = api_as_console(&s, &c.cookie, csrf, usage.clone()).await;
        assert_eq!((status, error_code(&body)), (StatusCode::FORBIDDEN, "Forbidden"), "csrf {csrf:?}: {body}");
    }
    let (status, body) = api_as_console(&s, &c.cookie, Some(&c.csrf), usage).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["usage"]["days"].is_array());
    // Another session's token does not fit this one.
    let other = sign_in(&s).await;
    let (status, _) = api_as_console(&s, &c.cookie, Some(&other.csrf), json!({"action": "get-usage"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_console_signed_in_with_the_key_acts_as_that_key_in_the_audit_log() {
    let s = TestServer::start().await;
    let c = sign_in(&s).await;
    let (status, body) = api_as_console(&s, &c.cookie, Some(&c.csrf), json!({"action": "create-meeting"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = MeetingId::parse(body["meeting"]["MeetingId"].as_str().unwrap()).unwrap();
    let by_key = s.create_meeting().await;
    let by_key = MeetingId::parse(&meeting_id(&by_key)).unwrap();
    let console_actor = &s.state.store.audit_for_meeting(id).await.unwrap()[0].actor;
    let key_actor = &s.state.store.audit_for_meeting(by_key).await.unwrap()[0].actor;
    assert!(console_actor.starts_with("api-key:"), "{console_actor}");
    assert_eq!(console_actor, key_actor);
    // The practitioner can join from the console's browser without the patient's invite.
    let join = json!({"action": "create-attendee", "meetingId": id.to_string(), "attendeeName": "Dr. Smith"});
    let (status, body) = api_as_console(&s, &c.cookie, Some(&c.csrf), join.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = api_as_console(&s, &c.cookie, None, join).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "without its CSRF token the cookie does not count");
}

#[tokio::test]
async fn the_practitioner_extractor_lets_get_through_without_csrf_but_not_post() {
    let s = TestServer::start().await;
    let c = sign_in(&s).await;
    let probe = Router::new()
        .route("/probe", get(|p: Practitioner| async move { format!("{:?}", p.via) }).post(|p: Practitioner| async move { p.actor().to_column() }))
        .with_state(s.state.clone());
    let call = |method: Method, headers: Vec<(&'static str, String)>| {
        let mut req = Request::builder().method(method).uri("/probe");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        probe.clone().oneshot(req.body(Body::empty()).unwrap())
    };
    let ok = call(Method::GET, vec![("cookie", c.cookie.clone())]).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let body = axum::body::to_bytes(ok.into_body(), 1024).await.unwrap();
    assert_eq!(&body[..], format!("{:?}", Via::Session).as_bytes());
    let refused = call(Method::POST, vec![("cookie", c.cookie.clone())]).await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let posted = call(Method::POST, vec![("cookie", c.cookie.clone()), ("x-csrf-token", c.csrf.clone())]).await.unwrap();
    assert_eq!(posted.status(), StatusCode::OK);
    let bearer = call(Method::POST, vec![("authorization", format!("Bearer {}", s.key))]).await.unwrap();
    assert_eq!(bearer.status(), StatusCode::OK, "a bearer key needs no CSRF token");
    let nobody = call(Method::GET, vec![]).await.unwrap();
    assert_eq!(nobody.status(), StatusCode::UNAUTHORIZED);
}

// ---------- the one-time link ----------

#[tokio::test]
async fn the_banner_link_signs_in_once_then_says_it_was_used() {
    let s = TestServer::start().await;
    let token = banner_token(&s.banner);
    assert!(s.banner.contains(&format!("http://{}/console/login?token={token}", s.http)), "{}", s.banner);
    let client = no_redirects();
    let link = s.url(&format!("/console/login?token={token}"));
    let first = client.get(&link).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    assert_eq!(first.headers()["location"], "/");
    let cookie = set_cookie(first.headers());
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let cookie = cookie_pair(&cookie);
    let (status, body) = session(&s, &cookie).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The session acts as `console` (no key was shown).
    let csrf = body["csrfToken"].as_str().unwrap();
    let (status, created) = api_as_console(&s, &cookie, Some(csrf), json!({"action": "create-meeting"})).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let id = MeetingId::parse(created["meeting"]["MeetingId"].as_str().unwrap()).unwrap();
    assert_eq!(s.state.store.audit_for_meeting(id).await.unwrap()[0].actor, "console");

    let second = client.get(&link).send().await.unwrap();
    assert_eq!(second.status(), StatusCode::GONE);
    assert!(second.headers().get(SET_COOKIE).is_none());
    assert!(second.text().await.unwrap().contains("already used or has expired"));
    let forged = client.get(s.url("/console/login?token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")).send().await.unwrap();
    assert_eq!(forged.status(), StatusCode::GONE);
}

#[tokio::test]
async fn every_start_prints_a_different_link() {
    let a = TestServer::start().await;
    let b = TestServer::start().await;
    assert_ne!(banner_token(&a.banner), banner_token(&b.banner));
}

#[tokio::test]
async fn the_banner_link_uses_app_url_when_set() {
    let s = TestServer::start_with(|c| c.app_url = Some("https://clinic.example:9443".into())).await;
    assert!(s.banner.contains("https://clinic.example:9443/console/login?token="), "{}", s.banner);
}

// ---------- signing out ----------

#[tokio::test]
async fn signing_out_clears_the_cookie_and_revokes_the_session_server_side() {
    let s = TestServer::start().await;
    let c = sign_in(&s).await;
    let refused = s.client.post(s.url("/console/logout")).header("cookie", &c.cookie).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN, "another site must not sign the practitioner out");
    assert_eq!(session(&s, &c.cookie).await.0, StatusCode::OK);

    let res = s
        .client
        .post(s.url("/console/logout"))
        .header("cookie", &c.cookie)
        .header("x-csrf-token", &c.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let cleared = set_cookie(res.headers());
    assert!(cleared.starts_with("telehealth_console=;") && cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"success": true}));

    // The old cookie, replayed, is dead everywhere.
    assert_eq!(session(&s, &c.cookie).await.0, StatusCode::UNAUTHORIZED);
    let (status, body) = api_as_console(&s, &c.cookie, Some(&c.csrf), json!({"action": "get-usage"})).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNAUTHORIZED, "Unauthorized"));
    // Signing out again is harmless.
    let again = s.client.post(s.url("/console/logout")).header("cookie", &c.cookie).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_restart_ends_every_session() {
    let s = TestServer::start().await;
    let c = sign_in(&s).await;
    let dir = s.stop().await;
    let s = TestServer::start_in(dir, |_| {}).await;
    assert_eq!(session(&s, &c.cookie).await.0, StatusCode::UNAUTHORIZED);
}

// ---------- the bearer key is unchanged ----------

#[tokio::test]
async fn the_bearer_key_still_works_everywhere_and_wins_over_a_cookie() {
    let s = TestServer::start().await;
    let c = sign_in(&s).await;
    let id = meeting_id(&s.create_meeting().await);
    for body in [
        json!({"action": "get-meeting", "meetingId": id}),
        json!({"action": "list-attendees", "meetingId": id}),
        json!({"action": "get-usage"}),
        json!({"action": "create-attendee", "meetingId": id, "attendeeName": "Dr. Smith"}),
        json!({"action": "delete-meeting", "meetingId": id}),
    ] {
        let (status, res) = s.api(body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}: {res}");
    }
    // A wrong bearer key is 401 even next to a live session: no silent fallback from a key to a cookie.
    let res = s
        .client
        .post(s.url(API))
        .bearer_auth("wrong-key-0123456789")
        .header("cookie", &c.cookie)
        .header("x-csrf-token", &c.csrf)
        .json(&json!({"action": "get-usage"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let (status, body) = s.api_with(None, json!({"action": "get-usage"})).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNAUTHORIZED, "Unauthorized"));
}

// ---------- the page ----------

#[tokio::test]
async fn the_console_page_is_served_at_the_root_and_may_not_be_framed() {
    let s = TestServer::start().await;
    std::fs::write(s.dir.path().join("web").join("console.html"), "<!doctype html><title>console</title>").unwrap();
    let res = s.client.get(s.url("/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-frame-options"], "DENY");
    let csp = res.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'self'"), "{csp}");
    assert!(res.text().await.unwrap().contains("<title>console</title>"));
}
