//! What a meeting backend is: the calls one provider makes (our SFU, or Chime's API), and nothing else. The
//! service around it owns the store, the audit lines, the choice of backend and failover, so a backend never
//! writes a row and a new backend cannot forget an audit line.

use super::types::{AttendeeDoc, MeetingDoc, Origin};
use crate::ids::{ExternalMeetingId, ExternalUserId, Provider};
use crate::store::{AttendeeRecord, MeetingRecord};

/// What the service asks a backend to create.
pub struct NewMeeting {
    /// Chime requires one; when the caller gave none the backend picks (see each backend).
    pub external_meeting_id: Option<ExternalMeetingId>,
    /// Idempotency key for this creation: a retried request with the same key makes no second meeting.
    pub client_request_token: String,
}

/// The contract's error codes that a provider can answer with (Chime's exceptions map onto these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderErrorKind {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    UnprocessableEntity,
    /// Throttled or over a limit (Chime's ThrottlingException and LimitExceededException).
    Throttling,
    ServiceUnavailable,
    ServiceFailure,
}

impl ProviderErrorKind {
    /// Chime's name for it (also the audit line's failover reason).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "BadRequest",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::NotFound => "NotFound",
            Self::Conflict => "Conflict",
            Self::UnprocessableEntity => "UnprocessableEntity",
            Self::Throttling => "Throttling",
            Self::ServiceUnavailable => "ServiceUnavailable",
            Self::ServiceFailure => "ServiceFailure",
        }
    }
}

/// Why a backend call failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The provider has no such meeting (any more).
    #[error("the provider has no such meeting")]
    NotFound,
    /// The local SFU is at its configured capacity.
    #[error("the local SFU is at capacity")]
    AtCapacity,
    /// No answer in time (after the SDK's retries, within the whole-call bound).
    #[error("the provider did not answer in time")]
    Timeout,
    /// The provider answered with an error. `message` is the provider's, for 4xx callers only; a 5xx never
    /// shows it.
    #[error("the provider refused: {kind:?}")]
    Provider { kind: ProviderErrorKind, message: String },
    /// The provider could not be reached or answered something unusable; the cause is for the trace only.
    #[error("the provider failed: {0}")]
    Failed(#[source] anyhow::Error),
}

impl BackendError {
    /// A fixed name for metrics and the trace.
    pub fn code(&self) -> &'static str {
        match self {
            BackendError::NotFound => "NotFound",
            BackendError::AtCapacity => "AtCapacity",
            BackendError::Timeout => "Timeout",
            BackendError::Failed(_) => "Unreachable",
            BackendError::Provider { kind, .. } => kind.as_str(),
        }
    }

    /// The reason failover may route around: the provider is busy, down or slow, not refusing this request.
    pub fn failover_reason(&self) -> Option<&'static str> {
        match self {
            BackendError::AtCapacity => Some("AtCapacity"),
            BackendError::Timeout => Some("Timeout"),
            BackendError::Failed(_) => Some("Unreachable"),
            BackendError::Provider { kind, .. } => match kind {
                ProviderErrorKind::Throttling | ProviderErrorKind::ServiceUnavailable | ProviderErrorKind::ServiceFailure => {
                    Some(kind.as_str())
                }
                _ => None,
            },
            BackendError::NotFound => None,
        }
    }
}

#[async_trait::async_trait]
pub trait MeetingBackend: Send + Sync + 'static {
    fn provider(&self) -> Provider;
    /// True when the backend's `Meeting` can be rebuilt from our row at any time (the local one, whose URLs
    /// depend on how the caller reached us). Otherwise the service keeps the provider's object with the row.
    fn rebuilds_meetings(&self) -> bool {
        false
    }
    /// Creates the meeting at the provider. `origin` is where the caller reached us (our own URLs).
    async fn create_meeting(&self, req: &NewMeeting, origin: &Origin) -> Result<MeetingDoc, BackendError>;
    /// Creates an attendee of a meeting this backend created, with a fresh JoinToken.
    async fn create_attendee(&self, meeting: &MeetingRecord, name: &ExternalUserId) -> Result<AttendeeDoc, BackendError>;
    async fn get_meeting(&self, meeting: &MeetingRecord, origin: &Origin) -> Result<MeetingDoc, BackendError>;
    /// The meeting's attendees. `stored` is what our store holds for it (the local backend has nothing else).
    async fn list_attendees(
        &self,
        meeting: &MeetingRecord,
        stored: Vec<AttendeeRecord>,
    ) -> Result<Vec<AttendeeDoc>, BackendError>;
    /// Ends the meeting at the provider. `NotFound` means it was already gone there.
    async fn delete_meeting(&self, meeting: &MeetingRecord) -> Result<(), BackendError>;
}
