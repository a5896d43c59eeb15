//! Fan-out inside a shard: a published track, its subscribers, and the direct calls that move a packet from the
//! publisher's connection into each subscriber's. No channel, no task: the packet is handed on in the same pass
//! of the shard loop that decrypted it, and every subscriber's copy shares the payload.
//!
//! A subscriber starts receiving once it has answered the offer that added the track (the browser drops packets
//! for a track it does not know, the first keyframe with them); a new video subscriber starts on the cached
//! group of pictures (`gop`) or asks the publisher for a keyframe, throttled per track (`keyframe`). Each
//! subscriber has its own SSRC and payload type, and its own sequence-number and timestamp offsets (`rewrite`).

use super::super::codec::{KeyframeParser, keyframe_parser, negotiated_payload_type};
use super::super::gop::GopCache;
use super::super::keyframe::{KeyframeThrottle, KeyframeWait};
use super::super::rewrite::Rewriter;
use super::super::seen::SeenWindow;
use super::super::stats::SfuStats;
use super::super::memnet::Datagram;
use super::conn::{Conn, ConnId};
use super::super::api::PublishedTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Cached packets a new viewer's replay writes before they are moved to the send batch.
const REPLAY_SLICE: usize = 16;

pub struct Published {
    pub info: Arc<PublishedTrack>,
    pub publisher: ConnId,
    pub receiver: RTCRtpReceiverId,
    /// Only this SSRC is forwarded: RTX repair packets carry another SSRC and a payload that would corrupt a
    /// subscriber's decoder if forwarded as media.
    pub media_ssrc: u32,
    clock_hz: u32,
    keyframe: Option<KeyframeParser>,
    /// Kept when `keyframe` is known (VP8, H.264).
    gop: Option<GopCache>,
    pub throttle: KeyframeThrottle,
    pub subs: Vec<Sub>,
    /// The publisher's numbers already forwarded: a second copy goes nowhere.
    seen: SeenWindow,
}

pub struct Sub {
    pub conn: ConnId,
    pub sender: RTCRtpSenderId,
    ssrc: u32,
    payload_type: Option<u8>,
    /// The server offer generation the subscriber must have answered.
    needs: u64,
    rewriter: Rewriter,
    keyframe: KeyframeWait,
    /// Nothing forwarded yet: the cached group of pictures may go first. (Not after a resync: the viewer has
    /// newer packets by then, and the older ones would only be refused.)
    fresh: bool,
}

impl Published {
    pub fn new(info: Arc<PublishedTrack>, publisher: ConnId, receiver: RTCRtpReceiverId, media_ssrc: u32) -> Self {
        let keyframe = keyframe_parser(&info.codec.mime_type);
        Self {
            clock_hz: info.codec.clock_rate.max(1),
            gop: keyframe.map(|_| GopCache::default()),
            keyframe,
            info,
            publisher,
            receiver,
            media_ssrc,
            throttle: KeyframeThrottle::new(),
            subs: Vec::new(),
            seen: SeenWindow::default(),
        }
    }

    fn is_video(&self) -> bool {
        self.info.kind == RtpCodecKind::Video
    }

    pub fn new_sub(&self, conn: ConnId, sender: RTCRtpSenderId, ssrc: u32, needs: u64) -> Sub {
        Sub {
            conn,
            sender,
            ssrc,
            payload_type: None,
            needs,
            rewriter: Rewriter::default(),
            keyframe: KeyframeWait::new(self.is_video()),
            fresh: true,
        }
    }

    /// Hands one of the publisher's packets to every subscriber that can take it. Subscribers written to are
    /// pushed on `touched`; a new viewer's replay of the cached group goes to `tx` as it is written. Returns true
    /// when a subscriber needs a keyframe requested now.
    pub fn forward(
        &mut self,
        mut packet: rtp::Packet,
        conns: &mut rustc_hash::FxHashMap<ConnId, Conn>,
        touched: &mut Vec<ConnId>,
        tx: &mut Vec<Datagram>,
        stats: &SfuStats,
        now: Instant,
    ) -> bool {
        stats.packets_in.fetch_add(1, Ordering::Relaxed);
        if !self.seen.first_time(packet.header.sequence_number) {
            stats.packets_duplicate.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        // Header extension ids are negotiated per leg, so the publisher's mean nothing to a subscriber. Dropped
        // once here rather than per subscriber: every subscriber's copy is then a refcount on the payload.
        packet.header.extension = false;
        packet.header.extensions.clear();
        packet.header.extensions_padding = 0;
        let starts_keyframe = self.keyframe.map(|starts| starts(&packet.payload));
        if let (Some(gop), Some(k)) = (&mut self.gop, starts_keyframe) {
            gop.push(&packet, k);
        }
        let (video, clock_hz, source) = (self.is_video(), self.clock_hz, self.media_ssrc);
        let mut want_keyframe = false;
        for sub in &mut self.subs {
            let Some(conn) = conns.get_mut(&sub.conn) else { continue };
            if conn.answered < sub.needs {
                continue;
            }
            if sub.payload_type.is_none() {
                // Known once the subscriber's leg is negotiated; until then packets have nowhere to go.
                sub.payload_type = conn.pc.rtp_sender(sub.sender).and_then(|mut s| {
                    negotiated_payload_type(&s.get_parameters().rtp_parameters.codecs, &self.info.codec)
                });
                if sub.payload_type.is_none() {
                    continue;
                }
            }
            let mut sent = true;
            if sub.fresh && sub.keyframe.waiting() {
                // Start a new viewer on the publisher's last keyframe, if it is still cached, and the packets since.
                let group = self.gop.as_ref().and_then(|g| g.before(packet.header.sequence_number)).filter(|g| !g.is_empty());
                if let Some(group) = group {
                    for (n, cached) in group.into_iter().enumerate() {
                        sent = write(conn, sub, cached, source, clock_hz, stats, now);
                        if !sent {
                            break;
                        }
                        // Taken out a slice at a time: webrtc-rs's pipeline queues grow to the largest burst they
                        // ever held and keep that capacity, so a whole group at once (up to 256 packets) left
                        // ~80 KB per connection behind.
                        if n % REPLAY_SLICE == REPLAY_SLICE - 1 {
                            conn.queue_writes(tx, stats);
                        }
                    }
                    if sent {
                        sub.keyframe.started_on_keyframe();
                    }
                }
            }
            let is_keyframe = if sub.keyframe.waiting() { starts_keyframe } else { None };
            if !(sent && write(conn, sub, packet.clone(), source, clock_hz, stats, now)) {
                // The leg refused it (renegotiation in flight): look the payload type up again and resync.
                stats.packets_skipped.fetch_add(1, Ordering::Relaxed);
                sub.payload_type = None;
                sub.keyframe = KeyframeWait::new(video);
                continue;
            }
            if !conn.dirty {
                conn.dirty = true;
                touched.push(sub.conn);
            }
            sub.fresh = false;
            want_keyframe |= sub.keyframe.after_write(is_keyframe, now);
        }
        want_keyframe
    }
}

/// Rewrites `packet` for this subscriber's leg (its SSRC, payload type and numbering) and writes it. False if
/// the leg refused it.
fn write(conn: &mut Conn, sub: &mut Sub, mut packet: rtp::Packet, source: u32, clock_hz: u32, stats: &SfuStats, now: Instant) -> bool {
    let (seq, ts) = sub.rewriter.map(source, packet.header.sequence_number, packet.header.timestamp, now, clock_hz);
    packet.header.sequence_number = seq;
    packet.header.timestamp = ts;
    packet.header.ssrc = sub.ssrc;
    packet.header.payload_type = sub.payload_type.unwrap_or_default();
    let bytes = packet.payload.len() as u64;
    let Some(mut sender) = conn.pc.rtp_sender(sub.sender) else { return false };
    if sender.write_rtp(now, packet).is_err() {
        return false;
    }
    stats.packets_out.fetch_add(1, Ordering::Relaxed);
    stats.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    true
}
