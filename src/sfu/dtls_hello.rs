//! The SRTP protection profiles in a DTLS handshake, read from the plaintext hello messages as they pass through
//! the shard: what the client offered (ClientHello) and what was chosen (ServerHello). webrtc-rs negotiates the
//! profile without reporting it, and `/metrics` counts connections per profile: the cipher is a large part of a
//! forwarded packet's cost (AES-GCM is one pass; AES-CM needs a second, HMAC-SHA1, over every packet).
//!
//! Only what is needed is parsed: the first record of a datagram, a handshake message that is not fragmented,
//! and its `use_srtp` extension (RFC 5764 §4.1.1). Anything else yields None.

/// RFC 5764 / RFC 7714 profile numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpProfile {
    Aes128CmSha1_80,
    Aes128CmSha1_32,
    AeadAes128Gcm,
    AeadAes256Gcm,
    Other(u16),
}

impl SrtpProfile {
    fn from_u16(v: u16) -> Self {
        match v {
            0x0001 => Self::Aes128CmSha1_80,
            0x0002 => Self::Aes128CmSha1_32,
            0x0007 => Self::AeadAes128Gcm,
            0x0008 => Self::AeadAes256Gcm,
            v => Self::Other(v),
        }
    }

    /// The IANA name, as `/metrics` labels it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Aes128CmSha1_80 => "SRTP_AES128_CM_HMAC_SHA1_80",
            Self::Aes128CmSha1_32 => "SRTP_AES128_CM_HMAC_SHA1_32",
            Self::AeadAes128Gcm => "SRTP_AEAD_AES_128_GCM",
            Self::AeadAes256Gcm => "SRTP_AEAD_AES_256_GCM",
            Self::Other(_) => "other",
        }
    }
}

const CONTENT_HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const SERVER_HELLO: u8 = 2;
const EXT_USE_SRTP: u16 = 14;

/// A cursor over a byte slice whose reads fail (None) instead of panicking past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3).map(|b| usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
    /// A vector with a `len_bytes`-byte length prefix.
    fn vec(&mut self, len_bytes: usize) -> Option<&'a [u8]> {
        let n = match len_bytes {
            1 => usize::from(self.u8()?),
            _ => usize::from(self.u16()?),
        };
        self.take(n)
    }
}

/// The body of the datagram's first record if it is an unfragmented handshake message of type `want`.
fn handshake_body(d: &[u8], want: u8) -> Option<&[u8]> {
    let mut r = Reader(d);
    if r.u8()? != CONTENT_HANDSHAKE {
        return None;
    }
    r.take(2 + 2 + 6)?; // version, epoch, sequence number
    let mut record = Reader(r.vec(2)?);
    if record.u8()? != want {
        return None;
    }
    let length = record.u24()?;
    record.take(2)?; // message_seq
    let (offset, fragment) = (record.u24()?, record.u24()?);
    if offset != 0 || fragment != length {
        return None;
    }
    record.take(length)
}

/// The `use_srtp` profiles in an extensions block.
fn srtp_profiles(mut extensions: Reader<'_>) -> Option<Vec<SrtpProfile>> {
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vec(2)?;
        if kind == EXT_USE_SRTP {
            let mut list = Reader(Reader(data).vec(2)?);
            let mut out = Vec::new();
            while let Some(p) = list.u16() {
                out.push(SrtpProfile::from_u16(p));
            }
            return Some(out);
        }
    }
    None
}

/// The profiles a client offers, in its order of preference, if `d` is a ClientHello.
pub fn client_hello_profiles(d: &[u8]) -> Option<Vec<SrtpProfile>> {
    let mut r = Reader(handshake_body(d, CLIENT_HELLO)?);
    r.take(2 + 32)?; // version, random
    r.vec(1)?; // session id
    r.vec(1)?; // cookie (DTLS)
    r.vec(2)?; // cipher suites
    r.vec(1)?; // compression methods
    srtp_profiles(Reader(r.vec(2)?))
}

/// The profile chosen, if `d` starts with a ServerHello.
pub fn server_hello_profile(d: &[u8]) -> Option<SrtpProfile> {
    let mut r = Reader(handshake_body(d, SERVER_HELLO)?);
    r.take(2 + 32)?; // version, random
    r.vec(1)?; // session id
    r.take(2 + 1)?; // cipher suite, compression method
    srtp_profiles(Reader(r.vec(2)?))?.first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vec16(b: &[u8]) -> Vec<u8> {
        let mut v = (b.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(b);
        v
    }

    fn use_srtp(profiles: &[u16]) -> Vec<u8> {
        let list: Vec<u8> = profiles.iter().flat_map(|p| p.to_be_bytes()).collect();
        let mut data = vec16(&list);
        data.push(0); // empty MKI
        let mut ext = EXT_USE_SRTP.to_be_bytes().to_vec();
        ext.extend(vec16(&data));
        ext
    }

    fn record(msg_type: u8, body: &[u8]) -> Vec<u8> {
        let len = body.len() as u32;
        let mut hs = vec![msg_type];
        hs.extend(&len.to_be_bytes()[1..]);
        hs.extend([0, 0]); // message_seq
        hs.extend([0, 0, 0]); // fragment offset
        hs.extend(&len.to_be_bytes()[1..]);
        hs.extend_from_slice(body);
        let mut rec = vec![CONTENT_HANDSHAKE, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1];
        rec.extend(vec16(&hs));
        rec
    }

    fn client_hello(profiles: &[u16]) -> Vec<u8> {
        let mut body = vec![0xfe, 0xfd];
        body.extend([7u8; 32]);
        body.push(0); // session id
        body.push(0); // cookie
        body.extend(vec16(&[0xc0, 0x2b, 0xc0, 0x2f]));
        body.extend([1, 0]); // compression: null
        let mut exts = vec![0x00, 0x17, 0x00, 0x00]; // extended master secret, empty
        exts.extend(use_srtp(profiles));
        body.extend(vec16(&exts));
        record(CLIENT_HELLO, &body)
    }

    fn server_hello(profile: u16) -> Vec<u8> {
        let mut body = vec![0xfe, 0xfd];
        body.extend([9u8; 32]);
        body.push(0);
        body.extend([0xc0, 0x2b, 0x00]);
        body.extend(vec16(&use_srtp(&[profile])));
        let mut d = record(SERVER_HELLO, &body);
        d.extend(record(11, &[0; 40])); // the Certificate that follows in the same flight
        d
    }

    #[test]
    fn the_offer_and_the_choice_are_read_in_order() {
        use SrtpProfile::*;
        assert_eq!(client_hello_profiles(&client_hello(&[0x0008, 0x0007, 0x0001])), Some(vec![AeadAes256Gcm, AeadAes128Gcm, Aes128CmSha1_80]));
        assert_eq!(server_hello_profile(&server_hello(0x0007)), Some(AeadAes128Gcm));
        assert_eq!(server_hello_profile(&server_hello(0x0001)).map(SrtpProfile::name), Some("SRTP_AES128_CM_HMAC_SHA1_80"));
        assert_eq!(client_hello_profiles(&server_hello(7)), None, "a ServerHello is not a ClientHello");
        assert_eq!(server_hello_profile(&client_hello(&[7])), None);
    }

    #[test]
    fn anything_else_or_cut_short_is_none_and_never_panics() {
        let full = client_hello(&[7, 1]);
        for n in 0..full.len() {
            assert_eq!(client_hello_profiles(&full[..n]), None, "cut at {n}");
        }
        assert_eq!(client_hello_profiles(&[0x80, 0x60, 0, 1]), None, "RTP");
        assert_eq!(client_hello_profiles(&[0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42]), None, "STUN");
        let mut fragmented = full.clone();
        fragmented[13 + 9 + 2] = 0x10; // fragment_length differs from length
        assert_eq!(client_hello_profiles(&fragmented), None);
        let mut junk = full;
        for b in junk.iter_mut().skip(13) {
            *b = 0xff;
        }
        assert_eq!(client_hello_profiles(&junk), None);
    }
}
