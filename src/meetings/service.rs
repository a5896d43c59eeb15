//! The meetings service: the one place that decides which backend serves a meeting, stores what it created
//! together with its audit line, and sends every later call for a meeting to the backend that created it.
//!
//! Order of effects, so a failure never leaves something half-done behind:
//! - create: the backend first (its ids are needed), then the row and its `meeting.created` line in one
//!   transaction; if that fails, the provider's meeting is deleted again (best effort);
//! - create-attendee: likewise, the row and its `attendee.created` line in one transaction, so there is never
//!   an unaudited seat (the store also enforces the 250-attendee limit atomically);
//! - delete: the provider first, then the row is marked deleted (with its line), then the room is emptied, so
//!   nobody can rejoin while it empties.

use super::backend::{BackendError, MeetingBackend, NewMeeting, ProviderErrorKind};
use super::types::*;
use crate::ids::{ExternalMeetingId, ExternalUserId, MeetingId, Provider};
use crate::room::Rooms;
use crate::store::{AttendeeRecord, AuditAction, AuditActor, AuditEntry, InsertAttendee, MeetingRecord, Store, StoreError};
use crate::ids::AttendeeId;
use chrono::Utc;
use std::sync::Arc;

/// Chime's attendee limit per meeting.
pub const MAX_ATTENDEES: u32 = 250;

pub struct CreateMeeting {
    pub external_meeting_id: Option<ExternalMeetingId>,
    pub appointment_id: Option<String>,
    /// Who asks: recorded in the `meeting.created` audit line, written in the same transaction as the meeting.
    pub created_by: AuditActor,
}

/// A result and the provider of the meeting it is about.
#[derive(Debug)]
pub struct Served<T> {
    pub provider: Provider,
    pub value: T,
}

#[derive(Debug, thiserror::Error)]
pub enum MeetingError {
    #[error("meeting not found")]
    NotFound,
    #[error("the meeting already has the maximum of {MAX_ATTENDEES} attendees")]
    AttendeeLimit,
    #[error("no provider can take more meetings right now")]
    Unavailable,
    /// The meeting's provider refused or failed.
    #[error("{provider} provider: {source}")]
    Provider { provider: Provider, source: BackendError },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct MeetingService {
    store: Arc<dyn Store>,
    rooms: Arc<Rooms>,
    local: Arc<dyn MeetingBackend>,
    /// Where new meetings go.
    primary: Provider,
    /// True when no AWS credentials are in use (the seed's DEMO MODE rule).
    demo_mode: bool,
}

impl MeetingService {
    pub fn new(store: Arc<dyn Store>, rooms: Arc<Rooms>, local: Arc<dyn MeetingBackend>) -> Self {
        Self { store, rooms, local, primary: Provider::Local, demo_mode: true }
    }

    pub fn demo_mode(&self) -> bool {
        self.demo_mode
    }

    /// Where new meetings go first.
    pub fn primary(&self) -> Provider {
        self.primary
    }

    fn backend(&self, provider: Provider) -> Result<&Arc<dyn MeetingBackend>, MeetingError> {
        match provider {
            Provider::Local => Ok(&self.local),
            Provider::Chime => Err(MeetingError::Unavailable),
        }
    }

    /// The stored meeting and the backend that serves it.
    async fn live(&self, id: MeetingId) -> Result<(MeetingRecord, &Arc<dyn MeetingBackend>), MeetingError> {
        let rec = self.store.find_live_meeting(id).await?.ok_or(MeetingError::NotFound)?;
        let provider = Provider::parse(&rec.provider)
            .ok_or_else(|| StoreError(anyhow::anyhow!("stored meeting has an unknown provider")))?;
        Ok((rec, self.backend(provider)?))
    }

    pub async fn create_meeting(&self, req: CreateMeeting, origin: &Origin) -> Result<Served<MeetingDoc>, MeetingError> {
        // Chime requires an ExternalMeetingId; derive one the way the seed EHR does (`appointment-<id>`).
        let external_meeting_id = req.external_meeting_id.or_else(|| {
            req.appointment_id.as_ref().and_then(|appt| ExternalMeetingId::parse(&format!("appointment-{appt}")).ok())
        });
        let new = NewMeeting { external_meeting_id, client_request_token: uuid::Uuid::new_v4().to_string() };
        let backend = self.backend(self.primary)?;
        let provider = backend.provider();
        let doc = backend.create_meeting(&new, origin).await.map_err(|source| MeetingError::Provider { provider, source })?;
        let external_meeting_id = doc
            .field("ExternalMeetingId")
            .and_then(|s| ExternalMeetingId::parse(s).ok())
            .or(new.external_meeting_id)
            .ok_or(MeetingError::Provider { provider, source: BackendError::Failed(anyhow::anyhow!("no ExternalMeetingId")) })?;
        let rec = MeetingRecord {
            id: doc.id,
            external_meeting_id,
            appointment_id: req.appointment_id,
            provider: provider.as_str().into(),
            media_region: doc.field("MediaRegion").unwrap_or_default().to_owned(),
            created_at: Utc::now(),
            deleted_at: None,
        };
        let audit = audit_line(AuditAction::MeetingCreated, doc.id, None, &req.created_by, provider);
        if let Err(e) = self.store.insert_meeting(&rec, &audit).await {
            // Not stored means not ours: do not leave a meeting running at the provider.
            if let Err(undo) = backend.delete_meeting(&rec).await {
                tracing::warn!(meeting_id = %rec.id, %provider, error = %undo, "could not delete an unstored meeting");
            }
            return Err(e.into());
        }
        Ok(Served { provider, value: doc })
    }

    /// Creates an attendee with a fresh JoinToken and returns it with its meeting (the join page needs both).
    pub async fn create_attendee(
        &self,
        id: MeetingId,
        name: ExternalUserId,
        by: &AuditActor,
        origin: &Origin,
    ) -> Result<Served<(AttendeeDoc, MeetingDoc)>, MeetingError> {
        let (rec, backend) = self.live(id).await?;
        let provider = backend.provider();
        let attendee =
            backend.create_attendee(&rec, &name).await.map_err(|source| MeetingError::Provider { provider, source })?;
        let row = AttendeeRecord {
            meeting_id: id,
            attendee_id: attendee.attendee_id,
            external_user_id: attendee.external_user_id.clone(),
            created_at: Utc::now(),
        };
        let audit = audit_line(AuditAction::AttendeeCreated, id, Some(row.attendee_id), by, provider);
        match self.store.insert_attendee(&row, MAX_ATTENDEES, &audit).await? {
            InsertAttendee::Inserted => {}
            InsertAttendee::MeetingNotFound => return Err(MeetingError::NotFound),
            InsertAttendee::LimitReached => return Err(MeetingError::AttendeeLimit),
        }
        let meeting = backend.get_meeting(&rec, origin).await.map_err(|source| MeetingError::Provider { provider, source })?;
        Ok(Served { provider, value: (attendee, meeting) })
    }

    pub async fn get_meeting(&self, id: MeetingId, origin: &Origin) -> Result<Served<MeetingDoc>, MeetingError> {
        let (rec, backend) = self.live(id).await?;
        let provider = backend.provider();
        let doc = backend.get_meeting(&rec, origin).await.map_err(|source| MeetingError::Provider { provider, source })?;
        Ok(Served { provider, value: doc })
    }

    /// Attendees without their JoinTokens.
    pub async fn list_attendees(&self, id: MeetingId) -> Result<Served<Vec<AttendeeDoc>>, MeetingError> {
        let (rec, backend) = self.live(id).await?;
        let provider = backend.provider();
        let stored = self.store.list_attendees(id).await?;
        let list =
            backend.list_attendees(&rec, stored).await.map_err(|source| MeetingError::Provider { provider, source })?;
        Ok(Served { provider, value: list.into_iter().map(AttendeeDoc::without_join_token).collect() })
    }

    /// Ends the meeting at its provider and here; `by` is recorded in its `meeting.deleted` audit line.
    pub async fn delete_meeting(&self, id: MeetingId, by: &AuditActor) -> Result<Served<()>, MeetingError> {
        let (rec, backend) = self.live(id).await?;
        let provider = backend.provider();
        match backend.delete_meeting(&rec).await {
            // Already gone at the provider: what is left to do is ours.
            Ok(()) | Err(BackendError::NotFound) => {}
            Err(source) => return Err(MeetingError::Provider { provider, source }),
        }
        let audit = audit_line(AuditAction::MeetingDeleted, id, None, by, provider);
        if !self.store.mark_meeting_deleted(id, &audit).await? {
            return Err(MeetingError::NotFound);
        }
        // Marked deleted first, so nobody can rejoin while the room is being emptied.
        self.rooms.end_meeting(id, signaling::EndReason::Deleted).await;
        Ok(Served { provider, value: () })
    }
}

impl MeetingError {
    /// The contract's code for a provider failure, if it is one.
    pub fn provider_kind(&self) -> Option<ProviderErrorKind> {
        match self {
            MeetingError::Provider { source: BackendError::Provider { kind, .. }, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// The audit line the store writes in the same transaction as a meeting, an attendee or a deletion.
fn audit_line(
    action: AuditAction,
    meeting: MeetingId,
    attendee: Option<AttendeeId>,
    by: &AuditActor,
    provider: Provider,
) -> AuditEntry {
    AuditEntry {
        action,
        meeting_id: Some(meeting),
        attendee_id: attendee,
        actor: by.clone(),
        detail: Some(format!("provider={provider}")),
    }
}
