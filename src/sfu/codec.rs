//! Just enough of the video payload formats to tell a keyframe from a delta frame, so a new subscriber's
//! keyframe request can be repeated until one has actually reached it.
//!
//! Why: the first keyframe request for a new subscriber often races the publisher's encoder (a browser that
//! just started sending ignores a request that comes right after its own first keyframe), and without a
//! keyframe the viewer shows nothing until its decoder asks again, a second or more later.

use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters};

/// Tells whether one RTP packet's payload starts a keyframe.
pub type KeyframeParser = fn(&[u8]) -> bool;

/// The parser for `mime_type`, looked up once per track rather than per packet. None for codecs not parsed
/// here (VP9, AV1, audio): the caller then cannot tell and should not insist.
pub fn keyframe_parser(mime_type: &str) -> Option<KeyframeParser> {
    if mime_type.eq_ignore_ascii_case("video/VP8") {
        Some(vp8_keyframe)
    } else if mime_type.eq_ignore_ascii_case("video/H264") {
        Some(h264_keyframe)
    } else {
        None
    }
}

/// Whether `payload` (one RTP packet's payload) starts a keyframe; None if the codec is not parsed here.
/// The payload type the subscriber's leg negotiated for the publisher's codec.
pub fn negotiated_payload_type(codecs: &[RTCRtpCodecParameters], codec: &RTCRtpCodec) -> Option<u8> {
    let same_mime = |c: &&RTCRtpCodecParameters| c.rtp_codec.mime_type.eq_ignore_ascii_case(&codec.mime_type);
    codecs
        .iter()
        .filter(same_mime)
        .find(|c| c.rtp_codec.sdp_fmtp_line == codec.sdp_fmtp_line)
        .or_else(|| codecs.iter().find(same_mime))
        .map(|c| c.payload_type)
}

#[cfg(test)]
fn is_keyframe(mime_type: &str, payload: &[u8]) -> Option<bool> {
    keyframe_parser(mime_type).map(|starts| starts(payload))
}

/// RFC 7741: a payload descriptor, then (at the start of partition 0) the VP8 frame tag whose lowest bit is 0
/// for a keyframe.
fn vp8_keyframe(p: &[u8]) -> bool {
    let Some(&first) = p.first() else { return false };
    let (extended, start, partition) = (first & 0x80 != 0, first & 0x10 != 0, first & 0x07);
    if !start || partition != 0 {
        return false;
    }
    let mut i = 1;
    if extended {
        let Some(&x) = p.get(i) else { return false };
        i += 1;
        if x & 0x80 != 0 {
            // PictureID: 15 bits when its M bit is set, else 7.
            let Some(&pid) = p.get(i) else { return false };
            i += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // TID / KEYIDX
        }
    }
    p.get(i).is_some_and(|tag| tag & 0x01 == 0)
}

/// RFC 6184: an IDR slice (NAL type 5) alone, inside a STAP-A aggregate, or starting an FU-A fragment.
fn h264_keyframe(p: &[u8]) -> bool {
    const IDR: u8 = 5;
    let Some(&header) = p.first() else { return false };
    match header & 0x1F {
        IDR => true,
        24 => {
            // STAP-A: (16-bit size, NAL unit)*
            let mut i = 1;
            while i + 2 < p.len() {
                let size = usize::from(u16::from_be_bytes([p[i], p[i + 1]]));
                if p[i + 2] & 0x1F == IDR {
                    return true;
                }
                i += 2 + size;
            }
            false
        }
        28 => p.get(1).is_some_and(|fu| fu & 0x80 != 0 && fu & 0x1F == IDR),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(mime: &str, fmtp: &str, pt: u8) -> RTCRtpCodecParameters {
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec { mime_type: mime.into(), clock_rate: 90000, sdp_fmtp_line: fmtp.into(), ..Default::default() },
            payload_type: pt,
        }
    }

    #[test]
    fn vp8() {
        // Minimal descriptor (S=1, PID=0), then a keyframe tag (P bit 0) / an interframe tag (P bit 1).
        assert_eq!(is_keyframe("video/VP8", &[0x10, 0x90, 0x01, 0x00]), Some(true));
        assert_eq!(is_keyframe("video/VP8", &[0x10, 0x91, 0x01, 0x00]), Some(false));
        // Extended: X, I with a 15-bit PictureID, then the tag.
        assert_eq!(is_keyframe("video/vp8", &[0x90, 0x80, 0x81, 0x23, 0x50]), Some(true));
        assert_eq!(is_keyframe("video/VP8", &[0x90, 0x80, 0x81, 0x23, 0x51]), Some(false));
        // Extended with I (7-bit), L and T: three more bytes before the tag.
        assert_eq!(is_keyframe("video/VP8", &[0x90, 0xE0, 0x05, 0x07, 0x20, 0x00]), Some(true));
        // Not the start of partition 0, empty, truncated.
        assert_eq!(is_keyframe("video/VP8", &[0x00, 0x00]), Some(false));
        assert_eq!(is_keyframe("video/VP8", &[]), Some(false));
        assert_eq!(is_keyframe("video/VP8", &[0x90, 0x80]), Some(false));
    }

    #[test]
    fn h264() {
        assert_eq!(is_keyframe("video/H264", &[0x65, 0x88]), Some(true)); // IDR slice
        assert_eq!(is_keyframe("video/H264", &[0x41, 0x9a]), Some(false)); // non-IDR slice
        // STAP-A holding SPS (7), PPS (8) and an IDR.
        let stap = [0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce, 0x00, 0x02, 0x65, 0x88];
        assert_eq!(is_keyframe("video/H264", &stap), Some(true));
        assert_eq!(is_keyframe("video/H264", &stap[..9]), Some(false));
        // FU-A: start of an IDR, middle of an IDR, start of a non-IDR.
        assert_eq!(is_keyframe("video/H264", &[0x7c, 0x85, 0x00]), Some(true));
        assert_eq!(is_keyframe("video/H264", &[0x7c, 0x05, 0x00]), Some(false));
        assert_eq!(is_keyframe("video/H264", &[0x7c, 0x81, 0x00]), Some(false));
    }

    #[test]
    fn other_codecs_are_unknown() {
        assert_eq!(is_keyframe("video/VP9", &[0x00]), None);
        assert_eq!(is_keyframe("audio/opus", &[0x00]), None);
    }

    #[test]
    fn payload_type_follows_the_subscriber_leg_and_prefers_the_same_fmtp() {
        let leg = [codec("video/VP8", "", 96), codec("video/H264", "packetization-mode=0", 127), codec("video/H264", "packetization-mode=1", 102)];
        let h264 = codec("video/h264", "packetization-mode=1", 109).rtp_codec;
        assert_eq!(negotiated_payload_type(&leg, &h264), Some(102));
        let vp8 = codec("video/VP8", "", 120).rtp_codec;
        assert_eq!(negotiated_payload_type(&leg, &vp8), Some(96));
        let av1 = codec("video/AV1", "", 45).rtp_codec;
        assert_eq!(negotiated_payload_type(&leg, &av1), None);
    }

}
