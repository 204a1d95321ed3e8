-- Relay schema, version 5: the append-only log of receipts (an RFC 9162 Merkle tree).
-- Every perfect subtree is kept by (level, index); level 0 holds the leaf hashes, one
-- per receipt stored (the accepted receipts included), in commit order.
ALTER TABLE messages ADD COLUMN log_index INTEGER;
ALTER TABLE receipts ADD COLUMN log_index INTEGER;
CREATE TABLE log_nodes (
    level  INTEGER NOT NULL,
    idx    INTEGER NOT NULL,
    hash   BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID
