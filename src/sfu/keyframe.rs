//! Keyframe requests: letting viewers' PLI/FIR out of the interceptor chain, and throttling what we send
//! upstream.
//!
//! webrtc-rs ends the inbound RTCP path inside the interceptor chain: receiver reports and NACKs are for
//! the interceptors, not the application. An SFU must see one kind of feedback, the viewer's keyframe
//! request, because only the publisher can answer it. `KeyframeRequestMarker` marks exactly those packets
//! `DeliverToApplication`, so they surface as `TrackLocalEvent::OnRtcpPacket` on the viewer's sender.

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::header::{FORMAT_FIR, FORMAT_PLI, PacketType};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Whether an RTCP packet asks for a keyframe (PLI or FIR).
pub fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let h = packet.header();
    h.packet_type == PacketType::PayloadSpecificFeedback && (h.count == FORMAT_PLI || h.count == FORMAT_FIR)
}

/// Interceptor that marks inbound PLI/FIR for delivery to the application; everything passes unchanged.
#[derive(Default)]
pub struct KeyframeRequestMarker {
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestMarker {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet
            && packets.iter().any(|p| is_keyframe_request(p.as_ref()))
            && !msg.message.has(&Attribute::DeliverToApplication)
        {
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }

    fn handle_timeout(&mut self, _now: Instant) -> Result<(), Self::Error> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        None
    }
}

impl Interceptor for KeyframeRequestMarker {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// Why a keyframe is wanted; urgent reasons may go out sooner than the normal throttle allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeReason {
    /// A viewer's decoder asked (PLI/FIR relayed upstream). Throttled to one per second: a dozen
    /// viewers losing the same packet must not make the publisher send a dozen keyframes.
    ViewerRequest,
    /// A new subscriber, or one that skipped ahead after falling behind: it cannot decode anything
    /// until the next keyframe, so wait at most a fifth of a second behind the previous request.
    Resync,
}

/// Decides whether a keyframe request may go upstream now.
pub struct KeyframeThrottle {
    last: Mutex<Option<Instant>>,
}

impl KeyframeThrottle {
    pub const VIEWER_INTERVAL: Duration = Duration::from_secs(1);
    pub const RESYNC_INTERVAL: Duration = Duration::from_millis(200);

    pub fn new() -> Self {
        Self { last: Mutex::new(None) }
    }

    /// True if a request should be sent now (and records it).
    pub fn allow(&self, reason: KeyframeReason, now: Instant) -> bool {
        let min = match reason {
            KeyframeReason::ViewerRequest => Self::VIEWER_INTERVAL,
            KeyframeReason::Resync => Self::RESYNC_INTERVAL,
        };
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match *last {
            Some(t) if now.saturating_duration_since(t) < min => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

impl Default for KeyframeThrottle {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    use rtc::rtcp::receiver_report::ReceiverReport;

    #[test]
    fn pli_is_a_keyframe_request_and_a_receiver_report_is_not() {
        assert!(is_keyframe_request(&PictureLossIndication { sender_ssrc: 1, media_ssrc: 2 }));
        assert!(!is_keyframe_request(&ReceiverReport::default()));
    }

    #[test]
    fn viewer_requests_are_throttled_to_one_per_second() {
        let t = KeyframeThrottle::new();
        let t0 = Instant::now();
        assert!(t.allow(KeyframeReason::ViewerRequest, t0));
        assert!(!t.allow(KeyframeReason::ViewerRequest, t0 + Duration::from_millis(500)));
        assert!(t.allow(KeyframeReason::ViewerRequest, t0 + Duration::from_millis(1001)));
    }

    #[test]
    fn resync_requests_may_follow_sooner() {
        let t = KeyframeThrottle::new();
        let t0 = Instant::now();
        assert!(t.allow(KeyframeReason::ViewerRequest, t0));
        assert!(!t.allow(KeyframeReason::Resync, t0 + Duration::from_millis(100)));
        assert!(t.allow(KeyframeReason::Resync, t0 + Duration::from_millis(250)));
    }
}
