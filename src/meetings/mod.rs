//! Meeting providers behind one trait, and the Chime-shaped domain types they return.
//!
//! The types serialise exactly as Chime's `CreateMeeting` / `CreateAttendee` return them (PascalCase), so an
//! EHR written against Chime cannot tell which provider served a meeting.

pub mod local;

pub use local::LocalProvider;

use crate::ids::{AttendeeId, ExternalMeetingId, ExternalUserId, MeetingId};
use crate::store::{AuditActor, StoreError};
use serde::{Deserialize, Serialize};

/// Chime's attendee limit per meeting.
pub const MAX_ATTENDEES: u32 = 250;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Meeting {
    pub meeting_id: MeetingId,
    pub external_meeting_id: ExternalMeetingId,
    pub media_region: String,
    pub media_placement: MediaPlacement,
    pub meeting_features: MeetingFeatures,
    pub meeting_arn: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MediaPlacement {
    pub audio_host_url: String,
    pub audio_fallback_url: String,
    pub signaling_url: String,
    pub turn_control_url: String,
    pub screen_data_url: String,
    pub screen_sharing_url: String,
    pub screen_viewing_url: String,
    pub event_ingestion_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MeetingFeatures {
    pub audio: AudioFeatures,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AudioFeatures {
    pub echo_reduction: String,
}

impl Default for MeetingFeatures {
    fn default() -> Self {
        Self { audio: AudioFeatures { echo_reduction: "AVAILABLE".into() } }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Attendee {
    pub external_user_id: ExternalUserId,
    pub attendee_id: AttendeeId,
    /// Present when the attendee is created; absent in listings (Chime omits it there too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_token: Option<String>,
    pub capabilities: Capabilities,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Capabilities {
    pub audio: String,
    pub video: String,
    pub content: String,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self { audio: "SendReceive".into(), video: "SendReceive".into(), content: "SendReceive".into() }
    }
}

/// Where the caller reached us, so a local meeting's URLs point back at this gateway
/// (`ws://host/ws` over plain HTTP, `wss://host/ws` over HTTPS, or `APP_URL` when set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// `host[:port]`.
    pub authority: String,
}

impl Origin {
    /// From `APP_URL` (e.g. `https://clinic.example:8443`); None if it is not an http(s) URL.
    pub fn from_app_url(url: &str) -> Option<Self> {
        let (scheme, rest) = if let Some(r) = url.strip_prefix("https://") {
            ("https", r)
        } else {
            ("http", url.strip_prefix("http://")?)
        };
        let authority = rest.split('/').next().filter(|a| !a.is_empty())?;
        Some(Self { scheme, authority: authority.to_owned() })
    }
    pub fn http_base(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }
    pub fn ws_base(&self) -> String {
        let ws = if self.scheme == "https" { "wss" } else { "ws" };
        format!("{ws}://{}", self.authority)
    }
}

pub struct CreateMeeting {
    pub external_meeting_id: Option<ExternalMeetingId>,
    pub appointment_id: Option<String>,
    /// Who asks: recorded in the `meeting.created` audit line, written in the same transaction as the meeting.
    pub created_by: AuditActor,
}

#[derive(Debug, thiserror::Error)]
pub enum MeetingError {
    #[error("meeting not found")]
    NotFound,
    #[error("the meeting already has the maximum of {MAX_ATTENDEES} attendees")]
    AttendeeLimit,
    #[error("the provider cannot take more meetings right now")]
    Unavailable,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[async_trait::async_trait]
pub trait MeetingProvider: Send + Sync + 'static {
    /// `local` or `chime`: reported to callers as `provider`, remembered per meeting.
    fn name(&self) -> &'static str;
    /// True when no AWS credentials are in use (the UI shows a DEMO MODE banner).
    fn demo_mode(&self) -> bool;
    async fn create_meeting(&self, req: CreateMeeting, origin: &Origin) -> Result<Meeting, MeetingError>;
    /// Creates an attendee with a fresh JoinToken. `by` is recorded in its `attendee.created` audit line, written
    /// in the same transaction as the attendee.
    async fn create_attendee(&self, meeting: MeetingId, name: ExternalUserId, by: &AuditActor)
    -> Result<Attendee, MeetingError>;
    async fn get_meeting(&self, meeting: MeetingId, origin: &Origin) -> Result<Meeting, MeetingError>;
    /// Attendees without their JoinTokens.
    async fn list_attendees(&self, meeting: MeetingId) -> Result<Vec<Attendee>, MeetingError>;
    /// Ends the meeting; `by` is recorded in its `meeting.deleted` audit line, written with the deletion.
    async fn delete_meeting(&self, meeting: MeetingId, by: &AuditActor) -> Result<(), MeetingError>;
}
