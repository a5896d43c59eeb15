//! Media for load-test participants: one webrtc-rs peer connection per participant that publishes
//! synthetic Opus + VP8 RTP and receives everyone else's tracks.
//!
//! Interface used by the participant driver (`participant.rs`):
//!
//! ```ignore
//! let media = MediaSession::start(&options, out_tx, Arc::clone(&stats)).await?; // sends the offer via out_tx
//! media.handle(&server_message).await?;  // offer / answer / candidate; anything else is ignored
//! media.close().await;
//! let report = stats.snapshot();          // cumulative; the runner diffs two snapshots
//! ```
