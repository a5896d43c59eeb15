//! PostgreSQL store (`DATABASE_URL=postgres://…`): for clinics that already run a database server, or several
//! gateway processes sharing one. Native UUID and TIMESTAMPTZ columns.

use super::*;
use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Row};
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let opts = PgConnectOptions::from_str(url).context("DATABASE_URL is not a valid postgres:// URL")?;
        Self::connect_with(opts).await
    }

    pub async fn connect_with(opts: PgConnectOptions) -> anyhow::Result<Self> {
        // Statement logging would print bound values, i.e. attendee names.
        let opts = opts.disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await
            .context("connecting to PostgreSQL")?;
        sqlx::migrate!("migrations/postgres").run(&pool).await.context("running PostgreSQL migrations")?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

fn meeting_from_row(row: &PgRow) -> Result<MeetingRecord, StoreError> {
    Ok(MeetingRecord {
        id: MeetingId::from(row.try_get::<Uuid, _>("id")?),
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

fn meetings_from_rows(rows: Vec<PgRow>) -> Result<Vec<MeetingRecord>, StoreError> {
    rows.iter().map(meeting_from_row).collect()
}

fn attendee_from_row(row: &PgRow) -> Result<AttendeeRecord, StoreError> {
    Ok(AttendeeRecord {
        attendee_id: AttendeeId::from(row.try_get::<Uuid, _>("id")?),
        meeting_id: MeetingId::from(row.try_get::<Uuid, _>("meeting_id")?),
        external_user_id: parse_external_user_id(row.try_get("external_user_id")?)?,
        created_at: row.try_get("created_at")?,
    })
}

fn session_from_row(row: &PgRow) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        id: SessionId::from(row.try_get::<Uuid, _>("id")?),
        meeting_id: MeetingId::from(row.try_get::<Uuid, _>("meeting_id")?),
        attendee_id: AttendeeId::from(row.try_get::<Uuid, _>("attendee_id")?),
        provider: parse_provider(row.try_get("provider")?)?,
        node: row.try_get("node")?,
        started_at: row.try_get("started_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        ended_at: row.try_get("ended_at")?,
    })
}

async fn append_audit(conn: &mut PgConnection, e: AuditEntry) -> Result<(), StoreError> {
    sqlx::query(sql::INSERT_AUDIT)
        .bind(Utc::now())
        .bind(e.action.as_str())
        .bind(e.meeting_id.map(|m| m.as_uuid()))
        .bind(e.attendee_id.map(|a| a.as_uuid()))
        .bind(e.actor.to_column())
        .bind(e.detail)
        .execute(conn)
        .await?;
    Ok(())
}

impl PgStore {
    /// Runs `sql` (binding `at` and then `key`) in a transaction with `audit`, which is appended only if a row
    /// changed. Rows changed.
    async fn update_with_audit(&self, sql: &'static str, at: DateTime<Utc>, key: Uuid, audit: &AuditEntry) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(sql).bind(at).bind(key).execute(&mut *tx).await?.rows_affected();
        if rows == 1 {
            append_audit(&mut tx, audit.clone()).await?;
            tx.commit().await?;
        }
        Ok(rows)
    }
}

#[async_trait::async_trait]
impl Store for PgStore {
    async fn insert_meeting(&self, m: &MeetingRecord, audit: &AuditEntry) -> Result<InsertMeeting, StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(sql::INSERT_MEETING)
            .bind(m.id.as_uuid())
            .bind(m.external_meeting_id.as_str())
            .bind(&m.appointment_id)
            .bind(m.provider.as_str())
            .bind(&m.media_region)
            .bind(m.created_at)
            .bind(m.deleted_at)
            .bind(m.ends_at)
            .bind(m.provider_meeting.as_ref().map(|v| v.to_string()))
            .execute(&mut *tx)
            .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_appointment_conflict(&e) => return Ok(InsertMeeting::AppointmentTaken),
            Err(e) => return Err(e.into()),
        }
        append_audit(&mut tx, audit.clone()).await?;
        tx.commit().await?;
        Ok(InsertMeeting::Inserted)
    }

    async fn find_live_meeting(&self, id: MeetingId) -> Result<Option<MeetingRecord>, StoreError> {
        let row = sqlx::query(sql::LIVE_MEETING).bind(id.as_uuid()).fetch_optional(&self.pool).await?;
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
        Ok(self.update_with_audit(sql::MARK_MEETING_DELETED, Utc::now(), id.as_uuid(), audit).await? == 1)
    }

    async fn insert_attendee(
        &self,
        a: &AttendeeRecord,
        max_per_meeting: u32,
        audit: &AuditEntry,
    ) -> Result<InsertAttendee, StoreError> {
        // Locking the meeting row serialises attendee creation per meeting (and against its deletion), so the
        // count below cannot go stale before the insert under READ COMMITTED.
        let mut tx = self.pool.begin().await?;
        let live = sqlx::query("SELECT id FROM meetings WHERE id = $1 AND deleted_at IS NULL FOR UPDATE")
            .bind(a.meeting_id.as_uuid())
            .fetch_optional(&mut *tx)
            .await?;
        if live.is_none() {
            return Ok(InsertAttendee::MeetingNotFound);
        }
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM attendees WHERE meeting_id = $1")
            .bind(a.meeting_id.as_uuid())
            .fetch_one(&mut *tx)
            .await?;
        if count >= i64::from(max_per_meeting) {
            return Ok(InsertAttendee::LimitReached);
        }
        sqlx::query("INSERT INTO attendees (id, meeting_id, external_user_id, created_at) VALUES ($1, $2, $3, $4)")
            .bind(a.attendee_id.as_uuid())
            .bind(a.meeting_id.as_uuid())
            .bind(a.external_user_id.as_str())
            .bind(a.created_at)
            .execute(&mut *tx)
            .await?;
        append_audit(&mut tx, audit.clone()).await?;
        tx.commit().await?;
        Ok(InsertAttendee::Inserted)
    }

    async fn list_attendees(&self, meeting: MeetingId) -> Result<Vec<AttendeeRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.* FROM attendees a JOIN meetings m ON m.id = a.meeting_id \
             WHERE a.meeting_id = $1 AND m.deleted_at IS NULL ORDER BY a.created_at, a.id",
        )
        .bind(meeting.as_uuid())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(attendee_from_row).collect()
    }

    async fn find_live_attendee(&self, meeting: MeetingId, attendee: AttendeeId) -> Result<Option<AttendeeRecord>, StoreError> {
        let row = sqlx::query(sql::FIND_LIVE_ATTENDEE)
            .bind(attendee.as_uuid())
            .bind(meeting.as_uuid())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(attendee_from_row).transpose()
    }

    async fn start_session(&self, s: &SessionRecord, audit: &AuditEntry) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(sql::INSERT_SESSION)
            .bind(s.id.as_uuid())
            .bind(s.meeting_id.as_uuid())
            .bind(s.attendee_id.as_uuid())
            .bind(s.provider.as_str())
            .bind(&s.node)
            .bind(s.started_at)
            .bind(s.last_seen_at)
            .bind(s.ended_at)
            .execute(&mut *tx)
            .await?;
        append_audit(&mut tx, audit.clone()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn touch_session(&self, id: SessionId, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let done = sqlx::query(sql::TOUCH_SESSION).bind(at).bind(id.as_uuid()).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    async fn end_session(&self, id: SessionId, at: DateTime<Utc>, audit: &AuditEntry) -> Result<bool, StoreError> {
        Ok(self.update_with_audit(sql::END_SESSION, at, id.as_uuid(), audit).await? == 1)
    }

    async fn touch_node_sessions(&self, node: &str, at: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = sqlx::query(sql::TOUCH_NODE_SESSIONS).bind(at).bind(node).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }

    async fn end_stale_sessions(&self, seen_before: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = sqlx::query(sql::END_STALE_SESSIONS).bind(seen_before).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }

    async fn sessions_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        meeting: Option<MeetingId>,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let q = sqlx::query(sql::SESSIONS_BETWEEN).bind(from).bind(to).bind(meeting.map(|m| m.as_uuid()));
        q.fetch_all(&self.pool).await?.iter().map(session_from_row).collect()
    }

    async fn append_audit(&self, e: AuditEntry) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        append_audit(&mut conn, e).await
    }

    async fn audit_for_meeting(&self, meeting: MeetingId) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(sql::AUDIT_FOR_MEETING).bind(meeting.as_uuid()).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(AuditRecord {
                    id: row.try_get("id")?,
                    at: row.try_get("at")?,
                    action: row.try_get("action")?,
                    meeting_id: row.try_get::<Option<Uuid>, _>("meeting_id")?.map(MeetingId::from),
                    attendee_id: row.try_get::<Option<Uuid>, _>("attendee_id")?.map(AttendeeId::from),
                    actor: row.try_get("actor")?,
                    detail: row.try_get("detail")?,
                })
            })
            .collect()
    }
}
