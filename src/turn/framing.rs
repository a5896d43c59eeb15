//! TURN over a byte stream (TCP, TLS): where one message ends. A STUN message is its 20-byte header plus the
//! length the header gives (always a multiple of four); a ChannelData message is its 4-byte header plus its
//! length, padded to a multiple of four on streams (RFC 8656 §12.5). Browsers pad both ways, so the padding is
//! taken off what we read and put onto the ChannelData we write: the TURN engine sees bare messages.
//!
//! Anything else at a frame boundary is garbage: the stream is closed, never resynchronised by guessing.

/// The largest frame we accept: a STUN message or ChannelData carries at most a UDP datagram.
pub const MAX_FRAME: usize = 4 + 65_535 + 3;

/// What the next bytes of a stream hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole message (`len` bytes, padding excluded) after which `consumed` bytes may be dropped.
    Complete { len: usize, consumed: usize },
    /// Not enough bytes yet.
    Partial,
    /// Neither STUN nor ChannelData.
    Garbage,
}

/// Whether `data` starts as ChannelData (channel numbers 0x4000..=0x4FFF; the rest of 0x4000..=0x7FFF is
/// reserved) rather than a STUN message.
pub fn is_channel_data(data: &[u8]) -> bool {
    data.first().is_some_and(|b| (0x40..=0x4F).contains(b))
}

/// Looks at the start of `buf` for one frame.
pub fn next_frame(buf: &[u8]) -> Frame {
    let Some(&first) = buf.first() else { return Frame::Partial };
    // STUN: the top two bits are zero; the length counts the attributes, each padded to four.
    let stun = first >> 6 == 0;
    if !stun && !is_channel_data(buf) {
        return Frame::Garbage;
    }
    if buf.len() < 4 {
        return Frame::Partial;
    }
    let body = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let (len, padded) = match stun {
        true if body % 4 != 0 => return Frame::Garbage,
        true => (20 + body, 20 + body),
        false => (4 + body, (4 + body).next_multiple_of(4)),
    };
    if buf.len() < padded { Frame::Partial } else { Frame::Complete { len, consumed: padded } }
}

/// Appends the zero bytes a ChannelData message needs on a stream.
pub fn pad_for_stream(mut frame: Vec<u8>) -> Vec<u8> {
    if is_channel_data(&frame) {
        frame.resize(frame.len().next_multiple_of(4), 0);
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun(body: usize) -> Vec<u8> {
        let mut m = vec![0x00, 0x01, (body >> 8) as u8, body as u8, 0x21, 0x12, 0xa4, 0x42];
        m.resize(20 + body, 7);
        m
    }

    #[test]
    fn a_stun_message_ends_where_its_header_says() {
        let mut buf = stun(8);
        assert_eq!(next_frame(&buf[..3]), Frame::Partial);
        assert_eq!(next_frame(&buf[..27]), Frame::Partial);
        buf.extend_from_slice(&stun(0));
        assert_eq!(next_frame(&buf), Frame::Complete { len: 28, consumed: 28 });
    }

    #[test]
    fn channel_data_padding_is_skipped_on_read_and_added_on_write() {
        let bare = vec![0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5];
        let padded = pad_for_stream(bare.clone());
        assert_eq!(padded.len(), 12);
        assert_eq!(&padded[..9], &bare[..]);
        assert_eq!(next_frame(&padded[..9]), Frame::Partial, "the padding belongs to the frame");
        assert_eq!(next_frame(&padded), Frame::Complete { len: 9, consumed: 12 });
        // STUN messages are never padded further.
        assert_eq!(pad_for_stream(stun(4)).len(), 24);
    }

    #[test]
    fn garbage_at_a_frame_boundary_is_refused() {
        assert_eq!(next_frame(&[0x50, 0x00, 0, 0]), Frame::Garbage, "reserved channel numbers");
        assert_eq!(next_frame(&[0x80, 0, 0, 0]), Frame::Garbage);
        assert_eq!(next_frame(&[0xC0, 0, 0, 0]), Frame::Garbage);
        assert_eq!(next_frame(&[0x00, 0x01, 0x00, 0x03]), Frame::Garbage, "a STUN length is a multiple of four");
    }
}
