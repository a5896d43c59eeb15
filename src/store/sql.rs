//! Statements both dialects accept as written (`$n` placeholders, standard SQL). Each is written once here;
//! the two stores differ only in how they bind ids (GUID text in SQLite, native UUID in PostgreSQL).

/// Meeting columns in bind order: id, external_meeting_id, appointment_id (also its key), provider,
/// media_region, created_at, deleted_at, ends_at, provider_meeting.
pub(super) const INSERT_MEETING: &str = "INSERT INTO meetings \
    (id, external_meeting_id, appointment_id, appointment_key, provider, media_region, created_at, deleted_at, ends_at, provider_meeting) \
    VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $8, $9)";

pub(super) const LIVE_MEETING: &str = "SELECT * FROM meetings WHERE id = $1 AND deleted_at IS NULL";

/// Served by the unique index on live meetings' appointment keys.
pub(super) const LIVE_MEETING_FOR_APPOINTMENT: &str =
    "SELECT * FROM meetings WHERE appointment_key = $1 AND deleted_at IS NULL";

/// Bounded so one cleanup pass stays short; the next pass takes the rest. No index of its own: it runs once a
/// minute, and an index on live meetings would cost every create-meeting an entry.
pub(super) const MEETINGS_PAST_WINDOW: &str = "SELECT * FROM meetings \
    WHERE deleted_at IS NULL AND provider = $1 \
      AND ((ends_at IS NOT NULL AND ends_at < $2) OR (ends_at IS NULL AND created_at < $3)) \
    ORDER BY created_at LIMIT 500";

pub(super) const IDLE_MEETINGS: &str = "SELECT m.* FROM meetings m \
    WHERE m.deleted_at IS NULL AND m.provider = $1 AND (m.ends_at IS NULL OR m.ends_at < $3) \
      AND EXISTS (SELECT 1 FROM attendee_sessions s WHERE s.meeting_id = m.id) \
      AND NOT EXISTS (SELECT 1 FROM attendee_sessions s WHERE s.meeting_id = m.id \
                      AND (s.ended_at IS NULL OR s.ended_at >= $2)) \
    ORDER BY m.created_at LIMIT 500";

pub(super) const MARK_MEETING_DELETED: &str = "UPDATE meetings SET deleted_at = $1 WHERE id = $2 AND deleted_at IS NULL";

pub(super) const INSERT_AUDIT: &str =
    "INSERT INTO audit_log (at, action, meeting_id, attendee_id, actor, detail) VALUES ($1, $2, $3, $4, $5, $6)";

pub(super) const AUDIT_FOR_MEETING: &str = "SELECT * FROM audit_log WHERE meeting_id = $1 ORDER BY id";

pub(super) const FIND_LIVE_ATTENDEE: &str = "SELECT a.* FROM attendees a JOIN meetings m ON m.id = a.meeting_id \
    WHERE a.id = $1 AND a.meeting_id = $2 AND m.deleted_at IS NULL";

/// Session columns in bind order: id, meeting_id, attendee_id, provider, node, started_at, last_seen_at, ended_at.
pub(super) const INSERT_SESSION: &str = "INSERT INTO attendee_sessions \
    (id, meeting_id, attendee_id, provider, node, started_at, last_seen_at, ended_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

pub(super) const TOUCH_SESSION: &str =
    "UPDATE attendee_sessions SET last_seen_at = $1 WHERE id = $2 AND ended_at IS NULL";

pub(super) const END_SESSION: &str = "UPDATE attendee_sessions SET ended_at = $1 WHERE id = $2 AND ended_at IS NULL";

pub(super) const TOUCH_NODE_SESSIONS: &str =
    "UPDATE attendee_sessions SET last_seen_at = $1 WHERE node = $2 AND ended_at IS NULL";

pub(super) const END_STALE_SESSIONS: &str =
    "UPDATE attendee_sessions SET ended_at = last_seen_at WHERE ended_at IS NULL AND last_seen_at < $1";

pub(super) const SESSIONS_BETWEEN: &str = "SELECT * FROM attendee_sessions \
    WHERE started_at >= $1 AND started_at < $2 AND ($3 IS NULL OR meeting_id = $3) ORDER BY started_at";
