//! What a run's media peers saw, summed: atomics their driver threads add to every 100 ms, and one histogram of
//! forwarding delays whose lock is taken per flush, never per packet.

use crate::peer::PeerStats;
use crate::stats::LatencySummary;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Delays above this are recorded as this (an hour-long stall is not a delay worth resolving).
const MAX_DELAY_US: u64 = 60_000_000;

/// Counters shared by all participants of one run. Cheap to update from many tasks: atomics, plus one
/// histogram that receivers feed in batches.
pub struct MediaStats {
    peer_connections_connected: AtomicU64,
    tracks_published: AtomicU64,
    tracks_received: AtomicU64,
    packets_sent: AtomicU64,
    bytes_sent: AtomicU64,
    packets_received: AtomicU64,
    bytes_received: AtomicU64,
    packets_lost: AtomicU64,
    packets_expected: AtomicU64,
    keyframe_requests_received: AtomicU64,
    /// Microseconds from our send time to the receiver reading the packet.
    forwarding_delay_us: Mutex<Histogram<u64>>,
}

impl Default for MediaStats {
    fn default() -> Self {
        let histogram = Histogram::new_with_bounds(1, MAX_DELAY_US, 3).expect("static histogram bounds are valid");
        Self {
            peer_connections_connected: AtomicU64::new(0),
            tracks_published: AtomicU64::new(0),
            tracks_received: AtomicU64::new(0),
            packets_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            packets_received: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            packets_lost: AtomicU64::new(0),
            packets_expected: AtomicU64::new(0),
            keyframe_requests_received: AtomicU64::new(0),
            forwarding_delay_us: Mutex::new(histogram),
        }
    }
}

/// The counters at one moment. Everything but `peer_connections_connected` is cumulative; bytes are RTP
/// payload bytes (what the SFU's `bytes_out` counts too). Receivers publish every 100 ms, so a snapshot
/// may trail the wire by that much.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MediaSnapshot {
    /// Peer connections currently connected.
    pub peer_connections_connected: u64,
    pub tracks_published: u64,
    /// Remote tracks opened.
    pub tracks_received: u64,
    pub packets_sent: u64,
    pub bytes_sent: u64,
    pub packets_received: u64,
    pub bytes_received: u64,
    /// Sequence numbers never received, per received track (a packet later than 128 sequence numbers
    /// counts as lost; a gap still inside that window is counted when the track or the peer closes).
    pub packets_lost: u64,
    /// Per received track: highest extended sequence number − first + 1, summed.
    pub packets_expected: u64,
    /// RTCP packets with PLI/FIR that reached our peers.
    pub keyframe_requests_received: u64,
    /// From the send time carried in each synthetic payload to its arrival at a receiver.
    pub forwarding_delay_us: LatencySummary,
}

impl MediaStats {
    pub fn snapshot(&self) -> MediaSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let delay = {
            let h = self.forwarding_delay_us.lock().unwrap_or_else(|e| e.into_inner());
            LatencySummary::from_histogram(&h)
        };
        MediaSnapshot {
            peer_connections_connected: r(&self.peer_connections_connected),
            tracks_published: r(&self.tracks_published),
            tracks_received: r(&self.tracks_received),
            packets_sent: r(&self.packets_sent),
            bytes_sent: r(&self.bytes_sent),
            packets_received: r(&self.packets_received),
            bytes_received: r(&self.bytes_received),
            packets_lost: r(&self.packets_lost),
            packets_expected: r(&self.packets_expected),
            keyframe_requests_received: r(&self.keyframe_requests_received),
            forwarding_delay_us: delay,
        }
    }

    /// Adds what one peer counted since its last flush (`delta`, taken out of the peer).
    pub(crate) fn add(&self, delta: &PeerStats) {
        let add = |c: &AtomicU64, v: u64| {
            if v > 0 {
                c.fetch_add(v, Ordering::Relaxed);
            }
        };
        add(&self.packets_sent, delta.packets_sent);
        add(&self.bytes_sent, delta.bytes_sent);
        add(&self.packets_received, delta.packets_received);
        add(&self.bytes_received, delta.bytes_received);
        add(&self.packets_lost, delta.packets_lost);
        add(&self.packets_expected, delta.packets_expected);
        add(&self.tracks_received, delta.tracks_opened);
        add(&self.keyframe_requests_received, delta.keyframes_requested);
        if !delta.delays_us.is_empty() {
            let mut h = self.forwarding_delay_us.lock().unwrap_or_else(|e| e.into_inner());
            for &d in &delta.delays_us {
                h.saturating_record(u64::from(d).clamp(1, MAX_DELAY_US));
            }
        }
    }

    pub(crate) fn set_connected(&self, was: bool, is: bool) {
        match (was, is) {
            (false, true) => self.peer_connections_connected.fetch_add(1, Ordering::Relaxed),
            (true, false) => self.peer_connections_connected.fetch_sub(1, Ordering::Relaxed),
            _ => 0,
        };
    }

    pub(crate) fn published(&self, tracks: u64) {
        self.tracks_published.fetch_add(tracks, Ordering::Relaxed);
    }
}
