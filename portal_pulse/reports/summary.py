"""What landed in ClickHouse, for the demo and for operators checking a run."""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

__all__ = ["print_landing_summary"]


def _table(title: str, header: list[str], rows: list[tuple]) -> None:
    print(f"\n{title}")
    if not rows:
        print("  (none)")
        return
    cells = [[str(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    print("  " + "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for c in cells:
        print("  " + "  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))


def print_landing_summary(client: Client) -> None:
    q = client.query
    total = q("SELECT count() FROM events FINAL").result_rows[0][0]
    print(f"\n== events in ClickHouse: {total}")
    pivot = q(
        "SELECT event_type, groupArray((practice_id, n)) FROM "
        "(SELECT event_type, practice_id, count() AS n FROM events FINAL GROUP BY event_type, practice_id "
        "ORDER BY practice_id) GROUP BY event_type ORDER BY event_type"
    ).result_rows
    practices = sorted({p for _, pairs in pivot for p, _ in pairs})
    rows = [(et, *(dict(pairs).get(p, 0) for p in practices)) for et, pairs in pivot]
    _table("Events per type and practice", ["event_type", *practices], rows)
    dl = q(
        "SELECT reason, count() FROM dead_letters FINAL GROUP BY reason ORDER BY reason"
    ).result_rows
    print(f"\n== dead letters: {sum(n for _, n in dl)}")
    _table("Dead letters by reason", ["reason", "count"], dl)
    # Withdrawn alerts and facts (SPEC §7.1) stand for nothing: counted apart, in no figure.
    alerts = q(
        "SELECT kind, countIf(withdrawn_at IS NULL), "
        "countIf(resolved_at IS NULL AND withdrawn_at IS NULL), countIf(withdrawn_at IS NOT NULL) "
        "FROM alerts FINAL GROUP BY kind ORDER BY kind"
    ).result_rows
    _table("Alerts", ["kind", "raised", "open", "withdrawn"], alerts)
    resp = q(
        "SELECT practice_id, count(), round(avg(response_business_minutes) / 60, 2), "
        "round(avg(response_wall_minutes) / 60, 2), round(avg(met_internal_target), 3), "
        "round(avg(met_external_promise), 3) FROM message_responses FINAL "
        "WHERE withdrawn_at IS NULL GROUP BY practice_id ORDER BY practice_id"
    ).result_rows
    _table(
        "Message responses",
        ["practice", "responses", "avg business h", "avg wall h", "internal met", "external met"],
        resp,
    )
