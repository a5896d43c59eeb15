//! The local provider: meetings live in our store and media flows through our own SFU. Nothing leaves the
//! machine, which is what an offline clinic (and demo mode) needs.

use super::*;
use crate::auth::Auth;
use crate::store::{AttendeeRecord, AuditAction, AuditEntry, InsertAttendee, MeetingRecord, Store};
use chrono::Utc;
use std::sync::Arc;

pub struct LocalProvider {
    store: Arc<dyn Store>,
    auth: Arc<Auth>,
    media_region: String,
}

impl LocalProvider {
    pub const NAME: &'static str = "local";

    pub fn new(store: Arc<dyn Store>, auth: Arc<Auth>, media_region: String) -> Self {
        Self { store, auth, media_region }
    }

    fn to_meeting(&self, rec: &MeetingRecord, origin: &Origin) -> Meeting {
        let (http, ws) = (origin.http_base(), origin.ws_base());
        let signaling = format!("{ws}/ws");
        Meeting {
            meeting_id: rec.id,
            external_meeting_id: rec.external_meeting_id.clone(),
            media_region: rec.media_region.clone(),
            // Only SignalingUrl is used by our join page; the rest point at this gateway so that every field
            // Chime always returns is present and well-formed.
            media_placement: MediaPlacement {
                audio_host_url: origin.authority.clone(),
                audio_fallback_url: signaling.clone(),
                signaling_url: signaling.clone(),
                turn_control_url: format!("{http}/turn"),
                screen_data_url: signaling.clone(),
                screen_sharing_url: signaling.clone(),
                screen_viewing_url: signaling,
                event_ingestion_url: format!("{http}/events"),
            },
            meeting_features: MeetingFeatures::default(),
            meeting_arn: format!("arn:aws:chime:{}:000000000000:meeting/{}", rec.media_region, rec.id),
        }
    }
}

fn to_attendee(rec: AttendeeRecord, join_token: Option<String>) -> Attendee {
    Attendee {
        external_user_id: rec.external_user_id,
        attendee_id: rec.attendee_id,
        join_token,
        capabilities: Capabilities::default(),
    }
}

#[async_trait::async_trait]
impl MeetingProvider for LocalProvider {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn demo_mode(&self) -> bool {
        true
    }

    async fn create_meeting(&self, req: CreateMeeting, origin: &Origin) -> Result<Meeting, MeetingError> {
        let id = MeetingId::new();
        // Chime requires an ExternalMeetingId; ours is optional, so derive one the way the seed EHR does
        // (`appointment-<id>`), or fall back to the MeetingId itself. Both satisfy the 2–64 rule.
        let external_meeting_id = match (req.external_meeting_id, &req.appointment_id) {
            (Some(e), _) => e,
            (None, Some(appt)) => ExternalMeetingId::parse(&format!("appointment-{appt}"))
                .or_else(|_| ExternalMeetingId::parse(&id.to_string()))
                .expect("a GUID is a valid ExternalMeetingId"),
            (None, None) => ExternalMeetingId::parse(&id.to_string()).expect("a GUID is a valid ExternalMeetingId"),
        };
        let rec = MeetingRecord {
            id,
            external_meeting_id,
            appointment_id: req.appointment_id,
            provider: Self::NAME.into(),
            media_region: self.media_region.clone(),
            created_at: Utc::now(),
            deleted_at: None,
        };
        let audit = audit_line(AuditAction::MeetingCreated, id, None, &req.created_by);
        self.store.insert_meeting(&rec, &audit).await?;
        Ok(self.to_meeting(&rec, origin))
    }

    async fn create_attendee(
        &self,
        meeting: MeetingId,
        name: ExternalUserId,
        by: &AuditActor,
    ) -> Result<Attendee, MeetingError> {
        let rec = AttendeeRecord { meeting_id: meeting, attendee_id: AttendeeId::new(), external_user_id: name, created_at: Utc::now() };
        let audit = audit_line(AuditAction::AttendeeCreated, meeting, Some(rec.attendee_id), by);
        match self.store.insert_attendee(&rec, MAX_ATTENDEES, &audit).await? {
            InsertAttendee::Inserted => {}
            InsertAttendee::MeetingNotFound => return Err(MeetingError::NotFound),
            InsertAttendee::LimitReached => return Err(MeetingError::AttendeeLimit),
        }
        // Local meetings have no scheduled end, so the token lives for the configured TTL (or until the
        // meeting is deleted: joins re-check the store).
        let token = self.auth.issue_join_token(meeting, rec.attendee_id, None);
        Ok(to_attendee(rec, Some(token)))
    }

    async fn get_meeting(&self, meeting: MeetingId, origin: &Origin) -> Result<Meeting, MeetingError> {
        let rec = self.store.find_live_meeting(meeting).await?.ok_or(MeetingError::NotFound)?;
        Ok(self.to_meeting(&rec, origin))
    }

    async fn list_attendees(&self, meeting: MeetingId) -> Result<Vec<Attendee>, MeetingError> {
        // Distinguish "no attendees yet" from "no such meeting".
        self.store.find_live_meeting(meeting).await?.ok_or(MeetingError::NotFound)?;
        let list = self.store.list_attendees(meeting).await?;
        Ok(list.into_iter().map(|a| to_attendee(a, None)).collect())
    }

    async fn delete_meeting(&self, meeting: MeetingId, by: &AuditActor) -> Result<(), MeetingError> {
        let audit = audit_line(AuditAction::MeetingDeleted, meeting, None, by);
        if self.store.mark_meeting_deleted(meeting, &audit).await? { Ok(()) } else { Err(MeetingError::NotFound) }
    }
}

/// The audit line the store writes in the same transaction as a meeting, an attendee or a deletion.
fn audit_line(action: AuditAction, meeting: MeetingId, attendee: Option<AttendeeId>, by: &AuditActor) -> AuditEntry {
    AuditEntry {
        action,
        meeting_id: Some(meeting),
        attendee_id: attendee,
        actor: by.clone(),
        detail: Some(format!("provider={}", LocalProvider::NAME)),
    }
}
