"""Keep the monthly rollup (migration 0006) in step with practice time zones and look-backs.

The rollup tables hold local months cut in the zone a practice had when each row arrived (and
roster months for its look-back then), and the monthly view reads only rows of the practice's
current zone and look-back. So when either changes (a new ``practices`` row, or a new
``default`` for practices without one), that practice's stored rows go through the rollup again:
``rebuild_rollup`` re-inserts them into the rollup's feed tables, whose materialized views cut
them with the new settings. Every rollup collapses a row seen twice, so rebuilding is
idempotent and safe while the pipeline writes. ``rollup_builds`` records the settings each
practice's rollup was cut with, so a rebuild cut short (a crash) is done again next time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

__all__ = [
    "FEEDS",
    "built_with",
    "effective_settings",
    "rebuild_rollup",
    "record_builds",
    "refeed_events_tail",
    "wait_for_inserts_before",
]

logger = logging.getLogger(__name__)

FEEDS: dict[str, tuple[str, bool]] = {
    "events_rollup_feed": ("events", False),
    "message_responses_rollup_feed": ("message_responses", True),
    "alerts_rollup_feed": ("alerts", True),
}
"""Feed table → (base table, read with FINAL). Events need no FINAL: their rollups are sets.
Facts and alerts do, so that only each id's current row is fed again."""


def effective_settings(
    rows: Mapping[str, tuple[str, int]], practice_ids: Iterable[str], default_id: str
) -> dict[str, tuple[str, int]]:
    """(zone, look-back) each practice's months are cut with, given ``practices`` rows (id →
    (zone, look-back)): each from its own row where set, else from the default row, else
    ('', 0), exactly as the localizing view and the monthly view pick them."""
    zone, days = rows.get(default_id, ("", 0))
    own = {pid: rows.get(pid, ("", 0)) for pid in practice_ids}
    return {pid: (tz or zone, lookback or days) for pid, (tz, lookback) in own.items()}


def wait_for_inserts_before(client: Client, since: float, timeout: float = 60.0) -> bool:
    """Wait until no INSERT that started before ``since`` (``time.monotonic()``) still runs.

    Such an insert may have cut its rows with a practice's old settings; once it has finished,
    its rows are in the base tables for a rebuild to find. Returns False (and logs) if
    ``timeout`` passes or running queries cannot be seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        age = time.monotonic() - since
        try:
            running = client.query(
                "SELECT count() FROM system.processes "
                "WHERE query_kind = 'Insert' AND elapsed >= {age:Float64}",
                parameters={"age": age},
            ).result_rows[0][0]
        except DatabaseError as exc:  # a user without access to system.processes
            logger.warning("rollup rebuild: cannot see running inserts (%s); rebuilding now", exc)
            return False
        if not running:
            return True
        if time.monotonic() >= deadline:
            logger.warning(
                "rollup rebuild: %d insert(s) begun before the settings changed still running after "
                "%.0fs; rebuilding anyway",
                running,
                timeout,
            )
            return False
        time.sleep(0.1)


def rebuild_rollup(client: Client, practice_ids: Iterable[str]) -> None:
    """Feed every stored row of these practices through the rollup again, with their current
    zone and look-back (the feed tables' materialized views read ``practices``)."""
    ids = sorted(set(practice_ids))
    if not ids:
        return
    for feed, (source, final) in FEEDS.items():
        columns = ", ".join(row[0] for row in client.query(f"DESCRIBE TABLE {feed}").result_rows)
        client.command(  # table and column names from FEEDS and DESCRIBE, ids as a parameter
            f"INSERT INTO {feed} ({columns}) SELECT {columns} FROM {source}"  # noqa: S608
            f"{' FINAL' if final else ''} WHERE practice_id IN {{ids:Array(String)}}",
            parameters={"ids": ids},
        )
    logger.info(
        "monthly rollup rebuilt for %d practice(s) after a time-zone or look-back change", len(ids)
    )


def refeed_events_tail(client: Client, topic: str, highs: Mapping[int, int], window: int) -> int:
    """Feed the rollup again with the last ``window`` events written from each partition of
    ``topic`` (``highs``: partition → highest offset in ``events``); returns how many.

    An insert into ``events`` writes the table's part first and then the rollup views' parts;
    a crash in between leaves events the rollup never saw, and the sink, finding their
    positions in ``events``, never writes them again. A sink's insert holds at most ``window``
    records, and only its last one can have been cut short, so those rows are enough. Sets
    collapse what they already hold: nothing is counted twice.
    """
    if not highs:
        return 0
    columns = ", ".join(
        row[0] for row in client.query("DESCRIBE TABLE events_rollup_feed").result_rows
    )
    since = " OR ".join(
        f"(kafka_partition = {int(p)} AND kafka_offset > {int(hi) - int(window)})"
        for p, hi in sorted(highs.items())
    )
    where = f"kafka_topic = {{t:String}} AND ({since})"
    # ``where`` holds int()-converted partitions and offsets only; the topic is a parameter.
    count = client.query(f"SELECT count() FROM events WHERE {where}", parameters={"t": topic})  # noqa: S608
    n = int(count.result_rows[0][0])
    if n:
        client.command(
            f"INSERT INTO events_rollup_feed ({columns}) SELECT {columns} FROM events WHERE {where}",  # noqa: S608
            parameters={"t": topic},
        )
        logger.info(
            "monthly rollup: fed the last %d events of %s again (%d partitions), in case a "
            "crash cut their insert short",
            n, topic, len(highs),
        )  # fmt: skip
    return n


def built_with(client: Client) -> dict[str, tuple[str, int]]:
    """Practice → (zone, look-back) its rollup rows were last cut with, where recorded."""
    return {
        pid: (zone, lookback)
        for pid, zone, lookback in client.query(
            "SELECT practice_id, zone, lookback FROM rollup_builds FINAL"
        ).result_rows
    }


def record_builds(client: Client, settings: Mapping[str, tuple[str, int]]) -> None:
    """Record that these practices' rollup rows are cut with these (zone, look-back)."""
    if not settings:
        return
    now = datetime.now(UTC)
    rows = [[pid, zone, lookback, now] for pid, (zone, lookback) in sorted(settings.items())]
    client.insert(
        "rollup_builds", rows, column_names=("practice_id", "zone", "lookback", "built_at")
    )
