-- Local inbox schema, version 2: the outbox. Sealed envelopes the relay could not take
-- yet (the daemon submits them), and signed decision receipts (acknowledged, rejected)
-- still to be confirmed by the relay.
CREATE TABLE outbox (
    id              TEXT PRIMARY KEY,       -- the message id (a retry is idempotent)
    token           TEXT NOT NULL,          -- the sealed envelope, compact
    expires         INTEGER NOT NULL,       -- never submitted at or after this time
    files           TEXT NOT NULL DEFAULT '[]', -- JSON [[sha256, path], ...]: encrypted
                                            -- attachments to upload before the envelope
    queued_at       INTEGER NOT NULL,
    state           TEXT NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued', 'submitted', 'expired', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    last_error      TEXT,
    done_at         INTEGER
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE state = 'queued';

CREATE TABLE receipt_uploads (
    msg_id          TEXT PRIMARY KEY REFERENCES messages (id),
    token           TEXT NOT NULL,          -- the signed acknowledged/rejected receipt
    status          TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'sent', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    last_error      TEXT,
    done_at         INTEGER
);
CREATE INDEX receipt_uploads_due ON receipt_uploads (next_attempt_at) WHERE state = 'pending'
