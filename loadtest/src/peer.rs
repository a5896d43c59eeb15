//! One simulated participant's media, on webrtc-rs's sans-IO core (`rtc`): no task, no socket, no timer of its
//! own. Whoever drives it (the in-memory benchmark, or the load generator over UDP) feeds it datagrams and
//! signaling messages, calls [`ClientPeer::tick`] when [`ClientPeer::deadline`] comes, and sends what
//! [`ClientPeer::poll_transmit`] hands out. A thread can drive hundreds of them.
//!
//! It follows the gateway's negotiation rule: the client offers once, for its own Opus and VP8 tracks; after
//! that only the server offers (other participants' tracks) and the client answers. It publishes synthetic
//! payloads (`payload`) at a fixed pace once connected, answers PLI/FIR with a keyframe, and checks everything
//! it receives: sequence continuity per track and the integrity of every payload.

use crate::payload::{self, Check, Shape};
use crate::sequence::SequenceTracker;
use bytes::BytesMut;
use rtc::interceptor::{Registry, Slot};
use rtc::media_stream::{MediaStreamTrack, MediaStreamTrackId};
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine};
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtp;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use signaling::{ClientMessage, ServerMessage};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use telehealth_gateway::sfu::keyframe::{KeyframeRequestMarker, is_keyframe_request};
use telehealth_gateway::sfu::{candidate_from_signal, candidate_to_signal, host_candidate};

/// Largest RTP payload written: room for RTP, SRTP and UDP/IP headers under a 1,280-byte path MTU.
const MAX_PAYLOAD: usize = 1200;
/// Opus at ~40 kbps: 20 ms frames of about 100 bytes.
const AUDIO_PAYLOAD: usize = 100;
const AUDIO_PERIOD: Duration = Duration::from_millis(20);
const AUDIO_CLOCK_HZ: u64 = 48_000;
const VIDEO_CLOCK_HZ: u64 = 90_000;
/// A periodic keyframe, as a browser's encoder sends without being asked.
const KEYFRAME_INTERVAL: Duration = Duration::from_secs(3);
const KEYFRAME_MARKER_SLOT: Slot = Slot::Custom(20_000);

#[derive(Debug, Clone)]
pub struct MediaOptions {
    /// VP8 payload rate; Opus (50 packets/s of ~100 bytes) comes on top.
    pub video_bitrate_bps: u64,
    pub video_fps: u32,
}

impl Default for MediaOptions {
    fn default() -> Self {
        Self { video_bitrate_bps: 1_500_000, video_fps: 30 }
    }
}

/// What a peer saw, summed by the driver over all its peers.
#[derive(Debug, Clone, Default)]
pub struct PeerStats {
    pub packets_sent: u64,
    /// RTP payload bytes, as the SFU's byte counters count them.
    pub bytes_sent: u64,
    pub packets_received: u64,
    pub bytes_received: u64,
    /// Sequence numbers never seen, per received track (`sequence`: a gap filled within 128 packets, e.g. by a
    /// retransmission, is not loss).
    pub packets_lost: u64,
    /// Per received track: highest extended sequence number − first + 1, summed.
    pub packets_expected: u64,
    /// Remote tracks opened (cumulative).
    pub tracks_opened: u64,
    /// Arrived after a later one (reordered or retransmitted late).
    pub packets_late: u64,
    pub packets_corrupt: u64,
    pub packets_foreign: u64,
    pub keyframes_requested: u64,
    pub write_errors: u64,
    /// Send-to-receive delay of every intact packet, in µs.
    pub delays_us: Vec<u32>,
}

impl PeerStats {
    pub fn add(&mut self, o: &PeerStats) {
        self.packets_sent += o.packets_sent;
        self.bytes_sent += o.bytes_sent;
        self.packets_received += o.packets_received;
        self.bytes_received += o.bytes_received;
        self.packets_lost += o.packets_lost;
        self.packets_expected += o.packets_expected;
        self.tracks_opened += o.tracks_opened;
        self.packets_late += o.packets_late;
        self.packets_corrupt += o.packets_corrupt;
        self.packets_foreign += o.packets_foreign;
        self.keyframes_requested += o.keyframes_requested;
        self.write_errors += o.write_errors;
        self.delays_us.extend_from_slice(&o.delays_us);
    }
}

struct Sender {
    id: RTCRtpSenderId,
    kind: RtpCodecKind,
    ssrc: u32,
    payload_type: Option<u8>,
    seq: u16,
    next_due: Instant,
    frames: u64,
    last_keyframe: Option<Instant>,
    keyframe_wanted: bool,
}

#[derive(Default)]
struct Receiver {
    sequence: SequenceTracker,
}

impl Receiver {
    /// Moves what the tracker counted into `stats`.
    fn publish(&mut self, stats: &mut PeerStats) {
        stats.packets_lost += std::mem::take(&mut self.sequence.lost);
        stats.packets_expected += std::mem::take(&mut self.sequence.expected);
    }

    /// The track ended: its open gaps are loss now.
    fn finish(mut self, stats: &mut PeerStats) {
        if self.sequence.started {
            self.sequence.finish();
        }
        self.publish(stats);
    }
}

pub struct ClientPeer {
    pc: RTCPeerConnection,
    local: SocketAddr,
    options: MediaOptions,
    /// Microseconds since this instant are the clock every payload carries; shared by all peers of a run.
    epoch: Instant,
    started: Instant,
    senders: Vec<Sender>,
    receivers: HashMap<MediaStreamTrackId, Receiver>,
    connected: bool,
    failed: bool,
    buf: BytesMut,
    pub stats: PeerStats,
}

fn codec(kind: RtpCodecKind) -> RTCRtpCodecParameters {
    let nack = |parameter: &str| RTCPFeedback { typ: "nack".into(), parameter: parameter.into() };
    match kind {
        RtpCodecKind::Audio => RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.into(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
                rtcp_feedback: vec![],
            },
            payload_type: 111,
        },
        _ => RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_VP8.into(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![nack(""), nack("pli")],
            },
            payload_type: 96,
        },
    }
}

impl ClientPeer {
    /// A peer on `local` that publishes audio and video. Returns it with the messages to send the server: the
    /// offer and the peer's one host candidate.
    pub fn new(local: SocketAddr, options: MediaOptions, epoch: Instant, now: Instant) -> anyhow::Result<(Self, Vec<ClientMessage>)> {
        let mut media_engine = MediaEngine::default();
        for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
            media_engine.register_codec(codec(kind), kind)?;
        }
        let registry = register_default_interceptors(Registry::new(), &mut media_engine)?
            .with(KEYFRAME_MARKER_SLOT, KeyframeRequestMarker::default());
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .build(now)?;
        let mut senders = Vec::new();
        for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
            let ssrc = rand::random::<u32>();
            let track = MediaStreamTrack::new(
                format!("client-{local}"),
                format!("{kind}-{ssrc}"),
                format!("{kind}"),
                kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                    codec: codec(kind).rtp_codec,
                    ..Default::default()
                }],
            );
            let id = pc.add_track(track)?;
            senders.push(Sender {
                id,
                kind,
                ssrc,
                payload_type: None,
                seq: rand::random(),
                next_due: now,
                frames: 0,
                last_keyframe: None,
                keyframe_wanted: true,
            });
        }
        let offer = pc.create_offer(None)?;
        let sdp = offer.sdp.clone();
        pc.set_local_description(now, offer)?;
        let init = host_candidate(local)?;
        pc.add_local_candidate(init.clone())?;
        let out = vec![
            ClientMessage::Offer { sdp, restart: false },
            ClientMessage::Candidate { candidate: Some(candidate_to_signal(init)) },
        ];
        let peer = Self {
            pc,
            local,
            options,
            epoch,
            started: now,
            senders,
            receivers: HashMap::new(),
            connected: false,
            failed: false,
            buf: BytesMut::with_capacity(4 * MAX_PAYLOAD),
            stats: PeerStats::default(),
        };
        Ok((peer, out))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    pub fn has_failed(&self) -> bool {
        self.failed
    }

    /// Remote tracks currently open.
    pub fn tracks_received(&self) -> usize {
        self.receivers.len()
    }

    /// A message from the server; returns what to send back (an answer to a server offer).
    pub fn on_signal(&mut self, msg: ServerMessage, now: Instant) -> anyhow::Result<Vec<ClientMessage>> {
        match msg {
            ServerMessage::Answer { sdp } => {
                self.pc.set_remote_description(now, RTCSessionDescription::answer(sdp)?)?;
            }
            ServerMessage::Offer { sdp } => {
                self.pc.set_remote_description(now, RTCSessionDescription::offer(sdp)?)?;
                let answer = self.pc.create_answer(None)?;
                let sdp = answer.sdp.clone();
                self.pc.set_local_description(now, answer)?;
                return Ok(vec![ClientMessage::Answer { sdp }]);
            }
            ServerMessage::Candidate { candidate } => self.pc.add_remote_candidate(candidate_from_signal(candidate))?,
            _ => {}
        }
        self.drain(now);
        Ok(vec![])
    }

    /// A datagram for this peer.
    pub fn on_datagram(&mut self, from: SocketAddr, data: BytesMut, now: Instant) {
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.local,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: data,
        };
        if self.pc.handle_read(msg).is_ok() {
            self.drain(now);
        }
    }

    /// When `tick` should run next.
    pub fn deadline(&mut self) -> Option<Instant> {
        let media = self.connected.then(|| self.senders.iter().map(|s| s.next_due).min()).flatten();
        match (self.pc.poll_timeout(), media) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs due timers and writes due media.
    pub fn tick(&mut self, now: Instant) {
        if self.pc.poll_timeout().is_some_and(|t| t <= now) {
            let _ = self.pc.handle_timeout(now);
        }
        if self.connected {
            for i in 0..self.senders.len() {
                while self.senders[i].next_due <= now {
                    self.send_frame(i, now);
                }
            }
        }
        self.drain(now);
    }

    /// The next datagram to send: (destination, bytes).
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, BytesMut)> {
        self.pc.poll_write().map(|m| (m.transport.peer_addr, m.message))
    }

    pub fn close(&mut self) {
        for (_, r) in self.receivers.drain() {
            r.finish(&mut self.stats);
        }
        let _ = self.pc.close();
    }

    fn send_frame(&mut self, i: usize, now: Instant) {
        let frame_bytes = (self.options.video_bitrate_bps / 8 / u64::from(self.options.video_fps.max(1))) as usize;
        let fps = self.options.video_fps.max(1);
        let s = &mut self.senders[i];
        let elapsed = s.next_due.saturating_duration_since(self.started);
        let (period, clock, shapes): (Duration, u64, Vec<(Shape, usize)>) = match s.kind {
            RtpCodecKind::Audio => (AUDIO_PERIOD, AUDIO_CLOCK_HZ, vec![(Shape::Opus, AUDIO_PAYLOAD)]),
            _ => {
                let keyframe = s.keyframe_wanted || s.last_keyframe.is_none_or(|t| now.duration_since(t) >= KEYFRAME_INTERVAL);
                if keyframe {
                    s.keyframe_wanted = false;
                    s.last_keyframe = Some(now);
                }
                let n = frame_bytes.div_ceil(MAX_PAYLOAD).max(1);
                let each = (frame_bytes / n).max(payload::TRAILER_LEN + 16);
                let shapes = (0..n).map(|k| (Shape::Vp8 { frame_start: k == 0, keyframe }, each)).collect();
                (Duration::from_secs(1) / fps, VIDEO_CLOCK_HZ, shapes)
            }
        };
        // A late driver skips the frames it missed rather than bursting them (as a browser's encoder would).
        s.next_due += period;
        if s.next_due < now {
            s.next_due = now + period;
        }
        s.frames += 1;
        let timestamp = (elapsed.as_micros() as u64 * clock / 1_000_000) as u32;
        let Some(pt) = s.payload_type.or_else(|| {
            let pt = self.pc.rtp_sender(s.id).and_then(|mut sender| {
                let mime = codec(s.kind).rtp_codec.mime_type;
                sender.get_parameters().rtp_parameters.codecs.iter().find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&mime)).map(|c| c.payload_type)
            });
            s.payload_type = pt;
            pt
        }) else {
            self.stats.write_errors += 1;
            return;
        };
        let sent_us = now.duration_since(self.epoch).as_micros() as u64;
        let last = shapes.len() - 1;
        for (k, (shape, len)) in shapes.into_iter().enumerate() {
            let seq = s.seq;
            s.seq = s.seq.wrapping_add(1);
            let packet = rtp::Packet {
                header: rtp::Header {
                    version: 2,
                    marker: k == last && s.kind == RtpCodecKind::Video,
                    payload_type: pt,
                    sequence_number: seq,
                    timestamp,
                    ssrc: s.ssrc,
                    ..Default::default()
                },
                payload: payload::build(&mut self.buf, shape, len, seq, sent_us),
            };
            let bytes = packet.payload.len() as u64;
            let ok = self.pc.rtp_sender(s.id).is_some_and(|mut sender| sender.write_rtp(now, packet).is_ok());
            if ok {
                self.stats.packets_sent += 1;
                self.stats.bytes_sent += bytes;
            } else {
                self.stats.write_errors += 1;
            }
        }
    }

    /// Handles everything the connection has for the application: events and received packets.
    fn drain(&mut self, now: Instant) {
        while let Some(event) = self.pc.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => match state {
                    RTCPeerConnectionState::Connected => {
                        if !self.connected {
                            // Start at a random point of each period: real participants are not in step, and
                            // peers started together would otherwise all send their frames at the same instant.
                            let video_period = Duration::from_secs(1) / self.options.video_fps.max(1);
                            for s in &mut self.senders {
                                let period = if s.kind == RtpCodecKind::Audio { AUDIO_PERIOD } else { video_period };
                                s.next_due = now + period.mul_f64(rand::random::<f64>());
                            }
                        }
                        self.connected = true;
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        self.connected = false;
                        self.failed = state == RTCPeerConnectionState::Failed;
                    }
                    _ => {}
                },
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    // A renegotiation may announce a track that is already open: same track, same counters.
                    if let std::collections::hash_map::Entry::Vacant(e) = self.receivers.entry(init.track_id) {
                        e.insert(Receiver::default());
                        self.stats.tracks_opened += 1;
                    }
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnClose(id)) => {
                    if let Some(r) = self.receivers.remove(&id) {
                        r.finish(&mut self.stats);
                    }
                }
                _ => {}
            }
        }
        while let Some(TaggedRTCMessage { message, .. }) = self.pc.poll_read() {
            match message {
                RTCMessage::RtpPacket(track, packet) => self.received(&track, &packet, now),
                RTCMessage::RtcpPacket(_, packets) if packets.iter().any(|p| is_keyframe_request(p.as_ref())) => {
                    self.stats.keyframes_requested += 1;
                    for s in self.senders.iter_mut().filter(|s| s.kind == RtpCodecKind::Video) {
                        s.keyframe_wanted = true;
                    }
                }
                _ => {}
            }
        }
    }

    fn received(&mut self, track: &MediaStreamTrackId, packet: &rtp::Packet, now: Instant) {
        let stats = &mut self.stats;
        stats.packets_received += 1;
        stats.bytes_received += packet.payload.len() as u64;
        let r = self.receivers.entry(track.clone()).or_default();
        if r.sequence.on_packet(packet.header.sequence_number) {
            stats.packets_late += 1;
        }
        r.publish(stats);
        match payload::check(&packet.payload) {
            Check::Intact { sent_us, .. } => {
                let now_us = now.duration_since(self.epoch).as_micros() as u64;
                stats.delays_us.push(now_us.saturating_sub(sent_us).min(u64::from(u32::MAX)) as u32);
            }
            Check::Corrupt => stats.packets_corrupt += 1,
            Check::Foreign => stats.packets_foreign += 1,
        }
    }
}
