//! Counters the SFU keeps; read by tests and, at scrape time, by `/metrics` (`crate::metrics`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
    /// Second copies of a publisher's packet (a sequence number already forwarded), dropped.
    pub packets_duplicate: AtomicU64,
    /// PLI/FIR received from viewers.
    pub viewer_keyframe_requests: AtomicU64,
    /// PLIs sent to publishers (after throttling).
    pub keyframe_requests: AtomicU64,
    pub peer_connections: AtomicU64,
    /// Connections by the SRTP profile their DTLS handshake chose, in `SRTP_PROFILES` order.
    pub srtp_profiles: [AtomicU64; 5],
    /// How long publishers' RTP packets spent in the gateway: from the kernel's receive timestamp (so time queued
    /// in the socket counts) to the hand-over of the subscribers' copies to the kernel.
    pub forwarding_delay: DelayHistogram,
}

/// Upper bounds of the forwarding-delay buckets, in microseconds (the last bucket, +Inf, is implied).
pub const DELAY_BUCKETS_US: [u64; 12] = [100, 250, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 250_000, 1_000_000];

/// A fixed-bucket histogram of durations, updated with relaxed atomics from the shards and read at scrape time.
#[derive(Debug, Default)]
pub struct DelayHistogram {
    /// Per bucket (not cumulative), the last one +Inf.
    counts: [AtomicU64; DELAY_BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl DelayHistogram {
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        let i = DELAY_BUCKETS_US.partition_point(|&bound| bound < us);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket (Prometheus' `le` semantics, the last one +Inf) and the sum in µs.
    pub fn cumulative(&self) -> ([u64; DELAY_BUCKETS_US.len() + 1], u64) {
        let mut total = 0;
        let counts = std::array::from_fn(|i| {
            total += self.counts[i].load(Ordering::Relaxed);
            total
        });
        (counts, self.sum_us.load(Ordering::Relaxed))
    }
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
    pub packets_duplicate: u64,
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
            packets_duplicate: r(&self.packets_duplicate),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_land_in_their_buckets_and_counts_accumulate() {
        let h = DelayHistogram::default();
        for us in [50, 100, 101, 700, 30_000, 5_000_000] {
            h.observe(Duration::from_micros(us));
        }
        let (counts, sum) = h.cumulative();
        // ≤100: 50 and 100; ≤250: +101; ≤1000: +700; ≤50000: +30000; +Inf: +5 s.
        assert_eq!(counts, [2, 3, 3, 4, 4, 4, 4, 4, 5, 5, 5, 5, 6]);
        assert_eq!(sum, 50 + 100 + 101 + 700 + 30_000 + 5_000_000);
    }
}
