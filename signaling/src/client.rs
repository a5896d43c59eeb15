//! A small async client for the signaling socket, used by the integration tests and the load tester.
//!
//! It only moves typed messages; what to send when is the caller's business.

use crate::{ClientMessage, ServerMessage};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use std::sync::Arc;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("undecodable server frame: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("socket closed")]
    Closed,
}

/// A connected signaling socket.
pub struct SignalingClient {
    sender: SignalingSender,
    receiver: SignalingReceiver,
}

pub struct SignalingSender(SplitSink<Ws, Message>);
pub struct SignalingReceiver(SplitStream<Ws>);

impl SignalingClient {
    /// Connects to `ws://host:port/ws`, or `wss://` verified against the web PKI roots.
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        Self::connect_with_tls(url, None).await
    }

    /// Like `connect`, with the caller's TLS configuration for `wss://` (e.g. one that trusts a gateway's
    /// self-signed development certificate).
    pub async fn connect_with_tls(url: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Result<Self, ClientError> {
        // Signaling frames are small: a 4 KiB read chunk instead of tungstenite's 128 KiB (which it allocates
        // up front) lets a load tester hold thousands of sockets; no write batching, every frame leaves at once.
        let config = WebSocketConfig::default()
            .read_buffer_size(4 * 1024)
            .write_buffer_size(0)
            .max_message_size(Some(crate::MAX_FRAME_BYTES));
        let connector = tls.map(Connector::Rustls);
        let (ws, _response) = tokio_tungstenite::connect_async_tls_with_config(url, Some(config), false, connector).await?;
        let (sink, stream) = ws.split();
        Ok(Self { sender: SignalingSender(sink), receiver: SignalingReceiver(stream) })
    }

    pub async fn send(&mut self, msg: &ClientMessage) -> Result<(), ClientError> {
        self.sender.send(msg).await
    }

    /// Sends a raw text frame, e.g. garbage in a robustness test.
    pub async fn send_raw(&mut self, text: &str) -> Result<(), ClientError> {
        self.sender.send_raw(text).await
    }

    /// The next server message; `Err(Closed)` once the server has closed the socket.
    pub async fn recv(&mut self) -> Result<ServerMessage, ClientError> {
        self.receiver.recv().await
    }

    pub fn split(self) -> (SignalingSender, SignalingReceiver) {
        (self.sender, self.receiver)
    }
}

impl SignalingSender {
    pub async fn send(&mut self, msg: &ClientMessage) -> Result<(), ClientError> {
        let text = serde_json::to_string(msg)?;
        self.send_raw(&text).await
    }

    pub async fn send_raw(&mut self, text: &str) -> Result<(), ClientError> {
        self.0.send(Message::text(text)).await?;
        Ok(())
    }

    pub async fn close(&mut self) -> Result<(), ClientError> {
        self.0.close().await?;
        Ok(())
    }
}

impl SignalingReceiver {
    pub async fn recv(&mut self) -> Result<ServerMessage, ClientError> {
        loop {
            match self.0.next().await {
                None | Some(Ok(Message::Close(_))) => return Err(ClientError::Closed),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(&text)?),
                Some(Ok(_)) => continue, // ping/pong/binary are not part of the protocol
            }
        }
    }
}
