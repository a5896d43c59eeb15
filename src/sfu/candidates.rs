//! ICE candidates: ours (UDP and passive TCP host candidates on a shard's addresses, server-reflexive ones) and
//! the signaling protocol's form of any.

use rtc::ice::candidate::candidate_server_reflexive::CandidateServerReflexiveConfig;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit};
use signaling::IceCandidate;
use std::net::SocketAddr;

/// A UDP host candidate on `addr`, for the first (bundled) media section.
pub fn host_candidate(addr: SocketAddr) -> Result<RTCIceCandidateInit, rtc::shared::error::Error> {
    host(addr, "udp", rtc::ice::tcp_type::TcpType::Unspecified)
}

/// A passive ICE-TCP host candidate on `addr` (RFC 6544): the browser connects to it.
pub fn tcp_passive_candidate(addr: SocketAddr) -> Result<RTCIceCandidateInit, rtc::shared::error::Error> {
    host(addr, "tcp", rtc::ice::tcp_type::TcpType::Passive)
}

/// A host candidate on `addr` over `network` ("udp" or "tcp"), bundled.
fn host(addr: SocketAddr, network: &str, tcp_type: rtc::ice::tcp_type::TcpType) -> Result<RTCIceCandidateInit, rtc::shared::error::Error> {
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: network.to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        tcp_type,
    }
    .new_candidate_host()?;
    bundled(RTCIceCandidate::from(&candidate).to_json()?)
}

/// A UDP server-reflexive candidate: `seen` is the address a STUN server saw for the local socket `base`.
pub fn srflx_candidate(seen: SocketAddr, base: SocketAddr) -> Result<RTCIceCandidateInit, rtc::shared::error::Error> {
    let candidate = CandidateServerReflexiveConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: seen.ip().to_string(),
            port: seen.port(),
            component: 1,
            ..Default::default()
        },
        rel_addr: base.ip().to_string(),
        rel_port: base.port(),
        url: None,
    }
    .new_candidate_server_reflexive()?;
    bundled(RTCIceCandidate::from(&candidate).to_json()?)
}

/// Marks a candidate as the first (bundled) media section's.
fn bundled(mut init: RTCIceCandidateInit) -> Result<RTCIceCandidateInit, rtc::shared::error::Error> {
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
