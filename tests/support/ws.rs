//! Signaling over the real WebSocket: join helpers and a bridge to `MediaPeer`'s channels.
#![allow(dead_code)]

use signaling::{ClientMessage, ServerMessage, SignalingClient};
use std::time::Duration;
use tokio::sync::mpsc;

/// Waits for the next server message, failing the test after `limit`.
pub async fn next(client: &mut SignalingClient, limit: Duration) -> ServerMessage {
    tokio::time::timeout(limit, client.recv()).await.expect("a server message in time").expect("socket open")
}

/// Waits until a message matching `pred` arrives (others are skipped).
pub async fn until(client: &mut SignalingClient, limit: Duration, pred: impl Fn(&ServerMessage) -> bool) -> ServerMessage {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let msg = tokio::time::timeout_at(deadline, client.recv())
            .await
            .expect("expected message in time")
            .expect("socket open");
        if pred(&msg) {
            return msg;
        }
    }
}

/// True once the server has closed the socket (any messages before the close are skipped).
pub async fn closed(client: &mut SignalingClient, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, client.recv()).await {
            Err(_) => return false,
            Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Splits a joined client into the channels `MediaPeer` speaks; non-media messages go to `others`.
pub fn bridge(client: SignalingClient) -> (mpsc::UnboundedSender<ClientMessage>, mpsc::UnboundedReceiver<ServerMessage>) {
    let (mut sender, mut receiver) = client.split();
    let (to_server, mut outgoing) = mpsc::unbounded_channel::<ClientMessage>();
    let (to_peer, incoming) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(m) = outgoing.recv().await {
            if sender.send(&m).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        while let Ok(m) = receiver.recv().await {
            if to_peer.send(m).is_err() {
                break;
            }
        }
    });
    (to_server, incoming)
}
