//! Clients that are slow on purpose, against the real server over raw sockets: a request head that never
//! finishes (both listeners, TLS included) is cut at the header timeout.

mod common;
mod support;

use common::*;
use std::time::Duration;
use support::raw::{closed_within, tcp, tls};
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
