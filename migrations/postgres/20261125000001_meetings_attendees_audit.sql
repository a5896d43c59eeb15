-- Meetings, their attendees, and the append-only audit log (PostgreSQL dialect).

CREATE TABLE meetings (
    id                  UUID PRIMARY KEY,
    external_meeting_id TEXT NOT NULL,
    appointment_id      TEXT,
    provider            TEXT NOT NULL,
    media_region        TEXT NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    deleted_at          TIMESTAMPTZ
);

CREATE TABLE attendees (
    id               UUID PRIMARY KEY,
    meeting_id       UUID NOT NULL REFERENCES meetings (id),
    external_user_id TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX attendees_by_meeting ON attendees (meeting_id);

-- Who did what, when. Never names, IPs or tokens: `actor` is 'api-key:<fingerprint>', 'invite' or 'attendee'.
-- No foreign keys: the trail must outlive whatever it describes.
CREATE TABLE audit_log (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL,
    action      TEXT NOT NULL,
    meeting_id  UUID,
    attendee_id UUID,
    actor       TEXT NOT NULL,
    detail      TEXT
);
CREATE INDEX audit_log_by_meeting ON audit_log (meeting_id);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
