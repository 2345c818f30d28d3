"""A restarted worker carries on: SLA state comes back from the changelog-backed tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.conftest import Pipeline

pytestmark = pytest.mark.integration


def _write(path: Path, events: list[tuple[str, str, str, dict]]) -> Path:
    path.write_text(
        "\n".join(
            json.dumps({"event_id": eid, "event_type": kind, "occurred_at": at, "practice_id": "PR",
                        "patient_id": "MRN-RESTART", **details})
            for eid, kind, at, details in events
        ) + "\n"
    )  # fmt: skip
    return path


def test_state_survives_a_restart(pipeline: Pipeline, tmp_path: Path) -> None:
    first = _write(
        tmp_path / "first.jsonl",
        [("r1", "message.sent", "2026-01-05T15:00:00Z",
          {"thread_id": "th", "message_id": "m1", "category": "clinical"})],
    )  # fmt: skip
    assert pipeline.cli("produce", str(first)).returncode == 0
    pipeline.run_worker(idle=2)

    # The reply comes after the restart, an hour later (10:00 → 11:00 New York, same day).
    second = _write(
        tmp_path / "second.jsonl",
        [
            ("r2", "message.replied", "2026-01-05T16:00:00Z",
             {"thread_id": "th", "message_id": "m2", "staff_pool": "nurse"}),
            ("r3", "patient.seen", "2026-01-20T16:00:00Z", {"encounter_id": "v"}),
            # A redelivery of the first event, after the restart: ingest still remembers it.
            ("r1", "message.sent", "2026-01-05T15:00:00Z",
             {"thread_id": "th", "message_id": "m1", "category": "clinical"}),
        ],
    )  # fmt: skip
    assert pipeline.cli("produce", str(second)).returncode == 0
    pipeline.run_worker(idle=2)

    responses = pipeline.query(
        "SELECT thread_id, response_business_minutes, met_internal_target FROM message_responses FINAL"
    )
    assert responses == [["th", 60.0, 1]], "the pending message was remembered across the restart"
    assert pipeline.query("SELECT count() FROM alerts FINAL WHERE subject_id = 'th'") == [[0]]
    # Without FINAL: the duplicate never reached ClickHouse (de-duplication state was restored).
    assert pipeline.query("SELECT count() FROM events") == [[3]]
