//! Media for load-test participants: each participant's [`ClientPeer`] (webrtc-rs's sans-IO core) on a UDP socket
//! of its own, all driven by a few threads ([`udpdriver`](crate::udpdriver)) instead of a task, a timer and a
//! socket reader per peer. On two cores the old generator (a webrtc-rs driver per peer) spent about as much CPU
//! per packet as the server it measured and could not load it to its target; this one costs a fraction of that.
//!
//! ```text
//! let engine = MediaEngine::start(options, stats)?;          // the driver threads
//! let media = engine.session(out_tx)?;                        // the offer and candidate go out via out_tx
//! media.handle(&server_message).await?;                       // offer / answer / candidate; anything else is ignored
//! media.close().await;                                        // last counts published
//! ```
//!
//! Each peer binds its own port: the SFU tells connections apart by their 5-tuple once ICE is done, so peers
//! cannot share a socket. What peers see is flushed into the shared [`MediaStats`] every 100 ms by their
//! driver thread (atomics, and one histogram whose lock is taken per flush, never per packet).

use crate::peer::{self, ClientPeer, PeerStats};
use crate::stats::LatencySummary;
use crate::udpdriver::{Driver, DriverHandle};
use hdrhistogram::Histogram;
use serde::Serialize;
use signaling::{ClientMessage, ServerMessage};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;

/// Delays above this are recorded as this (an hour-long stall is not a delay worth resolving).
const MAX_DELAY_US: u64 = 60_000_000;

/// What each participant's media does, and how many threads drive them.
#[derive(Debug, Clone)]
pub struct MediaOptions {
    pub peer: peer::MediaOptions,
    /// Local IPs the peers bind and gather their one host candidate on (round robin).
    pub bind_ips: Vec<IpAddr>,
    /// Driver threads; peers are spread over them.
    pub threads: usize,
}

impl Default for MediaOptions {
    fn default() -> Self {
        Self { peer: peer::MediaOptions::default(), bind_ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)], threads: 1 }
    }
}

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

/// The driver threads of one run and the clock every payload carries.
pub struct MediaEngine {
    options: MediaOptions,
    drivers: Vec<DriverHandle>,
    next: AtomicUsize,
    stats: Arc<MediaStats>,
    /// Send times in payloads are microseconds since this instant: senders and receivers share it.
    epoch: Instant,
}

impl MediaEngine {
    pub fn start(options: MediaOptions, stats: Arc<MediaStats>) -> anyhow::Result<Arc<Self>> {
        anyhow::ensure!((1..=120).contains(&options.peer.video_fps), "video fps must be between 1 and 120, not {}", options.peer.video_fps);
        anyhow::ensure!(!options.bind_ips.is_empty(), "media needs at least one local IP to gather ICE candidates on");
        anyhow::ensure!(options.threads >= 1, "media needs at least one driver thread");
        let drivers = (0..options.threads).map(|i| Driver::spawn(i, Arc::clone(&stats))).collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Arc::new(Self { options, drivers, next: AtomicUsize::new(0), stats, epoch: Instant::now() }))
    }

    pub fn stats(&self) -> &Arc<MediaStats> {
        &self.stats
    }

    /// A new participant's media: binds its socket, builds its peer (audio and video tracks) and sends its offer
    /// and host candidate through `out`. Media flows once the server has answered and ICE/DTLS are done.
    pub fn session(&self, out: mpsc::UnboundedSender<ClientMessage>) -> anyhow::Result<MediaSession> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let ip = self.options.bind_ips[n % self.options.bind_ips.len()];
        let socket = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))?;
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?;
        let (peer, messages) = ClientPeer::new(local, self.options.peer.clone(), self.epoch, Instant::now())?;
        for m in messages {
            out.send(m).map_err(|_| anyhow::anyhow!("signaling channel closed"))?;
        }
        let driver = self.drivers[n % self.drivers.len()].clone();
        let id = driver.add(peer, socket, out)?;
        self.stats.published(2);
        Ok(MediaSession { driver, id, closed: false })
    }
}

impl Drop for MediaEngine {
    fn drop(&mut self) {
        for d in &self.drivers {
            d.shutdown();
        }
    }
}

/// One participant's media, living on a driver thread.
pub struct MediaSession {
    driver: DriverHandle,
    id: u64,
    closed: bool,
}

impl MediaSession {
    /// Applies a server message: `answer`, `offer` (→ an `answer` goes out through the session's `out`),
    /// `candidate`. Anything else is ignored (Ok). A message the peer refuses is an error, never a panic.
    pub async fn handle(&self, msg: &ServerMessage) -> anyhow::Result<()> {
        if !matches!(msg, ServerMessage::Offer { .. } | ServerMessage::Answer { .. } | ServerMessage::Candidate { .. }) {
            return Ok(());
        }
        self.driver.signal(self.id, msg.clone()).await
    }

    /// Closes the peer connection; its last counts are in the stats when this returns.
    pub async fn close(mut self) {
        self.closed = true;
        self.driver.close(self.id).await;
    }
}

impl Drop for MediaSession {
    fn drop(&mut self) {
        if !self.closed {
            self.driver.close_detached(self.id);
        }
    }
}
