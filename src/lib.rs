//! telehealth-gateway: a self-hosted WebRTC gateway for telehealth video visits.
//!
//! Module map (arrows point down only; see DESIGN.md):
//! `cli` → `config` → `http` (api, ws) → `meetings` → `room` → `sfu`; `meetings` → `store`, `auth`, `metrics`;
//! `appointments` → `meetings`, `notify` (templates), `store`; `notify` (outbox worker, SMTP, SNS) → `store`;
//! `meetings` holds the backends (local SFU, Chime via aws-sdk-chimesdkmeetings) behind one service;
//! `http` → `metrics` (reads `room` and `sfu` when scraped);
//! `cli` → `loadtest` (a client of a running gateway: `signaling`'s client, the JSON API, `/metrics`; from the
//! gateway itself it borrows only `sfu`'s RTP-track and ICE-candidate helpers for its webrtc-rs peers).

pub mod app;
pub mod appointments;
pub mod auth;
pub mod aws;
pub mod cli;
pub mod config;
pub mod http;
pub mod ids;
pub mod loadtest;
pub mod meetings;
pub mod metrics;
pub mod notify;
pub mod pii;
pub mod room;
pub mod server;
pub mod sfu;
pub mod store;
pub mod tls;
