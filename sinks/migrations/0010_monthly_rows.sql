-- The monthly view, materialized (issue 18 item 8). BI tools read `monthly_portal_performance`;
-- answering one practice-month from the computing view (migration 0007: four joined parts,
-- window functions, 32 expressions) costs ClickHouse about 80 ms of planning before it reads
-- anything. So:
--
-- * `monthly_portal_performance_computed` is that view, unchanged (0007's SQL under a new name,
--   SQL SECURITY DEFINER as 0008 requires): the one definition of every row;
-- * `monthly_portal_performance_rows` holds its rows, one per practice and month, each written
--   with the time its computation began (`refreshed_at`, the version): the latest wins, and a
--   practice-month the computing view no longer has is written again with `deleted` = 1;
-- * `monthly_portal_performance` reads that table (FINAL): same columns, names, types and order
--   as before, still SQL SECURITY DEFINER, so the `bi` user reads it and never the table.
--
-- The process that writes ClickHouse refreshes the practices whose rows it wrote
-- (portal_pulse/reports/monthly_rows.py; docs/metrics.md "Monthly rollup"): every few seconds
-- while it runs, and always before it stops, at the end of `portal-pulse replay` and after
-- `practices sync`, so at rest the table equals the computing view exactly.
--
-- Written to be run again whole should it stop part way (each step replaces or is idempotent).

CREATE OR REPLACE VIEW monthly_portal_performance_computed
DEFINER = CURRENT_USER SQL SECURITY DEFINER
AS
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
        -- (ifNull: parts without a row for the month give 0, also under join_use_nulls = 1)
        ifNull(pt.unique_patients, 0) AS unique_patients,
        ifNull(pt.enrolled_patients, 0) AS enrolled_patients,
        -- every month with a first enrolment has events, so a running sum over the rows is
        -- the number enrolled by the month's end
        sum(ifNull(pt.new_enrollments, 0)) OVER (PARTITION BY m.practice_id ORDER BY m.month
                                      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
            AS enrolled_total,
        ifNull(pt.new_enrollments, 0) AS new_enrollments,
        ifNull(pt.active_users, 0) AS active_users,
        ifNull(pt.multi_feature_users, 0) AS multi_feature_users,
        ifNull(pt.app_users, 0) AS app_users,
        ifNull(pt.portal_user_surveys, 0) AS portal_user_surveys,
        ifNull(pt.portal_user_score_sum, 0) AS portal_user_score_sum,
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
        ifNull(rs.results_viewed, 0) AS results_viewed,
        ifNull(rs.same_day_views, 0) AS same_day_views,
        ifNull(rs.results_posted, 0) AS results_posted,
        ifNull(rs.viewed_before_contact, 0) AS viewed_before_contact,
        ifNull(sla.responses, 0) AS responses,
        sla.avg_response_business_hours AS avg_response_business_hours,
        sla.median_response_business_hours AS median_response_business_hours,
        sla.p90_response_business_hours AS p90_response_business_hours,
        sla.avg_response_hours AS avg_response_hours,
        sla.within_internal_target_rate AS within_internal_target_rate,
        sla.within_external_promise_rate AS within_external_promise_rate,
        ifNull(sla.sla_breaches, 0) AS sla_breaches
    FROM
    (
        -- Months with events in each practice's zone (its practices row's, else the 'default'
        -- row's), with its look-back likewise, and what is counted over events.
        SELECT
            r.*,
            toUInt32(if(ifNull(p.roster_lookback_days, 0) = 0,
                        (SELECT any(roster_lookback_days) FROM practices FINAL WHERE practice_id = 'default'),
                        p.roster_lookback_days)) AS lookback
        FROM
        (
        SELECT
            practice_id,
            zone,
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
        GROUP BY practice_id, zone, month
        ) AS r
        LEFT JOIN (SELECT practice_id, timezone, roster_lookback_days FROM practices FINAL) AS p
            ON p.practice_id = r.practice_id
        WHERE r.zone = if(ifNull(p.timezone, '') = '',
                          (SELECT any(timezone) FROM practices FINAL WHERE practice_id = 'default'),
                          p.timezone)
    ) AS m
    LEFT JOIN
    (
        -- Counted over patients, from their yearly month masks: bit k is month k+1. Patients
        -- with the same masks are counted together first (ten times fewer rows), then split
        -- into months.
        SELECT
            practice_id,
            zone,
            lookback,
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
            practice_id, zone, lookback, year,
            logins, multi, with_app, roster, enrolled_roster, first_enrolment,
            count() AS patients,
            groupArrayArray(answered) AS answered
        FROM
        (
            SELECT
                y.practice_id AS practice_id,
                y.zone AS zone,
                y.lookback AS lookback,
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
            -- patient keys hash practice and pseudonym; a former zone's rows must not match
            LEFT JOIN
            (
                SELECT patient, sipHash64(zone) AS zone_key, app_year, enrol_year
                FROM rollup_patient_firsts FINAL
            ) AS f ON f.patient = y.patient AND f.zone_key = sipHash64(y.zone)
        )
        GROUP BY practice_id, zone, lookback, year,
                 logins, multi, with_app, roster, enrolled_roster, first_enrolment
        )
        ARRAY JOIN range(12) AS k
        GROUP BY practice_id, zone, lookback, year, k
    ) AS pt ON pt.practice_id = m.practice_id AND pt.zone = m.zone AND pt.lookback = m.lookback
               AND pt.month = m.month
    LEFT JOIN
    (
        -- Results first viewed in the month (and on their posting's local date); results first
        -- posted in the month (and first viewed before any staff contact). Counted per
        -- (month viewed, month posted) first, then split.
        SELECT
            practice_id,
            zone,
            x.1 AS month,
            sum(x.2) AS results_viewed,
            sum(x.3) AS same_day_views,
            sum(x.4) AS results_posted,
            sum(x.5) AS viewed_before_contact
        FROM
        (
            SELECT
                practice_id,
                zone,
                toStartOfMonth(viewed_date) AS viewed_month,
                toStartOfMonth(posted_date) AS posted_month,
                count() AS n,
                countIf(ifNull(viewed_date = posted_date, false)) AS same_day,
                countIf(viewed_at IS NOT NULL AND ifNull(viewed_at < contacted_at, true)) AS before_contact
            FROM rollup_results FINAL
            GROUP BY practice_id, zone, viewed_month, posted_month
        )
        ARRAY JOIN arrayConcat(
            if(viewed_month IS NULL, [], [(assumeNotNull(viewed_month), n, same_day, 0, 0)]),
            if(posted_month IS NULL, [], [(assumeNotNull(posted_month), 0, 0, n, before_contact)])
        ) AS x
        GROUP BY practice_id, zone, month
    ) AS rs ON rs.practice_id = m.practice_id AND rs.zone = m.zone AND rs.month = m.month
    LEFT JOIN
    (
        -- Answered SLA clocks and their response times, by the local month of the reply;
        -- sla.breached alerts by the local month they were due.
        SELECT
            practice_id,
            zone,
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
        GROUP BY practice_id, zone, month
    ) AS sla ON sla.practice_id = m.practice_id AND sla.zone = m.zone AND sla.month = m.month
);


-- One row per practice and month of the computing view, plus the version and the tombstone.
CREATE TABLE IF NOT EXISTS monthly_portal_performance_rows
(
    practice_id                      LowCardinality(String),
    month                            String,
    unique_patients                  UInt64,
    enrolled_patients                UInt64,
    enrollment_rate                  Nullable(Float64),
    new_enrollments                  UInt64,
    active_users                     UInt64,
    active_user_rate                 Nullable(Float64),
    multi_feature_users              UInt64,
    multi_feature_rate               Nullable(Float64),
    patient_messages                 UInt64,
    staff_replies                    UInt64,
    messages_per_active_user         Nullable(Float64),
    portal_bookings                  UInt64,
    total_bookings                   UInt64,
    portal_booking_rate              Nullable(Float64),
    results_viewed                   UInt64,
    same_day_view_rate               Nullable(Float64),
    viewed_before_staff_contact_rate Nullable(Float64),
    portal_payment_cents             Int64,
    total_payment_cents              Int64,
    portal_payment_share             Nullable(Float64),
    inbound_calls                    UInt64,
    phone_volume_change              Nullable(Float64),
    responses                        UInt64,
    avg_response_business_hours      Nullable(Float64),
    median_response_business_hours   Nullable(Float64),
    p90_response_business_hours      Nullable(Float64),
    avg_response_hours               Nullable(Float64),
    within_internal_target_rate      Nullable(Float64),
    within_external_promise_rate     Nullable(Float64),
    sla_breaches                     UInt64,
    avg_satisfaction_portal_users    Nullable(Float64),
    app_install_rate                 Nullable(Float64),
    refreshed_at                     DateTime64(6, 'UTC'),
    deleted                          UInt8
)
ENGINE = ReplacingMergeTree(refreshed_at, deleted)
ORDER BY (practice_id, month);

-- Backfill: what the view showed until now (an insert of the same rows again only replaces them).
INSERT INTO monthly_portal_performance_rows
SELECT *, now64(6, 'UTC') AS refreshed_at, 0 AS deleted
FROM monthly_portal_performance_computed;

-- What BI tools and `portal-pulse dashboard` read: the stored rows, the columns of migration 0002.
CREATE OR REPLACE VIEW monthly_portal_performance
DEFINER = CURRENT_USER SQL SECURITY DEFINER
AS SELECT
    practice_id,
    month,
    unique_patients,
    enrolled_patients,
    enrollment_rate,
    new_enrollments,
    active_users,
    active_user_rate,
    multi_feature_users,
    multi_feature_rate,
    patient_messages,
    staff_replies,
    messages_per_active_user,
    portal_bookings,
    total_bookings,
    portal_booking_rate,
    results_viewed,
    same_day_view_rate,
    viewed_before_staff_contact_rate,
    portal_payment_cents,
    total_payment_cents,
    portal_payment_share,
    inbound_calls,
    phone_volume_change,
    responses,
    avg_response_business_hours,
    median_response_business_hours,
    p90_response_business_hours,
    avg_response_hours,
    within_internal_target_rate,
    within_external_promise_rate,
    sla_breaches,
    avg_satisfaction_portal_users,
    app_install_rate
FROM monthly_portal_performance_rows FINAL;
