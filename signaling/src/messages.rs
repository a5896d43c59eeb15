//! Message types, one enum per direction.

use crate::object::{FromObject, deserialize_object};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Largest frame the server accepts. An SDP offer with a dozen m-lines is well under 16 KiB.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// An ICE candidate as the browser's `RTCIceCandidateInit` serialises it. A JSON object only (see
/// `object`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(rename = "sdpMLineIndex", default, skip_serializing_if = "Option::is_none")]
    pub sdp_mline_index: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

/// A STUN/TURN server for the page's RTCPeerConnection (`RTCIceServer`), with its short-lived credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// What an attendee is in its meeting: a `host` was created by a practitioner or a server (an API key, the
/// console), a `guest` through a patient's invite link. Sent as an optional field: a server that knows no roles
/// leaves it out, and a client that knows none ignores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Host,
    Guest,
}

impl Role {
    /// The wire spelling (`host`, `guest`), which is also the gateway's column text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Guest => "guest",
        }
    }

    /// The role a wire or column spelling names; anything else is none.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Host, Self::Guest].into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Someone in the meeting, as other participants see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Participant {
    /// Chime's `AttendeeId` (a GUID). Also the MediaStream id of this participant's forwarded tracks.
    pub attendee_id: String,
    /// Chime's `ExternalUserId`: the display name given at `create-attendee`.
    pub name: String,
    /// Their role; absent from older servers (and for participants entered without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    pub audio_muted: bool,
    pub video_muted: bool,
    /// Their socket dropped and the server is holding their place (the resume window); their media may pause.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reconnecting: bool,
}

/// Frames a client sends. Unknown `type`s and wrongly typed fields are errors; unknown extra fields are
/// ignored, so a newer page can talk to an older gateway. A frame is a JSON object (see `object`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", tag = "type", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum ClientMessage {
    /// First frame on every socket: the attendee's `JoinToken` from `create-attendee`.
    Join {
        token: String,
        #[serde(default)]
        audio_muted: bool,
        #[serde(default)]
        video_muted: bool,
    },
    /// The client's offer for its own peer connection (sent once, after `joined`). With `restart`, the offer is
    /// for a NEW peer connection that replaces the current one (its media failed, or it was lost while the
    /// socket was down): the server drops the old connection and its tracks and answers as for a first offer.
    Offer {
        sdp: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        restart: bool,
    },
    /// The client's answer to a server offer (renegotiation).
    Answer { sdp: String },
    /// Trickle ICE. `candidate: null` (end of candidates) is accepted and ignored.
    Candidate { candidate: Option<IceCandidate> },
    /// Microphone / camera state, relayed to everyone else in the meeting.
    MediaState { audio_muted: bool, video_muted: bool },
    /// Ask the server to resend a keyframe for every video track this client receives.
    RequestKeyframe,
    /// Leave the meeting; the server closes the socket after `left`.
    Leave,
    /// Keep-alive. `ts` is echoed in the `pong`.
    Ping {
        #[serde(default)]
        ts: Option<u64>,
    },
}

// `remote = "Self"` makes the derives above inherent functions; the trait impls below wrap them, so the wire
// format is the derived one, but only read from a JSON object.

impl Serialize for ClientMessage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ClientMessage::serialize(self, serializer)
    }
}

impl<'de> Deserialize<'de> for ClientMessage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_object(deserializer)
    }
}

impl FromObject for ClientMessage {
    const EXPECTING: &'static str = "a signaling message object";
    fn from_object<'de, D: Deserializer<'de>>(object: D) -> Result<Self, D::Error> {
        ClientMessage::deserialize(object)
    }
}

impl Serialize for IceCandidate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        IceCandidate::serialize(self, serializer)
    }
}

impl<'de> Deserialize<'de> for IceCandidate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_object(deserializer)
    }
}

impl FromObject for IceCandidate {
    const EXPECTING: &'static str = "an ICE candidate object";
    fn from_object<'de, D: Deserializer<'de>>(object: D) -> Result<Self, D::Error> {
        IceCandidate::deserialize(object)
    }
}

/// Frames the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum ServerMessage {
    /// The join succeeded. `participants` are the others already present; `count` includes the joiner.
    /// `resumed`: this attendee was still in the meeting (a new socket within the resume window, or one that
    /// replaced another): its peer connection and tracks are kept, and a still-connected client keeps its own;
    /// a client whose connection failed sends `offer` with `restart`. Not resumed after a reconnect means the
    /// server no longer knew the attendee (a restart, or the window passed): start media afresh.
    Joined {
        meeting_id: String,
        attendee_id: String,
        /// The joiner's own role (as the others see it in its `Participant`); absent from older servers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<Role>,
        participants: Vec<Participant>,
        count: usize,
        #[serde(default)]
        resumed: bool,
        /// TURN servers to add to the peer connection's configuration (empty: none configured; the SFU's own
        /// candidates, UDP and TCP, are reachable directly).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<IceServer>,
    },
    Offer { sdp: String },
    Answer { sdp: String },
    Candidate { candidate: IceCandidate },
    ParticipantJoined { participant: Participant, count: usize },
    ParticipantLeft { attendee_id: String, count: usize },
    /// Their socket dropped; the server keeps their place for the resume window (then `participantLeft`).
    ParticipantReconnecting { attendee_id: String },
    /// They are back within the resume window.
    ParticipantResumed { attendee_id: String },
    /// The live participant count, sent to everyone whenever it changes.
    ParticipantCount { count: usize },
    MediaState { attendee_id: String, audio_muted: bool, video_muted: bool },
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts: Option<u64>,
    },
    /// Reply to `leave`; the socket closes next.
    Left,
    /// The server is stopping (a restart or an upgrade) but the meeting is not over: reconnect with the same
    /// JoinToken, starting after about `retry_after_ms`, and keep trying. The socket closes next.
    ServerRestarting { retry_after_ms: u64 },
    /// The meeting is over for this client: deleted, expired, or the server is shutting down.
    /// The socket closes next.
    MeetingEnded { reason: EndReason },
    Error { code: ErrorCode, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EndReason {
    /// `delete-meeting` was called.
    Deleted,
    /// The gateway is shutting down for good. (A restart sends `serverRestarting` instead.)
    ServerShutdown,
    /// The same attendee joined from another socket; this one is replaced.
    Replaced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The frame is not JSON, not an object, or not one of the message types. The socket stays open.
    BadRequest,
    /// Missing, forged, malformed or expired JoinToken. The socket closes.
    Unauthorized,
    /// The meeting does not exist (any more). The socket closes.
    NotFound,
    /// The message is valid but not now (e.g. an offer before `join`, a second `join`).
    Conflict,
    /// The SDP or candidate was refused by the media engine.
    UnprocessableEntity,
    /// The meeting is full (250 attendees) or the server refuses new joins while draining.
    ServiceUnavailable,
    ServiceFailure,
}

impl ErrorCode {
    /// Whether the server closes the socket after sending this error.
    pub fn is_fatal(self) -> bool {
        matches!(self, Self::Unauthorized | Self::NotFound | Self::ServiceUnavailable)
    }
}

impl ServerMessage {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error { code, message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_frame_uses_the_documented_json_names() {
        let msg: ClientMessage =
            serde_json::from_str(r#"{"type":"join","token":"t","videoMuted":true}"#).unwrap();
        assert_eq!(msg, ClientMessage::Join { token: "t".into(), audio_muted: false, video_muted: true });
    }

    /// `role` is additive: frames without it (older servers) still parse, and a participant without one is
    /// sent exactly as before.
    #[test]
    fn role_is_optional_on_participants_and_joined() {
        let old = r#"{"type":"joined","meetingId":"m","attendeeId":"a","participants":[{"attendeeId":"b","name":"Dr. Smith","audioMuted":false,"videoMuted":true}],"count":2}"#;
        let ServerMessage::Joined { role, participants, .. } = serde_json::from_str(old).unwrap() else { panic!("not joined") };
        assert_eq!((role, participants[0].role), (None, None));

        let mut p = Participant {
            attendee_id: "b".into(),
            name: "Dr. Smith".into(),
            role: None,
            audio_muted: false,
            video_muted: false,
            reconnecting: false,
        };
        assert!(serde_json::to_value(&p).unwrap().get("role").is_none(), "no role, no field");
        p.role = Some(Role::Host);
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["role"], "host");
        assert_eq!(serde_json::from_value::<Participant>(v).unwrap(), p);

        let msg = ServerMessage::Joined {
            meeting_id: "m".into(),
            attendee_id: "a".into(),
            role: Some(Role::Guest),
            participants: vec![p],
            count: 2,
            resumed: false,
            ice_servers: vec![],
        };
        let v = serde_json::to_value(&msg).unwrap();
        assert_eq!((v["role"].as_str(), v["participants"][0]["role"].as_str()), (Some("guest"), Some("host")));
        assert_eq!(serde_json::from_value::<ServerMessage>(v).unwrap(), msg);
        assert!(serde_json::from_str::<Participant>(r#"{"attendeeId":"b","name":"x","role":"admin","audioMuted":false,"videoMuted":false}"#).is_err());
    }

    #[test]
    fn browser_candidate_json_round_trips() {
        let raw = r#"{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 2122260223 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"abcd"}}"#;
        let msg: ClientMessage = serde_json::from_str(raw).unwrap();
        let ClientMessage::Candidate { candidate: Some(c) } = &msg else { panic!("not a candidate: {msg:?}") };
        assert_eq!(c.sdp_mline_index, Some(0));
        assert_eq!(serde_json::to_value(&msg).unwrap(), serde_json::from_str::<serde_json::Value>(raw).unwrap());
    }

    #[test]
    fn end_of_candidates_is_accepted() {
        let msg: ClientMessage = serde_json::from_str(r#"{"type":"candidate","candidate":null}"#).unwrap();
        assert_eq!(msg, ClientMessage::Candidate { candidate: None });
    }

    #[test]
    fn unknown_types_wrong_types_and_missing_fields_are_rejected() {
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"explode"}"#).is_err());
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"join","token":5}"#).is_err());
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"offer"}"#).is_err());
        assert!(serde_json::from_str::<ClientMessage>(r#"{"sdp":"v=0"}"#).is_err());
        assert!(serde_json::from_str::<ClientMessage>(r#"[1,2]"#).is_err());
    }

    #[test]
    fn only_objects_are_frames_not_the_positional_form_serde_would_accept() {
        for positional in [r#"["leave"]"#, r#"["ping",5]"#, r#"["offer","v=0"]"#, r#"["join","token",true,false]"#, r#"["candidate",null]"#] {
            assert!(serde_json::from_str::<ClientMessage>(positional).is_err(), "{positional}");
        }
        let positional_candidate = r#"{"type":"candidate","candidate":["candidate:1 1 udp 1 127.0.0.1 5000 typ host","0",0]}"#;
        assert!(serde_json::from_str::<ClientMessage>(positional_candidate).is_err());
        assert!(serde_json::from_value::<ClientMessage>(serde_json::json!(["leave"])).is_err());
        // The object forms still parse, from text and from a Value.
        let leave = serde_json::json!({"type": "leave"});
        assert_eq!(serde_json::from_value::<ClientMessage>(leave).unwrap(), ClientMessage::Leave);
    }

    #[test]
    fn extra_fields_are_ignored_for_forward_compatibility() {
        let msg: ClientMessage = serde_json::from_str(r#"{"type":"leave","reason":"tab closed"}"#).unwrap();
        assert_eq!(msg, ClientMessage::Leave);
    }

    #[test]
    fn server_messages_are_camel_case() {
        let v = serde_json::to_value(ServerMessage::ParticipantLeft { attendee_id: "a".into(), count: 1 }).unwrap();
        assert_eq!(v, serde_json::json!({"type":"participantLeft","attendeeId":"a","count":1}));
        let v = serde_json::to_value(ServerMessage::MeetingEnded { reason: EndReason::Deleted }).unwrap();
        assert_eq!(v, serde_json::json!({"type":"meetingEnded","reason":"deleted"}));
    }
}
