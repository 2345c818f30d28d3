-- Core tables. Every table that takes retried batches keeps a dedup window, so a batch resent
-- with the same insert_deduplication_token (topic/partition/offsets) adds no rows; the
-- Replacing engines collapse anything that slips past the window (read them with FINAL).

CREATE TABLE IF NOT EXISTS events
(
    event_id          String,
    event_type        LowCardinality(String),
    occurred_at       DateTime64(3, 'UTC'),
    practice_id       LowCardinality(String),
    patient_pseudonym String,
    encounter_id      String DEFAULT '',
    method            LowCardinality(String) DEFAULT '',
    channel           LowCardinality(String) DEFAULT '',
    platform          LowCardinality(String) DEFAULT '',
    thread_id         String DEFAULT '',
    message_id        String DEFAULT '',
    category          LowCardinality(String) DEFAULT '',
    staff_pool        LowCardinality(String) DEFAULT '',
    automated         UInt8 DEFAULT 0,
    result_id         String DEFAULT '',
    appointment_id    String DEFAULT '',
    appointment_type  LowCardinality(String) DEFAULT '',
    payment_id        String DEFAULT '',
    amount_cents      Int64 DEFAULT 0,
    currency          LowCardinality(String) DEFAULT '',
    call_id           String DEFAULT '',
    direction         LowCardinality(String) DEFAULT '',
    reason            LowCardinality(String) DEFAULT '',
    refill_id         String DEFAULT '',
    survey_id         String DEFAULT '',
    score             UInt8 DEFAULT 0,
    ingested_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (practice_id, event_type, occurred_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS dead_letters
(
    source_topic     LowCardinality(String),
    source_partition Int32,
    source_offset    Int64,
    reason           LowCardinality(String),
    detail           String,
    field            String DEFAULT '',
    event_id         String DEFAULT '',
    practice_id      LowCardinality(String) DEFAULT '',
    received_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (source_topic, source_partition, source_offset)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS alerts
(
    alert_id                  String,
    kind                      LowCardinality(String),
    practice_id               LowCardinality(String),
    subject_id                String,
    patient_pseudonym         String,
    category                  LowCardinality(Nullable(String)),
    staff_pool                LowCardinality(Nullable(String)),
    due_at                    DateTime64(3, 'UTC'),
    raised_at                 DateTime64(3, 'UTC'),
    resolved_at               Nullable(DateTime64(3, 'UTC')),
    response_business_minutes Nullable(Float64),
    updated_at                DateTime64(3, 'UTC'),
    version                   UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(due_at)
ORDER BY (practice_id, alert_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS message_responses
(
    response_id               String,
    practice_id               LowCardinality(String),
    thread_id                 String,
    patient_pseudonym         String,
    category                  LowCardinality(String),
    routed_pool               LowCardinality(String),
    replied_by_pool           LowCardinality(String),
    first_message_at          DateTime64(3, 'UTC'),
    clock_started_at          DateTime64(3, 'UTC'),
    replied_at                DateTime64(3, 'UTC'),
    messages_answered         UInt32,
    response_business_minutes Float64,
    response_wall_minutes     Float64,
    internal_due_at           DateTime64(3, 'UTC'),
    external_due_at           DateTime64(3, 'UTC'),
    met_internal_target       UInt8,
    met_external_promise      UInt8
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(replied_at)
ORDER BY (practice_id, response_id)
SETTINGS non_replicated_deduplication_window = 10000;
