//! Caps on open signaling sockets, on the real server with small caps: over `MAX_WEBSOCKETS` or
//! `MAX_WEBSOCKETS_PER_IP` the upgrade is refused with the contract's 503 JSON, a closed socket gives its place
//! back, and `telehealth_websockets_open` follows.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn open(s: &TestServer) -> Ws {
    let (ws, res) = connect_async(format!("ws://{}/ws", s.http)).await.expect("the socket opens");
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws
}

/// The refusal's status and body.
async fn refused(s: &TestServer) -> (StatusCode, Value) {
    let err = connect_async(format!("ws://{}/ws", s.http)).await.expect_err("the socket is refused");
    let tokio_tungstenite::tungstenite::Error::Http(res) = err else { panic!("an HTTP answer, not {err:?}") };
    let body = serde_json::from_slice(res.body().as_deref().expect("a body")).expect("a JSON body");
    (res.status(), body)
}

/// Waits until the gauge shows `n` open sockets.
async fn until_open(s: &TestServer, n: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = s.metric("telehealth_websockets_open").await;
        if now == Some(n) {
            return;
        }
        assert!(Instant::now() < deadline, "telehealth_websockets_open is {now:?}, expected {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_server_cap_refuses_the_next_socket_with_503_until_one_closes() {
    // Loopback stays exempt from the per-address cap here; the server cap counts everyone.
    let s = TestServer::start_with(|c| {
        c.limits.max_websockets = 2;
        c.limits.max_websockets_per_ip = 1;
    })
    .await;
    let mut first = open(&s).await;
    let _second = open(&s).await;
    until_open(&s, 2.0).await;
    let (status, body) = refused(&s).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&body), "ServiceUnavailable", "{body}");
    until_open(&s, 2.0).await;

    first.close(None).await.unwrap();
    until_open(&s, 1.0).await;
    let _third = open(&s).await;
    assert_eq!(s.metric(r#"telehealth_websockets_refused_total{cap="server"}"#).await, Some(1.0));
    assert_eq!(s.metric(r#"telehealth_websockets_refused_total{cap="address"}"#).await, Some(0.0));
    s.stop().await;
}

#[tokio::test]
async fn one_address_is_refused_past_its_own_cap_while_the_server_has_room() {
    let s = TestServer::start_with(|c| {
        c.limits.exempt.clear();
        c.limits.max_websockets = 100;
        c.limits.max_websockets_per_ip = 2;
    })
    .await;
    let sockets = [open(&s).await, open(&s).await];
    let (status, body) = refused(&s).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&body), "ServiceUnavailable", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("address"), "{body}");
    until_open(&s, 2.0).await;
    assert_eq!(s.metric(r#"telehealth_websockets_refused_total{cap="address"}"#).await, Some(1.0));

    drop(sockets);
    until_open(&s, 0.0).await;
    // A request that is not an upgrade does not keep a place.
    for _ in 0..3 {
        let plain = s.client.get(s.url("/ws")).send().await.unwrap();
        assert!(plain.status().is_client_error(), "{}", plain.status());
    }
    until_open(&s, 0.0).await;
    let _again = [open(&s).await, open(&s).await];
    s.stop().await;
}
