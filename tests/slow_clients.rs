//! Clients that are slow on purpose, against the real server over raw sockets: a request head that never
//! finishes (both listeners, TLS included) is cut at the header timeout; a body that never finishes gets the
//! request timeout's 503 while a WebSocket outlives that timeout; a body announced over `MAX_BODY_BYTES` is
//! answered 413 at once, and a chunked one as soon as it crosses the limit, while the client keeps sending.

mod common;
mod support;

use common::*;
use std::time::Duration;
use support::raw::{closed_within, response_within, tcp, tls};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

const HEADER_TIMEOUT: Duration = Duration::from_millis(600);

/// How long after the timeout a cut may come: the server's timer and our scheduling, on a loaded machine.
const SLACK: Duration = Duration::from_secs(3);

#[tokio::test]
async fn a_request_head_that_stalls_is_cut_at_the_header_timeout_on_both_listeners() {
    let s = TestServer::start_with(|c| c.limits.header_timeout = HEADER_TIMEOUT).await;

    // Half a request line, then nothing.
    let mut plain = tcp(s.http).await;
    plain.write_all(b"GET /heal").await.unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut plain, HEADER_TIMEOUT + SLACK).await.is_some(), "the HTTP listener hung up");
    assert!(started.elapsed() >= HEADER_TIMEOUT - Duration::from_millis(100), "not before the timeout: {:?}", started.elapsed());

    // All the headers but the blank line that ends them, over TLS.
    let mut secure = tls(s.https).await;
    secure.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n").await.unwrap();
    secure.flush().await.unwrap();
    assert!(closed_within(&mut secure, HEADER_TIMEOUT + SLACK).await.is_some(), "the HTTPS listener hung up");

    // A connection that never says anything, and one that never finishes its TLS handshake.
    let mut silent = tcp(s.http).await;
    assert!(closed_within(&mut silent, HEADER_TIMEOUT + SLACK).await.is_some(), "a silent connection is closed");
    let mut no_handshake = tcp(s.https).await;
    assert!(closed_within(&mut no_handshake, HEADER_TIMEOUT + SLACK).await.is_some(), "a handshake that never starts is cut");

    // A client that keeps to time is served, on the same server.
    let res = s.client.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn a_body_that_never_finishes_gets_503_at_the_request_timeout_and_a_websocket_outlives_it() {
    let request_timeout = Duration::from_millis(800);
    let s = TestServer::start_with(|c| c.limits.request_timeout = request_timeout).await;

    // A socket opened first: it must still answer after the request timeout has passed.
    let created = s.create_meeting().await;
    let (_, att) = s.create_attendee(&meeting_id(&created), "Dr. Smith").await;
    let token = att["attendee"]["JoinToken"].as_str().unwrap().to_owned();
    let mut ws = signaling::SignalingClient::connect(&format!("ws://{}/ws", s.http)).await.unwrap();
    ws.send(&signaling::ClientMessage::Join { token, audio_muted: true, video_muted: true }).await.unwrap();
    support::ws::until(&mut ws, Duration::from_secs(5), |m| matches!(m, signaling::ServerMessage::Joined { .. })).await;

    let mut slow = tcp(s.http).await;
    let head = "POST /api/aws-chime-video HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(br#"{"action":"#).await.unwrap();
    let started = Instant::now();
    let answer = response_within(&mut slow, request_timeout + SLACK).await.expect("an answer at the request timeout");
    assert!(started.elapsed() >= request_timeout - Duration::from_millis(100), "{:?}", started.elapsed());
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(error_code(&answer.json()), "ServiceUnavailable");
    assert_eq!(answer.header("connection"), Some("close"));

    // The socket has now been open for longer than the request timeout, and still talks.
    let waited = Instant::now();
    tokio::time::sleep_until(waited + request_timeout).await;
    ws.send(&signaling::ClientMessage::Ping { ts: Some(7) }).await.unwrap();
    let pong = support::ws::until(&mut ws, Duration::from_secs(5), |m| matches!(m, signaling::ServerMessage::Pong { .. })).await;
    assert_eq!(pong, signaling::ServerMessage::Pong { ts: Some(7) });
    assert_eq!(s.metric("telehealth_request_timeouts_total").await, Some(1.0));
    s.stop().await;
}

#[tokio::test]
async fn a_body_announced_over_the_limit_gets_413_at_once_without_being_read() {
    let s = TestServer::start().await;
    let mut client = tcp(s.http).await;
    let head = format!(
        "POST /api/aws-chime-video HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 10000000\r\n\r\n",
        s.key
    );
    client.write_all(head.as_bytes()).await.unwrap();
    client.write_all(br#"{"action":"create-meeting","externalMeetingId":""#).await.unwrap();
    // The connection stays open and the rest never comes; the answer must not wait for it.
    let answer = response_within(&mut client, Duration::from_secs(1)).await.expect("413 within a second");
    assert_eq!(answer.status, 413, "{answer:?}");
    assert_eq!(error_code(&answer.json()), "PayloadTooLarge");
    assert_eq!(answer.header("connection"), Some("close"));

    // The same on the other API routes and the console's sign-in, whatever the credentials.
    for path in ["/api/appointments", "/console/login"] {
        let mut client = tcp(s.http).await;
        let head = format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 999999999\r\n\r\n{{");
        client.write_all(head.as_bytes()).await.unwrap();
        let answer = response_within(&mut client, Duration::from_secs(1)).await.expect("413 within a second");
        assert_eq!((answer.status, error_code(&answer.json())), (413, "PayloadTooLarge"), "{path}");
    }
    // None of them reached a handler: the API's own timing never saw them.
    assert_eq!(s.metric(r#"telehealth_api_request_duration_seconds_count{action="invalid",status="413"}"#).await, None);
    s.stop().await;
}

#[tokio::test]
async fn a_chunked_body_gets_413_as_soon_as_it_crosses_the_limit() {
    let s = TestServer::start_with(|c| c.max_body_bytes = 1024).await;
    let mut client = tcp(s.http).await;
    let head = format!(
        "POST /api/aws-chime-video HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        s.key
    );
    client.write_all(head.as_bytes()).await.unwrap();
    let chunk = |n: usize| format!("{n:x}\r\n{}\r\n", "x".repeat(n));
    // Under the limit: nothing to answer yet.
    client.write_all(chunk(600).as_bytes()).await.unwrap();
    assert!(response_within(&mut client, Duration::from_millis(300)).await.is_none(), "no answer while under the limit");
    // Over it, and the body goes on (no last chunk is ever sent).
    client.write_all(chunk(600).as_bytes()).await.unwrap();
    let answer = response_within(&mut client, Duration::from_secs(1)).await.expect("413 within a second of crossing");
    assert_eq!(answer.status, 413, "{answer:?}");
    assert_eq!(error_code(&answer.json()), "PayloadTooLarge");
    s.stop().await;
}
