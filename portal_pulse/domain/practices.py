"""Per-practice rules (SPEC §3): time zone, hours, holidays, SLA targets, follow-up thresholds.

The YAML file has one ``default`` entry and one entry per listed practice. Every entry is merged
over what it inherits (built-in defaults, then ``default``) field by field: nested sections
(``sla``, ``stale``, ``hours``) merge key by key, so ``hours: {sat: "09:00-12:00"}`` adds Saturday
to the inherited week and ``hours: {fri: closed}`` closes Friday. ``holidays`` is a list and is
replaced as a whole. Everything is validated at load time so a bad file fails at startup.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, time
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import yaml

from portal_pulse.domain.calendar import BusinessCalendar, Interval
from schemas.validation import PRACTICE_ID_RULE, is_practice_id

__all__ = [
    "END_OF_BUSINESS_DAY",
    "PracticeConfig",
    "PracticeConfigError",
    "Practices",
    "SlaPolicy",
    "SlaTarget",
    "StaleThresholds",
    "parse_duration",
]

END_OF_BUSINESS_DAY: Literal["end_of_business_day"] = "end_of_business_day"
SlaTarget = Literal["end_of_business_day"] | float
"""A deadline rule: close of the clock-start business day, or a number of business minutes."""


class PracticeConfigError(ValueError):
    """A practice configuration that cannot be used; the message names the practice and field."""

    def __init__(self, practice: str, field_name: str, problem: str) -> None:
        self.practice = practice
        self.field = field_name
        super().__init__(f"practice {practice!r}, field {field_name!r}: {problem}")


@dataclass(frozen=True, slots=True)
class StaleThresholds:
    """SPEC §6 follow-up thresholds, whole days of elapsed time (N × 24 h)."""

    invite_not_activated_days: int = 7
    no_first_login_days: int = 7
    app_not_installed_days: int = 14
    dormant_days: int = 90


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s+business\s+(minute|hour)s?\s*$", re.IGNORECASE)


def parse_duration(text: Any) -> SlaTarget:
    """``end_of_business_day`` or ``"<N> business minutes|hours"`` (N > 0, may be decimal)."""
    if isinstance(text, str):
        if text.strip().lower() == END_OF_BUSINESS_DAY:
            return END_OF_BUSINESS_DAY
        match = _DURATION.match(text)
        if match:
            amount = float(match.group(1))
            minutes = amount * 60 if match.group(2).lower() == "hour" else amount
            if minutes > 0:
                return minutes
    raise ValueError(
        f"expected 'end_of_business_day' or '<N> business minutes|hours' with N > 0, got {text!r}"
    )


@dataclass(frozen=True, slots=True)
class SlaPolicy:
    """SPEC §5 deadlines, each measured in business time from the clock start."""

    internal_target: SlaTarget = END_OF_BUSINESS_DAY
    external_promise: SlaTarget = 540.0
    at_risk_fraction: float = 0.75

    def __post_init__(self) -> None:
        for name in ("internal_target", "external_promise"):
            value = getattr(self, name)
            if value != END_OF_BUSINESS_DAY and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not value > 0
                or value == float("inf")
            ):
                raise ValueError(
                    f"{name} must be {END_OF_BUSINESS_DAY!r} or business minutes > 0: {value!r}"
                )
        fraction = self.at_risk_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise ValueError(f"at_risk_fraction must be a number, got {fraction!r}")
        if not 0 < fraction <= 1:
            raise ValueError(f"at_risk_fraction must be in (0, 1], got {fraction!r}")

    @staticmethod
    def _due(calendar: BusinessCalendar, clock_start: datetime, target: SlaTarget) -> datetime:
        if target == END_OF_BUSINESS_DAY:
            return calendar.close_of_business_day(clock_start)
        return calendar.add_business_minutes(clock_start, float(target))

    def internal_due(self, calendar: BusinessCalendar, clock_start: datetime) -> datetime:
        return self._due(calendar, clock_start, self.internal_target)

    def external_due(self, calendar: BusinessCalendar, clock_start: datetime) -> datetime:
        return self._due(calendar, clock_start, self.external_promise)

    def at_risk_at(self, calendar: BusinessCalendar, clock_start: datetime) -> datetime:
        """When ``at_risk_fraction`` of the internal target's business time has elapsed."""
        start = calendar.clock_start(clock_start)
        due = self.internal_due(calendar, start)
        if self.internal_target == END_OF_BUSINESS_DAY:
            budget = calendar.business_minutes_between(start, due)
        else:
            budget = float(self.internal_target)
        # Never later than the due time itself, whatever float rounding does at fraction 1.
        return min(calendar.add_business_minutes(start, budget * self.at_risk_fraction), due)


@dataclass(frozen=True, slots=True)
class PracticeConfig:
    """Everything the pipeline needs to know about one practice."""

    practice_id: str
    timezone: str
    calendar: BusinessCalendar
    sla: SlaPolicy
    stale: StaleThresholds
    roster_lookback_days: int


# -- parsing ---------------------------------------------------------------------------------------

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEKDAY_ALIASES = {
    **{name: i for i, name in enumerate(_WEEKDAYS)},
    **{
        name: i
        for i, name in enumerate(
            ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
        )
    },
}

BUILTIN_DEFAULTS: dict[str, Any] = {
    "timezone": "America/New_York",
    "hours": {day: "08:00-17:00" for day in _WEEKDAYS[:5]},
    "holidays": ["2026-01-01", "2026-01-19"],
    "sla": {
        "internal_target": "end_of_business_day",
        "external_promise": "540 business minutes",
        "at_risk_fraction": 0.75,
    },
    "stale": {
        "invite_not_activated_days": 7,
        "no_first_login_days": 7,
        "app_not_installed_days": 14,
        "dormant_days": 90,
    },
    "roster_lookback_days": 730,
}
"""SPEC §3 built-in defaults, in the YAML shape."""

_SECTIONS = ("hours", "sla", "stale")
_STALE_FIELDS = tuple(StaleThresholds.__dataclass_fields__)
_SLA_FIELDS = ("internal_target", "external_promise", "at_risk_fraction")
_TIME = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
_CLOSED = ("closed", "")


def _parse_clock(text: str, *, is_close: bool) -> time:
    match = _TIME.match(text.strip())
    if not match:
        raise ValueError(f"bad time {text!r}, expected HH:MM")
    hour, minute, second = int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)
    if is_close and (hour, minute, second) == (24, 0, 0):
        return time(0)  # the calendar reads a 00:00 close as midnight at the end of the day
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"bad time {text!r}")
    return time(hour, minute, second)


def _parse_day(value: Any) -> list[Interval]:
    """``"08:00-12:00,13:00-17:00"``, a list of such strings, or null/``closed``."""
    if value is None:
        return []
    if isinstance(value, str):
        if value.strip().lower() in _CLOSED:
            return []
        parts = value.split(",")
    elif isinstance(value, list):
        parts = []
        for item in value:
            if not isinstance(item, str):
                raise ValueError(f"bad hours entry {item!r}, expected 'HH:MM-HH:MM'")
            parts.extend(item.split(","))
    else:
        raise ValueError(f"bad hours {value!r}, expected 'HH:MM-HH:MM[,HH:MM-HH:MM...]'")
    intervals: list[Interval] = []
    for part in parts:
        pieces = part.split("-")
        if len(pieces) != 2:
            raise ValueError(f"bad interval {part.strip()!r}, expected 'HH:MM-HH:MM'")
        opens = _parse_clock(pieces[0], is_close=False)
        closes = _parse_clock(pieces[1], is_close=True)
        if closes != time(0) and opens >= closes:
            raise ValueError(f"interval {part.strip()!r} opens at or after it closes")
        intervals.append((opens, closes))
    intervals.sort()
    for (o1, c1), (o2, c2) in pairwise(intervals):
        if c1 == time(0) or o2 < c1:
            raise ValueError(f"intervals {o1:%H:%M}-{c1:%H:%M} and {o2:%H:%M}-{c2:%H:%M} overlap")
    return intervals


def _parse_holiday(value: Any) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError(f"bad holiday {value!r}, expected YYYY-MM-DD")


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"expected a positive whole number, got {value!r}")
    return value


class _Parser:
    """Turns one merged YAML entry into a PracticeConfig, naming the practice in every error."""

    def __init__(self, practice: str) -> None:
        self.practice = practice

    def fail(self, field_name: str, problem: str) -> PracticeConfigError:
        return PracticeConfigError(self.practice, field_name, problem)

    def check_entry(self, entry: Any) -> dict[str, Any]:
        """Reject unknown keys and wrong section types before merging."""
        if entry is None:
            return {}
        if not isinstance(entry, Mapping):
            raise self.fail("<entry>", f"expected a mapping, got {type(entry).__name__}")
        out: dict[str, Any] = {}
        for key, value in entry.items():
            if key not in BUILTIN_DEFAULTS:
                raise self.fail(str(key), f"unknown key; known: {', '.join(BUILTIN_DEFAULTS)}")
            if key in _SECTIONS:
                out[key] = self.check_section(key, value)
            else:
                out[key] = value
        return out

    def check_section(self, key: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(key, f"expected a mapping, got {value!r}")
        if key == "hours":
            hours: dict[str, Any] = {}
            for day, spec in value.items():
                name = str(day).strip().lower()
                if name not in _WEEKDAY_ALIASES:
                    raise self.fail(f"hours.{day}", f"unknown weekday; use {', '.join(_WEEKDAYS)}")
                canonical = _WEEKDAYS[_WEEKDAY_ALIASES[name]]
                if canonical in hours:
                    raise self.fail(f"hours.{day}", "weekday given twice")
                hours[canonical] = spec
            return hours
        known = _SLA_FIELDS if key == "sla" else _STALE_FIELDS
        for name in value:
            if name not in known:
                raise self.fail(f"{key}.{name}", f"unknown key; known: {', '.join(known)}")
        return dict(value)

    def build(self, merged: Mapping[str, Any]) -> PracticeConfig:
        timezone = merged["timezone"]
        if not isinstance(timezone, str) or not timezone.strip():
            raise self.fail("timezone", f"expected an IANA zone name, got {timezone!r}")
        week: dict[int, list[Interval]] = {}
        for day, spec in merged["hours"].items():
            try:
                week[_WEEKDAY_ALIASES[day]] = _parse_day(spec)
            except ValueError as exc:
                raise self.fail(f"hours.{day}", str(exc)) from None
        holidays_raw = merged["holidays"]
        if holidays_raw is None:
            holidays_raw = []
        if not isinstance(holidays_raw, list):
            raise self.fail("holidays", f"expected a list of YYYY-MM-DD, got {holidays_raw!r}")
        holidays: list[date] = []
        for item in holidays_raw:
            try:
                holidays.append(_parse_holiday(item))
            except ValueError as exc:
                raise self.fail("holidays", str(exc)) from None
        try:
            calendar = BusinessCalendar(timezone, week, holidays)
        except ValueError as exc:
            field_name = "timezone" if "time zone" in str(exc) else "hours"
            raise self.fail(field_name, str(exc)) from None

        sla_raw = merged["sla"]
        targets: dict[str, SlaTarget] = {}
        for name in ("internal_target", "external_promise"):
            try:
                targets[name] = parse_duration(sla_raw[name])
            except ValueError as exc:
                raise self.fail(f"sla.{name}", str(exc)) from None
        fraction = sla_raw["at_risk_fraction"]
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise self.fail("sla.at_risk_fraction", f"expected a number, got {fraction!r}")
        if not 0 < fraction <= 1:
            raise self.fail("sla.at_risk_fraction", f"must be in (0, 1], got {fraction!r}")
        sla = SlaPolicy(at_risk_fraction=float(fraction), **targets)

        stale_values: dict[str, int] = {}
        for name in _STALE_FIELDS:
            try:
                stale_values[name] = _positive_int(merged["stale"][name])
            except ValueError as exc:
                raise self.fail(f"stale.{name}", str(exc)) from None
        try:
            lookback = _positive_int(merged["roster_lookback_days"])
        except ValueError as exc:
            raise self.fail("roster_lookback_days", str(exc)) from None
        return PracticeConfig(
            practice_id=self.practice,
            timezone=timezone,
            calendar=calendar,
            sla=sla,
            stale=StaleThresholds(**stale_values),
            roster_lookback_days=lookback,
        )


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: where (line, column) and what."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"invalid YAML{where}: {problem}".split())


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Field-by-field inheritance; nested sections merge key by key."""
    merged = {key: dict(value) if key in _SECTIONS else value for key, value in base.items()}
    for key, value in over.items():
        if key in _SECTIONS:
            merged[key] = {**merged.get(key, {}), **value}
        else:
            merged[key] = value
    return merged


_DEFAULT_ID = "default"


class Practices:
    """The registry of practice configurations; unknown practice ids get the ``default`` rules."""

    def __init__(self, default: PracticeConfig, listed: Mapping[str, PracticeConfig]) -> None:
        self._default = default
        self._listed = dict(listed)
        self._cache: dict[str, PracticeConfig] = dict(self._listed)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> Practices:
        """Build from the parsed YAML document (``{practices: {default: ..., P1: ...}}``)."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise PracticeConfigError("<file>", "<root>", "expected a mapping with 'practices'")
        for key in data:
            if key != "practices":
                raise PracticeConfigError("<file>", str(key), "unknown top-level key")
        entries = data.get("practices") or {}
        if not isinstance(entries, Mapping):
            raise PracticeConfigError("<file>", "practices", "expected a mapping of practice ids")
        default_entry = _Parser(_DEFAULT_ID).check_entry(entries.get(_DEFAULT_ID))
        default_merged = _merge(BUILTIN_DEFAULTS, default_entry)
        default = _Parser(_DEFAULT_ID).build(default_merged)
        listed: dict[str, PracticeConfig] = {}
        for raw_id, entry in entries.items():
            practice_id = str(raw_id)
            if practice_id == _DEFAULT_ID:
                continue
            if not is_practice_id(practice_id):  # the message shows it escaped (repr)
                raise PracticeConfigError(
                    practice_id, "<id>", f"not a practice id: use {PRACTICE_ID_RULE}"
                )
            if practice_id in listed:
                raise PracticeConfigError(practice_id, "<entry>", "practice listed twice")
            parser = _Parser(practice_id)
            listed[practice_id] = parser.build(_merge(default_merged, parser.check_entry(entry)))
        return cls(default, listed)

    @classmethod
    def load(cls, path: str | Path | None) -> Practices:
        """Read the YAML file; ``None`` gives the built-in defaults only."""
        if path is None:
            return cls.from_mapping(None)
        text = Path(path).read_text(encoding="utf-8")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PracticeConfigError("<file>", "<root>", f"{path}: {_yaml_problem(exc)}") from None
        return cls.from_mapping(data)

    @property
    def default(self) -> PracticeConfig:
        return self._default

    @property
    def listed_ids(self) -> tuple[str, ...]:
        return tuple(self._listed)

    def for_practice(self, practice_id: str) -> PracticeConfig:
        """The practice's rules; an unlisted id gets the default rules under its own id."""
        config = self._cache.get(practice_id)
        if config is None:
            config = replace(self._default, practice_id=practice_id)
            self._cache[practice_id] = config
        return config
