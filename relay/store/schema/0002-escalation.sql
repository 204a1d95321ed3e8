-- Relay schema, version 2: escalation timers with fencing generations.
ALTER TABLE messages ADD COLUMN policy TEXT NOT NULL DEFAULT '{}';
ALTER TABLE messages ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN escalation_step INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN released TEXT NOT NULL DEFAULT '[]';
ALTER TABLE queue ADD COLUMN note TEXT;
CREATE TABLE timers (
    msg_id      TEXT NOT NULL,
    step        INTEGER NOT NULL,   -- 1 remind, 2 release, 3 notify, 9 expire
    due         INTEGER NOT NULL,
    generation  INTEGER NOT NULL,   -- fencing token: must equal messages.generation to fire
    PRIMARY KEY (msg_id, step)
);
CREATE INDEX timers_due ON timers (due);
