//! One participant as an actor: owns the peer connection and the negotiation state, and outlives any one socket.
//!
//! Negotiation rule (see the `signaling` crate): the client offers once, for its own media; after that
//! only the server offers. `negotiating` is true while a server offer awaits the client's answer; track
//! changes arriving meanwhile set `renegotiate`, and one more offer goes out when the answer lands. An offer
//! with `restart` replaces the peer connection (the client's failed, or was lost while its socket was down).
//!
//! Sockets come and go (`Attach`, `Disconnect`): while none is attached the actor keeps the peer connection and
//! the tracks, drops what it would have sent, and leaves when the resume window passes. On attach it sends a
//! fresh `joined` (resumed) and repeats what the client may have missed: the outstanding offer and our ICE
//! candidates.

use super::admission::Stay;
use super::{COMMAND_CAPACITY, OUTBOUND_CAPACITY, Outbound, Room};
use crate::ids::AttendeeId;
use crate::sfu::{Peer, PeerEvent, PublishedTrack, Sfu};
use signaling::{ClientMessage, EndReason, ErrorCode, IceCandidate, Participant, ServerMessage};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Candidates a client may send before its offer; more than this is abuse, not trickle ICE.
const MAX_EARLY_CANDIDATES: usize = 64;
/// Our own candidates kept to repeat on resume (a handful per bind address and transport).
const MAX_LOCAL_CANDIDATES: usize = 32;
/// Events a peer connection may queue for its actor (candidates, tracks, state): far more than one produces.
pub(crate) const PEER_EVENT_CAPACITY: usize = 64;
/// How long after a stop the page should wait before reconnecting (the process restarting).
const RESTART_RETRY_AFTER_MS: u64 = 1_000;

pub(crate) enum Command {
    Client(ClientMessage),
    Subscribe(Arc<PublishedTrack>),
    Unsubscribe(String),
    /// Pass a message straight to this participant's socket.
    Notify(ServerMessage),
    End(EndReason),
    /// The server is stopping: tell the client to come back, then leave.
    Restarting,
    /// A new socket for this attendee.
    Attach { epoch: u64, out: mpsc::Sender<Outbound>, audio_muted: bool, video_muted: bool },
    /// The socket `epoch` went away.
    Disconnect { epoch: u64 },
}

/// The room's view of a participant.
pub(crate) struct Member {
    pub(crate) info: Participant,
    pub(crate) seq: u64,
    pub(crate) commands: mpsc::Sender<Command>,
    /// Set when a command had to be dropped because the actor's queue was full: the actor then resynchronises
    /// (a fresh snapshot and its subscriptions) instead of the room queueing without limit.
    resync: Arc<AtomicBool>,
}

impl Member {
    pub(crate) fn new(info: Participant, seq: u64, commands: mpsc::Sender<Command>) -> Self {
        Self { info, seq, commands, resync: Arc::new(AtomicBool::new(false)) }
    }

    pub(crate) fn resync_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.resync)
    }

    /// Queues a command without waiting. When the queue is full, news is replaced by a resync, while an end or a
    /// restart (which must arrive) waits in a task of its own.
    pub(crate) fn send(&self, cmd: Command) {
        match self.commands.try_send(cmd) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(cmd)) => match cmd {
                Command::End(_) | Command::Restarting => {
                    let commands = self.commands.clone();
                    tokio::spawn(async move { commands.send(cmd).await });
                }
                _ => {
                    if !self.resync.swap(true, Ordering::Relaxed) {
                        tracing::warn!(queued = COMMAND_CAPACITY, "participant lagging; it will resynchronise");
                    }
                }
            },
        }
    }
}

/// What a new actor starts with.
pub(crate) struct ActorParts {
    pub(crate) room: Arc<Room>,
    pub(crate) sfu: Arc<Sfu>,
    pub(crate) me: AttendeeId,
    pub(crate) seq: u64,
    pub(crate) epoch: u64,
    pub(crate) out: mpsc::Sender<Outbound>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) resync: Arc<AtomicBool>,
    pub(crate) stay: Option<Stay>,
    pub(crate) resume_window: Duration,
    pub(crate) stall_timeout: Duration,
}

pub(crate) struct Actor {
    room: Arc<Room>,
    sfu: Arc<Sfu>,
    me: AttendeeId,
    seq: u64,
    /// The attached socket (its epoch and its queue), if any.
    socket: Option<(u64, mpsc::Sender<Outbound>)>,
    /// When the participant leaves if no socket attaches (set while detached).
    resume_deadline: Option<Instant>,
    resume_window: Duration,
    /// Since when the socket has been too far behind for news (see `send`).
    lagging_since: Option<Instant>,
    stall_timeout: Duration,
    commands: mpsc::Receiver<Command>,
    resync: Arc<AtomicBool>,
    peer: Option<Arc<Peer>>,
    peer_events: Option<mpsc::Receiver<PeerEvent>>,
    early_candidates: Vec<IceCandidate>,
    /// Our candidates for the current peer connection, repeated on resume.
    local_candidates: Vec<IceCandidate>,
    /// Tracks to subscribe once the client's first offer has been answered.
    pending: Vec<Arc<PublishedTrack>>,
    /// Our offer awaiting the client's answer, repeated on resume.
    offer_sent: Option<String>,
    /// An offer was repeated on resume: the client may answer it twice (its first answer was in flight), and the
    /// one answer too many is not a protocol error.
    offer_repeated: bool,
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
    pub(crate) fn new(p: ActorParts) -> Self {
        Self {
            room: p.room,
            sfu: p.sfu,
            me: p.me,
            seq: p.seq,
            socket: Some((p.epoch, p.out)),
            resume_deadline: None,
            resume_window: p.resume_window,
            lagging_since: None,
            stall_timeout: p.stall_timeout,
            commands: p.commands,
            resync: p.resync,
            peer: None,
            peer_events: None,
            early_candidates: Vec::new(),
            local_candidates: Vec::new(),
            pending: Vec::new(),
            offer_sent: None,
            offer_repeated: false,
            renegotiate: false,
            stay: p.stay,
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
                _ = until(self.resume_deadline) => {
                    tracing::info!(meeting = %self.room.meeting_id, attendee = %self.me, "resume window passed");
                    Flow::Stop
                }
                _ = lag_tick(self.lagging_since) => {
                    self.check_lag();
                    Flow::Continue
                }
            };
            if let Flow::Stop = flow {
                break;
            }
            if self.resync.swap(false, Ordering::Relaxed) {
                self.resynchronise().await;
            }
        }
        tracing::info!(meeting = %self.room.meeting_id, attendee = %self.me, "participant left");
        // Out of the room first, so a join that comes right after is a fresh one and not handed to this ending
        // actor; the room counts it as finishing until its stay is recorded, so a draining server waits for that.
        let _finishing = self.room.finishing();
        self.room.leave(self.me, self.seq);
        if let Some(stay) = self.stay.take() {
            stay.end().await;
        }
        if let Some(peer) = self.peer.take() {
            peer.close().await;
        }
    }

    /// Queues a message for the socket. Without a socket it is dropped (a resume sends a fresh snapshot).
    ///
    /// A socket that falls behind is skipped ahead: once its queue is half full, news (media states, arrivals,
    /// counts, pongs) is dropped and a snapshot follows when it has caught up; what negotiation needs (offers,
    /// answers, candidates, errors) is still queued. A socket that stays behind for the stall timeout, or whose
    /// queue is full even so, is not reading: it is detached, and its client will reconnect.
    fn send(&mut self, msg: ServerMessage) {
        let Some((epoch, out)) = &self.socket else { return };
        let epoch = *epoch;
        if is_news(&msg) && (self.lagging_since.is_some() || out.capacity() < OUTBOUND_CAPACITY / 2) {
            let since = *self.lagging_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.stall_timeout {
                self.stalled(epoch);
            }
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = out.try_send(Outbound::Message(msg)) {
            self.stalled(epoch);
        }
    }

    fn stalled(&mut self, epoch: u64) {
        tracing::info!(meeting = %self.room.meeting_id, attendee = %self.me, "socket not reading; detached");
        self.detach(epoch);
    }

    /// While lagging: a socket that caught up gets the snapshot of what it missed; one that did not, past the
    /// stall timeout, is detached.
    fn check_lag(&mut self) {
        let Some(since) = self.lagging_since else { return };
        let Some((epoch, out)) = &self.socket else {
            self.lagging_since = None;
            return;
        };
        if out.capacity() >= OUTBOUND_CAPACITY * 3 / 4 {
            self.lagging_since = None;
            self.send_snapshot();
        } else if since.elapsed() >= self.stall_timeout {
            let epoch = *epoch;
            self.stalled(epoch);
        }
    }

    fn error(&mut self, code: ErrorCode, message: impl Into<String>) {
        self.send(ServerMessage::error(code, message));
    }

    /// Sends `msg`, then closes the socket.
    fn send_last(&mut self, msg: ServerMessage) {
        self.send(msg);
        if let Some((_, out)) = self.socket.take() {
            let _ = out.try_send(Outbound::Close);
        }
    }

    /// The socket `epoch` is gone (or stalled). The place is kept for the resume window.
    fn detach(&mut self, epoch: u64) {
        if !matches!(self.socket, Some((current, _)) if current == epoch) {
            return; // an older socket, already replaced
        }
        // Dropping our sender ends the socket's relay, which closes it.
        self.socket = None;
        self.lagging_since = None;
        self.resume_deadline = Some(Instant::now() + self.resume_window);
        self.room.set_reconnecting(self.me, true);
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
                self.send_last(ServerMessage::MeetingEnded { reason });
                return Flow::Stop;
            }
            Command::Restarting => {
                self.send_last(ServerMessage::ServerRestarting { retry_after_ms: RESTART_RETRY_AFTER_MS });
                return Flow::Stop;
            }
            Command::Attach { epoch, out, audio_muted, video_muted } => self.attach(epoch, out, audio_muted, video_muted),
            Command::Disconnect { epoch } => {
                self.detach(epoch);
                if self.socket.is_none() && self.resume_window.is_zero() {
                    return Flow::Stop;
                }
            }
        }
        Flow::Continue
    }

    /// A new socket for this participant: it replaces the current one and gets the visit as it stands.
    fn attach(&mut self, epoch: u64, out: mpsc::Sender<Outbound>, audio_muted: bool, video_muted: bool) {
        if self.socket.is_some() {
            self.send_last(ServerMessage::MeetingEnded { reason: EndReason::Replaced });
        }
        let was_away = self.resume_deadline.take().is_some();
        self.socket = Some((epoch, out));
        tracing::info!(meeting = %self.room.meeting_id, attendee = %self.me, "participant resumed");
        self.send_snapshot();
        if was_away {
            self.room.set_reconnecting(self.me, false);
        }
        self.room.set_media_state(self.me, audio_muted, video_muted);
        // What the client may have missed while away. An offer it had already answered is simply answered again.
        if let Some(sdp) = self.offer_sent.clone() {
            self.offer_repeated = true;
            self.send(ServerMessage::Offer { sdp });
        }
        for candidate in self.local_candidates.clone() {
            self.send(ServerMessage::Candidate { candidate });
        }
    }

    /// `joined` (resumed) with the room as it is now.
    fn send_snapshot(&mut self) {
        let (participants, count, role) = self.room.others(self.me);
        self.send(ServerMessage::Joined {
            meeting_id: self.room.meeting_id.to_string(),
            attendee_id: self.me.to_string(),
            role,
            participants,
            count,
            resumed: true,
            ice_servers: self.room.rooms.upgrade().map(|r| r.ice_servers(self.me)).unwrap_or_default(),
        });
    }

    /// After dropped commands: a fresh snapshot, and subscriptions matched to what the room publishes.
    async fn resynchronise(&mut self) {
        self.send_snapshot();
        let Some(peer) = self.peer.clone() else { return };
        let wanted = self.room.published_except(&self.me.to_string());
        let mut changed = false;
        for id in peer.subscribed_track_ids().await {
            if !wanted.iter().any(|t| t.id == id) {
                changed |= peer.unsubscribe(&id).await.unwrap_or(false);
            }
        }
        for t in wanted {
            changed |= peer.subscribe(t).await.unwrap_or(false);
        }
        if changed {
            self.renegotiate().await;
        }
    }

    async fn on_client(&mut self, msg: ClientMessage) -> Flow {
        match msg {
            ClientMessage::Join { .. } => self.error(ErrorCode::Conflict, "already joined"),
            ClientMessage::Offer { sdp, restart } => self.on_offer(sdp, restart).await,
            ClientMessage::Answer { sdp } => self.on_answer(sdp).await,
            ClientMessage::Candidate { candidate: None } => {}
            ClientMessage::Candidate { candidate: Some(c) } => match self.peer.clone() {
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
                self.send_last(ServerMessage::Left);
                return Flow::Stop;
            }
            ClientMessage::Ping { ts } => self.send(ServerMessage::Pong { ts }),
        }
        Flow::Continue
    }

    /// Drops the peer connection and everything it published (a restart, or a failed first negotiation).
    async fn drop_peer(&mut self) {
        if let Some(peer) = self.peer.take() {
            peer.close().await;
        }
        self.peer_events = None;
        self.offer_sent = None;
        self.renegotiate = false;
        self.local_candidates.clear();
        self.room.withdraw(self.me);
    }

    async fn on_offer(&mut self, sdp: String, restart: bool) {
        if restart && self.peer.is_some() {
            self.drop_peer().await;
        } else if self.offer_sent.is_some() {
            // Glare: our offer is outstanding. The protocol says the client answers it first.
            self.error(ErrorCode::Conflict, "a server offer is pending; answer it before offering");
            return;
        }
        let first = self.peer.is_none();
        if first {
            let (tx, rx) = mpsc::channel(PEER_EVENT_CAPACITY);
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
                    self.drop_peer().await;
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
        let Some(peer) = self.peer.clone().filter(|_| self.offer_sent.is_some()) else {
            if !std::mem::take(&mut self.offer_repeated) {
                self.error(ErrorCode::Conflict, "no server offer is pending");
            }
            return;
        };
        if let Err(e) = peer.handle_answer(sdp).await {
            self.error(ErrorCode::UnprocessableEntity, e.to_string());
        }
        self.offer_sent = None;
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
        if self.offer_sent.is_some() {
            self.renegotiate = true;
            return;
        }
        let Some(peer) = self.peer.clone() else { return };
        match peer.create_offer().await {
            Ok(sdp) => {
                self.offer_sent = Some(sdp.clone());
                self.offer_repeated = false;
                self.send(ServerMessage::Offer { sdp });
            }
            Err(e) => tracing::warn!(error = %e, "renegotiation offer failed"),
        }
    }

    async fn on_peer_event(&mut self, ev: PeerEvent) -> Flow {
        match ev {
            PeerEvent::Candidate(candidate) => {
                if self.local_candidates.len() < MAX_LOCAL_CANDIDATES {
                    self.local_candidates.push(candidate.clone());
                }
                self.send(ServerMessage::Candidate { candidate })
            }
            PeerEvent::TrackPublished(track) => self.room.publish(self.me, track),
            PeerEvent::TrackEnded(id) => self.room.unpublish(self.me, &id),
            PeerEvent::Connected => tracing::debug!("media connected"),
            PeerEvent::Failed => self.error(
                ErrorCode::ServiceFailure,
                "the media connection failed; send an offer with restart to reconnect it",
            ),
        }
        Flow::Continue
    }
}

/// The next peer event, or never if there is no peer yet (so `select!` ignores this branch).
async fn next_event(rx: &mut Option<mpsc::Receiver<PeerEvent>>) -> Option<PeerEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// What a snapshot (`joined`, resumed) restates, so it may be dropped for a socket that is behind.
fn is_news(msg: &ServerMessage) -> bool {
    matches!(
        msg,
        ServerMessage::MediaState { .. }
            | ServerMessage::ParticipantJoined { .. }
            | ServerMessage::ParticipantLeft { .. }
            | ServerMessage::ParticipantCount { .. }
            | ServerMessage::ParticipantReconnecting { .. }
            | ServerMessage::ParticipantResumed { .. }
            | ServerMessage::Pong { .. }
    )
}

/// Ticks every 200 ms while the socket is lagging, never otherwise.
async fn lag_tick(lagging_since: Option<Instant>) {
    match lagging_since {
        Some(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        None => std::future::pending().await,
    }
}

/// Resolves at `deadline`, or never without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
