//! The telehealth-gateway WebSocket signaling protocol.
//!
//! Every frame is one JSON object with a `type` tag. The types here are the single definition of the
//! protocol: the gateway's WebSocket handler, the join page (`web/js/signaling.js` mirrors these names),
//! the integration tests and the load tester all speak through them. The crate holds no server logic.
//!
//! Negotiation: the client sends the first `offer` (its own camera and microphone); the server answers.
//! From then on the server is the only side that offers: when other participants' tracks come or go it
//! sends an `offer` and the client replies with an `answer`. One offerer per direction means no glare.
//! Forwarded tracks carry the publisher's `AttendeeId` as their MediaStream id, so a page can put each
//! remote stream in the right tile.

pub mod client;
mod messages;
pub mod object;
pub mod tls;

pub use client::{ClientError, SignalingClient, SignalingReceiver, SignalingSender};
pub use messages::*;
