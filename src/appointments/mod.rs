//! Scheduling with the seed's columns: an appointment is `in-person` or `telehealth`; a telehealth one gets a
//! meeting through the meetings service (keyed by the appointment, so a retry never makes a second one), and
//! its `telehealth_room_id` / `telehealth_link` are filled. Every change writes the appointment, its audit
//! line and the messages it causes (confirmation, update, cancellation, reminders) in ONE transaction.
//!
//! Meetings are created before that transaction (a provider call cannot sit inside a database transaction)
//! and deleted after it: a crash in between leaves at most a meeting without an appointment, which the
//! lifecycle cleanup removes after its `ends_at`, never an appointment pointing at nothing.

pub mod notices;
pub mod validate;

use crate::auth::Auth;
use crate::ids::{AppointmentId, MeetingId};
use crate::meetings::{CreateMeeting, MeetingError, MeetingService, Origin, join_path};
use crate::store::appointments::{self, AppointmentRecord, AppointmentStatus, Modality};
use crate::store::{AuditAction, AuditActor, AuditEntry, Store, StoreError, audit, outbox};
use chrono::{DateTime, SubsecRound, Utc};
use notices::{NoticeKind, Notices};
use std::sync::Arc;
pub use validate::Invalid;

#[derive(Debug, thiserror::Error)]
pub enum AppointmentError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("appointment not found")]
    NotFound,
    #[error("the appointment is cancelled and cannot be changed")]
    Cancelled,
    #[error("the appointment was changed by someone else meanwhile; reload it and try again")]
    Concurrent,
    #[error(transparent)]
    Meeting(#[from] MeetingError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a caller sends to create one (already parsed; validated here).
#[derive(Debug, Clone)]
pub struct NewAppointment {
    pub client_name: String,
    pub client_email: Option<String>,
    pub client_phone: Option<String>,
    pub practitioner: String,
    pub start_time: DateTime<Utc>,
    pub duration_minutes: i64,
    pub modality: Modality,
    /// The request's `Idempotency-Key`: a create retried with the same key returns the first one's appointment.
    pub idempotency_key: Option<String>,
}

/// What `create` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New,
    /// An earlier request with the same `Idempotency-Key` made it; nothing was made now.
    Replayed,
}

/// A partial change: only the fields given change.
#[derive(Debug, Clone, Default)]
pub struct AppointmentPatch {
    pub client_name: Option<String>,
    /// `Some(None)` clears it.
    pub client_email: Option<Option<String>>,
    pub client_phone: Option<Option<String>>,
    pub practitioner: Option<String>,
    pub start_time: Option<DateTime<Utc>>,
    pub duration_minutes: Option<i64>,
    pub modality: Option<Modality>,
}

pub struct AppointmentService {
    store: Store,
    meetings: Arc<MeetingService>,
    auth: Arc<Auth>,
    notices: Notices,
}

impl AppointmentService {
    pub fn new(store: Store, meetings: Arc<MeetingService>, auth: Arc<Auth>, notices: Notices) -> Self {
        Self { store, meetings, auth, notices }
    }

    pub async fn get(&self, id: AppointmentId) -> Result<AppointmentRecord, AppointmentError> {
        self.store.find_appointment(id).await?.ok_or(AppointmentError::NotFound)
    }

    pub async fn list(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        status: Option<AppointmentStatus>,
    ) -> Result<Vec<AppointmentRecord>, AppointmentError> {
        Ok(self.store.list_appointments(from, to, status, 1000).await?)
    }

    pub async fn create(
        &self,
        new: NewAppointment,
        by: &AuditActor,
        origin: &Origin,
    ) -> Result<(AppointmentRecord, Created), AppointmentError> {
        if let Some(key) = &new.idempotency_key
            && let Some(earlier) = self.store.find_appointment_by_idempotency_key(key).await?
        {
            return Ok((earlier, Created::Replayed));
        }
        let now = now();
        let mut rec = AppointmentRecord {
            id: AppointmentId::new(),
            client_name: validate::name("client_name", &new.client_name)?,
            client_email: new.client_email.as_deref().map(validate::email).transpose()?,
            client_phone: new.client_phone.as_deref().map(validate::phone).transpose()?,
            practitioner: validate::name("practitioner", &new.practitioner)?,
            // Whole seconds: what a person schedules, and what both databases store exactly.
            start_time: validate::start_in_future(new.start_time.trunc_subsecs(0), now)?,
            duration_minutes: validate::duration(new.duration_minutes)?,
            modality: new.modality,
            telehealth_room_id: None,
            telehealth_link: None,
            status: AppointmentStatus::Scheduled,
            idempotency_key: new.idempotency_key.clone(),
            created_at: now,
            updated_at: now,
        };
        if rec.modality == Modality::Telehealth {
            self.attach_meeting(&mut rec, by, origin).await?;
        }
        let messages = self.notices.messages(&rec, NoticeKind::Confirmation, now);
        let line = self.line(AuditAction::AppointmentCreated, &rec, by);
        let written = self
            .store
            .write((rec.clone(), line, messages), |c, (rec, line, messages)| {
                Box::pin(async move {
                    appointments::insert(c, rec).await?;
                    audit::append(c, line).await?;
                    outbox::enqueue_all(c, messages).await?;
                    Ok(())
                })
            })
            .await;
        if let Err(e) = written {
            // Not stored: do not leave its meeting running.
            self.detach_meeting(rec.telehealth_room_id, by).await;
            // The same key raced in from another request, which won: its appointment is the answer.
            if let (StoreError::Conflict(_), Some(key)) = (&e, &new.idempotency_key)
                && let Some(earlier) = self.store.find_appointment_by_idempotency_key(key).await?
            {
                return Ok((earlier, Created::Replayed));
            }
            return Err(e.into());
        }
        tracing::info!(appointment_id = %rec.id, modality = rec.modality.as_str(), "appointment created");
        Ok((rec, Created::New))
    }

    pub async fn update(
        &self,
        id: AppointmentId,
        patch: AppointmentPatch,
        by: &AuditActor,
        origin: &Origin,
    ) -> Result<AppointmentRecord, AppointmentError> {
        let old = self.get(id).await?;
        if old.status == AppointmentStatus::Cancelled {
            return Err(AppointmentError::Cancelled);
        }
        let now = now();
        let mut rec = old.clone();
        if let Some(n) = &patch.client_name {
            rec.client_name = validate::name("client_name", n)?;
        }
        if let Some(e) = &patch.client_email {
            rec.client_email = e.as_deref().map(validate::email).transpose()?;
        }
        if let Some(p) = &patch.client_phone {
            rec.client_phone = p.as_deref().map(validate::phone).transpose()?;
        }
        if let Some(n) = &patch.practitioner {
            rec.practitioner = validate::name("practitioner", n)?;
        }
        if let Some(start) = patch.start_time.map(|s| s.trunc_subsecs(0)) {
            // Only a new time must lie ahead: a visit under way can still have its notes' names corrected.
            rec.start_time = if start == old.start_time { start } else { validate::start_in_future(start, now)? };
        }
        if let Some(d) = patch.duration_minutes {
            rec.duration_minutes = validate::duration(d)?;
        }
        if let Some(m) = patch.modality {
            rec.modality = m;
        }
        rec.updated_at = now;
        let mut dropped_meeting = None;
        match (old.modality, rec.modality) {
            (Modality::InPerson, Modality::Telehealth) => self.attach_meeting(&mut rec, by, origin).await?,
            (Modality::Telehealth, Modality::InPerson) => {
                dropped_meeting = rec.telehealth_room_id.take();
                rec.telehealth_link = None;
            }
            (Modality::Telehealth, Modality::Telehealth) if rec.ends_at() != old.ends_at() => {
                // A moved visit gets a link that lives until its new end (the update notice carries it); the
                // old link keeps working until the old end plus the grace.
                if let Some(meeting) = rec.telehealth_room_id {
                    self.sign_link(&mut rec, meeting, origin);
                }
            }
            _ => {}
        }
        // The client hears about changes they would notice; reminders are re-made from the new record either way.
        let visible = rec.start_time != old.start_time
            || rec.duration_minutes != old.duration_minutes
            || rec.modality != old.modality
            || rec.client_name != old.client_name
            || rec.client_email != old.client_email
            || rec.client_phone != old.client_phone;
        let messages = if visible {
            self.notices.messages(&rec, NoticeKind::Update, now)
        } else {
            self.notices.reminders(&rec, now)
        };
        let line = self.line(AuditAction::AppointmentUpdated, &rec, by);
        let ends_at = (rec.modality == Modality::Telehealth).then(|| rec.ends_at());
        let expected = old.updated_at;
        let written = self
            .store
            .write((rec.clone(), line, messages, expected, ends_at), |c, (rec, line, messages, expected, ends_at)| {
                Box::pin(async move {
                    if !appointments::update(c, rec, *expected).await? {
                        return Ok(false);
                    }
                    if let (Some(meeting), Some(ends_at)) = (rec.telehealth_room_id, ends_at) {
                        crate::store::meetings::set_ends_at(c, meeting, *ends_at).await?;
                    }
                    outbox::withdraw_pending(c, rec.id, rec.updated_at).await?;
                    audit::append(c, line).await?;
                    outbox::enqueue_all(c, messages).await?;
                    Ok(true)
                })
            })
            .await;
        match written {
            Ok(true) => {}
            Ok(false) => {
                self.undo_new_meeting(&old, &rec, by).await;
                return Err(AppointmentError::Concurrent);
            }
            Err(e) => {
                self.undo_new_meeting(&old, &rec, by).await;
                return Err(e.into());
            }
        }
        self.detach_meeting(dropped_meeting, by).await;
        tracing::info!(appointment_id = %rec.id, "appointment updated");
        Ok(rec)
    }

    pub async fn cancel(&self, id: AppointmentId, by: &AuditActor) -> Result<AppointmentRecord, AppointmentError> {
        let old = self.get(id).await?;
        if old.status == AppointmentStatus::Cancelled {
            return Ok(old);
        }
        let now = now();
        let mut rec = old.clone();
        rec.status = AppointmentStatus::Cancelled;
        rec.updated_at = now;
        let meeting = rec.telehealth_room_id.take();
        rec.telehealth_link = None;
        // The cancellation is worded from the visit as it was (its modality), without a join link.
        let messages = self.notices.messages(&rec, NoticeKind::Cancellation, now);
        let line = self.line(AuditAction::AppointmentCancelled, &rec, by);
        let written = self
            .store
            .write((rec.clone(), line, messages, old.updated_at), |c, (rec, line, messages, expected)| {
                Box::pin(async move {
                    if !appointments::update(c, rec, *expected).await? {
                        return Ok(false);
                    }
                    outbox::withdraw_pending(c, rec.id, rec.updated_at).await?;
                    audit::append(c, line).await?;
                    outbox::enqueue_all(c, messages).await?;
                    Ok(true)
                })
            })
            .await?;
        if !written {
            return Err(AppointmentError::Concurrent);
        }
        self.detach_meeting(meeting, by).await;
        tracing::info!(appointment_id = %rec.id, "appointment cancelled");
        Ok(rec)
    }

    /// Creates (or finds: the appointment is the key) the visit's meeting and fills the seed's two columns.
    async fn attach_meeting(&self, rec: &mut AppointmentRecord, by: &AuditActor, origin: &Origin) -> Result<(), AppointmentError> {
        let req = CreateMeeting {
            external_meeting_id: None,
            appointment_id: Some(rec.id.to_string()),
            ends_at: Some(rec.ends_at()),
            created_by: by.clone(),
        };
        let served = self.meetings.create_meeting(req, origin).await?;
        let meeting = served.value.id;
        rec.telehealth_room_id = Some(meeting);
        self.sign_link(rec, meeting, origin);
        Ok(())
    }

    /// The patient's link, whose invite lives until the visit's end plus `INVITE_GRACE`.
    fn sign_link(&self, rec: &mut AppointmentRecord, meeting: MeetingId, origin: &Origin) {
        let invite = self.auth.issue_invite(meeting, Some(rec.ends_at()));
        rec.telehealth_link = Some(format!("{}{}", origin.http_base(), join_path(meeting, &invite)));
    }

    /// Deletes a meeting the appointment no longer has. A failure is logged, not returned: the appointment
    /// change is already stored, and the lifecycle cleanup deletes the meeting after its `ends_at` anyway.
    async fn detach_meeting(&self, meeting: Option<MeetingId>, by: &AuditActor) {
        let Some(id) = meeting else { return };
        match self.meetings.delete_meeting(id, by).await {
            Ok(_) | Err(MeetingError::NotFound) => {}
            Err(e) => tracing::warn!(meeting_id = %id, error = %e, "could not delete an appointment's meeting"),
        }
    }

    /// An update that made a meeting and then was not stored: that meeting must not outlive it.
    async fn undo_new_meeting(&self, old: &AppointmentRecord, new: &AppointmentRecord, by: &AuditActor) {
        if old.telehealth_room_id.is_none() {
            self.detach_meeting(new.telehealth_room_id, by).await;
        }
    }

    fn line(&self, action: AuditAction, rec: &AppointmentRecord, by: &AuditActor) -> AuditEntry {
        AuditEntry {
            action,
            meeting_id: rec.telehealth_room_id,
            appointment_id: Some(rec.id),
            actor: by.clone(),
            detail: Some(format!("modality={} status={}", rec.modality.as_str(), rec.status.as_str())),
            ..Default::default()
        }
    }
}

/// Microseconds are what PostgreSQL keeps; records compare equal to what is read back.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}
