-- Exactly-once sinks (docs/delivery-guarantees.md): the highest Kafka offset written per table
-- and topic-partition, so records read again after a crash or a rebalance are skipped.
-- `events` carries its position in the row itself (written in the same insert as the data);
-- the other tables record it in `sink_positions` right after each insert, and their rows carry
-- deterministic ids that FINAL collapses should a crash fall between the two inserts.

ALTER TABLE events
    ADD COLUMN IF NOT EXISTS kafka_topic LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS kafka_partition Int32 DEFAULT -1,
    ADD COLUMN IF NOT EXISTS kafka_offset Int64 DEFAULT -1;

CREATE TABLE IF NOT EXISTS sink_positions
(
    table_name LowCardinality(String),
    topic      LowCardinality(String),
    partition  Int32,
    offset     Int64,
    updated_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(offset)
ORDER BY (table_name, topic, partition);
