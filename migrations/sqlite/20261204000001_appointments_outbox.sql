-- The clinic's own appointments and the durable outbox of their notifications (SQLite dialect).

-- The seed's three columns keep the seed's names and types: `modality`, `telehealth_room_id` (the MeetingId),
-- `telehealth_link` (APP_URL + the join link). Times are UTC; people read them in CLINIC_TIMEZONE.
CREATE TABLE appointments (
    id                 TEXT PRIMARY KEY NOT NULL,
    client_name        TEXT NOT NULL,
    client_email       TEXT,
    client_phone       TEXT,
    practitioner       TEXT NOT NULL,
    start_time         TEXT NOT NULL,
    duration_minutes   INTEGER NOT NULL CHECK (duration_minutes BETWEEN 5 AND 480),
    modality           VARCHAR(50) NOT NULL CHECK (modality IN ('in-person', 'telehealth')),
    telehealth_room_id VARCHAR(255),
    telehealth_link    TEXT,
    status             TEXT NOT NULL CHECK (status IN ('scheduled', 'cancelled')),
    -- The client's `Idempotency-Key` of the request that made it: a retried create finds this row.
    idempotency_key    TEXT,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL
);
CREATE INDEX appointments_by_start ON appointments (start_time);
CREATE UNIQUE INDEX appointments_idempotency ON appointments (idempotency_key) WHERE idempotency_key IS NOT NULL;

-- Every message an appointment causes, written in the transaction of the change that causes it, then sent by
-- the outbox worker. `state`: pending (waiting for `next_attempt_at`), sending (claimed by a worker; the
-- attempt is recorded before the message leaves), sent, failed (dead after the last attempt or refused for
-- good), unknown (a worker stopped mid-send: it may or may not have left; never re-sent by itself),
-- withdrawn (its appointment was cancelled or moved), skipped (a reminder whose visit had started).
-- A stopped worker's claim that never reached the server goes back to pending.
CREATE TABLE outbox (
    id               TEXT PRIMARY KEY NOT NULL,
    appointment_id   TEXT,
    kind             TEXT NOT NULL,
    channel          TEXT NOT NULL CHECK (channel IN ('email', 'sms')),
    recipient        TEXT NOT NULL,
    subject          TEXT,
    body             TEXT NOT NULL,
    state            TEXT NOT NULL,
    visit_starts_at  TEXT,
    not_before       TEXT NOT NULL,
    next_attempt_at  TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    claimed_by       TEXT,
    -- Set just before the message is handed to the server: a claim without it never left, so a stopped
    -- worker's message can go again; with it, it may have arrived, so it becomes unknown.
    handed_over_at   TEXT,
    sent_at          TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
-- The worker's queries: only waiting and claimed messages are indexed (a few at any time).
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX outbox_claimed ON outbox (updated_at) WHERE state = 'sending';
CREATE INDEX outbox_by_appointment ON outbox (appointment_id);
CREATE INDEX outbox_by_created ON outbox (created_at);

-- Audit lines about appointments and messages.
ALTER TABLE audit_log ADD COLUMN appointment_id TEXT;
CREATE INDEX audit_log_by_appointment ON audit_log (appointment_id) WHERE appointment_id IS NOT NULL;
