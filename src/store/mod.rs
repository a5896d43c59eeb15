//! Persistence: meetings, attendees, attendee sessions (usage) and the append-only audit log, behind one `Store` trait with an SQLite
//! (default, zero-setup) and a PostgreSQL implementation. Migrations run at connect time, so a fresh file or
//! database is usable immediately and a restart loses nothing already stored.
//!
//! The store speaks in typed ids and records; it knows nothing of HTTP, tokens or Chime's JSON.

mod postgres;
mod sql;
mod sqlite;
mod sqlite_writer;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use crate::ids::{AttendeeId, ExternalMeetingId, ExternalUserId, MeetingId, Provider, SessionId};
use chrono::{DateTime, Utc};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(#[from] pub anyhow::Error);

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self(e.into())
    }
}

#[derive(Debug, Clone)]
pub struct MeetingRecord {
    pub id: MeetingId,
    pub external_meeting_id: ExternalMeetingId,
    /// The EHR's appointment reference, as given (numbers are stored as their decimal text).
    pub appointment_id: Option<String>,
    /// Which provider serves the meeting; every later call goes to that one.
    pub provider: Provider,
    pub media_region: String,
    pub created_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    /// When the visit is over, if the caller said (cleanup and token expiry go by it).
    pub ends_at: Option<DateTime<Utc>>,
    /// The provider's own `Meeting` object, for providers whose object we cannot rebuild (Chime).
    pub provider_meeting: Option<serde_json::Value>,
}

/// Why `insert_meeting` did not insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertMeeting {
    Inserted,
    /// Another live meeting already belongs to this appointment (nothing was written).
    AppointmentTaken,
}

/// One attendee's stay in a meeting: what attendee-minutes are counted from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: SessionId,
    pub meeting_id: MeetingId,
    pub attendee_id: AttendeeId,
    pub provider: Provider,
    /// The gateway process holding a local participant's socket (it keeps `last_seen_at` fresh); None for a
    /// session reported by a page (Chime).
    pub node: Option<String>,
    pub started_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct AttendeeRecord {
    pub meeting_id: MeetingId,
    pub attendee_id: AttendeeId,
    pub external_user_id: ExternalUserId,
    pub created_at: DateTime<Utc>,
}

/// Why `insert_attendee` did not insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertAttendee {
    Inserted,
    /// No such meeting, or it was deleted.
    MeetingNotFound,
    /// The meeting already has `max_per_meeting` attendees.
    LimitReached,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuditAction {
    MeetingCreated,
    MeetingDeleted,
    AttendeeCreated,
    /// Default only so the WebSocket handler can write `AuditEntry { action, meeting_id, attendee_id,
    /// ..Default::default() }`; every caller names its action.
    #[default]
    AttendeeJoined,
    AttendeeLeft,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::MeetingCreated => "meeting.created",
            AuditAction::MeetingDeleted => "meeting.deleted",
            AuditAction::AttendeeCreated => "attendee.created",
            AuditAction::AttendeeJoined => "attendee.joined",
            AuditAction::AttendeeLeft => "attendee.left",
        }
    }
}

/// Who did it. Deliberately has no room for a name, an IP or a token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AuditActor {
    /// An attendee on its own socket (join, leave).
    #[default]
    Attendee,
    /// A bearer API key, by fingerprint (never the key).
    ApiKey { fingerprint: String },
    /// The holder of a meeting's invite link.
    Invite,
    /// The gateway itself (e.g. shutdown).
    System,
}

impl AuditActor {
    pub fn to_column(&self) -> String {
        match self {
            AuditActor::Attendee => "attendee".into(),
            AuditActor::ApiKey { fingerprint } => format!("api-key:{fingerprint}"),
            AuditActor::Invite => "invite".into(),
            AuditActor::System => "system".into(),
        }
    }
}

/// One audit line to append. The store stamps the time.
#[derive(Debug, Clone, Default)]
pub struct AuditEntry {
    pub action: AuditAction,
    pub meeting_id: Option<MeetingId>,
    pub attendee_id: Option<AttendeeId>,
    pub actor: AuditActor,
    /// Free text for context such as `provider=local`. Must never carry patient data.
    pub detail: Option<String>,
}

/// One audit line as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub action: String,
    pub meeting_id: Option<MeetingId>,
    pub attendee_id: Option<AttendeeId>,
    pub actor: String,
    pub detail: Option<String>,
}

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts the meeting and appends `audit` (its `meeting.created` line) in one transaction: neither is ever
    /// stored without the other. A meeting with an `appointment_id` is refused (nothing written) while another
    /// live meeting belongs to the same appointment.
    async fn insert_meeting(&self, meeting: &MeetingRecord, audit: &AuditEntry) -> Result<InsertMeeting, StoreError>;
    /// The meeting, unless it does not exist or was deleted.
    async fn find_live_meeting(&self, id: MeetingId) -> Result<Option<MeetingRecord>, StoreError>;
    /// The newest live meeting of an appointment.
    async fn find_live_meeting_for_appointment(&self, appointment_id: &str) -> Result<Option<MeetingRecord>, StoreError>;
    /// Live meetings of `provider` whose visit is over: `ends_at` before `ended_before`, or, without an
    /// `ends_at`, created before `created_before`.
    async fn meetings_past_window(
        &self,
        provider: Provider,
        ended_before: DateTime<Utc>,
        created_before: DateTime<Utc>,
    ) -> Result<Vec<MeetingRecord>, StoreError>;
    /// Live meetings of `provider` that someone has been in, with nobody in them now, whose last session ended
    /// before `left_before`, and whose `ends_at` (if any) is before `now`.
    async fn idle_meetings(
        &self,
        provider: Provider,
        left_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<MeetingRecord>, StoreError>;
    /// Opens a session and appends `audit` (its `attendee.joined` line) in one transaction.
    async fn start_session(&self, session: &SessionRecord, audit: &AuditEntry) -> Result<(), StoreError>;
    /// Marks an open session seen at `at`. False if it is not open (ended, or never started).
    async fn touch_session(&self, id: SessionId, at: DateTime<Utc>) -> Result<bool, StoreError>;
    /// Ends an open session at `at` and appends `audit` (its `attendee.left` line) in one transaction. False,
    /// and nothing written, if it was not open.
    async fn end_session(&self, id: SessionId, at: DateTime<Utc>, audit: &AuditEntry) -> Result<bool, StoreError>;
    /// Marks every open session held by `node` seen at `at`. How many.
    async fn touch_node_sessions(&self, node: &str, at: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Ends every open session not seen since `seen_before`, at the time it was last seen. How many.
    async fn end_stale_sessions(&self, seen_before: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Sessions that started in `[from, to)`, of one meeting or all, oldest first.
    async fn sessions_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        meeting: Option<MeetingId>,
    ) -> Result<Vec<SessionRecord>, StoreError>;
    /// Marks the meeting deleted (rows are kept for the audit trail) and appends `audit` (its `meeting.deleted`
    /// line) in the same transaction: both or neither. False, and nothing written, if it was not live.
    async fn mark_meeting_deleted(&self, id: MeetingId, audit: &AuditEntry) -> Result<bool, StoreError>;
    /// Inserts the attendee if its meeting is live and has fewer than `max_per_meeting` attendees, atomically
    /// (two concurrent calls cannot both take the last seat), and appends `audit` (its `attendee.created` line)
    /// in the same transaction: both or neither. Nothing is written unless the outcome is `Inserted`.
    async fn insert_attendee(
        &self,
        attendee: &AttendeeRecord,
        max_per_meeting: u32,
        audit: &AuditEntry,
    ) -> Result<InsertAttendee, StoreError>;
    /// Attendees of a live meeting, oldest first (empty if the meeting is gone).
    async fn list_attendees(&self, meeting: MeetingId) -> Result<Vec<AttendeeRecord>, StoreError>;
    /// The attendee, if it exists and its meeting has not been deleted.
    async fn find_live_attendee(&self, meeting: MeetingId, attendee: AttendeeId) -> Result<Option<AttendeeRecord>, StoreError>;
    async fn append_audit(&self, entry: AuditEntry) -> Result<(), StoreError>;
    /// The audit trail of one meeting, oldest first.
    async fn audit_for_meeting(&self, meeting: MeetingId) -> Result<Vec<AuditRecord>, StoreError>;
}

/// Opens the database named by `url` (`sqlite://…` or `postgres://…`) and runs its migrations.
pub async fn connect(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url).await?))
    } else {
        anyhow::bail!("DATABASE_URL must start with sqlite:// or postgres://")
    }
}

/// The unique index on live meetings' appointments refused an insert (and not some other constraint).
fn is_appointment_conflict(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else { return false };
    db.is_unique_violation()
        && (db.constraint() == Some("meetings_live_appointment") || db.message().contains("meetings.appointment_key"))
}

/// Parses stored columns back into typed values; a bad row is a store error, not a panic.
fn parse_meeting_id(s: &str) -> Result<MeetingId, StoreError> {
    MeetingId::parse(s).ok_or_else(|| StoreError(anyhow::anyhow!("stored meeting id is not a GUID")))
}
fn parse_session_id(s: &str) -> Result<SessionId, StoreError> {
    SessionId::parse(s).ok_or_else(|| StoreError(anyhow::anyhow!("stored session id is not a GUID")))
}
fn parse_attendee_id(s: &str) -> Result<AttendeeId, StoreError> {
    AttendeeId::parse(s).ok_or_else(|| StoreError(anyhow::anyhow!("stored attendee id is not a GUID")))
}
fn parse_external_meeting_id(s: &str) -> Result<ExternalMeetingId, StoreError> {
    ExternalMeetingId::parse(s).map_err(|e| StoreError(anyhow::anyhow!("stored row: {e}")))
}
fn parse_provider(s: &str) -> Result<Provider, StoreError> {
    Provider::parse(s).ok_or_else(|| StoreError(anyhow::anyhow!("stored provider {s:?} is unknown")))
}
fn parse_provider_meeting(s: Option<String>) -> Result<Option<serde_json::Value>, StoreError> {
    s.map(|s| serde_json::from_str(&s).map_err(|e| StoreError(anyhow::anyhow!("stored provider meeting: {e}")))).transpose()
}
fn parse_external_user_id(s: &str) -> Result<ExternalUserId, StoreError> {
    ExternalUserId::parse(s).map_err(|e| StoreError(anyhow::anyhow!("stored row: {e}")))
}
