//! A webrtc-rs participant for tests: publishes synthetic Opus + VP8 RTP, answers the server's
//! renegotiation offers, counts what it receives and the keyframe requests it gets.
//!
//! It speaks through two channels (`ClientMessage` out, `ServerMessage` in) so the same peer can be
//! driven over the real WebSocket.

#![allow(dead_code)]

use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};
use signaling::{ClientMessage, ServerMessage};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use anyhow::{Context, anyhow};
use rtc::interceptor::{Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::{RTCConfiguration, RTCConfigurationBuilder, RTCIceServer, RTCIceTransportPolicy};
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters};
use std::net::{IpAddr, SocketAddr};
use telehealth_gateway::sfu::keyframe::{KeyframeRequestMarker, is_keyframe_request};
use telehealth_gateway::sfu::{candidate_from_signal, candidate_to_signal as candidate_from_init};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCPeerConnectionIceEvent, RTCSessionDescription,
};

/// What one peer has received, keyed by the publisher (the forwarded tracks' MediaStream id).
#[derive(Default)]
pub struct Received {
    /// (publisher, "audio"|"video") → packets received.
    pub packets: Mutex<HashMap<(String, String), u64>>,
    /// Remote tracks seen: (publisher, kind, mime type).
    pub tracks: Mutex<Vec<(String, String, String)>>,
    /// Keyframe requests (PLI/FIR) that reached our video sender.
    pub keyframe_requests: AtomicU64,
    /// Remote video tracks, so the test can send a PLI like a real viewer's decoder would.
    pub video_remotes: Mutex<Vec<Arc<dyn TrackRemote>>>,
}

impl Received {
    pub fn count(&self, publisher: &str, kind: &str) -> u64 {
        *self.packets.lock().unwrap().get(&(publisher.to_owned(), kind.to_owned())).unwrap_or(&0)
    }
}



struct Handler {
    out: mpsc::UnboundedSender<ClientMessage>,
    received: Arc<Received>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.out.send(ClientMessage::Candidate { candidate: Some(candidate_from_init(init)) });
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let publisher = track.stream_id().await;
        let kind = track.kind().await.to_string();
        let ssrc = track.ssrcs().await.first().copied().unwrap_or_default();
        let mime = track.codec(ssrc).await.map(|c| c.mime_type).unwrap_or_default();
        self.received.tracks.lock().unwrap().push((publisher.clone(), kind.clone(), mime));
        if track.kind().await == RtpCodecKind::Video {
            self.received.video_remotes.lock().unwrap().push(Arc::clone(&track));
        }
        let received = Arc::clone(&self.received);
        tokio::spawn(async move {
            while let Some(ev) = track.poll().await {
                match ev {
                    TrackRemoteEvent::OnRtpPacket(_) => {
                        *received.packets.lock().unwrap().entry((publisher.clone(), kind.clone())).or_default() += 1;
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}

pub struct MediaPeer {
    pub pc: Arc<dyn PeerConnection>,
    pub received: Arc<Received>,
    out: mpsc::UnboundedSender<ClientMessage>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The video codec a test peer publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    /// VP8 with a real group-of-pictures shape: a keyframe every `GOP_PACKETS` packets, deltas between (and
    /// no keyframe on request). Plain `Vp8` marks every packet a keyframe.
    Vp8Gop,
    H264,
}

impl VideoCodec {
    fn mime(self) -> &'static str {
        match self {
            Self::Vp8 | Self::Vp8Gop => MIME_TYPE_VP8,
            Self::H264 => MIME_TYPE_H264,
        }
    }
    fn fmtp(self) -> &'static str {
        match self {
            Self::Vp8 | Self::Vp8Gop => "",
            Self::H264 => "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
        }
    }
    /// The payload type webrtc-rs's default media engine gives this codec.
    fn payload_type(self) -> u8 {
        match self {
            Self::Vp8 | Self::Vp8Gop => 96,
            Self::H264 => 102,
        }
    }
}

fn local_track(kind: RtpCodecKind, mime: &str, fmtp: &str, clock_rate: u32, channels: u16, ssrc: u32) -> Arc<TrackLocalStaticRTP> {
    let codec =
        RTCRtpCodec { mime_type: mime.to_owned(), clock_rate, channels, sdp_fmtp_line: fmtp.to_owned(), ..Default::default() };
    rtp_track("synthetic".to_owned(), format!("synthetic-{kind}"), kind, codec, ssrc)
}

/// Packets from one keyframe to the next in `VideoCodec::Vp8Gop`: 0.8 s at 30 packets a second (under the
/// SFU's one-second limit on the keyframe it replays).
pub const GOP_PACKETS: u64 = 24;

/// Writes synthetic RTP at a steady pace: Opus every 20 ms, VP8 every 33 ms. With `gop`, the payload is a VP8
/// keyframe every `gop` packets and a delta frame otherwise.
async fn pump(
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    payload_type: u8,
    interval: Duration,
    clock_step: u32,
    payload_len: usize,
    gop: Option<u64>,
) {
    let mut n: u64 = 0;
    let mut seq: u16 = rand::random();
    let mut ts: u32 = rand::random();
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        let packet = rtp::Packet {
            header: rtp::Header {
                version: 2,
                marker: true,
                payload_type,
                sequence_number: seq,
                timestamp: ts,
                ssrc,
                ..Default::default()
            },
            payload: match gop {
                None => bytes::Bytes::from(vec![0x90u8; payload_len]),
                Some(every) => {
                    let mut p = vec![0x10u8, if n.is_multiple_of(every) { 0x00 } else { 0x01 }];
                    p.resize(payload_len, 0x90);
                    bytes::Bytes::from(p)
                }
            },
        };
        n += 1;
        // Errors before the track is bound (negotiation in flight) are expected; keep pacing.
        let _ = track.write_rtp(packet).await;
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(clock_step);
    }
}

impl MediaPeer {
    /// Creates the peer, adds Opus + `video` tracks, sends the offer through `out`, and starts handling
    /// `incoming` server messages (answer, offers, candidates). Other server messages go to `others`.
    pub async fn start(
        out: mpsc::UnboundedSender<ClientMessage>,
        incoming: mpsc::UnboundedReceiver<ServerMessage>,
        others: mpsc::UnboundedSender<ServerMessage>,
        video_codec: VideoCodec,
    ) -> anyhow::Result<Self> {
        Self::start_with(out, incoming, others, video_codec, RTCConfigurationBuilder::new().build()).await
    }

    /// As `start`, but reaching the SFU only through these TURN servers (ICE transport policy `relay`), as a
    /// browser behind a firewall that lets nothing else through.
    pub async fn start_relayed(
        out: mpsc::UnboundedSender<ClientMessage>,
        incoming: mpsc::UnboundedReceiver<ServerMessage>,
        others: mpsc::UnboundedSender<ServerMessage>,
        ice_servers: &[signaling::IceServer],
    ) -> anyhow::Result<Self> {
        let servers = ice_servers
            .iter()
            .map(|s| RTCIceServer {
                urls: s.urls.clone(),
                username: s.username.clone().unwrap_or_default(),
                credential: s.credential.clone().unwrap_or_default(),
            })
            .collect();
        let config = RTCConfigurationBuilder::new()
            .with_ice_servers(servers)
            .with_ice_transport_policy(RTCIceTransportPolicy::Relay)
            .build();
        Self::start_with(out, incoming, others, VideoCodec::Vp8, config).await
    }

    async fn start_with(
        out: mpsc::UnboundedSender<ClientMessage>,
        mut incoming: mpsc::UnboundedReceiver<ServerMessage>,
        others: mpsc::UnboundedSender<ServerMessage>,
        video_codec: VideoCodec,
        configuration: RTCConfiguration,
    ) -> anyhow::Result<Self> {
        let received = Arc::new(Received::default());
        let handler = Arc::new(Handler { out: out.clone(), received: Arc::clone(&received) });
        let pc = peer_connection_with(handler, &["127.0.0.1".parse()?], configuration).await?;

        let (audio_ssrc, video_ssrc) = (rand::random::<u32>(), rand::random::<u32>());
        let audio = local_track(RtpCodecKind::Audio, MIME_TYPE_OPUS, "minptime=10;useinbandfec=1", 48000, 2, audio_ssrc);
        let video = local_track(RtpCodecKind::Video, video_codec.mime(), video_codec.fmtp(), 90000, 0, video_ssrc);
        pc.add_track(Arc::clone(&audio) as Arc<dyn TrackLocal>).await?;
        pc.add_track(Arc::clone(&video) as Arc<dyn TrackLocal>).await?;

        let offer = pc.create_offer(None).await?;
        let sdp = offer.sdp.clone();
        pc.set_local_description(offer).await?;
        out.send(ClientMessage::Offer { sdp, restart: false })?;

        let mut tasks = Vec::new();
        // Payload types from our own media engine's defaults (the offer uses them; the SFU answers in kind).
        tasks.push(tokio::spawn(pump(audio, audio_ssrc, 111, Duration::from_millis(20), 960, 80, None)));
        let gop = (video_codec == VideoCodec::Vp8Gop).then_some(GOP_PACKETS);
        let pt = video_codec.payload_type();
        tasks.push(tokio::spawn(pump(Arc::clone(&video), video_ssrc, pt, Duration::from_millis(33), 3000, 1000, gop)));

        let kf = Arc::clone(&received);
        tasks.push(tokio::spawn(async move {
            loop {
                match tokio::time::timeout(Duration::from_millis(100), video.poll()).await {
                    Ok(Some(TrackLocalEvent::OnRtcpPacket(pkts))) => {
                        if pkts.iter().any(|p| is_keyframe_request(p.as_ref())) {
                            kf.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Some(_)) | Err(_) => {}
                    Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));

        let pc2 = Arc::clone(&pc);
        let out2 = out.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(msg) = incoming.recv().await {
                match apply_server_message(&*pc2, &msg, &out2).await {
                    Ok(true) => {}
                    Ok(false) => {
                        let _ = others.send(msg);
                    }
                    Err(e) => panic!("test peer could not apply a server message: {e:#}"),
                }
            }
        }));
        Ok(Self { pc, received, out, tasks })
    }

    /// Sends a PLI upstream on every video track we receive, as a browser's decoder would.
    pub async fn send_pli(&self) -> usize {
        let remotes: Vec<_> = self.received.video_remotes.lock().unwrap().clone();
        for r in &remotes {
            let ssrc = r.ssrcs().await.first().copied().unwrap_or_default();
            let _ = r.write_rtcp(vec![Box::new(PictureLossIndication { sender_ssrc: 0, media_ssrc: ssrc })]).await;
        }
        remotes.len()
    }

    /// Sends a PLI on every video track we receive as Chromium does: in a compound packet that starts with a
    /// receiver report whose first report block is about `report_ssrc` (Chromium's is often our RTX stream's).
    pub async fn send_pli_behind_report(&self, report_ssrc: u32) -> usize {
        let remotes: Vec<_> = self.received.video_remotes.lock().unwrap().clone();
        for r in &remotes {
            let ssrc = r.ssrcs().await.first().copied().unwrap_or_default();
            let report = ReceiverReport {
                ssrc: 1,
                reports: vec![ReceptionReport { ssrc: report_ssrc, ..Default::default() }, ReceptionReport { ssrc, ..Default::default() }],
                ..Default::default()
            };
            let _ = r.write_rtcp(vec![Box::new(report), Box::new(PictureLossIndication { sender_ssrc: 1, media_ssrc: ssrc })]).await;
        }
        remotes.len()
    }

    pub fn send(&self, msg: ClientMessage) {
        let _ = self.out.send(msg);
    }

    pub async fn close(&self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = self.pc.close().await;
    }
}

impl Drop for MediaPeer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Polls `cond` every 50 ms until it holds or `limit` passes.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An outgoing RTP track with one encoding: `stream_id` is what the receiver sees as the MediaStream id, the
/// track id doubles as the MediaStreamTrack id. 
pub fn rtp_track(stream_id: String, track_id: String, kind: RtpCodecKind, codec: RTCRtpCodec, ssrc: u32) -> Arc<TrackLocalStaticRTP> {
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        stream_id,
        track_id.clone(),
        track_id,
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
            codec,
            ..Default::default()
        }],
    )))
}

/// A client peer connection as a browser builds it:
/// default codecs and interceptors (NACK, RTCP reports, TWCC, as a browser has them), the marker that lets
/// PLI/FIR reach the application, and ICE host candidates on `bind_ips` only.
pub async fn client_peer_connection(
    handler: Arc<dyn PeerConnectionEventHandler>,
    bind_ips: &[IpAddr],
) -> anyhow::Result<Arc<dyn PeerConnection>> {
    peer_connection_with(handler, bind_ips, RTCConfigurationBuilder::new().build()).await
}

async fn peer_connection_with(
    handler: Arc<dyn PeerConnectionEventHandler>,
    bind_ips: &[IpAddr],
    configuration: RTCConfiguration,
) -> anyhow::Result<Arc<dyn PeerConnection>> {
    let mut media_engine = MediaEngine::default();
    media_engine.register_default_codecs()?;
    let registry = register_default_interceptors(Registry::new(), &mut media_engine)?
        .with(Slot::Custom(20_000), KeyframeRequestMarker::default());
    let addrs: Vec<SocketAddr> = bind_ips.iter().map(|ip| SocketAddr::new(*ip, 0)).collect();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(configuration)
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .with_handler(handler)
        .with_udp_addrs(addrs)
        .build()
        .await
        .context("creating the peer connection")?;
    Ok(Arc::new(pc))
}

/// Applies a server signaling message to a client peer connection: `answer`, `offer` (→ an `answer` goes
/// out through `out`), `candidate`. Returns false for any other message, which it leaves alone. A message the
/// media engine refuses is an error, never a panic.
pub async fn apply_server_message(
    pc: &dyn PeerConnection,
    msg: &ServerMessage,
    out: &mpsc::UnboundedSender<ClientMessage>,
) -> anyhow::Result<bool> {
    match msg {
        ServerMessage::Answer { sdp } => {
            let answer = RTCSessionDescription::answer(sdp.clone()).context("parsing the server's answer")?;
            pc.set_remote_description(answer).await.context("applying the server's answer")?;
        }
        ServerMessage::Offer { sdp } => {
            let offer = RTCSessionDescription::offer(sdp.clone()).context("parsing the server's offer")?;
            pc.set_remote_description(offer).await.context("applying the server's offer")?;
            let answer = pc.create_answer(None).await.context("creating our answer")?;
            let sdp = answer.sdp.clone();
            pc.set_local_description(answer).await.context("applying our answer")?;
            out.send(ClientMessage::Answer { sdp }).map_err(|_| anyhow!("signaling channel closed"))?;
        }
        ServerMessage::Candidate { candidate } => {
            pc.add_ice_candidate(candidate_from_signal(candidate.clone())).await.context("adding the server's ICE candidate")?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}
