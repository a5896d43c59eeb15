//! ICE candidates: ours (host candidates on a shard's addresses) and the signaling protocol's form of any.

use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit};
use signaling::IceCandidate;
use std::net::SocketAddr;

/// A UDP host candidate on `addr`, for the first (bundled) media section.
pub fn host_candidate(addr: SocketAddr) -> Result<RTCIceCandidateInit, rtc::shared::error::Error> {
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()?;
    let mut init = RTCIceCandidate::from(&candidate).to_json()?;
    init.sdp_mid = Some("0".to_owned());
    init.sdp_mline_index = Some(0);
    Ok(init)
}

/// A webrtc-rs candidate as the signaling protocol carries it.
pub fn candidate_to_signal(init: RTCIceCandidateInit) -> IceCandidate {
    IceCandidate {
        candidate: init.candidate,
        sdp_mid: init.sdp_mid,
        sdp_mline_index: init.sdp_mline_index,
        username_fragment: init.username_fragment,
    }
}

/// A signaled candidate, ready for webrtc-rs.
pub fn candidate_from_signal(c: IceCandidate) -> RTCIceCandidateInit {
    RTCIceCandidateInit {
        candidate: c.candidate,
        sdp_mid: c.sdp_mid,
        sdp_mline_index: c.sdp_mline_index,
        username_fragment: c.username_fragment,
        ..Default::default()
    }
}
