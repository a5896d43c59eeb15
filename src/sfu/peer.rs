//! One participant's peer connection: the tracks they publish and the ones they receive.
//!
//! A `Peer` never decides *when* to negotiate; the room does. It only turns SDP and candidates into
//! webrtc-rs calls and reports what happened on the connection as `PeerEvent`s.

use super::keyframe::KeyframeReason;
use super::stats::SfuStats;
use super::track::{Negotiated, PublishedTrack, Subscription};
use signaling::IceCandidate;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use tokio::sync::{Mutex, mpsc, watch};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCIceCandidateInit, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription,
};

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
    /// ICE/DTLS failed; the client has to rejoin.
    Failed,
}

/// A webrtc-rs candidate as the signaling protocol carries it.
pub fn candidate_from_init(init: RTCIceCandidateInit) -> IceCandidate {
    IceCandidate {
        candidate: init.candidate,
        sdp_mid: init.sdp_mid,
        sdp_mline_index: init.sdp_mline_index,
        username_fragment: init.username_fragment,
    }
}

/// A signaled candidate, ready for `add_ice_candidate`.
pub fn candidate_to_init(c: IceCandidate) -> RTCIceCandidateInit {
    RTCIceCandidateInit {
        candidate: c.candidate,
        sdp_mid: c.sdp_mid,
        sdp_mline_index: c.sdp_mline_index,
        username_fragment: c.username_fragment,
        ..Default::default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("invalid session description: {0}")]
    Sdp(String),
    #[error("invalid ICE candidate: {0}")]
    Candidate(String),
    #[error("media engine: {0}")]
    Engine(#[from] webrtc::error::Error),
}

pub struct Peer {
    pub id: String,
    pc: Arc<dyn PeerConnection>,
    subscriptions: Mutex<HashMap<String, (Arc<PublishedTrack>, Subscription)>>,
    /// Server offers applied locally so far; the n-th offer is generation n.
    offers: AtomicU64,
    /// The generation of the last offer the client answered: a subscription added before offer n starts
    /// forwarding once this reaches n, when the client knows the track (packets sent earlier are dropped by
    /// the browser, the first keyframe with them).
    answered: watch::Sender<u64>,
    stats: Arc<SfuStats>,
}

pub(crate) struct Handler {
    pub(crate) participant: String,
    pub(crate) events: mpsc::UnboundedSender<PeerEvent>,
    pub(crate) stats: Arc<SfuStats>,
    pub(crate) track_seq: AtomicU32,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => {
                let _ = self.events.send(PeerEvent::Candidate(candidate_from_init(init)));
            }
            Err(e) => tracing::warn!(error = %e, "could not serialise a local ICE candidate"),
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        tracing::debug!(participant = %self.participant, ?state, "peer connection state");
        let event = match state {
            RTCPeerConnectionState::Connected => PeerEvent::Connected,
            RTCPeerConnectionState::Failed => PeerEvent::Failed,
            _ => return,
        };
        let _ = self.events.send(event);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let kind = track.kind().await;
        let n = self.track_seq.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{}-{}", self.participant, kind, n);
        let events = self.events.clone();
        let ended = move |id: String| {
            let _ = events.send(PeerEvent::TrackEnded(id));
        };
        let (participant, events, stats) = (self.participant.clone(), self.events.clone(), Arc::clone(&self.stats));
        // Spawned: this runs inside webrtc-rs's driver task, and starting the track may have to wait for the
        // driver to read more packets (see `track::coding`).
        tokio::spawn(async move {
            match PublishedTrack::start(id, participant.clone(), track, stats, ended).await {
                Some(published) => {
                    tracing::debug!(%participant, track = %published.id, codec = %published.codec.mime_type, "track published");
                    let _ = events.send(PeerEvent::TrackPublished(published));
                }
                None => tracing::warn!(%participant, "remote track without SSRC or codec ignored"),
            }
        });
    }
}

impl Peer {
    pub(crate) fn new(id: String, pc: Arc<dyn PeerConnection>, stats: Arc<SfuStats>) -> Self {
        stats.peer_connections.fetch_add(1, Ordering::Relaxed);
        let answered = watch::Sender::new(0);
        Self { id, pc, subscriptions: Mutex::new(HashMap::new()), offers: AtomicU64::new(0), answered, stats }
    }

    /// Applies the client's offer and returns our answer.
    pub async fn handle_offer(&self, sdp: String) -> Result<String, PeerError> {
        let offer = RTCSessionDescription::offer(sdp).map_err(|e| PeerError::Sdp(e.to_string()))?;
        self.pc.set_remote_description(offer).await.map_err(|e| PeerError::Sdp(e.to_string()))?;
        let answer = self.pc.create_answer(None).await?;
        let sdp = answer.sdp.clone();
        self.pc.set_local_description(answer).await?;
        Ok(sdp)
    }

    /// Creates a server offer (renegotiation) and applies it locally.
    pub async fn create_offer(&self) -> Result<String, PeerError> {
        let offer = self.pc.create_offer(None).await?;
        let sdp = offer.sdp.clone();
        self.pc.set_local_description(offer).await?;
        self.offers.fetch_add(1, Ordering::SeqCst);
        Ok(sdp)
    }

    /// Applies the client's answer to our offer (the latest one: the room has one offer out at a time).
    pub async fn handle_answer(&self, sdp: String) -> Result<(), PeerError> {
        let answer = RTCSessionDescription::answer(sdp).map_err(|e| PeerError::Sdp(e.to_string()))?;
        self.pc.set_remote_description(answer).await.map_err(|e| PeerError::Sdp(e.to_string()))?;
        self.answered.send_replace(self.offers.load(Ordering::SeqCst));
        Ok(())
    }

    pub async fn add_candidate(&self, c: IceCandidate) -> Result<(), PeerError> {
        self.pc.add_ice_candidate(candidate_to_init(c)).await.map_err(|e| PeerError::Candidate(e.to_string()))
    }

    /// Adds a local track forwarding `published` to this peer. The caller renegotiates afterwards; forwarding
    /// starts once the client has answered that offer.
    /// Returns false if already subscribed.
    pub async fn subscribe(&self, published: Arc<PublishedTrack>) -> Result<bool, PeerError> {
        let mut subs = self.subscriptions.lock().await;
        if subs.contains_key(&published.id) {
            return Ok(false);
        }
        let local = Subscription::local_track(&published);
        let sender = self.pc.add_track(Arc::clone(&local) as Arc<dyn TrackLocal>).await?;
        let negotiated = Negotiated { answered: self.answered.subscribe(), needs: self.offers.load(Ordering::SeqCst) + 1 };
        let sub = Subscription::start(Arc::clone(&published), local, sender, negotiated);
        subs.insert(published.id.clone(), (published, sub));
        Ok(true)
    }

    /// Stops forwarding a track and removes it from the connection. Returns false if not subscribed.
    pub async fn unsubscribe(&self, track_id: &str) -> Result<bool, PeerError> {
        let Some((_, sub)) = self.subscriptions.lock().await.remove(track_id) else {
            return Ok(false);
        };
        sub.stop();
        self.pc.remove_track(&sub.sender).await?;
        Ok(true)
    }

    /// Ids of the tracks this peer receives.
    pub async fn subscribed_track_ids(&self) -> Vec<String> {
        self.subscriptions.lock().await.keys().cloned().collect()
    }

    /// Asks every publisher this peer watches for a keyframe.
    pub async fn request_keyframes(&self) {
        let published: Vec<_> = self.subscriptions.lock().await.values().map(|(p, _)| Arc::clone(p)).collect();
        for p in published {
            p.request_keyframe(KeyframeReason::ViewerRequest).await;
        }
    }

    pub async fn close(&self) {
        self.subscriptions.lock().await.clear();
        if let Err(e) = self.pc.close().await {
            tracing::debug!(error = %e, "closing peer connection");
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stats.peer_connections.fetch_sub(1, Ordering::Relaxed);
    }
}
