-- Local inbox schema, version 4: the audit trail. One row per action a person took
-- (signed in or out, a failed sign-in, opened or downloaded a message, acknowledged,
-- rejected, sent, exported evidence), with the person's name. Append-only by design:
-- rows are only ever inserted, and deleted by retention once older than the period.
CREATE TABLE audit (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    at              INTEGER NOT NULL,       -- Unix ms
    person          TEXT NOT NULL,
    action          TEXT NOT NULL,
    message_id      TEXT,
    detail          TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_by_time ON audit (at)
