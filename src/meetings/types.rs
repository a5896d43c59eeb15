//! Chime's shapes. The typed structs are what the local backend builds; they serialise exactly as Chime's
//! `CreateMeeting` / `CreateAttendee` return them (PascalCase), so an EHR written against Chime cannot tell
//! which provider served a meeting. `MeetingDoc` / `AttendeeDoc` carry whichever provider's object as JSON,
//! so fields Chime adds that we do not know reach our callers unchanged.

use crate::ids::{AttendeeId, ExternalMeetingId, ExternalUserId, MeetingId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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

/// A Chime `Meeting` object as the provider returned it, with the id we route by parsed out.
#[derive(Clone, PartialEq)]
pub struct MeetingDoc {
    pub id: MeetingId,
    json: Map<String, Value>,
}

/// A Chime `Attendee` object as the provider returned it, with the ids we store parsed out.
#[derive(Clone, PartialEq)]
pub struct AttendeeDoc {
    pub attendee_id: AttendeeId,
    pub external_user_id: ExternalUserId,
    json: Map<String, Value>,
}

/// Why a provider's object could not be taken as a Meeting or Attendee.
#[derive(Debug, thiserror::Error)]
#[error("the provider returned an unusable {0}")]
pub struct ShapeError(pub &'static str);

fn object(value: Value, what: &'static str) -> Result<Map<String, Value>, ShapeError> {
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(ShapeError(what)),
    }
}

impl MeetingDoc {
    /// Takes a provider's `Meeting` object; it must carry a GUID `MeetingId`.
    pub fn from_json(value: Value) -> Result<Self, ShapeError> {
        let json = object(value, "Meeting")?;
        let id = json.get("MeetingId").and_then(Value::as_str).and_then(MeetingId::parse).ok_or(ShapeError("MeetingId"))?;
        Ok(Self { id, json })
    }

    pub fn from_meeting(meeting: &Meeting) -> Self {
        let json = object(serde_json::to_value(meeting).expect("a Meeting serialises"), "Meeting").expect("an object");
        Self { id: meeting.meeting_id, json }
    }

    /// A string field of the object (e.g. `MediaRegion`).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.json.get(name).and_then(Value::as_str)
    }

    pub fn to_json(&self) -> Value {
        Value::Object(self.json.clone())
    }
}

impl AttendeeDoc {
    /// Takes a provider's `Attendee` object; it must carry a GUID `AttendeeId` and a valid `ExternalUserId`.
    pub fn from_json(value: Value) -> Result<Self, ShapeError> {
        let json = object(value, "Attendee")?;
        let attendee_id =
            json.get("AttendeeId").and_then(Value::as_str).and_then(AttendeeId::parse).ok_or(ShapeError("AttendeeId"))?;
        let external_user_id = json
            .get("ExternalUserId")
            .and_then(Value::as_str)
            .and_then(|s| ExternalUserId::parse(s).ok())
            .ok_or(ShapeError("ExternalUserId"))?;
        Ok(Self { attendee_id, external_user_id, json })
    }

    pub fn from_attendee(attendee: &Attendee) -> Self {
        let json = object(serde_json::to_value(attendee).expect("an Attendee serialises"), "Attendee").expect("an object");
        Self { attendee_id: attendee.attendee_id, external_user_id: attendee.external_user_id.clone(), json }
    }

    /// The same attendee without its JoinToken: listings never hand out other attendees' credentials.
    pub fn without_join_token(mut self) -> Self {
        self.json.remove("JoinToken");
        self
    }
}

impl Serialize for MeetingDoc {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.json.serialize(s)
    }
}

impl Serialize for AttendeeDoc {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.json.serialize(s)
    }
}

/// Ids only: the objects hold names and JoinTokens.
impl std::fmt::Debug for MeetingDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeetingDoc").field("id", &self.id).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for AttendeeDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttendeeDoc").field("attendee_id", &self.attendee_id).finish_non_exhaustive()
    }
}

/// The join page's path for a meeting and its invite: the contract's `link` (callers prefix `APP_URL`).
pub fn join_path(meeting: MeetingId, invite: &str) -> String {
    format!("/telehealth-aws.html?meeting={meeting}&invite={invite}")
}
