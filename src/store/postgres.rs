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
        provider: row.try_get("provider")?,
        media_region: row.try_get("media_region")?,
        created_at: row.try_get("created_at")?,
        deleted_at: row.try_get("deleted_at")?,
    })
}

fn attendee_from_row(row: &PgRow) -> Result<AttendeeRecord, StoreError> {
    Ok(AttendeeRecord {
        attendee_id: AttendeeId::from(row.try_get::<Uuid, _>("id")?),
        meeting_id: MeetingId::from(row.try_get::<Uuid, _>("meeting_id")?),
        external_user_id: parse_external_user_id(row.try_get("external_user_id")?)?,
        created_at: row.try_get("created_at")?,
    })
}

async fn append_audit(conn: &mut PgConnection, e: AuditEntry) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_log (at, action, meeting_id, attendee_id, actor, detail) VALUES ($1, $2, $3, $4, $5, $6)",
    )
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

#[async_trait::async_trait]
impl Store for PgStore {
    async fn insert_meeting(&self, m: &MeetingRecord, audit: &AuditEntry) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO meetings (id, external_meeting_id, appointment_id, provider, media_region, created_at, deleted_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(m.id.as_uuid())
        .bind(m.external_meeting_id.as_str())
        .bind(&m.appointment_id)
        .bind(&m.provider)
        .bind(&m.media_region)
        .bind(m.created_at)
        .bind(m.deleted_at)
        .execute(&mut *tx)
        .await?;
        append_audit(&mut tx, audit.clone()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn find_live_meeting(&self, id: MeetingId) -> Result<Option<MeetingRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM meetings WHERE id = $1 AND deleted_at IS NULL")
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(meeting_from_row).transpose()
    }

    async fn mark_meeting_deleted(&self, id: MeetingId, audit: &AuditEntry) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE meetings SET deleted_at = $1 WHERE id = $2 AND deleted_at IS NULL")
            .bind(Utc::now())
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        append_audit(&mut tx, audit.clone()).await?;
        tx.commit().await?;
        Ok(true)
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
        let row = sqlx::query(
            "SELECT a.* FROM attendees a JOIN meetings m ON m.id = a.meeting_id \
             WHERE a.id = $1 AND a.meeting_id = $2 AND m.deleted_at IS NULL",
        )
        .bind(attendee.as_uuid())
        .bind(meeting.as_uuid())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(attendee_from_row).transpose()
    }

    async fn append_audit(&self, e: AuditEntry) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        append_audit(&mut conn, e).await
    }

    async fn audit_for_meeting(&self, meeting: MeetingId) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM audit_log WHERE meeting_id = $1 ORDER BY id")
            .bind(meeting.as_uuid())
            .fetch_all(&self.pool)
            .await?;
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
