-- Withdrawn alerts and response facts (issue 20, SPEC §7.1 and §8). An event that arrives late
-- can show that an alert should not have fired, or that a response fact no longer exists: the
-- pipeline then writes the same alert_id / response_id again with `withdrawn_at` set. A withdrawn
-- alert or fact counts in no metric and is not shown as open; a later version (the alert raised
-- again, say with another staff pool) stands again.
--
-- * `alerts` and `message_responses` gain `withdrawn_at`. Both keep each id's highest `version`
--   (ReplacingMergeTree(version)), now updated_at_ms * 4 + 2 if withdrawn + 1 if resolved
--   (sinks/rows.py `version_of`): a withdrawal outranks the version it withdraws (its updated_at
--   is never earlier), and a version issued after it (a later updated_at) outranks it.
--   `alerts` rows already stored are written again with versions of the new scale, so that a raise
--   sent again after the upgrade cannot outrank a resolution stored before it.
-- * `message_responses` was a ReplacingMergeTree without a version (the row inserted last won),
--   which cannot say which of two rewrites of a fact is the later. An engine cannot be changed
--   in place: the table is copied into one with `updated_at` (never null: a fact first written
--   has its replied_at) and `version`, and the two are swapped with RENAME (chDB and a server).
--   The defaults let a writer that does not know the columns yet still insert.
-- * The monthly rollup: the response and breach feeds carry `withdrawn_at` and the version, and
--   `rollup_sla` becomes ReplacingMergeTree(version, withdrawn): a row whose latest version is
--   withdrawn disappears under FINAL, which is how the monthly view and the dashboard's
--   one-month query (portal_pulse/reports/practice_month.py) read it, so neither changes. It is a
--   copy of the base tables, rebuilt here from them.
-- * `open_alerts_by_pool` (the BI view, SQL SECURITY DEFINER as in 0008) skips withdrawn alerts.
--
-- Written to be run again whole should it stop part way (each step checks or replaces).

-- The materialized views over the tables that change: created again below, after the swap (a
-- view follows its source table through a RENAME, so it would keep reading the old one).
DROP VIEW IF EXISTS rollup_sla_responses_mv;
DROP VIEW IF EXISTS rollup_sla_breaches_mv;
DROP VIEW IF EXISTS message_responses_rollup_feed_mv;
DROP VIEW IF EXISTS alerts_rollup_feed_mv;

ALTER TABLE alerts
    ADD COLUMN IF NOT EXISTS withdrawn_at Nullable(DateTime64(3, 'UTC')) AFTER updated_at;

-- message_responses, copied into a versioned table and swapped in.
DROP TABLE IF EXISTS message_responses_0009;

CREATE TABLE message_responses_0009
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
    met_external_promise      UInt8,
    withdrawn_at              Nullable(DateTime64(3, 'UTC')),
    updated_at                DateTime64(3, 'UTC') DEFAULT replied_at,
    version                   UInt64
        DEFAULT toUInt64(toUnixTimestamp64Milli(updated_at)) * 4 + if(withdrawn_at IS NULL, 0, 2)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(replied_at)
ORDER BY (practice_id, response_id)
SETTINGS non_replicated_deduplication_window = 10000;

-- Each fact's current row (the one the old table's FINAL gave), at the version of its reply.
INSERT INTO message_responses_0009
    (response_id, practice_id, thread_id, patient_pseudonym, category, routed_pool,
     replied_by_pool, first_message_at, clock_started_at, replied_at, messages_answered,
     response_business_minutes, response_wall_minutes, internal_due_at, external_due_at,
     met_internal_target, met_external_promise)
SELECT response_id, practice_id, thread_id, patient_pseudonym, category, routed_pool,
       replied_by_pool, first_message_at, clock_started_at, replied_at, messages_answered,
       response_business_minutes, response_wall_minutes, internal_due_at, external_due_at,
       met_internal_target, met_external_promise
FROM message_responses FINAL;

DROP TABLE IF EXISTS message_responses_0008;

RENAME TABLE message_responses TO message_responses_0008,
             message_responses_0009 TO message_responses;

DROP TABLE message_responses_0008;

-- Alerts stored with versions of the old scale (updated_at_ms * 2 + resolved), at the new one.
INSERT INTO alerts
    (alert_id, kind, practice_id, subject_id, patient_pseudonym, category, staff_pool, due_at,
     raised_at, resolved_at, response_business_minutes, updated_at, withdrawn_at, version)
SELECT alert_id, kind, practice_id, subject_id, patient_pseudonym, category, staff_pool, due_at,
       raised_at, resolved_at, response_business_minutes, updated_at, withdrawn_at,
       toUInt64(toUnixTimestamp64Milli(updated_at)) * 4 + if(withdrawn_at IS NULL, 0, 2)
           + if(resolved_at IS NULL, 0, 1) AS new_version
FROM alerts FINAL
WHERE version < new_version;

-- The rollup's feeds carry the version and the withdrawal (portal_pulse/reports/rollup.py feeds
-- them again from the base tables' columns of the same names).
ALTER TABLE message_responses_rollup_feed
    ADD COLUMN IF NOT EXISTS withdrawn_at Nullable(DateTime64(3, 'UTC')),
    ADD COLUMN IF NOT EXISTS version UInt64;

ALTER TABLE alerts_rollup_feed
    ADD COLUMN IF NOT EXISTS withdrawn_at Nullable(DateTime64(3, 'UTC'));

-- rollup_sla with the withdrawal as ReplacingMergeTree's is_deleted column, swapped in empty and
-- filled from the base tables below.
DROP TABLE IF EXISTS rollup_sla_0009;

CREATE TABLE rollup_sla_0009
(
    practice_id               LowCardinality(String),
    zone                      LowCardinality(String),
    kind                      LowCardinality(String),
    id                        String,
    month                     Date,
    version                   UInt64,
    withdrawn                 UInt8,
    response_business_minutes Float64,
    response_wall_minutes     Float64,
    met_internal_target       UInt8,
    met_external_promise      UInt8
)
ENGINE = ReplacingMergeTree(version, withdrawn)
ORDER BY (practice_id, zone, kind, id);

DROP TABLE IF EXISTS rollup_sla_0008;

RENAME TABLE rollup_sla TO rollup_sla_0008, rollup_sla_0009 TO rollup_sla;

DROP TABLE rollup_sla_0008;

CREATE MATERIALIZED VIEW IF NOT EXISTS message_responses_rollup_feed_mv
TO message_responses_rollup_feed
DEFINER = CURRENT_USER SQL SECURITY DEFINER AS
SELECT response_id, practice_id, replied_at, response_business_minutes, response_wall_minutes,
       met_internal_target, met_external_promise, withdrawn_at, version
FROM message_responses;

CREATE MATERIALIZED VIEW IF NOT EXISTS alerts_rollup_feed_mv TO alerts_rollup_feed
DEFINER = CURRENT_USER SQL SECURITY DEFINER AS
SELECT alert_id, kind, practice_id, due_at, version, withdrawn_at
FROM alerts;

CREATE MATERIALIZED VIEW IF NOT EXISTS rollup_sla_responses_mv TO rollup_sla
DEFINER = CURRENT_USER SQL SECURITY DEFINER AS
SELECT
    r.practice_id AS practice_id,
    r.zone AS zone,
    'response' AS kind,
    r.response_id AS id,
    toStartOfMonth(d.local_date) AS month,
    r.version AS version,
    toUInt8(r.withdrawn_at IS NOT NULL) AS withdrawn,
    r.response_business_minutes AS response_business_minutes,
    r.response_wall_minutes AS response_wall_minutes,
    r.met_internal_target AS met_internal_target,
    r.met_external_promise AS met_external_promise
FROM
(
    SELECT
        f.*,
        if(ifNull(p.timezone, '') = '',
           (SELECT any(timezone) FROM practices FINAL WHERE practice_id = 'default'),
           p.timezone) AS zone
    FROM message_responses_rollup_feed AS f
    LEFT JOIN (SELECT practice_id, timezone FROM practices FINAL) AS p ON p.practice_id = f.practice_id
) AS r
ASOF JOIN local_days AS d ON d.timezone = r.zone AND r.replied_at >= d.starts_at;

CREATE MATERIALIZED VIEW IF NOT EXISTS rollup_sla_breaches_mv TO rollup_sla
DEFINER = CURRENT_USER SQL SECURITY DEFINER AS
SELECT
    a.practice_id AS practice_id,
    a.zone AS zone,
    'breach' AS kind,
    a.alert_id AS id,
    toStartOfMonth(d.local_date) AS month,
    a.version AS version,
    toUInt8(a.withdrawn_at IS NOT NULL) AS withdrawn,
    0 AS response_business_minutes,
    0 AS response_wall_minutes,
    0 AS met_internal_target,
    0 AS met_external_promise
FROM
(
    SELECT
        f.*,
        if(ifNull(p.timezone, '') = '',
           (SELECT any(timezone) FROM practices FINAL WHERE practice_id = 'default'),
           p.timezone) AS zone
    FROM alerts_rollup_feed AS f
    LEFT JOIN (SELECT practice_id, timezone FROM practices FINAL) AS p ON p.practice_id = f.practice_id
    WHERE f.kind = 'sla.breached'
) AS a
ASOF JOIN local_days AS d ON d.timezone = a.zone AND a.due_at >= d.starts_at;

-- Fill rollup_sla from what is stored.
INSERT INTO message_responses_rollup_feed
    (response_id, practice_id, replied_at, response_business_minutes, response_wall_minutes,
     met_internal_target, met_external_promise, withdrawn_at, version)
SELECT response_id, practice_id, replied_at, response_business_minutes, response_wall_minutes,
       met_internal_target, met_external_promise, withdrawn_at, version
FROM message_responses FINAL;

INSERT INTO alerts_rollup_feed (alert_id, kind, practice_id, due_at, version, withdrawn_at)
SELECT alert_id, kind, practice_id, due_at, version, withdrawn_at
FROM alerts FINAL
WHERE kind = 'sla.breached';

-- Open alerts per practice, kind and staff pool, for BI: a withdrawn alert is not open.
CREATE OR REPLACE VIEW open_alerts_by_pool
DEFINER = CURRENT_USER SQL SECURITY DEFINER
AS SELECT
    practice_id,
    kind,
    ifNull(staff_pool, '') AS staff_pool,
    count() AS open
FROM alerts FINAL
WHERE resolved_at IS NULL AND withdrawn_at IS NULL
GROUP BY practice_id, kind, staff_pool;
