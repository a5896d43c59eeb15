//! What the SFU and its users exchange about a peer connection: its events, a published track, its errors. Kept
//! apart from the `Sfu` handle so the shards (below it) and the handle (above them) both use it.

use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};
use signaling::IceCandidate;
use std::sync::Arc;

/// What a peer connection reports to whoever owns it.
#[derive(Clone)]
pub enum PeerEvent {
    /// A local ICE candidate to trickle to the client.
    Candidate(IceCandidate),
    /// The client started publishing a track.
    TrackPublished(Arc<PublishedTrack>),
    /// A published track ended (renegotiated away, or the connection closed).
    TrackEnded(String),
    Connected,
    /// ICE/DTLS failed, or the connection's shard stopped; the client has to rejoin.
    Failed,
}

/// A track someone publishes, ready to be subscribed to by others in the same room.
#[derive(Debug)]
pub struct PublishedTrack {
    /// Unique within the SFU: `<publisher>-<kind>-<n>`.
    pub id: String,
    /// The publisher's participant id; subscribers see it as the MediaStream id.
    pub publisher: String,
    pub kind: RtpCodecKind,
    pub codec: RTCRtpCodec,
    /// The shard forwarding it (the room's).
    pub shard: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("invalid session description: {0}")]
    Sdp(String),
    #[error("invalid ICE candidate: {0}")]
    Candidate(String),
    #[error("media engine: {0}")]
    Engine(String),
    #[error("the peer connection is closed")]
    Closed,
    #[error("the media shard stopped")]
    ShardDown,
}

impl PeerError {
    pub(crate) fn sdp(e: impl std::fmt::Display) -> Self {
        Self::Sdp(e.to_string())
    }
    pub(crate) fn candidate(e: impl std::fmt::Display) -> Self {
        Self::Candidate(e.to_string())
    }
    pub(crate) fn engine(e: impl std::fmt::Display) -> Self {
        Self::Engine(e.to_string())
    }
}

