//! 429 `Throttling` on the real server: per API key (a console session spends its key's budget), per client
//! address (whatever key it uses, the console's sign-in included), and for join attempts on `/ws` before the
//! upgrade; each with the contract's JSON body, a `Retry-After` header and a count in /metrics. Loopback is
//! exempt by default, so these servers set `LIMIT_EXEMPT_ADDRS` to nothing: every test client is on 127.0.0.1.

mod common;

use common::*;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use telehealth_gateway::config::{Config, RateLimit};

const OTHER_KEY: &str = "a-second-practice-key-0123456789";

fn limits(c: &mut Config, per_key: &str, per_ip: &str, join: &str) {
    c.limits.exempt.clear();
    c.limits.api_per_key = RateLimit::parse(per_key).unwrap();
    c.limits.api_per_ip = RateLimit::parse(per_ip).unwrap();
    c.limits.join_per_ip = RateLimit::parse(join).unwrap();
}

/// A cheap authenticated call: the meeting does not exist (404), but the call spends a token all the same.
async fn get_meeting(s: &TestServer, key: Option<&str>) -> Response {
    let mut req = s.client.post(s.url(API)).json(&json!({"action": "get-meeting", "meetingId": uuid::Uuid::new_v4()}));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.unwrap()
}

/// The refusal: 429, the contract's error with code Throttling, and a Retry-After of whole seconds within `max`.
async fn assert_throttled(res: Response, max_retry_after: u64) -> Value {
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = res.headers()["retry-after"].to_str().unwrap().parse().expect("Retry-After in seconds");
    assert!((1..=max_retry_after).contains(&retry_after), "Retry-After: {retry_after}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(error_code(&body), "Throttling", "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    body
}

#[tokio::test]
async fn an_api_key_over_its_rate_gets_429_throttling_with_retry_after_and_other_keys_do_not() {
    let s = TestServer::start_with(|c| {
        limits(c, "3/min", "off", "off");
        c.api_keys = vec!["the-first-practice-key-0123456789".into(), OTHER_KEY.into()];
    })
    .await;
    for _ in 0..3 {
        assert_eq!(get_meeting(&s, Some(&s.key)).await.status(), StatusCode::NOT_FOUND);
    }
    // 3 a minute: the next token is back within 20 s.
    assert_throttled(get_meeting(&s, Some(&s.key)).await, 20).await;
    assert_throttled(s.client.get(s.url("/api/appointments")).bearer_auth(&s.key).send().await.unwrap(), 20).await;
    assert_eq!(get_meeting(&s, Some(OTHER_KEY)).await.status(), StatusCode::NOT_FOUND, "another key has its own budget");
    // Wrong keys and no key are not this limit's business (the address's limit is off here).
    for _ in 0..5 {
        assert_eq!(get_meeting(&s, Some("not-a-key-of-this-practice-000")).await.status(), StatusCode::UNAUTHORIZED);
    }

    // A console session signed in with the first key spends that key's budget.
    let login = s.client.post(s.url("/console/login")).json(&json!({"key": s.key})).send().await.unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let res = s.client.get(s.url("/api/appointments")).header("cookie", cookie).send().await.unwrap();
    assert_throttled(res, 20).await;

    assert_eq!(s.metric(r#"telehealth_throttled_total{scope="api_key"}"#).await, Some(3.0));
    assert_eq!(s.metric(r#"telehealth_throttled_total{scope="api_ip"}"#).await, Some(0.0));
    s.stop().await;
}

#[tokio::test]
async fn one_address_over_its_rate_gets_429_whatever_key_it_uses_the_console_sign_in_included() {
    let s = TestServer::start_with(|c| limits(c, "off", "4/min", "off")).await;
    // Patients' create-attendee with a made-up invite, then a practitioner with a valid key: one address.
    let forged = json!({"action": "create-attendee", "meetingId": uuid::Uuid::new_v4(), "attendeeName": "Pat Client", "invite": "x"});
    for _ in 0..2 {
        let (status, _) = s.api_with(None, forged.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    for _ in 0..2 {
        assert_eq!(get_meeting(&s, Some(&s.key)).await.status(), StatusCode::NOT_FOUND);
    }
    // 4 a minute: the next token is back within 15 s.
    assert_throttled(get_meeting(&s, Some(&s.key)).await, 15).await;
    let res = s.client.post(s.url(API)).json(&forged).send().await.unwrap();
    assert_throttled(res, 15).await;
    let login = s.client.post(s.url("/console/login")).json(&json!({"key": s.key})).send().await.unwrap();
    assert_throttled(login, 15).await;

    // The join page, health and metrics are not API calls.
    assert_eq!(s.client.get(s.url("/telehealth-aws.html")).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(s.client.get(s.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(s.metric(r#"telehealth_throttled_total{scope="api_ip"}"#).await, Some(3.0));
    s.stop().await;
}

#[tokio::test]
async fn loopback_clients_are_exempt_by_default() {
    let s = TestServer::start_with(|c| {
        let exempt = c.limits.exempt.clone();
        limits(c, "1/min", "1/min", "1/min");
        c.limits.exempt = exempt;
    })
    .await;
    for _ in 0..5 {
        assert_eq!(get_meeting(&s, Some(&s.key)).await.status(), StatusCode::NOT_FOUND);
    }
    for _ in 0..3 {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", s.http)).await.expect("upgraded");
        drop(ws);
    }
    assert_eq!(s.metric(r#"telehealth_throttled_total{scope="api_key"}"#).await, Some(0.0));
    s.stop().await;
}

#[tokio::test]
async fn join_attempts_over_the_address_rate_get_429_before_the_upgrade() {
    let s = TestServer::start_with(|c| limits(c, "off", "off", "2/min")).await;
    let url = format!("ws://{}/ws", s.http);
    let mut open = Vec::new();
    for _ in 0..2 {
        let (ws, res) = tokio_tungstenite::connect_async(&url).await.expect("the first two attempts upgrade");
        assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
        open.push(ws);
    }
    let refused = tokio_tungstenite::connect_async(&url).await.expect_err("the third attempt is refused");
    let tokio_tungstenite::tungstenite::Error::Http(res) = refused else { panic!("an HTTP answer, not {refused:?}") };
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry_after), "Retry-After: {retry_after}");
    let body: Value = serde_json::from_slice(res.body().as_deref().expect("a body")).unwrap();
    assert_eq!(error_code(&body), "Throttling", "{body}");
    // The API is another budget.
    assert_eq!(get_meeting(&s, Some(&s.key)).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(s.metric(r#"telehealth_throttled_total{scope="join_ip"}"#).await, Some(1.0));
    drop(open);
    s.stop().await;
}
