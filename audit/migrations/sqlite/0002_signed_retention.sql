-- Signed retention. Removing events must be evidence: an anchor row only licenses deletion
-- when it points at the `audit.retention` event (seq after the removed ones) that states
-- exactly this prefix and names this checkpoint. SQLite cannot check the statement's Ed25519
-- signature; `esm audit verify` does, and fails for any shortened log no signed statement
-- covers. Rows written before this migration (no statement) license nothing.
ALTER TABLE retention_anchor ADD COLUMN statement_seq INTEGER;

CREATE TRIGGER anchor_needs_statement BEFORE INSERT ON retention_anchor
WHEN NOT EXISTS (
    SELECT 1 FROM events s JOIN checkpoints c ON c.tree_size = NEW.up_to_seq
    WHERE s.seq = NEW.statement_seq
      AND s.seq > NEW.up_to_seq
      AND s.kind = 'audit.retention'
      AND json_valid(s.details)
      AND json_extract(s.details, '$.first_kept') = NEW.up_to_seq + 1
      AND json_extract(s.details, '$.anchor.tree_size') = c.tree_size
      AND json_extract(s.details, '$.anchor.root') = lower(hex(c.root))
      AND json_extract(s.details, '$.anchor.last_hash') = lower(hex(c.last_hash))
      AND json_type(s.details, '$.signature') = 'text')
BEGIN SELECT RAISE(ABORT, 'a retention anchor needs the signed audit.retention statement for exactly its prefix in the log'); END;

DROP TRIGGER events_no_delete;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
WHEN NOT EXISTS (
    SELECT 1 FROM retention_anchor a JOIN events s ON s.seq = a.statement_seq
    WHERE a.up_to_seq >= OLD.seq
      AND s.kind = 'audit.retention'
      AND json_extract(s.details, '$.first_kept') = a.up_to_seq + 1)
BEGIN SELECT RAISE(ABORT, 'audit events are append-only (only a signed retention statement removes old events)'); END;
