//! Media for load-test participants: one webrtc-rs peer connection per participant that publishes
//! synthetic Opus + VP8 RTP and receives everyone else's tracks.
//!
//! Interface used by the participant driver (`participant.rs`):
//!
//! ```text
//! let media = MediaSession::start(&options, out_tx, Arc::clone(&stats)).await?; // sends the offer via out_tx
//! media.handle(&server_message).await?;  // offer / answer / candidate; anything else is ignored
//! media.close().await;
//! let report = stats.snapshot();          // cumulative; the runner diffs two snapshots
//! ```
//!
//! How it works, and why:
//!
//! - **Negotiation** follows the gateway's rule: the client offers once (in `start`), afterwards only the
//!   server offers (to add or remove other participants' tracks) and the client answers.
//! - **Pacing**: one task per session owns two `tokio` intervals (audio every 20 ms, video every
//!   1/fps). Missed ticks are skipped, not burst: an overloaded load generator sends less, and the report
//!   shows it (`packets_sent`), instead of hiding its own lateness in bursts. Nothing is written until the
//!   connection is up. The same task polls the video sender for PLI/FIR between ticks, so a keyframe
//!   request costs no extra task or timer.
//! - **Payloads** are synthetic but codec-shaped: VP8 packets start with a payload descriptor (and the
//!   first packet of a frame with a VP8 frame tag, a full keyframe header when it is one), Opus packets
//!   with a TOC byte. The measurement data sits in a 12-byte *trailer* (4-byte magic, u64 send time in
//!   microseconds since a process-wide epoch) so the codec headers stay where decoders and SFUs look.
//!   The SFU forwards payloads untouched, so the receiver reads the trailer and knows the forwarding delay
//!   (sender and receivers live in one process, one clock).
//! - **Receiving**: one task per remote track counts packets, tracks sequence gaps in a 128-packet
//!   window (late packets inside the window are not loss, duplicates are not counted twice) and batches
//!   everything locally, flushing into the shared [`MediaStats`] every 100 ms: the shared histogram's
//!   mutex is taken about ten times a second per track, never per packet.
//! - Payload buffers come from one reusable `BytesMut` per track: once the previous packet is sent and
//!   dropped, `reserve` reclaims the same allocation.

pub use super::stats::LatencySummary;

use anyhow::{Context, anyhow, bail};
use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use rtc::interceptor::{Registry, Slot};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};
use serde::Serialize;
use signaling::{ClientMessage, ServerMessage};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription,
};
use webrtc::rtp_transceiver::RtpSender;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters};

/// An outgoing RTP track with one encoding: `stream_id` is what the receiver sees as the MediaStream id, the
/// track id doubles as the MediaStreamTrack id. Shared with the tests' synthetic peers, which publish the same way.
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

use crate::sfu::keyframe::{KeyframeRequestMarker, is_keyframe_request};
use crate::sfu::{candidate_from_signal as candidate_to_init, candidate_to_signal as candidate_from_init};

/// Marks a synthetic payload's trailer; packets without it (not ours) are counted but not timed.
const MAGIC: [u8; 4] = *b"THgw";
/// Magic + u64 send time.
const TRAILER_LEN: usize = 12;
/// Largest RTP payload we write; leaves room for RTP/SRTP/UDP/IP headers under a 1,280-byte path MTU.
const MAX_PAYLOAD: usize = 1200;
/// Opus at ~40 kbps: 20 ms frames of about 100 bytes.
const AUDIO_PAYLOAD: usize = 100;
const AUDIO_PERIOD: Duration = Duration::from_millis(20);
const AUDIO_CLOCK_HZ: u64 = 48_000;
const VIDEO_CLOCK_HZ: u64 = 90_000;
/// Opus TOC: config 31 (CELT fullband, 20 ms), stereo, one frame.
const OPUS_TOC: u8 = 0xfc;
/// A periodic keyframe, as a browser's encoder sends without being asked.
const KEYFRAME_INTERVAL: Duration = Duration::from_secs(3);
/// Frame size written into the synthetic VP8 keyframe header.
const VIDEO_WIDTH: u16 = 640;
const VIDEO_HEIGHT: u16 = 480;
/// How often receivers publish their local counters into the shared stats.
const FLUSH_INTERVAL_US: u64 = 100_000;
/// Delay samples a receiver buffers before a flush is forced.
const DELAY_BATCH: usize = 256;
/// Delays above this are recorded as this (an hour-long stall is not a delay worth resolving).
const MAX_DELAY_US: u64 = 60_000_000;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Microseconds since the process-wide epoch (the first call). Senders and receivers share it.
fn now_us() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// What each participant's media does.
#[derive(Debug, Clone)]
pub struct MediaOptions {
    /// Target VP8 payload rate. Audio comes on top: Opus-like, 50 packets/s of ~100 bytes.
    pub video_bitrate_bps: u64,
    pub video_fps: u32,
    /// Local IPs the client peer gathers ICE candidates on.
    pub bind_ips: Vec<IpAddr>,
}

impl Default for MediaOptions {
    fn default() -> Self {
        Self { video_bitrate_bps: 1_500_000, video_fps: 30, bind_ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)] }
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
    /// Remote tracks seen (`on_track`).
    pub tracks_received: u64,
    pub packets_sent: u64,
    pub bytes_sent: u64,
    pub packets_received: u64,
    pub bytes_received: u64,
    /// Sequence numbers never received, per received track (a packet later than 128 sequence numbers
    /// counts as lost; a gap still inside that window at the last flush is counted at close).
    pub packets_lost: u64,
    /// Per received track: highest extended sequence number − first + 1, summed.
    pub packets_expected: u64,
    /// PLI/FIR that reached our video senders.
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
}

/// State the session, its peer-connection handler and its tasks share.
struct Shared {
    stats: Arc<MediaStats>,
    /// Whether this session counts in `peer_connections_connected` (and may send).
    connected: AtomicBool,
    /// Receiver tasks, so `close` can wait for their last flush.
    receivers: Mutex<Vec<JoinHandle<()>>>,
    /// Flips to true (or its sender drops) when the session stops. Never read-marked, so every clone
    /// sees a stop that already happened.
    stop: watch::Receiver<bool>,
}

impl Shared {
    fn set_connected(&self, up: bool) {
        if self.connected.swap(up, Ordering::AcqRel) != up {
            if up {
                self.stats.peer_connections_connected.fetch_add(1, Ordering::Relaxed);
            } else {
                self.stats.peer_connections_connected.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow() || self.stop.has_changed().is_err()
    }
}

struct Handler {
    out: mpsc::UnboundedSender<ClientMessage>,
    shared: Arc<Shared>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.out.send(ClientMessage::Candidate { candidate: Some(candidate_from_init(init)) });
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        match state {
            RTCPeerConnectionState::Connected if !self.shared.stopping() => self.shared.set_connected(true),
            RTCPeerConnectionState::Disconnected | RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                self.shared.set_connected(false)
            }
            _ => {}
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        if self.shared.stopping() {
            return;
        }
        // The primary SSRC; repair (RTX) packets carry another and are not media.
        let Some(ssrc) = track.ssrcs().await.first().copied() else { return };
        self.shared.stats.tracks_received.fetch_add(1, Ordering::Relaxed);
        let task = tokio::spawn(receive(track, ssrc, Arc::clone(&self.shared.stats), self.shared.stop.clone()));
        let mut receivers = self.shared.receivers.lock().unwrap_or_else(|e| e.into_inner());
        receivers.retain(|t| !t.is_finished());
        receivers.push(task);
    }
}

/// One participant's peer connection and the tasks that feed and drain it.
pub struct MediaSession {
    pc: Arc<dyn PeerConnection>,
    out: mpsc::UnboundedSender<ClientMessage>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    pacer: Option<JoinHandle<()>>,
    closed: bool,
}

impl MediaSession {
    /// Creates the peer connection, adds one Opus and one VP8 track, sends the client's offer through `out`,
    /// and starts pacing synthetic RTP (nothing is written until the connection is up).
    pub async fn start(
        options: &MediaOptions,
        out: mpsc::UnboundedSender<ClientMessage>,
        stats: Arc<MediaStats>,
    ) -> anyhow::Result<Self> {
        if !(1..=120).contains(&options.video_fps) {
            bail!("video fps must be between 1 and 120, not {}", options.video_fps);
        }
        if options.bind_ips.is_empty() {
            bail!("media needs at least one local IP to gather ICE candidates on");
        }
        now_us(); // pin the epoch before anything is timed

        let (stop_tx, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            stats: Arc::clone(&stats),
            connected: AtomicBool::new(false),
            receivers: Mutex::new(Vec::new()),
            stop: stop_rx,
        });
        let handler = Arc::new(Handler { out: out.clone(), shared: Arc::clone(&shared) });
        let pc = client_peer_connection(handler, &options.bind_ips).await?;

        let mut session = Self { pc, out, shared, stop: stop_tx, pacer: None, closed: false };
        // From here on a failure must not leave a half-built connection running: `Drop` closes it.
        let (audio, video) = session.publish().await?;
        stats.tracks_published.fetch_add(2, Ordering::Relaxed);
        let pacer = Pacer::new(options, audio, video, Arc::clone(&session.shared));
        session.pacer = Some(tokio::spawn(pacer.run(session.shared.stop.clone())));
        Ok(session)
    }

    /// Adds our two tracks and sends the offer.
    async fn publish(&self) -> anyhow::Result<(Outgoing, Outgoing)> {
        let opus_fmtp = "minptime=10;useinbandfec=1";
        let audio = Outgoing::add(&*self.pc, RtpCodecKind::Audio, MIME_TYPE_OPUS, opus_fmtp, 48_000, 2).await?;
        let video = Outgoing::add(&*self.pc, RtpCodecKind::Video, MIME_TYPE_VP8, "", 90_000, 0).await?;
        let offer = self.pc.create_offer(None).await.context("creating the offer")?;
        let sdp = offer.sdp.clone();
        self.pc.set_local_description(offer).await.context("applying our offer")?;
        self.out.send(ClientMessage::Offer { sdp }).map_err(|_| anyhow!("signaling channel closed"))?;
        Ok((audio, video))
    }

    /// Applies a server message: `answer`, `offer` (→ sends an `answer` through `out`), `candidate`.
    /// Anything else is ignored (Ok). A message the media engine refuses is an error, never a panic.
    pub async fn handle(&self, msg: &ServerMessage) -> anyhow::Result<()> {
        apply_server_message(&*self.pc, msg, &self.out).await.map(|_| ())
    }

    /// Stops the pacers and receivers (receivers publish their last counts), closes the peer connection.
    pub async fn close(mut self) {
        self.closed = true;
        let _ = self.stop.send(true);
        self.shared.set_connected(false);
        let mut tasks: Vec<JoinHandle<()>> = self.pacer.take().into_iter().collect();
        tasks.extend(std::mem::take(&mut *self.shared.receivers.lock().unwrap_or_else(|e| e.into_inner())));
        for mut task in tasks {
            if tokio::time::timeout(Duration::from_secs(1), &mut task).await.is_err() {
                task.abort();
            }
        }
        let _ = self.pc.close().await;
        self.shared.set_connected(false);
    }
}

/// A client peer connection as the synthetic participants (this load tester's and the tests') build it:
/// default codecs and interceptors (NACK, RTCP reports, TWCC, as a browser has them), the marker that lets
/// PLI/FIR reach the application, and ICE host candidates on `bind_ips` only.
pub async fn client_peer_connection(
    handler: Arc<dyn PeerConnectionEventHandler>,
    bind_ips: &[IpAddr],
) -> anyhow::Result<Arc<dyn PeerConnection>> {
    let mut media_engine = MediaEngine::default();
    media_engine.register_default_codecs()?;
    let registry = register_default_interceptors(Registry::new(), &mut media_engine)?
        .with(Slot::Custom(20_000), KeyframeRequestMarker::default());
    let addrs: Vec<SocketAddr> = bind_ips.iter().map(|ip| SocketAddr::new(*ip, 0)).collect();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
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
            pc.add_ice_candidate(candidate_to_init(candidate.clone())).await.context("adding the server's ICE candidate")?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

impl Drop for MediaSession {
    /// Dropped without `close` (e.g. `start` failed half-way, or the driver gave up): stop the tasks and
    /// close the connection in the background.
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let _ = self.stop.send(true);
        self.shared.set_connected(false);
        if let Some(p) = self.pacer.take() {
            p.abort();
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let pc = Arc::clone(&self.pc);
            rt.spawn(async move {
                let _ = pc.close().await;
            });
        }
    }
}

/// One of our tracks and what we need to write RTP on it.
struct Outgoing {
    track: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    mime: &'static str,
    ssrc: u32,
    seq: u16,
    ts_base: u32,
    /// Payload type negotiated for our codec; looked up once the connection is up, again after a failed write.
    payload_type: Option<u8>,
    buf: BytesMut,
}

impl Outgoing {
    async fn add(
        pc: &dyn PeerConnection,
        kind: RtpCodecKind,
        mime: &'static str,
        fmtp: &str,
        clock_rate: u32,
        channels: u16,
    ) -> anyhow::Result<Self> {
        let ssrc = rand::random::<u32>();
        let codec = RTCRtpCodec {
            mime_type: mime.to_owned(),
            clock_rate,
            channels,
            sdp_fmtp_line: fmtp.to_owned(),
            ..Default::default()
        };
        let track = rtp_track("loadtest".to_owned(), format!("loadtest-{kind}"), kind, codec, ssrc);
        let sender = pc
            .add_track(Arc::clone(&track) as Arc<dyn TrackLocal>)
            .await
            .with_context(|| format!("adding the {kind} track"))?;
        Ok(Self {
            track,
            sender,
            mime,
            ssrc,
            seq: rand::random(),
            ts_base: rand::random(),
            payload_type: None,
            buf: BytesMut::with_capacity(4 * MAX_PAYLOAD),
        })
    }

    async fn payload_type(&mut self) -> Option<u8> {
        if self.payload_type.is_none() {
            let params = self.sender.get_parameters().await.ok()?;
            self.payload_type = params
                .rtp_parameters
                .codecs
                .iter()
                .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(self.mime))
                .map(|c| c.payload_type);
        }
        self.payload_type
    }

    /// A payload buffer of `len` bytes: `head`, zero filler, then the timing trailer.
    fn payload(&mut self, len: usize, head: &[u8]) -> Bytes {
        let len = len.max(head.len() + TRAILER_LEN);
        // Reclaims the previous allocation once the packets cut from it have been sent and dropped.
        self.buf.reserve(len);
        self.buf.put_slice(head);
        self.buf.put_bytes(0, len - head.len() - TRAILER_LEN);
        self.buf.put_slice(&MAGIC);
        self.buf.put_u64(now_us());
        self.buf.split().freeze()
    }

    async fn write(&mut self, payload_type: u8, payload: Bytes, timestamp: u32, marker: bool) -> bool {
        let packet = rtp::Packet {
            header: rtp::Header {
                version: 2,
                marker,
                payload_type,
                sequence_number: self.seq,
                timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload,
        };
        if self.track.write_rtp(packet).await.is_err() {
            // Not bound (renegotiation in flight) or closing: look the payload type up again later.
            self.payload_type = None;
            return false;
        }
        self.seq = self.seq.wrapping_add(1);
        true
    }
}

/// The RTP timestamp `elapsed` after the track's start, at `clock_hz`.
fn rtp_timestamp(base: u32, elapsed: Duration, clock_hz: u64) -> u32 {
    base.wrapping_add((elapsed.as_micros() as u64 * clock_hz / 1_000_000) as u32)
}

/// Payload bytes of video frame `n` (0-based) so that frames average `bitrate / 8 / fps` exactly.
fn frame_len(n: u64, bitrate_bps: u64, fps: u32) -> usize {
    let target = |k: u64| (k as u128 * bitrate_bps as u128 / (8 * fps as u128)) as u64;
    (target(n + 1) - target(n)) as usize
}

/// Splits `len` bytes into the fewest packets of at most `MAX_PAYLOAD`, as evenly as possible.
fn packet_sizes(len: usize) -> impl ExactSizeIterator<Item = usize> {
    let count = len.div_ceil(MAX_PAYLOAD).max(1);
    let (base, extra) = (len / count, len % count);
    (0..count).map(move |i| base + usize::from(i < extra))
}

/// The VP8 bytes in front of a packet's payload (RFC 7741 payload descriptor, plus on a frame's first
/// packet the 3-byte frame tag and, for a keyframe, the start code and dimensions).
fn vp8_head(first_in_frame: bool, keyframe: bool, frame_len: usize) -> ([u8; 11], usize) {
    let mut head = [0u8; 11];
    if !first_in_frame {
        return (head, 1); // X=0 N=0 S=0 PID=0: a continuation
    }
    head[0] = 0x10; // S=1: start of partition 0
    let first_partition = (frame_len as u32).min(0x7_ffff);
    // Frame tag: bit 0 = 0 for a keyframe, version 0, show_frame = 1, 19-bit first partition size.
    let tag = u32::from(!keyframe) | (1 << 4) | (first_partition << 5);
    head[1..4].copy_from_slice(&tag.to_le_bytes()[..3]);
    if !keyframe {
        return (head, 4);
    }
    head[4..7].copy_from_slice(&[0x9d, 0x01, 0x2a]);
    head[7..9].copy_from_slice(&VIDEO_WIDTH.to_le_bytes());
    head[9..11].copy_from_slice(&VIDEO_HEIGHT.to_le_bytes());
    (head, 11)
}

/// Writes both tracks of one session on their clocks and watches the video sender for PLI/FIR.
struct Pacer {
    audio: Outgoing,
    video: Outgoing,
    bitrate_bps: u64,
    fps: u32,
    shared: Arc<Shared>,
}

impl Pacer {
    fn new(options: &MediaOptions, audio: Outgoing, video: Outgoing, shared: Arc<Shared>) -> Self {
        Self { audio, video, bitrate_bps: options.video_bitrate_bps, fps: options.video_fps, shared }
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let start = tokio::time::Instant::now();
        let mut audio_tick = tokio::time::interval(AUDIO_PERIOD);
        audio_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut video_tick = tokio::time::interval(Duration::from_secs(1) / self.fps);
        video_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let video_track = Arc::clone(&self.video.track);
        let mut frame: u64 = 0;
        let mut keyframe_wanted = true;
        let mut next_keyframe = start;
        // `poll` returns None at once while the sender is unbound; then wait for the next tick.
        let mut polling = true;
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                t = audio_tick.tick() => {
                    if self.shared.connected.load(Ordering::Relaxed) {
                        self.send_audio(t - start).await;
                    }
                }
                t = video_tick.tick() => {
                    polling = true;
                    if self.shared.connected.load(Ordering::Relaxed) {
                        let keyframe = keyframe_wanted || t >= next_keyframe;
                        if self.send_frame(frame, t - start, keyframe).await && keyframe {
                            keyframe_wanted = false;
                            next_keyframe = t + KEYFRAME_INTERVAL;
                        }
                        frame += 1;
                    }
                }
                // Dropped at every tick, so the track's event lock is never held for long (a rebind
                // during renegotiation needs it).
                event = video_track.poll(), if polling => match event {
                    Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                        let requests = packets.iter().filter(|p| is_keyframe_request(p.as_ref())).count() as u64;
                        if requests > 0 {
                            self.shared.stats.keyframe_requests_received.fetch_add(requests, Ordering::Relaxed);
                            keyframe_wanted = true;
                        }
                    }
                    Some(_) => {}
                    None => polling = false,
                },
            }
        }
    }

    async fn send_audio(&mut self, elapsed: Duration) {
        let Some(pt) = self.audio.payload_type().await else { return };
        let payload = self.audio.payload(AUDIO_PAYLOAD, &[OPUS_TOC]);
        let ts = rtp_timestamp(self.audio.ts_base, elapsed, AUDIO_CLOCK_HZ);
        if self.audio.write(pt, payload, ts, true).await {
            self.shared.stats.packets_sent.fetch_add(1, Ordering::Relaxed);
            self.shared.stats.bytes_sent.fetch_add(AUDIO_PAYLOAD as u64, Ordering::Relaxed);
        }
    }

    /// Sends frame `n`; true if all of it went out.
    async fn send_frame(&mut self, n: u64, elapsed: Duration, keyframe: bool) -> bool {
        let len = frame_len(n, self.bitrate_bps, self.fps);
        if len == 0 {
            return false;
        }
        let Some(pt) = self.video.payload_type().await else { return false };
        let ts = rtp_timestamp(self.video.ts_base, elapsed, VIDEO_CLOCK_HZ);
        let (mut packets, mut bytes, mut complete) = (0u64, 0u64, true);
        let sizes = packet_sizes(len);
        let count = sizes.len();
        for (i, size) in sizes.enumerate() {
            let (head, head_len) = vp8_head(i == 0, keyframe, len);
            let payload = self.video.payload(size, &head[..head_len]);
            let size = payload.len() as u64;
            if !self.video.write(pt, payload, ts, i + 1 == count).await {
                complete = false;
                break;
            }
            packets += 1;
            bytes += size;
        }
        if packets > 0 {
            self.shared.stats.packets_sent.fetch_add(packets, Ordering::Relaxed);
            self.shared.stats.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
        }
        complete
    }
}

/// Sequence-number bookkeeping for one received stream: extended sequence numbers (wrap-safe) and a
/// window of the last 128, so reordering inside the window is not loss and duplicates are ignored.
#[derive(Debug, Default)]
struct SequenceTracker {
    started: bool,
    /// Highest extended sequence number so far.
    highest: u64,
    /// Bit i set: `highest - i` arrived (or predates the first packet, so was never expected).
    window: u128,
    /// Not yet published to the shared stats.
    expected: u64,
    lost: u64,
}

impl SequenceTracker {
    const WINDOW: u64 = 128;
    /// A packet this far behind is a restarted stream, not a late one (RFC 3550's MAX_DROPOUT).
    const MAX_DROPOUT: u64 = 3000;

    fn on_packet(&mut self, seq: u16) {
        if !self.started {
            self.begin(seq);
            return;
        }
        let delta = seq.wrapping_sub(self.highest as u16) as i16;
        if delta > 0 {
            self.advance(delta as u64);
            return;
        }
        let behind = u64::from(delta.unsigned_abs());
        if behind < Self::WINDOW {
            self.window |= 1u128 << behind; // late or duplicate: either way it is here now
        } else if behind >= Self::MAX_DROPOUT {
            self.finish();
            self.begin(seq);
        }
        // Between the window and MAX_DROPOUT: too late, already counted lost. (A jump *forward* is
        // always loss: our publishers never restart their sequence, so a big gap is packets the SFU
        // dropped, e.g. for a subscriber that fell behind.)
    }

    fn begin(&mut self, seq: u16) {
        self.started = true;
        self.highest = u64::from(seq);
        self.window = u128::MAX;
        self.expected += 1;
    }

    fn advance(&mut self, by: u64) {
        if by >= Self::WINDOW {
            self.lost += (Self::WINDOW - u64::from(self.window.count_ones())) + (by - Self::WINDOW);
            self.window = 1;
        } else {
            let leaving = self.window >> (Self::WINDOW - by);
            self.lost += by - u64::from(leaving.count_ones());
            self.window = (self.window << by) | 1;
        }
        self.highest += by;
        self.expected += by;
    }

    /// The stream ended: whatever is still missing in the window is lost.
    fn finish(&mut self) {
        self.lost += Self::WINDOW - u64::from(self.window.count_ones());
        self.window = u128::MAX;
    }
}

/// The timing trailer's send time, if this is one of our payloads.
fn sent_at(payload: &[u8]) -> Option<u64> {
    let trailer = payload.len().checked_sub(TRAILER_LEN).map(|i| &payload[i..])?;
    if trailer[..4] != MAGIC {
        return None;
    }
    Some(u64::from_be_bytes(trailer[4..].try_into().ok()?))
}

/// A receiver's counters, kept locally and published in batches.
struct ReceiveCounters {
    stats: Arc<MediaStats>,
    sequence: SequenceTracker,
    packets: u64,
    bytes: u64,
    delays: Vec<u64>,
    last_flush_us: u64,
}

impl ReceiveCounters {
    fn new(stats: Arc<MediaStats>) -> Self {
        Self {
            stats,
            sequence: SequenceTracker::default(),
            packets: 0,
            bytes: 0,
            delays: Vec::with_capacity(DELAY_BATCH),
            last_flush_us: now_us(),
        }
    }

    fn on_packet(&mut self, packet: &rtp::Packet) {
        let now = now_us();
        self.packets += 1;
        self.bytes += packet.payload.len() as u64;
        self.sequence.on_packet(packet.header.sequence_number);
        if let Some(sent) = sent_at(&packet.payload) {
            self.delays.push(now.saturating_sub(sent));
        }
        if self.delays.len() >= DELAY_BATCH || now.saturating_sub(self.last_flush_us) >= FLUSH_INTERVAL_US {
            self.last_flush_us = now;
            self.flush();
        }
    }

    fn flush(&mut self) {
        let s = &self.stats;
        let add = |c: &AtomicU64, v: &mut u64| {
            if *v > 0 {
                c.fetch_add(std::mem::take(v), Ordering::Relaxed);
            }
        };
        add(&s.packets_received, &mut self.packets);
        add(&s.bytes_received, &mut self.bytes);
        add(&s.packets_expected, &mut self.sequence.expected);
        add(&s.packets_lost, &mut self.sequence.lost);
        if !self.delays.is_empty() {
            let mut h = s.forwarding_delay_us.lock().unwrap_or_else(|e| e.into_inner());
            for d in self.delays.drain(..) {
                h.saturating_record(d.min(MAX_DELAY_US));
            }
        }
    }

    fn finish(mut self) {
        if self.sequence.started {
            self.sequence.finish();
        }
        self.flush();
    }
}

/// Drains one remote track until it ends or the session stops.
async fn receive(track: Arc<dyn TrackRemote>, ssrc: u32, stats: Arc<MediaStats>, mut stop: watch::Receiver<bool>) {
    let mut counters = ReceiveCounters::new(stats);
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.changed() => break,
            event = track.poll() => event,
        };
        match event {
            Some(TrackRemoteEvent::OnRtpPacket(packet)) if packet.header.ssrc == ssrc => counters.on_packet(&packet),
            Some(TrackRemoteEvent::OnEnded | TrackRemoteEvent::OnError) | None => break,
            Some(_) => {}
        }
    }
    counters.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(seqs: impl IntoIterator<Item = u16>) -> SequenceTracker {
        let mut t = SequenceTracker::default();
        for s in seqs {
            t.on_packet(s);
        }
        t
    }

    #[test]
    fn an_unbroken_stream_across_the_wrap_loses_nothing() {
        let mut t = track((65_000u32..67_000).map(|s| s as u16));
        t.finish();
        assert_eq!((t.expected, t.lost), (2000, 0));
    }

    #[test]
    fn a_gap_is_lost_once_it_leaves_the_window_or_the_stream_ends() {
        let mut t = track((0..10).chain(15..20));
        assert_eq!((t.expected, t.lost), (20, 0), "still inside the window");
        t.finish();
        assert_eq!((t.expected, t.lost), (20, 5));
        let t = track((0..10).chain(15..400));
        assert_eq!((t.expected, t.lost), (400, 5));
    }

    #[test]
    fn reordered_and_duplicated_packets_are_not_loss() {
        let mut t = track([1, 2, 4, 3, 5, 5, 6, 2, 7]);
        t.finish();
        assert_eq!((t.expected, t.lost), (7, 0));
    }

    #[test]
    fn a_long_jump_counts_everything_skipped() {
        let mut t = track([10, 11, 1000]);
        t.finish();
        assert_eq!((t.expected, t.lost), (991, 988));
    }

    #[test]
    fn a_restarted_stream_starts_a_new_count() {
        let mut t = track([40_000, 40_001, 40_002, 30_000, 30_001]);
        t.finish();
        assert_eq!((t.expected, t.lost), (5, 0));
    }

    #[test]
    fn frames_add_up_to_the_bitrate_and_packets_stay_under_the_mtu() {
        let total: usize = (0..30).map(|n| frame_len(n, 1_500_000, 30)).sum();
        assert_eq!(total, 1_500_000 / 8);
        let sizes: Vec<usize> = packet_sizes(6250).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 6250);
        assert!(sizes.iter().all(|&s| s <= MAX_PAYLOAD) && sizes.len() == 6, "{sizes:?}");
        let total: usize = (0..7).map(|n| frame_len(n, 500_000, 7)).sum();
        assert_eq!(total, 500_000 / 8);
    }

    #[test]
    fn the_vp8_head_marks_keyframes_the_way_decoders_read_it() {
        let (key, n) = vp8_head(true, true, 5000);
        assert_eq!(n, 11);
        assert_eq!(key[0] & 0x10, 0x10, "start of partition");
        assert_eq!(key[1] & 0x01, 0, "keyframe: inverse key bit clear");
        assert_eq!(&key[4..7], &[0x9d, 0x01, 0x2a]);
        let (delta, n) = vp8_head(true, false, 5000);
        assert_eq!((n, delta[1] & 0x01), (4, 1));
        assert_eq!(vp8_head(false, true, 5000).1, 1);
    }

    #[test]
    fn the_trailer_round_trips_and_foreign_payloads_are_ignored() {
        let mut payload = vec![0x10u8, 1, 2, 3];
        payload.extend_from_slice(&MAGIC);
        payload.extend_from_slice(&1234u64.to_be_bytes());
        assert_eq!(sent_at(&payload), Some(1234));
        assert_eq!(sent_at(&payload[..payload.len() - 1]), None);
        assert_eq!(sent_at(&[1, 2, 3]), None);
    }
}
