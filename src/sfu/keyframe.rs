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

/// Interceptor that marks inbound PLI/FIR for delivery to the application, and puts them first in their compound
/// packet; everything else passes unchanged.
///
/// webrtc-rs hands a delivered compound packet to the application under the track of the *first* packet's first
/// destination SSRC, and drops it when no track has that SSRC. A browser's compound starts with its receiver
/// report, whose first report block is often about the retransmission (RTX) stream we send it, or about another
/// track: its PLI was then dropped (or filed under the wrong track), so a viewer that lost a frame for good waited
/// for a keyframe nobody asked for, frozen until the publisher happened to send one. With the request first, the
/// compound is filed under the track the request names. (The order matters to nothing after this interceptor:
/// it is the last on the inbound path, and the reports were read by the interceptors before it.)
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
        if let Packet::Rtcp(packets) = &mut msg.message.packet
            && packets.iter().any(|p| is_keyframe_request(p.as_ref()))
        {
            keyframe_requests_first(packets);
            if !msg.message.has(&Attribute::DeliverToApplication) {
                msg.message.add(Attribute::DeliverToApplication);
            }
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

/// Moves the keyframe requests of a compound packet to its front, keeping the order within each part.
fn keyframe_requests_first(packets: &mut Vec<Box<dyn rtc::rtcp::Packet>>) {
    if packets.first().is_some_and(|p| is_keyframe_request(p.as_ref())) {
        return;
    }
    let (mut requests, rest): (Vec<_>, Vec<_>) = packets.drain(..).partition(|p| is_keyframe_request(p.as_ref()));
    requests.extend(rest);
    *packets = requests;
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

/// How often a subscriber still waiting for its first keyframe asks again (the publisher-side throttle for
/// resyncs is 200 ms, so this is what actually paces it).
const KEYFRAME_RETRY: Duration = Duration::from_millis(300);

/// A subscriber waiting for a keyframe: asks as soon as packets flow, and again every `KEYFRAME_RETRY` until a
/// keyframe has been forwarded to it. For codecs whose keyframes we cannot recognise it asks once.
pub struct KeyframeWait {
    waiting: bool,
    last_request: Option<Instant>,
}

impl KeyframeWait {
    pub fn new(is_video: bool) -> Self {
        Self { waiting: is_video, last_request: None }
    }

    pub fn waiting(&self) -> bool {
        self.waiting
    }

    /// The subscriber was started on a keyframe (the cached group of pictures): nothing to ask for.
    pub fn started_on_keyframe(&mut self) {
        self.waiting = false;
    }

    /// After a packet was forwarded (`keyframe`: whether it started a keyframe, None if unknown). True when a
    /// keyframe should be requested now.
    pub fn after_write(&mut self, keyframe: Option<bool>, now: Instant) -> bool {
        if !self.waiting {
            return false;
        }
        match keyframe {
            Some(true) => {
                self.waiting = false;
                false
            }
            None if self.last_request.is_some() => {
                self.waiting = false;
                false
            }
            _ if self.last_request.is_none_or(|at| now.duration_since(at) >= KEYFRAME_RETRY) => {
                self.last_request = Some(now);
                true
            }
            _ => false,
        }
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

    /// A browser's compound: its receiver report first, with a report block on our RTX stream (an SSRC no track
    /// has), then the PLI. The marker delivers it with the PLI first, so webrtc-rs files it under the PLI's track.
    #[test]
    fn the_marker_puts_a_keyframe_request_first_in_its_compound_and_delivers_it() {
        use rtc::interceptor::AttributedPacket;
        use rtc::rtcp::reception_report::ReceptionReport;
        use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
        let rtx_ssrc = 0xDEAD_BEEF;
        let report = ReceiverReport { ssrc: 1, reports: vec![ReceptionReport { ssrc: rtx_ssrc, ..Default::default() }], ..Default::default() };
        let nack = TransportLayerNack { sender_ssrc: 1, media_ssrc: 7, nacks: vec![] };
        let compound: Vec<Box<dyn rtc::rtcp::Packet>> =
            vec![Box::new(report.clone()), Box::new(nack), Box::new(PictureLossIndication { sender_ssrc: 1, media_ssrc: 7 })];
        let read = |packets: Vec<Box<dyn rtc::rtcp::Packet>>| {
            let mut marker = KeyframeRequestMarker::default();
            let msg = TaggedPacket { now: Instant::now(), transport: Default::default(), message: AttributedPacket::new(Packet::Rtcp(packets)) };
            marker.handle_read(msg).unwrap();
            let out = marker.poll_read().expect("passed on");
            assert!(marker.poll_read().is_none());
            out
        };
        let out = read(compound);
        assert!(out.message.has(&Attribute::DeliverToApplication));
        let Packet::Rtcp(packets) = &out.message.packet else { panic!("still RTCP") };
        assert_eq!(packets.len(), 3, "nothing dropped");
        assert!(is_keyframe_request(packets[0].as_ref()), "the PLI leads");
        assert_eq!(packets[0].destination_ssrc(), vec![7], "so the compound's first destination is the PLI's stream");
        assert_eq!(packets[1].destination_ssrc(), vec![rtx_ssrc], "the rest keep their order: the report");
        assert_eq!(packets[2].destination_ssrc(), vec![7], "then the NACK");

        // Without a keyframe request, nothing is marked or moved.
        let out = read(vec![Box::new(report)]);
        assert!(!out.message.has(&Attribute::DeliverToApplication));
        let Packet::Rtcp(packets) = &out.message.packet else { panic!("still RTCP") };
        assert_eq!(packets[0].destination_ssrc(), vec![rtx_ssrc]);
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

    #[test]
    fn a_new_subscriber_asks_until_a_keyframe_arrives() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut wait = KeyframeWait::new(true);
        assert!(wait.after_write(Some(false), at(0)), "asks with the first delta frame");
        assert!(!wait.after_write(Some(false), at(100)), "not again within the retry interval");
        assert!(wait.after_write(Some(false), at(300)), "again after it");
        assert!(!wait.after_write(Some(true), at(700)), "a keyframe ends the wait");
        assert!(!wait.waiting() && !wait.after_write(Some(false), at(2000)));
    }

    #[test]
    fn a_keyframe_first_needs_no_request_and_unknown_codecs_ask_once() {
        let t0 = Instant::now();
        let mut wait = KeyframeWait::new(true);
        assert!(!wait.after_write(Some(true), t0));
        let mut vp9 = KeyframeWait::new(true);
        assert!(vp9.after_write(None, t0));
        assert!(!vp9.after_write(None, t0 + Duration::from_secs(1)) && !vp9.waiting());
        let mut audio = KeyframeWait::new(false);
        assert!(!audio.after_write(None, t0));
    }
}
