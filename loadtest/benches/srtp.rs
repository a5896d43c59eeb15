//! SRTP's cost per packet on this CPU, for each protection profile a browser may negotiate and each crypto
//! provider webrtc-rs can use (ring, AWS-LC): the numbers behind the SFU's choice of provider and its wish for
//! AES-GCM. A protect and an unprotect of a 1,200-byte video packet and a 100-byte audio packet, median of 5
//! timed rounds.
//!
//!   cargo bench -p telehealth-loadtest --bench srtp

use bytes::Bytes;
use rtc::crypto::RTCCryptoProvider;
use rtc::crypto::providers::{AwsLcRsProvider, RingProvider};
use rtc::shared::marshal::Marshal;
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;
use std::hint::black_box;
use std::time::Instant;

const ROUNDS: usize = 5;
const ITERATIONS: u32 = 100_000;

fn packet(payload: usize) -> Vec<u8> {
    let p = rtc::rtp::Packet {
        header: rtc::rtp::Header { version: 2, payload_type: 96, sequence_number: 1, timestamp: 1, ssrc: 7, ..Default::default() },
        payload: Bytes::from(vec![0x5a; payload]),
    };
    p.marshal().expect("an RTP packet marshals").to_vec()
}

fn context(provider: &dyn RTCCryptoProvider, profile: ProtectionProfile) -> Context {
    let key = vec![0x11; profile.key_len()];
    let salt = vec![0x22; profile.salt_len()];
    Context::new(&key, &salt, profile, None, None, provider.crypto()).expect("an SRTP context")
}

/// Median ns per call of `f` over `ROUNDS` rounds.
fn time(mut f: impl FnMut()) -> f64 {
    let mut rounds: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let t0 = Instant::now();
            for _ in 0..ITERATIONS {
                f();
            }
            t0.elapsed().as_nanos() as f64 / f64::from(ITERATIONS)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[ROUNDS / 2]
}

fn main() {
    let providers: [(&str, Box<dyn RTCCryptoProvider>); 2] =
        [("ring", Box::new(RingProvider::new())), ("aws-lc-rs", Box::new(AwsLcRsProvider::new()))];
    let profiles = [
        ("SRTP_AES128_CM_HMAC_SHA1_80", ProtectionProfile::Aes128CmHmacSha1_80),
        ("SRTP_AEAD_AES_128_GCM", ProtectionProfile::AeadAes128Gcm),
        ("SRTP_AEAD_AES_256_GCM", ProtectionProfile::AeadAes256Gcm),
    ];
    println!("| provider | profile | protect 1200 B | unprotect 1200 B | protect 100 B | unprotect 100 B |");
    println!("|---|---|---|---|---|---|");
    for (pname, provider) in &providers {
        for (name, profile) in profiles {
            let mut cells = Vec::new();
            for size in [1200, 100] {
                let plain = packet(size);
                let mut tx = context(provider.as_ref(), profile);
                cells.push(time(|| {
                    black_box(tx.encrypt_rtp(black_box(&plain)).expect("protect"));
                }));
                let protected = context(provider.as_ref(), profile).encrypt_rtp(&plain).expect("protect");
                let mut rx = context(provider.as_ref(), profile);
                cells.push(time(|| {
                    black_box(rx.decrypt_rtp(black_box(&protected)).expect("unprotect"));
                }));
            }
            println!(
                "| {pname} | {name} | {:.0} ns | {:.0} ns | {:.0} ns | {:.0} ns |",
                cells[0], cells[1], cells[2], cells[3]
            );
        }
    }
}
