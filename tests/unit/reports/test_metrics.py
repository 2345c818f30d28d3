"""SPEC §4 metrics from the ``monthly_portal_performance`` view, on small hand-computed scenarios.

Rows go into the pipeline's tables through the sinks' own row functions; every practice id carries
a per-run suffix, so the session's shared chDB (tests/conftest.py) needs no cleaning.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from portal_pulse.domain.practices import Practices
from portal_pulse.domain.records import Alert, ResponseFact
from portal_pulse.reports.dashboard import (
    METRIC_KEYS,
    MonthNotFound,
    fetch_month,
    fetch_trailing,
    render_json,
)
from portal_pulse.reports.local_time import local_midnights
from portal_pulse.reports.monthly_rows import refresh_monthly_rows
from portal_pulse.reports.practices_sync import sync_practices
from schemas.model import CleanEvent
from sinks.rows import (
    ALERT_COLUMNS,
    EVENT_COLUMNS,
    RESPONSE_COLUMNS,
    alert_row,
    event_row,
    response_row,
)

SPEC_KEYS = [
    "unique_patients", "enrolled_patients", "enrollment_rate", "new_enrollments", "active_users",
    "active_user_rate", "multi_feature_users", "multi_feature_rate", "patient_messages",
    "staff_replies", "messages_per_active_user", "portal_bookings", "total_bookings",
    "portal_booking_rate", "results_viewed", "same_day_view_rate",
    "viewed_before_staff_contact_rate", "portal_payment_cents", "total_payment_cents",
    "portal_payment_share", "inbound_calls", "phone_volume_change", "responses",
    "avg_response_business_hours", "median_response_business_hours",
    "p90_response_business_hours", "avg_response_hours", "within_internal_target_rate",
    "within_external_promise_rate", "sla_breaches", "avg_satisfaction_portal_users",
    "app_install_rate",
]  # fmt: skip
"""SPEC §4, written out independently of the code under test."""

RUN = uuid.uuid4().hex[:8]
ROSTER, FEATURES, RESULTS, REPLIES, LONDON, UNSYNCED = (
    f"{name}-{RUN}" for name in ("roster", "features", "results", "replies", "london", "unsynced")
)
PRACTICES = Practices.from_mapping(
    {
        "practices": {
            "default": {},
            ROSTER: {"roster_lookback_days": 30},
            FEATURES: {},
            RESULTS: {},
            REPLIES: {},
            LONDON: {"timezone": "Europe/London"},
        }
    }
)
_ids = count(1)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def pseudonym(name: str) -> str:
    return name.encode().hex()[:32].rjust(32, "0")


def ev(practice: str, patient: str, kind: str, at: str, **details: Any) -> list[Any]:
    event = CleanEvent(f"ev-{next(_ids)}", kind, utc(at), practice, pseudonym(patient), details)
    return event_row(event)


def insert_events(client: Client, rows: list[list[Any]]) -> None:
    client.insert("events", rows, column_names=list(EVENT_COLUMNS))


def roster_events(p: str) -> list[list[Any]]:
    """Look-back 30 days, New York: January's window is Jan 2–31 local, February's Jan 30–Feb 28."""
    return [
        ev(p, "p1", "patient.seen", "2026-01-10T15:00:00", encounter_id="e1"),
        ev(p, "p2", "patient.seen", "2026-02-01T03:30:00", encounter_id="e2"),  # Jan 31 local
        ev(p, "p3", "patient.seen", "2025-12-01T17:00:00", encounter_id="e3"),  # outside both
        ev(p, "p4", "patient.seen", "2026-01-02T12:00:00", encounter_id="e4"),  # window's 1st day
        ev(p, "p6", "patient.seen", "2026-01-15T12:00:00", encounter_id="e6"),  # never enrolled
        ev(p, "p7", "patient.seen", "2026-02-20T12:00:00", encounter_id="e7"),
        ev(p, "p1", "portal.enrolled", "2026-01-20T12:00:00", method="in_office"),
        ev(p, "p2", "portal.login", "2026-01-25T12:00:00", channel="web"),  # implied enrolment
        ev(p, "p2", "portal.enrolled", "2026-02-10T12:00:00", method="self"),  # not new again
        ev(p, "p4", "portal.enrolled", "2026-02-01T04:30:00", method="qr"),  # Jan 31 local
        ev(p, "p5", "portal.enrolled", "2026-01-05T12:00:00", method="self"),  # not on roster
        ev(p, "p1", "portal.login", "2026-02-03T12:00:00", channel="web"),
        ev(p, "p5", "portal.login", "2026-03-01T04:00:00", channel="web"),  # Feb 28 local
    ]


def feature_events(p: str) -> list[list[Any]]:
    """March 2026 in New York: four active users, two multi-feature, three with the app."""

    def e(patient: str, kind: str, at: str, **details: Any) -> list[Any]:
        return ev(p, patient, kind, f"2026-{at}", **details)

    def call(at: str, direction: str = "inbound") -> list[Any]:
        return e("x", "phone.call", at, call_id=at, direction=direction, reason="other")

    def book(patient: str, at: str, channel: str) -> list[Any]:
        return e(
            patient,
            "appointment.booked",
            at,
            appointment_id=at,
            channel=channel,
            appointment_type="other",
        )

    def pay(patient: str, at: str, cents: int, channel: str) -> list[Any]:
        return e(
            patient,
            "payment.made",
            at,
            payment_id=at,
            amount_cents=cents,
            currency="USD",
            channel=channel,
        )

    def reply(at: str, thread: str, automated: bool) -> list[Any]:
        return e(
            "x",
            "message.replied",
            at,
            thread_id=thread,
            message_id=at,
            staff_pool="nurse",
            automated=automated,
        )

    return [
        e("q5", "portal.enrolled", "01-10T15:00:00"),
        e("q3", "portal.enrolled", "02-02T15:00:00"),
        e("q6", "survey.response", "02-10T15:00:00", survey_id="s0", score=2),
        *(call(f"02-0{d}T15:00:00") for d in (3, 4, 5, 6)),
        e("q1", "portal.login", "03-05T15:00:00", channel="web"),
        e("q1", "message.sent", "03-05T15:10:00", thread_id="t1", message_id="m1",
          category="clinical"),
        e("q1", "record.viewed", "03-06T15:00:00"),
        e("q1", "app.installed", "03-20T15:00:00", platform="ios"),
        e("q1", "survey.response", "03-15T15:00:00", survey_id="s1", score=5),
        e("q2", "survey.response", "03-01T15:00:00", survey_id="s2", score=3),  # before login
        e("q2", "portal.login", "03-07T15:00:00", channel="mobile_app"),
        book("q2", "03-07T16:00:00", "phone"),
        e("q2", "result.viewed", "03-08T15:00:00", result_id="r-q2"),
        e("q3", "portal.login", "03-09T15:00:00", channel="web"),
        pay("q3", "03-09T15:05:00", 5000, "portal"),
        e("q3", "refill.requested", "03-09T15:06:00", refill_id="rf1", channel="portal"),
        book("q3", "03-09T15:07:00", "portal"),
        e("q3", "app.installed", "04-01T03:00:00", platform="android"),  # Mar 31 local
        e("q3", "survey.response", "03-20T15:00:00", survey_id="s3", score=4),
        e("q4", "portal.login", "03-10T15:00:00", channel="web"),
        e("q4", "refill.requested", "03-10T15:01:00", refill_id="rf2", channel="phone"),
        pay("q4", "03-10T15:02:00", 3000, "mail"),
        e("q4", "app.installed", "04-01T05:00:00", platform="ios"),  # April local
        e("q5", "message.sent", "03-12T15:00:00", thread_id="t5", message_id="m5",
          category="billing"),
        e("q5", "record.viewed", "03-12T15:05:00"),
        e("q6", "survey.response", "03-16T15:00:00", survey_id="s6", score=1),  # never enrolled
        reply("03-05T16:00:00", "t1", automated=False),
        reply("03-12T15:00:01", "t5", automated=True),
        *(call(f"03-0{d}T15:00:00") for d in (3, 4, 5)),
        call("03-06T15:00:00", direction="outbound"),
    ]  # fmt: skip


def result_events(p: str) -> list[list[Any]]:
    """April 2026 in New York (UTC−4)."""
    rows: list[list[Any]] = []

    def add(kind: str, result: str, at: str) -> None:
        rows.append(ev(p, f"pt-{result}", kind, at, result_id=result))

    add("result.posted", "r1", "2026-04-10T13:00:00")
    add("result.viewed", "r1", "2026-04-10T20:00:00")
    add("result.staff_contacted", "r1", "2026-04-11T14:00:00")
    add("result.posted", "r2", "2026-04-10T13:00:00")
    add("result.staff_contacted", "r2", "2026-04-10T18:00:00")
    add("result.viewed", "r2", "2026-04-11T03:30:00")  # Apr 10 23:30 local: same day
    add("result.posted", "r3", "2026-04-11T03:30:00")  # Apr 10 23:30 local
    add("result.viewed", "r3", "2026-04-11T04:30:00")  # Apr 11 00:30 local: next day
    add("result.posted", "r4", "2026-04-20T13:00:00")
    add("result.staff_contacted", "r4", "2026-04-21T13:00:00")
    add("result.posted", "r5", "2026-04-30T12:00:00")
    add("result.viewed", "r5", "2026-05-01T03:59:00")  # Apr 30 23:59 local
    add("result.staff_contacted", "r5", "2026-05-01T03:59:00")  # same instant: not before
    add("result.viewed", "r5", "2026-05-02T12:00:00")
    add("result.posted", "r6", "2026-03-31T23:00:00")  # March local
    add("result.viewed", "r6", "2026-04-01T03:00:00")  # Mar 31 23:00 local
    add("result.viewed", "r6", "2026-04-03T12:00:00")
    add("result.posted", "r7", "2026-03-20T13:00:00")
    add("result.viewed", "r7", "2026-04-02T13:00:00")
    return rows


def response(
    p: str, n: int, replied: str, business: float, wall: float, internal: bool, external: bool
) -> list[Any]:
    at = utc(replied)
    first = at - timedelta(minutes=wall)
    fact = ResponseFact(
        response_id=f"resp-{n}", practice_id=p, thread_id=f"t{n}", patient_pseudonym=pseudonym("m"),
        category="clinical", routed_pool="nurse", replied_by_pool="nurse",
        first_message_at=first, clock_started_at=first,
        replied_at=at, messages_answered=1, response_business_minutes=business,
        response_wall_minutes=wall, internal_due_at=at, external_due_at=at,
        met_internal_target=internal, met_external_promise=external,
    )  # fmt: skip
    return response_row(fact)


def alert(p: str, alert_id: str, kind: str, due: str, *, resolved: str | None = None) -> list[Any]:
    at = utc(due)
    raised = Alert(alert_id, kind, p, "thread", pseudonym("m"), "clinical", "nurse", at, at, at)
    return alert_row(raised.resolve(utc(resolved)) if resolved else raised)


@pytest.fixture(scope="module")
def db(chdb_client: Client) -> Client:
    insert_events(
        chdb_client,
        [
            *roster_events(ROSTER),
            *feature_events(FEATURES),
            *result_events(RESULTS),
            *(
                ev(REPLIES, "m", "portal.login", at, channel="web")
                for at in ("2026-05-02T12:00:00", "2026-06-02T12:00:00", "2026-07-02T12:00:00")
            ),
            ev(LONDON, "l1", "portal.login", "2026-02-01T03:30:00", channel="web"),
            ev(ROSTER, "dup", "portal.login", "2026-01-25T12:00:00", channel="web"),
        ],
    )
    chdb_client.insert(
        "message_responses",
        [
            response(REPLIES, 1, "2026-05-05T15:00:00", 60, 90, True, True),
            response(REPLIES, 2, "2026-05-10T15:00:00", 120, 600, False, True),
            response(REPLIES, 3, "2026-05-20T15:00:00", 240, 300, True, True),
            response(REPLIES, 4, "2026-06-01T03:00:00", 600, 1440, False, False),  # May 31 local
            response(REPLIES, 5, "2026-06-01T05:00:00", 30, 30, True, True),  # June 1 local
        ],
        column_names=list(RESPONSE_COLUMNS),
    )
    chdb_client.insert(
        "alerts",
        [
            alert(REPLIES, "b1", "sla.breached", "2026-05-10T15:00:00"),
            alert(
                REPLIES, "b1", "sla.breached", "2026-05-10T15:00:00", resolved="2026-05-11T15:00:00"
            ),
            alert(REPLIES, "b2", "sla.breached", "2026-06-01T02:00:00"),  # May 31 local
            alert(REPLIES, "r1", "sla.at_risk", "2026-05-10T15:00:00"),
            alert(REPLIES, "b3", "sla.breached", "2026-06-10T15:00:00"),
        ],
        column_names=list(ALERT_COLUMNS),
    )
    sync_practices(chdb_client, PRACTICES)
    # A practice whose first events arrive after the last sync: the default row covers it.
    insert_events(
        chdb_client, [ev(UNSYNCED, "u1", "portal.login", "2026-02-01T03:30:00", channel="web")]
    )
    # The rows above went straight into the tables: the refresh a writer runs after its own.
    refresh_monthly_rows(chdb_client)
    return chdb_client


def month(db: Client, practice: str, m: str) -> dict[str, Any]:
    return fetch_month(db, practice, m)


def test_view_columns_are_practice_month_and_the_spec_keys(db: Client) -> None:
    described = db.query("DESCRIBE TABLE monthly_portal_performance").result_rows
    assert [row[0] for row in described] == ["practice_id", "month", *SPEC_KEYS]
    assert list(METRIC_KEYS) == SPEC_KEYS


def test_json_has_exactly_the_spec_keys(db: Client) -> None:
    obj = json.loads(render_json(month(db, FEATURES, "2026-03")))
    assert list(obj) == ["practice_id", "month", *SPEC_KEYS]
    assert obj["practice_id"] == FEATURES and obj["month"] == "2026-03"


def test_months_are_local_and_only_those_with_events(db: Client) -> None:
    months = [r["month"] for r in fetch_trailing(db, ROSTER, "2026-03", n=6)]
    # 2026-03-01T04:00Z is Feb 28 in New York, so there is no March row.
    assert months == ["2025-12", "2026-01", "2026-02"]
    with pytest.raises(MonthNotFound):
        fetch_month(db, ROSTER, "2026-03")
    with pytest.raises(MonthNotFound):
        fetch_month(db, f"nobody-{RUN}", "2026-01")


def test_each_practice_uses_its_own_zone_and_unsynced_ones_the_default(db: Client) -> None:
    # The same instant, 2026-02-01T03:30Z: February in London, January in New York.
    assert [r["month"] for r in fetch_trailing(db, LONDON, "2026-03")] == ["2026-02"]
    assert [r["month"] for r in fetch_trailing(db, UNSYNCED, "2026-03")] == ["2026-01"]


def test_roster_enrolment_and_activity(db: Client) -> None:
    jan = month(db, ROSTER, "2026-01")
    # Roster Jan 2–31 local: p1, p2 (seen Jan 31 local), p4 (Jan 2), p6; p3 (Dec 1) is outside.
    assert jan["unique_patients"] == 4
    # p1 enrolled, p2 by her first login, p4 late on Jan 31 local; p6 never.
    assert jan["enrolled_patients"] == 3
    assert jan["enrollment_rate"] == pytest.approx(0.75)
    # p1, p2 (implied), p4, p5 (off the roster) and "dup" (a login only).
    assert jan["new_enrollments"] == 5
    assert jan["active_users"] == 2  # p2 and dup logged in during January
    assert jan["active_user_rate"] == pytest.approx(2 / 5)

    feb = month(db, ROSTER, "2026-02")
    assert feb["unique_patients"] == 2  # p2 (Jan 31 is within Jan 30–Feb 28) and p7
    assert feb["enrolled_patients"] == 1
    assert feb["enrollment_rate"] == pytest.approx(0.5)
    assert feb["new_enrollments"] == 0  # p2's explicit enrolment came after her login
    assert feb["active_users"] == 2  # p1, and p5 late on Feb 28 local
    assert feb["active_user_rate"] == pytest.approx(2 / 5)


def test_zero_denominators_are_null(db: Client) -> None:
    dec = month(db, ROSTER, "2025-12")
    assert dec["unique_patients"] == 0 and dec["active_users"] == 0
    for key in (
        "enrollment_rate", "active_user_rate", "multi_feature_rate", "messages_per_active_user",
        "portal_booking_rate", "same_day_view_rate", "viewed_before_staff_contact_rate",
        "portal_payment_share", "phone_volume_change", "avg_response_business_hours",
        "median_response_business_hours", "p90_response_business_hours", "avg_response_hours",
        "within_internal_target_rate", "within_external_promise_rate",
        "avg_satisfaction_portal_users", "app_install_rate",
    ):  # fmt: skip
        assert dec[key] is None, key
    for key in (
        "responses",
        "sla_breaches",
        "results_viewed",
        "inbound_calls",
        "portal_payment_cents",
    ):
        assert dec[key] == 0, key


def test_features_app_messages_bookings_payments_calls_satisfaction(db: Client) -> None:
    mar = month(db, FEATURES, "2026-03")
    assert mar["active_users"] == 4
    assert mar["multi_feature_users"] == 2  # q1: messaging+records; q3: bill pay+refills+scheduling
    assert mar["multi_feature_rate"] == pytest.approx(0.5)
    assert mar["app_install_rate"] == pytest.approx(
        3 / 4
    )  # q1, q2 (mobile login), q3 (Mar 31 local)
    assert mar["patient_messages"] == 2
    assert mar["staff_replies"] == 1  # the automated reply does not count
    assert mar["messages_per_active_user"] == pytest.approx(0.5)
    assert (mar["portal_bookings"], mar["total_bookings"]) == (1, 2)
    assert mar["portal_booking_rate"] == pytest.approx(0.5)
    assert (mar["portal_payment_cents"], mar["total_payment_cents"]) == (5000, 8000)
    assert mar["portal_payment_share"] == pytest.approx(0.625)
    assert mar["inbound_calls"] == 3
    assert mar["phone_volume_change"] == pytest.approx(-0.25)
    # q1 (enrolled by her Mar 5 login) 5 and q3 (enrolled in February) 4; q2 answered before she
    # was enrolled, q6 never was.
    assert mar["avg_satisfaction_portal_users"] == pytest.approx(4.5)

    feb = month(db, FEATURES, "2026-02")
    assert feb["inbound_calls"] == 4
    assert feb["phone_volume_change"] is None  # January had no inbound calls
    assert feb["avg_satisfaction_portal_users"] is None  # only a non-portal patient answered


def test_results(db: Client) -> None:
    apr = month(db, RESULTS, "2026-04")
    assert apr["results_viewed"] == 5  # r1, r2, r3, r5 (Apr 30 local) and r7 (posted in March)
    assert apr["same_day_view_rate"] == pytest.approx(3 / 5)  # r1, r2, r5
    # Posted in April: r1..r5; viewed before any staff contact: r1, r3.
    assert apr["viewed_before_staff_contact_rate"] == pytest.approx(2 / 5)

    mar = month(db, RESULTS, "2026-03")
    assert mar["results_viewed"] == 1  # r6, first viewed Mar 31 local
    assert mar["same_day_view_rate"] == pytest.approx(1.0)
    assert mar["viewed_before_staff_contact_rate"] == pytest.approx(1.0)  # r6, r7: no contact


def test_responses_and_breaches(db: Client) -> None:
    may = month(db, REPLIES, "2026-05")
    assert may["responses"] == 4
    assert may["avg_response_business_hours"] == pytest.approx(255 / 60)
    assert may["median_response_business_hours"] == pytest.approx(180 / 60)
    assert may["p90_response_business_hours"] == pytest.approx((240 + 0.7 * 360) / 60)
    assert may["avg_response_hours"] == pytest.approx(607.5 / 60)
    assert may["within_internal_target_rate"] == pytest.approx(0.5)
    assert may["within_external_promise_rate"] == pytest.approx(0.75)
    assert may["sla_breaches"] == 2  # b1 (two versions) and b2 (due May 31 local)

    jun = month(db, REPLIES, "2026-06")
    assert jun["responses"] == 1
    assert jun["avg_response_hours"] == pytest.approx(0.5)
    assert jun["sla_breaches"] == 1

    jul = month(db, REPLIES, "2026-07")
    assert jul["responses"] == 0 and jul["sla_breaches"] == 0
    assert jul["avg_response_business_hours"] is None
    assert jul["within_internal_target_rate"] is None


def test_sync_writes_only_changes(db: Client) -> None:
    sync_practices(db, PRACTICES)  # picks up practices seen in events since (UNSYNCED)
    assert sync_practices(db, PRACTICES) == 0
    moved = Practices.from_mapping(
        {"practices": {"default": {}, **{p: {} for p in PRACTICES.listed_ids}, LONDON: {}}}
    )
    try:
        assert sync_practices(db, moved) >= 2  # LONDON back to New York, ROSTER to 730 days
        assert [r["month"] for r in fetch_trailing(db, LONDON, "2026-03")] == ["2026-01"]
    finally:
        sync_practices(db, PRACTICES)
    assert [r["month"] for r in fetch_trailing(db, LONDON, "2026-03")] == ["2026-02"]


def test_local_date_helpers() -> None:
    ny = PRACTICES.for_practice(ROSTER)
    assert ny.calendar.local_date(utc("2026-02-01T03:30:00")) == date(2026, 1, 31)
    assert ny.calendar.local_date(utc("2026-02-01T05:00:00")) == date(2026, 2, 1)
    with pytest.raises(ValueError):
        ny.calendar.local_date(datetime(2026, 2, 1))
    # DST starts on 2026-03-08 in New York: midnights move from 05:00Z to 04:00Z.
    starts = list(local_midnights("America/New_York", date(2026, 3, 8), date(2026, 3, 9)))
    assert starts == [
        (utc("2026-03-08T05:00:00"), date(2026, 3, 8)),
        (utc("2026-03-09T04:00:00"), date(2026, 3, 9)),
    ]


def test_cli_dashboard(
    db: Client, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from portal_pulse import cli

    monkeypatch.setattr(cli, "_clickhouse", lambda url: db)
    base = ["dashboard", "--practice", FEATURES, "--month", "2026-03"]
    assert cli.main(base) == 0
    out = capsys.readouterr().out
    assert out.startswith("Portal Performance - March 2026\n")
    assert "- Phone Volume: ↓ 25% vs February" in out
    assert cli.main([*base, "--format", "json"]) == 0
    assert list(json.loads(capsys.readouterr().out)) == ["practice_id", "month", *SPEC_KEYS]
    page = tmp_path / "dash.html"
    assert cli.main([*base, "--format", "html", "--out", str(page)]) == 0
    assert page.read_text(encoding="utf-8").count("<svg") == 9
    capsys.readouterr()
    # user mistakes: one line on stderr, EXIT_NO_DATA (4) or EXIT_USAGE (2)
    assert cli.main(["dashboard", "--practice", f"nobody-{RUN}", "--month", "2026-03"]) == 4
    err = capsys.readouterr().err
    assert f"no data for practice 'nobody-{RUN}' (practices with data: " in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert cli.main(["dashboard", "--practice", FEATURES, "--month", "2025-06"]) == 4
    err = capsys.readouterr().err
    assert f"practice {FEATURES} has no data for Jun 2025 (it has data for " in err
    assert cli.main(["dashboard", "--practice", FEATURES, "--month", "March"]) == 2
    assert "YYYY-MM" in capsys.readouterr().err
