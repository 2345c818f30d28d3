"""The worker's Prometheus metrics: names and labels are a contract (dashboards, alert rules).

One registry per worker (not the process-global default), so tests can build several apps in one
process. Label values are topics, partitions, table names, reasons and kinds — never a patient
identifier or pseudonym.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from portal_pulse.domain.followups import FOLLOWUP_KINDS
from portal_pulse.domain.sla import ALERT_KINDS as SLA_ALERT_KINDS
from sinks.rows import TABLES

if TYPE_CHECKING:
    from portal_pulse.reports.monthly_rows import RefreshResult

__all__ = ["METRIC_NAMES", "PipelineMetrics"]

# Counters without their *_created companions: nothing here reads them.
disable_created_metrics()

# Every metric family this module exports (the Grafana dashboards may use only these).
METRIC_NAMES = (
    "portal_pulse_events_total",
    "portal_pulse_dead_letters_total",
    "portal_pulse_consumer_lag",
    "portal_pulse_event_clock_lag_seconds",
    "portal_pulse_alerts_total",
    "portal_pulse_alert_emit_delay_seconds",
    "portal_pulse_sink_rows_total",
    "portal_pulse_sink_errors_total",
    "portal_pulse_sink_batch_seconds",
    "portal_pulse_webhook_deliveries_total",
    "portal_pulse_webhook_cutoffs_total",
    "portal_pulse_alert_sink_deliveries_total",
    "portal_pulse_state_keys",
    "portal_pulse_rebalances_total",
    "portal_pulse_ready",
    "portal_pulse_stall_rereads_total",
    "portal_pulse_rollup_refed_events_total",
    "portal_pulse_event_lateness_seconds",
    "portal_pulse_late_events_total",
    "portal_pulse_alert_corrections_total",
    "portal_pulse_consumer_loop_events_total",
    "portal_pulse_monthly_refresh_seconds",
    "portal_pulse_monthly_refreshed_rows_total",
    "portal_pulse_monthly_refresh_errors_total",
)

SOURCES = ("ehr", "portal", "billing", "phone", "survey")
ALERT_KINDS = (*SLA_ALERT_KINDS, *FOLLOWUP_KINDS)
ALERT_TRANSITIONS = ("raised", "resolved", "withdrawn")
EVENT_OUTCOMES = ("clean", "dead_letter", "duplicate")
WEBHOOK_OUTCOMES = ("delivered", "failed_attempt", "gave_up", "dropped", "rejected")
WEBHOOK_CUTOFF_REASONS = ("deadline", "body_limit")
# The Alertmanager and PagerDuty sinks (portal_pulse/notify), with the webhook's outcomes.
ALERT_SINKS = ("alertmanager", "pagerduty")
STATE_TABLES = ("sla", "followups", "live", "dedup")
# What the consumer loop counts (streams/consumer_loop.py LoopStats, docs/delivery-guarantees.md).
LOOP_EVENTS = (
    "paused",  # a topic paused for back-pressure
    "dropped_stale",  # records of an earlier assignment, never handed over
    "dropped_repeat",  # records below the next offset expected, never handed over
    "commit_error",  # a commit refused or failed (sent again)
    "restored_record",  # changelog records read at an assignment
    "standby_key",  # keys taken from standby replicas at an assignment
)
# The reason codes of docs/events.md ("Reason codes"), in its order; a unit test keeps them equal.
DEAD_LETTER_REASONS = (
    "undecodable", "bad_encoding", "invalid_json", "not_an_object", "details_mismatch",
    "missing_field", "empty_field", "wrong_type", "identifier_too_long", "bad_identifier",
    "bad_practice_id", "unknown_event_type", "bad_timestamp", "timestamp_out_of_range", "bad_enum",
    "non_positive_amount", "bad_currency", "score_out_of_range", "conflicting_duplicate",
    "unprocessable", "processing_error", "bad_header", "bad_internal_record",
)  # fmt: skip
LATE_OUTCOMES = ("reordered", "corrected", "beyond_horizon")
CORRECTION_ACTIONS = ("withdrawn", "raised_late")
CORRECTED_KINDS = (*ALERT_KINDS, "response")


class PipelineMetrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.events = Counter(
            "portal_pulse_events",
            "Raw records ingested, by outcome (clean, dead_letter, duplicate).",
            ["outcome"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "portal_pulse_dead_letters",
            "Records refused, by reason (docs/events.md lists the reasons).",
            ["reason"],
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "portal_pulse_consumer_lag",
            "Messages between this worker's position and the log end, per assigned partition.",
            ["topic", "partition"],
            registry=registry,
        )
        self.event_clock_lag = Gauge(
            "portal_pulse_event_clock_lag_seconds",
            "Wall time minus the event-time clock of each clean partition this worker owns.",
            ["partition"],
            registry=registry,
        )
        self.alerts = Counter(
            "portal_pulse_alerts",
            "Alert records delivered to Kafka, by kind and transition (raised, resolved, "
            "withdrawn).",
            ["kind", "transition"],
            registry=registry,
        )
        self.alert_emit_delay = Histogram(
            "portal_pulse_alert_emit_delay_seconds",
            "From the moment the event clock passed a deadline to the alert delivered to Kafka.",
            buckets=(0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600, float("inf")),
            registry=registry,
        )
        self.sink_rows = Counter(
            "portal_pulse_sink_rows",
            "Rows inserted into ClickHouse, by table.",
            ["table"],
            registry=registry,
        )
        self.sink_errors = Counter(
            "portal_pulse_sink_errors",
            "Failed ClickHouse inserts (each is retried), by table.",
            ["table"],
            registry=registry,
        )
        self.sink_batch_seconds = Histogram(
            "portal_pulse_sink_batch_seconds",
            "Time to write one batch to ClickHouse, retries included.",
            ["table"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, float("inf")),
            registry=registry,
        )
        self.webhook_deliveries = Counter(
            "portal_pulse_webhook_deliveries",
            "Webhook calls, by outcome (delivered, failed_attempt, gave_up, dropped, rejected).",
            ["outcome"],
            registry=registry,
        )
        self.webhook_cutoffs = Counter(
            "portal_pulse_webhook_cutoffs",
            "Webhook attempts cut short, by reason (deadline: the attempt's overall deadline "
            "passed; body_limit: the response body passed the bound and was not read on).",
            ["reason"],
            registry=registry,
        )
        self.alert_sink_deliveries = Counter(
            "portal_pulse_alert_sink_deliveries",
            "Alertmanager and PagerDuty calls, by sink and outcome (delivered, failed_attempt, "
            "gave_up, dropped, rejected), as portal_pulse_webhook_deliveries_total counts them.",
            ["sink", "outcome"],
            registry=registry,
        )
        self.state_keys = Gauge(
            "portal_pulse_state_keys",
            "Keys held in each state table by this worker.",
            ["table"],
            registry=registry,
        )
        self.rebalances = Counter(
            "portal_pulse_rebalances",
            "Consumer group rebalances this worker went through.",
            registry=registry,
        )
        self.ready = Gauge(
            "portal_pulse_ready",
            "1 when /readyz answers 200: state recovered, caught up, ClickHouse answering.",
            registry=registry,
        )
        self.stall_rereads = Counter(
            "portal_pulse_stall_rereads",
            "Partitions read again after their commits stalled: always 0 since the consumer loop "
            "commits exactly what was processed (kept so existing dashboards keep the series).",
            registry=registry,
        )
        self.rollup_refed = Counter(
            "portal_pulse_rollup_refed_events",
            "Events fed to the monthly rollup again when a sink met a partition, in case a "
            "crash cut their insert short.",
            registry=registry,
        )
        self.event_lateness = Histogram(
            "portal_pulse_event_lateness_seconds",
            "How far behind the rule clock events arrive (clock minus occurred_at), by source.",
            ["source"],
            buckets=(0, 1, 5, 30, 60, 300, 900, 3600, 4 * 3600, 86400, 7 * 86400, 30 * 86400),
            registry=registry,
        )
        self.late_events = Counter(
            "portal_pulse_late_events",
            "Events that arrived behind their thread's or patient's last applied event: applied "
            "in event-time order with no change (reordered), with corrections (corrected), or "
            "too late to change anything (beyond_horizon).",
            ["source", "outcome"],
            registry=registry,
        )
        self.alert_corrections = Counter(
            "portal_pulse_alert_corrections",
            "Alerts (and response facts, kind=response) that later data corrected: withdrawn, "
            "or raised late.",
            ["kind", "action"],
            registry=registry,
        )
        self.loop_events = Counter(
            "portal_pulse_consumer_loop_events",
            "What the consumer loop did besides handing records over: back-pressure pauses, "
            "records dropped as stale or repeated, commit errors, state restored at assignment.",
            ["event"],
            registry=registry,
        )
        self.monthly_refresh_seconds = Histogram(
            "portal_pulse_monthly_refresh_seconds",
            "Time to refresh the stored monthly rows (monthly_portal_performance) from the "
            "computing view, once per refresh.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, float("inf")),
            registry=registry,
        )
        self.monthly_refreshed_rows = Counter(
            "portal_pulse_monthly_refreshed_rows",
            "Practice-months written to the stored monthly rows by refreshes.",
            registry=registry,
        )
        self.monthly_refresh_errors = Counter(
            "portal_pulse_monthly_refresh_errors",
            "Refreshes of the stored monthly rows that failed (tried again at the next one).",
            registry=registry,
        )
        self._initialise()

    def monthly_refreshed(self, result: RefreshResult) -> None:
        self.monthly_refresh_seconds.observe(result.seconds)
        self.monthly_refreshed_rows.inc(result.rows)

    def _initialise(self) -> None:
        """Give every labelled series its known label values at 0 from the start.

        A labelled counter has no sample until its first ``labels()`` call, so ``rate()`` and an
        alert rule on a fresh worker would see nothing instead of 0 (docs/operations.md,
        "Pipeline alert rules"). Only the per-partition gauges (consumer and event-clock lag)
        wait for partitions: their label values are not known before an assignment.
        """
        for source in SOURCES:
            self.event_lateness.labels(source)
            for late in LATE_OUTCOMES:
                self.late_events.labels(source, late)
        for kind in CORRECTED_KINDS:
            for action in CORRECTION_ACTIONS:
                self.alert_corrections.labels(kind, action)
        for kind in ALERT_KINDS:
            for transition in ALERT_TRANSITIONS:
                self.alerts.labels(kind, transition)
        for outcome in EVENT_OUTCOMES:
            self.events.labels(outcome)
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason)
        for table in TABLES:
            self.sink_rows.labels(table)
            self.sink_errors.labels(table)
            self.sink_batch_seconds.labels(table)
        for outcome in WEBHOOK_OUTCOMES:
            self.webhook_deliveries.labels(outcome)
        for reason in WEBHOOK_CUTOFF_REASONS:
            self.webhook_cutoffs.labels(reason)
        for sink in ALERT_SINKS:
            for outcome in WEBHOOK_OUTCOMES:
                self.alert_sink_deliveries.labels(sink, outcome)
        for table in STATE_TABLES:
            self.state_keys.labels(table)
        for event in LOOP_EVENTS:
            self.loop_events.labels(event)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
