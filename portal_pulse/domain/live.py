"""Live rolling metrics per practice: today and the trailing seven days, on event time.

Counters are kept per practice-local day and pruned after a week, so they never depend on
Faust's wall-clock window expiry. Distinct active patients use a histogram of each patient's last
login day: active over a window = patients whose last login falls in it, exactly. Every patient
and thread lives in one partition, so per-partition figures add up across partitions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from portal_pulse.domain.records import route_staff_pool
from schemas.model import CleanEvent

__all__ = ["COUNTERS", "POOLS", "LiveMetrics", "LiveRow"]

COUNTERS = ("logins", "patient_messages", "portal_bookings", "total_bookings", "inbound_calls")
POOLS = ("provider", "nurse", "front_desk", "billing")
WINDOW_DAYS = 7


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
    """Pure aggregation over a JSON-able store (``get``/``put``/``delete`` with a partition)."""

    def __init__(self, store: Any, local_date: Callable[[str, datetime], date]) -> None:
        self.store = store
        self.local_date = local_date
        self.touched: dict[int, set[str]] = {}

    def _counters(self, practice: str) -> dict[str, Any]:
        value = self.store.get(f"c|{practice}")
        return value["s"] if value else {"days": {}, "last_login": {}, "open": {}}

    def apply(self, event: CleanEvent, partition: int = 0) -> None:
        practice, kind = event.practice_id, event.event_type
        day = self.local_date(practice, event.occurred_at).isoformat()
        c = self._counters(practice)
        days = c["days"].setdefault(day, dict.fromkeys(COUNTERS, 0))
        if kind == "portal.login":
            days["logins"] += 1
            pkey = f"p|{practice}|{event.patient_pseudonym}"
            prev = self.store.get(pkey)
            prev_day = prev["s"] if prev else None
            if prev_day is None or day > prev_day:
                if prev_day is not None and prev_day in c["last_login"]:
                    c["last_login"][prev_day] -= 1
                c["last_login"][day] = c["last_login"].get(day, 0) + 1
                self.store.put(pkey, {"p": partition, "s": day}, partition)
        elif kind == "message.sent":
            days["patient_messages"] += 1
            tkey = f"t|{practice}|{event.get('thread_id')}"
            if self.store.get(tkey) is None:
                pool = route_staff_pool(event.get("category", "other"))
                self.store.put(tkey, {"p": partition, "s": pool}, partition)
                c["open"][pool] = c["open"].get(pool, 0) + 1
        elif kind == "message.replied" and not event.get("automated"):
            tkey = f"t|{practice}|{event.get('thread_id')}"
            opened = self.store.get(tkey)
            if opened is not None:
                pool = opened["s"]
                c["open"][pool] = max(0, c["open"].get(pool, 0) - 1)
                self.store.delete(tkey, partition)
        elif kind == "appointment.booked":
            days["total_bookings"] += 1
            if event.get("channel") == "portal":
                days["portal_bookings"] += 1
        elif kind == "phone.call" and event.get("direction") == "inbound":
            days["inbound_calls"] += 1
        self._prune(c, day)
        self.store.put(f"c|{practice}", {"p": partition, "s": c}, partition)
        self.touched.setdefault(partition, set()).add(practice)

    @staticmethod
    def _prune(c: dict[str, Any], day: str) -> None:
        oldest = (date.fromisoformat(day) - timedelta(days=WINDOW_DAYS + 1)).isoformat()
        for key in [d for d in c["days"] if d < oldest]:
            del c["days"][key]
        for key in [d for d, n in c["last_login"].items() if d < oldest or n <= 0]:
            del c["last_login"][key]

    def row(self, practice: str, partition: int, now: datetime) -> LiveRow:
        """Figures for the practice-local day of ``now`` (the partition's event-time clock)."""
        c = self._counters(practice)
        day = self.local_date(practice, now)
        start = (day - timedelta(days=WINDOW_DAYS - 1)).isoformat()
        today_key = day.isoformat()
        today = dict(c["days"].get(today_key, dict.fromkeys(COUNTERS, 0)))
        window = {
            k: sum(v[k] for d, v in c["days"].items() if start <= d <= today_key) for k in COUNTERS
        }
        today["active_patients"] = c["last_login"].get(today_key, 0)
        window["active_patients"] = sum(
            n for d, n in c["last_login"].items() if start <= d <= today_key
        )
        open_by_pool = {pool: c["open"].get(pool, 0) for pool in POOLS}
        return LiveRow(practice, partition, day, today, window, open_by_pool, now)

    def drain(self, partition: int, now: datetime) -> list[LiveRow]:
        """Rows for the practices changed on this partition since the last drain."""
        practices = self.touched.pop(partition, set())
        return [self.row(p, partition, now) for p in sorted(practices)]
