//! The clinic's appointments, with the seed's columns (`modality`, `telehealth_room_id`, `telehealth_link`).
//! Records and statements only; the rules (validation, meetings, notifications) live in `appointments/`.

use super::db::{Conn, Row, Stmt, stmt};
use super::{Store, StoreError};
use crate::ids::{AppointmentId, MeetingId};
use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modality {
    InPerson,
    Telehealth,
}

impl Modality {
    /// The seed's column values.
    pub fn as_str(self) -> &'static str {
        match self {
            Modality::InPerson => "in-person",
            Modality::Telehealth => "telehealth",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "in-person" => Some(Modality::InPerson),
            "telehealth" => Some(Modality::Telehealth),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppointmentStatus {
    Scheduled,
    Cancelled,
}

impl AppointmentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AppointmentStatus::Scheduled => "scheduled",
            AppointmentStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "scheduled" => Some(AppointmentStatus::Scheduled),
            "cancelled" => Some(AppointmentStatus::Cancelled),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppointmentRecord {
    pub id: AppointmentId,
    pub client_name: String,
    pub client_email: Option<String>,
    /// E.164.
    pub client_phone: Option<String>,
    pub practitioner: String,
    pub start_time: DateTime<Utc>,
    pub duration_minutes: u32,
    pub modality: Modality,
    /// The MeetingId of a telehealth visit.
    pub telehealth_room_id: Option<MeetingId>,
    /// `APP_URL` + the join link (with its invite).
    pub telehealth_link: Option<String>,
    pub status: AppointmentStatus,
    /// The `Idempotency-Key` of the request that created it, if the caller sent one.
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl AppointmentRecord {
    pub fn ends_at(&self) -> DateTime<Utc> {
        self.start_time + chrono::Duration::minutes(i64::from(self.duration_minutes))
    }

    fn from_row(row: &Row) -> Result<Self, StoreError> {
        let modality: String = row.get("modality")?;
        let status: String = row.get("status")?;
        let duration: i64 = row.get("duration_minutes")?;
        // The seed's VARCHAR(255) in both dialects (not a UUID column): a GUID as text.
        let room: Option<String> = row.get("telehealth_room_id")?;
        Ok(Self {
            id: row.id("id")?,
            client_name: row.get("client_name")?,
            client_email: row.get("client_email")?,
            client_phone: row.get("client_phone")?,
            practitioner: row.get("practitioner")?,
            start_time: row.get("start_time")?,
            duration_minutes: u32::try_from(duration).map_err(|_| StoreError::corrupt("duration_minutes"))?,
            modality: Modality::parse(&modality).ok_or_else(|| StoreError::corrupt(format!("modality {modality:?}")))?,
            telehealth_room_id: room
                .map(|r| MeetingId::parse(&r).ok_or_else(|| StoreError::corrupt("telehealth_room_id is not a GUID")))
                .transpose()?,
            telehealth_link: row.get("telehealth_link")?,
            status: AppointmentStatus::parse(&status).ok_or_else(|| StoreError::corrupt(format!("status {status:?}")))?,
            idempotency_key: row.get("idempotency_key")?,
            created_at: row.get("created_at")?,
            updated_at: row.get("updated_at")?,
        })
    }
}

/// Binds the columns insert and update both write, as `$1`…`$11` in this order: id, client_name,
/// client_email, client_phone, practitioner, start_time, duration_minutes, modality, telehealth_room_id,
/// telehealth_link, status. One list, so a column added later cannot be written by one and forgotten by the other.
fn bind_fields(q: Stmt, a: &AppointmentRecord) -> Stmt {
    q.bind(a.id.as_uuid())
        .bind(&a.client_name)
        .bind(a.client_email.as_ref())
        .bind(a.client_phone.as_ref())
        .bind(&a.practitioner)
        .bind(a.start_time)
        .bind(a.duration_minutes)
        .bind(a.modality.as_str())
        // The seed's VARCHAR(255): a GUID as text in both dialects.
        .bind(a.telehealth_room_id.map(|m| m.to_string()))
        .bind(a.telehealth_link.as_ref())
        .bind(a.status.as_str())
}

pub async fn insert(c: &mut Conn<'_>, a: &AppointmentRecord) -> Result<(), StoreError> {
    let q = stmt(
        "INSERT INTO appointments (id, client_name, client_email, client_phone, practitioner, start_time, \
         duration_minutes, modality, telehealth_room_id, telehealth_link, status, created_at, updated_at, idempotency_key) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    );
    c.execute(bind_fields(q, a).bind(a.created_at).bind(a.updated_at).bind(a.idempotency_key.as_ref())).await?;
    Ok(())
}

/// The appointment a request with this `Idempotency-Key` created, if any.
pub async fn find_by_idempotency_key(c: &mut Conn<'_>, key: &str) -> Result<Option<AppointmentRecord>, StoreError> {
    let row = c.fetch_optional(stmt("SELECT * FROM appointments WHERE idempotency_key = $1").bind(key)).await?;
    row.as_ref().map(AppointmentRecord::from_row).transpose()
}

/// Writes every field but the id, the creation time and the idempotency key, if the row still has
/// `expected_updated_at` (so a concurrent change is not silently overwritten). False if it changed meanwhile or
/// does not exist.
pub async fn update(c: &mut Conn<'_>, a: &AppointmentRecord, expected_updated_at: DateTime<Utc>) -> Result<bool, StoreError> {
    let q = stmt(
        "UPDATE appointments SET client_name = $2, client_email = $3, client_phone = $4, practitioner = $5, \
         start_time = $6, duration_minutes = $7, modality = $8, telehealth_room_id = $9, telehealth_link = $10, \
         status = $11, updated_at = $12 \
         WHERE id = $1 AND updated_at = $13",
    );
    Ok(c.execute(bind_fields(q, a).bind(a.updated_at).bind(expected_updated_at)).await? == 1)
}

pub async fn find(c: &mut Conn<'_>, id: AppointmentId) -> Result<Option<AppointmentRecord>, StoreError> {
    let row = c.fetch_optional(stmt("SELECT * FROM appointments WHERE id = $1").bind(id.as_uuid())).await?;
    row.as_ref().map(AppointmentRecord::from_row).transpose()
}

/// Appointments starting in `[from, to)`, of one status or any, by start time; at most `limit`.
pub async fn list(
    c: &mut Conn<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    status: Option<AppointmentStatus>,
    limit: u32,
) -> Result<Vec<AppointmentRecord>, StoreError> {
    let q = stmt(
        "SELECT * FROM appointments WHERE start_time >= $1 AND start_time < $2 AND ($3 IS NULL OR status = $3) \
         ORDER BY start_time, id LIMIT $4",
    )
    .bind(from)
    .bind(to)
    .bind(status.map(AppointmentStatus::as_str))
    .bind(limit);
    c.fetch_all(q).await?.iter().map(AppointmentRecord::from_row).collect()
}

impl Store {
    pub async fn find_appointment_by_idempotency_key(&self, key: &str) -> Result<Option<AppointmentRecord>, StoreError> {
        find_by_idempotency_key(&mut self.reader(), key).await
    }

    pub async fn find_appointment(&self, id: AppointmentId) -> Result<Option<AppointmentRecord>, StoreError> {
        find(&mut self.reader(), id).await
    }

    pub async fn list_appointments(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        status: Option<AppointmentStatus>,
        limit: u32,
    ) -> Result<Vec<AppointmentRecord>, StoreError> {
        list(&mut self.reader(), from, to, status, limit).await
    }
}
