//! The load generator behind `telehealth-gateway loadtest`.
//!
//! It drives a running gateway the way real clients do: meetings and attendees through the JSON API, joins
//! over the real signaling WebSocket (the `signaling` crate's client), and with `--media` real webrtc-rs peer
//! connections that publish synthetic Opus + VP8 and subscribe to everyone else. Around the run it scrapes the
//! server's `/metrics`, so the report carries the server's cost (CPU seconds, memory per participant) next to
//! what the clients saw.

pub mod media;
pub mod stats;
