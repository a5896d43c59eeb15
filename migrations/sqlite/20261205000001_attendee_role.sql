-- Each attendee's role in its meeting (SQLite dialect): 'host' for one created with an API key, by a server or
-- from the practitioner console; 'guest' for one created through a patient's invite link. The gateway names
-- the role on every insert. Rows written before this migration get the default, 'host': they are
-- taken to have been created by practitioners or servers.
ALTER TABLE attendees ADD COLUMN role TEXT NOT NULL DEFAULT 'host' CHECK (role IN ('host', 'guest'));
