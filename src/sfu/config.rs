use super::memnet::MemNet;
use std::net::IpAddr;
use std::sync::Arc;

/// Network settings for the media engine.
#[derive(Debug, Clone, Default)]
pub struct SfuConfig {
    /// `RTC_BIND_IPS`: local addresses to gather host candidates on. Empty: every non-loopback interface
    /// address plus 127.0.0.1.
    pub bind_ips: Vec<IpAddr>,
    /// `RTC_PUBLIC_IP`: advertised instead of the bound address (1:1 NAT).
    pub public_ip: Option<IpAddr>,
    /// `RTC_UDP_PORTS`: inclusive UDP port range; shard `i` listens on the range's `i`-th port. None: ports the
    /// OS picks.
    pub udp_ports: Option<(u16, u16)>,
    /// `RTC_STUN_URLS`: STUN servers for server-reflexive candidates. Empty by default: an offline clinic
    /// must never try to reach a public STUN server.
    pub stun_urls: Vec<String>,
    /// `RTC_SHARDS`: media shards (threads, each with one UDP port). None: one per core.
    pub shards: Option<usize>,
    /// `RTC_ICE_TCP`: also accept media over TCP (passive ICE-TCP candidates on each shard's port number), for
    /// clients whose network blocks UDP. On by default in `Config`; it listens, it contacts nothing.
    pub ice_tcp: bool,
    /// `RTC_SRTP_PROFILES`: which SRTP protection profiles the DTLS handshake may choose.
    pub srtp: SrtpProfiles,
    /// Media over an in-memory network instead of UDP sockets (the forwarding benchmark). Never set by `Config`.
    pub memnet: Option<Arc<MemNet>>,
}

/// The SRTP protection profiles a connection accepts. As the DTLS server we take the first profile of the client's
/// list that we accept (webrtc-rs has no server preference), and Chromium lists AES-CM + HMAC-SHA1 first although
/// it also offers AES-GCM, which costs a fifth as much per video packet. Only leaving AES-CM out makes such a
/// browser use AES-GCM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SrtpProfiles {
    /// AES-GCM (128 and 256) and AES-CM + HMAC-SHA1 (80 and 32): every WebRTC client has one of them.
    #[default]
    Any,
    /// AES-GCM only: cheaper forwarding; a client that offers no AES-GCM profile cannot connect media.
    Gcm,
}

impl SfuConfig {
    /// How many shards to run: `shards`, else one per core the process may use.
    pub fn shard_count(&self) -> usize {
        self.shards.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1)
    }
}
