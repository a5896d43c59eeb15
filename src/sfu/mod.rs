//! The SFU: moves RTP/RTCP between peer connections (webrtc-rs). Knows nothing of HTTP, the database,
//! auth or Chime; participants are plain string ids here.
//!
//! - `peer`: one peer connection per participant, SDP/ICE in, `PeerEvent`s out.
//! - `track`: a published track's fan-out to subscribers, lag handling, keyframe relay.
//! - `gop`: the publisher's last keyframe and what followed, so a new subscriber starts decoding at once.
//! - `keyframe`: the interceptor that surfaces viewers' PLI/FIR, and the upstream throttle.
//! - `ports`: UDP port range for media sockets.

mod codec;
mod config;
mod gop;
pub mod keyframe;
pub mod memnet;
mod memnet_runtime;
mod peer;
mod ports;
pub mod stats;
mod track;

pub use config::SfuConfig;
pub use peer::{Peer, PeerError, PeerEvent, candidate_from_init, candidate_to_init};
pub use stats::{SfuStats, SfuStatsSnapshot};
pub use track::{PublishedTrack, rtp_track};

use keyframe::KeyframeRequestMarker;
use ports::PortAllocator;
use rtc::interceptor::{Registry, Slot};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::interceptor::{NackGeneratorBuilder, NackResponderBuilder};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::transport::{RTCDtlsRole, RTCIceCandidateType, RTCIceServer};
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RtpCodecKind};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use tokio::sync::mpsc;
use webrtc::peer_connection::{PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler};

/// Where our interceptor sits: application-most, after every built-in slot.
const KEYFRAME_MARKER_SLOT: Slot = Slot::Custom(20_000);
/// Packets each outgoing video stream keeps for retransmission on NACK: about 1.7 s of 1.5 Mbps video, several
/// round trips on any network a visit works over. webrtc-rs's default (1024) costs ~1.2 MB of payload per video
/// leg, which measured as most of a media participant's memory.
const NACK_HISTORY_PACKETS: u16 = 256;

pub struct Sfu {
    config: SfuConfig,
    bind_ips: Vec<IpAddr>,
    ports: PortAllocator,
    pub stats: Arc<SfuStats>,
}

impl Sfu {
    pub fn new(config: SfuConfig) -> Arc<Self> {
        let bind_ips = if config.bind_ips.is_empty() { default_bind_ips() } else { config.bind_ips.clone() };
        Arc::new(Self {
            ports: PortAllocator::new(config.udp_ports),
            bind_ips,
            config,
            stats: Arc::new(SfuStats::default()),
        })
    }

    /// The addresses host candidates are gathered on.
    pub fn bind_ips(&self) -> &[IpAddr] {
        &self.bind_ips
    }

    /// A new peer connection for `participant`. Its events arrive on `events`.
    pub async fn create_peer(
        &self,
        participant: String,
        events: mpsc::UnboundedSender<PeerEvent>,
    ) -> anyhow::Result<Arc<Peer>> {
        let mut media_engine = MediaEngine::default();
        // Opus, VP8, VP9, H.264 (several profiles), AV1, with RTX: whatever the browser offers first.
        media_engine.register_default_codecs()?;
        let registry = interceptors(&mut media_engine)?.with(KEYFRAME_MARKER_SLOT, KeyframeRequestMarker::default());

        let mut settings = SettingEngineBuilder::new()
            .with_include_loopback_candidate(true)
            // DTLS server (`a=setup:passive`), so the browser sends the first flight as soon as its ICE
            // connects. As the client, webrtc-rs 0.21 queues its ClientHello when ICE selects a pair but only
            // writes it on the connection's next timer tick (rtc's DTLS handler drains the endpoint in
            // `handle_timeout` and on reads, not in `handle_event`): 100-200 ms idle on every join. As the
            // server every flight answers a read and leaves at once. RFC 8842 allows either for the answerer.
            .with_answering_dtls_role(RTCDtlsRole::Server);
        if let Some(public) = self.config.public_ip {
            // Srflx keeps the private host candidates (clinic LAN) and adds the NAT's public address;
            // with STUN configured the public address comes from STUN, so replace host candidates instead.
            let kind = if self.config.stun_urls.is_empty() { RTCIceCandidateType::Srflx } else { RTCIceCandidateType::Host };
            settings = settings.with_nat_1to1_ips(vec![public.to_string()], kind);
        }
        let ice_servers = if self.config.stun_urls.is_empty() {
            vec![]
        } else {
            vec![RTCIceServer { urls: self.config.stun_urls.clone(), ..Default::default() }]
        };
        let rtc_config = RTCConfigurationBuilder::new().with_ice_servers(ice_servers).build();
        let addrs = self
            .ports
            .addrs_for(&self.bind_ips)
            .ok_or_else(|| anyhow::anyhow!("no free UDP port left in RTC_UDP_PORTS"))?;

        let handler = Arc::new(peer::Handler {
            participant: participant.clone(),
            events,
            stats: Arc::clone(&self.stats),
            track_seq: AtomicU32::new(0),
        });
        let mut builder = PeerConnectionBuilder::<std::net::SocketAddr>::new();
        if let Some(net) = &self.config.memnet {
            builder = builder.with_runtime(memnet_runtime::MemRuntime::new(Arc::clone(net)));
        }
        let pc = builder
            .with_configuration(rtc_config)
            .with_media_engine(media_engine)
            .with_setting_engine(settings.build())
            .with_interceptor_registry(registry)
            .with_handler(handler as Arc<dyn PeerConnectionEventHandler>)
            .with_udp_addrs(addrs)
            .build()
            .await?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        Ok(Arc::new(Peer::new(participant, pc, Arc::clone(&self.stats))))
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

/// webrtc-rs's default interceptors (NACK both ways, TWCC feedback, RTCP sender/receiver reports, simulcast
/// header extensions), with a shorter NACK history (`NACK_HISTORY_PACKETS`).
fn interceptors(media_engine: &mut MediaEngine) -> anyhow::Result<Registry> {
    for parameter in ["", "pli"] {
        media_engine.register_feedback(
            RTCPFeedback { typ: "nack".to_owned(), parameter: parameter.to_owned() },
            RtpCodecKind::Video,
        );
    }
    let registry = Registry::new()
        .with(Slot::NackResponder, NackResponderBuilder::new().with_size(NACK_HISTORY_PACKETS).build())
        .with(Slot::NackGenerator, NackGeneratorBuilder::new().build());
    configure_simulcast_extension_headers(media_engine)?;
    let registry = configure_twcc_receiver_only(registry, media_engine)?;
    Ok(configure_rtcp_reports(registry))
}
