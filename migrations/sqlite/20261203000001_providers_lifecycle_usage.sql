-- Per-meeting providers, meeting lifecycle and usage (SQLite dialect).

-- When the visit is over (the appointment's end, if the caller said): cleanup and token expiry go by it.
ALTER TABLE meetings ADD COLUMN ends_at TEXT;
-- The provider's own Meeting object (JSON text) for providers we cannot rebuild it for (Chime), so a join
-- page gets it without another call to the provider.
ALTER TABLE meetings ADD COLUMN provider_meeting TEXT;
-- The appointment a live meeting belongs to, unique among live meetings: a retried create-meeting for the same
-- appointment finds the existing meeting, even when two arrive at once. A separate column (rather than a
-- unique index on appointment_id) because rows written before this migration may repeat an appointment.
ALTER TABLE meetings ADD COLUMN appointment_key TEXT;
-- Rows written before: the newest live meeting of each appointment holds it.
UPDATE meetings SET appointment_key = appointment_id
WHERE deleted_at IS NULL AND appointment_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM meetings newer
                  WHERE newer.appointment_id = meetings.appointment_id AND newer.deleted_at IS NULL
                    AND (newer.created_at > meetings.created_at
                         OR (newer.created_at = meetings.created_at AND newer.id > meetings.id)));
-- Only meetings with an appointment get an entry: the index costs nothing to the others.
CREATE UNIQUE INDEX meetings_live_appointment ON meetings (appointment_key)
    WHERE deleted_at IS NULL AND appointment_key IS NOT NULL;

-- Who was in which meeting from when to when: the record attendee-minutes (and their cost) are counted from.
-- `node` names the gateway process that holds a local participant's socket (it keeps `last_seen_at` fresh);
-- a Chime session has none (its page reports in). A session that stops being seen ends at `last_seen_at`.
CREATE TABLE attendee_sessions (
    id           TEXT PRIMARY KEY NOT NULL,
    meeting_id   TEXT NOT NULL,
    attendee_id  TEXT NOT NULL,
    provider     TEXT NOT NULL,
    node         TEXT,
    started_at   TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    ended_at     TEXT
);
CREATE INDEX attendee_sessions_by_meeting ON attendee_sessions (meeting_id);
CREATE INDEX attendee_sessions_by_start ON attendee_sessions (started_at);
CREATE INDEX attendee_sessions_open ON attendee_sessions (last_seen_at) WHERE ended_at IS NULL;
