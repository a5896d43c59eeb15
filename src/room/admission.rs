//! Admission: the one way into a room. A `join` passes token → attendee (with its role) → policy, in that
//! order, and only then enters; the stay it starts (the usage record and its audit lines, which name the role)
//! is recorded through the meetings service, which this layer reaches through the `Attendance` trait so that
//! the arrows keep pointing down.
//!
//! The WebSocket handler hands over what the client sent and turns a `Refusal` into an error frame; it decides
//! nothing itself. Reconnection (a second join by an attendee already present) and later a waiting room are
//! decided here and in the room, not at the socket.

use super::{JoinError, Rooms, Session};
use crate::auth::Auth;
use crate::ids::{AttendeeId, MeetingId, Role, SessionId};
use std::sync::Arc;
use tokio::task::JoinHandle;

/// A failure of the store behind `Attendance`; its text goes to the trace (ids only, never patient data).
pub type AttendanceError = Box<dyn std::error::Error + Send + Sync>;

/// An attendee of a live meeting, as admission needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveAttendee {
    /// Chime's `ExternalUserId`: the display name given at `create-attendee`. Shown to the others, never logged.
    pub name: String,
    /// Fixed when the attendee was created (host through a key or the console, guest through an invite).
    pub role: Role,
}

/// Where admission looks attendees up and records their stays: implemented by the meetings service, which owns
/// the store and the audit log.
#[async_trait::async_trait]
pub trait Attendance: Send + Sync {
    /// The attendee's name and role if the attendee exists and its meeting is live.
    async fn live_attendee(&self, meeting: MeetingId, attendee: AttendeeId) -> Result<Option<LiveAttendee>, AttendanceError>;
    /// Opens the attendee's stay (with its `attendee.joined` line, which names the role).
    async fn stay_started(&self, meeting: MeetingId, attendee: AttendeeId, role: Role) -> Result<SessionId, AttendanceError>;
    /// Closes it (with its `attendee.left` line).
    async fn stay_ended(&self, stay: SessionId, meeting: MeetingId, attendee: AttendeeId) -> Result<(), AttendanceError>;
}

/// What a client asks with its `join` frame.
pub struct JoinRequest {
    pub token: String,
    pub audio_muted: bool,
    pub video_muted: bool,
}

/// Why a join was refused. The socket side maps each to an error code and closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Forged, malformed or expired JoinToken.
    Unauthorized,
    /// The meeting was deleted or never existed, or the attendee is not in it.
    NotFound,
    /// The meeting has its `MAX_PARTICIPANTS`.
    Full,
    /// The server has its configured maximum of participants.
    ServerFull,
    ShuttingDown,
    /// Our own failure: the store did not answer.
    Unavailable,
}

impl Refusal {
    /// The message the client sees. Never the cause: that goes to the trace.
    pub fn message(self) -> String {
        match self {
            Self::Unauthorized => "the join token is invalid or has expired".into(),
            Self::NotFound => "this meeting has ended or does not exist".into(),
            Self::Full => JoinError::Full.to_string(),
            Self::ServerFull => JoinError::ServerFull.to_string(),
            Self::ShuttingDown => JoinError::ShuttingDown.to_string(),
            Self::Unavailable => "the service is temporarily unavailable".into(),
        }
    }
}

impl From<JoinError> for Refusal {
    fn from(e: JoinError) -> Self {
        match e {
            JoinError::Full => Self::Full,
            JoinError::ServerFull => Self::ServerFull,
            JoinError::ShuttingDown => Self::ShuttingDown,
        }
    }
}

pub struct Admission {
    auth: Arc<Auth>,
    attendance: Arc<dyn Attendance>,
    rooms: Arc<Rooms>,
}

impl Admission {
    pub fn new(auth: Arc<Auth>, attendance: Arc<dyn Attendance>, rooms: Arc<Rooms>) -> Self {
        Self { auth, attendance, rooms }
    }

    /// Verifies the token, finds the attendee (and its role) in a live meeting, applies the room's policy and
    /// enters.
    pub async fn admit(&self, req: JoinRequest) -> Result<Session, Refusal> {
        let claims = self.auth.verify_join_token(&req.token).map_err(|e| {
            tracing::info!(reason = %e, "join refused: bad token");
            Refusal::Unauthorized
        })?;
        let (meeting, attendee) = (claims.meeting_id, claims.attendee_id);
        let LiveAttendee { name, role } = match self.attendance.live_attendee(meeting, attendee).await {
            Ok(Some(found)) => found,
            Ok(None) => return Err(Refusal::NotFound),
            Err(e) => {
                tracing::error!(error = %e, "attendee lookup failed");
                return Err(Refusal::Unavailable);
            }
        };
        let stay = StayRecorder { attendance: Arc::clone(&self.attendance), role };
        let session = self.rooms.enter(meeting, attendee, name, req.audio_muted, req.video_muted, Some(stay))?;
        Ok(session)
    }
}

/// Starts the stay of the participant one admission lets in.
pub(crate) struct StayRecorder {
    attendance: Arc<dyn Attendance>,
    /// The attendee's role, for its `attendee.joined` line.
    role: Role,
}

impl StayRecorder {
    /// The role of the attendee whose stay this records.
    pub(crate) fn role(&self) -> Role {
        self.role
    }

    /// Begins recording in the background: `joined` must not wait for a database write (and its fsync).
    pub(crate) fn begin(self, meeting: MeetingId, attendee: AttendeeId) -> Stay {
        let (attendance, role) = (Arc::clone(&self.attendance), self.role);
        let started = tokio::spawn(async move { attendance.stay_started(meeting, attendee, role).await });
        Stay { attendance: self.attendance, meeting, attendee, started }
    }
}

/// One participant's stay in a room, from entering to leaving, whatever sockets carried it.
pub(crate) struct Stay {
    attendance: Arc<dyn Attendance>,
    meeting: MeetingId,
    attendee: AttendeeId,
    started: JoinHandle<Result<SessionId, AttendanceError>>,
}

impl Stay {
    /// Records the leave. It waits for the join's write, so the log keeps their order.
    pub(crate) async fn end(self) {
        match self.started.await {
            Ok(Ok(stay)) => {
                if let Err(e) = self.attendance.stay_ended(stay, self.meeting, self.attendee).await {
                    tracing::error!(error = %e, "recording a leave failed");
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "recording a join failed"),
            Err(e) => tracing::error!(error = %e, "recording a join failed"),
        }
    }
}
