-- Per-meeting providers, meeting lifecycle and usage (PostgreSQL dialect). See the SQLite file for the why.

ALTER TABLE meetings ADD COLUMN ends_at TIMESTAMPTZ;
ALTER TABLE meetings ADD COLUMN provider_meeting TEXT;
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

CREATE TABLE attendee_sessions (
    id           UUID PRIMARY KEY,
    meeting_id   UUID NOT NULL,
    attendee_id  UUID NOT NULL,
    provider     TEXT NOT NULL,
    node         TEXT,
    started_at   TIMESTAMPTZ NOT NULL,
    last_seen_at TIMESTAMPTZ NOT NULL,
    ended_at     TIMESTAMPTZ
);
CREATE INDEX attendee_sessions_by_meeting ON attendee_sessions (meeting_id);
CREATE INDEX attendee_sessions_by_start ON attendee_sessions (started_at);
CREATE INDEX attendee_sessions_open ON attendee_sessions (last_seen_at) WHERE ended_at IS NULL;
