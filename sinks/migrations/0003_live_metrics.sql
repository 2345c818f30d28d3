-- Live rolling metrics (issue: today and trailing seven days per practice), one row per
-- practice, practice-local day and source partition; the view adds the partitions up.

CREATE TABLE IF NOT EXISTS live_metrics
(
    practice_id            LowCardinality(String),
    partition              UInt16,
    day                    Date,
    logins                 UInt32,
    active_patients        UInt32,
    patient_messages       UInt32,
    portal_bookings        UInt32,
    total_bookings         UInt32,
    inbound_calls          UInt32,
    logins_7d              UInt32,
    active_patients_7d     UInt32,
    patient_messages_7d    UInt32,
    portal_bookings_7d     UInt32,
    total_bookings_7d      UInt32,
    inbound_calls_7d       UInt32,
    open_provider          UInt32,
    open_nurse             UInt32,
    open_front_desk        UInt32,
    open_billing           UInt32,
    as_of                  DateTime64(3, 'UTC'),
    version                UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (practice_id, day, partition)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE VIEW IF NOT EXISTS live_portal_metrics AS
SELECT
    practice_id,
    day,
    sum(logins) AS logins_today,
    sum(active_patients) AS active_patients_today,
    sum(patient_messages) AS patient_messages_today,
    sum(portal_bookings) AS portal_bookings_today,
    sum(total_bookings) AS total_bookings_today,
    sum(inbound_calls) AS inbound_calls_today,
    sum(logins_7d) AS logins_7d,
    sum(active_patients_7d) AS active_patients_7d,
    sum(patient_messages_7d) AS patient_messages_7d,
    sum(portal_bookings_7d) AS portal_bookings_7d,
    sum(total_bookings_7d) AS total_bookings_7d,
    sum(inbound_calls_7d) AS inbound_calls_7d,
    sum(open_provider) AS open_unanswered_provider,
    sum(open_nurse) AS open_unanswered_nurse,
    sum(open_front_desk) AS open_unanswered_front_desk,
    sum(open_billing) AS open_unanswered_billing,
    max(as_of) AS as_of
FROM live_metrics FINAL
GROUP BY practice_id, day;
