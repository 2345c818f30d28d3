"""What an operator sees of late events: metrics per source and outcome, a line per correction."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from portal_pulse.domain.practices import Practices
from portal_pulse.engine import DictStore, Engine
from portal_pulse.late_events import LateEvents, late_summary
from portal_pulse.metrics import PipelineMetrics
from portal_pulse.pipeline import build_machines
from schemas.model import CleanEvent

T0 = datetime(2026, 1, 5, 13, 0, tzinfo=UTC)


class Out:
    def alert(self, alert: object) -> None:
        pass

    def response(self, fact: object) -> None:
        pass


def _value(metric: object, **labels: str) -> float:
    for family in metric.collect():  # type: ignore[attr-defined]
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels == labels:
                return sample.value
    raise AssertionError(f"no sample {labels}")


def test_a_withdrawal_is_counted_and_logged_with_the_late_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    machines = build_machines(Practices.load(None))
    engine = Engine(
        machines, {m.name: DictStore() for m in machines}, Out(),
        horizon=timedelta(days=30), holds={"sla": timedelta(seconds=60)},
    )  # fmt: skip
    metrics = PipelineMetrics()
    late = LateEvents(metrics)
    sent = CleanEvent("s1", "message.sent", T0, "P1", "pat",
                      {"thread_id": "t", "message_id": "m", "category": "billing"})  # fmt: skip
    reply = CleanEvent("r1", "message.replied", T0 + timedelta(hours=2), "P1", "pat",
                       {"thread_id": "t", "message_id": "x", "staff_pool": "billing"})  # fmt: skip
    engine.advance(T0)
    engine.on_event(sent)
    late.observe(sent, engine, T0)
    clock = T0 + timedelta(days=1)
    engine.advance(clock)
    with caplog.at_level(logging.INFO, logger="portal_pulse.late_events"):
        engine.on_event(reply)
        late.observe(reply, engine, clock)
    assert _value(metrics.late_events, source="portal", outcome="corrected") == 1
    assert _value(metrics.alert_corrections, kind="sla.at_risk", action="withdrawn") == 1
    assert "withdrawn by late event r1 (portal, 79200 s behind the clock)" in caplog.text
    assert "pat" not in caplog.text.replace("portal", "")  # no pseudonym in the log
    assert any("corrected: 1" in line for line in late_summary(metrics))


def test_events_beyond_the_horizon_make_one_line_a_batch(caplog: pytest.LogCaptureFixture) -> None:
    machines = build_machines(Practices.load(None))
    engine = Engine(machines, {m.name: DictStore() for m in machines}, Out(),
                    horizon=timedelta(days=30))  # fmt: skip
    metrics = PipelineMetrics()
    late = LateEvents(metrics)
    engine.advance(T0 + timedelta(days=60))
    for n in range(3):
        old = CleanEvent(f"o{n}", "portal.login", T0, "P1", f"p{n}", {"channel": "web"})
        engine.on_event(old)
        late.observe(old, engine, T0 + timedelta(days=60))
    with caplog.at_level(logging.WARNING, logger="portal_pulse.late_events"):
        late.end_batch()
        late.end_batch()
    assert _value(metrics.late_events, source="portal", outcome="beyond_horizon") == 3
    assert caplog.text.count("beyond the correction horizon") == 1
    assert "3 event(s)" in caplog.text
