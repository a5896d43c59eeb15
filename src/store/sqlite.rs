//! SQLite store: the zero-setup default (`sqlite://data/telehealth.db`). The file and its directory are created
//! on first start; WAL journaling lets readers proceed while one writer writes.
//!
//! Writes go through ONE connection owned by a writer task (`sqlite_writer`) that commits whatever queued up
//! meanwhile in a single transaction (group commit): SQLite admits one writer at a time anyway, and each
//! COMMIT costs an fsync, so one fsync per batch instead of one per write is what lets many concurrent
//! requests through. Several writing connections were worse still: the losers got SQLITE_BUSY and slept in
//! SQLite's busy handler (1–100 ms). Reads keep their own small pool.

use super::sqlite_writer::{WriteOp, Writer};
use super::*;
use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{ConnectOptions, Row};
use std::str::FromStr;
use std::time::Duration;

pub struct SqliteStore {
    /// Reads.
    pool: SqlitePool,
    /// Every INSERT/UPDATE (see above).
    writer: Writer,
}

impl SqliteStore {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let opts = SqliteConnectOptions::from_str(url).context("DATABASE_URL is not a valid sqlite:// URL")?;
        Self::connect_with(opts).await
    }

    pub async fn connect_with(opts: SqliteConnectOptions) -> anyhow::Result<Self> {
        let file = opts.get_filename().to_owned();
        if let Some(dir) = file.parent() {
            crate::auth::create_private_dir(dir)?;
        }
        let opts = opts
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            // SQLite's default, stated because it is the point: a write is acknowledged only once its COMMIT
            // has been fsynced to the WAL. (NORMAL would lose the last commits on power loss.)
            .synchronous(SqliteSynchronous::Full)
            // Statement logging would print bound values, i.e. attendee names.
            .disable_statement_logging();
        let mut writer = opts
            .connect()
            .await
            .with_context(|| format!("opening SQLite database {}", file.display()))?;
        sqlx::migrate!("migrations/sqlite").run(&mut writer).await.context("running SQLite migrations")?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // A pool normally pings a connection before handing it out; a local file cannot have hung up,
            // and the ping is a round trip to the connection's thread on every read.
            .test_before_acquire(false)
            .connect_with(opts)
            .await
            .with_context(|| format!("opening SQLite database {}", file.display()))?;
        Ok(Self { pool, writer: Writer::spawn(writer) })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

fn meeting_from_row(row: &SqliteRow) -> Result<MeetingRecord, StoreError> {
    Ok(MeetingRecord {
        id: parse_meeting_id(row.try_get("id")?)?,
        external_meeting_id: parse_external_meeting_id(row.try_get("external_meeting_id")?)?,
        appointment_id: row.try_get("appointment_id")?,
        provider: parse_provider(row.try_get("provider")?)?,
        media_region: row.try_get("media_region")?,
        created_at: row.try_get("created_at")?,
        deleted_at: row.try_get("deleted_at")?,
        ends_at: row.try_get("ends_at")?,
        provider_meeting: parse_provider_meeting(row.try_get("provider_meeting")?)?,
    })
}

fn meetings_from_rows(rows: Vec<SqliteRow>) -> Result<Vec<MeetingRecord>, StoreError> {
    rows.iter().map(meeting_from_row).collect()
}

fn attendee_from_row(row: &SqliteRow) -> Result<AttendeeRecord, StoreError> {
    Ok(AttendeeRecord {
        attendee_id: parse_attendee_id(row.try_get("id")?)?,
        meeting_id: parse_meeting_id(row.try_get("meeting_id")?)?,
        external_user_id: parse_external_user_id(row.try_get("external_user_id")?)?,
        created_at: row.try_get("created_at")?,
    })
}

fn session_from_row(row: &SqliteRow) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        id: parse_session_id(row.try_get("id")?)?,
        meeting_id: parse_meeting_id(row.try_get("meeting_id")?)?,
        attendee_id: parse_attendee_id(row.try_get("attendee_id")?)?,
        provider: parse_provider(row.try_get("provider")?)?,
        node: row.try_get("node")?,
        started_at: row.try_get("started_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        ended_at: row.try_get("ended_at")?,
    })
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn insert_meeting(&self, m: &MeetingRecord, audit: &AuditEntry) -> Result<InsertMeeting, StoreError> {
        let rows = self.writer.write(WriteOp::InsertMeeting { meeting: m.clone(), audit: audit.clone() }).await?;
        Ok(if rows == 1 { InsertMeeting::Inserted } else { InsertMeeting::AppointmentTaken })
    }

    async fn find_live_meeting(&self, id: MeetingId) -> Result<Option<MeetingRecord>, StoreError> {
        let row = sqlx::query(sql::LIVE_MEETING).bind(id.to_string()).fetch_optional(&self.pool).await?;
        row.as_ref().map(meeting_from_row).transpose()
    }

    async fn find_live_meeting_for_appointment(&self, appointment_id: &str) -> Result<Option<MeetingRecord>, StoreError> {
        let row = sqlx::query(sql::LIVE_MEETING_FOR_APPOINTMENT).bind(appointment_id).fetch_optional(&self.pool).await?;
        row.as_ref().map(meeting_from_row).transpose()
    }

    async fn meetings_past_window(
        &self,
        provider: Provider,
        ended_before: DateTime<Utc>,
        created_before: DateTime<Utc>,
    ) -> Result<Vec<MeetingRecord>, StoreError> {
        let q = sqlx::query(sql::MEETINGS_PAST_WINDOW).bind(provider.as_str()).bind(ended_before).bind(created_before);
        meetings_from_rows(q.fetch_all(&self.pool).await?)
    }

    async fn idle_meetings(
        &self,
        provider: Provider,
        left_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<MeetingRecord>, StoreError> {
        let q = sqlx::query(sql::IDLE_MEETINGS).bind(provider.as_str()).bind(left_before).bind(now);
        meetings_from_rows(q.fetch_all(&self.pool).await?)
    }

    async fn mark_meeting_deleted(&self, id: MeetingId, audit: &AuditEntry) -> Result<bool, StoreError> {
        let rows = self.writer.write(WriteOp::MarkMeetingDeleted { id, at: Utc::now(), audit: audit.clone() }).await?;
        Ok(rows == 1)
    }

    async fn insert_attendee(
        &self,
        a: &AttendeeRecord,
        max_per_meeting: u32,
        audit: &AuditEntry,
    ) -> Result<InsertAttendee, StoreError> {
        let op = WriteOp::InsertAttendee { attendee: a.clone(), max_per_meeting, audit: audit.clone() };
        let rows = self.writer.write(op).await?;
        if rows == 1 {
            return Ok(InsertAttendee::Inserted);
        }
        Ok(match self.find_live_meeting(a.meeting_id).await? {
            None => InsertAttendee::MeetingNotFound,
            Some(_) => InsertAttendee::LimitReached,
        })
    }

    async fn list_attendees(&self, meeting: MeetingId) -> Result<Vec<AttendeeRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.* FROM attendees a JOIN meetings m ON m.id = a.meeting_id \
             WHERE a.meeting_id = $1 AND m.deleted_at IS NULL ORDER BY a.created_at, a.rowid",
        )
        .bind(meeting.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(attendee_from_row).collect()
    }

    async fn find_live_attendee(&self, meeting: MeetingId, attendee: AttendeeId) -> Result<Option<AttendeeRecord>, StoreError> {
        let row = sqlx::query(sql::FIND_LIVE_ATTENDEE)
            .bind(attendee.to_string())
            .bind(meeting.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(attendee_from_row).transpose()
    }

    async fn start_session(&self, session: &SessionRecord, audit: &AuditEntry) -> Result<(), StoreError> {
        self.writer.write(WriteOp::StartSession { session: session.clone(), audit: audit.clone() }).await?;
        Ok(())
    }

    async fn touch_session(&self, id: SessionId, at: DateTime<Utc>) -> Result<bool, StoreError> {
        Ok(self.writer.write(WriteOp::TouchSession { id, at }).await? == 1)
    }

    async fn end_session(&self, id: SessionId, at: DateTime<Utc>, audit: &AuditEntry) -> Result<bool, StoreError> {
        Ok(self.writer.write(WriteOp::EndSession { id, at, audit: audit.clone() }).await? == 1)
    }

    async fn touch_node_sessions(&self, node: &str, at: DateTime<Utc>) -> Result<u64, StoreError> {
        self.writer.write(WriteOp::TouchNodeSessions { node: node.to_owned(), at }).await
    }

    async fn end_stale_sessions(&self, seen_before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.writer.write(WriteOp::EndStaleSessions { seen_before }).await
    }

    async fn sessions_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        meeting: Option<MeetingId>,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let q = sqlx::query(sql::SESSIONS_BETWEEN).bind(from).bind(to).bind(meeting.map(|m| m.to_string()));
        q.fetch_all(&self.pool).await?.iter().map(session_from_row).collect()
    }

    async fn append_audit(&self, e: AuditEntry) -> Result<(), StoreError> {
        self.writer.write(WriteOp::AppendAudit(e)).await?;
        Ok(())
    }

    async fn audit_for_meeting(&self, meeting: MeetingId) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(sql::AUDIT_FOR_MEETING).bind(meeting.to_string()).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                let meeting_id: Option<String> = row.try_get("meeting_id")?;
                let attendee_id: Option<String> = row.try_get("attendee_id")?;
                Ok(AuditRecord {
                    id: row.try_get("id")?,
                    at: row.try_get("at")?,
                    action: row.try_get("action")?,
                    meeting_id: meeting_id.as_deref().map(parse_meeting_id).transpose()?,
                    attendee_id: attendee_id.as_deref().map(parse_attendee_id).transpose()?,
                    actor: row.try_get("actor")?,
                    detail: row.try_get("detail")?,
                })
            })
            .collect()
    }
}
