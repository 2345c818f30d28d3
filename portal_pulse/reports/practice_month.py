"""One practice-month of ``monthly_portal_performance``, read straight from the monthly rollup.

``portal-pulse dashboard`` needs one row: one practice, one month. Read through the view, most
of the time went into ClickHouse analysing and planning the view's query (joins of four parts,
each split into every month of every year, window functions), not into reading data. This query
gives the same row (same columns, same numbers) with much less to plan: the month is known, so
every part reduces the rollup of one practice straight to that month's figures, and the
practice's zone and look-back are looked up first and passed in as constants.

The figures are exactly the view's (migration 0007), from the same rollup tables (migration
0006), rule by rule:

- months with events in the practice's current zone: the month has a row only if
  ``rollup_months`` has one (otherwise no row, as in the view); counts are sizes of event-key
  sets, payments the low 64 bits of the sum of (key << 64 | amount);
- patients from ``rollup_patient_years`` rows of the current zone and look-back: bit k of a year
  mask is month k+1; the year's rows of a patient are OR-ed together (what ``FINAL`` does), and
  "enrolled, or with the app, in an earlier year" is whether any earlier year's row has an
  enrolment (an app) month. Patients enrolled by the month's end are counted directly: the view
  adds up first enrolments over the months with events, and every month with a first enrolment
  has events (the enrolment itself), so the two agree;
- results by their first view and first posting (minimums over ``rollup_results``);
- responses and breaches from ``rollup_sla FINAL``, by the same expressions as the view.

tests/unit/sinks/test_monthly_rollup.py checks this query against the view for every
practice-month of a database made awkward on purpose (duplicates, late events, zone and
look-back changes, re-inserted alerts), and benchmarks/dashboard_queries.py on a large one.
"""

from __future__ import annotations

from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from portal_pulse.reports.rollup import effective_settings

__all__ = ["PRACTICE_MONTH_SQL", "practice_month_parameters", "query_practice_month"]

DEFAULT_ROW_ID = "default"

PRACTICE_MONTH_SQL = """
SELECT
    {practice:String} AS practice_id,
    {month:String} AS month,
    pt.unique_patients AS unique_patients,
    pt.enrolled_patients AS enrolled_patients,
    enrolled_patients / nullIf(unique_patients, 0) AS enrollment_rate,
    pt.new_enrollments AS new_enrollments,
    pt.active_users AS active_users,
    active_users / nullIf(pt.enrolled_total, 0) AS active_user_rate,
    pt.multi_feature_users AS multi_feature_users,
    multi_feature_users / nullIf(active_users, 0) AS multi_feature_rate,
    m.patient_messages AS patient_messages,
    m.staff_replies AS staff_replies,
    patient_messages / nullIf(active_users, 0) AS messages_per_active_user,
    m.portal_bookings AS portal_bookings,
    m.total_bookings AS total_bookings,
    portal_bookings / nullIf(total_bookings, 0) AS portal_booking_rate,
    rs.results_viewed AS results_viewed,
    rs.same_day_views / nullIf(results_viewed, 0) AS same_day_view_rate,
    rs.viewed_before_contact / nullIf(rs.results_posted, 0) AS viewed_before_staff_contact_rate,
    m.portal_payment_cents AS portal_payment_cents,
    m.total_payment_cents AS total_payment_cents,
    portal_payment_cents / nullIf(total_payment_cents, 0) AS portal_payment_share,
    m.inbound_calls AS inbound_calls,
    (toInt64(inbound_calls) - toInt64(m.previous_inbound_calls))
        / nullIf(m.previous_inbound_calls, 0) AS phone_volume_change,
    sla.responses AS responses,
    sla.avg_response_business_hours AS avg_response_business_hours,
    sla.median_response_business_hours AS median_response_business_hours,
    sla.p90_response_business_hours AS p90_response_business_hours,
    sla.avg_response_hours AS avg_response_hours,
    sla.within_internal_target_rate AS within_internal_target_rate,
    sla.within_external_promise_rate AS within_external_promise_rate,
    sla.sla_breaches AS sla_breaches,
    pt.portal_user_score_sum / nullIf(pt.portal_user_surveys, 0) AS avg_satisfaction_portal_users,
    pt.app_users / nullIf(active_users, 0) AS app_install_rate
FROM
(
    -- Counted over events, in the month and (inbound calls) the month before. No row at all
    -- (HAVING) when the month has no events in the practice's zone.
    -- (Columns are qualified: the output names shadow them.)
    SELECT
        countIf(r.month = {start:Date}) AS found,
        uniqExactArrayIf(r.patient_messages, r.month = {start:Date}) AS patient_messages,
        uniqExactArrayIf(r.staff_replies, r.month = {start:Date}) AS staff_replies,
        uniqExactArrayIf(r.portal_bookings, r.month = {start:Date}) AS portal_bookings,
        uniqExactArrayIf(r.total_bookings, r.month = {start:Date}) AS total_bookings,
        uniqExactArrayIf(r.inbound_calls, r.month = {start:Date}) AS inbound_calls,
        uniqExactArrayIf(r.inbound_calls, r.month = {previous:Date}) AS previous_inbound_calls,
        toInt64(toUInt64(bitAnd(
            arraySum(groupUniqArrayArrayIf(r.portal_payments, r.month = {start:Date})),
            0xFFFFFFFFFFFFFFFF))) AS portal_payment_cents,
        toInt64(toUInt64(bitAnd(
            arraySum(groupUniqArrayArrayIf(r.payments, r.month = {start:Date})),
            0xFFFFFFFFFFFFFFFF))) AS total_payment_cents
    FROM rollup_months AS r
    WHERE r.practice_id = {practice:String} AND r.zone = {zone:String}
      AND r.month IN ({start:Date}, {previous:Date})
    HAVING found > 0
) AS m
CROSS JOIN
(
    -- Counted over patients: bit k of the year's masks is the month.
    SELECT
        countIf(bitTest(roster, {k:UInt8})) AS unique_patients,
        countIf(bitTest(roster, {k:UInt8}) AND enrolled) AS enrolled_patients,
        countIf(NOT enrolled_before AND bitAnd(enrolments, {upto:UInt16}) = {bit:UInt16})
            AS new_enrollments,
        countIf(enrolled) AS enrolled_total,
        countIf(bitTest(logins, {k:UInt8})) AS active_users,
        countIf(bitTest(logins, {k:UInt8})
                AND bitTest(messaging, {k:UInt8}) + bitTest(scheduling, {k:UInt8})
                    + bitTest(results, {k:UInt8}) + bitTest(bill_pay, {k:UInt8})
                    + bitTest(records, {k:UInt8}) + bitTest(refills, {k:UInt8}) >= 2)
            AS multi_feature_users,
        countIf(bitTest(logins, {k:UInt8}) AND (app_before OR bitAnd(app, {upto:UInt16}) != 0))
            AS app_users,
        -- surveys answered in the month once enrolled
        sum(arrayCount(a -> a.2 = {month_number:UInt8}
                            AND (enrolled_before OR ifNull(a.1 >= enrolled_at, false)), surveys))
            AS portal_user_surveys,
        sum(arraySum(a -> if(a.2 = {month_number:UInt8}
                             AND (enrolled_before OR ifNull(a.1 >= enrolled_at, false)), a.4, 0),
                     surveys)) AS portal_user_score_sum
    FROM
    (
        -- One row per patient: the month's year OR-ed together, and earlier years' enrolments
        -- and app use.
        SELECT
            groupBitOrIf(y.logins, y.year = {year:UInt16}) AS logins,
            groupBitOrIf(y.messaging, y.year = {year:UInt16}) AS messaging,
            groupBitOrIf(y.scheduling, y.year = {year:UInt16}) AS scheduling,
            groupBitOrIf(y.results, y.year = {year:UInt16}) AS results,
            groupBitOrIf(y.bill_pay, y.year = {year:UInt16}) AS bill_pay,
            groupBitOrIf(y.records, y.year = {year:UInt16}) AS records,
            groupBitOrIf(y.refills, y.year = {year:UInt16}) AS refills,
            groupBitOrIf(y.app, y.year = {year:UInt16}) AS app,
            groupBitOrIf(y.enrolments, y.year = {year:UInt16}) AS enrolments,
            groupBitOrIf(y.roster, y.year = {year:UInt16}) AS roster,
            maxIf(y.app != 0, y.year < {year:UInt16}) AS app_before,
            maxIf(y.enrolments != 0, y.year < {year:UInt16}) AS enrolled_before,
            -- enrolled by the month's end: in an earlier year, or in this one up to the month
            enrolled_before OR bitAnd(enrolments, {upto:UInt16}) != 0 AS enrolled,
            minIf(y.enrolled_at, y.year = {year:UInt16}) AS enrolled_at,
            groupUniqArrayArrayIf(y.surveys, y.year = {year:UInt16}) AS surveys
        FROM rollup_patient_years AS y
        WHERE y.practice_id = {practice:String} AND y.zone = {zone:String}
          AND y.lookback = {lookback:UInt32} AND y.year <= {year:UInt16}
        GROUP BY y.patient
    )
) AS pt
CROSS JOIN
(
    -- Results first viewed in the month (and on their posting's local date); results first
    -- posted in the month (and first viewed before any staff contact).
    SELECT
        countIf(toStartOfMonth(viewed_date) = {start:Date}) AS results_viewed,
        countIf(toStartOfMonth(viewed_date) = {start:Date}
                AND ifNull(viewed_date = posted_date, false)) AS same_day_views,
        countIf(toStartOfMonth(posted_date) = {start:Date}) AS results_posted,
        countIf(toStartOfMonth(posted_date) = {start:Date} AND viewed_at IS NOT NULL
                AND ifNull(viewed_at < contacted_at, true)) AS viewed_before_contact
    FROM
    (
        SELECT min(posted_date) AS posted_date, min(viewed_at) AS viewed_at,
               min(viewed_date) AS viewed_date, min(contacted_at) AS contacted_at
        FROM rollup_results
        WHERE practice_id = {practice:String} AND zone = {zone:String}
        GROUP BY result
    )
) AS rs
CROSS JOIN
(
    -- Answered SLA clocks by the month of the reply; sla.breached alerts by the month due.
    SELECT
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
    WHERE practice_id = {practice:String} AND zone = {zone:String} AND month = {start:Date}
) AS sla
"""
"""The view's row for one practice-month; parameters from ``practice_month_parameters``."""

_UNKNOWN_TABLE = 60


def practice_month_parameters(
    practice: str, month: str, zone: str, lookback: int
) -> dict[str, Any]:
    """Parameters of ``PRACTICE_MONTH_SQL`` for ``month`` (``YYYY-MM``, already checked)."""
    year, number = int(month[:4]), int(month[5:7])
    before_year, before = (year, number - 1) if number > 1 else (year - 1, 12)
    k = number - 1
    return {
        "practice": practice,
        "month": month,
        "zone": zone,
        "lookback": lookback,
        "start": f"{year:04d}-{number:02d}-01",
        "previous": f"{before_year:04d}-{before:02d}-01",
        "year": year,
        "month_number": number,
        "k": k,
        "bit": 1 << k,  # the month's bit
        "upto": (2 << k) - 1,  # the month's bit and every earlier month's
    }


def query_practice_month(client: Client, practice: str, month: str) -> dict[str, Any] | None:
    """The view's row for ``practice`` and ``month`` as a dict, or None if it has none.

    A database whose schema predates the rollup (migration 0006; readers do not migrate) has
    no rollup tables: then the view itself is read.
    """
    rows = client.query(
        "SELECT practice_id, timezone, roster_lookback_days FROM practices FINAL"
        " WHERE practice_id IN ({p:String}, {d:String})",
        parameters={"p": practice, "d": DEFAULT_ROW_ID},
    ).result_rows
    zone, lookback = effective_settings(
        {pid: (tz, days) for pid, tz, days in rows}, [practice], DEFAULT_ROW_ID
    )[practice]
    try:
        result = client.query(
            PRACTICE_MONTH_SQL,
            parameters=practice_month_parameters(practice, month, zone, lookback),
        )
    except DatabaseError as exc:
        if f"Code: {_UNKNOWN_TABLE}." not in str(exc) or "rollup_" not in str(exc):
            raise
        result = client.query(
            "SELECT * FROM monthly_portal_performance"
            " WHERE practice_id = {p:String} AND month = {m:String}",
            parameters={"p": practice, "m": month},
        )
    if not result.result_rows:
        return None
    return dict(zip(result.column_names, result.result_rows[0], strict=True))
