//! One participant's peer connection inside a shard: webrtc-rs's sans-IO `RTCPeerConnection` and the
//! negotiation bookkeeping around it. It never touches a socket: the shard feeds it datagrams and timeouts and
//! sends what it writes.

use super::super::keyframe::KeyframeRequestMarker;
use super::super::api::{PeerError, PeerEvent};
use super::super::config::{SfuConfig, SrtpProfiles};
use super::super::dtls_hello;
use super::super::memnet::Datagram;
use rtc::shared::TransportProtocol;
use super::super::stats::SfuStats;
use crate::sfu::candidates::{candidate_to_signal, host_candidate, srflx_candidate, tcp_passive_candidate};
use rtc::interceptor::{NackGeneratorBuilder, NackGeneratorInterceptor, NackResponderBuilder, Registry, Slot};
use rtc::media_stream::MediaStreamTrackId;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{RTCDtlsRole, RTCIceCandidateInit};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::sansio::Protocol;
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RtpCodecKind};
use rustc_hash::FxHashMap as HashMap;
use std::net::SocketAddr;
use std::time::Instant;
use tokio::sync::mpsc;

/// Where our interceptor sits: application-most, after every built-in slot.
const KEYFRAME_MARKER_SLOT: Slot = Slot::Custom(20_000);
/// Packets each outgoing video stream keeps for retransmission on NACK: about 0.85 s of 1.5 Mbps video, three
/// round trips on a 250 ms path (a NACK comes one round trip after the loss). webrtc-rs's default (1024) costs
/// ~1.2 MB of payload per video leg, which measured as most of a media participant's memory; 256 still made
/// about a third of a participant's 0.65 MB.
const NACK_HISTORY_PACKETS: u16 = 128;

/// How many times we ask a publisher for one missing packet (once per 100 ms, the generator's interval): for about
/// a second, three or four round trips on a 250 ms path, as many tries as Chromium's own NACK module makes.
///
/// The cap matters because webrtc-rs's NACK generator sits before RTX is unwrapped: a packet that came back as a
/// retransmission arrived on the RTX stream's SSRC, so it still looks missing to the generator, which (uncapped)
/// asked for it again every 100 ms until 512 packets later. Through 5 % loss and 100 ms ± 30 ms delay each way
/// (tests/browser/badnet.test.mjs) a publisher then sent 1,235 retransmissions in 20 s, most of its video
/// packets, and its viewer decoded 320x240 at 9 fps; capped, about 200, and 640x480 at the camera's 20 fps.
const NACK_MAX_PER_PACKET: u16 = 10;

/// webrtc-rs's NACK generator with its defaults (100 ms interval, 512-packet log), capped at
/// `NACK_MAX_PER_PACKET` requests per missing packet.
fn nack_generator() -> NackGeneratorInterceptor {
    NackGeneratorBuilder::new().with_max_nacks_per_packet(NACK_MAX_PER_PACKET).build()
}

/// A connection's id, unique for the shard's lifetime (never reused, so a late command cannot reach a
/// newcomer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// A track the client publishes on this connection.
pub struct Inbound {
    pub receiver: RTCRtpReceiverId,
    /// The shard's key of the published track, once its first packet told us the codec.
    pub published: Option<u64>,
}

pub struct Conn {
    pub participant: String,
    pub pc: RTCPeerConnection,
    /// To the participant's actor. Bounded, and sent to with `try_send`: a shard never waits for an actor, and a
    /// connection produces a handful of events, so a full queue means a stuck actor whose events are moot.
    pub events: mpsc::Sender<PeerEvent>,
    pub ufrag: String,
    local_addrs: Vec<SocketAddr>,
    public: Option<SocketAddr>,
    /// Passive ICE-TCP candidates (the public address first when configured), after the UDP ones.
    tcp_addrs: Vec<SocketAddr>,
    /// (address seen from outside, local socket) pairs the shard learned from STUN.
    srflx: Vec<(SocketAddr, SocketAddr)>,
    /// Server offers applied so far; the n-th is generation n.
    pub offers: u64,
    /// The generation of the last offer the client answered: a subscription added before offer n starts
    /// forwarding once this reaches n, when the client knows the track (packets sent earlier are dropped by the
    /// browser, the first keyframe with them).
    pub answered: u64,
    pub inbound: HashMap<MediaStreamTrackId, Inbound>,
    pub track_seq: u32,
    candidates_sent: bool,
    /// Tracks this connection receives from others: their published ids and our senders.
    pub outbound: HashMap<String, rtc::rtp_transceiver::RTCRtpSenderId>,
    /// Queued for a drain and flush in this pass of the shard loop.
    pub dirty: bool,
    /// Something other than forwarded media touched the connection in this pass (a datagram, a timeout, a
    /// command), so its next deadline may have moved. Forwarded RTP alone does not move it, and asking every
    /// subscriber's connection for its deadline after every packet cost more than the write itself.
    pub rearm: bool,
    /// Whether the DTLS handshake has chosen an SRTP profile yet (read from our ServerHello).
    pub srtp_known: bool,
}

fn random_token(len: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut rng = rand::thread_rng();
    (0..len).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}

/// webrtc-rs's default interceptors (NACK both ways, TWCC feedback, RTCP sender/receiver reports, simulcast
/// header extensions), with a shorter NACK history, and our keyframe-request marker last.
fn interceptors(media_engine: &mut MediaEngine) -> Result<Registry, PeerError> {
    for parameter in ["", "pli"] {
        media_engine.register_feedback(
            RTCPFeedback { typ: "nack".to_owned(), parameter: parameter.to_owned() },
            RtpCodecKind::Video,
        );
    }
    let registry = Registry::new()
        .with(Slot::NackResponder, NackResponderBuilder::new().with_size(NACK_HISTORY_PACKETS).build())
        .with(Slot::NackGenerator, nack_generator());
    configure_simulcast_extension_headers(media_engine).map_err(PeerError::engine)?;
    let registry = configure_twcc_receiver_only(registry, media_engine).map_err(PeerError::engine)?;
    Ok(configure_rtcp_reports(registry).with(KEYFRAME_MARKER_SLOT, KeyframeRequestMarker::default()))
}

/// Where a connection can be reached: the shard's UDP addresses, its ICE-TCP listeners (none without ICE-TCP), and
/// what STUN servers saw of the UDP ones (seen, base).
pub struct Addrs {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub srflx: Vec<(SocketAddr, SocketAddr)>,
}

impl Conn {
    pub fn new(
        participant: String,
        events: mpsc::Sender<PeerEvent>,
        addrs: Addrs,
        config: &SfuConfig,
        now: Instant,
    ) -> Result<Self, PeerError> {
        let Addrs { udp: local_addrs, tcp: tcp_addrs, srflx } = addrs;
        let mut media_engine = MediaEngine::default();
        // Opus, VP8, VP9, H.264 (several profiles), AV1, with RTX: whatever the browser offers first.
        media_engine.register_default_codecs().map_err(PeerError::engine)?;
        let registry = interceptors(&mut media_engine)?;
        // Our own ICE credentials: the ufrag is how the shard's demultiplexer tells this connection's checks
        // from everyone else's on the shared socket.
        let ufrag = random_token(16);
        let mut settings = SettingEngineBuilder::new()
            .with_ice_credentials(ufrag.clone(), random_token(32))
            // DTLS server (`a=setup:passive`), so the browser sends the first flight as soon as its ICE
            // connects and every flight of ours answers a read and leaves at once. RFC 8842 allows either for
            // the answerer.
            .with_answering_dtls_role(RTCDtlsRole::Server);
        if config.srtp == SrtpProfiles::Gcm {
            settings = settings
                .with_srtp_protection_profiles(vec![SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm, SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm]);
        }
        let settings = settings.build();
        let pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media_engine)
            .with_setting_engine(settings)
            .with_interceptor_registry(registry)
            .build(now)
            .map_err(PeerError::engine)?;
        let public = config.public_ip.and_then(|ip| local_addrs.first().map(|a| SocketAddr::new(ip, a.port())));
        let public_tcp = config.public_ip.and_then(|ip| tcp_addrs.first().map(|a| SocketAddr::new(ip, a.port())));
        Ok(Self {
            participant,
            pc,
            events,
            ufrag,
            local_addrs,
            public,
            tcp_addrs: public_tcp.into_iter().chain(tcp_addrs).collect(),
            srflx,
            offers: 0,
            answered: 0,
            inbound: HashMap::default(),
            track_seq: 0,
            candidates_sent: false,
            outbound: HashMap::default(),
            dirty: false,
            rearm: false,
            srtp_known: false,
        })
    }

    /// Applies the client's offer and returns our answer. The first answer also trickles our candidates.
    pub fn handle_offer(&mut self, sdp: String, now: Instant) -> Result<String, PeerError> {
        let offer = RTCSessionDescription::offer(sdp).map_err(PeerError::sdp)?;
        self.pc.set_remote_description(now, offer).map_err(PeerError::sdp)?;
        let answer = self.pc.create_answer(None).map_err(PeerError::engine)?;
        let sdp = answer.sdp.clone();
        self.pc.set_local_description(now, answer).map_err(PeerError::engine)?;
        self.trickle_candidates()?;
        Ok(sdp)
    }

    /// Our candidates (a UDP host candidate per local address of the shard, plus the public address when
    /// configured; server-reflexive ones; then passive ICE-TCP ones on the same addresses), added locally and
    /// sent to the client.
    fn trickle_candidates(&mut self) -> Result<(), PeerError> {
        if std::mem::replace(&mut self.candidates_sent, true) {
            return Ok(());
        }
        let addrs: Vec<SocketAddr> = self.public.iter().chain(&self.local_addrs).copied().collect();
        let hosts = addrs.into_iter().map(host_candidate);
        let reflexive = self.srflx.iter().map(|(seen, base)| srflx_candidate(*seen, *base));
        let tcp = self.tcp_addrs.iter().map(|a| tcp_passive_candidate(*a));
        for init in hosts.chain(reflexive).chain(tcp).collect::<Vec<_>>() {
            let init = init.map_err(PeerError::engine)?;
            self.pc.add_local_candidate(init.clone()).map_err(PeerError::candidate)?;
            let _ = self.events.try_send(PeerEvent::Candidate(candidate_to_signal(init)));
        }
        Ok(())
    }

    /// Creates a server offer (renegotiation) and applies it locally.
    pub fn create_offer(&mut self, now: Instant) -> Result<String, PeerError> {
        let offer = self.pc.create_offer(None).map_err(PeerError::engine)?;
        let sdp = offer.sdp.clone();
        self.pc.set_local_description(now, offer).map_err(PeerError::engine)?;
        self.offers += 1;
        Ok(sdp)
    }

    /// Applies the client's answer to our latest offer.
    pub fn handle_answer(&mut self, sdp: String, now: Instant) -> Result<(), PeerError> {
        let answer = RTCSessionDescription::answer(sdp).map_err(PeerError::sdp)?;
        self.pc.set_remote_description(now, answer).map_err(PeerError::sdp)?;
        self.answered = self.offers;
        Ok(())
    }

    pub fn add_candidate(&mut self, init: RTCIceCandidateInit) -> Result<(), PeerError> {
        self.pc.add_remote_candidate(init).map_err(PeerError::candidate)
    }

    /// Moves everything the connection wrote into the send batch. Our ServerHello among it names the SRTP profile
    /// the handshake chose, which webrtc-rs does not report otherwise: counted once per connection.
    pub fn queue_writes(&mut self, tx: &mut Vec<Datagram>, stats: &SfuStats) {
        while let Some(w) = self.pc.poll_write() {
            if !self.srtp_known
                && let Some(profile) = dtls_hello::server_hello_profile(&w.message)
            {
                self.srtp_known = true;
                tracing::debug!(profile = profile.name(), "SRTP profile chosen");
                stats.count_srtp_profile(profile.name());
            }
            let tcp = w.transport.transport_protocol == TransportProtocol::TCP;
            tx.push(Datagram { from: w.transport.local_addr, to: w.transport.peer_addr, data: w.message, received: None, tcp });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::{AttributedPacket, Interceptor, Packet, RTCPFeedback, StreamInfo, TaggedPacket};
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
    use rtc::rtp;
    use std::time::Duration;

    fn rtp_at(ssrc: u32, seq: u16, now: Instant) -> TaggedPacket {
        let header = rtp::header::Header { version: 2, ssrc, sequence_number: seq, ..Default::default() };
        let packet = rtp::Packet { header, payload: Default::default() };
        TaggedPacket { now, transport: Default::default(), message: AttributedPacket::new(Packet::Rtp(packet)) }
    }

    /// A packet lost on the way in and then recovered through RTX (on the RTX stream's SSRC, which the generator
    /// does not watch) is asked for `NACK_MAX_PER_PACKET` times, not for as long as it stays in the receive log.
    #[test]
    fn a_missing_packet_is_asked_for_a_bounded_number_of_times() {
        let (media, rtx) = (1111, 2222);
        let mut generator = nack_generator();
        let nack = RTCPFeedback { typ: "nack".to_owned(), parameter: String::new() };
        generator.bind_remote_stream(&StreamInfo { ssrc: media, rtcp_feedback: vec![nack], ..Default::default() });
        let t0 = Instant::now();
        for seq in [10, 11, 13] {
            generator.handle_read(rtp_at(media, seq, t0)).unwrap();
        }
        generator.handle_read(rtp_at(rtx, 500, t0)).unwrap(); // 12, retransmitted
        let mut asked = Vec::new();
        // 5 s of media at 10 packets a second, and the generator's timer.
        for tick in 1..=50u16 {
            let now = t0 + Duration::from_millis(100 * u64::from(tick));
            generator.handle_read(rtp_at(media, 13 + tick, now)).unwrap();
            generator.handle_timeout(now).unwrap();
            while generator.poll_read().is_some() {}
            while let Some(out) = generator.poll_write() {
                let Packet::Rtcp(packets) = &out.message.packet else { continue };
                for nack in packets.iter().filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>()) {
                    assert_eq!(nack.media_ssrc, media);
                    asked.extend(nack.nacks.iter().flat_map(|pair| pair.packet_list()).map(|seq| (tick, seq)));
                }
            }
        }
        assert!(asked.iter().all(|&(_, seq)| seq == 12), "only 12 is missing: {asked:?}");
        assert_eq!(asked.len(), usize::from(NACK_MAX_PER_PACKET), "asked for 12 at {asked:?}");
        assert!(asked.iter().all(|&(tick, _)| tick <= NACK_MAX_PER_PACKET), "once per 100 ms from the first: {asked:?}");
    }
}
