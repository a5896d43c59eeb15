//! The load generator and media benchmarks for telehealth-gateway (binary: `telehealth-loadtest`).
//!
//! Module map (arrows point down):
//! `cli` → `run` (phases: provision, ramp, hold, leave, delete) → `participant` (one joined signaling socket)
//! → `media` (the run's media: sessions on driver threads) → `udpdriver` (peers over real UDP) → `mediastats`
//! (what they saw, summed) and `peer` (one participant's media on webrtc-rs's sans-IO core) → `payload`,
//! `sequence`; `run` → `api` (the JSON API), `scrape` (the server's `/metrics`), `report` → `stats`, `plot`;
//! `progress`; `options` (what a run is asked) under `run` and `report`. `memdriver` (peers over the in-memory
//! network) serves the forwarding benchmark; `cpu` reads CPU times.

pub mod api;
pub mod cli;
pub mod cpu;
pub mod media;
pub mod mediastats;
pub mod memdriver;
pub mod options;
pub mod participant;
pub mod payload;
pub mod peer;
pub mod plot;
pub mod progress;
pub mod recorder;
pub mod report;
pub mod run;
pub mod scrape;
pub mod sequence;
pub mod stats;
pub mod udpdriver;
