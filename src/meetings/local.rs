//! The local backend: media flows through our own SFU, so "creating" a meeting is naming it and shaping it the
//! way Chime would; nothing leaves the machine, which is what an offline clinic (and demo mode) needs. Its
//! meetings and attendees are the service's store rows; JoinTokens are ours, signed by `auth`.

use super::backend::{BackendError, MeetingBackend, NewMeeting};
use super::types::*;
use crate::auth::Auth;
use crate::ids::{AttendeeId, ExternalMeetingId, ExternalUserId, MeetingId, Provider};
use crate::room::Rooms;
use crate::store::{AttendeeRecord, MeetingRecord};
use std::sync::Arc;
use std::time::Duration;

/// How much the local SFU takes before new meetings go elsewhere (`LOCAL_MAX_MEETINGS`,
/// `LOCAL_MAX_PARTICIPANTS`; None: no limit).
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalCapacity {
    pub max_meetings: Option<usize>,
    pub max_participants: Option<usize>,
}

pub struct LocalBackend {
    auth: Arc<Auth>,
    rooms: Arc<Rooms>,
    media_region: String,
    capacity: LocalCapacity,
    /// How long after a meeting's `ends_at` its JoinTokens still work.
    grace: Duration,
}

impl LocalBackend {
    pub fn new(auth: Arc<Auth>, rooms: Arc<Rooms>, media_region: String, capacity: LocalCapacity, grace: Duration) -> Self {
        Self { auth, rooms, media_region, capacity, grace }
    }

    /// At capacity when the meetings with someone connected, or the participants connected, reach the limit.
    fn at_capacity(&self) -> bool {
        let full = |limit: Option<usize>, now: usize| limit.is_some_and(|max| now >= max);
        full(self.capacity.max_meetings, self.rooms.meeting_count())
            || full(self.capacity.max_participants, self.rooms.total_participants())
    }

    fn meeting(&self, id: MeetingId, external_meeting_id: ExternalMeetingId, media_region: &str, origin: &Origin) -> Meeting {
        let (http, ws) = (origin.http_base(), origin.ws_base());
        let signaling = format!("{ws}/ws");
        Meeting {
            meeting_id: id,
            external_meeting_id,
            media_region: media_region.to_owned(),
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
            meeting_arn: format!("arn:aws:chime:{media_region}:000000000000:meeting/{id}"),
        }
    }
}

fn attendee(attendee_id: AttendeeId, name: ExternalUserId, join_token: Option<String>) -> AttendeeDoc {
    AttendeeDoc::from_attendee(&Attendee {
        external_user_id: name,
        attendee_id,
        join_token,
        capabilities: Capabilities::default(),
    })
}

#[async_trait::async_trait]
impl MeetingBackend for LocalBackend {
    fn provider(&self) -> Provider {
        Provider::Local
    }

    fn rebuilds_meetings(&self) -> bool {
        true
    }

    async fn create_meeting(&self, req: &NewMeeting, origin: &Origin) -> Result<MeetingDoc, BackendError> {
        if self.at_capacity() {
            return Err(BackendError::AtCapacity);
        }
        let id = MeetingId::new();
        // Chime requires an ExternalMeetingId and ours is optional: without one, the MeetingId itself (a GUID
        // satisfies the 2–64 rule).
        let external_meeting_id = match &req.external_meeting_id {
            Some(e) => e.clone(),
            None => ExternalMeetingId::parse(&id.to_string()).expect("a GUID is a valid ExternalMeetingId"),
        };
        Ok(MeetingDoc::from_meeting(&self.meeting(id, external_meeting_id, &self.media_region, origin)))
    }

    async fn create_attendee(&self, meeting: &MeetingRecord, name: &ExternalUserId) -> Result<AttendeeDoc, BackendError> {
        let attendee_id = AttendeeId::new();
        // The token lives for the configured TTL, ends with the visit's window when it has one, and dies with
        // the meeting (joins re-check the store, where the service stores this attendee).
        let window_end = meeting.ends_at.map(|end| end.timestamp().saturating_add(self.grace.as_secs() as i64));
        let token = self.auth.issue_join_token(meeting.id, attendee_id, window_end);
        Ok(attendee(attendee_id, name.clone(), Some(token)))
    }

    async fn get_meeting(&self, meeting: &MeetingRecord, origin: &Origin) -> Result<MeetingDoc, BackendError> {
        let m = self.meeting(meeting.id, meeting.external_meeting_id.clone(), &meeting.media_region, origin);
        Ok(MeetingDoc::from_meeting(&m))
    }

    async fn list_attendees(
        &self,
        _meeting: &MeetingRecord,
        stored: Vec<AttendeeRecord>,
    ) -> Result<Vec<AttendeeDoc>, BackendError> {
        Ok(stored.into_iter().map(|a| attendee(a.attendee_id, a.external_user_id, None)).collect())
    }

    async fn delete_meeting(&self, _meeting: &MeetingRecord) -> Result<(), BackendError> {
        // Nothing to call: the service marks the meeting deleted and empties its room.
        Ok(())
    }
}
