//! Who is in which meeting: join/leave, participant count, mute state, and which published tracks go to
//! whom. Policy only: packets are the SFU's business, sockets the WebSocket handler's.
//!
//! Each participant is a small actor (`participant.rs`) that owns its peer connection and negotiation
//! state, so offers, answers and track changes for one participant are handled strictly in order. The
//! room only routes commands between actors.

pub mod admission;
mod participant;

use crate::ids::{AttendeeId, MeetingId};
use crate::sfu::{PublishedTrack, Sfu};
use admission::StayRecorder;
pub use admission::{Admission, Attendance, AttendanceError, JoinRequest, Refusal};
use participant::{Command, Member};
use signaling::{ClientMessage, EndReason, Participant, ServerMessage};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Chime's limit, kept for compatibility.
pub const MAX_PARTICIPANTS: usize = 250;

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
}

/// One participant's connection to the room, held by the WebSocket handler. Dropping it leaves.
pub struct Session {
    pub meeting_id: MeetingId,
    pub attendee_id: AttendeeId,
    pub outbound: mpsc::UnboundedReceiver<Outbound>,
    commands: mpsc::UnboundedSender<Command>,
}

impl Session {
    /// Hands a client frame (other than `join`) to the participant.
    pub fn handle(&self, msg: ClientMessage) {
        let _ = self.commands.send(Command::Client(msg));
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Disconnect);
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
                let _ = m.commands.send(make());
            }
        }
    }

    /// Tells every member the meeting is over for them; each actor then leaves on its own.
    fn end_all(&self, reason: EndReason) {
        for m in self.lock_members().values() {
            let _ = m.commands.send(Command::End(reason));
        }
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

    /// Removes the member if it is still the session `seq` (a replaced session must not remove its
    /// successor), withdraws its tracks and tells everyone else.
    pub(crate) fn leave(&self, me: AttendeeId, seq: u64) {
        let removed = {
            let mut members = self.lock_members();
            match members.get(&me) {
                Some(m) if m.seq == seq => members.remove(&me).is_some(),
                _ => false,
            }
        };
        let prefix = me.to_string();
        let mine: Vec<String> =
            self.lock_published().iter().filter(|t| t.publisher == prefix).map(|t| t.id.clone()).collect();
        for id in mine {
            self.unpublish(me, &id);
        }
        if removed {
            let count = self.count();
            self.send_others(me, || {
                Command::Notify(ServerMessage::ParticipantLeft { attendee_id: prefix.clone(), count })
            });
            self.send_others(me, || Command::Notify(ServerMessage::ParticipantCount { count }));
            if count == 0
                && let Some(rooms) = self.rooms.upgrade()
            {
                rooms.forget_if_empty(self.meeting_id);
            }
        }
    }
}

/// Every live meeting on this server.
pub struct Rooms {
    sfu: Arc<Sfu>,
    rooms: Mutex<HashMap<MeetingId, Arc<Room>>>,
    draining: AtomicBool,
    next_seq: AtomicU64,
    me: Weak<Rooms>,
}

impl Rooms {
    pub fn new(sfu: Arc<Sfu>) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            sfu,
            rooms: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            next_seq: AtomicU64::new(1),
            me: me.clone(),
        })
    }

    pub fn sfu(&self) -> &Arc<Sfu> {
        &self.sfu
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

    /// Participants currently connected to the meeting.
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

    /// Adds a participant (already authenticated by the caller) to the meeting's room, recording no stay (a
    /// test's direct entry; a client comes in through `Admission`). A second join by the same attendee replaces
    /// the first socket.
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

    /// `join`, with the stay recorded from entering to leaving when `stay` is given.
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
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let info = Participant { attendee_id: attendee_id.to_string(), name, audio_muted, video_muted };
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();

        let (others, count, replaced) = {
            let mut members = room.lock_members();
            let replaced = members.remove(&attendee_id);
            if members.len() >= MAX_PARTICIPANTS {
                if let Some(old) = replaced {
                    members.insert(attendee_id, old);
                }
                return Err(JoinError::Full);
            }
            members.insert(attendee_id, Member { info: info.clone(), seq, commands: cmd_tx.clone() });
            let others: Vec<Participant> =
                members.iter().filter(|(id, _)| **id != attendee_id).map(|(_, m)| m.info.clone()).collect();
            (others, members.len(), replaced)
        };
        if let Some(old) = replaced {
            let _ = old.commands.send(Command::End(EndReason::Replaced));
        }
        let _ = out_tx.send(Outbound::Message(ServerMessage::Joined {
            meeting_id: meeting_id.to_string(),
            attendee_id: attendee_id.to_string(),
            participants: others,
            count,
        }));
        room.send_others(attendee_id, || {
            Command::Notify(ServerMessage::ParticipantJoined { participant: info.clone(), count })
        });
        room.send_others(attendee_id, || Command::Notify(ServerMessage::ParticipantCount { count }));

        tracing::info!(meeting = %meeting_id, attendee = %attendee_id, "participant joined");
        let stay = stay.map(|s| s.begin(meeting_id, attendee_id));
        participant::spawn(participant::Actor::new(
            Arc::clone(&room),
            Arc::clone(&self.sfu),
            attendee_id,
            seq,
            out_tx,
            cmd_rx,
            stay,
        ));
        Ok(Session { meeting_id, attendee_id, outbound: out_rx, commands: cmd_tx })
    }

    /// Tells everyone in the meeting it has ended and waits (briefly) for them to be gone.
    pub async fn end_meeting(&self, meeting: MeetingId, reason: EndReason) {
        let room = self.lock_rooms().get(&meeting).cloned();
        let Some(room) = room else { return };
        room.end_all(reason);
        wait_until(Duration::from_secs(2), || room.count() == 0).await;
    }

    /// Shutdown: refuse new joins, tell everyone, wait (at most `grace`) for rooms to empty.
    pub async fn drain(&self, grace: Duration) {
        self.draining.store(true, Ordering::SeqCst);
        let rooms: Vec<Arc<Room>> = self.lock_rooms().values().cloned().collect();
        for room in &rooms {
            room.end_all(EndReason::ServerShutdown);
        }
        wait_until(grace, || self.total_participants() == 0).await;
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
