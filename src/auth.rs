//! API keys, invite tokens and join tokens. (Skeleton: the signatures below are what `http::ws` relies on.)

use crate::ids::{AttendeeId, MeetingId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinClaims {
    pub meeting_id: MeetingId,
    pub attendee_id: AttendeeId,
    /// Unix seconds.
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("token is malformed")]
    Malformed,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
}

pub struct Auth {}

impl Auth {
    pub fn verify_join_token(&self, _token: &str) -> Result<JoinClaims, AuthError> {
        Err(AuthError::Malformed)
    }
}
