-- Per-meeting providers, meeting lifecycle and usage (PostgreSQL dialect). See the SQLite file for the why.

ALTER TABLE meetings ADD COLUMN ends_at TIMESTAMPTZ;
ALTER TABLE meetings ADD COLUMN provider_meeting TEXT;
ALTER TABLE meetings ADD COLUMN appointment_key TEXT;
CREATE UNIQUE INDEX meetings_live_appointment ON meetings (appointment_key) WHERE deleted_at IS NULL;
CREATE INDEX meetings_by_appointment ON meetings (appointment_id) WHERE deleted_at IS NULL;
CREATE INDEX meetings_live_by_provider ON meetings (provider, created_at) WHERE deleted_at IS NULL;

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
