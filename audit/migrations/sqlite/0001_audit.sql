-- The audit log. The triggers make the database itself refuse UPDATE and DELETE on events,
-- except DELETE of events already covered by a retention anchor (a signed checkpoint).
CREATE TABLE events (
    seq            INTEGER PRIMARY KEY NOT NULL,
    time_ns        INTEGER NOT NULL,
    kind           TEXT NOT NULL,
    actor          TEXT NOT NULL,
    subject        TEXT NOT NULL,
    action         TEXT NOT NULL,
    outcome        TEXT NOT NULL,
    reason         TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    node           TEXT NOT NULL,
    details        TEXT NOT NULL,
    prev_hash      BLOB NOT NULL,
    hash           BLOB NOT NULL
);
CREATE INDEX events_time ON events (time_ns);

CREATE TABLE checkpoints (
    tree_size INTEGER PRIMARY KEY NOT NULL,
    root      BLOB NOT NULL,
    last_hash BLOB NOT NULL,
    frontier  BLOB NOT NULL,
    time_ns   INTEGER NOT NULL,
    key_id    TEXT NOT NULL,
    signature BLOB NOT NULL
);

CREATE TABLE retention_anchor (
    up_to_seq INTEGER PRIMARY KEY NOT NULL,
    time_ns   INTEGER NOT NULL
);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;

CREATE TRIGGER events_no_delete BEFORE DELETE ON events
WHEN OLD.seq > (SELECT COALESCE(MAX(up_to_seq), 0) FROM retention_anchor)
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;

CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;

CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;

CREATE TRIGGER anchor_needs_checkpoint BEFORE INSERT ON retention_anchor
WHEN NOT EXISTS (SELECT 1 FROM checkpoints WHERE tree_size = NEW.up_to_seq)
BEGIN SELECT RAISE(ABORT, 'a retention anchor must be a checkpoint'); END;

CREATE TRIGGER anchor_no_update BEFORE UPDATE ON retention_anchor
BEGIN SELECT RAISE(ABORT, 'retention anchors are append-only'); END;

CREATE TRIGGER anchor_no_delete BEFORE DELETE ON retention_anchor
BEGIN SELECT RAISE(ABORT, 'retention anchors are append-only'); END;
