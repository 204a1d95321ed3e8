-- Relay schema, version 3: one escalated receipt per step (the step joins the key).
CREATE TABLE receipts_v3 (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id       TEXT NOT NULL,
    status       TEXT NOT NULL,
    signer       TEXT NOT NULL,
    at           INTEGER NOT NULL,
    token        TEXT NOT NULL,
    received_at  INTEGER NOT NULL,
    step         INTEGER NOT NULL DEFAULT 0,
    UNIQUE (msg_id, signer, status, step)
);
INSERT INTO receipts_v3 (id, msg_id, status, signer, at, token, received_at, step)
    SELECT id, msg_id, status, signer, at, token, received_at, 0 FROM receipts;
DROP TABLE receipts;
ALTER TABLE receipts_v3 RENAME TO receipts;
