//! The publisher's current group of pictures (its last keyframe and every packet since), so a new subscriber
//! can start decoding at once instead of waiting for a keyframe request to be answered.
//!
//! Why: a browser ignores keyframe requests that come within about 300 ms of its previous keyframe, and when
//! two people join together the subscription is set up just after the publisher's first keyframe. The viewer
//! then saw nothing for 200-400 ms (the request repeated until the encoder answered). The first keyframe is
//! still in this cache, so the viewer gets it, and the frames since, straight away.
//!
//! Bounded, because the group goes out to the new viewer in one burst: at most `MAX_AGE` of video. Once the last
//! keyframe is older, a new viewer asks for a keyframe as before, which the browser then answers at once (its
//! last keyframe is long past). When the group grows past `MAX_PACKETS` or past `MAX_AGE`, the cache empties and
//! stays empty until the next keyframe.

use rtc::rtp::Packet;

/// About 1.5 s of 1.5 Mbps video; the packets' payloads are shared with the fan-out ring.
pub const MAX_PACKETS: usize = 256;
/// One second on the 90 kHz RTP clock that VP8 and H.264 use (RFC 7741, RFC 6184).
const MAX_AGE: u32 = 90_000;

#[derive(Default)]
pub struct GopCache {
    packets: Vec<Packet>,
    /// False until a keyframe has been seen, and again after an overflow.
    valid: bool,
}

impl GopCache {
    /// Records a packet the publisher sent (in arrival order). `keyframe`: whether it starts a keyframe.
    pub fn push(&mut self, packet: &Packet, keyframe: bool) {
        let ts = packet.header.timestamp;
        if keyframe {
            // Packets of the same frame that came before the keyframe's first recognised packet (H.264's
            // parameter sets in their own STAP-A) belong to the keyframe: keep them, drop the older group.
            let frame_start = self.packets.iter().rposition(|p| p.header.timestamp != ts).map_or(0, |i| i + 1);
            self.packets.drain(..frame_start);
            self.valid = true;
        } else if !self.valid && self.packets.last().is_some_and(|p| p.header.timestamp != ts) {
            // No group yet: hold only the current frame, in case the keyframe is recognised further into it.
            self.packets.clear();
        }
        // A group that is full, or older than any viewer would be given (`before`), is freed until the next
        // keyframe: browsers send keyframes only when asked, so it would otherwise hold `MAX_PACKETS` for nothing.
        let too_old = self.valid && self.packets.first().is_some_and(|k| ts.wrapping_sub(k.header.timestamp) as i32 > MAX_AGE as i32);
        if self.packets.len() >= MAX_PACKETS || too_old {
            self.packets = Vec::new();
            self.valid = false;
        }
        self.packets.push(packet.clone());
    }

    /// The cached packets that precede the packet numbered `seq` in the current group, for a subscriber whose
    /// first live packet is `seq`. None if `seq` is not in the group (no keyframe cached, or `seq` belongs to
    /// an older group), or if the keyframe is more than `MAX_AGE` older than it.
    pub fn before(&self, seq: u16) -> Option<Vec<Packet>> {
        if !self.valid {
            return None;
        }
        let at = self.packets.iter().position(|p| p.header.sequence_number == seq)?;
        let age = self.packets[at].header.timestamp.wrapping_sub(self.packets[0].header.timestamp);
        (age <= MAX_AGE).then(|| self.packets[..at].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u16, ts: u32) -> Packet {
        Packet { header: rtc::rtp::Header { sequence_number: seq, timestamp: ts, ..Default::default() }, ..Default::default() }
    }

    fn seqs(packets: &[Packet]) -> Vec<u16> {
        packets.iter().map(|p| p.header.sequence_number).collect()
    }

    #[test]
    fn nothing_before_the_first_keyframe() {
        let mut gop = GopCache::default();
        gop.push(&packet(1, 100), false);
        assert!(gop.before(1).is_none());
    }

    #[test]
    fn a_new_subscriber_gets_the_keyframe_and_every_packet_since() {
        let mut gop = GopCache::default();
        gop.push(&packet(9, 90), false);
        for (seq, ts, key) in [(10, 100, true), (11, 100, false), (12, 200, false), (13, 300, false)] {
            gop.push(&packet(seq, ts), key);
        }
        assert_eq!(seqs(&gop.before(13).unwrap()), [10, 11, 12]);
        assert_eq!(seqs(&gop.before(10).unwrap()), [] as [u16; 0], "starting on the keyframe itself needs nothing");
        assert!(gop.before(9).is_none(), "a packet from before the keyframe cannot be helped");
        // A newer keyframe starts a new group, and keeps the packets of its own frame that came before it.
        gop.push(&packet(14, 400), false);
        gop.push(&packet(15, 400), true);
        gop.push(&packet(16, 500), false);
        assert_eq!(seqs(&gop.before(16).unwrap()), [14, 15]);
        assert!(gop.before(13).is_none());
    }

    #[test]
    fn a_keyframe_older_than_a_second_is_not_replayed() {
        let mut gop = GopCache::default();
        gop.push(&packet(1, 0), true);
        gop.push(&packet(2, MAX_AGE), false);
        assert_eq!(seqs(&gop.before(2).unwrap()), [1]);
        gop.push(&packet(3, MAX_AGE + 3000), false);
        assert!(gop.before(3).is_none(), "a viewer starting here asks for a fresh keyframe instead");
        assert_eq!(gop.packets.len(), 1, "and the group is freed: it holds only the current frame");
        // A late packet from inside the group is not taken for a jump in time.
        let mut gop = GopCache::default();
        gop.push(&packet(1, 3000), true);
        gop.push(&packet(0, 0), false);
        gop.push(&packet(2, 6000), false);
        assert_eq!(seqs(&gop.before(2).unwrap()), [1, 0]);
    }

    #[test]
    fn parameter_sets_sent_ahead_of_the_first_keyframe_are_kept() {
        let mut gop = GopCache::default();
        gop.push(&packet(1, 100), false); // a delta frame before anything
        gop.push(&packet(2, 200), false); // SPS/PPS, not recognised as the keyframe
        gop.push(&packet(3, 200), true); // the IDR slice
        gop.push(&packet(4, 300), false);
        assert_eq!(seqs(&gop.before(4).unwrap()), [2, 3]);
    }

    #[test]
    fn a_group_longer_than_the_cap_is_dropped_until_the_next_keyframe() {
        let mut gop = GopCache::default();
        gop.push(&packet(0, 0), true);
        for seq in 1..=MAX_PACKETS as u16 {
            gop.push(&packet(seq, u32::from(seq)), false);
        }
        assert!(gop.before(MAX_PACKETS as u16).is_none());
        assert_eq!(gop.packets.len(), 1, "an overflowed group holds no more than the current frame");
        gop.push(&packet(1000, 9), true);
        gop.push(&packet(1001, 10), false);
        assert_eq!(seqs(&gop.before(1001).unwrap()), [1000]);
    }
}
