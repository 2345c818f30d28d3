"""Practice configuration: SPEC §3 defaults, inheritance, hours parsing, validation, SLA policy."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from portal_pulse.domain.calendar import BusinessCalendar
from portal_pulse.domain.practices import (
    END_OF_BUSINESS_DAY,
    PracticeConfigError,
    Practices,
    SlaPolicy,
    StaleThresholds,
    parse_duration,
)

NY = ZoneInfo("America/New_York")
OFFICE = ((time(8), time(17)),)


def ny(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=NY)


def test_builtin_defaults_match_spec() -> None:
    for practices in (
        Practices.load(None),
        Practices.from_mapping({}),
        Practices.from_mapping(None),
    ):
        config = practices.for_practice("anyone")
        assert config.practice_id == "anyone"
        assert config.timezone == "America/New_York"
        assert config.calendar.weekly_hours == {d: OFFICE for d in range(5)}
        assert config.calendar.holidays == {date(2026, 1, 1), date(2026, 1, 19)}
        assert config.sla == SlaPolicy(END_OF_BUSINESS_DAY, 540.0, 0.75)
        assert config.stale == StaleThresholds(7, 7, 14, 90)
        assert config.roster_lookback_days == 730


def test_listed_practice_inherits_from_default_field_by_field() -> None:
    practices = Practices.from_mapping(
        {
            "practices": {
                "default": {
                    "timezone": "America/Chicago",
                    "sla": {"external_promise": "8 business hours"},
                    "stale": {"dormant_days": 60},
                    "holidays": ["2026-07-03"],
                },
                "P1": {
                    "timezone": "Europe/London",
                    "sla": {"at_risk_fraction": 0.5},
                    "stale": {"no_first_login_days": 3},
                },
                "P2": None,
            }
        }
    )
    p1 = practices.for_practice("P1")
    assert p1.timezone == "Europe/London"
    assert p1.calendar.zone == ZoneInfo("Europe/London")
    assert p1.sla == SlaPolicy(END_OF_BUSINESS_DAY, 480.0, 0.5)
    assert p1.stale == StaleThresholds(7, 3, 14, 60)
    assert p1.calendar.holidays == {date(2026, 7, 3)}
    assert p1.roster_lookback_days == 730
    p2 = practices.for_practice("P2")
    assert p2.timezone == "America/Chicago"
    assert p2.sla.external_promise == 480.0
    other = practices.for_practice("unlisted")
    assert other.timezone == "America/Chicago"
    assert other.practice_id == "unlisted"
    assert other.calendar == practices.default.calendar
    assert practices.listed_ids == ("P1", "P2")


def test_hours_merge_per_weekday() -> None:
    practices = Practices.from_mapping(
        {
            "practices": {
                "default": {"hours": {"sat": "09:00-12:00"}},
                "P1": {"hours": {"fri": "closed", "mon": None, "Wednesday": "10:00-14:00"}},
                "P2": {"hours": {"sat": "", "tue": "08:00-12:00,13:00-17:00"}},
                "P3": {"hours": {"sun": ["22:00-24:00", "00:00-06:00"]}},
            }
        }
    )
    assert practices.default.calendar.weekly_hours == {
        **{d: OFFICE for d in range(5)},
        5: ((time(9), time(12)),),
    }
    assert practices.for_practice("P1").calendar.weekly_hours == {
        1: OFFICE,
        2: ((time(10), time(14)),),
        3: OFFICE,
        5: ((time(9), time(12)),),
    }
    assert practices.for_practice("P2").calendar.weekly_hours == {
        0: OFFICE,
        1: ((time(8), time(12)), (time(13), time(17))),
        2: OFFICE,
        3: OFFICE,
        4: OFFICE,
    }
    p3 = practices.for_practice("P3").calendar
    assert p3.weekly_hours[6] == ((time(0), time(6)), (time(22), time(0)))
    # 24:00 closes at midnight: Sun 21:00 -> Mon 09:00 holds 22:00-24:00 and 08:00-09:00.
    assert p3.business_minutes_between(ny(2026, 1, 4, 21), ny(2026, 1, 5, 9)) == 180


def test_holidays_accept_yaml_dates_and_null() -> None:
    practices = Practices.from_mapping(
        {
            "practices": {
                "P1": {"holidays": [date(2026, 12, 25), "2026-12-24"]},
                "P2": {"holidays": None},
            }
        }
    )
    assert practices.for_practice("P1").calendar.holidays == {
        date(2026, 12, 24),
        date(2026, 12, 25),
    }
    assert practices.for_practice("P2").calendar.holidays == frozenset()


def test_for_practice_is_cached() -> None:
    practices = Practices.from_mapping({"practices": {"P1": {}}})
    assert practices.for_practice("P1") is practices.for_practice("P1")
    assert practices.for_practice("X") is practices.for_practice("X")


def test_load_reads_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "practices.yaml"
    path.write_text(
        """
practices:
  default:
    timezone: America/Denver
    hours: {mon: "08:00-17:00", tue: "08:00-17:00", wed: "08:00-17:00", thu: "08:00-17:00",
            fri: "08:00-12:00"}
    holidays: [2026-01-01, "2026-11-26"]
    sla:
      internal_target: "240 business minutes"
  clinic-7:
    hours:
      sat: ["09:00-11:00", "11:30-13:00"]
    sla:
      external_promise: "1.5 business hours"
""",
        encoding="utf-8",
    )
    practices = Practices.load(path)
    assert practices.default.calendar.holidays == {date(2026, 1, 1), date(2026, 11, 26)}
    clinic = practices.for_practice("clinic-7")
    assert clinic.timezone == "America/Denver"
    assert clinic.sla == SlaPolicy(240.0, 90.0, 0.75)
    assert clinic.calendar.weekly_hours[4] == ((time(8), time(12)),)
    assert clinic.calendar.weekly_hours[5] == ((time(9), time(11)), (time(11, 30), time(13)))
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    assert Practices.load(empty).default.timezone == "America/New_York"


def test_invalid_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("practices: {default: [", encoding="utf-8")
    with pytest.raises(PracticeConfigError, match="invalid YAML"):
        Practices.load(path)


@pytest.mark.parametrize(
    ("entry", "field", "message"),
    [
        ({"timezone": "Mars/Base"}, "timezone", "time zone"),
        ({"timezone": 5}, "timezone", "IANA"),
        ({"hours": {"mon": "8-17"}}, "hours.mon", "HH:MM"),
        ({"hours": {"mon": "08:00"}}, "hours.mon", "HH:MM-HH:MM"),
        ({"hours": {"mon": "25:00-26:00"}}, "hours.mon", "bad time"),
        ({"hours": {"mon": "17:00-08:00"}}, "hours.mon", "opens at or after"),
        ({"hours": {"mon": "08:00-08:00"}}, "hours.mon", "opens at or after"),
        ({"hours": {"mon": "08:00-12:00,11:00-17:00"}}, "hours.mon", "overlap"),
        ({"hours": {"mon": 8}}, "hours.mon", "bad hours"),
        ({"hours": {"funday": "08:00-17:00"}}, "hours.funday", "unknown weekday"),
        ({"hours": "08:00-17:00"}, "hours", "mapping"),
        (
            {"hours": {d: "closed" for d in ("mon", "tue", "wed", "thu", "fri")}},
            "hours",
            "no open hours",
        ),
        ({"holidays": ["2026-02-30"]}, "holidays", "YYYY-MM-DD"),
        ({"holidays": "2026-02-03"}, "holidays", "list"),
        ({"holidays": [datetime(2026, 2, 3, tzinfo=UTC)]}, "holidays", "YYYY-MM-DD"),
        ({"sla": {"internal_target": "1 business day"}}, "sla.internal_target", "business"),
        ({"sla": {"external_promise": "0 business minutes"}}, "sla.external_promise", "N > 0"),
        ({"sla": {"external_promise": 540}}, "sla.external_promise", "business minutes"),
        ({"sla": {"at_risk_fraction": 0}}, "sla.at_risk_fraction", r"\(0, 1\]"),
        ({"sla": {"at_risk_fraction": 1.5}}, "sla.at_risk_fraction", r"\(0, 1\]"),
        ({"sla": {"at_risk_fraction": "0.5"}}, "sla.at_risk_fraction", "number"),
        ({"sla": {"target": "x"}}, "sla.target", "unknown key"),
        ({"stale": {"dormant_days": 0}}, "stale.dormant_days", "positive"),
        ({"stale": {"no_first_login_days": -1}}, "stale.no_first_login_days", "positive"),
        ({"stale": {"app_not_installed_days": 1.5}}, "stale.app_not_installed_days", "whole"),
        ({"stale": {"app_not_installed_days": True}}, "stale.app_not_installed_days", "whole"),
        ({"stale": {"quiet_days": 3}}, "stale.quiet_days", "unknown key"),
        ({"roster_lookback_days": 0}, "roster_lookback_days", "positive"),
        ({"colour": "blue"}, "colour", "unknown key"),
    ],
)
def test_validation_names_practice_and_field(
    entry: dict[str, Any], field: str, message: str
) -> None:
    for practice in ("default", "P9"):
        with pytest.raises(PracticeConfigError, match=message) as caught:
            Practices.from_mapping({"practices": {practice: entry}})
        assert caught.value.practice == practice
        assert caught.value.field == field
        assert repr(practice) in str(caught.value)
        assert field in str(caught.value)


@pytest.mark.parametrize(
    "bad",
    ["P9' OR '1'='1", "P001:MRN", "P 1", "x" * 65, "P1\x1b[2J", "P1\nP2", "Ρ001", "P1|x", ""],
)
def test_a_practice_id_spec_refuses_is_a_config_error_shown_escaped(bad: str) -> None:
    with pytest.raises(PracticeConfigError) as caught:
        Practices.from_mapping({"practices": {"default": {}, bad: {}}})
    message = str(caught.value)
    assert repr(bad) in message, "named, escaped"
    assert "not a practice id" in message
    assert "1 to 64 letters, digits, '.', '_' or '-'" in message
    assert message.isprintable(), "no control character reaches the terminal"


def test_a_bad_practice_id_in_a_yaml_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "practices.yaml"
    path.write_text(
        "practices:\n  P001: {}\n  \"P9' OR '1'='1\": {timezone: UTC}\n", encoding="utf-8"
    )
    with pytest.raises(PracticeConfigError, match="not a practice id") as caught:
        Practices.load(path)
    assert caught.value.practice == "P9' OR '1'='1"


@pytest.mark.parametrize("good", ["P001", "north.clinic_2", "A-1", "x" * 64])
def test_practice_ids_spec_allows_are_listed(good: str) -> None:
    assert Practices.from_mapping({"practices": {good: {}}}).listed_ids == (good,)


def test_numeric_yaml_keys_are_practice_ids_too(tmp_path: Path) -> None:
    path = tmp_path / "practices.yaml"
    path.write_text("practices:\n  101: {timezone: UTC}\n", encoding="utf-8")
    assert Practices.load(path).for_practice("101").timezone == "UTC"


def test_bad_document_shapes() -> None:
    with pytest.raises(PracticeConfigError, match="unknown top-level key"):
        Practices.from_mapping({"practice": {}})
    with pytest.raises(PracticeConfigError, match="mapping of practice ids"):
        Practices.from_mapping({"practices": ["P1"]})
    with pytest.raises(PracticeConfigError, match="expected a mapping"):
        Practices.from_mapping({"practices": {"P1": "nope"}})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("end_of_business_day", END_OF_BUSINESS_DAY),
        ("240 business minutes", 240.0),
        ("1 business minute", 1.0),
        ("2.5 business hours", 150.0),
        ("  9 Business Hours ", 540.0),
        ("0.5 business minutes", 0.5),
    ],
)
def test_parse_duration(text: str, expected: object) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["", "240", "240 minutes", "-5 business minutes", "1 business day"]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="end_of_business_day"):
        parse_duration(text)


def office() -> BusinessCalendar:
    return Practices.load(None).default.calendar


def test_sla_policy_default_deadlines() -> None:
    policy = SlaPolicy()
    cal = office()
    start = ny(2026, 1, 5, 9)
    assert policy.internal_due(cal, start) == ny(2026, 1, 5, 17)
    assert policy.external_due(cal, start) == ny(2026, 1, 6, 9)
    # 75 % of the 480 business minutes left in the day.
    assert policy.at_risk_at(cal, start) == ny(2026, 1, 5, 15)
    late = ny(2026, 1, 16, 16)  # Friday 16:00
    assert policy.internal_due(cal, late) == ny(2026, 1, 16, 17)
    assert policy.at_risk_at(cal, late) == ny(2026, 1, 16, 16, 45)
    assert policy.external_due(cal, late) == ny(2026, 1, 20, 16)  # Mon 19 is a holiday


def test_sla_policy_minutes_targets() -> None:
    policy = SlaPolicy(internal_target=240.0, external_promise=600.0, at_risk_fraction=0.5)
    cal = office()
    start = ny(2026, 1, 5, 15)
    assert policy.internal_due(cal, start) == ny(2026, 1, 6, 10)
    assert policy.at_risk_at(cal, start) == ny(2026, 1, 5, 17)
    assert policy.external_due(cal, start) == ny(2026, 1, 6, 16)
    assert SlaPolicy(at_risk_fraction=1.0).at_risk_at(cal, start) == ny(2026, 1, 5, 17)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"at_risk_fraction": 0.0},
        {"at_risk_fraction": 1.01},
        {"internal_target": 0.0},
        {"external_promise": -5.0},
        {"internal_target": "tomorrow"},
    ],
)
def test_sla_policy_rejects_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SlaPolicy(**kwargs)
