//! Counters the SFU keeps; read by tests and, at scrape time, by `/metrics` (`crate::metrics`).

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct SfuStats {
    /// RTP packets received from publishers.
    pub packets_in: AtomicU64,
    /// RTP packets written to subscribers.
    pub packets_out: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Packets a subscriber's leg refused (renegotiation in flight); it resyncs on a keyframe. No subscriber is
    /// ever queued for, so none lags behind.
    pub packets_skipped: AtomicU64,
    /// PLI/FIR received from viewers.
    pub viewer_keyframe_requests: AtomicU64,
    /// PLIs sent to publishers (after throttling).
    pub keyframe_requests: AtomicU64,
    pub peer_connections: AtomicU64,
    /// Connections by the SRTP profile their DTLS handshake chose, in `SRTP_PROFILES` order.
    pub srtp_profiles: [AtomicU64; 5],
}

/// The profiles `srtp_profiles` counts, as `/metrics` labels them.
pub const SRTP_PROFILES: [&str; 5] = [
    "SRTP_AEAD_AES_128_GCM",
    "SRTP_AEAD_AES_256_GCM",
    "SRTP_AES128_CM_HMAC_SHA1_80",
    "SRTP_AES128_CM_HMAC_SHA1_32",
    "other",
];

/// A plain copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SfuStatsSnapshot {
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub packets_skipped: u64,
    pub viewer_keyframe_requests: u64,
    pub keyframe_requests: u64,
    pub peer_connections: u64,
    pub srtp_profiles: [u64; 5],
}

impl SfuStats {
    pub fn snapshot(&self) -> SfuStatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SfuStatsSnapshot {
            packets_in: r(&self.packets_in),
            packets_out: r(&self.packets_out),
            bytes_out: r(&self.bytes_out),
            packets_skipped: r(&self.packets_skipped),
            viewer_keyframe_requests: r(&self.viewer_keyframe_requests),
            keyframe_requests: r(&self.keyframe_requests),
            peer_connections: r(&self.peer_connections),
            srtp_profiles: std::array::from_fn(|i| r(&self.srtp_profiles[i])),
        }
    }

    /// Counts a connection whose handshake chose `profile` (its IANA name).
    pub fn count_srtp_profile(&self, profile: &str) {
        let i = SRTP_PROFILES.iter().position(|p| *p == profile).unwrap_or(SRTP_PROFILES.len() - 1);
        self.srtp_profiles[i].fetch_add(1, Ordering::Relaxed);
    }
}
