"""What an insert into ``events`` costs, and how much of it the rollup's materialized views add.

The worker writes ``events`` in batches (the processors in the ``all`` role, ``sink-events`` in
the ``sink`` role), and since migration 0006 every insert also feeds the monthly rollup through
materialized views. This times the same batches, written the way the worker writes them
(``ClickHouseTableSink`` with positions and a dedup token), first into a migrated database, then
again after dropping every materialized view reading ``events`` (into fresh positions, so
nothing is skipped as already written). It prints the median milliseconds per batch and per
thousand rows of each, and the difference. Runs of the two alternate in blocks so both see the
same machine load.

    .venv/bin/python benchmarks/events_insert.py                       # 1,000-row batches
    .venv/bin/python benchmarks/events_insert.py --batch 5000 --batches 20
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from portal_pulse.ingest import Ingestor, bounds_from  # noqa: E402
from portal_pulse.pseudonym import Pseudonymizer  # noqa: E402
from portal_pulse.settings import Settings  # noqa: E402
from portal_pulse.simulate import SimulationSpec, simulate_to_file  # noqa: E402
from schemas.jsonl import LineError, read_jsonl  # noqa: E402
from schemas.model import CleanEvent  # noqa: E402
from schemas.serializer import get_codec  # noqa: E402
from sinks.batching import Batch, ClickHouseTableSink  # noqa: E402
from sinks.client import connect  # noqa: E402
from sinks.migrate import migrate  # noqa: E402
from sinks.rows import EVENT_SOURCE_COLUMNS, TABLES, event_row  # noqa: E402


def clean_rows(path: Path, limit: int) -> list[list]:
    ingestor = Ingestor(
        get_codec("RawEvent"),
        Pseudonymizer(b"benchmark-key-not-a-secret-32-bytes"),
        dedup_capacity=limit * 2,
        bounds=bounds_from(365 * 86400, 36500),  # a recording: no event is too old or early
    )
    now = datetime.now(UTC)
    rows: list[list] = []
    for item in read_jsonl(path):
        if isinstance(item, LineError):
            continue
        clean = ingestor.admit(item, now)
        if isinstance(clean, CleanEvent):
            rows.append(event_row(clean))
            if len(rows) >= limit:
                break
    return rows


def views_fed_by_events(client: Any) -> list[str]:
    """The materialized views an insert into ``events`` runs: those reading ``events``, and
    those reading their targets, down the chain."""
    rows = client.query(
        "SELECT name, create_table_query FROM system.tables "
        "WHERE database = currentDatabase() AND engine = 'MaterializedView'"
    ).result_rows
    fed, sources, changed = [], {"events"}, True
    while changed:
        changed = False
        for name, ddl in rows:
            target = re.search(r"\bTO\s+(?:\w+\.)?(\w+)", ddl)
            query = ddl.split(" AS ", 1)[-1]  # after the target's columns: the SELECT
            reads = {m[1] for m in re.finditer(r"\b(?:FROM|JOIN)\s+(?:\w+\.)?(\w+)", query)}
            if name not in fed and reads & sources:
                fed.append(name)
                if target:
                    sources.add(target[1])
                changed = True
    return fed


def time_batches(
    sink: ClickHouseTableSink, rows: list[list], batch: int, topic: str
) -> list[float]:
    """Seconds per insert; each batch at new offsets of ``topic`` so none is skipped."""
    seconds = []
    for start in range(0, len(rows) - batch + 1, batch):
        b = Batch()
        for i, row in enumerate(rows[start : start + batch]):
            b.add([*row, "bench.raw|0", start + i], topic, 0, start + i)
        t0 = time.perf_counter()
        sink.write(b)
        seconds.append(time.perf_counter() - t0)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=1000, help="rows per insert")
    parser.add_argument("--batches", type=int, default=30, help="inserts per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of each")
    args = parser.parse_args()

    work = (Settings().data_dir / "bench").resolve()
    work.mkdir(parents=True, exist_ok=True)
    recording = work / "events-5x2000x2.jsonl"
    if not recording.exists():
        spec = SimulationSpec(practices=5, patients_per_practice=2000, months=2)
        simulate_to_file(spec, recording)
    rows = clean_rows(recording, args.batch * args.batches)
    if len(rows) < args.batch * args.batches:
        sys.exit(f"the recording has only {len(rows)} clean events")

    db = Path(tempfile.mkdtemp(prefix="events-insert-", dir=work))
    try:
        # Two databases in one chDB path (one path per process): with and without the views.
        client = connect(f"chdb://{db}")
        migrate(client)
        columns = (*TABLES["events"].columns, *EVENT_SOURCE_COLUMNS)
        views = views_fed_by_events(client)
        # The same table (structure and engine) in a database no view reads from.
        client.command("CREATE DATABASE IF NOT EXISTS bare")
        client.command("CREATE TABLE IF NOT EXISTS bare.events AS events")
        with_views = ClickHouseTableSink(client, "events", columns, position_columns=True)
        without = ClickHouseTableSink(client, "bare.events", columns, position_columns=True)
        timed: dict[str, list[float]] = {"with": [], "without": []}
        for r in range(args.rounds):
            timed["with"] += time_batches(with_views, rows, args.batch, f"bench-with-{r}")
            timed["without"] += time_batches(without, rows, args.batch, f"bench-without-{r}")
        figures = {}
        for name, seconds in timed.items():
            ms = statistics.median(seconds) * 1000
            figures[name] = {
                "ms_per_insert": round(ms, 1),
                "ms_per_1000_rows": round(ms * 1000 / args.batch, 1),
            }
        added = figures["with"]["ms_per_insert"] - figures["without"]["ms_per_insert"]
        print(f"materialized views an insert into events runs: {len(views)}")
        for name in ("without", "with"):
            f = figures[name]
            print(
                f"{name:>7} the rollup views: {f['ms_per_insert']:.1f} ms per {args.batch:,}-row insert "
                f"({f['ms_per_1000_rows']:.1f} ms per 1,000 rows), median of {len(timed[name])}"
            )
        print(
            f"the views add {added:.1f} ms per insert ({added * 1000 / args.batch:.1f} ms per 1,000 rows)"
        )
        print(json.dumps({"batch": args.batch, "views": len(views), **figures}))
    finally:
        shutil.rmtree(db, ignore_errors=True)


if __name__ == "__main__":
    main()
