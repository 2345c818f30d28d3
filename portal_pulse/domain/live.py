"""Live rolling metrics per practice: today and the trailing seven days, on event time.

Counters are kept per practice-local day and pruned after a week, so they never depend on
Faust's wall-clock window expiry. Distinct active patients use a histogram of each patient's last
login day (the local day of the latest login): active over a window = patients whose last login
falls in it, exactly. Every patient and thread lives in one partition, so per-partition figures
add up across partitions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any

from portal_pulse.domain.followups import FollowupMachine, Followups
from portal_pulse.domain.instants import from_us
from portal_pulse.domain.records import route_staff_pool
from schemas.model import CleanEvent

__all__ = ["COUNTERS", "POOLS", "LiveMetrics", "LiveRow"]

COUNTERS = ("logins", "patient_messages", "portal_bookings", "total_bookings", "inbound_calls")
POOLS = ("provider", "nurse", "front_desk", "billing")
WINDOW_DAYS = 7
# Event types that move a day counter.
_COUNTED = {
    "portal.login": "logins",
    "message.sent": "patient_messages",
    "appointment.booked": "total_bookings",
    "phone.call": "inbound_calls",
}


@lru_cache(maxsize=64)
def _oldest_kept(day: str) -> str:
    """The oldest day a counter keeps once ``day`` has events (once per day, not per event)."""
    return (date.fromisoformat(day) - timedelta(days=WINDOW_DAYS + 1)).isoformat()


# Event types that move a stored live figure (a counter or an open thread).
_LIVE_TYPES = frozenset({*_COUNTED, "message.replied"})


@dataclass(frozen=True, slots=True)
class LiveRow:
    practice_id: str
    partition: int
    day: date
    today: dict[str, int]
    trailing_7d: dict[str, int]
    open_by_pool: dict[str, int]
    as_of: datetime


class LiveMetrics:
    """Pure aggregation over a JSON-able store (``get``/``put``/``delete`` with a partition).

    Stored, each under its own key and stamped with the input offset it reflects: the day
    counters of a practice on a partition (``c|``) and each open thread's staff pool (``t|``).
    Each patient's last login is the follow-up state's (one record per patient): the engine
    reports every follow-up state it writes or rebuilds to ``on_state_change``, which keeps the
    distinct-active histogram. That histogram and the open-thread counts are derived, rebuilt
    after a restore (``rebuild``, then the engine's rebuild), so every stored figure changes in
    exactly one key and a re-read input never counts twice.
    """

    def __init__(self, store: Any, local_date: Callable[[str, datetime], date]) -> None:
        self.store = store
        self.local_date = local_date
        self.touched: dict[int, set[str]] = {}
        # (practice, partition) → day → patients whose last login was that day
        self._last_login: dict[tuple[str, int], dict[str, int]] = {}
        # (practice, partition) → staff pool → threads waiting for a staff reply
        self._open: dict[tuple[str, int], dict[str, int]] = {}

    def rebuild(self, partition: int) -> None:
        """Derive the open counts of a partition from its stored keys, and forget its histogram
        (the engine's rebuild of the partition reports every follow-up state again)."""
        for derived in (self._last_login, self._open):
            for key in [k for k in derived if k[1] == partition]:
                del derived[key]
        for key, value in self.store.items():
            if value.get("p", 0) != partition or value.get("s") is None:
                continue
            if key.startswith("t|"):
                practice, pool = value["s"]
                opened = self._open.setdefault((practice, partition), {})
                opened[pool] = opened.get(pool, 0) + 1

    def _fresh(self, key: str, offset: int | None) -> tuple[bool, dict[str, Any] | None]:
        """Whether the input at ``offset`` is new to ``key``, and the key's stored value."""
        value = self.store.get(key)
        if offset is not None and value is not None and value.get("o", -1) >= offset:
            return False, value
        return True, value if value is not None and value.get("s") is not None else None

    def _put(self, key: str, state: Any, partition: int, offset: int | None) -> None:
        value: dict[str, Any] = {"p": partition, "s": state}
        if offset is not None:
            value["o"] = offset
        self.store.put(key, value, partition)

    def on_state_change(
        self, machine: str, key: str, partition: int, before: object, after: object
    ) -> None:
        """The engine wrote (or rebuilt, ``before`` None) a state: follow the last logins."""
        if machine != FollowupMachine.name:
            return
        old = before.record.last_login_at if isinstance(before, Followups) else None
        new = after.record.last_login_at if isinstance(after, Followups) else None
        if old == new:
            return
        practice = key.rpartition("|")[0]
        old_day = None if old is None else self._day(practice, old)
        new_day = None if new is None else self._day(practice, new)
        if old_day == new_day:
            return
        hist = self._last_login.setdefault((practice, partition), {})
        if old_day is not None and hist.get(old_day, 0) > 0:
            hist[old_day] -= 1
        if new_day is not None:
            hist[new_day] = hist.get(new_day, 0) + 1

    def _day(self, practice: str, at: int) -> str:
        return self.local_date(practice, from_us(at)).isoformat()

    def apply(self, event: CleanEvent, partition: int = 0, offset: int | None = None) -> None:
        """Counters and open threads; the engine reports logins (``on_state_change``)."""
        practice, kind = event.practice_id, event.event_type
        if kind not in _LIVE_TYPES:
            self.touched.setdefault(partition, set()).add(practice)
            return
        day = self.local_date(practice, event.occurred_at).isoformat()
        if kind == "message.sent":
            tkey = f"t|{practice}|{event.get('thread_id')}"
            fresh, opened = self._fresh(tkey, offset)
            if fresh and opened is None:
                pool = route_staff_pool(event.get("category", "other"))
                self._put(tkey, [practice, pool], partition, offset)
                counts = self._open.setdefault((practice, partition), {})
                counts[pool] = counts.get(pool, 0) + 1
        elif kind == "message.replied" and not event.get("automated"):
            tkey = f"t|{practice}|{event.get('thread_id')}"
            fresh, opened = self._fresh(tkey, offset)
            if fresh and opened is not None:
                pool = opened["s"][1]
                counts = self._open.setdefault((practice, partition), {})
                counts[pool] = max(0, counts.get(pool, 0) - 1)
                self.store.delete(tkey, partition, offset)
        counter = _COUNTED.get(kind)
        if counter is not None:
            self._count(practice, event, day, partition, offset)
        self.touched.setdefault(partition, set()).add(practice)

    def _count(
        self, practice: str, event: CleanEvent, day: str, partition: int, offset: int | None
    ) -> None:
        ckey = f"c|{practice}|{partition}"
        fresh, value = self._fresh(ckey, offset)
        if not fresh:
            return
        c = value["s"] if value else {"days": {}}
        days = c["days"].setdefault(day, dict.fromkeys(COUNTERS, 0))
        kind = event.event_type
        if kind == "portal.login":
            days["logins"] += 1
        elif kind == "message.sent":
            days["patient_messages"] += 1
        elif kind == "appointment.booked":
            days["total_bookings"] += 1
            if event.get("channel") == "portal":
                days["portal_bookings"] += 1
        elif kind == "phone.call" and event.get("direction") == "inbound":
            days["inbound_calls"] += 1
        self._prune(c, day)
        self._put(ckey, c, partition, offset)

    @staticmethod
    def _prune(c: dict[str, Any], day: str) -> None:
        oldest = _oldest_kept(day)
        for key in [d for d in c["days"] if d < oldest]:
            del c["days"][key]

    def row(self, practice: str, partition: int, now: datetime) -> LiveRow:
        """Figures for the practice-local day of ``now`` (the partition's event-time clock)."""
        stored = self.store.get(f"c|{practice}|{partition}")
        c = stored["s"] if stored and stored.get("s") is not None else {"days": {}}
        last_login = self._last_login.get((practice, partition), {})
        opened = self._open.get((practice, partition), {})
        day = self.local_date(practice, now)
        start = (day - timedelta(days=WINDOW_DAYS - 1)).isoformat()
        today_key = day.isoformat()
        today = dict(c["days"].get(today_key, dict.fromkeys(COUNTERS, 0)))
        window = {
            k: sum(v[k] for d, v in c["days"].items() if start <= d <= today_key) for k in COUNTERS
        }
        today["active_patients"] = last_login.get(today_key, 0)
        window["active_patients"] = sum(n for d, n in last_login.items() if start <= d <= today_key)
        open_by_pool = {pool: opened.get(pool, 0) for pool in POOLS}
        return LiveRow(practice, partition, day, today, window, open_by_pool, now)

    def drain(self, partition: int, now: datetime) -> list[LiveRow]:
        """Rows for the practices changed on this partition since the last drain."""
        practices = self.touched.pop(partition, set())
        return [self.row(p, partition, now) for p in sorted(practices)]
