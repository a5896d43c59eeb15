//! telehealth-gateway: a self-hosted WebRTC gateway for telehealth video visits.
//!
//! Module map (arrows point down only; see DESIGN.md):
//! `cli` → `config` → `http` (api, ws) → `meetings` → `room` → `sfu`; `meetings` → `store`, `auth`, `metrics`;
//! `appointments` → `meetings`, `notify` (templates), `store`; `notify` (outbox worker, SMTP, SNS) → `store`;
//! `meetings` holds the backends (local SFU, Chime via aws-sdk-chimesdkmeetings) behind one service;
//! `http` → `metrics` (reads `room` and `sfu` when scraped).
//! The load generator is a crate of its own (`loadtest/`, binary `telehealth-loadtest`); from this one it borrows
//! the ICE-candidate and keyframe-request helpers of `sfu`, its pass coalescing, and the in-memory network for its
//! benchmark.

pub mod app;
pub mod appointments;
pub mod auth;
pub mod aws;
pub mod cli;
pub mod config;
pub mod http;
pub mod ids;
pub mod meetings;
pub mod metrics;
pub mod notify;
pub mod pii;
pub mod room;
pub mod server;
pub mod sfu;
pub mod store;
pub mod tls;
pub mod turn;
