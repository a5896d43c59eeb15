//! Meetings, their attendees, and attendee sessions (what usage is counted from): records, statements
//! (each written once for both databases), and the writes that pair a change with its audit line.

use super::audit::{self, AuditEntry};
use super::db::{Conn, Dialect, Row, stmt};
use super::{Store, StoreError};
use crate::ids::{AttendeeId, ExternalMeetingId, ExternalUserId, MeetingId, Provider, Role, SessionId};
use chrono::{DateTime, Utc};

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
    /// Host or guest, fixed at creation by the door it came through.
    pub role: Role,
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


impl MeetingRecord {
    fn from_row(row: &Row) -> Result<Self, StoreError> {
        let external: String = row.get("external_meeting_id")?;
        let provider: String = row.get("provider")?;
        let provider_meeting: Option<String> = row.get("provider_meeting")?;
        Ok(Self {
            id: row.id("id")?,
            external_meeting_id: ExternalMeetingId::parse(&external).map_err(|e| StoreError::corrupt(e.to_string()))?,
            appointment_id: row.get("appointment_id")?,
            provider: Provider::parse(&provider).ok_or_else(|| StoreError::corrupt(format!("provider {provider:?}")))?,
            media_region: row.get("media_region")?,
            created_at: row.get("created_at")?,
            deleted_at: row.get("deleted_at")?,
            ends_at: row.get("ends_at")?,
            provider_meeting: provider_meeting
                .map(|s| serde_json::from_str(&s).map_err(|e| StoreError::corrupt(format!("provider meeting: {e}"))))
                .transpose()?,
        })
    }

    fn all(rows: Vec<Row>) -> Result<Vec<Self>, StoreError> {
        rows.iter().map(Self::from_row).collect()
    }
}

impl AttendeeRecord {
    fn from_row(row: &Row) -> Result<Self, StoreError> {
        let external: String = row.get("external_user_id")?;
        let role: String = row.get("role")?;
        Ok(Self {
            attendee_id: row.id("id")?,
            meeting_id: row.id("meeting_id")?,
            external_user_id: ExternalUserId::parse(&external).map_err(|e| StoreError::corrupt(e.to_string()))?,
            role: Role::parse(&role).ok_or_else(|| StoreError::corrupt(format!("role {role:?}")))?,
            created_at: row.get("created_at")?,
        })
    }
}

impl SessionRecord {
    fn from_row(row: &Row) -> Result<Self, StoreError> {
        let provider: String = row.get("provider")?;
        Ok(Self {
            id: row.id("id")?,
            meeting_id: row.id("meeting_id")?,
            attendee_id: row.id("attendee_id")?,
            provider: Provider::parse(&provider).ok_or_else(|| StoreError::corrupt(format!("provider {provider:?}")))?,
            node: row.get("node")?,
            started_at: row.get("started_at")?,
            last_seen_at: row.get("last_seen_at")?,
            ended_at: row.get("ended_at")?,
        })
    }
}

/// Inserts the meeting unless another live meeting holds its appointment (then nothing is written: the
/// conflict target is the partial unique index `meetings_live_appointment`). True if inserted.
pub async fn insert(c: &mut Conn<'_>, m: &MeetingRecord) -> Result<bool, StoreError> {
    let rows = c
        .execute(
            stmt("INSERT INTO meetings \
                  (id, external_meeting_id, appointment_id, appointment_key, provider, media_region, created_at, deleted_at, ends_at, provider_meeting) \
                  VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $8, $9) \
                  ON CONFLICT (appointment_key) WHERE deleted_at IS NULL AND appointment_key IS NOT NULL DO NOTHING")
            .bind(m.id.as_uuid())
            .bind(m.external_meeting_id.as_str())
            .bind(m.appointment_id.as_ref())
            .bind(m.provider.as_str())
            .bind(&m.media_region)
            .bind(m.created_at)
            .bind(m.deleted_at)
            .bind(m.ends_at)
            .bind(m.provider_meeting.as_ref().map(|v| v.to_string())),
        )
        .await?;
    Ok(rows == 1)
}

/// The meeting, unless it does not exist or was deleted.
pub async fn find_live(c: &mut Conn<'_>, id: MeetingId) -> Result<Option<MeetingRecord>, StoreError> {
    let row = c.fetch_optional(stmt("SELECT * FROM meetings WHERE id = $1 AND deleted_at IS NULL").bind(id.as_uuid())).await?;
    row.as_ref().map(MeetingRecord::from_row).transpose()
}

/// Marks a live meeting deleted (rows are kept for the audit trail). False if it was not live.
pub async fn mark_deleted(c: &mut Conn<'_>, id: MeetingId, at: DateTime<Utc>) -> Result<bool, StoreError> {
    let q = stmt("UPDATE meetings SET deleted_at = $1 WHERE id = $2 AND deleted_at IS NULL").bind(at).bind(id.as_uuid());
    Ok(c.execute(q).await? == 1)
}

/// Moves a live meeting's end (its appointment was rescheduled): cleanup and token expiry follow.
pub async fn set_ends_at(c: &mut Conn<'_>, id: MeetingId, ends_at: DateTime<Utc>) -> Result<bool, StoreError> {
    let q = stmt("UPDATE meetings SET ends_at = $1 WHERE id = $2 AND deleted_at IS NULL").bind(ends_at).bind(id.as_uuid());
    Ok(c.execute(q).await? == 1)
}

/// Inserts the attendee if its meeting is live and has fewer than `max_per_meeting` attendees, in one
/// statement. On PostgreSQL the meeting row is locked first, so that under READ COMMITTED two concurrent
/// inserts cannot both count below the limit; SQLite's single writer already serialises them.
pub async fn insert_attendee(c: &mut Conn<'_>, a: &AttendeeRecord, max_per_meeting: u32) -> Result<InsertAttendee, StoreError> {
    if c.dialect() == Dialect::Postgres {
        let live = stmt("SELECT id FROM meetings WHERE id = $1 AND deleted_at IS NULL FOR UPDATE").bind(a.meeting_id.as_uuid());
        if c.fetch_optional(live).await?.is_none() {
            return Ok(InsertAttendee::MeetingNotFound);
        }
    }
    let rows = c
        .execute(
            stmt("INSERT INTO attendees (id, meeting_id, external_user_id, role, created_at) \
                  SELECT $1, $2, $3, $4, $5 \
                  WHERE EXISTS (SELECT 1 FROM meetings WHERE id = $2 AND deleted_at IS NULL) \
                    AND (SELECT COUNT(*) FROM attendees WHERE meeting_id = $2) < $6")
            .bind(a.attendee_id.as_uuid())
            .bind(a.meeting_id.as_uuid())
            .bind(a.external_user_id.as_str())
            .bind(a.role.as_str())
            .bind(a.created_at)
            .bind(max_per_meeting),
        )
        .await?;
    if rows == 1 {
        return Ok(InsertAttendee::Inserted);
    }
    Ok(match find_live(c, a.meeting_id).await? {
        None => InsertAttendee::MeetingNotFound,
        Some(_) => InsertAttendee::LimitReached,
    })
}

/// Attendees of a live meeting, oldest first (empty if the meeting is gone). Ties on the creation time go by
/// insertion order where the database has one (SQLite's rowid); PostgreSQL's ids are random, so by id.
pub async fn list_attendees(c: &mut Conn<'_>, meeting: MeetingId) -> Result<Vec<AttendeeRecord>, StoreError> {
    let sql = match c.dialect() {
        Dialect::Sqlite => {
            "SELECT a.* FROM attendees a JOIN meetings m ON m.id = a.meeting_id \
             WHERE a.meeting_id = $1 AND m.deleted_at IS NULL ORDER BY a.created_at, a.rowid"
        }
        Dialect::Postgres => {
            "SELECT a.* FROM attendees a JOIN meetings m ON m.id = a.meeting_id \
             WHERE a.meeting_id = $1 AND m.deleted_at IS NULL ORDER BY a.created_at, a.id"
        }
    };
    let rows = c.fetch_all(stmt(sql).bind(meeting.as_uuid())).await?;
    rows.iter().map(AttendeeRecord::from_row).collect()
}

/// The attendee, if it exists and its meeting has not been deleted.
pub async fn find_live_attendee(c: &mut Conn<'_>, meeting: MeetingId, attendee: AttendeeId) -> Result<Option<AttendeeRecord>, StoreError> {
    let q = stmt(
        "SELECT a.* FROM attendees a JOIN meetings m ON m.id = a.meeting_id \
         WHERE a.id = $1 AND a.meeting_id = $2 AND m.deleted_at IS NULL",
    )
    .bind(attendee.as_uuid())
    .bind(meeting.as_uuid());
    c.fetch_optional(q).await?.as_ref().map(AttendeeRecord::from_row).transpose()
}

pub async fn insert_session(c: &mut Conn<'_>, s: &SessionRecord) -> Result<(), StoreError> {
    c.execute(
        stmt("INSERT INTO attendee_sessions (id, meeting_id, attendee_id, provider, node, started_at, last_seen_at, ended_at) \
              VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
        .bind(s.id.as_uuid())
        .bind(s.meeting_id.as_uuid())
        .bind(s.attendee_id.as_uuid())
        .bind(s.provider.as_str())
        .bind(s.node.as_ref())
        .bind(s.started_at)
        .bind(s.last_seen_at)
        .bind(s.ended_at),
    )
    .await?;
    Ok(())
}

/// Ends an open session at `at`. False if it was not open.
pub async fn end_session(c: &mut Conn<'_>, id: SessionId, at: DateTime<Utc>) -> Result<bool, StoreError> {
    let q = stmt("UPDATE attendee_sessions SET ended_at = $1 WHERE id = $2 AND ended_at IS NULL").bind(at).bind(id.as_uuid());
    Ok(c.execute(q).await? == 1)
}

impl Store {
    /// Inserts the meeting and appends `audit` (its `meeting.created` line) in one transaction: neither is ever
    /// stored without the other. A meeting with an `appointment_id` is refused (nothing written) while another
    /// live meeting belongs to the same appointment.
    pub async fn insert_meeting(&self, m: &MeetingRecord, audit: &AuditEntry) -> Result<InsertMeeting, StoreError> {
        self.write((m.clone(), audit.clone()), |c, (m, line)| {
            Box::pin(async move {
                if !insert(c, m).await? {
                    return Ok(InsertMeeting::AppointmentTaken);
                }
                audit::append(c, line).await?;
                Ok(InsertMeeting::Inserted)
            })
        })
        .await
    }

    /// The meeting, unless it does not exist or was deleted.
    pub async fn find_live_meeting(&self, id: MeetingId) -> Result<Option<MeetingRecord>, StoreError> {
        find_live(&mut self.reader(), id).await
    }

    /// The live meeting of an appointment (served by the unique index on live meetings' appointment keys).
    pub async fn find_live_meeting_for_appointment(&self, appointment_id: &str) -> Result<Option<MeetingRecord>, StoreError> {
        let q = stmt("SELECT * FROM meetings WHERE appointment_key = $1 AND deleted_at IS NULL").bind(appointment_id);
        self.reader().fetch_optional(q).await?.as_ref().map(MeetingRecord::from_row).transpose()
    }

    /// Live meetings of `provider` whose visit is over: `ends_at` before `ended_before`, or, without an
    /// `ends_at`, created before `created_before`. Bounded so one cleanup pass stays short; the next pass takes
    /// the rest. No index of its own: it runs once a minute, and an index on live meetings would cost every
    /// create-meeting an entry.
    pub async fn meetings_past_window(
        &self,
        provider: Provider,
        ended_before: DateTime<Utc>,
        created_before: DateTime<Utc>,
    ) -> Result<Vec<MeetingRecord>, StoreError> {
        let q = stmt(
            "SELECT * FROM meetings \
             WHERE deleted_at IS NULL AND provider = $1 \
               AND ((ends_at IS NOT NULL AND ends_at < $2) OR (ends_at IS NULL AND created_at < $3)) \
             ORDER BY created_at LIMIT 500",
        )
        .bind(provider.as_str())
        .bind(ended_before)
        .bind(created_before);
        MeetingRecord::all(self.reader().fetch_all(q).await?)
    }

    /// Live meetings of `provider` that someone has been in, with nobody in them now, whose last session ended
    /// before `left_before`, and whose `ends_at` (if any) is before `now`.
    pub async fn idle_meetings(&self, provider: Provider, left_before: DateTime<Utc>, now: DateTime<Utc>) -> Result<Vec<MeetingRecord>, StoreError> {
        let q = stmt(
            "SELECT m.* FROM meetings m \
             WHERE m.deleted_at IS NULL AND m.provider = $1 AND (m.ends_at IS NULL OR m.ends_at < $3) \
               AND EXISTS (SELECT 1 FROM attendee_sessions s WHERE s.meeting_id = m.id) \
               AND NOT EXISTS (SELECT 1 FROM attendee_sessions s WHERE s.meeting_id = m.id \
                               AND (s.ended_at IS NULL OR s.ended_at >= $2)) \
             ORDER BY m.created_at LIMIT 500",
        )
        .bind(provider.as_str())
        .bind(left_before)
        .bind(now);
        MeetingRecord::all(self.reader().fetch_all(q).await?)
    }

    /// Marks the meeting deleted and appends `audit` (its `meeting.deleted` line) in the same transaction: both
    /// or neither. False, and nothing written, if it was not live.
    pub async fn mark_meeting_deleted(&self, id: MeetingId, audit: &AuditEntry) -> Result<bool, StoreError> {
        self.write((id, audit.clone()), |c, (id, line)| {
            Box::pin(async move {
                let deleted = mark_deleted(c, *id, Utc::now()).await?;
                if deleted {
                    audit::append(c, line).await?;
                }
                Ok(deleted)
            })
        })
        .await
    }

    /// Inserts the attendee if its meeting is live and has fewer than `max_per_meeting` attendees, atomically
    /// (two concurrent calls cannot both take the last seat), and appends `audit` (its `attendee.created` line)
    /// in the same transaction: both or neither. Nothing is written unless the outcome is `Inserted`.
    pub async fn insert_attendee(&self, a: &AttendeeRecord, max_per_meeting: u32, audit: &AuditEntry) -> Result<InsertAttendee, StoreError> {
        self.write((a.clone(), audit.clone()), move |c, (a, line)| {
            Box::pin(async move {
                let outcome = insert_attendee(c, a, max_per_meeting).await?;
                if outcome == InsertAttendee::Inserted {
                    audit::append(c, line).await?;
                }
                Ok(outcome)
            })
        })
        .await
    }

    /// Attendees of a live meeting, oldest first (empty if the meeting is gone).
    pub async fn list_attendees(&self, meeting: MeetingId) -> Result<Vec<AttendeeRecord>, StoreError> {
        list_attendees(&mut self.reader(), meeting).await
    }

    /// The attendee, if it exists and its meeting has not been deleted.
    pub async fn find_live_attendee(&self, meeting: MeetingId, attendee: AttendeeId) -> Result<Option<AttendeeRecord>, StoreError> {
        find_live_attendee(&mut self.reader(), meeting, attendee).await
    }

    /// Opens a session and appends `audit` (its `attendee.joined` line) in one transaction.
    pub async fn start_session(&self, session: &SessionRecord, audit: &AuditEntry) -> Result<(), StoreError> {
        self.write((session.clone(), audit.clone()), |c, (s, line)| {
            Box::pin(async move {
                insert_session(c, s).await?;
                audit::append(c, line).await
            })
        })
        .await
    }

    /// Marks an open session seen at `at`. False if it is not open (ended, or never started).
    pub async fn touch_session(&self, id: SessionId, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let rows = self
            .write((id, at), |c, (id, at)| {
                let q = stmt("UPDATE attendee_sessions SET last_seen_at = $1 WHERE id = $2 AND ended_at IS NULL").bind(*at).bind(id.as_uuid());
                Box::pin(c.execute(q))
            })
            .await?;
        Ok(rows == 1)
    }

    /// Ends an open session at `at` and appends `audit` (its `attendee.left` line) in one transaction. False,
    /// and nothing written, if it was not open.
    pub async fn end_session(&self, id: SessionId, at: DateTime<Utc>, audit: &AuditEntry) -> Result<bool, StoreError> {
        self.write((id, at, audit.clone()), |c, (id, at, line)| {
            Box::pin(async move {
                let ended = end_session(c, *id, *at).await?;
                if ended {
                    audit::append(c, line).await?;
                }
                Ok(ended)
            })
        })
        .await
    }

    /// Marks every open session held by `node` seen at `at`. How many.
    pub async fn touch_node_sessions(&self, node: &str, at: DateTime<Utc>) -> Result<u64, StoreError> {
        self.write((node.to_owned(), at), |c, (node, at)| {
            Box::pin(c.execute(stmt("UPDATE attendee_sessions SET last_seen_at = $1 WHERE node = $2 AND ended_at IS NULL").bind(*at).bind(node)))
        })
        .await
    }

    /// Ends every open session not seen since `seen_before`, at the time it was last seen. How many.
    pub async fn end_stale_sessions(&self, seen_before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.write(seen_before, |c, before| {
            Box::pin(c.execute(
                stmt("UPDATE attendee_sessions SET ended_at = last_seen_at WHERE ended_at IS NULL AND last_seen_at < $1").bind(*before),
            ))
        })
        .await
    }

    /// Sessions that started in `[from, to)`, of one meeting or all, oldest first.
    pub async fn sessions_between(&self, from: DateTime<Utc>, to: DateTime<Utc>, meeting: Option<MeetingId>) -> Result<Vec<SessionRecord>, StoreError> {
        let q = stmt(
            "SELECT * FROM attendee_sessions \
             WHERE started_at >= $1 AND started_at < $2 AND ($3 IS NULL OR meeting_id = $3) ORDER BY started_at",
        )
        .bind(from)
        .bind(to)
        .bind(meeting.map(|m| m.as_uuid()));
        self.reader().fetch_all(q).await?.iter().map(SessionRecord::from_row).collect()
    }
}
