//! Who is in which meeting: join/leave, participant count, mute state, and which published tracks go to
//! whom. Policy only: packets are the SFU's business, sockets the WebSocket handler's.
//!
//! Each participant is a small actor (`participant.rs`) that owns its peer connection and negotiation
//! state, so offers, answers and track changes for one participant are handled strictly in order. The
//! room only routes commands between actors.
//!
//! A participant outlives its socket: when the socket drops, the actor keeps the place, the peer connection and
//! the tracks for the resume window while the others see "reconnecting"; a new socket for the same attendee
//! attaches to the same actor (`joined` with `resumed`). Only when the window passes do the others see them leave.
//!
//! Every queue here is bounded. A socket that cannot take its messages is detached (the client reconnects and
//! gets a fresh snapshot); a member whose command queue is full is marked to resynchronise instead of queueing
//! without limit.

pub mod admission;
mod participant;

use crate::auth::turn::{ice_server, opaque_user};
use crate::config::TurnConfig;
use crate::ids::{AttendeeId, MeetingId, Role};
use crate::sfu::{PublishedTrack, Sfu};
use admission::StayRecorder;
pub use admission::{Admission, Attendance, AttendanceError, JoinRequest, LiveAttendee, Refusal};
use participant::{Command, Member};
use signaling::{ClientMessage, EndReason, IceServer, Participant, ServerMessage};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Chime's limit, kept for compatibility.
pub const MAX_PARTICIPANTS: usize = 250;
/// Messages queued for one socket. A browser reads far faster than a room produces; a socket half this far
/// behind is skipped ahead (news dropped, a snapshot later), and one that stays behind is detached.
pub const OUTBOUND_CAPACITY: usize = 512;
/// Commands queued for one participant's actor (from its socket and from the room).
pub(crate) const COMMAND_CAPACITY: usize = 256;

/// How the rooms behave; `Default` is what a gateway runs with unless configured.
#[derive(Debug, Clone)]
pub struct RoomsConfig {
    /// How long a participant whose socket dropped keeps its place (0: leave at once).
    pub resume_window: Duration,
    /// Participants connected to this server at most (a resumed one does not count twice).
    pub max_participants: Option<usize>,
    /// How long a socket may stay too far behind before it is detached as not reading.
    pub stall_timeout: Duration,
    /// TURN servers for the pages, each participant with its own short-lived credential (`joined`).
    pub turn: Option<TurnConfig>,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self { resume_window: Duration::from_secs(60), max_participants: None, stall_timeout: Duration::from_secs(10), turn: None }
    }
}

/// What the socket side receives for one participant.
#[derive(Debug)]
pub enum Outbound {
    Message(ServerMessage),
    /// Close the socket (after the messages queued before this).
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("the meeting is full ({MAX_PARTICIPANTS} participants)")]
    Full,
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("the server has its maximum number of participants")]
    ServerFull,
}

/// One socket's connection to a participant, held by the WebSocket handler. Dropping it detaches the socket:
/// the participant stays for the resume window.
pub struct Session {
    pub meeting_id: MeetingId,
    pub attendee_id: AttendeeId,
    pub outbound: mpsc::Receiver<Outbound>,
    commands: mpsc::Sender<Command>,
    /// Which socket of this participant this is (a newer one replaces it).
    epoch: u64,
}

impl Session {
    /// Hands a client frame (other than `join`) to the participant. Waits while the participant's queue is full,
    /// so a client that floods the socket is slowed down by TCP rather than buffered for.
    pub async fn handle(&self, msg: ClientMessage) {
        let _ = self.commands.send(Command::Client(msg)).await;
    }

    /// `handle` for a caller that cannot wait (a synchronous driver): false if the queue is full or gone.
    pub fn try_handle(&self, msg: ClientMessage) -> bool {
        self.commands.try_send(Command::Client(msg)).is_ok()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let cmd = Command::Disconnect { epoch: self.epoch };
        if let Err(mpsc::error::TrySendError::Full(cmd)) = self.commands.try_send(cmd) {
            // The participant must hear of it even when busy: otherwise it would never start its resume window.
            let commands = self.commands.clone();
            tokio::spawn(async move { commands.send(cmd).await });
        }
    }
}

pub(crate) struct Room {
    meeting_id: MeetingId,
    members: Mutex<HashMap<AttendeeId, Member>>,
    published: Mutex<Vec<Arc<PublishedTrack>>>,
    rooms: Weak<Rooms>,
}

impl Room {
    fn lock_members(&self) -> std::sync::MutexGuard<'_, HashMap<AttendeeId, Member>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_published(&self) -> std::sync::MutexGuard<'_, Vec<Arc<PublishedTrack>>> {
        self.published.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a command to every member but `except`.
    fn send_others(&self, except: AttendeeId, make: impl Fn() -> Command) {
        for (id, m) in self.lock_members().iter() {
            if *id != except {
                m.send(make());
            }
        }
    }

    /// Sends a command to every member; each actor then acts (and leaves) on its own.
    fn send_all(&self, make: impl Fn() -> Command) {
        for m in self.lock_members().values() {
            m.send(make());
        }
    }

    /// Everyone but `me`, as `joined` lists them, the count, and `me`'s own role.
    pub(crate) fn others(&self, me: AttendeeId) -> (Vec<Participant>, usize, Option<Role>) {
        let members = self.lock_members();
        let others = members.iter().filter(|(id, _)| **id != me).map(|(_, m)| m.info.clone()).collect();
        let role = members.get(&me).and_then(|m| m.info.role);
        (others, members.len(), role)
    }

    /// Marks `me` as reconnecting (or back) and tells the others.
    pub(crate) fn set_reconnecting(&self, me: AttendeeId, reconnecting: bool) {
        if let Some(m) = self.lock_members().get_mut(&me) {
            m.info.reconnecting = reconnecting;
        }
        let attendee_id = me.to_string();
        self.send_others(me, || {
            Command::Notify(match reconnecting {
                true => ServerMessage::ParticipantReconnecting { attendee_id: attendee_id.clone() },
                false => ServerMessage::ParticipantResumed { attendee_id: attendee_id.clone() },
            })
        });
    }

    fn count(&self) -> usize {
        self.lock_members().len()
    }

    /// Tracks published by others, for a participant that just got its peer connection.
    pub(crate) fn published_except(&self, publisher: &str) -> Vec<Arc<PublishedTrack>> {
        self.lock_published().iter().filter(|t| t.publisher != publisher).cloned().collect()
    }

    pub(crate) fn publish(&self, me: AttendeeId, track: Arc<PublishedTrack>) {
        self.lock_published().push(Arc::clone(&track));
        self.send_others(me, || Command::Subscribe(Arc::clone(&track)));
    }

    pub(crate) fn unpublish(&self, me: AttendeeId, track_id: &str) {
        self.lock_published().retain(|t| t.id != track_id);
        self.send_others(me, || Command::Unsubscribe(track_id.to_owned()));
    }

    pub(crate) fn set_media_state(&self, me: AttendeeId, audio_muted: bool, video_muted: bool) {
        if let Some(m) = self.lock_members().get_mut(&me) {
            m.info.audio_muted = audio_muted;
            m.info.video_muted = video_muted;
        }
        let attendee_id = me.to_string();
        self.send_others(me, || {
            Command::Notify(ServerMessage::MediaState { attendee_id: attendee_id.clone(), audio_muted, video_muted })
        });
    }

    /// Counts a participant as finishing (its stay being recorded) while the guard lives.
    pub(crate) fn finishing(&self) -> Option<Finishing> {
        let rooms = self.rooms.upgrade()?;
        rooms.finishing.fetch_add(1, Ordering::SeqCst);
        Some(Finishing(rooms))
    }

    /// Withdraws every track `me` publishes (its peer connection is gone or being replaced).
    pub(crate) fn withdraw(&self, me: AttendeeId) {
        let prefix = me.to_string();
        let mine: Vec<String> =
            self.lock_published().iter().filter(|t| t.publisher == prefix).map(|t| t.id.clone()).collect();
        for id in mine {
            self.unpublish(me, &id);
        }
    }

    /// Removes the member if it is still the actor `seq` (a replaced actor must not remove its successor),
    /// withdraws its tracks and tells everyone else.
    pub(crate) fn leave(&self, me: AttendeeId, seq: u64) {
        let removed = {
            let mut members = self.lock_members();
            match members.get(&me) {
                Some(m) if m.seq == seq => members.remove(&me).is_some(),
                _ => false,
            }
        };
        if !removed {
            return;
        }
        self.withdraw(me);
        if let Some(rooms) = self.rooms.upgrade() {
            rooms.participants.fetch_sub(1, Ordering::Relaxed);
        }
        let prefix = me.to_string();
        let count = self.count();
        self.send_others(me, || Command::Notify(ServerMessage::ParticipantLeft { attendee_id: prefix.clone(), count }));
        self.send_others(me, || Command::Notify(ServerMessage::ParticipantCount { count }));
        if count == 0
            && let Some(rooms) = self.rooms.upgrade()
        {
            rooms.forget_if_empty(self.meeting_id);
        }
    }
}

/// A participant out of its room whose stay is still being recorded.
pub(crate) struct Finishing(Arc<Rooms>);

impl Drop for Finishing {
    fn drop(&mut self) {
        self.0.finishing.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Every live meeting on this server.
pub struct Rooms {
    sfu: Arc<Sfu>,
    config: RoomsConfig,
    rooms: Mutex<HashMap<MeetingId, Arc<Room>>>,
    /// Members across all rooms (kept here so the server-wide cap needs no walk over the rooms).
    participants: AtomicUsize,
    /// Participants gone from their room whose leave is still being written (see `Finishing`).
    finishing: AtomicUsize,
    draining: AtomicBool,
    next_seq: AtomicU64,
    me: Weak<Rooms>,
}

impl Rooms {
    pub fn new(sfu: Arc<Sfu>) -> Arc<Self> {
        Self::with_config(sfu, RoomsConfig::default())
    }

    pub fn with_config(sfu: Arc<Sfu>, config: RoomsConfig) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            sfu,
            config,
            rooms: Mutex::new(HashMap::new()),
            participants: AtomicUsize::new(0),
            finishing: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            next_seq: AtomicU64::new(1),
            me: me.clone(),
        })
    }

    pub fn sfu(&self) -> &Arc<Sfu> {
        &self.sfu
    }

    pub fn config(&self) -> &RoomsConfig {
        &self.config
    }

    /// What `joined` hands `attendee` for its peer connection: the TURN servers with a fresh credential.
    pub(crate) fn ice_servers(&self, attendee: AttendeeId) -> Vec<IceServer> {
        self.config.turn.iter().map(|t| ice_server(t, &opaque_user(&attendee.to_string()))).collect()
    }

    fn lock_rooms(&self) -> std::sync::MutexGuard<'_, HashMap<MeetingId, Arc<Room>>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn forget_if_empty(&self, meeting: MeetingId) {
        let mut rooms = self.lock_rooms();
        if rooms.get(&meeting).is_some_and(|r| r.count() == 0) {
            rooms.remove(&meeting);
        }
    }

    /// Participants in the meeting (including any holding their place while they reconnect).
    pub fn participant_count(&self, meeting: MeetingId) -> usize {
        self.lock_rooms().get(&meeting).map_or(0, |r| r.count())
    }

    /// Meetings with at least one participant connected. (A room can be momentarily empty between being
    /// created for a join and the member being added, or after the last leave and before it is forgotten.)
    pub fn meeting_count(&self) -> usize {
        self.lock_rooms().values().filter(|r| r.count() > 0).count()
    }

    /// Participants connected across all meetings.
    pub fn total_participants(&self) -> usize {
        self.lock_rooms().values().map(|r| r.count()).sum()
    }

    /// Adds a participant (already authenticated by the caller) to the meeting's room, recording no stay and
    /// with no role (a test's direct entry; a client comes in through `Admission`). A second join by the same
    /// attendee takes over the participant (see `enter`).
    pub fn join(
        &self,
        meeting_id: MeetingId,
        attendee_id: AttendeeId,
        name: String,
        audio_muted: bool,
        video_muted: bool,
    ) -> Result<Session, JoinError> {
        self.enter(meeting_id, attendee_id, name, audio_muted, video_muted, None)
    }

    /// `join`, with the stay recorded from entering to leaving when `stay` is given. An attendee already in the
    /// room (reconnecting, or joining from a second window) gets this socket attached to its participant,
    /// which resumes: the previous socket, if still open, is told it was replaced (its role stays as it entered:
    /// an attendee's role never changes). The role comes with the stay: admission knows both.
    pub(crate) fn enter(
        &self,
        meeting_id: MeetingId,
        attendee_id: AttendeeId,
        name: String,
        audio_muted: bool,
        video_muted: bool,
        stay: Option<StayRecorder>,
    ) -> Result<Session, JoinError> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(JoinError::ShuttingDown);
        }
        let room = Arc::clone(self.lock_rooms().entry(meeting_id).or_insert_with(|| {
            Arc::new(Room {
                meeting_id,
                members: Mutex::new(HashMap::new()),
                published: Mutex::new(Vec::new()),
                rooms: self.me.clone(),
            })
        }));
        let epoch = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let (out_tx, out_rx) = mpsc::channel(OUTBOUND_CAPACITY);

        let mut members = room.lock_members();
        if let Some(member) = members.get(&attendee_id) {
            let commands = member.commands.clone();
            let attached = match commands.try_reserve() {
                Ok(permit) => {
                    permit.send(Command::Attach { epoch, out: out_tx.clone(), audio_muted, video_muted });
                    true
                }
                Err(_) => false,
            };
            if attached {
                return Ok(Session { meeting_id, attendee_id, outbound: out_rx, commands, epoch });
            }
            // An actor that cannot take one command is stuck or gone: a fresh one replaces it.
            tracing::warn!(meeting = %meeting_id, attendee = %attendee_id, "participant unresponsive; replacing it");
            let old = members.remove(&attendee_id);
            drop(members);
            if let Some(old) = old {
                old.send(Command::End(EndReason::Replaced));
                self.participants.fetch_sub(1, Ordering::Relaxed);
                room.withdraw(attendee_id);
            }
            members = room.lock_members();
        }
        self.add_member(&room, members, attendee_id, name, audio_muted, video_muted, stay, epoch, out_tx, out_rx)
    }

    /// A new participant: the room's and the server's caps, then `joined` for it and the news for the others.
    #[allow(clippy::too_many_arguments)]
    fn add_member(
        &self,
        room: &Arc<Room>,
        mut members: std::sync::MutexGuard<'_, HashMap<AttendeeId, Member>>,
        attendee_id: AttendeeId,
        name: String,
        audio_muted: bool,
        video_muted: bool,
        stay: Option<StayRecorder>,
        epoch: u64,
        out_tx: mpsc::Sender<Outbound>,
        out_rx: mpsc::Receiver<Outbound>,
    ) -> Result<Session, JoinError> {
        let meeting_id = room.meeting_id;
        if members.len() >= MAX_PARTICIPANTS {
            return Err(JoinError::Full);
        }
        if let Some(max) = self.config.max_participants
            && self.participants.load(Ordering::Relaxed) >= max
        {
            return Err(JoinError::ServerFull);
        }
        self.participants.fetch_add(1, Ordering::Relaxed);
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let role = stay.as_ref().map(StayRecorder::role);
        let info = Participant {
            attendee_id: attendee_id.to_string(),
            name,
            role,
            audio_muted,
            video_muted,
            reconnecting: false,
        };
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_CAPACITY);
        let member = Member::new(info.clone(), seq, cmd_tx.clone());
        let resync = member.resync_flag();
        members.insert(attendee_id, member);
        let others: Vec<Participant> =
            members.iter().filter(|(id, _)| **id != attendee_id).map(|(_, m)| m.info.clone()).collect();
        let count = members.len();
        drop(members);
        // The channel is new and empty: this cannot fail for lack of room.
        let _ = out_tx.try_send(Outbound::Message(ServerMessage::Joined {
            meeting_id: meeting_id.to_string(),
            attendee_id: attendee_id.to_string(),
            role,
            participants: others,
            count,
            resumed: false,
            ice_servers: self.ice_servers(attendee_id),
        }));
        room.send_others(attendee_id, || {
            Command::Notify(ServerMessage::ParticipantJoined { participant: info.clone(), count })
        });
        room.send_others(attendee_id, || Command::Notify(ServerMessage::ParticipantCount { count }));

        let role_text = role.map_or("none", Role::as_str);
        tracing::info!(meeting = %meeting_id, attendee = %attendee_id, role = role_text, "participant joined");
        let stay = stay.map(|s| s.begin(meeting_id, attendee_id));
        participant::spawn(participant::Actor::new(participant::ActorParts {
            room: Arc::clone(room),
            sfu: Arc::clone(&self.sfu),
            me: attendee_id,
            seq,
            epoch,
            out: out_tx,
            commands: cmd_rx,
            resync,
            stay,
            resume_window: self.config.resume_window,
            stall_timeout: self.config.stall_timeout,
        }));
        Ok(Session { meeting_id, attendee_id, outbound: out_rx, commands: cmd_tx, epoch })
    }

    /// Tells everyone in the meeting it has ended and waits (briefly) for them to be gone.
    pub async fn end_meeting(&self, meeting: MeetingId, reason: EndReason) {
        let room = self.lock_rooms().get(&meeting).cloned();
        let Some(room) = room else { return };
        room.send_all(|| Command::End(reason));
        wait_until(Duration::from_secs(2), || room.count() == 0).await;
    }

    /// Shutdown: refuse new joins, tell everyone the server is restarting (their pages come back on their own),
    /// wait (at most `grace`) for rooms to empty.
    pub async fn drain(&self, grace: Duration) {
        self.draining.store(true, Ordering::SeqCst);
        let rooms: Vec<Arc<Room>> = self.lock_rooms().values().cloned().collect();
        for room in &rooms {
            room.send_all(|| Command::Restarting);
        }
        wait_until(grace, || self.total_participants() == 0 && self.finishing.load(Ordering::SeqCst) == 0).await;
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

async fn wait_until(limit: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sfu::SfuConfig;

    /// Reads a session's messages until `done` says so or `limit` passes; returns whether it did.
    async fn read_until(session: &mut Session, limit: Duration, mut done: impl FnMut(&ServerMessage) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while let Ok(Some(out)) = tokio::time::timeout_at(deadline, session.outbound.recv()).await {
            if let Outbound::Message(m) = out
                && done(&m)
            {
                return true;
            }
        }
        false
    }

    /// Bounded queues: a participant whose socket stops taking messages is skipped ahead and then detached,
    /// while the one reading along keeps up with Pat's latest state, and nothing is queued without limit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_participant_that_stops_reading_is_detached_and_does_not_hold_up_the_others() {
        let sfu = Sfu::new(SfuConfig::default()).unwrap();
        let config = RoomsConfig { stall_timeout: Duration::from_secs(1), ..RoomsConfig::default() };
        let rooms = Rooms::with_config(sfu, config);
        let meeting = MeetingId::new();
        let (a, b, c) = (AttendeeId::new(), AttendeeId::new(), AttendeeId::new());
        let mut doctor = rooms.join(meeting, a, "Dr. Smith".into(), false, false).unwrap();
        let pat = rooms.join(meeting, b, "Pat Client".into(), false, false).unwrap();
        let stalled = rooms.join(meeting, c, "Stalled Sam".into(), false, false).unwrap();

        // Pat flips the microphone far faster than a person could; the last flip mutes.
        const FLIPS: u32 = 20_001;
        let flood = tokio::spawn(async move {
            for i in 0..FLIPS {
                pat.handle(ClientMessage::MediaState { audio_muted: i % 2 == 0, video_muted: false }).await;
            }
            pat
        });
        let pat_id = b.to_string();
        let (mut pat_muted, mut sam_detached) = (None, false);
        let started = Instant::now();
        read_until(&mut doctor, Duration::from_secs(10), |m| {
            match m {
                ServerMessage::MediaState { attendee_id, audio_muted, .. } if *attendee_id == pat_id => {
                    pat_muted = Some(*audio_muted)
                }
                ServerMessage::Joined { participants, .. } => {
                    pat_muted = participants.iter().find(|p| p.attendee_id == pat_id).map(|p| p.audio_muted).or(pat_muted);
                    sam_detached |= participants.iter().any(|p| p.attendee_id == c.to_string() && p.reconnecting);
                }
                ServerMessage::ParticipantReconnecting { attendee_id } => sam_detached |= *attendee_id == c.to_string(),
                _ => {}
            }
            sam_detached && pat_muted == Some(true) && flood.is_finished()
        })
        .await;
        assert!(sam_detached, "the stalled participant was never detached");
        assert_eq!(pat_muted, Some(true), "Dr. Smith does not see Pat's last state");
        // Detaching waits for the stall timeout (1 s); the flood itself is not held up by the stalled socket.
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        // What the stalled socket holds is bounded by its queue, whatever was sent.
        assert!(stalled.outbound.len() <= OUTBOUND_CAPACITY, "{} queued", stalled.outbound.len());
        assert_eq!(rooms.participant_count(meeting), 3, "Sam keeps the place for the resume window");
    }
}
