//! Notifications to patients: what they say and how they travel.
//!
//! - `templates`: the seed's email and SMS formats (confirmation, change, cancellation, reminder), pure
//!   functions of a `Notice`;
//! - `email`: SMTP through lettre (rustls); `sms`: Amazon SNS `Publish` to a phone number;
//! - `config`: their settings, validated at start.
//!
//! The durable outbox worker (which message is due, retries with backoff, at-least-once delivery across a
//! restart) lives beside them and decides what to do with a `SendError`: retry a `Retryable` one later, give
//! up on a `Permanent` one. Transports never log and never put patient data (addresses, phone numbers, names,
//! message text) into an error: only kinds and protocol codes.

pub mod config;
pub mod outbox;
pub mod email;
pub mod sms;
pub mod templates;

pub use config::{NotifyConfig, OutboxConfig, SmsType, SmtpConfig, SmtpSecurity, SnsConfig};
pub use email::SmtpSender;
pub use sms::SnsSender;
pub use templates::{EmailContent, Notice, NoticeKind};

/// Why a message was not sent. The text names only what went wrong (`smtp 550`, `sns Throttling (400)`,
/// `timeout`), never whom it was for or what it said, so it can be logged and stored as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth trying again later: the server was unreachable, slow, busy, or refused for now (4xx).
    #[error("retryable: {0}")]
    Retryable(String),
    /// Will fail the same way every time: the recipient or the message was refused (5xx, invalid address).
    #[error("permanent: {0}")]
    Permanent(String),
}

impl SendError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable(_))
    }
}
