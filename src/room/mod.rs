//! Who is in which meeting. (Skeleton: the signatures below are what `http::api` relies on.)

use crate::ids::MeetingId;
use signaling::EndReason;
use std::time::Duration;

#[derive(Default)]
pub struct Rooms {}

impl Rooms {
    /// Participants currently connected to the meeting.
    pub fn participant_count(&self, _meeting: MeetingId) -> usize {
        0
    }
    /// Tells everyone in the meeting it has ended, closes their peers and sockets.
    pub async fn end_meeting(&self, _meeting: MeetingId, _reason: EndReason) {}
    /// Shutdown: refuse new joins, tell everyone, wait (at most `grace`) for rooms to empty.
    pub async fn drain(&self, _grace: Duration) {}
}
