//! Typed, validated identifiers. Parsed once at the edge (HTTP body, token, socket frame); everything
//! inside the gateway takes these types, never raw strings.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

macro_rules! guid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }
            /// Accepts Chime's lowercase hyphenated GUID form only.
            pub fn parse(s: &str) -> Option<Self> {
                if s.len() != 36 {
                    return None;
                }
                Uuid::parse_str(s).ok().map(Self)
            }
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> Self {
                Self(u)
            }
        }
    };
}

guid_id!(
    /// Chime `MeetingId`.
    MeetingId
);
guid_id!(
    /// Chime `AttendeeId`.
    AttendeeId
);
guid_id!(
    /// One attendee's stay in a meeting (usage records).
    SessionId
);
guid_id!(
    /// An appointment of the clinic's own scheduling.
    AppointmentId
);
guid_id!(
    /// One message in the notification outbox.
    OutboxId
);

/// Why a Chime-limited string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("{field} must be between 2 and 64 characters")]
    Length { field: &'static str },
    #[error("{field} must contain printable characters only")]
    NotPrintable { field: &'static str },
}

/// Chime's rule for ExternalMeetingId / ExternalUserId: 2–64 characters, printable (no control characters).
fn check_chime_string(field: &'static str, s: &str) -> Result<(), LimitError> {
    let n = s.chars().count();
    if !(2..=64).contains(&n) {
        return Err(LimitError::Length { field });
    }
    if s.chars().any(|c| c.is_control()) || s.trim().is_empty() {
        return Err(LimitError::NotPrintable { field });
    }
    Ok(())
}

macro_rules! chime_string {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, LimitError> {
                check_chime_string($field, s)?;
                Ok(Self(s.to_owned()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        /// Redacted: these may be patient names or appointment references.
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }
    };
}

chime_string!(
    /// Chime `ExternalMeetingId`, e.g. `appointment-12345`.
    ExternalMeetingId,
    "ExternalMeetingId"
);
chime_string!(
    /// Chime `ExternalUserId`: the attendee's display name in this gateway.
    ExternalUserId,
    "attendeeName"
);

/// Which backend serves a meeting. Chosen once, at creation, and stored with the meeting: every later call
/// for it goes to the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Our own SFU (offline clinics, demo mode, failover).
    Local,
    /// Amazon Chime SDK Meetings.
    Chime,
}

impl Provider {
    pub const ALL: [Provider; 2] = [Provider::Local, Provider::Chime];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Local => "local",
            Provider::Chime => "chime",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The one that is not this one (failover goes there).
    pub fn other(self) -> Self {
        match self {
            Provider::Local => Provider::Chime,
            Provider::Chime => Provider::Local,
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an attendee is in its meeting, fixed when it is created: a `Host` came through a practitioner's door
/// (an API key, a server, the console), a `Guest` through a patient's invite link. Stored with the attendee;
/// admission hands it to the room, which shows it to the others. Not part of Chime's `Attendee` shape. One type
/// with the signaling protocol's, whose spelling is also the column's.
pub use signaling::Role;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_ids_round_trip_and_reject_garbage() {
        let id = MeetingId::new();
        assert_eq!(MeetingId::parse(&id.to_string()), Some(id));
        assert_eq!(MeetingId::parse("not-a-guid"), None);
        assert_eq!(MeetingId::parse("6f1d8a1c2b3e4f5a9b8c7d6e5f4a3b2c"), None, "un-hyphenated form");
    }

    #[test]
    fn chime_strings_enforce_length_and_printability() {
        assert!(ExternalUserId::parse("Dr. Smith").is_ok());
        assert!(ExternalUserId::parse("A").is_err());
        assert!(ExternalUserId::parse(&"x".repeat(65)).is_err());
        assert!(ExternalUserId::parse(&"é".repeat(64)).is_ok(), "64 characters, not bytes");
        assert!(ExternalUserId::parse("a\u{7}b").is_err());
        assert!(ExternalUserId::parse("   ").is_err());
    }

    #[test]
    fn roles_round_trip_their_column_text_and_refuse_anything_else() {
        for role in [Role::Host, Role::Guest] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            assert_eq!(serde_json::to_value(role).unwrap(), serde_json::json!(role.as_str()));
        }
        assert_eq!(Role::parse("Host"), None);
        assert_eq!(Role::parse("admin"), None);
    }

    #[test]
    fn debug_output_hides_names() {
        let name = ExternalUserId::parse("Jane Patient").unwrap();
        assert!(!format!("{name:?}").contains("Jane"));
    }
}
