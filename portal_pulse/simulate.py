"""Deterministic simulator of several practices' portal and EHR events (SPEC §2).

It exists so demos, tests and load runs have a realistic recorded stream without real PHI: the
article's trends (enrollment rising from ~18 % to ~70 % of the roster, portal bookings and payments
growing, inbound calls falling, replies mostly within business hours) are built in, so the metrics
and alerts downstream have something meaningful to find.

Each practice keeps a per-patient plan (visits, invitations, enrollment, first login, app install)
made once, then generates its activity month by month from an RNG seeded by (seed, practice, month),
so the stream depends only on the spec. Practices are merged lazily with ``heapq.merge``; memory
stays at about one month of activity per practice. Times are chosen in the practice's local time and
converted with per-day offsets computed once (no per-event ``zoneinfo`` work).

A recording is written in ``occurred_at`` order by default. ``arrival="realistic"`` writes the same
lines in the order a pipeline would *receive* them (SPEC §7.1): each event is delayed by a lag drawn
for its source (see ``ArrivalModel`` and docs/events.md), so late and out-of-order input can be
tested with the same events.
"""

from __future__ import annotations

import calendar
import hashlib
import heapq
import json
import math
import random
import time
from array import array
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from portal_pulse.progress import STEP, ProgressFactory
from schemas.catalogue import event_types, source_of
from schemas.jsonl import write_jsonl
from schemas.model import RawEvent
from schemas.validation import InvalidEvent, to_flat_json, validate_event

__all__ = [
    "ARRIVALS",
    "DUPLICATE",
    "LAG_BOUNDS",
    "VALID",
    "Arrival",
    "ArrivalModel",
    "LagStats",
    "SimulationSpec",
    "SimulationSummary",
    "arrivals",
    "format_lag",
    "realistic_order",
    "simulate",
    "simulate_arrivals",
    "simulate_labelled",
    "simulate_to_file",
    "spec_zones",
]

VALID = "valid"
DUPLICATE = "duplicate"
ORDERED = "ordered"
REALISTIC = "realistic"
PORTAL_JITTER = "portal-jitter"
ARRIVALS = (ORDERED, REALISTIC, PORTAL_JITTER)
"""Arrival orders a recording can be written in: ``occurred_at`` order, realistic lags per
source, or only the portal servers' few seconds of jitter (every other source on time)."""

DAY = 86_400
HOUR = 3_600
OPEN = 8 * HOUR  # SPEC §3 default opening hours, Mon–Fri 08:00–17:00 local
CLOSE = 17 * HOUR
EARLY = 4 * HOUR  # local times before this use the midnight offset (DST changes happen 01–03h)
WAKE = 6 * HOUR  # patients act between 06:00 and 23:30 local
LATE = 23 * HOUR + 1_800
PRE_DAYS = 60  # first visits and pre-existing enrollments happen up to this long before start
TAIL_DAYS = 45  # calendar kept past the end so late replies can be placed (then dropped)
HOLIDAYS = frozenset({date(2026, 1, 1), date(2026, 1, 19)})  # SPEC §3 default holidays

# Base rates per roster patient per month.
VISIT_P = 0.30
SURVEY_P = 0.25
RESULT_P = 0.25
BOOK_P = 0.35
BOOK_ACTIVE_P = 0.55  # active portal users book more often
PAY_P = 0.30
REFILL_P = 0.10
INBOUND_PER_PATIENT = 0.75
OUTBOUND_PER_PATIENT = 0.06
# Per portal session.
THREAD_P = 0.30
RECORD_P = 0.25

FIELDS: dict[str, tuple[str, ...]] = {
    "patient.seen": ("encounter_id",),
    "portal.invited": ("method",),
    "portal.enrolled": ("method",),
    "portal.login": ("channel",),
    "app.installed": ("platform",),
    "message.sent": ("thread_id", "message_id", "category"),
    "message.replied": ("thread_id", "message_id", "staff_pool", "automated"),
    "result.posted": ("result_id",),
    "result.viewed": ("result_id",),
    "result.staff_contacted": ("result_id",),
    "appointment.booked": ("appointment_id", "channel", "appointment_type"),
    "payment.made": ("payment_id", "amount_cents", "currency", "channel"),
    "phone.call": ("call_id", "direction", "reason"),
    "refill.requested": ("refill_id", "channel"),
    "record.viewed": (),
    "survey.response": ("survey_id", "score"),
}

_Table = tuple[tuple[Any, ...], tuple[float, ...]]


def _table(*pairs: tuple[Any, float]) -> _Table:
    values = tuple(v for v, _ in pairs)
    cum: list[float] = []
    total = 0.0
    for _, w in pairs:
        total += w
        cum.append(total)
    return values, tuple(cum)


def _pick(r: Callable[[], float], table: _Table) -> Any:
    """Weighted choice with precomputed cumulative weights (much cheaper than ``choices``)."""
    values, cum = table
    return values[bisect_right(cum, r() * cum[-1])]


ENROLL_METHODS = _table(("in_office", 45), ("self", 30), ("qr", 15), (None, 10))
INVITE_METHODS = _table(("email", 40), ("sms", 30), ("qr", 15), ("paper", 15))
CATEGORIES = _table(("clinical", 45), ("administrative", 30), ("billing", 15), ("other", 10))
POOLS = {"administrative": "front_desk", "billing": "billing", "other": "front_desk"}
APPT_TYPES = _table(
    ("annual_exam", 20), ("follow_up", 40), ("same_day", 15), ("new_patient", 5), ("other", 20)
)
OFFLINE_PAY = _table(("in_person", 45), ("mail", 30), ("phone", 25))
IN_REASONS = _table(
    ("scheduling", 35),
    ("results", 20),
    ("refill", 15),
    ("billing", 15),
    ("clinical", 10),
    ("other", 5),
)
OUT_REASONS = _table(("scheduling", 40), ("billing", 20), ("clinical", 25), ("other", 15))
PORTAL_SCORES = _table((1, 1), (2, 2), (3, 7), (4, 25), (5, 65))  # mean ≈ 4.5
OTHER_SCORES = _table((1, 3), (2, 5), (3, 15), (4, 37), (5, 40))  # mean ≈ 4.1
PLATFORMS = _table(("ios", 55), ("android", 45))


def _add_months(d: date, k: int) -> date:
    y, m = divmod(d.month - 1 + k, 12)
    year, month = d.year + y, m + 1
    return date(year, month, min(d.day, calendar.monthrange(year, month)[1]))


def _curve(x: float) -> float:
    """Logistic growth normalised to 0 at x=0 and 1 at x=1 (adoption by fraction of the period)."""

    def f(v: float) -> float:
        return 1.0 / (1.0 + math.exp(-6.0 * (v - 0.5)))

    return (f(x) - f(0.0)) / (f(1.0) - f(0.0))


def _clamp(v: float, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo if v < lo else hi if v > hi else v


@dataclass(frozen=True, slots=True)
class SimulationSpec:
    """What to simulate; the output is a pure function of this.

    ``patients`` is per practice. ``bad_fraction`` is the expected share of invalid lines in the
    output; ``duplicate_fraction`` (default a quarter of ``bad_fraction``) is the share of valid
    events re-delivered verbatim. Neither changes the valid stream for a seed.
    """

    practices: int = 3
    patients: int = 500
    months: int = 3
    seed: int = 1
    start: date = date(2026, 1, 1)
    bad_fraction: float = 0.0
    timezones: tuple[str, ...] = (
        "America/New_York",
        "America/Chicago",
        "America/Los_Angeles",
        "Europe/London",
    )
    duplicate_fraction: float | None = None

    def __post_init__(self) -> None:
        if self.practices < 1 or self.patients < 1 or self.months < 1:
            raise ValueError("practices, patients and months must be >= 1")
        if self.practices > 999:
            raise ValueError("at most 999 practices (ids are P001..P999)")
        if not 0.0 <= self.bad_fraction < 1.0:
            raise ValueError("bad_fraction must be in [0, 1)")
        if self.duplicate_fraction is not None and not 0.0 <= self.duplicate_fraction <= 1.0:
            raise ValueError("duplicate_fraction must be in [0, 1]")
        if not self.timezones:
            raise ValueError("timezones must not be empty")
        for name in self.timezones:
            try:
                ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {name!r}") from None

    @property
    def dup_fraction(self) -> float:
        if self.duplicate_fraction is None:
            return self.bad_fraction / 4
        return self.duplicate_fraction


@dataclass(frozen=True, slots=True)
class LagStats:
    """How late one source's events arrive in a written recording (seconds after occurred_at)."""

    count: int
    median_seconds: float
    max_seconds: float

    def __str__(self) -> str:
        return (
            f"{self.count:,} events, median {format_lag(self.median_seconds)}, "
            f"max {format_lag(self.max_seconds)}"
        )


def format_lag(seconds: float) -> str:
    """A lag as a person reads it: 14s, 19m, 5h 58m, 3d 4h (rounded down to the unit shown)."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < HOUR:
        return f"{s // 60}m"
    if s < DAY:
        return f"{s // HOUR}h {s % HOUR // 60}m"
    return f"{s // DAY}d {s % DAY // HOUR}h"


@dataclass(slots=True)
class SimulationSummary:
    """What ``simulate_to_file`` wrote: ``valid`` excludes ``duplicates``; lines = ``total``.

    ``lags`` (per SPEC §2 source, valid events only) and ``reordered`` (events written after one
    stamped later) are filled when the arrival order is not ``ordered``.
    """

    path: Path
    valid: int = 0
    bad: int = 0
    duplicates: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    bad_by_kind: dict[str, int] = field(default_factory=dict)
    first_at: str | None = None
    last_at: str | None = None
    seconds: float = 0.0
    arrival: str = ORDERED
    lags: dict[str, LagStats] = field(default_factory=dict)
    reordered: int = 0

    @property
    def total(self) -> int:
        return self.valid + self.bad + self.duplicates

    @property
    def events_per_second(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        """One readable line: what the file holds, its time span and how fast it was written."""
        span = (
            f", {self.first_at[:10]} to {self.last_at[:10]}"
            if self.first_at and self.last_at
            else ""
        )
        return (
            f"{self.total:,} lines ({self.valid:,} valid events, {self.duplicates:,} duplicates, "
            f"{self.bad:,} invalid){span}, written in {self.seconds:.1f}s "
            f"({self.events_per_second:,.0f} lines/s)"
        )


# A generated event before conversion: (epoch, practice index, seq, type, patient index, values).
_Rec = tuple[int, int, int, str, int, tuple[Any, ...]]
_Add = Callable[[int, str, int, tuple[Any, ...]], None]


class _Practice:
    """One practice: its local calendar, roster plan and month-by-month activity."""

    def __init__(self, spec: SimulationSpec, index: int) -> None:
        self.index = index
        self.pid = f"P{index + 1:03d}"
        self.n = spec.patients
        self.months = spec.months
        self.key = f"portal-pulse-sim:{spec.seed}:{self.pid}"
        self.zone = ZoneInfo(spec.timezones[index % len(spec.timezones)])
        self.autoreply = index % 2 == 0  # every other practice acknowledges after-hours messages
        self.patient_ids = [f"MRN-{self.pid}-{i + 1:06d}" for i in range(self.n)]
        self.seq = 0
        self.counters: Counter[str] = Counter()
        self._calendar(spec)
        self._plan()

    # -- calendar -------------------------------------------------------------------------------

    def _calendar(self, spec: SimulationSpec) -> None:
        """Per local day: UTC epoch of midnight and of (noon-offset) midnight, and open or not."""
        first = spec.start - timedelta(days=PRE_DAYS)
        starts = [_add_months(spec.start, k) for k in range(spec.months + 1)]
        n_days = (starts[-1] - first).days + TAIL_DAYS
        self.base0: list[int] = []  # true local midnight
        self.base: list[int] = []  # midnight implied by the noon offset, for times >= EARLY
        self.biz: list[bool] = []
        for i in range(n_days):
            d = first + timedelta(days=i)
            midnight = datetime(d.year, d.month, d.day, tzinfo=self.zone)
            self.base0.append(int(midnight.timestamp()))
            self.base.append(int(midnight.replace(hour=12).timestamp()) - 12 * HOUR)
            self.biz.append(d.weekday() < 5 and d not in HOLIDAYS)
        self.n_days = n_days
        self.next_biz = [n_days] * (n_days + 1)
        for i in range(n_days - 1, -1, -1):
            self.next_biz[i] = i if self.biz[i] else self.next_biz[i + 1]
        self.month_day = [(s - first).days for s in starts]
        self.month_ep = [self.base0[d] for d in self.month_day]
        self.end_ep = self.month_ep[-1]
        self.beyond = self.end_ep + 365 * DAY  # placed past the table: dropped as after the end

    def to_ep(self, d: int, s: float) -> int:
        if d >= self.n_days:
            return self.beyond
        return (self.base[d] if s >= EARLY else self.base0[d]) + int(s)

    def local(self, ep: int) -> tuple[int, int]:
        d = bisect_right(self.base0, ep) - 1
        s = ep - self.base0[d]
        if s >= EARLY:
            s = ep - self.base[d]
        return d, s

    def is_open(self, d: int, s: float) -> bool:
        return self.biz[d] and OPEN <= s < CLOSE

    def biz_time(self, r: Callable[[], float], lo: int, hi: int) -> tuple[int, float]:
        """A random instant in opening hours on a business day in [lo, hi) (Mondays busiest)."""
        d = self.next_biz[lo + int(r() * (hi - lo))]
        if d >= hi:
            d = self.next_biz[lo]
            if d >= hi:
                d = lo
        return d, OPEN + r() * (CLOSE - OPEN - 600)

    def any_time(self, r: Callable[[], float], lo: int, hi: int) -> tuple[int, float]:
        """A random waking instant in days [lo, hi), peaking mid-afternoon."""
        hi = min(hi, self.n_days)
        d = lo + int(r() * (hi - lo)) if hi > lo else lo
        return d, WAKE + (LATE - WAKE) * (r() + r()) / 2

    def add_business(self, d: int, s: float, minutes: float) -> tuple[int, float] | None:
        """Instant ``minutes`` of opening hours after (d, s), counted from the next opening."""
        n, nb = self.n_days, self.next_biz
        if d >= n:
            return None
        if not self.biz[d] or s >= CLOSE:
            d, s = nb[d + 1], OPEN
        elif s < OPEN:
            s = OPEN
        rem = minutes * 60
        while d < n:
            room = CLOSE - s
            if rem <= room:
                return d, s + rem
            rem -= room
            d, s = nb[d + 1], OPEN
        return None

    def new_id(self, prefix: str) -> str:
        self.counters[prefix] += 1
        return f"{self.pid}-{prefix}{self.counters[prefix]:06d}"

    # -- roster plan ----------------------------------------------------------------------------

    def _plan(self) -> None:
        """Decide each patient's lifecycle once; its events go to the chunk their time falls in."""
        rng = random.Random(f"{self.key}:plan")
        r = rng.random
        n, months = self.n, self.months
        self.lo = lo = 0.18 + (r() - 0.5) * 0.06
        hi = 0.70 + (r() - 0.5) * 0.08
        self.target = [lo + (hi - lo) * _curve((k + 1) / months) for k in range(months)]
        self.life: list[list[tuple[int, str, int, tuple[Any, ...]]]] = [
            [] for _ in range(months + 1)
        ]
        self.login0: list[int | None] = [None] * n
        self.enrolled_ep: list[int | None] = [None] * n
        self.app_ep: list[int | None] = [None] * n
        self.prop = [0.0] * n
        pre_hi = self.month_day[0]
        to_ep, life = self.to_ep, self._life
        for i in range(n):
            u = r()
            d, s = self.biz_time(r, 0, pre_hi)
            visit = to_ep(d, s)
            life(visit, "patient.seen", i, (self.new_id("ENC"),))
            enroll: int | None = None
            method: str | None = None
            login0: int | None = None
            if u < lo:  # enrolled before the simulated period
                if r() < 0.15:  # adopted before the pipeline: only a first login is seen
                    login0 = to_ep(*self.any_time(r, 0, pre_hi + 14))
                else:
                    method = _pick(r, ENROLL_METHODS)
                    if method == "in_office":
                        enroll = visit + 300 + int(r() * 2100)
                    else:
                        enroll = to_ep(*self.any_time(r, 0, pre_hi))
            else:
                k = next((k for k, e in enumerate(self.target) if u < e), None)
                if k is not None:
                    lo_d, hi_d = self.month_day[k], self.month_day[k + 1]
                    method = _pick(r, ENROLL_METHODS)
                    if method == "in_office":
                        tv = to_ep(*self.biz_time(r, lo_d, hi_d))
                        life(tv, "patient.seen", i, (self.new_id("ENC"),))
                        enroll = tv + 300 + int(r() * 2100)
                    else:
                        enroll = to_ep(*self.any_time(r, lo_d, hi_d))
                elif r() < 0.35:  # invited, never activates
                    tv = to_ep(*self.biz_time(r, 0, self.month_day[-1]))
                    life(tv, "portal.invited", i, (_pick(r, INVITE_METHODS),))
            if enroll is not None:
                if r() < (0.3 if method == "in_office" else 0.9):
                    inv = enroll - HOUR - int(r() * 20 * DAY)
                    how = "qr" if method == "qr" else _pick(r, INVITE_METHODS)
                    if inv > self.base0[0] + WAKE:
                        life(inv, "portal.invited", i, (how,))
                        if r() < 0.15:  # a reminder before activation
                            life(inv + int(r() * (enroll - inv)), "portal.invited", i, (how,))
                life(enroll, "portal.enrolled", i, (method,))
                x = r()
                if x < 0.80:
                    quick = method == "in_office" and r() < 0.5
                    login0 = enroll + (120 + int(r() * 3480) if quick else 600 + int(r() * 3 * DAY))
                elif x < 0.92:  # late first login: a no_first_login follow-up
                    login0 = enroll + 8 * DAY + int(r() * 22 * DAY)
            if login0 is not None:
                self.login0[i] = login0
                self.enrolled_ep[i] = enroll if enroll is not None else login0
                life(login0, "portal.login", i, ("web",))
                if r() < 0.33:
                    app = login0 + (60 + int(r() * 540) if r() < 0.4 else DAY + int(r() * 40 * DAY))
                    self.app_ep[i] = app
                    life(app, "app.installed", i, (_pick(r, PLATFORMS),))
            elif enroll is not None:
                self.enrolled_ep[i] = enroll
            x = r()
            self.prop[i] = 0.05 if x < 0.25 else (0.3 + 0.3 * r() if x < 0.7 else 0.6 + 0.3 * r())

    def _life(self, ep: int, etype: str, i: int, vals: tuple[Any, ...]) -> None:
        if ep < self.end_ep:
            self.life[bisect_right(self.month_ep, ep)].append((ep, etype, i, vals))

    # -- records --------------------------------------------------------------------------------

    def records(self) -> Iterator[_Rec]:
        """This practice's events in time order, one chunk (pre-period, then months) at a time."""
        pending: list[_Rec] = []
        for c in range(self.months + 1):
            out = pending
            add = self._adder(out)
            for ep, etype, i, vals in self.life[c]:
                add(ep, etype, i, vals)
            self.life[c] = []
            if c:
                self._month(c - 1, random.Random(f"{self.key}:month:{c - 1}"), add)
            out.sort()
            cut = bisect_left(out, (self.month_ep[c],))  # later chunks start at month_ep[c]
            yield from out[:cut]
            pending = out[cut:]

    def _adder(self, out: list[_Rec]) -> _Add:
        """Append a record with the next sequence number; drop what falls after the end."""
        append, end, pidx = out.append, self.end_ep, self.index

        def add(ep: int, etype: str, i: int, vals: tuple[Any, ...]) -> None:
            if ep < end:
                self.seq += 1
                append((ep, pidx, self.seq, etype, i, vals))

        return add

    def _month(self, k: int, rng: random.Random, add: _Add) -> None:
        """Activity anchored in month k (follow-ups may fall later; never earlier)."""
        r = rng.random
        n = self.n
        d_lo, d_hi = self.month_day[k], self.month_day[k + 1]
        ms, me = self.month_ep[k], self.month_ep[k + 1]
        prev = self.lo if k == 0 else self.target[k - 1]
        mid_share = (prev + self.target[k]) / 2
        adoption = _clamp((mid_share - 0.18) / 0.52)
        book_share = 0.10 + 0.20 * adoption
        pay_share = 0.05 + 0.15 * adoption
        # Portal actions come from this month's active users (expected share ``a`` of the
        # roster); choose their portal propensity so the practice-wide shares hit the targets.
        mid = (ms + me) // 2
        a = sum(p for x, p in zip(self.login0, self.prop, strict=True) if x is not None and x < mid)
        a /= n
        if a > 0:
            p_book = _clamp(
                book_share * (BOOK_P * (1 - a) + BOOK_ACTIVE_P * a) / (BOOK_ACTIVE_P * a)
            )
            p_pay = _clamp(pay_share / a)
        else:
            p_book = p_pay = 0.0
        p_book, p_pay = min(p_book, 0.95), min(p_pay, 0.95)
        to_ep, biz_time, any_time = self.to_ep, self.biz_time, self.any_time
        login0, prop, enrolled_ep = self.login0, self.prop, self.enrolled_ep
        new_id = self.new_id

        def after(lo_ep: int) -> int:
            """A waking instant in the rest of the month after ``lo_ep``."""
            start_d = d_lo if lo_ep <= ms else self.local(lo_ep)[0]
            pick = biz_time if r() < 0.55 else any_time  # most portal use is on weekdays
            ep = to_ep(*pick(r, start_d, d_hi))
            return ep if ep > lo_ep else lo_ep + 60 + int(r() * 7200)

        for i in range(n):
            fl = login0[i]
            can = fl is not None and fl < me
            earliest = max(ms, fl + 600) if can and fl is not None else me
            active = can and r() < prop[i]
            if active:
                sessions = 1
                while sessions < 5 and r() < 0.45:
                    sessions += 1
                for _ in range(sessions):
                    t = after(earliest)
                    self._login(r, add, i, t)
                    if r() < THREAD_P:
                        self._thread(r, add, i, t + 30 + int(r() * 300))
                    if r() < RECORD_P:
                        add(t + 30 + int(r() * 600), "record.viewed", i, ())
            if r() < VISIT_P:
                d, s = biz_time(r, d_lo, d_hi)
                add(to_ep(d, s), "patient.seen", i, (new_id("ENC"),))
                if r() < SURVEY_P:
                    ts = to_ep(*any_time(r, d + 1, d + 5))
                    en = enrolled_ep[i]
                    table = PORTAL_SCORES if en is not None and en <= ts else OTHER_SCORES
                    add(ts, "survey.response", i, (new_id("S"), _pick(r, table)))
            if r() < RESULT_P:
                self._result(r, add, i, d_lo, d_hi, active)
            if r() < (BOOK_ACTIVE_P if active else BOOK_P):
                kind = _pick(r, APPT_TYPES)
                if active and r() < p_book:
                    t = after(earliest)
                    self._login(r, add, i, t)
                    add(t, "appointment.booked", i, (new_id("A"), "portal", kind))
                else:
                    channel = "phone" if r() < 0.65 else "front_desk"
                    add(
                        to_ep(*biz_time(r, d_lo, d_hi)),
                        "appointment.booked",
                        i,
                        (new_id("A"), channel, kind),
                    )
            if r() < PAY_P:
                cents = max(500, int(rng.lognormvariate(8.7, 0.8)))
                if active and r() < p_pay:
                    t = after(earliest)
                    self._login(r, add, i, t)
                    add(t, "payment.made", i, (new_id("PAY"), cents, "USD", "portal"))
                else:
                    t = to_ep(*biz_time(r, d_lo, d_hi))
                    add(t, "payment.made", i, (new_id("PAY"), cents, "USD", _pick(r, OFFLINE_PAY)))
            if r() < REFILL_P:
                if active and r() < 0.65:
                    t = after(earliest)
                    self._login(r, add, i, t)
                    add(t, "refill.requested", i, (new_id("RX"), "portal"))
                else:
                    add(
                        to_ep(*biz_time(r, d_lo, d_hi)),
                        "refill.requested",
                        i,
                        (new_id("RX"), "phone"),
                    )
        # Calls: inbound volume falls as adoption grows (~35 % fewer at 65 % enrollment).
        factor = 1.0 - 0.35 * _clamp((mid_share - 0.18) / 0.47, 0.0, 1.1)
        for direction, rate, reasons in (
            ("inbound", INBOUND_PER_PATIENT * factor, IN_REASONS),
            ("outbound", OUTBOUND_PER_PATIENT, OUT_REASONS),
        ):
            lam = n * rate
            for _ in range(max(0, round(rng.gauss(lam, math.sqrt(lam))))):
                i = int(r() * n)
                d, s = biz_time(r, d_lo, d_hi)
                if direction == "inbound" and r() < 0.08:  # answering service, around opening
                    s = 7 * HOUR + r() * HOUR if r() < 0.5 else CLOSE + r() * 2 * HOUR
                add(to_ep(d, s), "phone.call", i, (new_id("C"), direction, _pick(r, reasons)))

    def _login(self, r: Callable[[], float], add: _Add, i: int, t: int) -> None:
        """A portal session starts shortly before the action at ``t``."""
        app = self.app_ep[i]
        channel = "mobile_app" if app is not None and app <= t and r() < 0.75 else "web"
        add(t - 30 - int(r() * 270), "portal.login", i, (channel,))

    def _result(
        self, r: Callable[[], float], add: _Add, i: int, d_lo: int, d_hi: int, active: bool
    ) -> None:
        d, s = self.biz_time(r, d_lo, d_hi)
        posted = self.to_ep(d, s)
        rid = self.new_id("R")
        add(posted, "result.posted", i, (rid,))
        fl = self.login0[i]
        usable = fl is not None and fl < posted
        viewer = usable and (r() < 0.93 if active else r() < 0.08)
        if viewer:
            if r() < 0.82:  # same local day, usually within a few hours
                sv = s + 600 + (LATE - s - 600) * r() * r()
                seen = self.to_ep(d, sv)
            else:
                seen = self.to_ep(*self.any_time(r, d + 1, d + 7))
            self._login(r, add, i, seen)
            add(seen, "result.viewed", i, (rid,))
        if r() < (0.25 if viewer else 0.85):
            at = self.add_business(d, s, 30 + r() * 1500)
            if at is not None:
                tc = self.to_ep(*at)
                add(tc, "result.staff_contacted", i, (rid,))
                if r() < 0.7:
                    add(tc, "phone.call", i, (self.new_id("C"), "outbound", "results"))

    def _thread(self, r: Callable[[], float], add: _Add, i: int, t: int) -> None:
        """A patient thread: messages, maybe an auto-acknowledgement, staff replies, follow-ups."""
        tid = self.new_id("T")
        category = _pick(r, CATEGORIES)
        if category == "clinical":
            pool = "nurse" if r() < 0.75 else "provider"
        else:
            pool = POOLS[category]
        for _round in range(3):
            add(t, "message.sent", i, (tid, self.new_id("M"), category))
            d, s = self.local(t)
            open_now = self.is_open(d, s)
            if self.autoreply and not open_now and r() < 0.85:
                add(
                    t + 20 + int(r() * 160),
                    "message.replied",
                    i,
                    (tid, self.new_id("M"), pool, True),
                )
            if r() < 0.03:  # never answered
                return
            reply = self._reply_time(r, d, s, t, open_now)
            if reply is None:
                return
            if r() < 0.12 and reply - t > 600:  # patient writes again before anyone replies
                for _ in range(1 + (r() < 0.4)):
                    tx = t + 60 + int(r() * (reply - t - 120))
                    add(tx, "message.sent", i, (tid, self.new_id("M"), category))
            add(reply, "message.replied", i, (tid, self.new_id("M"), pool, False))
            if r() >= 0.2:
                return
            t = reply + 600 + int(r() * 2 * DAY)

    def _reply_time(
        self, r: Callable[[], float], d: int, s: float, t: int, open_now: bool
    ) -> int | None:
        """Staff reply: mostly within hours the same day, some over a business day late."""
        if not open_now and r() < 0.08:  # an on-call clinician answers out of hours
            return t + 1200 + int(r() * 3 * HOUR)
        x = r()
        if x < 0.70:
            minutes = 10 + r() * 170
        elif x < 0.90:
            minutes = 180 + r() * 360
        elif x < 0.98:
            minutes = 540 + r() * 540
        else:
            minutes = 1080 + r() * 1080
        at = self.add_business(d, s, minutes)
        return None if at is None else max(t + 60, self.to_ep(*at))


# -- invalid input ------------------------------------------------------------------------------

BAD_KINDS = (
    "missing_field",
    "bad_enum",
    "unknown_event_type",
    "non_positive_amount",
    "score_out_of_range",
    "bad_timestamp",
    "wrong_type",
)
_ENVELOPE = ("event_id", "event_type", "occurred_at", "practice_id", "patient_id")


def _make_bad(rng: random.Random, src: dict[str, Any], n: int) -> tuple[str, dict[str, Any]]:
    """An event ``validate_event`` refuses, modelled on ``src`` (keeps practice_id and event_id)."""
    kind = BAD_KINDS[rng.randrange(len(BAD_KINDS))]
    bad_id = f"{src['practice_id']}-BAD{n:06d}"
    env = {k: src[k] for k in _ENVELOPE}
    env["event_id"] = bad_id
    spec = event_types()[src["event_type"]]
    if kind == "missing_field":
        bad = dict(src, event_id=bad_id)
        required = [f.name for f in spec.fields if not f.optional] + ["occurred_at", "patient_id"]
        del bad[rng.choice(required)]
    elif kind == "bad_enum":
        enums = [f.name for f in spec.fields if f.kind == "enum"]
        if enums:
            bad = dict(src, event_id=bad_id)
            bad[rng.choice(enums)] = rng.choice(("unknown", "EMAIL", "fax", ""))
        else:
            bad = dict(env, event_type="portal.login", channel="desktop")
    elif kind == "unknown_event_type":
        name = rng.choice(("portal.logout", "message.read", "Portal.Login", "lab.ordered"))
        bad = dict(env, event_type=name)
    elif kind == "non_positive_amount":
        bad = dict(
            env,
            event_type="payment.made",
            payment_id=f"{bad_id}-PAY",
            amount_cents=rng.choice((0, -1, -2500)),
            currency="USD",
            channel="portal",
        )
    elif kind == "score_out_of_range":
        bad = dict(
            env,
            event_type="survey.response",
            survey_id=f"{bad_id}-S",
            score=rng.choice((0, 6, 10, -1)),
        )
    elif kind == "bad_timestamp":
        naive = src["occurred_at"].removesuffix("Z")
        garbage = (
            naive,
            naive.replace("T", " "),
            "yesterday",
            "2026-02-30T10:00:00Z",
            "",
            1767225600,
        )
        bad = dict(src, event_id=bad_id, occurred_at=rng.choice(garbage))
    else:  # wrong_type
        bad = dict(src, event_id=bad_id, patient_id=rng.randrange(10_000, 99_999))
    return kind, bad


# -- public API ---------------------------------------------------------------------------------


def simulate_labelled(spec: SimulationSpec) -> Iterator[tuple[str, dict[str, Any]]]:
    """Events in time order, each labelled ``valid``, ``duplicate`` or the kind of invalid line.

    Invalid lines and duplicates come right after the valid event they are modelled on, from their
    own RNG, so the valid events are the same for a seed whatever ``bad_fraction`` is.
    """
    practices = [_Practice(spec, i) for i in range(spec.practices)]
    merged = heapq.merge(*(p.records() for p in practices))
    bad_p, dup_p = spec.bad_fraction, spec.dup_fraction
    inject = bad_p > 0 or dup_p > 0
    rng = random.Random(f"portal-pulse-sim:{spec.seed}:invalid")
    r = rng.random
    n_bad = 0
    fromts = datetime.fromtimestamp
    for ep, pidx, seq, etype, i, vals in merged:
        p = practices[pidx]
        obj = to_flat_json(
            RawEvent(
                f"{p.pid}-E{seq:07d}",
                etype,
                fromts(ep, UTC),
                p.pid,
                p.patient_ids[i],
                dict(zip(FIELDS[etype], vals, strict=True)),
            )
        )
        yield VALID, obj
        if inject:
            if r() < dup_p:
                yield DUPLICATE, dict(obj)
            while r() < bad_p:  # geometric: expected share of bad lines = bad_fraction
                n_bad += 1
                yield _make_bad(rng, obj, n_bad)


def simulate(spec: SimulationSpec) -> Iterator[dict[str, Any]]:
    """Flat SPEC §2 event dicts in ``occurred_at`` order (fixed tie order): a recorded stream."""
    for _, obj in simulate_labelled(spec):
        yield obj


def simulate_to_file(
    spec: SimulationSpec,
    path: str | Path,
    *,
    progress: ProgressFactory | None = None,
    arrival: str = ORDERED,
) -> SimulationSummary:
    """Write the stream as JSON Lines and count what went in, per type and per invalid kind.

    ``arrival`` picks the line order (``ARRIVALS``); the lines themselves are the same in every
    order, and ``ordered`` is the ``occurred_at`` order of ``simulate``.
    """
    if arrival not in ARRIVALS:
        raise ValueError(f"arrival must be one of {', '.join(ARRIVALS)}, got {arrival!r}")
    summary = SimulationSummary(path=Path(path), arrival=arrival)
    by_type: Counter[str] = Counter()
    bad_by_kind: Counter[str] = Counter()
    tally = _LagTally() if arrival != ORDERED else None
    started = time.perf_counter()
    bar = progress("simulating", None) if progress else None

    def labelled() -> Iterator[tuple[str, dict[str, Any]]]:
        if tally is None:
            yield from simulate_labelled(spec)
            return
        for a in simulate_arrivals(spec, arrival):
            tally.add(a)
            yield a.label, a.obj

    def objects() -> Iterator[dict[str, Any]]:
        for n, (label, obj) in enumerate(labelled(), start=1):
            if bar is not None and n % STEP == 0:
                bar.update(STEP)
            if label == VALID:
                summary.valid += 1
                by_type[obj["event_type"]] += 1
                at = obj["occurred_at"]  # one ISO format throughout, so text order is time order
                if summary.first_at is None or at < summary.first_at:
                    summary.first_at = at
                if summary.last_at is None or at > summary.last_at:
                    summary.last_at = at
            elif label == DUPLICATE:
                summary.duplicates += 1
            else:
                summary.bad += 1
                bad_by_kind[label] += 1
            yield obj

    try:
        write_jsonl(path, objects())
    finally:
        if bar is not None:
            bar.close()
    summary.seconds = time.perf_counter() - started
    summary.by_type = dict(sorted(by_type.items()))
    summary.bad_by_kind = dict(sorted(bad_by_kind.items()))
    if tally is not None:
        summary.lags = tally.stats()
        summary.reordered = tally.reordered
    return summary


# -- arrival order (SPEC §7.1) ------------------------------------------------------------------
#
# Lag bounds per lag class, in seconds: (lowest, highest). The class of an event follows from its
# SPEC §2 source (``schemas.catalogue.source_of``) and, within the portal, from what sends it: a
# phone that was offline (mobile-app logins and installs, and patient messages written in the app,
# whose replies then often arrive first) or a staff app that syncs late (staff replies, some of
# them after a deadline they met). Every bound is far below SPEC §7.1's 30-day horizon.

PORTAL_JITTER_S = 30.0  # several portal servers forward their events a few seconds apart
MOBILE_OFFLINE_SHARE = 0.05  # mobile-app events uploaded when the phone is back online
MOBILE_MESSAGE_SHARE = 0.05  # patient messages whose event the app uploads late
MOBILE_OFFLINE_S = (120.0, 12.0 * HOUR)
STAFF_APP_SHARE = 0.10  # staff replies from an app that syncs late
STAFF_APP_S = (30.0, 600.0)
EHR_S = (60.0, 6.0 * HOUR)  # HL7 interface lag
BATCH_HOUR = 2  # billing arrives in a nightly batch at the next 02:00 in the practice's zone
PHONE_S = (60.0, 900.0)  # call records are exported after the call
SURVEY_S = (1.0 * DAY, 5.0 * DAY)
DUPLICATE_AFTER_S = (1.0, 120.0)  # a re-delivery comes shortly after its original
INVALID_AFTER_S = (0.0, 30.0)  # a broken line comes with the event before it

LAG_BOUNDS: dict[str, tuple[float, float]] = {
    "portal": (0.0, PORTAL_JITTER_S),
    "mobile_offline": MOBILE_OFFLINE_S,
    "staff_app": STAFF_APP_S,
    "ehr": EHR_S,
    "billing": (0.0, 25.0 * HOUR),  # up to a day, and an hour more across a DST change
    "phone": PHONE_S,
    "survey": SURVEY_S,
    "on_time": (0.0, 0.0),  # every non-portal source with ``portal-jitter``
}
"""Per lag class: the bounds of ``Arrival.lag_us`` in seconds. Duplicates and invalid lines are
placed relative to their original instead (``DUPLICATE_AFTER_S``, ``INVALID_AFTER_S``)."""

_MOBILE_TYPES = frozenset({"app.installed"})


@dataclass(frozen=True, slots=True)
class Arrival:
    """One line of a recording and when a pipeline receives it.

    ``label`` is ``valid``, ``duplicate`` or the invalid kind; ``lag_class`` is a ``LAG_BOUNDS``
    key, ``duplicate`` or ``invalid``; ``lag_us`` is ``at_us`` minus ``occurred_at`` (None for an
    invalid line) and ``anchor_us`` the arrival of the original a duplicate or invalid line follows.
    """

    obj: dict[str, Any]
    label: str
    at_us: int
    lag_class: str
    source: str | None
    lag_us: int | None
    anchor_us: int | None = None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = 1_000_000
_MICROSECOND = timedelta(microseconds=1)


def _us(at: datetime) -> int:
    """Microseconds since the epoch of an aware instant (exact, unlike ``timestamp()``)."""
    return (at - _EPOCH) // _MICROSECOND


class ArrivalModel:
    """Draws each line's arrival instant; a pure function of the seed and the line.

    Each event's draws come from a hash of (seed, practice, event_id), not from a shared RNG, so an
    event arrives at the same instant whatever else the recording holds (``bad_fraction`` does not
    move the valid events) and ``ordered`` output needs no RNG at all.
    """

    def __init__(
        self,
        seed: int = 1,
        mode: str = REALISTIC,
        zones: Mapping[str, tzinfo] | None = None,
    ) -> None:
        if mode not in (REALISTIC, PORTAL_JITTER):
            raise ValueError(f"no arrival model for {mode!r}")
        self.mode = mode
        self.zones = dict(zones or {})
        self._key = hashlib.blake2b(f"portal-pulse-sim:{seed}:arrival".encode()).digest()

    def _draws(self, *parts: str) -> tuple[float, float]:
        """Two uniforms in [0, 1) for this line, keyed by the seed."""
        data = "\x1f".join(parts).encode("utf-8", "surrogatepass")
        digest = hashlib.blake2b(data, digest_size=16, key=self._key).digest()
        return (
            int.from_bytes(digest[:8], "big") / 2**64,
            int.from_bytes(digest[8:], "big") / 2**64,
        )

    def _lag(self, obj: Mapping[str, Any], etype: str, occurred: datetime) -> tuple[str, float]:
        """The lag class and lag in seconds of a first delivery."""
        u, v = self._draws(str(obj.get("practice_id")), str(obj.get("event_id")))
        source = source_of(etype)
        if source == "portal":
            if self.mode == PORTAL_JITTER:
                return "portal", v * PORTAL_JITTER_S
            if etype == "message.replied" and not obj.get("automated") and u < STAFF_APP_SHARE:
                return "staff_app", _between(STAFF_APP_S, v)
            mobile = etype in _MOBILE_TYPES or (
                etype == "portal.login" and obj.get("channel") == "mobile_app"
            )
            if (mobile and u < MOBILE_OFFLINE_SHARE) or (
                etype == "message.sent" and u < MOBILE_MESSAGE_SHARE
            ):
                return "mobile_offline", _log_between(MOBILE_OFFLINE_S, v)
            return "portal", v * PORTAL_JITTER_S
        if self.mode == PORTAL_JITTER:
            return "on_time", 0.0
        if source == "ehr":
            return "ehr", _log_between(EHR_S, v)
        if source == "billing":
            zone = self.zones.get(str(obj.get("practice_id")), UTC)
            local = occurred.astimezone(zone)
            batch = local.replace(hour=BATCH_HOUR, minute=0, second=0, microsecond=0)
            if batch <= local:
                batch = (local + timedelta(days=1)).replace(
                    hour=BATCH_HOUR, minute=0, second=0, microsecond=0
                )
            return "billing", (batch - occurred.astimezone(UTC)).total_seconds()
        if source == "phone":
            return "phone", _between(PHONE_S, v)
        return "survey", _between(SURVEY_S, v)

    def first(self, obj: dict[str, Any], etype: str, occurred: datetime) -> Arrival:
        """A valid event's first delivery: ``occurred_at`` plus its source's lag."""
        lag_class, lag = self._lag(obj, etype, occurred)
        lag_us = round(lag * _SECOND)
        return Arrival(obj, VALID, _us(occurred) + lag_us, lag_class, source_of(etype), lag_us)

    def again(self, obj: dict[str, Any], etype: str, occurred: datetime, original: int) -> Arrival:
        """A re-delivery (same practice and event_id), shortly after the original arrived."""
        _, v = self._draws("duplicate", str(obj.get("practice_id")), str(obj.get("event_id")))
        at = original + round(_between(DUPLICATE_AFTER_S, v) * _SECOND)
        src = source_of(etype)
        return Arrival(obj, DUPLICATE, at, "duplicate", src, at - _us(occurred), original)

    def broken(self, obj: Any, label: str, anchor: int) -> Arrival:
        """An invalid line, shortly after the valid event before it (the one it is made from)."""
        text = json.dumps(obj, sort_keys=True, default=str)
        _, v = self._draws("invalid", text)
        at = anchor + round(_between(INVALID_AFTER_S, v) * _SECOND)
        return Arrival(obj, label, at, "invalid", None, None, anchor)


def _between(bounds: tuple[float, float], u: float) -> float:
    lo, hi = bounds
    return lo + (hi - lo) * u


def _log_between(bounds: tuple[float, float], u: float) -> float:
    """Log-uniform: as many lags of minutes as of hours, which is how interface backlogs look."""
    lo, hi = bounds
    return lo * (hi / lo) ** u


def _in_arrival_order(placed: Iterable[Arrival], floor: Callable[[], int]) -> Iterator[Arrival]:
    """Re-emit ``placed`` by arrival, ties in input order, holding back only what may still move.

    ``floor()`` is a lower bound on the arrival of every line not yet placed: each line with an
    arrival at or below it is final. With input in ``occurred_at`` order that is the last valid
    event's ``occurred_at``, so only about the longest lag's worth of lines is held.
    """
    heap: list[tuple[int, int, Arrival]] = []
    for n, a in enumerate(placed):
        low = floor()
        while heap and heap[0][0] <= low:
            yield heapq.heappop(heap)[2]
        heapq.heappush(heap, (a.at_us, n, a))
    while heap:
        yield heapq.heappop(heap)[2]


def _place(
    labelled: Iterable[tuple[str | None, Any]], model: ArrivalModel, low: list[int]
) -> Iterator[Arrival]:
    """Each line's ``Arrival``, in input order; ``low[0]`` tracks the latest valid occurred_at.

    A ``None`` label means "work it out": invalid if ``validate_event`` refuses the line, a
    duplicate if its (practice_id, event_id) came before, else valid. The simulator's labels are
    trusted (its lines are checked by its tests), which halves the cost of a large recording.
    """
    originals: dict[tuple[str, str], int] = {}
    last = 0  # arrival of the latest valid event: where an invalid line made from it goes
    for label, obj in labelled:
        if label is None:
            try:
                raw = validate_event(obj)
            except InvalidEvent as exc:
                yield model.broken(obj, exc.reason, last)
                continue
            key, etype, occurred = (raw.practice_id, raw.event_id), raw.event_type, raw.occurred_at
        elif label in (VALID, DUPLICATE):
            key = (obj["practice_id"], obj["event_id"])
            etype, occurred = obj["event_type"], datetime.fromisoformat(obj["occurred_at"])
        else:
            yield model.broken(obj, label, last)
            continue
        if label == DUPLICATE:  # the simulator writes a duplicate right after its original
            yield model.again(obj, etype, occurred, last)
            continue
        original = originals.get(key) if label is None else None
        if original is not None:
            yield model.again(obj, etype, occurred, original)
            continue
        a = model.first(obj, etype, occurred)
        last = a.at_us
        if label is None:
            originals[key] = last
        low[0] = max(low[0], _us(occurred))
        yield a


def arrivals(
    objects: Iterable[Any],
    *,
    seed: int = 1,
    mode: str = REALISTIC,
    zones: Mapping[str, tzinfo] | None = None,
) -> list[Arrival]:
    """Every line of a recording with its arrival, in arrival order (ties in input order).

    ``objects`` is any recording's parsed lines in any order: a line ``validate_event`` refuses
    arrives just after the valid event before it, a repeat of an (practice_id, event_id) just
    after its first delivery. ``zones`` (practice → zone) places the nightly billing batch at
    02:00 local; practices not in it use UTC.
    """
    placed = list(_place(((None, obj) for obj in objects), ArrivalModel(seed, mode, zones), [0]))
    return sorted(placed, key=lambda a: a.at_us)  # stable: ties keep the input order


def realistic_order(
    objects: Iterable[Any],
    *,
    seed: int = 1,
    mode: str = REALISTIC,
    zones: Mapping[str, tzinfo] | None = None,
) -> list[Any]:
    """The lines of a recording in the order a pipeline would receive them (see ``arrivals``).

    For tests and benchmarks: any ordered recording becomes a late, out-of-order one, with the
    same lines.
    """
    return [a.obj for a in arrivals(objects, seed=seed, mode=mode, zones=zones)]


def spec_zones(spec: SimulationSpec) -> dict[str, tzinfo]:
    """Each simulated practice's time zone, as the simulator assigns them."""
    return {
        f"P{i + 1:03d}": ZoneInfo(spec.timezones[i % len(spec.timezones)])
        for i in range(spec.practices)
    }


def simulate_arrivals(spec: SimulationSpec, mode: str = REALISTIC) -> Iterator[Arrival]:
    """``simulate_labelled`` in arrival order, streamed: equal to ``arrivals`` of the ordered
    stream with the spec's seed and zones, holding only the lines still in flight."""
    model = ArrivalModel(spec.seed, mode, spec_zones(spec))
    low = [0]
    placed = _place(simulate_labelled(spec), model, low)
    return _in_arrival_order(placed, lambda: low[0])


class _LagTally:
    """Per source lags of first deliveries, and how many lines came after a later-stamped one."""

    def __init__(self) -> None:
        self.lags: dict[str, array[int]] = {}
        self.reordered = 0
        self._latest = -(2**63)

    def add(self, a: Arrival) -> None:
        if a.lag_us is None or a.source is None:
            return
        occurred = a.at_us - a.lag_us
        if occurred < self._latest:
            self.reordered += 1
        else:
            self._latest = occurred
        if a.label == VALID:
            self.lags.setdefault(a.source, array("q")).append(a.lag_us)

    def stats(self) -> dict[str, LagStats]:
        out: dict[str, LagStats] = {}
        for source, lags in sorted(self.lags.items()):
            ordered = sorted(lags)
            n = len(ordered)
            mid = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
            out[source] = LagStats(n, mid / _SECOND, ordered[-1] / _SECOND)
        return out
