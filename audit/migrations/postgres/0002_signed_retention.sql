-- Signed retention. Removing events must be evidence: events are deleted only inside
-- esm_retain(), which first records an anchor row that must point at the `audit.retention`
-- event (seq after the removed ones) stating exactly this prefix and naming this checkpoint.
-- A plain DELETE is refused by the trigger, however many anchor rows exist. The database
-- cannot check the statement's Ed25519 signature; `esm audit verify` does, and fails for any
-- shortened log no signed statement covers. Rows written before this migration (no
-- statement) license nothing.
ALTER TABLE retention_anchor ADD COLUMN statement_seq BIGINT;

CREATE FUNCTION esm_audit_anchor_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM events s JOIN checkpoints c ON c.tree_size = NEW.up_to_seq
        WHERE s.seq = NEW.statement_seq
          AND s.seq > NEW.up_to_seq
          AND s.kind = 'audit.retention'
          AND jsonb_typeof(s.details::jsonb -> 'signature') = 'string'
          AND (s.details::jsonb ->> 'first_kept') = (NEW.up_to_seq + 1)::text
          AND (s.details::jsonb -> 'anchor' ->> 'tree_size') = c.tree_size::text
          AND (s.details::jsonb -> 'anchor' ->> 'root') = encode(c.root, 'hex')
          AND (s.details::jsonb -> 'anchor' ->> 'last_hash') = encode(c.last_hash, 'hex')
    ) THEN
        RAISE EXCEPTION 'a retention anchor needs the signed audit.retention statement for exactly its prefix in the log (up to %)', NEW.up_to_seq;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER anchor_needs_statement BEFORE INSERT ON retention_anchor
    FOR EACH ROW EXECUTE FUNCTION esm_audit_anchor_guard();

-- esm.audit.retaining is set (for its transaction only) by esm_retain alone.
CREATE OR REPLACE FUNCTION esm_audit_delete_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.seq > COALESCE(NULLIF(current_setting('esm.audit.retaining', true), '')::bigint, 0)
       OR NOT EXISTS (
           SELECT 1 FROM retention_anchor a JOIN events s ON s.seq = a.statement_seq
           WHERE a.up_to_seq >= OLD.seq
             AND s.kind = 'audit.retention'
             AND (s.details::jsonb ->> 'first_kept') = (a.up_to_seq + 1)::text)
    THEN
        RAISE EXCEPTION 'audit events are append-only (DELETE of seq % refused: only esm_retain under a signed retention statement removes old events)', OLD.seq;
    END IF;
    RETURN OLD;
END $$;

CREATE FUNCTION esm_retain(p_up_to BIGINT, p_statement_seq BIGINT, p_time_ns BIGINT)
RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    removed BIGINT;
BEGIN
    INSERT INTO retention_anchor (up_to_seq, time_ns, statement_seq)
        VALUES (p_up_to, p_time_ns, p_statement_seq);
    PERFORM set_config('esm.audit.retaining', p_up_to::text, true);
    DELETE FROM events WHERE seq <= p_up_to;
    GET DIAGNOSTICS removed = ROW_COUNT;
    PERFORM set_config('esm.audit.retaining', '', true);
    RETURN removed;
END $$;
