-- Relay schema, version 1.
CREATE TABLE messages (
    id               TEXT PRIMARY KEY,
    sender           TEXT NOT NULL,
    recipients       TEXT NOT NULL,           -- JSON array: the "to" authorities
    fallbacks        TEXT NOT NULL,           -- JSON array
    envelope         TEXT NOT NULL,           -- the compact JWS, as received
    env_hash         TEXT NOT NULL,
    created          INTEGER NOT NULL,
    expires          INTEGER NOT NULL,
    priority         TEXT NOT NULL,
    ack_by           INTEGER,
    accepted_at      INTEGER NOT NULL,
    accepted_receipt TEXT NOT NULL,
    state            TEXT NOT NULL,
    attachments      TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX messages_sender ON messages (sender, accepted_at);

CREATE TABLE queue (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient    TEXT NOT NULL,
    type         TEXT NOT NULL,               -- 'envelope' | 'receipt'
    msg_id       TEXT NOT NULL,
    payload      TEXT,                        -- receipt token; NULL for an envelope (joined)
    reminder     INTEGER NOT NULL DEFAULT 0,
    enqueued_at  INTEGER NOT NULL
);
CREATE INDEX queue_recipient ON queue (recipient, seq);

CREATE TABLE receipts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id       TEXT NOT NULL,
    status       TEXT NOT NULL,
    signer       TEXT NOT NULL,
    at           INTEGER NOT NULL,
    token        TEXT NOT NULL,
    received_at  INTEGER NOT NULL,
    UNIQUE (msg_id, signer, status)
);

CREATE TABLE attachments (
    digest       TEXT PRIMARY KEY,
    uploader     TEXT NOT NULL,
    size         INTEGER NOT NULL,
    stored_at    INTEGER NOT NULL
);

CREATE TABLE message_attachments (
    digest       TEXT NOT NULL,
    msg_id       TEXT NOT NULL,
    PRIMARY KEY (digest, msg_id)
);
