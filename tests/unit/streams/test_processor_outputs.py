"""The processors' output buffer: a flush takes what was collected, and only that."""

from __future__ import annotations

from datetime import UTC, datetime

from portal_pulse.domain.records import Alert
from streams.processor_agent import CollectingOutputs

T = datetime(2026, 1, 5, tzinfo=UTC)


def alert(n: int) -> Alert:
    return Alert(f"a{n}", "sla.breached", "P1", "t", "f" * 32, "billing", "billing", T, T, T)


def test_take_hands_over_and_leaves_new_lists_for_later_outputs() -> None:
    out = CollectingOutputs()
    out.alert(alert(1))
    taken, _ = out.take()
    out.alert(alert(2))  # collected while the first batch is being sent
    assert [a.alert_id for a in taken] == ["a1"]
    assert [a.alert_id for a in out.take()[0]] == ["a2"]
    assert out.take() == ([], [])
