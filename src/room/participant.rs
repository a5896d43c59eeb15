//! One participant as an actor: owns the peer connection and the negotiation state.
//!
//! Negotiation rule (see the `signaling` crate): the client offers once, for its own media; after that
//! only the server offers. `negotiating` is true while a server offer awaits the client's answer; track
//! changes arriving meanwhile set `renegotiate`, and one more offer goes out when the answer lands.

use super::admission::Stay;
use super::{Outbound, Room};
use crate::ids::AttendeeId;
use crate::sfu::{Peer, PeerEvent, PublishedTrack, Sfu};
use signaling::{ClientMessage, EndReason, ErrorCode, IceCandidate, Participant, ServerMessage};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Candidates a client may send before its offer; more than this is abuse, not trickle ICE.
const MAX_EARLY_CANDIDATES: usize = 64;

pub(crate) enum Command {
    Client(ClientMessage),
    Subscribe(Arc<PublishedTrack>),
    Unsubscribe(String),
    /// Pass a message straight to this participant's socket.
    Notify(ServerMessage),
    End(EndReason),
    /// The socket went away.
    Disconnect,
}

/// The room's view of a participant.
pub(crate) struct Member {
    pub(crate) info: Participant,
    pub(crate) seq: u64,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
}

pub(crate) struct Actor {
    room: Arc<Room>,
    sfu: Arc<Sfu>,
    me: AttendeeId,
    seq: u64,
    out: mpsc::UnboundedSender<Outbound>,
    commands: mpsc::UnboundedReceiver<Command>,
    peer: Option<Arc<Peer>>,
    peer_events: Option<mpsc::UnboundedReceiver<PeerEvent>>,
    early_candidates: Vec<IceCandidate>,
    /// Tracks to subscribe once the client's first offer has been answered.
    pending: Vec<Arc<PublishedTrack>>,
    negotiating: bool,
    renegotiate: bool,
    /// Recorded (usage and audit) until the participant leaves the room.
    stay: Option<Stay>,
}

pub(crate) fn spawn(actor: Actor) {
    tokio::spawn(actor.run());
}

enum Flow {
    Continue,
    Stop,
}

impl Actor {
    pub(crate) fn new(
        room: Arc<Room>,
        sfu: Arc<Sfu>,
        me: AttendeeId,
        seq: u64,
        out: mpsc::UnboundedSender<Outbound>,
        commands: mpsc::UnboundedReceiver<Command>,
        stay: Option<Stay>,
    ) -> Self {
        Self {
            room,
            sfu,
            me,
            seq,
            out,
            commands,
            peer: None,
            peer_events: None,
            early_candidates: Vec::new(),
            pending: Vec::new(),
            negotiating: false,
            renegotiate: false,
            stay,
        }
    }

    async fn run(mut self) {
        loop {
            let flow = tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd).await,
                    None => Flow::Stop,
                },
                ev = next_event(&mut self.peer_events) => match ev {
                    Some(ev) => self.on_peer_event(ev).await,
                    // The connection's shard stopped: as good as a failed connection.
                    None => {
                        self.peer_events = None;
                        self.on_peer_event(PeerEvent::Failed).await
                    }
                },
            };
            if let Flow::Stop = flow {
                break;
            }
        }
        tracing::info!(meeting = %self.room.meeting_id, attendee = %self.me, "participant left");
        // The leave is written before the member goes, so a draining server (which waits for rooms to empty)
        // does not stop before the stay's end is recorded.
        if let Some(stay) = self.stay.take() {
            stay.end().await;
        }
        self.room.leave(self.me, self.seq);
        if let Some(peer) = self.peer.take() {
            peer.close().await;
        }
    }

    fn send(&self, msg: ServerMessage) {
        let _ = self.out.send(Outbound::Message(msg));
    }

    fn error(&self, code: ErrorCode, message: impl Into<String>) {
        self.send(ServerMessage::error(code, message));
    }

    async fn on_command(&mut self, cmd: Command) -> Flow {
        match cmd {
            Command::Client(msg) => return self.on_client(msg).await,
            Command::Notify(msg) => self.send(msg),
            Command::Subscribe(track) => self.subscribe(vec![track]).await,
            Command::Unsubscribe(id) => {
                self.pending.retain(|t| t.id != id);
                if let Some(peer) = &self.peer {
                    match peer.unsubscribe(&id).await {
                        Ok(true) => self.renegotiate().await,
                        Ok(false) => {}
                        Err(e) => tracing::warn!(error = %e, "unsubscribe failed"),
                    }
                }
            }
            Command::End(reason) => {
                self.send(ServerMessage::MeetingEnded { reason });
                let _ = self.out.send(Outbound::Close);
                return Flow::Stop;
            }
            Command::Disconnect => return Flow::Stop,
        }
        Flow::Continue
    }

    async fn on_client(&mut self, msg: ClientMessage) -> Flow {
        match msg {
            ClientMessage::Join { .. } => self.error(ErrorCode::Conflict, "already joined"),
            ClientMessage::Offer { sdp } => self.on_offer(sdp).await,
            ClientMessage::Answer { sdp } => self.on_answer(sdp).await,
            ClientMessage::Candidate { candidate: None } => {}
            ClientMessage::Candidate { candidate: Some(c) } => match &self.peer {
                Some(peer) => {
                    if let Err(e) = peer.add_candidate(c).await {
                        self.error(ErrorCode::UnprocessableEntity, e.to_string());
                    }
                }
                None if self.early_candidates.len() < MAX_EARLY_CANDIDATES => self.early_candidates.push(c),
                None => self.error(ErrorCode::Conflict, "too many candidates before an offer"),
            },
            ClientMessage::MediaState { audio_muted, video_muted } => {
                self.room.set_media_state(self.me, audio_muted, video_muted)
            }
            ClientMessage::RequestKeyframe => {
                if let Some(peer) = &self.peer {
                    peer.request_keyframes().await;
                }
            }
            ClientMessage::Leave => {
                self.send(ServerMessage::Left);
                let _ = self.out.send(Outbound::Close);
                return Flow::Stop;
            }
            ClientMessage::Ping { ts } => self.send(ServerMessage::Pong { ts }),
        }
        Flow::Continue
    }

    async fn on_offer(&mut self, sdp: String) {
        if self.negotiating {
            // Glare: our offer is outstanding. The protocol says the client answers it first.
            self.error(ErrorCode::Conflict, "a server offer is pending; answer it before offering");
            return;
        }
        let first = self.peer.is_none();
        if first {
            let (tx, rx) = mpsc::unbounded_channel();
            match self.sfu.create_peer(&self.room.meeting_id.to_string(), self.me.to_string(), tx).await {
                Ok(peer) => {
                    self.peer = Some(peer);
                    self.peer_events = Some(rx);
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not create a peer connection");
                    self.error(ErrorCode::ServiceFailure, "the media server could not start a connection");
                    return;
                }
            }
        }
        let Some(peer) = self.peer.clone() else { return };
        match peer.handle_offer(sdp).await {
            Ok(answer) => self.send(ServerMessage::Answer { sdp: answer }),
            Err(e) => {
                self.error(ErrorCode::UnprocessableEntity, e.to_string());
                if first {
                    // A connection that never negotiated is useless; let the client try a fresh offer.
                    peer.close().await;
                    self.peer = None;
                    self.peer_events = None;
                }
                return;
            }
        }
        for c in std::mem::take(&mut self.early_candidates) {
            if let Err(e) = peer.add_candidate(c).await {
                self.error(ErrorCode::UnprocessableEntity, e.to_string());
            }
        }
        if first {
            let mut tracks = self.room.published_except(&self.me.to_string());
            tracks.append(&mut self.pending);
            self.subscribe(tracks).await;
        }
    }

    async fn on_answer(&mut self, sdp: String) {
        let Some(peer) = self.peer.clone().filter(|_| self.negotiating) else {
            self.error(ErrorCode::Conflict, "no server offer is pending");
            return;
        };
        if let Err(e) = peer.handle_answer(sdp).await {
            self.error(ErrorCode::UnprocessableEntity, e.to_string());
        }
        self.negotiating = false;
        if std::mem::take(&mut self.renegotiate) {
            self.renegotiate().await;
        }
    }

    /// Adds tracks to the peer connection and renegotiates once for all of them.
    async fn subscribe(&mut self, tracks: Vec<Arc<PublishedTrack>>) {
        let Some(peer) = self.peer.clone() else {
            self.pending.extend(tracks);
            return;
        };
        let mut added = false;
        for t in tracks {
            match peer.subscribe(t).await {
                Ok(new) => added |= new,
                Err(e) => tracing::warn!(error = %e, "subscribe failed"),
            }
        }
        if added {
            self.renegotiate().await;
        }
    }

    async fn renegotiate(&mut self) {
        if self.negotiating {
            self.renegotiate = true;
            return;
        }
        let Some(peer) = self.peer.clone() else { return };
        match peer.create_offer().await {
            Ok(sdp) => {
                self.negotiating = true;
                self.send(ServerMessage::Offer { sdp });
            }
            Err(e) => tracing::warn!(error = %e, "renegotiation offer failed"),
        }
    }

    async fn on_peer_event(&mut self, ev: PeerEvent) -> Flow {
        match ev {
            PeerEvent::Candidate(candidate) => self.send(ServerMessage::Candidate { candidate }),
            PeerEvent::TrackPublished(track) => self.room.publish(self.me, track),
            PeerEvent::TrackEnded(id) => self.room.unpublish(self.me, &id),
            PeerEvent::Connected => tracing::debug!("media connected"),
            PeerEvent::Failed => {
                self.error(ErrorCode::ServiceFailure, "the media connection failed; please rejoin")
            }
        }
        Flow::Continue
    }
}

/// The next peer event, or never if there is no peer yet (so `select!` ignores this branch).
async fn next_event(rx: &mut Option<mpsc::UnboundedReceiver<PeerEvent>>) -> Option<PeerEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
