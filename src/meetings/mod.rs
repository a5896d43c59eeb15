//! Meetings: one service in front of the backends that can serve them.
//!
//! - `service`: the store, the audit lines, which backend takes a new meeting (routing, failover), and
//!   per-meeting dispatch, idempotency by appointment;
//! - `lifecycle`: attendee sessions (usage and cost) and the automatic cleanup of finished meetings;
//! - `backend`: what a backend is (the provider's own calls, nothing else) and how its failures read;
//! - `local`: our SFU; `chime`: Amazon Chime SDK Meetings; `types`: Chime's shapes, which both answer in.

mod backend;
mod chime;
mod lifecycle;
mod local;
mod service;
mod types;

pub use backend::{BackendError, MeetingBackend, NewMeeting, ProviderErrorKind};
pub use chime::ChimeBackend;
pub use lifecycle::{CleanupReport, PRESENCE_HEARTBEAT_SECS, Presence, UsageReport, UsageRow};
pub use local::{LocalBackend, LocalCapacity};
pub use service::{Backends, CreateMeeting, Failover, MAX_ATTENDEES, MeetingError, MeetingService, Routing, Served};
pub use types::*;
