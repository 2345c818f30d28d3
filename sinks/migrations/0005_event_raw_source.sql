-- The raw record each `events` row was made from (the clean record's `pp-src` header:
-- raw topic|partition, and the raw offset). The sink role (portal-pulse worker --role sink)
-- reads back max(raw_offset) per clean partition and raw source when it starts, so it
-- recognises a second copy of a raw record (ingest re-read after a crash) exactly as the
-- processors do, across its own restarts. Rows written before this migration keep the defaults.

ALTER TABLE events
    ADD COLUMN IF NOT EXISTS raw_source LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS raw_offset Int64 DEFAULT -1;
