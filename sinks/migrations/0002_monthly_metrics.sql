-- Monthly portal performance (SPEC §4), per practice and calendar month in the practice's zone.
--
-- ClickHouse accepts only constant time zones, so local dates come from an ASOF join on
-- local_days (the UTC instant of every local midnight, per zone): the latest midnight at or
-- before an instant is its local date. practices and local_days are written by
-- portal_pulse.reports.practices_sync.sync_practices; a practice with no row yet uses the
-- 'default' row; local_days spans 2000–2099. Everything else is derived at query time from
-- events, message_responses and alerts, so replays, late events and changed zones need no backfill.

CREATE TABLE IF NOT EXISTS practices
(
    practice_id          String,
    timezone             LowCardinality(String),
    roster_lookback_days UInt32,
    updated_at           DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY practice_id;

CREATE TABLE IF NOT EXISTS local_days
(
    timezone   LowCardinality(String),
    starts_at  DateTime64(3, 'UTC'),
    local_date Date
)
ENGINE = ReplacingMergeTree
ORDER BY (timezone, starts_at);

-- Clean events with the practice-local date and month (first day) of occurred_at.
CREATE OR REPLACE VIEW events_local AS
SELECT
    e.practice_id          AS practice_id,
    e.patient_pseudonym    AS patient_pseudonym,
    e.event_type           AS event_type,
    e.occurred_at          AS occurred_at,
    e.channel              AS channel,
    e.direction            AS direction,
    e.automated            AS automated,
    e.result_id            AS result_id,
    e.amount_cents         AS amount_cents,
    e.score                AS score,
    e.roster_lookback_days AS roster_lookback_days,
    d.local_date           AS local_date,
    toStartOfMonth(d.local_date) AS month
FROM
(
    SELECT
        ev.practice_id AS practice_id,
        ev.patient_pseudonym AS patient_pseudonym,
        ev.event_type AS event_type,
        ev.occurred_at AS occurred_at,
        ev.channel AS channel,
        ev.direction AS direction,
        ev.automated AS automated,
        ev.result_id AS result_id,
        ev.amount_cents AS amount_cents,
        ev.score AS score,
        if(ifNull(p.timezone, '') = '',
           (SELECT any(timezone) FROM practices FINAL WHERE practice_id = 'default'),
           p.timezone) AS zone,
        if(ifNull(p.roster_lookback_days, 0) = 0,
           (SELECT any(roster_lookback_days) FROM practices FINAL WHERE practice_id = 'default'),
           p.roster_lookback_days) AS roster_lookback_days
    FROM events AS ev FINAL
    LEFT JOIN (SELECT practice_id, timezone, roster_lookback_days FROM practices FINAL) AS p
        ON p.practice_id = ev.practice_id
) AS e
ASOF JOIN local_days AS d ON d.timezone = e.zone AND e.occurred_at >= d.starts_at;

-- One row per practice, patient and local month with any event: what the patient did then.
-- Enrolment time is the earlier of the first portal.enrolled and the first portal.login
-- (a login with no earlier enrolment implies one), so it is the minimum over both types.
CREATE OR REPLACE VIEW portal_patient_months AS
SELECT
    practice_id,
    patient_pseudonym,
    month,
    any(roster_lookback_days) AS roster_lookback_days,
    minIfOrNull(occurred_at, event_type IN ('portal.enrolled', 'portal.login')) AS first_enrolment_at,
    countIf(event_type = 'app.installed'
            OR (event_type = 'portal.login' AND channel = 'mobile_app')) > 0 AS has_app,
    maxIfOrNull(local_date, event_type = 'patient.seen') AS last_seen_date,
    countIf(event_type = 'portal.login') AS logins,
    groupBitOr(toUInt8(multiIf(
        event_type = 'message.sent', 1,
        event_type = 'appointment.booked' AND channel = 'portal', 2,
        event_type = 'result.viewed', 4,
        event_type = 'payment.made' AND channel = 'portal', 8,
        event_type = 'record.viewed', 16,
        event_type = 'refill.requested' AND channel = 'portal', 32,
        0))) AS features,
    countIf(event_type = 'message.sent') AS patient_messages,
    countIf(event_type = 'message.replied' AND automated = 0) AS staff_replies,
    countIf(event_type = 'appointment.booked' AND channel = 'portal') AS portal_bookings,
    countIf(event_type = 'appointment.booked') AS total_bookings,
    sumIf(amount_cents, event_type = 'payment.made' AND channel = 'portal') AS portal_payment_cents,
    sumIf(amount_cents, event_type = 'payment.made') AS total_payment_cents,
    countIf(event_type = 'phone.call' AND direction = 'inbound') AS inbound_calls,
    groupArrayIf((occurred_at, score), event_type = 'survey.response') AS surveys
FROM events_local
GROUP BY practice_id, patient_pseudonym, month;

-- One row per practice and patient: enrolment, first app use, the local date of the latest visit
-- in each month (enough for the roster window, which ends at a month's end) and the patient's
-- months of activity: (month, logins, feature bits, messages sent, non-automated replies,
-- portal bookings, bookings, portal cents, cents, inbound calls, surveys).
CREATE OR REPLACE VIEW portal_patients AS
SELECT
    practice_id,
    patient_pseudonym,
    any(roster_lookback_days) AS roster_lookback_days,
    min(first_enrolment_at) AS enrolled_at,
    minIfOrNull(month, first_enrolment_at IS NOT NULL) AS enrolled_month,
    minIfOrNull(month, has_app) AS app_month,
    groupArrayIf(assumeNotNull(last_seen_date), last_seen_date IS NOT NULL) AS seen_dates,
    groupArray((month, logins, features, patient_messages, staff_replies, portal_bookings,
                total_bookings, portal_payment_cents, total_payment_cents, inbound_calls,
                surveys)) AS activity
FROM portal_patient_months
GROUP BY practice_id, patient_pseudonym;

-- Per practice and month, everything counted over patients, in one pass over the events: each
-- patient contributes a row per month of activity and a row per month of roster membership or
-- enrolment. Tuple positions:
--   1 month, 2 has events, 3 active, 4 multi-feature, 5 active with the app, 6 messages sent,
--   7 staff replies, 8 portal bookings, 9 bookings, 10 portal cents, 11 cents, 12 inbound calls,
--   13 surveys answered while enrolled, 14 their scores' sum, 15 on the roster,
--   16 enrolled at the month's end, 17 enrolled during the month.
-- Active users are patients with a login in M: a login implies enrolment by then. The roster:
-- a visit on local date d counts for the months M with month(d) <= M < month(d + look-back),
-- i.e. d lies within the look-back days ending at M's end. Enrolment counts from its month on.
-- Months run to a horizon past the newest event; only months with events are kept.
CREATE OR REPLACE VIEW portal_patient_stats_months AS
WITH (SELECT addMonths(toStartOfMonth(toDate(max(occurred_at))), 2) FROM events) AS horizon
SELECT
    practice_id,
    r.1 AS month,
    sum(r.3) AS active_users,
    sum(r.4) AS multi_feature_users,
    sum(r.5) AS app_users,
    sum(r.6) AS patient_messages,
    sum(r.7) AS staff_replies,
    sum(r.8) AS portal_bookings,
    sum(r.9) AS total_bookings,
    sum(r.10) AS portal_payment_cents,
    sum(r.11) AS total_payment_cents,
    sum(r.12) AS inbound_calls,
    sum(r.13) AS portal_user_surveys,
    sum(r.14) AS portal_user_score_sum,
    sum(r.15) AS unique_patients,
    sum(r.15 * r.16) AS enrolled_patients,
    sum(r.16) AS enrolled_total,
    sum(r.17) AS new_enrollments
FROM
(
    SELECT
        practice_id,
        enrolled_at,
        enrolled_month,
        app_month,
        activity,
        arrayDistinct(arrayFlatten(arrayMap(
            d -> arrayMap(
                i -> addMonths(toStartOfMonth(d), i),
                range(toUInt32(greatest(0, dateDiff('month', toStartOfMonth(d),
                    least(toStartOfMonth(addDays(d, roster_lookback_days)), horizon)))))),
            seen_dates))) AS roster,
        if(enrolled_month IS NULL, [],
           arrayMap(i -> addMonths(assumeNotNull(enrolled_month), i),
                    range(toUInt32(greatest(0, dateDiff('month', assumeNotNull(enrolled_month), horizon))))))
            AS enrolled
    FROM portal_patients
)
ARRAY JOIN arrayConcat(
    arrayMap(a -> (
        a.1, toUInt64(1), toUInt64(a.2 > 0), toUInt64(a.2 > 0 AND bitCount(a.3) >= 2),
        toUInt64(a.2 > 0 AND ifNull(app_month <= a.1, false)),
        toUInt64(a.4), toUInt64(a.5), toUInt64(a.6), toUInt64(a.7), toInt64(a.8), toInt64(a.9),
        toUInt64(a.10),
        toUInt64(length(arrayFilter(s -> ifNull(s.1 >= enrolled_at, false), a.11))),
        toUInt64(arraySum(arrayMap(s -> if(ifNull(s.1 >= enrolled_at, false), toUInt64(s.2), 0), a.11))),
        toUInt64(0), toUInt64(0), toUInt64(0)), activity),
    arrayMap(x -> (
        x, toUInt64(0), toUInt64(0), toUInt64(0), toUInt64(0), toUInt64(0), toUInt64(0),
        toUInt64(0), toUInt64(0), toInt64(0), toInt64(0), toUInt64(0), toUInt64(0), toUInt64(0),
        toUInt64(has(roster, x)), toUInt64(ifNull(x >= enrolled_month, false)),
        toUInt64(ifNull(x = enrolled_month, false))),
        arrayDistinct(arrayConcat(roster, enrolled)))
) AS r
GROUP BY practice_id, month
HAVING sum(r.2) > 0;

-- Per practice and month: results first viewed in M (and on their posting's local date), and
-- results posted in M (and first viewed before any staff contact).
CREATE OR REPLACE VIEW portal_result_months AS
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
        result_id,
        minIfOrNull(local_date, event_type = 'result.posted') AS posted_date,
        minIfOrNull(occurred_at, event_type = 'result.viewed') AS viewed_at,
        minIfOrNull(local_date, event_type = 'result.viewed') AS viewed_date,
        minIfOrNull(occurred_at, event_type = 'result.staff_contacted') AS contacted_at
    FROM events_local
    WHERE event_type IN ('result.posted', 'result.viewed', 'result.staff_contacted')
    GROUP BY practice_id, result_id
)
ARRAY JOIN arrayConcat(
    if(viewed_date IS NULL, [],
       [(toStartOfMonth(assumeNotNull(viewed_date)), 1, toUInt8(ifNull(viewed_date = posted_date, false)), 0, 0)]),
    if(posted_date IS NULL, [],
       [(toStartOfMonth(assumeNotNull(posted_date)), 0, 0, 1,
         toUInt8(viewed_at IS NOT NULL AND ifNull(viewed_at < contacted_at, true)))])
) AS x
GROUP BY practice_id, month;

-- Per practice and month of the reply (local): answered SLA clocks and their response times.
CREATE OR REPLACE VIEW portal_response_months AS
SELECT
    r.practice_id AS practice_id,
    toStartOfMonth(d.local_date) AS month,
    count() AS responses,
    toNullable(avg(r.response_business_minutes) / 60) AS avg_response_business_hours,
    toNullable(quantileExactInclusive(0.5)(r.response_business_minutes) / 60) AS median_response_business_hours,
    toNullable(quantileExactInclusive(0.9)(r.response_business_minutes) / 60) AS p90_response_business_hours,
    toNullable(avg(r.response_wall_minutes) / 60) AS avg_response_hours,
    toNullable(avg(r.met_internal_target)) AS within_internal_target_rate,
    toNullable(avg(r.met_external_promise)) AS within_external_promise_rate
FROM
(
    SELECT
        mr.practice_id AS practice_id,
        mr.replied_at AS replied_at,
        mr.response_business_minutes AS response_business_minutes,
        mr.response_wall_minutes AS response_wall_minutes,
        mr.met_internal_target AS met_internal_target,
        mr.met_external_promise AS met_external_promise,
        if(ifNull(p.timezone, '') = '',
           (SELECT any(timezone) FROM practices FINAL WHERE practice_id = 'default'),
           p.timezone) AS zone
    FROM message_responses AS mr FINAL
    LEFT JOIN (SELECT practice_id, timezone FROM practices FINAL) AS p ON p.practice_id = mr.practice_id
) AS r
ASOF JOIN local_days AS d ON d.timezone = r.zone AND r.replied_at >= d.starts_at
GROUP BY practice_id, month;

-- Per practice and month: sla.breached alerts by the local month of their due time.
CREATE OR REPLACE VIEW portal_breach_months AS
SELECT
    a.practice_id AS practice_id,
    toStartOfMonth(d.local_date) AS month,
    count() AS sla_breaches
FROM
(
    SELECT
        al.practice_id AS practice_id,
        al.due_at AS due_at,
        if(ifNull(p.timezone, '') = '',
           (SELECT any(timezone) FROM practices FINAL WHERE practice_id = 'default'),
           p.timezone) AS zone
    FROM alerts AS al FINAL
    LEFT JOIN (SELECT practice_id, timezone FROM practices FINAL) AS p ON p.practice_id = al.practice_id
    WHERE al.kind = 'sla.breached'
) AS a
ASOF JOIN local_days AS d ON d.timezone = a.zone AND a.due_at >= d.starts_at
GROUP BY practice_id, month;

-- The BI-facing view: one row per practice and month with any event, one column per SPEC §4
-- key. Rates are fractions, money is in cents, a zero denominator gives NULL.
CREATE OR REPLACE VIEW monthly_portal_performance AS
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
        a.practice_id AS practice_id,
        a.month AS month_start,
        a.unique_patients AS unique_patients,
        a.enrolled_patients AS enrolled_patients,
        a.enrolled_total AS enrolled_total,
        a.new_enrollments AS new_enrollments,
        a.active_users AS active_users,
        a.multi_feature_users AS multi_feature_users,
        a.app_users AS app_users,
        a.patient_messages AS patient_messages,
        a.staff_replies AS staff_replies,
        a.portal_bookings AS portal_bookings,
        a.total_bookings AS total_bookings,
        a.portal_payment_cents AS portal_payment_cents,
        a.total_payment_cents AS total_payment_cents,
        a.inbound_calls AS inbound_calls,
        sum(a.inbound_calls) OVER (
            PARTITION BY a.practice_id ORDER BY toRelativeMonthNum(a.month)
            RANGE BETWEEN 1 PRECEDING AND 1 PRECEDING) AS previous_inbound_calls,
        a.portal_user_surveys AS portal_user_surveys,
        a.portal_user_score_sum AS portal_user_score_sum,
        ifNull(rs.results_viewed, 0) AS results_viewed,
        ifNull(rs.same_day_views, 0) AS same_day_views,
        ifNull(rs.results_posted, 0) AS results_posted,
        ifNull(rs.viewed_before_contact, 0) AS viewed_before_contact,
        ifNull(mr.responses, 0) AS responses,
        mr.avg_response_business_hours AS avg_response_business_hours,
        mr.median_response_business_hours AS median_response_business_hours,
        mr.p90_response_business_hours AS p90_response_business_hours,
        mr.avg_response_hours AS avg_response_hours,
        mr.within_internal_target_rate AS within_internal_target_rate,
        mr.within_external_promise_rate AS within_external_promise_rate,
        ifNull(br.sla_breaches, 0) AS sla_breaches
    FROM portal_patient_stats_months AS a
    LEFT JOIN portal_result_months AS rs ON rs.practice_id = a.practice_id AND rs.month = a.month
    LEFT JOIN portal_response_months AS mr ON mr.practice_id = a.practice_id AND mr.month = a.month
    LEFT JOIN portal_breach_months AS br ON br.practice_id = a.practice_id AND br.month = a.month
);
