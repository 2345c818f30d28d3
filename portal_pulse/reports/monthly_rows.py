"""Keep ``monthly_portal_performance_rows`` equal to the computing view (migration 0010).

BI tools and ``portal-pulse dashboard`` read ``monthly_portal_performance``, which reads the
stored rows; ``monthly_portal_performance_computed`` is the one definition of each row. A row of
``events``, ``alerts`` or ``message_responses`` (the tables the monthly rollup is fed from)
changes figures of its own practice only (every part of the view is grouped by practice, and
patient keys hash the practice), but not only of its own month: a result viewed in March counts
in the month it was posted, a late enrolment moves every later month's enrolled total, a month's
calls move the next month's change. So a practice whose rows were written is refreshed whole:
every month of it, which costs about what one month costs (the view computes every month of a
practice to answer for one: window functions; benchmarks/README.md). A ``practices`` change (a
zone, a look-back, the default row) can move any practice: everything is refreshed.

A refresh is two statements run in ClickHouse: the computing view's rows of those practices are
inserted with the server's time taken just before (``refreshed_at``, the table's version), then
every stored row of those practices older than that time, which the computation did not give, is
written again as deleted. A refresh that began later always wins, whichever process ran it, and
any insert finished before a refresh began is in its rows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client

from portal_pulse.reports.rollup import FEEDS

__all__ = ["FEEDING_TABLES", "MonthlyRows", "RefreshResult", "refresh_monthly_rows"]

logger = logging.getLogger(__name__)

FEEDING_TABLES = frozenset(source for source, _final in FEEDS.values())
"""The base tables whose rows change monthly figures (the rollup's feeds read them)."""

COMPUTED = "monthly_portal_performance_computed"
ROWS = "monthly_portal_performance_rows"
SLOW_SECONDS = 1.0
"""A refresh slower than this is logged (at stop every refresh is)."""


@dataclass(frozen=True)
class RefreshResult:
    rows: int  # practice-months written from the computing view
    deleted: int  # practice-months it no longer has, written as deleted
    seconds: float


def refresh_monthly_rows(
    client: Client,
    practice_ids: Collection[str] | None = None,
    months: tuple[str, str] | None = None,
) -> RefreshResult:
    """Write the computing view's rows of ``practice_ids`` (None: every practice), optionally
    only ``months`` (first, last, 'YYYY-MM', inclusive), into the stored table."""
    started = time.monotonic()
    if practice_ids is not None and not practice_ids:
        return RefreshResult(0, 0, 0.0)
    conditions: list[str] = []
    params: dict[str, Any] = {}
    if practice_ids is not None:
        conditions.append("practice_id IN {ids:Array(String)}")
        params["ids"] = sorted(practice_ids)
    if months is not None:
        conditions.append("month BETWEEN {first:String} AND {last:String}")
        params["first"], params["last"] = months
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    # The server's clock, read before the computation: the version of what it writes.
    version = client.command("SELECT toString(now64(6, 'UTC'))")
    params["v"] = version
    # Table and view names are constants; every value is a parameter.
    client.command(
        f"INSERT INTO {ROWS} SELECT *, {{v:DateTime64(6, 'UTC')}}, 0 FROM {COMPUTED}{where}",  # noqa: S608
        parameters=params,
    )
    stale = f"{where} {'AND' if where else 'WHERE'} refreshed_at < {{v:DateTime64(6, 'UTC')}}"
    deleted = int(client.command(f"SELECT count() FROM {ROWS} FINAL{stale}", parameters=params))  # noqa: S608
    if deleted:
        client.command(
            f"INSERT INTO {ROWS} SELECT * EXCEPT (refreshed_at, deleted), "  # noqa: S608
            f"{{v:DateTime64(6, 'UTC')}}, 1 FROM {ROWS} FINAL{stale}",
            parameters=params,
        )
    rows = int(
        client.command(
            f"SELECT count() FROM {ROWS} FINAL{where} "  # noqa: S608
            f"{'AND' if where else 'WHERE'} refreshed_at = {{v:DateTime64(6, 'UTC')}}",
            parameters=params,
        )
    )
    return RefreshResult(rows, deleted, time.monotonic() - started)


class MonthlyRows:
    """The practices whose stored monthly rows may be stale, and their refresh.

    Sinks mark the practices of rows they are about to insert (``marker``); ``refresh`` writes
    them all in one refresh and forgets them. A new instance starts with everything marked: a
    process that stopped between an insert and its refresh (a crash) left rows stale, and
    nothing else remembers which.
    """

    def __init__(
        self,
        client: Client,
        on_refreshed: Callable[[RefreshResult], None] | None = None,
    ) -> None:
        self.client = client
        self.on_refreshed = on_refreshed
        self._lock = threading.Lock()  # the set; refreshes themselves run on one thread
        self._dirty: set[str] = set()
        self._everything = True

    def mark(self, practice_ids: Iterable[str]) -> None:
        with self._lock:
            if not self._everything:
                self._dirty.update(practice_ids)

    def mark_everything(self) -> None:
        with self._lock:
            self._everything = True
            self._dirty.clear()

    def pending(self) -> bool:
        with self._lock:
            return self._everything or bool(self._dirty)

    def marker(self, columns: Sequence[str]) -> Callable[[Any], None]:
        """A sink's ``before_insert`` hook: marks the practices of a batch of ``columns`` rows."""
        index = list(columns).index("practice_id")
        return lambda batch: self.mark({row[index] for row in batch.rows})

    def refresh(self, why: str = "") -> RefreshResult | None:
        """Refresh what is marked (None if nothing was). Marks taken are put back if it fails,
        so the next refresh does them."""
        with self._lock:
            everything, dirty = self._everything, self._dirty
            if not everything and not dirty:
                return None
            self._everything, self._dirty = False, set()
        try:
            result = refresh_monthly_rows(self.client, None if everything else dirty)
        except Exception:
            with self._lock:
                if everything:
                    self._everything = True
                elif not self._everything:
                    self._dirty |= dirty
            raise
        if why or result.seconds >= SLOW_SECONDS:
            logger.info(
                "monthly rows refreshed%s: %d practice-months (%s) in %.2f s%s",
                f" ({why})" if why else "",
                result.rows,
                "every practice" if everything else f"{len(dirty)} practice(s)",
                result.seconds,
                f", {result.deleted} gone" if result.deleted else "",
            )
        if self.on_refreshed is not None:
            self.on_refreshed(result)
        return result
