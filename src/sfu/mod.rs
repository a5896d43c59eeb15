//! The SFU: moves RTP/RTCP between peer connections. Knows nothing of HTTP, the database, auth or Chime;
//! participants are plain string ids here.
//!
//! The data path is sans-IO webrtc-rs (`rtc`) in shard loops: one thread and one UDP port per shard (one socket
//! per bind address), every connection of a room on the same shard, datagrams demultiplexed by ICE ufrag and
//! then 5-tuple, batched socket I/O, and forwarding as direct calls inside the shard. Control (the room actors)
//! reaches a shard through a bounded command queue; a [`Peer`] is the handle on one connection.
//!
//! - `shard`: the loop, its connections (`conn`) and the fan-out (`forward`, which forwards each sequence number once:
//!   `seen`).
//! - `demux`, `timers`, `rewrite`: the shard's datagram routing, deadline heap and per-subscriber numbering.
//! - `transport`, `udp`, `memnet`: where datagrams go: batched UDP, or memory for benchmarks.
//! - `gop`, `keyframe`, `codec`: keyframe cache for late viewers, keyframe requests and their throttle.

mod api;
mod candidates;
mod codec;
pub mod coalesce;
mod config;
mod demux;
mod dtls_hello;
mod gop;
pub mod keyframe;
pub mod memnet;
mod rewrite;
mod seen;
mod shard;
mod stun;
mod tcp;
pub mod stats;
mod timers;
mod transport;
mod udp;

pub use api::{PeerError, PeerEvent, PublishedTrack};
pub use candidates::{candidate_from_signal, candidate_to_signal, host_candidate};
pub use config::{SfuConfig, SrtpProfiles};
pub use stats::{SfuStats, SfuStatsSnapshot};

use shard::{Command, ShardConnId, ShardHandle};
use signaling::IceCandidate;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;
use transport::{MemTransport, Transport};

pub struct Sfu {
    bind_ips: Vec<IpAddr>,
    /// Every shard's UDP address, as bound (and as advertised with `RTC_PUBLIC_IP`).
    media_addrs: Vec<std::net::SocketAddr>,
    shards: Vec<Arc<ShardHandle>>,
    /// Which shard each room lives on, and how many of its connections are open.
    rooms: Arc<Mutex<HashMap<String, (usize, usize)>>>,
    pub stats: Arc<SfuStats>,
}

impl Sfu {
    /// Starts the shards: `config.shards` threads (default one per core), shard `i` on port `lo + i` of
    /// `RTC_UDP_PORTS` (or a port the OS picks), on every bind address.
    pub fn new(config: SfuConfig) -> anyhow::Result<Arc<Self>> {
        let bind_ips = if config.bind_ips.is_empty() { default_bind_ips() } else { config.bind_ips.clone() };
        let count = config.shard_count();
        if let Some((lo, hi)) = config.udp_ports
            && usize::from(hi - lo) + 1 < count
        {
            anyhow::bail!("RTC_UDP_PORTS={lo}-{hi} has fewer ports than the {count} media shards (RTC_SHARDS)");
        }
        let stats = Arc::new(SfuStats::default());
        let mut shards = Vec::with_capacity(count);
        let mut media_addrs = Vec::new();
        for i in 0..count {
            let transport: Box<dyn Transport> = match &config.memnet {
                Some(net) => {
                    let addrs = bind_ips.iter().map(|ip| std::net::SocketAddr::new(*ip, 40_000 + i as u16)).collect();
                    Box::new(MemTransport::bind(Arc::clone(net), addrs)?)
                }
                None => {
                    let port = config.udp_ports.map_or(0, |(lo, _)| lo + i as u16);
                    Box::new(bind_shard(i, &bind_ips, port, config.ice_tcp)?)
                }
            };
            for addr in transport.local_addrs() {
                media_addrs.push(*addr);
                media_addrs.extend(config.public_ip.map(|ip| std::net::SocketAddr::new(ip, addr.port())));
            }
            shards.push(Arc::new(shard::spawn(i, transport, config.clone(), Arc::clone(&stats))?));
        }
        media_addrs.sort();
        media_addrs.dedup();
        Ok(Arc::new(Self { bind_ips, media_addrs, shards, rooms: Arc::default(), stats }))
    }

    /// The addresses host candidates are gathered on.
    pub fn bind_ips(&self) -> &[IpAddr] {
        &self.bind_ips
    }

    /// The UDP addresses media reaches the shards on (the embedded TURN server relays to these only).
    pub fn media_addrs(&self) -> &[std::net::SocketAddr] {
        &self.media_addrs
    }

    /// The shard `room` lives on: where it already is, else the live shard with the fewest connections.
    fn place(&self, room: &str) -> anyhow::Result<Arc<ShardHandle>> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((i, n)) = rooms.get_mut(room)
            && self.shards[*i].is_alive()
        {
            *n += 1;
            return Ok(Arc::clone(&self.shards[*i]));
        }
        let shard = self
            .shards
            .iter()
            .filter(|s| s.is_alive())
            .min_by_key(|s| s.peers.load(Ordering::Relaxed))
            .ok_or_else(|| anyhow::anyhow!("no media shard is running"))?;
        rooms.insert(room.to_owned(), (shard.index, 1));
        Ok(Arc::clone(shard))
    }

    /// A new peer connection for `participant` in `room`. Its events arrive on `events`.
    pub async fn create_peer(
        &self,
        room: &str,
        participant: String,
        events: mpsc::Sender<PeerEvent>,
    ) -> anyhow::Result<Arc<Peer>> {
        let shard = self.place(room)?;
        let pin = RoomPin { rooms: Arc::clone(&self.rooms), room: room.to_owned() };
        let conn = shard.call(|reply| Command::Create { participant: participant.clone(), events, reply }).await?;
        shard.peers.fetch_add(1, Ordering::Relaxed);
        Ok(Arc::new(Peer { id: participant, shard, conn, _pin: pin }))
    }
}

/// Binds shard `i`'s UDP sockets on `port` (0: one the OS picks) and, with ICE-TCP, TCP listeners on the same
/// number. A port the OS picked for UDP may be taken for TCP: then another is tried.
fn bind_shard(i: usize, bind_ips: &[IpAddr], port: u16, ice_tcp: bool) -> anyhow::Result<udp::UdpTransport> {
    let attempts = if port == 0 { 8 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let mut udp = udp::UdpTransport::bind(bind_ips, port)
            .map_err(|e| anyhow::anyhow!("media shard {i}: cannot bind UDP port {port} on {bind_ips:?}: {e}"))?;
        if !ice_tcp {
            return Ok(udp);
        }
        match udp.enable_tcp() {
            Ok(()) => return Ok(udp),
            Err(e) => last = Some((udp.local_addrs()[0].port(), e)),
        }
    }
    let (port, e) = last.expect("at least one attempt");
    anyhow::bail!("media shard {i}: cannot listen on TCP port {port} for ICE-TCP (RTC_ICE_TCP): {e}")
}

/// Keeps a room on its shard while one of its connections is open.
struct RoomPin {
    rooms: Arc<Mutex<HashMap<String, (usize, usize)>>>,
    room: String,
}

impl Drop for RoomPin {
    fn drop(&mut self) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, n)) = rooms.get_mut(&self.room) {
            *n -= 1;
            if *n == 0 {
                rooms.remove(&self.room);
            }
        }
    }
}

/// One participant's peer connection, living on its room's shard. Every call is a command to the shard.
pub struct Peer {
    pub id: String,
    shard: Arc<ShardHandle>,
    conn: ShardConnId,
    _pin: RoomPin,
}

impl Peer {
    /// Applies the client's offer and returns our answer.
    pub async fn handle_offer(&self, sdp: String) -> Result<String, PeerError> {
        self.shard.call(|reply| Command::Offer { conn: self.conn, sdp, reply }).await
    }

    /// Creates a server offer (renegotiation) and applies it locally.
    pub async fn create_offer(&self) -> Result<String, PeerError> {
        self.shard.call(|reply| Command::CreateOffer { conn: self.conn, reply }).await
    }

    /// Applies the client's answer to our offer (the latest one: the room has one offer out at a time).
    pub async fn handle_answer(&self, sdp: String) -> Result<(), PeerError> {
        self.shard.call(|reply| Command::Answer { conn: self.conn, sdp, reply }).await
    }

    pub async fn add_candidate(&self, candidate: IceCandidate) -> Result<(), PeerError> {
        self.shard.call(|reply| Command::Candidate { conn: self.conn, candidate, reply }).await
    }

    /// Adds a sender forwarding `track` to this peer. The caller renegotiates afterwards; forwarding starts
    /// once the client has answered that offer. Returns false if already subscribed (or the track is gone).
    pub async fn subscribe(&self, track: Arc<PublishedTrack>) -> Result<bool, PeerError> {
        if track.shard != self.shard.index {
            return Err(PeerError::Engine(format!("track {} is on another shard", track.id)));
        }
        self.shard.call(|reply| Command::Subscribe { conn: self.conn, track, reply }).await
    }

    /// Stops forwarding a track and removes it from the connection. Returns false if not subscribed.
    pub async fn unsubscribe(&self, track_id: &str) -> Result<bool, PeerError> {
        let track_id = track_id.to_owned();
        self.shard.call(|reply| Command::Unsubscribe { conn: self.conn, track_id, reply }).await
    }

    /// Ids of the tracks this peer receives.
    pub async fn subscribed_track_ids(&self) -> Vec<String> {
        self.shard.call(|reply| Command::Subscribed { conn: self.conn, reply }).await.unwrap_or_default()
    }

    /// Asks every publisher this peer watches for a keyframe.
    pub async fn request_keyframes(&self) {
        self.shard.post(Command::RequestKeyframes { conn: self.conn });
    }

    pub async fn close(&self) {
        self.shard.post(Command::Close { conn: self.conn });
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.shard.post(Command::Close { conn: self.conn });
        self.shard.peers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Loopback plus every IPv4 interface address that is not link-local: reachable from this machine and
/// from the clinic LAN. (`RTC_BIND_IPS` overrides; tests use 127.0.0.1 only.)
fn default_bind_ips() -> Vec<IpAddr> {
    let mut ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    if let Ok(ifaces) = if_addrs::get_if_addrs() {
        for iface in ifaces {
            let ip = iface.ip();
            if let IpAddr::V4(v4) = ip
                && !v4.is_loopback()
                && !v4.is_link_local()
                && !ips.contains(&ip)
            {
                ips.push(ip);
            }
        }
    }
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_shards() -> Arc<Sfu> {
        Sfu::new(SfuConfig {
            bind_ips: vec!["127.0.0.1".parse().unwrap()],
            memnet: Some(memnet::MemNet::new()),
            shards: Some(2),
            ..Default::default()
        })
        .unwrap()
    }

    #[tokio::test]
    async fn rooms_are_pinned_to_a_shard_and_spread_over_them() {
        let sfu = two_shards();
        let (tx, _rx) = mpsc::channel(64);
        let a1 = sfu.create_peer("room-a", "a1".into(), tx.clone()).await.unwrap();
        let b1 = sfu.create_peer("room-b", "b1".into(), tx.clone()).await.unwrap();
        let a2 = sfu.create_peer("room-a", "a2".into(), tx.clone()).await.unwrap();
        assert_eq!(a1.shard.index, a2.shard.index, "a room lives on one shard");
        assert_ne!(a1.shard.index, b1.shard.index, "a new room goes to the emptier shard");
        drop((a1, a2));
        assert!(!sfu.rooms.lock().unwrap().contains_key("room-a"), "an empty room is unpinned");
    }

    #[tokio::test]
    async fn a_failed_shard_takes_only_its_own_connections_down() {
        let sfu = two_shards();
        let (tx_a, mut rx_a) = mpsc::channel(64);
        let (tx_b, _rx_b) = mpsc::channel(64);
        let a = sfu.create_peer("room-a", "a".into(), tx_a).await.unwrap();
        let b = sfu.create_peer("room-b", "b".into(), tx_b).await.unwrap();
        assert_ne!(a.shard.index, b.shard.index);
        a.shard.post(Command::Crash);
        // The crashed shard's connections are gone with it: their owners see the event channel close.
        let closed = tokio::time::timeout(std::time::Duration::from_secs(5), rx_a.recv()).await;
        assert!(matches!(closed, Ok(None)), "a's events after the crash: {:?}", closed.map(|e| e.is_some()));
        assert!(!a.shard.is_alive());
        assert!(matches!(a.create_offer().await, Err(PeerError::ShardDown)));
        // The other shard goes on, and takes the failed shard's room when its participants come back.
        assert!(b.create_offer().await.is_ok(), "the other shard still answers");
        let (tx, _rx) = mpsc::channel(64);
        let again = sfu.create_peer("room-a", "a".into(), tx).await.unwrap();
        assert_eq!(again.shard.index, b.shard.index);
    }
}
