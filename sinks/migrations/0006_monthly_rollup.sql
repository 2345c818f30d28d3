-- Monthly metrics from a rollup (issue 12): the same numbers as migration 0002's view, without
-- reading every event at query time.
--
-- Materialized views keep small aggregate tables up to date as rows arrive in `events`,
-- `message_responses` and `alerts`; `monthly_portal_performance` reads only those. Three rules
-- keep every figure exactly what the query-time definition gave:
--
-- * Duplicates count once. `events` can hold a second copy of an event (a replay into a
--   database that has it, a duplicate past ingest's de-duplication memory) until its
--   ReplacingMergeTree merges, and alerts and response facts are re-inserted by design. So no
--   rollup adds rows up: events go into idempotent values (sets, bit-ORs, minimums) keyed by
--   the event's identity (its event_id and occurred_at, as `events` collapses them), and
--   responses and breaches go into ReplacingMergeTree copies read with FINAL, like the sources.
-- * Local dates are cut in the zone in force when the row arrives (the practice's `practices`
--   row, else 'default', as before), and every rollup row carries that zone; rows that depend
--   on the roster look-back carry it too. The view reads only rows of each practice's current
--   zone and look-back. When either changes, practices_sync feeds the practice's stored rows
--   through the rollup again (portal_pulse/reports/rollup.py).
-- * Events are keyed by a 64-bit SipHash of (event_id, occurred_at), results of result_id, both
--   within one practice, and patients of (practice_id, pseudonym): two different keys colliding
--   is a one-in-10^7 event even at a million patients.
--
-- Rows flow: events → events_rollup_feed (Null) → events_rollup_local (Null, with zone and
-- local date) → rollup_months, rollup_patient_years, rollup_patient_firsts, rollup_results.
-- A backfill inserts base rows into a *_rollup_feed table; everything downstream follows.

-- What the rollup reads of each event.
CREATE TABLE IF NOT EXISTS events_rollup_feed
(
    event_id          String,
    event_type        LowCardinality(String),
    occurred_at       DateTime64(3, 'UTC'),
    practice_id       LowCardinality(String),
    patient_pseudonym String,
    channel           LowCardinality(String),
    direction         LowCardinality(String),
    automated         UInt8,
    result_id         String,
    amount_cents      Int64,
    score             UInt8
)
ENGINE = Null;

-- The same, with the practice's zone and look-back, the local date and month, and the two keys.
CREATE TABLE IF NOT EXISTS events_rollup_local
(
    practice_id  LowCardinality(String),
    zone         LowCardinality(String),
    lookback     UInt32,
    local_date   Date,
    month        Date,
    event_type   LowCardinality(String),
    occurred_at  DateTime64(3, 'UTC'),
    event_key    UInt64,
    patient      UInt64,
    channel      LowCardinality(String),
    direction    LowCardinality(String),
    automated    UInt8,
    result_id    String,
    amount_cents Int64,
    score        UInt8
)
ENGINE = Null;

-- Per practice, zone and local month. A row exists for every month with an event (the months
-- the view shows). Counts are sets of event keys; payments are sets of (event key << 64 |
-- amount as UInt64), summed at query time. (Plain arrays merged as sets rather than aggregate
-- states: any client can read them.)
CREATE TABLE IF NOT EXISTS rollup_months
(
    practice_id      LowCardinality(String),
    zone             LowCardinality(String),
    month            Date,
    patient_messages SimpleAggregateFunction(groupUniqArrayArray, Array(UInt64)),
    staff_replies    SimpleAggregateFunction(groupUniqArrayArray, Array(UInt64)),
    portal_bookings  SimpleAggregateFunction(groupUniqArrayArray, Array(UInt64)),
    total_bookings   SimpleAggregateFunction(groupUniqArrayArray, Array(UInt64)),
    inbound_calls    SimpleAggregateFunction(groupUniqArrayArray, Array(UInt64)),
    portal_payments  SimpleAggregateFunction(groupUniqArrayArray, Array(UInt128)),
    payments         SimpleAggregateFunction(groupUniqArrayArray, Array(UInt128))
)
ENGINE = AggregatingMergeTree
ORDER BY (practice_id, zone, month)
-- rows are large (sets): small granules, so reading one practice reads little else
SETTINGS index_granularity = 32;

-- Per practice, zone, look-back, patient and local year, one bit per month (bit m-1): months
-- with a login, with each portal feature (SPEC §4 multi-feature users), with the app (an
-- install or a mobile login), with an enrolment (portal.enrolled or portal.login), and on the
-- roster (a visit on local date d covers month(d) up to, not including, month(d + look-back)).
-- Also the year's first enrolment instant and its survey answers (answered_at, month, event
-- key, score): whether a patient was enrolled when answering can change with a late enrolment.
CREATE TABLE IF NOT EXISTS rollup_patient_years
(
    practice_id LowCardinality(String),
    zone        LowCardinality(String),
    lookback    UInt32,
    patient     UInt64,
    year        UInt16,
    logins      SimpleAggregateFunction(groupBitOr, UInt16),
    messaging   SimpleAggregateFunction(groupBitOr, UInt16),
    scheduling  SimpleAggregateFunction(groupBitOr, UInt16),
    results     SimpleAggregateFunction(groupBitOr, UInt16),
    bill_pay    SimpleAggregateFunction(groupBitOr, UInt16),
    records     SimpleAggregateFunction(groupBitOr, UInt16),
    refills     SimpleAggregateFunction(groupBitOr, UInt16),
    app         SimpleAggregateFunction(groupBitOr, UInt16),
    enrolments  SimpleAggregateFunction(groupBitOr, UInt16),
    roster      SimpleAggregateFunction(groupBitOr, UInt16),
    enrolled_at SimpleAggregateFunction(min, Nullable(DateTime64(3, 'UTC'))),
    surveys     SimpleAggregateFunction(groupUniqArrayArray,
                                        Array(Tuple(DateTime64(3, 'UTC'), UInt8, UInt64, UInt8)))
)
ENGINE = AggregatingMergeTree
ORDER BY (practice_id, zone, lookback, patient, year);

-- Per practice, zone and patient: the first local year with the app and with an enrolment
-- (65535: none), which say what a patient's earlier years held.
CREATE TABLE IF NOT EXISTS rollup_patient_firsts
(
    practice_id LowCardinality(String),
    zone        LowCardinality(String),
    patient     UInt64,
    app_year    SimpleAggregateFunction(min, UInt16),
    enrol_year  SimpleAggregateFunction(min, UInt16)
)
ENGINE = AggregatingMergeTree
ORDER BY (practice_id, zone, patient);

-- Per practice, zone and result (SipHash of result_id): first posting (local date), first view,
-- first staff contact.
CREATE TABLE IF NOT EXISTS rollup_results
(
    practice_id  LowCardinality(String),
    zone         LowCardinality(String),
    result       UInt64,
    posted_date  SimpleAggregateFunction(min, Nullable(Date)),
    viewed_at    SimpleAggregateFunction(min, Nullable(DateTime64(3, 'UTC'))),
    viewed_date  SimpleAggregateFunction(min, Nullable(Date)),
    contacted_at SimpleAggregateFunction(min, Nullable(DateTime64(3, 'UTC')))
)
ENGINE = AggregatingMergeTree
ORDER BY (practice_id, zone, result);

CREATE MATERIALIZED VIEW IF NOT EXISTS events_rollup_feed_mv TO events_rollup_feed AS
SELECT event_id, event_type, occurred_at, practice_id, patient_pseudonym, channel, direction,
       automated, result_id, amount_cents, score
FROM events;

-- The one place events get their local date: an ASOF join on local_days (migration 0002).
CREATE MATERIALIZED VIEW IF NOT EXISTS events_rollup_local_mv TO events_rollup_local AS
SELECT
    e.practice_id AS practice_id,
    e.zone AS zone,
    e.lookback AS lookback,
    d.local_date AS local_date,
    toStartOfMonth(d.local_date) AS month,
    e.event_type AS event_type,
    e.occurred_at AS occurred_at,
    sipHash64(e.event_id, e.occurred_at) AS event_key,
    sipHash64(e.practice_id, e.patient_pseudonym) AS patient,
    e.channel AS channel,
    e.direction AS direction,
    e.automated AS automated,
    e.result_id AS result_id,
    e.amount_cents AS amount_cents,
    e.score AS score
FROM
(
    SELECT
        f.*,
        if(ifNull(p.timezone, '') = '',
           (SELECT any(timezone) FROM practices FINAL WHERE practice_id = 'default'),
           p.timezone) AS zone,
        toUInt32(if(ifNull(p.roster_lookback_days, 0) = 0,
           (SELECT any(roster_lookback_days) FROM practices FINAL WHERE practice_id = 'default'),
           p.roster_lookback_days)) AS lookback
    FROM events_rollup_feed AS f
    LEFT JOIN (SELECT practice_id, timezone, roster_lookback_days FROM practices FINAL) AS p
        ON p.practice_id = f.practice_id
) AS e
ASOF JOIN local_days AS d ON d.timezone = e.zone AND e.occurred_at >= d.starts_at;

CREATE MATERIALIZED VIEW IF NOT EXISTS rollup_months_mv TO rollup_months AS
SELECT
    practice_id,
    zone,
    month,
    groupUniqArrayIf(event_key, event_type = 'message.sent') AS patient_messages,
    groupUniqArrayIf(event_key, event_type = 'message.replied' AND automated = 0) AS staff_replies,
    groupUniqArrayIf(event_key, event_type = 'appointment.booked' AND channel = 'portal') AS portal_bookings,
    groupUniqArrayIf(event_key, event_type = 'appointment.booked') AS total_bookings,
    groupUniqArrayIf(event_key, event_type = 'phone.call' AND direction = 'inbound') AS inbound_calls,
    groupUniqArrayIf(
        bitOr(bitShiftLeft(toUInt128(event_key), 64), toUInt128(toUInt64(amount_cents))),
        event_type = 'payment.made' AND channel = 'portal') AS portal_payments,
    groupUniqArrayIf(
        bitOr(bitShiftLeft(toUInt128(event_key), 64), toUInt128(toUInt64(amount_cents))),
        event_type = 'payment.made') AS payments
FROM events_rollup_local
GROUP BY practice_id, zone, month;

CREATE MATERIALIZED VIEW IF NOT EXISTS rollup_patient_years_mv TO rollup_patient_years AS
SELECT
    practice_id,
    zone,
    lookback,
    patient,
    year,
    groupBitOrIf(bit, event_type = 'portal.login') AS logins,
    groupBitOrIf(bit, event_type = 'message.sent') AS messaging,
    groupBitOrIf(bit, event_type = 'appointment.booked' AND channel = 'portal') AS scheduling,
    groupBitOrIf(bit, event_type = 'result.viewed') AS results,
    groupBitOrIf(bit, event_type = 'payment.made' AND channel = 'portal') AS bill_pay,
    groupBitOrIf(bit, event_type = 'record.viewed') AS records,
    groupBitOrIf(bit, event_type = 'refill.requested' AND channel = 'portal') AS refills,
    groupBitOrIf(bit, event_type = 'app.installed'
                      OR (event_type = 'portal.login' AND channel = 'mobile_app')) AS app,
    groupBitOrIf(bit, event_type IN ('portal.enrolled', 'portal.login')) AS enrolments,
    -- the months of the visit's window that fall in `year`
    groupBitOrIf(
        bitAnd(toUInt16(bitShiftLeft(toUInt32(1), if(year = toYear(window_end), toMonth(window_end) - 1, 12)) - 1),
               bitNot(toUInt16(bitShiftLeft(toUInt32(1), if(year = toYear(month), toMonth(month) - 1, 0)) - 1))),
        event_type = 'patient.seen') AS roster,
    minIfOrNull(occurred_at, event_type IN ('portal.enrolled', 'portal.login')) AS enrolled_at,
    groupUniqArrayIf((occurred_at, toUInt8(toMonth(local_date)), event_key, score),
                     event_type = 'survey.response') AS surveys
FROM
(
    SELECT
        *,
        bitShiftLeft(toUInt16(1), toMonth(local_date) - 1) AS bit,
        -- a visit's roster window ends (exclusive) at the month of local date + look-back
        toStartOfMonth(addDays(local_date, lookback)) AS window_end,
        if(event_type = 'patient.seen',
           if(window_end > month,
              range(toUInt16(toYear(month)), toUInt16(toYear(subtractDays(window_end, 1)) + 1)), []),
           [toUInt16(toYear(local_date))]) AS years
    FROM events_rollup_local
    WHERE event_type IN ('portal.login', 'message.sent', 'appointment.booked', 'result.viewed',
                         'payment.made', 'record.viewed', 'refill.requested', 'app.installed',
                         'portal.enrolled', 'patient.seen', 'survey.response')
)
ARRAY JOIN years AS year
GROUP BY practice_id, zone, lookback, patient, year;

CREATE MATERIALIZED VIEW IF NOT EXISTS rollup_patient_firsts_mv TO rollup_patient_firsts AS
SELECT
    practice_id,
    zone,
    patient,
    min(if(event_type = 'app.installed' OR (event_type = 'portal.login' AND channel = 'mobile_app'),
           toUInt16(toYear(local_date)), 65535)) AS app_year,
    min(if(event_type IN ('portal.enrolled', 'portal.login'), toUInt16(toYear(local_date)), 65535))
        AS enrol_year
FROM events_rollup_local
WHERE event_type IN ('app.installed', 'portal.login', 'portal.enrolled')
GROUP BY practice_id, zone, patient;

CREATE MATERIALIZED VIEW IF NOT EXISTS rollup_results_mv TO rollup_results AS
SELECT
    practice_id,
    zone,
    sipHash64(result_id) AS result,
    minIfOrNull(local_date, event_type = 'result.posted') AS posted_date,
    minIfOrNull(occurred_at, event_type = 'result.viewed') AS viewed_at,
    minIfOrNull(local_date, event_type = 'result.viewed') AS viewed_date,
    minIfOrNull(occurred_at, event_type = 'result.staff_contacted') AS contacted_at
FROM events_rollup_local
WHERE event_type IN ('result.posted', 'result.viewed', 'result.staff_contacted')
GROUP BY practice_id, zone, result;

-- Answered SLA clocks by the local month of the reply, and sla.breached alerts by the local month
-- they were due: copies of message_responses and alerts with the zone and month, in one table
-- (one part of the view). ReplacingMergeTree(version) keeps what the sources keep: an alert's
-- latest version, and for responses (version 0) the fact inserted last.
CREATE TABLE IF NOT EXISTS message_responses_rollup_feed
(
    response_id               String,
    practice_id               LowCardinality(String),
    replied_at                DateTime64(3, 'UTC'),
    response_business_minutes Float64,
    response_wall_minutes     Float64,
    met_internal_target       UInt8,
    met_external_promise      UInt8
)
ENGINE = Null;

CREATE TABLE IF NOT EXISTS alerts_rollup_feed
(
    alert_id    String,
    kind        LowCardinality(String),
    practice_id LowCardinality(String),
    due_at      DateTime64(3, 'UTC'),
    version     UInt64
)
ENGINE = Null;

CREATE TABLE IF NOT EXISTS rollup_sla
(
    practice_id               LowCardinality(String),
    zone                      LowCardinality(String),
    kind                      LowCardinality(String),
    id                        String,
    month                     Date,
    version                   UInt64,
    response_business_minutes Float64,
    response_wall_minutes     Float64,
    met_internal_target       UInt8,
    met_external_promise      UInt8
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (practice_id, zone, kind, id);

CREATE MATERIALIZED VIEW IF NOT EXISTS message_responses_rollup_feed_mv
TO message_responses_rollup_feed AS
SELECT response_id, practice_id, replied_at, response_business_minutes, response_wall_minutes,
       met_internal_target, met_external_promise
FROM message_responses;

CREATE MATERIALIZED VIEW IF NOT EXISTS alerts_rollup_feed_mv TO alerts_rollup_feed AS
SELECT alert_id, kind, practice_id, due_at, version
FROM alerts;

CREATE MATERIALIZED VIEW IF NOT EXISTS rollup_sla_responses_mv TO rollup_sla AS
SELECT
    r.practice_id AS practice_id,
    r.zone AS zone,
    'response' AS kind,
    r.response_id AS id,
    toStartOfMonth(d.local_date) AS month,
    toUInt64(0) AS version,
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

CREATE MATERIALIZED VIEW IF NOT EXISTS rollup_sla_breaches_mv TO rollup_sla AS
SELECT
    a.practice_id AS practice_id,
    a.zone AS zone,
    'breach' AS kind,
    a.alert_id AS id,
    toStartOfMonth(d.local_date) AS month,
    a.version AS version,
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

-- The zone and look-back each practice's rollup rows were last cut with (practices_sync), so a
-- rebuild cut short is done again at the next sync.
CREATE TABLE IF NOT EXISTS rollup_builds
(
    practice_id String,
    zone        LowCardinality(String),
    lookback    UInt32,
    built_at    DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(built_at)
ORDER BY practice_id;

-- Backfill what is already stored (idempotent: every rollup collapses a row seen twice).
INSERT INTO events_rollup_feed
SELECT event_id, event_type, occurred_at, practice_id, patient_pseudonym, channel, direction,
       automated, result_id, amount_cents, score
FROM events;

INSERT INTO message_responses_rollup_feed
SELECT response_id, practice_id, replied_at, response_business_minutes, response_wall_minutes,
       met_internal_target, met_external_promise
FROM message_responses FINAL;

INSERT INTO alerts_rollup_feed
SELECT alert_id, kind, practice_id, due_at, version
FROM alerts FINAL;

-- The BI-facing view, as before: one row per practice and month with any event, one column per
-- SPEC §4 key, same names, types and order as migration 0002's. Each part reads one rollup
-- and reduces it per practice and month before the parts are joined.
CREATE OR REPLACE VIEW monthly_portal_performance AS
WITH
    -- Each practice's zone and look-back: its practices row, else the 'default' row.
    (
        SELECT (groupArrayIf(practice_id, timezone != ''), groupArrayIf(timezone, timezone != ''),
                anyIf(timezone, practice_id = 'default'),
                groupArrayIf(practice_id, roster_lookback_days != 0),
                groupArrayIf(roster_lookback_days, roster_lookback_days != 0),
                anyIf(roster_lookback_days, practice_id = 'default'))
        FROM practices FINAL
    ) AS settings
SELECT
    practice_id,
    formatDateTime(month_start, '%Y-%m') AS month,
    unique_patients,
    enrolled_patients,
    enrolled_patients / nullIf(unique_patients, 0) AS enrollment_rate,
    new_enrollments,
    active_users,
    active_users / nullIf(enrolled_total, 0) AS active_user_rate,
    multi_feature_users,
    multi_feature_users / nullIf(active_users, 0) AS multi_feature_rate,
    patient_messages,
    staff_replies,
    patient_messages / nullIf(active_users, 0) AS messages_per_active_user,
    portal_bookings,
    total_bookings,
    portal_bookings / nullIf(total_bookings, 0) AS portal_booking_rate,
    results_viewed,
    same_day_views / nullIf(results_viewed, 0) AS same_day_view_rate,
    viewed_before_contact / nullIf(results_posted, 0) AS viewed_before_staff_contact_rate,
    portal_payment_cents,
    total_payment_cents,
    portal_payment_cents / nullIf(total_payment_cents, 0) AS portal_payment_share,
    inbound_calls,
    (toInt64(inbound_calls) - toInt64(previous_inbound_calls)) / nullIf(previous_inbound_calls, 0)
        AS phone_volume_change,
    responses,
    avg_response_business_hours,
    median_response_business_hours,
    p90_response_business_hours,
    avg_response_hours,
    within_internal_target_rate,
    within_external_promise_rate,
    sla_breaches,
    portal_user_score_sum / nullIf(portal_user_surveys, 0) AS avg_satisfaction_portal_users,
    app_users / nullIf(active_users, 0) AS app_install_rate
FROM
(
    SELECT
        m.practice_id AS practice_id,
        m.month AS month_start,
        pt.unique_patients AS unique_patients,
        pt.enrolled_patients AS enrolled_patients,
        -- every month with a first enrolment has events, so a running sum over the rows is
        -- the number enrolled by the month's end
        sum(pt.new_enrollments) OVER (PARTITION BY m.practice_id ORDER BY m.month
                                      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
            AS enrolled_total,
        pt.new_enrollments AS new_enrollments,
        pt.active_users AS active_users,
        pt.multi_feature_users AS multi_feature_users,
        pt.app_users AS app_users,
        pt.portal_user_surveys AS portal_user_surveys,
        pt.portal_user_score_sum AS portal_user_score_sum,
        m.patient_messages AS patient_messages,
        m.staff_replies AS staff_replies,
        m.portal_bookings AS portal_bookings,
        m.total_bookings AS total_bookings,
        m.portal_payment_cents AS portal_payment_cents,
        m.total_payment_cents AS total_payment_cents,
        m.inbound_calls AS inbound_calls,
        sum(m.inbound_calls) OVER (
            PARTITION BY m.practice_id ORDER BY toRelativeMonthNum(m.month)
            RANGE BETWEEN 1 PRECEDING AND 1 PRECEDING) AS previous_inbound_calls,
        rs.results_viewed AS results_viewed,
        rs.same_day_views AS same_day_views,
        rs.results_posted AS results_posted,
        rs.viewed_before_contact AS viewed_before_contact,
        sla.responses AS responses,
        sla.avg_response_business_hours AS avg_response_business_hours,
        sla.median_response_business_hours AS median_response_business_hours,
        sla.p90_response_business_hours AS p90_response_business_hours,
        sla.avg_response_hours AS avg_response_hours,
        sla.within_internal_target_rate AS within_internal_target_rate,
        sla.within_external_promise_rate AS within_external_promise_rate,
        sla.sla_breaches AS sla_breaches
    FROM
    (
        -- Months with events, and what is counted over events.
        SELECT
            practice_id,
            month,
            uniqExactArray(patient_messages) AS patient_messages,
            uniqExactArray(staff_replies) AS staff_replies,
            uniqExactArray(portal_bookings) AS portal_bookings,
            uniqExactArray(total_bookings) AS total_bookings,
            uniqExactArray(inbound_calls) AS inbound_calls,
            -- the low 64 bits of a sum of (key << 64 | amount) are the sum of the amounts
            toInt64(toUInt64(bitAnd(arraySum(groupUniqArrayArray(portal_payments)),
                                    0xFFFFFFFFFFFFFFFF))) AS portal_payment_cents,
            toInt64(toUInt64(bitAnd(arraySum(groupUniqArrayArray(payments)),
                                    0xFFFFFFFFFFFFFFFF))) AS total_payment_cents
        FROM rollup_months
        WHERE zone = transform(practice_id, settings.1, settings.2, settings.3)
        GROUP BY practice_id, month
    ) AS m
    LEFT JOIN
    (
        -- Counted over patients, from their yearly month masks: bit k is month k+1. Patients
        -- with the same masks are counted together first (ten times fewer rows), then split
        -- into months.
        SELECT
            practice_id,
            makeDate(year, k + 1, 1) AS month,
            sum(patients * bitTest(logins, k)) AS active_users,
            sum(patients * bitTest(multi, k)) AS multi_feature_users,
            sum(patients * bitTest(with_app, k)) AS app_users,
            sum(patients * bitTest(roster, k)) AS unique_patients,
            sum(patients * bitTest(enrolled_roster, k)) AS enrolled_patients,
            sum(patients * bitTest(first_enrolment, k)) AS new_enrollments,
            sum(arrayCount(a -> a.2 = k + 1, answered)) AS portal_user_surveys,
            sum(arraySum(a -> if(a.2 = k + 1, a.4, 0), answered)) AS portal_user_score_sum
        FROM
        (
        SELECT
            practice_id, year, logins, multi, with_app, roster, enrolled_roster, first_enrolment,
            count() AS patients,
            groupArrayArray(answered) AS answered
        FROM
        (
            SELECT
                y.practice_id AS practice_id,
                y.year AS year,
                y.logins AS logins,
                y.roster AS roster,
                -- at least two features: OR of every pairwise AND, built up
                bitAnd(logins,
                    bitOr(bitOr(bitOr(bitAnd(messaging, scheduling),
                                      bitAnd(bitOr(messaging, scheduling), results)),
                                bitAnd(bitOr(bitOr(messaging, scheduling), results), bill_pay)),
                          bitOr(bitAnd(bitOr(bitOr(bitOr(messaging, scheduling), results), bill_pay),
                                       records),
                                bitAnd(bitOr(bitOr(bitOr(bitOr(messaging, scheduling), results),
                                                   bill_pay), records), refills)))) AS multi,
                -- app (bit 0) and enrolment (bit 1) in an earlier year of the same patient
                toUInt8(f.app_year BETWEEN 1 AND y.year - 1)
                    + 2 * toUInt8(f.enrol_year BETWEEN 1 AND y.year - 1) AS before,
                -- a mask's lowest set bit b, and 4096 - b: that month and every later one
                bitAnd(toUInt32(app), 65536 - toUInt32(app)) AS first_app,
                bitAnd(toUInt32(enrolments), 65536 - toUInt32(enrolments)) AS first_enrolled,
                bitAnd(logins, if(bitTest(before, 0), 4095, if(app = 0, 0, 4096 - first_app)))
                    AS with_app,
                bitAnd(roster, if(bitTest(before, 1), 4095,
                                  if(enrolments = 0, 0, 4096 - first_enrolled))) AS enrolled_roster,
                if(bitTest(before, 1), 0, first_enrolled) AS first_enrolment,
                -- surveys answered once enrolled
                if(bitTest(before, 1), surveys,
                   arrayFilter(a -> ifNull(a.1 >= enrolled_at, false), surveys)) AS answered
            FROM rollup_patient_years AS y FINAL
            -- patient keys are salted with the practice: the key alone identifies
            LEFT JOIN
            (
                SELECT patient, app_year, enrol_year
                FROM rollup_patient_firsts FINAL
                WHERE zone = transform(practice_id, settings.1, settings.2, settings.3)
            ) AS f ON f.patient = y.patient
            WHERE y.zone = transform(y.practice_id, settings.1, settings.2, settings.3)
              AND y.lookback = transform(y.practice_id, settings.4, settings.5, settings.6)
        )
        GROUP BY practice_id, year, logins, multi, with_app, roster, enrolled_roster, first_enrolment
        )
        ARRAY JOIN range(12) AS k
        GROUP BY practice_id, year, k
    ) AS pt ON pt.practice_id = m.practice_id AND pt.month = m.month
    LEFT JOIN
    (
        -- Results first viewed in the month (and on their posting's local date); results first
        -- posted in the month (and first viewed before any staff contact). Counted per
        -- (month viewed, month posted) first, then split.
        SELECT
            practice_id,
            x.1 AS month,
            sum(x.2) AS results_viewed,
            sum(x.3) AS same_day_views,
            sum(x.4) AS results_posted,
            sum(x.5) AS viewed_before_contact
        FROM
        (
            SELECT
                practice_id,
                toStartOfMonth(viewed_date) AS viewed_month,
                toStartOfMonth(posted_date) AS posted_month,
                count() AS n,
                countIf(ifNull(viewed_date = posted_date, false)) AS same_day,
                countIf(viewed_at IS NOT NULL AND ifNull(viewed_at < contacted_at, true)) AS before_contact
            FROM rollup_results FINAL
            WHERE zone = transform(practice_id, settings.1, settings.2, settings.3)
            GROUP BY practice_id, viewed_month, posted_month
        )
        ARRAY JOIN arrayConcat(
            if(viewed_month IS NULL, [], [(assumeNotNull(viewed_month), n, same_day, 0, 0)]),
            if(posted_month IS NULL, [], [(assumeNotNull(posted_month), 0, 0, n, before_contact)])
        ) AS x
        GROUP BY practice_id, month
    ) AS rs ON rs.practice_id = m.practice_id AND rs.month = m.month
    LEFT JOIN
    (
        -- Answered SLA clocks and their response times, by the local month of the reply;
        -- sla.breached alerts by the local month they were due.
        SELECT
            practice_id,
            month,
            countIf(kind = 'response') AS responses,
            if(responses = 0, NULL, avgIf(response_business_minutes, kind = 'response') / 60)
                AS avg_response_business_hours,
            if(responses = 0, NULL,
               quantileExactInclusiveIf(0.5)(response_business_minutes, kind = 'response') / 60)
                AS median_response_business_hours,
            if(responses = 0, NULL,
               quantileExactInclusiveIf(0.9)(response_business_minutes, kind = 'response') / 60)
                AS p90_response_business_hours,
            if(responses = 0, NULL, avgIf(response_wall_minutes, kind = 'response') / 60)
                AS avg_response_hours,
            if(responses = 0, NULL, avgIf(met_internal_target, kind = 'response'))
                AS within_internal_target_rate,
            if(responses = 0, NULL, avgIf(met_external_promise, kind = 'response'))
                AS within_external_promise_rate,
            countIf(kind = 'breach') AS sla_breaches
        FROM rollup_sla FINAL
        WHERE zone = transform(practice_id, settings.1, settings.2, settings.3)
        GROUP BY practice_id, month
    ) AS sla ON sla.practice_id = m.practice_id AND sla.month = m.month
);

-- The query-time helpers of migration 0002 are no longer read.
DROP VIEW IF EXISTS portal_patient_stats_months;
DROP VIEW IF EXISTS portal_patients;
DROP VIEW IF EXISTS portal_patient_months;
DROP VIEW IF EXISTS portal_result_months;
DROP VIEW IF EXISTS portal_response_months;
DROP VIEW IF EXISTS portal_breach_months;
