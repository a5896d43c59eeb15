//! Load generation and media benchmarks for telehealth-gateway.
//!
//! - `peer`: one simulated participant's media on webrtc-rs's sans-IO core; a thread drives hundreds.
//! - `payload`: synthetic codec-shaped payloads a receiver can verify.
//! - `memdriver`: many peers on one thread over the in-memory network, for the forwarding benchmark.
//! - `cpu`: process and thread CPU time.

pub mod cpu;
pub mod memdriver;
pub mod payload;
pub mod peer;
