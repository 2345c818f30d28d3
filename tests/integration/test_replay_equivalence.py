"""One recorded stream through Kafka + the worker and through `replay` gives the same outputs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from portal_pulse.simulate import SimulationSpec, realistic_order, simulate
from tests.integration.conftest import Pipeline, query_chdb

pytestmark = pytest.mark.integration

ALERTS_SQL = (
    "SELECT alert_id, kind, practice_id, subject_id, patient_pseudonym, category, staff_pool, "
    "due_at, raised_at, resolved_at, response_business_minutes FROM alerts FINAL ORDER BY alert_id"
)
RESPONSES_SQL = "SELECT * FROM message_responses FINAL ORDER BY response_id"
MONTHLY_SQL = "SELECT * FROM monthly_portal_performance ORDER BY practice_id, month"
COMPUTED_SQL = MONTHLY_SQL.replace("performance", "performance_computed")
EVENTS_SQL = "SELECT count(), uniqExact(event_id), sum(cityHash64(event_id, patient_pseudonym)) FROM events FINAL"


def _instant(value: object) -> datetime:
    try:
        at = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return at if at.tzinfo else datetime.min.replace(tzinfo=UTC)


def _rounded(rows: list[list[object]]) -> list[list[object]]:
    return [[round(v, 9) if isinstance(v, float) else v for v in row] for row in rows]


def _recording(path: Path, practices_file: Path, *, arrival: str = "ordered") -> None:
    spec = SimulationSpec(practices=2, patients=120, months=2, seed=5, bad_fraction=0.01)
    objects = list(simulate(spec))
    if arrival != "ordered":
        objects = realistic_order(objects, seed=5, mode=arrival)
    lines = [json.dumps(obj) for obj in objects]
    last = max(_instant(json.loads(x).get("occurred_at")) for x in lines)
    # A sentinel far past the end moves both clocks over every deadline of the data; its odd
    # offset keeps any deadline out of the few idle seconds the live worker adds after it.
    sentinel = last + timedelta(days=40, hours=7, minutes=13, seconds=17)
    lines.append(
        json.dumps(
            {
                "event_id": "sentinel-1",
                "event_type": "patient.seen",
                "occurred_at": sentinel.astimezone(UTC).isoformat(),
                "practice_id": "P001",
                "patient_id": "sentinel-patient",
                "encounter_id": "sentinel-encounter",
            }
        )
    )
    path.write_text("\n".join(lines) + "\n")
    zones = spec.timezones
    practices_file.write_text(
        yaml.safe_dump(
            {
                "practices": {
                    "default": {},
                    **{f"P{i + 1:03d}": {"timezone": zones[i]} for i in range(2)},
                }
            }
        )
    )


def test_kafka_worker_and_replay_agree(pipeline: Pipeline, tmp_path: Path) -> None:
    recording, practices = tmp_path / "events.jsonl", tmp_path / "practices.yaml"
    _recording(recording, practices)
    env = {"PORTAL_PULSE_PRACTICES_FILE": str(practices)}
    assert pipeline.cli("produce", str(recording), env=env).returncode == 0
    # The stored monthly rows' timer never fires in this run: the refresh before the worker
    # stops alone must leave the view equal to the replay's.
    pipeline.run_worker(env=env | {"PORTAL_PULSE_MONTHLY_REFRESH_SECONDS": "3600"})

    replay_chdb = tmp_path / "replay-chdb"
    result = pipeline.cli(
        "replay",
        str(recording),
        "--config",
        str(practices),
        "--clickhouse",
        f"chdb://{replay_chdb}",
        env=env,
    )
    assert result.returncode == 0, result.stderr

    queries = [ALERTS_SQL, RESPONSES_SQL, EVENTS_SQL, MONTHLY_SQL, COMPUTED_SQL]
    live = query_chdb(pipeline.chdb, queries)
    offline = query_chdb(replay_chdb, queries)
    assert _rounded(live[3]) == _rounded(live[4]), "the stored rows are the computing view's"
    assert live[2] == offline[2], "same events"
    assert len(live[0]) > 50 and len(live[1]) > 50, "the stream exercises alerts and responses"
    kinds = {row[1] for row in live[0]}
    assert {"sla.at_risk", "sla.internal_missed", "sla.breached"} <= kinds
    assert any(k.startswith("enrollment.") for k in kinds)
    assert live[1] == offline[1], "identical response facts"
    assert live[0] == offline[0], "identical alerts, resolutions included"
    assert len(live[3]) >= 4, "two practices, at least two months each"
    # Averages may differ in the last bit with the order rows were summed in.
    assert _rounded(live[3]) == _rounded(offline[3]), "identical monthly metrics (the BI view)"


STANDING_ALERTS_SQL = ALERTS_SQL.replace(
    "FROM alerts FINAL", "FROM alerts FINAL WHERE withdrawn_at IS NULL"
).replace(", raised_at,", ",")
STANDING_RESPONSES_SQL = (
    "SELECT response_id, practice_id, thread_id, patient_pseudonym, category, routed_pool, "
    "replied_by_pool, first_message_at, clock_started_at, replied_at, messages_answered, "
    "response_business_minutes, response_wall_minutes, internal_due_at, external_due_at, "
    "met_internal_target, met_external_promise FROM message_responses FINAL "
    "WHERE withdrawn_at IS NULL ORDER BY response_id"
)


def test_late_and_out_of_order_arrival_converges_on_the_replay(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """SPEC §7.1: the same events in a realistic arrival order (portal jitter, offline phones,
    EHR lag, nightly billing, surveys days late) give the standing alerts, facts and monthly
    figures of the event-time replay."""
    recording, practices = tmp_path / "events.jsonl", tmp_path / "practices.yaml"
    _recording(recording, practices, arrival="realistic")
    env = {"PORTAL_PULSE_PRACTICES_FILE": str(practices)}
    assert pipeline.cli("produce", str(recording), env=env).returncode == 0
    pipeline.run_worker(env=env)
    replay_chdb = tmp_path / "replay-chdb"
    result = pipeline.cli(
        "replay", str(recording), "--config", str(practices), "--clickhouse",
        f"chdb://{replay_chdb}", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    queries = [STANDING_ALERTS_SQL, STANDING_RESPONSES_SQL, EVENTS_SQL, MONTHLY_SQL]
    live = query_chdb(pipeline.chdb, queries)
    offline = query_chdb(replay_chdb, queries)
    assert live[2] == offline[2], "same events"
    assert len(live[0]) > 50 and len(live[1]) > 50
    assert live[1] == offline[1], "the standing response facts of event time"
    assert live[0] == offline[0], "the standing alerts of event time"
    assert _rounded(live[3]) == _rounded(offline[3]), "the monthly metrics of event time"


SPEC_ALERT_FIELDS = {
    "alert_id", "kind", "practice_id", "subject_id", "patient_pseudonym", "category", "staff_pool",
    "due_at", "resolved_at", "response_business_minutes", "withdrawn_at",
}  # fmt: skip


def test_reading_commands_on_a_replayed_stream(pipeline: Pipeline, tmp_path: Path) -> None:
    """alerts, followups and dashboard as a user runs them, on what `replay --until` wrote."""
    recording, practices = tmp_path / "events.jsonl", tmp_path / "practices.yaml"
    _recording(recording, practices)
    ch = f"chdb://{tmp_path / 'ch'}"
    replayed = pipeline.cli(
        "replay", str(recording), "--config", str(practices), "--clickhouse", ch,
        "--until", "2026-06-01T00:00:00Z",
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    assert "clock at 2026-06-01" in replayed.stdout

    alerts = pipeline.cli("alerts", "--clickhouse", ch, "--practice", "P001", "--format", "json")
    assert alerts.returncode == 0, alerts.stderr
    rows = json.loads(alerts.stdout)
    assert rows and all(set(r) == SPEC_ALERT_FIELDS for r in rows)
    assert all(r["due_at"].endswith("Z") for r in rows)
    assert all(r["practice_id"] == "P001" for r in rows)
    open_rows = json.loads(
        pipeline.cli("alerts", "--clickhouse", ch, "--open", "--format", "json").stdout
    )
    assert open_rows and all(r["resolved_at"] is None for r in open_rows)

    worklist = pipeline.cli(
        "followups", "--clickhouse", ch, "--practice", "P001", "--format", "json"
    )
    assert worklist.returncode == 0, worklist.stderr
    items = json.loads(worklist.stdout)
    assert items and all(
        i["kind"].startswith("enrollment.") and i["days_overdue"] >= 0 for i in items
    )
    csv_out = pipeline.cli(
        "followups", "--clickhouse", ch, "--practice", "P001", "--format", "csv"
    ).stdout
    assert csv_out.splitlines()[0].startswith("alert_id,kind")

    board = pipeline.cli(
        "dashboard",
        "--clickhouse",
        ch,
        "--practice",
        "P001",
        "--month",
        "2026-02",
        "--format",
        "json",
    )
    assert board.returncode == 0, board.stderr
    assert json.loads(board.stdout)["month"] == "2026-02"
    text = pipeline.cli(
        "dashboard", "--clickhouse", ch, "--practice", "P001", "--month", "2026-02"
    ).stdout
    assert "Portal Performance - February 2026" in text
    missing = pipeline.cli(
        "dashboard", "--clickhouse", ch, "--practice", "NOPE", "--month", "2026-02"
    )
    assert missing.returncode == 4 and "NOPE" in missing.stderr
