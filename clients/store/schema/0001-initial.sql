-- Local inbox schema, version 1: received messages, sent messages with their receipts,
-- and the delivery-hook jobs. (Identical to the schema written by the in-code migration
-- list of earlier versions, so their files open as version 1.)
CREATE TABLE version (version INTEGER NOT NULL);

CREATE TABLE messages (
    id              TEXT PRIMARY KEY,
    sender          TEXT NOT NULL,
    recipients      TEXT NOT NULL,          -- JSON list: the header's "to"
    role            TEXT NOT NULL CHECK (role IN ('to', 'fallback')),
    priority        TEXT NOT NULL,
    created         INTEGER NOT NULL,
    expires         INTEGER NOT NULL,
    ack_by          INTEGER,
    received_at     INTEGER NOT NULL,
    handling        TEXT NOT NULL,          -- JSON list of codes
    kind            TEXT,                   -- content.kind, as sent (may be invalid)
    content         TEXT NOT NULL,          -- JSON object
    attachments     TEXT NOT NULL,          -- JSON list: the encrypted manifest
    envelope_hash   TEXT NOT NULL,
    token           TEXT NOT NULL,          -- the compact envelope as received
    state           TEXT NOT NULL DEFAULT 'new'
                    CHECK (state IN ('new', 'acknowledged', 'rejected')),
    acknowledged_by TEXT,
    acknowledged_at INTEGER,
    rejected_reason TEXT,
    decided_at      INTEGER
);
CREATE INDEX messages_newest ON messages (received_at DESC, created DESC);
CREATE INDEX messages_state ON messages (state, received_at DESC);

CREATE TABLE sent (
    id              TEXT PRIMARY KEY,
    recipients      TEXT NOT NULL,
    envelope_hash   TEXT NOT NULL,
    created         INTEGER NOT NULL,
    priority        TEXT NOT NULL,
    summary         TEXT NOT NULL
);
CREATE INDEX sent_newest ON sent (created DESC);

CREATE TABLE receipts (
    token_hash      TEXT PRIMARY KEY,       -- SHA-256 of the token: dedupe key
    msg_id          TEXT NOT NULL,
    token           TEXT NOT NULL,
    status          TEXT NOT NULL,
    signer          TEXT NOT NULL,
    at              INTEGER NOT NULL
);
CREATE INDEX receipts_by_message ON receipts (msg_id, at);

CREATE TABLE hook_jobs (
    msg_id          TEXT NOT NULL REFERENCES messages (id),
    hook            TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'done', 'failed', 'skipped')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    last_error      TEXT,
    skipped_reason  TEXT,
    PRIMARY KEY (msg_id, hook)
);
CREATE INDEX hook_jobs_due ON hook_jobs (next_attempt_at) WHERE state = 'pending';
