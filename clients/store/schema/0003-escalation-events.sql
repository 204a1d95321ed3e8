-- Local inbox schema, version 3: events a person or a hook must see, and hook jobs per
-- event. An event is one of received, reminded, released, escalation, expired, sent,
-- acknowledged about one message id (not necessarily a message in this inbox: an
-- escalation notice to a deputy is about another authority's message). The occurrence
-- tells repeated events apart (the relay's queue seq of a reminder), so a redelivered
-- item is the same event and a later reminder is a new one. Data is metadata only.
CREATE TABLE events (
    event           TEXT NOT NULL,
    msg_id          TEXT NOT NULL,
    occurrence      TEXT NOT NULL DEFAULT '',
    at              INTEGER NOT NULL,
    data            TEXT NOT NULL DEFAULT '{}',  -- JSON object, metadata only
    PRIMARY KEY (event, msg_id, occurrence)
);
CREATE INDEX events_by_message ON events (msg_id, at);
CREATE INDEX events_by_time ON events (event, at DESC);

-- Hook jobs are keyed by (event, message, occurrence, hook). Existing jobs are about
-- received messages, as before. No foreign key: an event need not name a stored message.
CREATE TABLE hook_jobs_v3 (
    event           TEXT NOT NULL DEFAULT 'received',
    msg_id          TEXT NOT NULL,
    occurrence      TEXT NOT NULL DEFAULT '',
    hook            TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'done', 'failed', 'skipped')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    last_error      TEXT,
    skipped_reason  TEXT,
    PRIMARY KEY (event, msg_id, occurrence, hook)
);
INSERT INTO hook_jobs_v3 (msg_id, hook, state, attempts, next_attempt_at, last_error, skipped_reason)
    SELECT msg_id, hook, state, attempts, next_attempt_at, last_error, skipped_reason FROM hook_jobs;
DROP TABLE hook_jobs;
ALTER TABLE hook_jobs_v3 RENAME TO hook_jobs;
CREATE INDEX hook_jobs_due ON hook_jobs (next_attempt_at) WHERE state = 'pending';
CREATE INDEX hook_jobs_by_message ON hook_jobs (msg_id)
