"""One practice-month of ``monthly_portal_performance``, read straight from the monthly rollup.

``portal-pulse dashboard`` needs one row: one practice, one month. Read through the view, most
of the time goes into ClickHouse analysing and planning the view's query (four joined parts,
each split into every month of every year, window functions), not into reading data; on chDB
planning costs roughly 0.1 ms per function in the query. This module computes the same row
(same columns, same numbers) with much less to plan:

- the month is known, so each part of the query reduces one practice's rollup straight to that
  month (and the month before, for the phone-volume change) instead of to every month;
- the practice's zone and look-back are looked up first and written into the query, with the
  month's year, bit and dates, as literals (a ``{name:Type}`` query parameter adds a cast to
  plan at every use);
- what the view computes from one value per month is computed here, as ClickHouse does it:
  the ratios (``x / nullIf(y, 0)``: both operands as doubles, then divided), minutes into hours
  (a double divided by 60), NULL for response figures in a month without responses, payments
  from the low 64 bits of a sum. The same doubles and integers.

The figures are exactly the view's (migration 0007), from the same rollup tables (migration
0006), rule by rule:

- months with events in the practice's current zone: the month has a row only if
  ``rollup_months`` has one (otherwise none, as in the view); counts are sizes of event-key
  sets, payments the low 64 bits of the sum of (key << 64 | amount);
- patients from ``rollup_patient_years`` rows of the current zone and look-back: bit k of a year
  mask is month k+1; a patient's rows of the month's year are OR-ed together (what ``FINAL``
  does), and "enrolled, or with the app, in an earlier year" is whether a row of an earlier year
  has an enrolment (app) month, which is what ``rollup_patient_firsts`` holds. Patients enrolled
  by the month's end are counted directly: the view adds up first enrolments over the months
  with events, and every month with a first enrolment has events (the enrolment), so the two
  agree;
- results by their first posting, view and staff contact (minimums over ``rollup_results``);
- responses and breaches from ``rollup_sla FINAL``, with the view's expressions.

tests/unit/sinks/test_monthly_rollup.py checks this against the view for every practice-month
of a database made awkward on purpose (duplicates, late events, a half-hour zone, zone and
look-back changes, re-inserted alerts), and benchmarks/dashboard_queries.py on a large one.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from portal_pulse.reports.rollup import effective_settings

__all__ = ["PRACTICE_MONTH_SQL", "practice_month_parameters", "query_practice_month"]

DEFAULT_ROW_ID = "default"

PRACTICE_MONTH_SQL = """
SELECT *
FROM
(
    -- Counted over events, in the month and (inbound calls) the month before. No row at all
    -- (HAVING) when the month has no events in the practice's zone.
    -- (Columns are qualified: the output names shadow them.)
    SELECT
        uniqExactArrayIf(r.patient_messages, r.month = %(start)s) AS patient_messages,
        uniqExactArrayIf(r.staff_replies, r.month = %(start)s) AS staff_replies,
        uniqExactArrayIf(r.portal_bookings, r.month = %(start)s) AS portal_bookings,
        uniqExactArrayIf(r.total_bookings, r.month = %(start)s) AS total_bookings,
        uniqExactArrayIf(r.inbound_calls, r.month = %(start)s) AS inbound_calls,
        uniqExactArrayIf(r.inbound_calls, r.month = %(previous)s) AS previous_inbound_calls,
        -- sums of (key << 64 | amount): the low 64 bits are the sum of the amounts
        arraySum(groupUniqArrayArrayIf(r.portal_payments, r.month = %(start)s)) AS portal_payments,
        arraySum(groupUniqArrayArrayIf(r.payments, r.month = %(start)s)) AS payments
    FROM rollup_months AS r
    WHERE r.practice_id = %(practice)s AND r.zone = %(zone)s
      AND r.month IN (%(start)s, %(previous)s)
    HAVING countIf(r.month = %(start)s) > 0
) AS m
CROSS JOIN
(
    -- Counted over patients: bit k of the year's masks is the month.
    SELECT
        countIf(bitTest(roster, %(k)s)) AS unique_patients,
        countIf(bitTest(roster, %(k)s) AND enrolled) AS enrolled_patients,
        countIf(NOT enrolled_before AND bitAnd(enrolments, %(upto)s) = %(bit)s)
            AS new_enrollments,
        countIf(enrolled) AS enrolled_total,
        countIf(bitTest(logins, %(k)s)) AS active_users,
        countIf(bitTest(logins, %(k)s)
                AND bitTest(messaging, %(k)s) + bitTest(scheduling, %(k)s)
                    + bitTest(results, %(k)s) + bitTest(bill_pay, %(k)s)
                    + bitTest(records, %(k)s) + bitTest(refills, %(k)s) >= 2)
            AS multi_feature_users,
        countIf(bitTest(logins, %(k)s) AND (app_before OR bitAnd(app, %(upto)s) != 0))
            AS app_users,
        -- surveys answered in the month once enrolled
        sum(arrayCount(a -> a.2 = %(month_number)s
                            AND (enrolled_before OR ifNull(a.1 >= enrolled_at, false)), surveys))
            AS portal_user_surveys,
        sum(arraySum(a -> if(a.2 = %(month_number)s
                             AND (enrolled_before OR ifNull(a.1 >= enrolled_at, false)), a.4, 0),
                     surveys)) AS portal_user_score_sum
    FROM
    (
        -- One row per patient: the month's year OR-ed together, and earlier years' enrolments
        -- and app use.
        SELECT
            groupBitOrIf(y.logins, y.year = %(year)s) AS logins,
            groupBitOrIf(y.messaging, y.year = %(year)s) AS messaging,
            groupBitOrIf(y.scheduling, y.year = %(year)s) AS scheduling,
            groupBitOrIf(y.results, y.year = %(year)s) AS results,
            groupBitOrIf(y.bill_pay, y.year = %(year)s) AS bill_pay,
            groupBitOrIf(y.records, y.year = %(year)s) AS records,
            groupBitOrIf(y.refills, y.year = %(year)s) AS refills,
            groupBitOrIf(y.app, y.year = %(year)s) AS app,
            groupBitOrIf(y.enrolments, y.year = %(year)s) AS enrolments,
            groupBitOrIf(y.roster, y.year = %(year)s) AS roster,
            maxIf(y.app != 0, y.year < %(year)s) AS app_before,
            maxIf(y.enrolments != 0, y.year < %(year)s) AS enrolled_before,
            -- enrolled by the month's end: in an earlier year, or in this one up to the month
            enrolled_before OR bitAnd(enrolments, %(upto)s) != 0 AS enrolled,
            minIf(y.enrolled_at, y.year = %(year)s) AS enrolled_at,
            groupUniqArrayArrayIf(y.surveys, y.year = %(year)s) AS surveys
        FROM rollup_patient_years AS y
        WHERE y.practice_id = %(practice)s AND y.zone = %(zone)s
          AND y.lookback = %(lookback)s AND y.year <= %(year)s
        GROUP BY y.patient
    )
) AS pt
CROSS JOIN
(
    -- Results first viewed in the month (and on their posting's local date), results first
    -- posted in the month (and first viewed before any staff contact).
    SELECT
        countIf(toStartOfMonth(viewed_date) = %(start)s) AS results_viewed,
        countIf(toStartOfMonth(viewed_date) = %(start)s
                AND ifNull(viewed_date = posted_date, false)) AS same_day_views,
        countIf(toStartOfMonth(posted_date) = %(start)s) AS results_posted,
        countIf(toStartOfMonth(posted_date) = %(start)s AND viewed_at IS NOT NULL
                AND ifNull(viewed_at < contacted_at, true)) AS viewed_before_contact
    FROM
    (
        SELECT min(posted_date) AS posted_date, min(viewed_at) AS viewed_at,
               min(viewed_date) AS viewed_date, min(contacted_at) AS contacted_at
        FROM rollup_results
        WHERE practice_id = %(practice)s AND zone = %(zone)s
        GROUP BY result
    )
) AS rs
CROSS JOIN
(
    -- Answered SLA clocks by the month of the reply, sla.breached alerts by the month due.
    SELECT
        countIf(kind = 'response') AS responses,
        avgIf(response_business_minutes, kind = 'response') AS avg_business_minutes,
        quantilesExactInclusiveIf(0.5, 0.9)(response_business_minutes, kind = 'response')
            AS business_minutes_quantiles,
        avgIf(response_wall_minutes, kind = 'response') AS avg_wall_minutes,
        avgIf(met_internal_target, kind = 'response') AS internal_target_share,
        avgIf(met_external_promise, kind = 'response') AS external_promise_share,
        countIf(kind = 'breach') AS sla_breaches
    FROM rollup_sla FINAL
    WHERE practice_id = %(practice)s AND zone = %(zone)s AND month = %(start)s
) AS sla
"""
"""The parts of one practice-month's row (``practice_month_parameters``; clickhouse-connect
binds ``%(name)s`` on the client, as quoted and escaped literals)."""

_UNKNOWN_TABLE = 60

_COLUMNS = (
    "practice_id", "month", "unique_patients", "enrolled_patients", "enrollment_rate",
    "new_enrollments", "active_users", "active_user_rate", "multi_feature_users",
    "multi_feature_rate", "patient_messages", "staff_replies", "messages_per_active_user",
    "portal_bookings", "total_bookings", "portal_booking_rate", "results_viewed",
    "same_day_view_rate", "viewed_before_staff_contact_rate", "portal_payment_cents",
    "total_payment_cents", "portal_payment_share", "inbound_calls", "phone_volume_change",
    "responses", "avg_response_business_hours", "median_response_business_hours",
    "p90_response_business_hours", "avg_response_hours", "within_internal_target_rate",
    "within_external_promise_rate", "sla_breaches", "avg_satisfaction_portal_users",
    "app_install_rate",
)  # fmt: skip
"""The view's columns, in its order."""


def practice_month_parameters(
    practice: str, month: str, zone: str, lookback: int
) -> dict[str, Any]:
    """Parameters of ``PRACTICE_MONTH_SQL`` for ``month`` (``YYYY-MM``, already checked)."""
    year, number = int(month[:4]), int(month[5:7])
    k = number - 1
    return {
        "practice": practice,
        "zone": zone,
        "lookback": int(lookback),
        "start": date(year, number, 1),
        "previous": date(year, number - 1, 1) if number > 1 else date(year - 1, 12, 1),
        "year": year,
        "month_number": number,
        "k": k,
        "bit": 1 << k,  # the month's bit
        "upto": (2 << k) - 1,  # the month's bit and every earlier month's
    }


def _ratio(part: int, whole: int) -> float | None:
    """``part / nullIf(whole, 0)`` as ClickHouse computes it: both as doubles, then divided."""
    return float(part) / float(whole) if whole else None


def _low_int64(value: int) -> int:
    """``toInt64(toUInt64(bitAnd(value, 0xFFFFFFFFFFFFFFFF)))``: the low 64 bits, signed."""
    low = value & 0xFFFF_FFFF_FFFF_FFFF
    return low - (1 << 64) if low >= 1 << 63 else low


def _row(practice: str, month: str, p: dict[str, Any]) -> dict[str, Any]:
    """The view's row from the query's parts, with the view's expressions for the ratios."""
    answered = p["responses"] > 0
    quantiles = p["business_minutes_quantiles"]
    row = {
        "practice_id": practice,
        "month": month,
        "portal_payment_cents": _low_int64(p["portal_payments"]),
        "total_payment_cents": _low_int64(p["payments"]),
        # the view's if(responses = 0, NULL, ...), and its minutes / 60
        "avg_response_business_hours": p["avg_business_minutes"] / 60 if answered else None,
        "median_response_business_hours": quantiles[0] / 60 if answered else None,
        "p90_response_business_hours": quantiles[1] / 60 if answered else None,
        "avg_response_hours": p["avg_wall_minutes"] / 60 if answered else None,
        "within_internal_target_rate": p["internal_target_share"] if answered else None,
        "within_external_promise_rate": p["external_promise_share"] if answered else None,
        "enrollment_rate": _ratio(p["enrolled_patients"], p["unique_patients"]),
        "active_user_rate": _ratio(p["active_users"], p["enrolled_total"]),
        "multi_feature_rate": _ratio(p["multi_feature_users"], p["active_users"]),
        "messages_per_active_user": _ratio(p["patient_messages"], p["active_users"]),
        "portal_booking_rate": _ratio(p["portal_bookings"], p["total_bookings"]),
        "same_day_view_rate": _ratio(p["same_day_views"], p["results_viewed"]),
        "viewed_before_staff_contact_rate": _ratio(p["viewed_before_contact"], p["results_posted"]),
        "portal_payment_share": _ratio(_low_int64(p["portal_payments"]), _low_int64(p["payments"])),
        "phone_volume_change": _ratio(
            p["inbound_calls"] - p["previous_inbound_calls"], p["previous_inbound_calls"]
        ),
        "avg_satisfaction_portal_users": _ratio(
            p["portal_user_score_sum"], p["portal_user_surveys"]
        ),
        "app_install_rate": _ratio(p["app_users"], p["active_users"]),
    }
    return {column: row[column] if column in row else p[column] for column in _COLUMNS}


def query_practice_month(client: Client, practice: str, month: str) -> dict[str, Any] | None:
    """The view's row for ``practice`` and ``month`` (``YYYY-MM``) as a dict, or None if the
    view has none.

    A database whose schema predates the rollup (migration 0006; readers do not migrate) has no
    rollup tables: then the view itself is read.
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
    if not result.result_rows:
        return None
    return _row(practice, month, dict(zip(result.column_names, result.result_rows[0], strict=True)))
