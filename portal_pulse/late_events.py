"""What the worker tells an operator about late and out-of-order events (SPEC §7.1).

Per event: how far behind its rule clock it arrived (a histogram per source) and, when it came
behind its thread's or patient's last applied event, what that did (``reordered``: applied in
event-time order, nothing changed; ``corrected``: alerts or facts corrected; ``beyond_horizon``:
stored in ``events`` only). Each correction is one log line naming the alert, the action and the
late event that caused it (its id and source, never a patient id); events beyond the horizon
are summed into one line per batch.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime
from typing import Any

from portal_pulse.engine import BEYOND_HORIZON, CORRECTED, REORDERED, Engine
from portal_pulse.metrics import PipelineMetrics
from schemas.catalogue import source_of
from schemas.model import CleanEvent

__all__ = ["LateEvents", "late_summary"]

logger = logging.getLogger(__name__)

_LATE = (REORDERED, CORRECTED, BEYOND_HORIZON)


class LateEvents:
    def __init__(self, metrics: PipelineMetrics | None) -> None:
        self.metrics = metrics
        self.beyond: Counter[str] = Counter()
        self.counts: Counter[tuple[str, str]] = Counter()  # (source, outcome) for status/tests
        # The lateness histogram's child per source, looked up once: ``labels()`` per event
        # cost 3 % of a worker's time (benchmarks/README.md).
        self._lateness: dict[str, Any] = {}

    def observe(self, event: CleanEvent, engine: Engine, clock: datetime | None) -> None:
        """Account for ``event`` just given to ``engine`` while the rule clock stood at ``clock``."""
        source = source_of(event.event_type)
        behind = 0.0 if clock is None else (clock - event.occurred_at).total_seconds()
        metrics = self.metrics
        if metrics is not None:
            child = self._lateness.get(source)
            if child is None:
                child = self._lateness[source] = metrics.event_lateness.labels(source)
            child.observe(max(0.0, behind))
        outcome = engine.last_outcome
        if outcome not in _LATE:
            return
        self.counts[(source, outcome)] += 1  # type: ignore[index]
        if metrics is not None:
            metrics.late_events.labels(source, outcome).inc()
        if outcome == BEYOND_HORIZON:
            self.beyond[source] += 1
            return
        for kind, action, ident in engine.last_corrections:
            if metrics is not None:
                metrics.alert_corrections.labels(kind, action).inc()
            what = "response fact" if kind == "response" else f"alert {kind}"
            logger.info(
                "%s %s %s by late event %s (%s, %.0f s behind the clock)",
                what, ident, action.replace("_", " "), event.event_id, source, behind,
            )  # fmt: skip

    def end_batch(self) -> None:
        """One line for the batch's events beyond the horizon, if any."""
        if not self.beyond:
            return
        total = sum(self.beyond.values())
        shown = ", ".join(f"{source} {n}" for source, n in sorted(self.beyond.items()))
        logger.warning(
            "%d event(s) arrived beyond the correction horizon (%s): stored in events, no alert "
            "or response fact changed (PORTAL_PULSE_CORRECTION_HORIZON_DAYS)",
            total, shown,
        )  # fmt: skip
        self.beyond.clear()


def late_summary(metrics: PipelineMetrics) -> list[str]:
    """What the late-event counters say, a line each (the demo prints it after a run)."""

    def totals(metric: object) -> list[tuple[dict[str, str], float]]:
        return [
            (sample.labels, sample.value)
            for family in metric.collect()  # type: ignore[attr-defined]
            for sample in family.samples
            if sample.name.endswith("_total") and sample.value
        ]

    lines = [
        f"{labels['source']:>7} events {labels['outcome'].replace('_', ' ')}: {int(n)}"
        for labels, n in sorted(totals(metrics.late_events), key=lambda x: sorted(x[0].items()))
    ]
    lines += [
        f"{labels['kind']} {labels['action'].replace('_', ' ')}: {int(n)}"
        for labels, n in sorted(
            totals(metrics.alert_corrections), key=lambda x: sorted(x[0].items())
        )
    ]
    return lines or ["no event arrived behind its thread or patient"]
