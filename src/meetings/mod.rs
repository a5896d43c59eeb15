//! Meetings: one service in front of the backends that can serve them.
//!
//! - `service`: the store, the audit lines, which backend takes a new meeting, and per-meeting dispatch;
//! - `backend`: what a backend is (the provider's own calls, nothing else) and how its failures read;
//! - `local`: our SFU; `types`: Chime's shapes, which every backend answers in.

mod backend;
mod local;
mod service;
mod types;

pub use backend::{BackendError, MeetingBackend, NewMeeting, ProviderErrorKind};
pub use local::LocalBackend;
pub use service::{CreateMeeting, MAX_ATTENDEES, MeetingError, MeetingService, Served};
pub use types::*;
