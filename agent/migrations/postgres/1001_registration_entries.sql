-- Registration entries. Versions from 1001 are the entry store's; the audit store's are
-- below 1000, and each store's migrator ignores the other's. IF NOT EXISTS: databases from
-- before this migration already hold the table, made by esm at start.
CREATE TABLE IF NOT EXISTS registration_entries (
    id TEXT PRIMARY KEY,
    spiffe_id TEXT NOT NULL,
    selectors TEXT NOT NULL,
    ttl_secs BIGINT,
    dns_names TEXT NOT NULL,
    created_at TEXT NOT NULL
);
