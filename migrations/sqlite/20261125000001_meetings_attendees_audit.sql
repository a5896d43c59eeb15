-- Meetings, their attendees, and the append-only audit log (SQLite dialect).
-- Ids are lowercase hyphenated GUID text; timestamps are RFC 3339 UTC text (sqlx's chrono encoding).

CREATE TABLE meetings (
    id                  TEXT PRIMARY KEY NOT NULL,
    external_meeting_id TEXT NOT NULL,
    appointment_id      TEXT,
    provider            TEXT NOT NULL,
    media_region        TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    deleted_at          TEXT
);

CREATE TABLE attendees (
    id               TEXT PRIMARY KEY NOT NULL,
    meeting_id       TEXT NOT NULL REFERENCES meetings (id),
    external_user_id TEXT NOT NULL,
    created_at       TEXT NOT NULL
);
CREATE INDEX attendees_by_meeting ON attendees (meeting_id);

-- Who did what, when. Never names, IPs or tokens: `actor` is 'api-key:<fingerprint>', 'invite' or 'attendee'.
-- No foreign keys: the trail must outlive whatever it describes.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    action      TEXT NOT NULL,
    meeting_id  TEXT,
    attendee_id TEXT,
    actor       TEXT NOT NULL,
    detail      TEXT
);
CREATE INDEX audit_log_by_meeting ON audit_log (meeting_id);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
