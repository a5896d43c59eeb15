//! Synthetic, codec-shaped RTP payloads that a receiver can check.
//!
//! VP8 packets start with a payload descriptor (and the first packet of a frame with a VP8 frame tag, a full
//! keyframe header when it is one), Opus packets with a TOC byte, so an SFU that looks for keyframes finds them.
//! Then a body whose every byte derives from the packet's original sequence number, and a 16-byte trailer:
//! magic, the send time (µs on a clock sender and receiver share) and that sequence number. A receiver can then
//! tell a packet that arrived intact from one that was cut, mixed up or corrupted, and how long it took, even
//! after the SFU rewrote its header.

use bytes::{BufMut, Bytes, BytesMut};

const MAGIC: [u8; 4] = *b"THgw";
pub const TRAILER_LEN: usize = 16;
/// Opus TOC: config 31 (CELT fullband, 20 ms), stereo, one frame.
const OPUS_TOC: u8 = 0xfc;
const VIDEO_WIDTH: u16 = 640;
const VIDEO_HEIGHT: u16 = 480;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Opus,
    /// A VP8 packet: whether it starts a frame, and whether that frame is a keyframe.
    Vp8 { frame_start: bool, keyframe: bool },
}

/// Builds a payload of exactly `len` bytes (at least the header and trailer).
pub fn build(buf: &mut BytesMut, shape: Shape, len: usize, seq: u16, sent_us: u64) -> Bytes {
    buf.clear();
    match shape {
        Shape::Opus => buf.put_u8(OPUS_TOC),
        Shape::Vp8 { frame_start: false, .. } => buf.put_u8(0x00),
        Shape::Vp8 { frame_start: true, keyframe } => {
            // Descriptor S=1, PID=0, then the 3-byte frame tag: bit 0 of the first byte is P (0 = keyframe),
            // version 0, show_frame 1.
            buf.put_u8(0x10);
            buf.put_slice(&[if keyframe { 0x10 } else { 0x11 }, 0x00, 0x00]);
            if keyframe {
                buf.put_slice(&[0x9d, 0x01, 0x2a]);
                buf.put_u16_le(VIDEO_WIDTH);
                buf.put_u16_le(VIDEO_HEIGHT);
            }
        }
    }
    let body = len.saturating_sub(buf.len() + TRAILER_LEN);
    let header = buf.len() as u8;
    buf.extend((0..body).map(|i| filler(seq, header, i)));
    buf.put_slice(&MAGIC);
    buf.put_u64(sent_us);
    buf.put_u16(seq);
    buf.put_u16(body as u16);
    buf.split().freeze()
}

fn filler(seq: u16, header: u8, i: usize) -> u8 {
    (seq as u8) ^ (seq >> 8) as u8 ^ (i as u8).wrapping_mul(31) ^ header
}

/// What a received payload says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Intact: the original sequence number and the send time.
    Intact { seq: u16, sent_us: u64 },
    /// Not one of ours (no trailer).
    Foreign,
    /// Ours, but cut or altered.
    Corrupt,
}

pub fn check(payload: &[u8]) -> Check {
    let Some(trailer_at) = payload.len().checked_sub(TRAILER_LEN) else { return Check::Foreign };
    let t = &payload[trailer_at..];
    if t[..4] != MAGIC {
        return Check::Foreign;
    }
    let sent_us = u64::from_be_bytes(t[4..12].try_into().unwrap_or_default());
    let seq = u16::from_be_bytes([t[12], t[13]]);
    let body = usize::from(u16::from_be_bytes([t[14], t[15]]));
    let Some(header) = trailer_at.checked_sub(body) else { return Check::Corrupt };
    let intact = payload[header..trailer_at].iter().enumerate().all(|(i, &b)| b == filler(seq, header as u8, i));
    if intact { Check::Intact { seq, sent_us } } else { Check::Corrupt }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_checks_intact_and_any_flipped_byte_is_caught() {
        let mut buf = BytesMut::new();
        for shape in [Shape::Opus, Shape::Vp8 { frame_start: true, keyframe: true }, Shape::Vp8 { frame_start: false, keyframe: false }] {
            let p = build(&mut buf, shape, 1200, 0xBEEF, 123_456);
            assert_eq!(p.len(), 1200);
            assert_eq!(check(&p), Check::Intact { seq: 0xBEEF, sent_us: 123_456 });
            for at in [40, 700, 1183, 1190, 1197, 1199] {
                let mut bad = p.to_vec();
                bad[at] ^= 0x01;
                assert_ne!(check(&bad), Check::Intact { seq: 0xBEEF, sent_us: 123_456 }, "flip at {at} unnoticed");
            }
            assert_eq!(check(&p[..p.len() - 1]), Check::Foreign);
        }
    }

    #[test]
    fn a_vp8_keyframe_is_recognised_as_one() {
        let mut buf = BytesMut::new();
        let key = build(&mut buf, Shape::Vp8 { frame_start: true, keyframe: true }, 300, 1, 0);
        let delta = build(&mut buf, Shape::Vp8 { frame_start: true, keyframe: false }, 300, 2, 0);
        assert_eq!(key[1] & 0x01, 0);
        assert_eq!(delta[1] & 0x01, 1);
    }
}
