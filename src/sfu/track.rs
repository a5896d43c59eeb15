//! A published track and its fan-out.
//!
//! One reader task per published track pulls RTP from the publisher's `TrackRemote` into a bounded
//! broadcast channel. Each subscriber has its own forwarder task reading that channel into its own
//! `TrackLocalStaticRTP`. A subscriber whose socket or driver is slow only delays its own forwarder; when
//! it falls more than the channel's capacity behind, the channel drops its oldest packets *for that
//! subscriber only*, the forwarder skips ahead and asks the publisher for a keyframe so its decoder can
//! resume. Nobody else waits.

use super::codec;
use super::gop::GopCache;
use super::codec::negotiated_payload_type;
use super::keyframe::{KeyframeReason, KeyframeThrottle, KeyframeWait, is_keyframe_request};
use super::stats::SfuStats;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use std::sync::{Arc, Mutex};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::Track;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::rtp_transceiver::RtpSender;

/// Packets buffered per published track before a lagging subscriber starts losing the oldest.
/// About a second of 1.5 Mbps video at ~1,100-byte packets.
const FANOUT_CAPACITY: usize = 256;

/// A track someone publishes, ready to be subscribed to by others.
pub struct PublishedTrack {
    /// Unique within the SFU: `<publisher>-<kind>-<n>`.
    pub id: String,
    /// The publisher's participant id; subscribers see it as the MediaStream id.
    pub publisher: String,
    pub kind: RtpCodecKind,
    pub codec: RTCRtpCodec,
    media_ssrc: u32,
    remote: Arc<dyn TrackRemote>,
    packets: broadcast::Sender<rtp::Packet>,
    /// For VP8 and H.264 (whose keyframes `codec` recognises); None for other codecs.
    keyframe: Option<codec::KeyframeParser>,
    /// Kept when `keyframe` is known.
    gop: Option<Mutex<GopCache>>,
    throttle: KeyframeThrottle,
    stats: Arc<SfuStats>,
}

impl PublishedTrack {
    /// Starts reading the remote track. `on_end` runs once when the publisher's track ends.
    pub(crate) async fn start(
        id: String,
        publisher: String,
        remote: Arc<dyn TrackRemote>,
        stats: Arc<SfuStats>,
        on_end: impl FnOnce(String) + Send + 'static,
    ) -> Option<Arc<Self>> {
        let (media_ssrc, codec) = coding(&*remote).await?;
        let kind = remote.kind().await;
        let (packets, _) = broadcast::channel(FANOUT_CAPACITY);
        let keyframe = codec::keyframe_parser(&codec.mime_type);
        let gop = keyframe.map(|_| Mutex::new(GopCache::default()));
        let track = Arc::new(Self {
            id,
            publisher,
            kind,
            codec,
            media_ssrc,
            remote,
            packets,
            keyframe,
            gop,
            throttle: KeyframeThrottle::new(),
            stats,
        });
        let reader = Arc::clone(&track);
        tokio::spawn(async move {
            while let Some(event) = reader.remote.poll().await {
                match event {
                    // Only the primary stream: RTX repair packets carry another SSRC and a payload
                    // that would corrupt a subscriber's decoder if forwarded as media.
                    TrackRemoteEvent::OnRtpPacket(mut packet) if packet.header.ssrc == reader.media_ssrc => {
                        reader.stats.packets_in.fetch_add(1, Ordering::Relaxed);
                        // Header extension ids are negotiated per leg, so the publisher's mean nothing to a
                        // subscriber. Dropped once here rather than per subscriber: every subscriber's copy
                        // of the packet is then a refcount on the payload, with no extension list to allocate.
                        packet.header.extension = false;
                        packet.header.extensions.clear();
                        packet.header.extensions_padding = 0;
                        if let (Some(gop), Some(starts_keyframe)) = (&reader.gop, reader.keyframe) {
                            let keyframe = starts_keyframe(&packet.payload);
                            gop.lock().unwrap_or_else(|e| e.into_inner()).push(&packet, keyframe);
                        }
                        // No receivers is fine: nobody subscribed yet.
                        let _ = reader.packets.send(packet);
                    }
                    TrackRemoteEvent::OnEnded | TrackRemoteEvent::OnError => break,
                    _ => {}
                }
            }
            on_end(reader.id.clone());
        });
        Some(track)
    }

    /// The cached packets of the current group of pictures that precede packet `seq` (see `gop`).
    fn gop_before(&self, seq: u16) -> Option<Vec<rtp::Packet>> {
        self.gop.as_ref()?.lock().unwrap_or_else(|e| e.into_inner()).before(seq)
    }

    /// Asks the publisher for a keyframe, unless one was asked for very recently.
    pub async fn request_keyframe(&self, reason: KeyframeReason) {
        if self.kind != RtpCodecKind::Video || !self.throttle.allow(reason, Instant::now()) {
            return;
        }
        self.stats.keyframe_requests.fetch_add(1, Ordering::Relaxed);
        let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc: self.media_ssrc };
        if let Err(e) = self.remote.write_rtcp(vec![Box::new(pli)]).await {
            tracing::debug!(track = %self.id, error = %e, "keyframe request not sent");
        }
    }
}

/// How long to wait for a remote track's SSRC and codec (see `coding`).
const CODING_WAIT: Duration = Duration::from_secs(2);

/// The remote track's media SSRC and codec. webrtc-rs 0.21 can open a track whose coding is not filled in:
/// a renegotiation of the same connection (ours, adding someone else's tracks) racing the publisher's first
/// packet resets the receiver's coding, and the track was then dropped for the whole call (seen once in the
/// browser test: a participant never heard). The next packet fills the coding in again, so wait for it. Runs
/// outside webrtc-rs's driver task (see `peer::Handler::on_track`), which must go on reading packets.
async fn coding(remote: &dyn TrackRemote) -> Option<(u32, RTCRtpCodec)> {
    let deadline = Instant::now() + CODING_WAIT;
    loop {
        if let Some(&ssrc) = remote.ssrcs().await.first()
            && let Some(codec) = remote.codec(ssrc).await
            && !codec.mime_type.is_empty()
        {
            return Some((ssrc, codec));
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One subscriber's copy of a published track.
pub struct Subscription {
    pub sender: Arc<dyn RtpSender>,
    tasks: Vec<JoinHandle<()>>,
}

impl Subscription {
    /// The local track to add to the subscriber's peer connection.
    pub(crate) fn local_track(published: &PublishedTrack) -> Arc<TrackLocalStaticRTP> {
        rtp_track(published.publisher.clone(), published.id.clone(), published.kind, published.codec.clone(), rand::random())
    }

    /// Starts forwarding `published` into `local` (already added to the subscriber's connection) once
    /// `negotiated` says the subscriber has answered an offer that includes it.
    pub(crate) fn start(
        published: Arc<PublishedTrack>,
        local: Arc<TrackLocalStaticRTP>,
        sender: Arc<dyn RtpSender>,
        negotiated: Negotiated,
    ) -> Self {
        let forward =
            tokio::spawn(forward(Arc::clone(&published), Arc::clone(&local), Arc::clone(&sender), negotiated));
        let feedback = tokio::spawn(relay_feedback(Arc::clone(&published), local));
        Self { sender, tasks: vec![forward, feedback] }
    }

    pub fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.stop();
    }
}

/// When a subscription's track is known to the subscriber: once the answer to offer `needs` (or a later one)
/// has been applied (see `Peer::answered`).
pub(crate) struct Negotiated {
    pub(crate) answered: watch::Receiver<u64>,
    pub(crate) needs: u64,
}

impl Negotiated {
    fn done(&self) -> bool {
        *self.answered.borrow() >= self.needs
    }
}

async fn forward(
    published: Arc<PublishedTrack>,
    local: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    negotiated: Negotiated,
) {
    let mut rx = published.packets.subscribe();
    let mut known = false;
    let ssrc = *local.ssrcs().await.first().unwrap_or(&0);
    let mut payload_type: Option<u8> = None;
    let is_video = published.kind == RtpCodecKind::Video;
    // A (re)starting video subscriber needs a keyframe before it can show anything.
    let mut keyframe = KeyframeWait::new(is_video);
    // Nothing forwarded yet: the cached group of pictures may be sent first. (Not after a lag: the viewer has
    // newer packets by then, and the older ones would only be refused.)
    let mut fresh = true;
    loop {
        let packet = match rx.recv().await {
            Ok(p) => p,
            Err(broadcast::error::RecvError::Lagged(skipped)) => {
                // Fell behind: the channel already dropped our oldest packets. Resume from the newest
                // and get a keyframe so the decoder is not stuck on a broken reference.
                published.stats.packets_skipped.fetch_add(skipped, Ordering::Relaxed);
                keyframe = KeyframeWait::new(is_video);
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if !known {
            // Until the subscriber has the track in its description it would drop what we send, the first
            // keyframe included; from then on the cached group of pictures gets it decoding at once.
            known = negotiated.done();
            if !known {
                continue;
            }
        }
        if payload_type.is_none() {
            // Known once the subscriber's leg is negotiated; until then packets have nowhere to go.
            payload_type = match sender.get_parameters().await {
                Ok(p) => negotiated_payload_type(&p.rtp_parameters.codecs, &published.codec),
                Err(_) => None,
            };
            if payload_type.is_none() {
                continue;
            }
        }
        let pt = payload_type.unwrap_or_default();
        let mut sent = true;
        if fresh && keyframe.waiting() {
            // Start a new viewer on the publisher's last keyframe, if it is still cached, and the packets since.
            let group = published.gop_before(packet.header.sequence_number).filter(|g| !g.is_empty());
            tracing::debug!(track = %published.id, cached = group.as_ref().map(Vec::len), "new video subscriber");
            if let Some(group) = group {
                for cached in group {
                    sent = send(&published, &local, cached, ssrc, pt).await;
                    if !sent {
                        break;
                    }
                }
                if sent {
                    keyframe.started_on_keyframe();
                }
            }
        }
        let is_keyframe = keyframe.waiting().then(|| published.keyframe.map(|starts| starts(&packet.payload)));
        if !(sent && send(&published, &local, packet, ssrc, pt).await) {
            // Not bound yet (negotiation in flight) or already gone; forget the mapping and retry.
            payload_type = None;
            keyframe = KeyframeWait::new(is_video);
            continue;
        }
        fresh = false;
        if keyframe.after_write(is_keyframe.flatten(), Instant::now()) {
            published.request_keyframe(KeyframeReason::Resync).await;
        }
    }
}

/// Rewrites `packet` for this subscriber's leg (its SSRC and payload type), sends and counts it. False if the
/// leg refused it.
async fn send(published: &PublishedTrack, local: &TrackLocalStaticRTP, mut packet: rtp::Packet, ssrc: u32, pt: u8) -> bool {
    packet.header.ssrc = ssrc;
    packet.header.payload_type = pt;
    let bytes = packet.payload.len() as u64;
    if local.write_rtp(packet).await.is_err() {
        return false;
    }
    published.stats.packets_out.fetch_add(1, Ordering::Relaxed);
    published.stats.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    true
}

/// Relays the subscriber's PLI/FIR to the publisher (throttled there).
async fn relay_feedback(published: Arc<PublishedTrack>, local: Arc<TrackLocalStaticRTP>) {
    loop {
        // Bounded wait: `poll` holds the track's event lock while it waits, and a (re)bind during
        // renegotiation needs that lock; never hold it for long.
        let event = match tokio::time::timeout(std::time::Duration::from_millis(200), local.poll()).await {
            Ok(event) => event,
            Err(_) => continue,
        };
        match event {
            Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                if packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
                    published.stats.viewer_keyframe_requests.fetch_add(1, Ordering::Relaxed);
                    published.request_keyframe(KeyframeReason::ViewerRequest).await;
                }
            }
            Some(_) => {}
            // Not bound yet: the event receiver appears at bind time.
            None => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}

/// An outgoing RTP track with one encoding: `stream_id` is what the receiver sees as the MediaStream id (the
/// SFU uses the publisher's attendee id), the track id doubles as the MediaStreamTrack id. Shared with the load
/// tester's and the tests' synthetic peers, which publish the same way.
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
