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

pub use crate::mediastats::{MediaSnapshot, MediaStats};
use crate::peer::{self, ClientPeer};
use crate::udpdriver::{Driver, DriverHandle};
use signaling::{ClientMessage, ServerMessage};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use tokio::sync::mpsc;

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
