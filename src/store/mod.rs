//! Persistence. (Skeleton: the signatures below are what `http::ws` relies on.)

use crate::ids::{AttendeeId, ExternalUserId, MeetingId};

#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(#[from] pub anyhow::Error);

#[derive(Debug, Clone)]
pub struct AttendeeRecord {
    pub meeting_id: MeetingId,
    pub attendee_id: AttendeeId,
    pub external_user_id: ExternalUserId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    AttendeeJoined,
    AttendeeLeft,
}

#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub action: AuditAction,
    pub meeting_id: Option<MeetingId>,
    pub attendee_id: Option<AttendeeId>,
}

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The attendee, if it exists and its meeting has not been deleted.
    async fn find_live_attendee(&self, meeting: MeetingId, attendee: AttendeeId) -> Result<Option<AttendeeRecord>, StoreError>;
    async fn append_audit(&self, entry: AuditEntry) -> Result<(), StoreError>;
}
