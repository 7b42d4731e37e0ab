-- The audit log. The triggers make the database itself refuse UPDATE, DELETE and TRUNCATE on
-- events, except DELETE of events already covered by a retention anchor (a signed checkpoint).
CREATE TABLE events (
    seq            BIGINT PRIMARY KEY,
    time_ns        BIGINT NOT NULL,
    kind           TEXT NOT NULL,
    actor          TEXT NOT NULL,
    subject        TEXT NOT NULL,
    action         TEXT NOT NULL,
    outcome        TEXT NOT NULL,
    reason         TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    node           TEXT NOT NULL,
    details        TEXT NOT NULL,
    prev_hash      BYTEA NOT NULL,
    hash           BYTEA NOT NULL
);
CREATE INDEX events_time ON events (time_ns);

CREATE TABLE checkpoints (
    tree_size BIGINT PRIMARY KEY,
    root      BYTEA NOT NULL,
    last_hash BYTEA NOT NULL,
    frontier  BYTEA NOT NULL,
    time_ns   BIGINT NOT NULL,
    key_id    TEXT NOT NULL,
    signature BYTEA NOT NULL
);

CREATE TABLE retention_anchor (
    up_to_seq BIGINT PRIMARY KEY REFERENCES checkpoints (tree_size),
    time_ns   BIGINT NOT NULL
);

CREATE FUNCTION esm_audit_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'esm audit table % is append-only (% refused)', TG_TABLE_NAME, TG_OP;
END $$;

CREATE FUNCTION esm_audit_delete_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.seq > (SELECT COALESCE(MAX(up_to_seq), 0) FROM retention_anchor) THEN
        RAISE EXCEPTION 'audit events are append-only (DELETE of seq % refused)', OLD.seq;
    END IF;
    RETURN OLD;
END $$;

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION esm_audit_refuse();
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION esm_audit_delete_guard();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION esm_audit_refuse();
CREATE TRIGGER checkpoints_no_change BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION esm_audit_refuse();
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION esm_audit_refuse();
CREATE TRIGGER anchor_no_change BEFORE UPDATE OR DELETE ON retention_anchor
    FOR EACH ROW EXECUTE FUNCTION esm_audit_refuse();
CREATE TRIGGER anchor_no_truncate BEFORE TRUNCATE ON retention_anchor
    FOR EACH STATEMENT EXECUTE FUNCTION esm_audit_refuse();
