"""Every labelled metric has a sample from the start, so ``rate()`` and alert rules see 0.

A labelled Prometheus counter has no sample until its first ``labels()`` call: on a fresh worker
``rate(portal_pulse_sink_errors_total[5m])`` would be empty rather than 0, and a rule on it could
never be told apart from a missing metric. Only the per-partition gauges wait for partitions.
"""

from __future__ import annotations

import re
from pathlib import Path

from portal_pulse.domain.followups import FOLLOWUP_KINDS
from portal_pulse.domain.sla import ALERT_KINDS as SLA_KINDS
from portal_pulse.metrics import (
    DEAD_LETTER_REASONS,
    METRIC_NAMES,
    WEBHOOK_OUTCOMES,
    PipelineMetrics,
)
from sinks.rows import TABLES

DOCS = Path(__file__).resolve().parents[2] / "docs"
# Their label values are the partitions a worker is assigned: none before an assignment.
PER_PARTITION = {"portal_pulse_consumer_lag", "portal_pulse_event_clock_lag_seconds"}


def _sampled_families(metrics: PipelineMetrics) -> dict[str, list]:
    """Family name as exposed (counters with ``_total``) → its samples."""
    out = {}
    for family in metrics.registry.collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        out[name] = family.samples
    return out


def test_a_fresh_registry_has_a_sample_for_every_metric_family() -> None:
    families = _sampled_families(PipelineMetrics())
    assert set(families) == set(METRIC_NAMES)
    empty = {name for name, samples in families.items() if not samples}
    assert empty == PER_PARTITION, f"no sample on a fresh worker: {sorted(empty - PER_PARTITION)}"


def _values(metrics: PipelineMetrics, name: str, label: str) -> dict[str, float]:
    return {
        s.labels[label]: s.value
        for s in _sampled_families(metrics)[name]
        if s.name == name and label in s.labels
    }


def test_the_known_label_values_start_at_zero() -> None:
    metrics = PipelineMetrics()
    assert _values(metrics, "portal_pulse_sink_errors_total", "table") == dict.fromkeys(TABLES, 0)
    assert _values(metrics, "portal_pulse_sink_rows_total", "table") == dict.fromkeys(TABLES, 0)
    assert _values(metrics, "portal_pulse_webhook_deliveries_total", "outcome") == dict.fromkeys(
        WEBHOOK_OUTCOMES, 0
    )
    assert _values(metrics, "portal_pulse_dead_letters_total", "reason") == dict.fromkeys(
        DEAD_LETTER_REASONS, 0
    )
    alerts = {
        (s.labels["kind"], s.labels["transition"]): s.value
        for s in _sampled_families(metrics)["portal_pulse_alerts_total"]
    }
    kinds = (*SLA_KINDS, *FOLLOWUP_KINDS)
    assert alerts == {(k, t): 0 for k in kinds for t in ("raised", "resolved", "withdrawn")}
    batches = {
        s.labels["table"]
        for s in _sampled_families(metrics)["portal_pulse_sink_batch_seconds"]
        if s.name.endswith("_count")
    }
    assert batches == set(TABLES)


def test_dead_letter_reasons_are_the_documented_ones() -> None:
    section = (DOCS / "events.md").read_text().split("### Reason codes", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([a-z_]+)` \|", section, re.M)
    assert documented and tuple(documented) == DEAD_LETTER_REASONS


def test_the_reasons_the_code_refuses_with_are_documented() -> None:
    """A new ``Rejected("reason", …)`` in the code must join the list (and so start at 0)."""
    root = Path(__file__).resolve().parents[2]
    used: set[str] = set()
    for folder in ("portal_pulse", "schemas", "streams", "sinks"):
        for path in (root / folder).rglob("*.py"):
            used.update(re.findall(r'Rejected\(\s*"([a-z_]+)"', path.read_text()))
    assert used, "found the refusals"
    assert used <= set(DEAD_LETTER_REASONS), sorted(used - set(DEAD_LETTER_REASONS))


def test_a_worker_registry_after_build_app_has_every_family_sampled(tmp_path: Path) -> None:
    """The worker's own registry, as its /metrics serves it before any partition is assigned
    (role ``process``: no ClickHouse to open in this process)."""
    from portal_pulse.settings import Settings
    from streams.app import build_app

    settings = Settings(data_dir=tmp_path / "data", pseudonym_key="k" * 40, topic_prefix="minit")
    _app, runtime = build_app(settings, "127.0.0.1:9", role="process")
    try:
        families = _sampled_families(runtime.metrics)
    finally:
        for producer in runtime.producers:
            producer.stop()
    empty = {name for name, samples in families.items() if not samples}
    assert set(families) == set(METRIC_NAMES)
    assert empty == PER_PARTITION
