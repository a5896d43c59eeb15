//! The append-only audit log: who created, joined, left, deleted what and when. Lines are appended inside the
//! transaction of the change they describe (`Store::write`), so neither is ever stored without the other.
//! Both schemas refuse UPDATE and DELETE on the table.

use super::db::{Conn, Row, stmt};
use super::{Store, StoreError};
use crate::ids::{AppointmentId, AttendeeId, MeetingId};
use chrono::{DateTime, Utc};

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
    AppointmentCreated,
    AppointmentUpdated,
    AppointmentCancelled,
    /// A person asked to send a failed or unknown notification again.
    NotificationRetried,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::MeetingCreated => "meeting.created",
            AuditAction::MeetingDeleted => "meeting.deleted",
            AuditAction::AttendeeCreated => "attendee.created",
            AuditAction::AttendeeJoined => "attendee.joined",
            AuditAction::AttendeeLeft => "attendee.left",
            AuditAction::AppointmentCreated => "appointment.created",
            AuditAction::AppointmentUpdated => "appointment.updated",
            AuditAction::AppointmentCancelled => "appointment.cancelled",
            AuditAction::NotificationRetried => "notification.retried",
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
    /// A console session started from the start-up banner's one-time link (a key-signed-in console session
    /// acts as its `ApiKey`).
    Console,
    /// The gateway itself (e.g. shutdown).
    System,
}

impl AuditActor {
    pub fn to_column(&self) -> String {
        match self {
            AuditActor::Attendee => "attendee".into(),
            AuditActor::ApiKey { fingerprint } => format!("api-key:{fingerprint}"),
            AuditActor::Invite => "invite".into(),
            AuditActor::Console => "console".into(),
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
    pub appointment_id: Option<AppointmentId>,
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
    pub appointment_id: Option<AppointmentId>,
    pub actor: String,
    pub detail: Option<String>,
}


impl AuditRecord {
    fn from_row(row: &Row) -> Result<Self, StoreError> {
        Ok(Self {
            id: row.get("id")?,
            at: row.get("at")?,
            action: row.get("action")?,
            meeting_id: row.opt_id("meeting_id")?,
            attendee_id: row.opt_id("attendee_id")?,
            appointment_id: row.opt_id("appointment_id")?,
            actor: row.get("actor")?,
            detail: row.get("detail")?,
        })
    }
}

/// Appends one line, stamped now: the log's time order matches its id order even across batches.
pub async fn append(c: &mut Conn<'_>, e: &AuditEntry) -> Result<(), StoreError> {
    c.execute(
        stmt("INSERT INTO audit_log (at, action, meeting_id, attendee_id, appointment_id, actor, detail) \
              VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(Utc::now())
            .bind(e.action.as_str())
            .bind(e.meeting_id.map(|m| m.as_uuid()))
            .bind(e.attendee_id.map(|a| a.as_uuid()))
            .bind(e.appointment_id.map(|a| a.as_uuid()))
            .bind(e.actor.to_column())
            .bind(e.detail.as_ref()),
    )
    .await?;
    Ok(())
}

/// The audit trail of one meeting, oldest first.
pub async fn for_meeting(c: &mut Conn<'_>, meeting: MeetingId) -> Result<Vec<AuditRecord>, StoreError> {
    let rows = c.fetch_all(stmt("SELECT * FROM audit_log WHERE meeting_id = $1 ORDER BY id").bind(meeting.as_uuid())).await?;
    rows.iter().map(AuditRecord::from_row).collect()
}

/// The audit trail of one appointment, oldest first.
pub async fn for_appointment(c: &mut Conn<'_>, appointment: AppointmentId) -> Result<Vec<AuditRecord>, StoreError> {
    let q = stmt("SELECT * FROM audit_log WHERE appointment_id = $1 ORDER BY id").bind(appointment.as_uuid());
    c.fetch_all(q).await?.iter().map(AuditRecord::from_row).collect()
}

impl Store {
    /// One line on its own (a change that writes nothing else).
    pub async fn append_audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        self.write(entry, |c, e| Box::pin(append(c, e))).await
    }

    pub async fn audit_for_appointment(&self, appointment: AppointmentId) -> Result<Vec<AuditRecord>, StoreError> {
        for_appointment(&mut self.reader(), appointment).await
    }

    pub async fn audit_for_meeting(&self, meeting: MeetingId) -> Result<Vec<AuditRecord>, StoreError> {
        for_meeting(&mut self.reader(), meeting).await
    }
}
