//! The meetings service: the one place that decides which backend serves a meeting, stores what it created
//! together with its audit line, and sends every later call for a meeting to the backend that created it.
//!
//! Routing: new meetings go to the primary provider (`TELEHEALTH_PROVIDER`; `auto` = Chime when AWS keys are
//! set). When it cannot take one (Chime throttled, failing, unreachable or too slow; the local SFU at capacity)
//! the meeting is created on the other provider if failover is on and that one exists; the response and the
//! audit line say so. A meeting's provider is stored with it, so every later call (attendees, lookups,
//! deletion) goes to the same one, across restarts too.
//!
//! Order of effects, so a failure never leaves something half-done behind:
//! - create: the backend first (its ids are needed), then the row and its `meeting.created` line in one
//!   transaction; if that fails, the provider's meeting is deleted again (best effort);
//! - create-attendee: likewise, the row and its `attendee.created` line in one transaction, so there is never
//!   an unaudited seat (the store also enforces the 250-attendee limit atomically);
//! - delete: the provider first, then the row is marked deleted (with its line), then the room is emptied, so
//!   nobody can rejoin while it empties.
//!
//! Idempotency: a create-meeting for an appointment that already has a live meeting returns that meeting.
//! Requests for one appointment are serialised in this process (striped locks); across processes sharing a
//! database, a unique index on live meetings' appointments decides and the loser's meeting is withdrawn.

use super::backend::{BackendError, MeetingBackend, NewMeeting};
use super::types::*;
use crate::ids::{AttendeeId, ExternalMeetingId, ExternalUserId, MeetingId, Provider, Role};
use crate::metrics::{Metrics, ProviderOp};
use crate::room::Rooms;
use crate::store::{
    AttendeeRecord, AuditAction, AuditActor, AuditEntry, InsertAttendee, InsertMeeting, MeetingRecord, Store, StoreError,
};
use chrono::{DateTime, Utc};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Chime's attendee limit per meeting.
pub const MAX_ATTENDEES: u32 = 250;
/// Stripes of the per-appointment lock: requests for different appointments rarely wait on each other.
const APPOINTMENT_LOCKS: usize = 64;

pub struct CreateMeeting {
    pub external_meeting_id: Option<ExternalMeetingId>,
    pub appointment_id: Option<String>,
    /// When the visit is over (the appointment's end), if the caller knows.
    pub ends_at: Option<DateTime<Utc>>,
    /// Who asks: recorded in the `meeting.created` audit line, written in the same transaction as the meeting.
    pub created_by: AuditActor,
}

/// The backends a service can route to.
pub struct Backends {
    pub local: Arc<dyn MeetingBackend>,
    /// None when Chime is not configured.
    pub chime: Option<Arc<dyn MeetingBackend>>,
}

/// Where new meetings go.
#[derive(Debug, Clone, Copy)]
pub struct Routing {
    pub primary: Provider,
    /// Create on the other provider when the primary cannot.
    pub failover: bool,
}

/// A new meeting went to the other provider: from which one, and why (a fixed name such as `Throttling`,
/// `ServiceUnavailable`, `Timeout`, `Unreachable`, `AtCapacity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failover {
    pub from: Provider,
    pub reason: &'static str,
}

/// A result and the provider of the meeting it is about.
#[derive(Debug)]
pub struct Served<T> {
    pub provider: Provider,
    /// Set when a new meeting was created on the other provider.
    pub failover: Option<Failover>,
    pub value: T,
}

impl<T> Served<T> {
    fn by(provider: Provider, value: T) -> Self {
        Self { provider, failover: None, value }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MeetingError {
    #[error("meeting not found")]
    NotFound,
    #[error("the meeting already has the maximum of {MAX_ATTENDEES} attendees")]
    AttendeeLimit,
    /// Neither provider could take a new meeting.
    #[error("no video service can take a new meeting right now")]
    Unavailable,
    /// The meeting belongs to a provider this gateway is not configured for (e.g. Chime after its keys were
    /// removed).
    #[error("the meeting's provider ({0}) is not configured on this gateway")]
    NotConfigured(Provider),
    /// The meeting's provider refused or failed.
    #[error("{provider} provider: {source}")]
    Provider { provider: Provider, source: BackendError },
    /// Another live meeting holds the appointment (a race between processes sharing one database).
    #[error("another live meeting belongs to this appointment")]
    AppointmentTaken,
    /// Well-formed but not acceptable here (e.g. presence reports for a local meeting).
    #[error("{0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct MeetingService {
    pub(super) store: Store,
    pub(super) rooms: Arc<Rooms>,
    pub(super) metrics: Arc<Metrics>,
    backends: Backends,
    routing: Routing,
    /// Names this process in the sessions it holds (see `store::SessionRecord::node`).
    pub(super) node: String,
    appointment_locks: Vec<tokio::sync::Mutex<()>>,
}

impl MeetingService {
    pub fn new(store: Store, rooms: Arc<Rooms>, metrics: Arc<Metrics>, backends: Backends, routing: Routing) -> Self {
        let routing = match (routing.primary, &backends.chime) {
            // Chime as the primary needs a Chime backend; the caller should not ask for it without one.
            (Provider::Chime, None) => Routing { primary: Provider::Local, ..routing },
            _ => routing,
        };
        Self {
            store,
            rooms,
            metrics,
            backends,
            routing,
            node: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
            appointment_locks: (0..APPOINTMENT_LOCKS).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    /// True when no Chime backend is configured: the seed's DEMO MODE (the join page shows a banner).
    pub fn demo_mode(&self) -> bool {
        self.backends.chime.is_none()
    }

    /// Where new meetings go first.
    pub fn primary(&self) -> Provider {
        self.routing.primary
    }

    /// Whether a new meeting goes to the other provider when the primary cannot take it.
    pub fn failover(&self) -> bool {
        self.routing.failover
    }

    pub(super) fn backend(&self, provider: Provider) -> Result<&Arc<dyn MeetingBackend>, MeetingError> {
        match provider {
            Provider::Local => Ok(&self.backends.local),
            Provider::Chime => self.backends.chime.as_ref().ok_or(MeetingError::NotConfigured(Provider::Chime)),
        }
    }

    /// Where a new meeting goes when `from` cannot take it, if anywhere.
    fn failover_target(&self, from: Provider) -> Option<&Arc<dyn MeetingBackend>> {
        if !self.routing.failover {
            return None;
        }
        self.backend(from.other()).ok()
    }

    /// Runs one backend call and counts it (and its failure) by provider and operation.
    async fn call<T>(
        &self,
        provider: Provider,
        op: ProviderOp,
        fut: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        let result = fut.await;
        self.metrics.provider_call(provider, op, result.as_ref().err().map(BackendError::code));
        result
    }

    /// The stored, live meeting.
    async fn live(&self, id: MeetingId) -> Result<MeetingRecord, MeetingError> {
        self.store.find_live_meeting(id).await?.ok_or(MeetingError::NotFound)
    }

    pub async fn create_meeting(&self, req: CreateMeeting, origin: &Origin) -> Result<Served<MeetingDoc>, MeetingError> {
        let Some(appointment) = req.appointment_id.clone() else {
            return self.create_new(req, origin).await;
        };
        let _serialised = self.appointment_locks[stripe(&appointment)].lock().await;
        if let Some(existing) = self.existing_for_appointment(&appointment, origin).await? {
            return Ok(existing);
        }
        match self.create_new(req, origin).await {
            // Another process won the race for this appointment: its meeting is the one.
            Err(MeetingError::AppointmentTaken) => {
                self.existing_for_appointment(&appointment, origin).await?.ok_or(MeetingError::Unavailable)
            }
            other => other,
        }
    }

    /// The appointment's live meeting, confirmed with its provider. One the provider has already ended is
    /// marked deleted here, and None is returned so a new one is made.
    async fn existing_for_appointment(
        &self,
        appointment: &str,
        origin: &Origin,
    ) -> Result<Option<Served<MeetingDoc>>, MeetingError> {
        let Some(rec) = self.store.find_live_meeting_for_appointment(appointment).await? else { return Ok(None) };
        let provider = rec.provider;
        let stored = rec.provider_meeting.clone().and_then(|v| MeetingDoc::from_json(v).ok());
        let Ok(backend) = self.backend(provider) else {
            // Not reachable from here; what we stored is all we know, and the meeting is still the one.
            return Ok(stored.map(|doc| Served::by(provider, doc)));
        };
        match self.call(provider, ProviderOp::GetMeeting, backend.get_meeting(&rec, origin)).await {
            Ok(doc) => Ok(Some(Served::by(provider, doc))),
            Err(BackendError::NotFound) => {
                self.forget_gone(&rec).await?;
                Ok(None)
            }
            // The provider is busy or down; the meeting is still the appointment's.
            Err(source) => match stored {
                Some(doc) => Ok(Some(Served::by(provider, doc))),
                None => Err(MeetingError::Provider { provider, source }),
            },
        }
    }

    /// Creates a meeting on the primary, or on the other provider if the primary cannot, and stores it.
    async fn create_new(&self, req: CreateMeeting, origin: &Origin) -> Result<Served<MeetingDoc>, MeetingError> {
        // Chime requires an ExternalMeetingId; derive one the way the seed EHR does (`appointment-<id>`).
        let external_meeting_id = req.external_meeting_id.clone().or_else(|| {
            req.appointment_id.as_ref().and_then(|appt| ExternalMeetingId::parse(&format!("appointment-{appt}")).ok())
        });
        let new = NewMeeting { external_meeting_id, client_request_token: uuid::Uuid::new_v4().to_string() };
        let primary = self.backend(self.routing.primary)?;
        let (backend, doc, failover) =
            match self.call(primary.provider(), ProviderOp::CreateMeeting, primary.create_meeting(&new, origin)).await {
                Ok(doc) => (primary, doc, None),
                Err(e) => {
                    let from = primary.provider();
                    let (Some(reason), Some(other)) = (e.failover_reason(), self.failover_target(from)) else {
                        return Err(match e {
                            BackendError::AtCapacity => MeetingError::Unavailable,
                            source => MeetingError::Provider { provider: from, source },
                        });
                    };
                    tracing::warn!(%from, to = %other.provider(), reason, error = %e, "failing over a new meeting");
                    self.metrics.failover(from, other.provider(), reason);
                    let to = other.provider();
                    match self.call(to, ProviderOp::CreateMeeting, other.create_meeting(&new, origin)).await {
                        Ok(doc) => (other, doc, Some(Failover { from, reason })),
                        Err(second) => {
                            tracing::error!(provider = %to, error = %second, "failover failed too");
                            return Err(MeetingError::Unavailable);
                        }
                    }
                }
            };
        let provider = backend.provider();
        let rec = MeetingRecord {
            id: doc.id,
            external_meeting_id: doc
                .field("ExternalMeetingId")
                .and_then(|s| ExternalMeetingId::parse(s).ok())
                .or(new.external_meeting_id)
                .unwrap_or_else(|| ExternalMeetingId::parse(&doc.id.to_string()).expect("a GUID is a valid id")),
            appointment_id: req.appointment_id,
            provider,
            media_region: doc.field("MediaRegion").unwrap_or_default().to_owned(),
            created_at: Utc::now(),
            deleted_at: None,
            ends_at: req.ends_at,
            provider_meeting: (!backend.rebuilds_meetings()).then(|| doc.to_json()),
        };
        let mut detail = format!("provider={provider}");
        if let Some(f) = failover {
            detail.push_str(&format!(" failover_from={} reason={}", f.from, f.reason));
        }
        let audit = AuditEntry { detail: Some(detail), ..audit_line(AuditAction::MeetingCreated, doc.id, None, &req.created_by, provider) };
        let stored = self.store.insert_meeting(&rec, &audit).await;
        if !matches!(stored, Ok(InsertMeeting::Inserted)) {
            // Not stored means not ours: do not leave a meeting running at the provider.
            if let Err(undo) = self.call(provider, ProviderOp::DeleteMeeting, backend.delete_meeting(&rec)).await {
                tracing::warn!(meeting_id = %rec.id, %provider, error = %undo, "could not delete an unstored meeting");
            }
        }
        match stored? {
            InsertMeeting::Inserted => Ok(Served { provider, failover, value: doc }),
            InsertMeeting::AppointmentTaken => Err(MeetingError::AppointmentTaken),
        }
    }

    /// Creates an attendee with a fresh JoinToken and returns it with its meeting (the join page needs both).
    /// `role` is stored with it (and named in its `attendee.created` line), never sent to the provider: Chime's
    /// `Attendee` has no room for it.
    pub async fn create_attendee(
        &self,
        id: MeetingId,
        name: ExternalUserId,
        role: Role,
        by: &AuditActor,
        origin: &Origin,
    ) -> Result<Served<(AttendeeDoc, MeetingDoc)>, MeetingError> {
        let rec = self.live(id).await?;
        let provider = rec.provider;
        let backend = self.backend(provider)?;
        let attendee = match self.call(provider, ProviderOp::CreateAttendee, backend.create_attendee(&rec, &name)).await {
            Ok(a) => a,
            Err(source) => return Err(self.provider_failed(&rec, source).await),
        };
        let row = AttendeeRecord {
            meeting_id: id,
            attendee_id: attendee.attendee_id,
            external_user_id: attendee.external_user_id.clone(),
            role,
            created_at: Utc::now(),
        };
        let audit = with_role(audit_line(AuditAction::AttendeeCreated, id, Some(row.attendee_id), by, provider), role);
        match self.store.insert_attendee(&row, MAX_ATTENDEES, &audit).await? {
            InsertAttendee::Inserted => {}
            InsertAttendee::MeetingNotFound => return Err(MeetingError::NotFound),
            InsertAttendee::LimitReached => return Err(MeetingError::AttendeeLimit),
        }
        let meeting = match rec.provider_meeting.clone().map(MeetingDoc::from_json) {
            Some(Ok(doc)) => doc,
            _ => match self.call(provider, ProviderOp::GetMeeting, backend.get_meeting(&rec, origin)).await {
                Ok(doc) => doc,
                Err(source) => return Err(self.provider_failed(&rec, source).await),
            },
        };
        Ok(Served::by(provider, (attendee, meeting)))
    }

    pub async fn get_meeting(&self, id: MeetingId, origin: &Origin) -> Result<Served<MeetingDoc>, MeetingError> {
        let rec = self.live(id).await?;
        let backend = self.backend(rec.provider)?;
        match self.call(rec.provider, ProviderOp::GetMeeting, backend.get_meeting(&rec, origin)).await {
            Ok(doc) => Ok(Served::by(rec.provider, doc)),
            Err(source) => Err(self.provider_failed(&rec, source).await),
        }
    }

    /// Attendees without their JoinTokens.
    pub async fn list_attendees(&self, id: MeetingId) -> Result<Served<Vec<AttendeeDoc>>, MeetingError> {
        let rec = self.live(id).await?;
        let backend = self.backend(rec.provider)?;
        let stored = self.store.list_attendees(id).await?;
        match self.call(rec.provider, ProviderOp::ListAttendees, backend.list_attendees(&rec, stored)).await {
            Ok(list) => Ok(Served::by(rec.provider, list.into_iter().map(AttendeeDoc::without_join_token).collect())),
            Err(source) => Err(self.provider_failed(&rec, source).await),
        }
    }

    /// Ends the meeting at its provider and here; `by` is recorded in its `meeting.deleted` audit line.
    pub async fn delete_meeting(&self, id: MeetingId, by: &AuditActor) -> Result<Served<()>, MeetingError> {
        let rec = self.live(id).await?;
        self.delete_record(&rec, by, None).await?;
        Ok(Served::by(rec.provider, ()))
    }

    /// Deletes a stored meeting at its provider (already gone there is fine) and here. `reason` goes into the
    /// audit line (cleanup says why).
    pub(super) async fn delete_record(
        &self,
        rec: &MeetingRecord,
        by: &AuditActor,
        reason: Option<&str>,
    ) -> Result<(), MeetingError> {
        let backend = self.backend(rec.provider)?;
        match self.call(rec.provider, ProviderOp::DeleteMeeting, backend.delete_meeting(rec)).await {
            Ok(()) | Err(BackendError::NotFound) => {}
            Err(source) => return Err(MeetingError::Provider { provider: rec.provider, source }),
        }
        self.mark_deleted(rec, by, reason).await
    }

    async fn mark_deleted(&self, rec: &MeetingRecord, by: &AuditActor, reason: Option<&str>) -> Result<(), MeetingError> {
        let mut audit = audit_line(AuditAction::MeetingDeleted, rec.id, None, by, rec.provider);
        if let (Some(reason), Some(detail)) = (reason, audit.detail.as_mut()) {
            detail.push_str(&format!(" reason={reason}"));
        }
        if !self.store.mark_meeting_deleted(rec.id, &audit).await? {
            return Err(MeetingError::NotFound);
        }
        // Marked deleted first, so nobody can rejoin while the room is being emptied.
        self.rooms.end_meeting(rec.id, signaling::EndReason::Deleted).await;
        Ok(())
    }

    /// The provider has already ended this meeting (Chime ends idle meetings itself): mark it deleted here too.
    pub(super) async fn forget_gone(&self, rec: &MeetingRecord) -> Result<(), MeetingError> {
        tracing::info!(meeting_id = %rec.id, provider = %rec.provider, "the provider had already ended the meeting");
        self.metrics.meeting_cleaned(rec.provider, "gone");
        match self.mark_deleted(rec, &AuditActor::System, Some("gone")).await {
            Ok(()) | Err(MeetingError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The error for a failed call about a stored meeting; a meeting its provider no longer has is forgotten.
    async fn provider_failed(&self, rec: &MeetingRecord, source: BackendError) -> MeetingError {
        if let BackendError::NotFound = source {
            if let Err(e) = self.forget_gone(rec).await {
                return e;
            }
            return MeetingError::NotFound;
        }
        MeetingError::Provider { provider: rec.provider, source }
    }
}

fn stripe(appointment: &str) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    appointment.hash(&mut h);
    (h.finish() as usize) % APPOINTMENT_LOCKS
}

/// Adds the attendee's role to an audit line's detail (`provider=local role=guest`): ids and roles only.
pub(super) fn with_role(mut line: AuditEntry, role: Role) -> AuditEntry {
    if let Some(detail) = line.detail.as_mut() {
        detail.push_str(&format!(" role={role}"));
    }
    line
}

/// The audit line the store writes in the same transaction as a change.
pub(super) fn audit_line(
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
        ..Default::default()
    }
}
