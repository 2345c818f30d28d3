"""The Alertmanager sink: the v2 alert it builds (labels, annotations, times), and delivery, resends
and ordering against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from portal_pulse.domain.followups import FOLLOWUP_KINDS
from portal_pulse.domain.records import Alert
from portal_pulse.domain.sla import ALERT_KINDS
from portal_pulse.errors import UserError
from portal_pulse.metrics import PipelineMetrics
from portal_pulse.notify.alertmanager import (
    AlertmanagerSink,
    alertmanager_alert,
    alertmanager_from_settings,
)
from portal_pulse.notify.describe import alert_name, check_link_template, severity
from portal_pulse.notify.sender import AlertSender
from portal_pulse.roles import topics_read
from portal_pulse.settings import Settings
from tests.unit.notify.conftest import Receiver

T0 = datetime(2026, 1, 5, 14, 0, tzinfo=UTC)  # 09:00 in New York
PSEUDONYM = "0123456789abcdef0123456789abcdef"
ZONE = "America/New_York"
LIFETIME = timedelta(minutes=3)


def sla_alert(n: int = 0, **changes: Any) -> Alert:
    base = Alert(
        alert_id=f"{n:064x}",
        kind="sla.breached",
        practice_id="practice-w",
        subject_id=f"thread-{n}",
        patient_pseudonym=PSEUDONYM,
        category="clinical",
        staff_pool="nurse",
        due_at=T0,
        raised_at=T0 + timedelta(minutes=1),
        updated_at=T0 + timedelta(minutes=1),
    )
    return Alert(**{**base.as_dict(), **changes})


def followup() -> Alert:
    """A follow-up: its subject_id IS the patient's pseudonym."""
    return sla_alert(
        7, kind="enrollment.dormant", subject_id=PSEUDONYM, category=None, staff_pool="front_desk"
    )


def build(alert: Alert, now: datetime = T0 + timedelta(minutes=2), **kw: Any) -> dict[str, Any]:
    return alertmanager_alert(alert, now=now, zone=ZONE, lifetime=LIFETIME, **kw)


def test_an_open_alert_carries_the_routing_labels_and_stays_active_a_few_resends() -> None:
    now = T0 + timedelta(minutes=2)
    body = build(sla_alert(), now)
    assert body["labels"] == {
        "alertname": "PortalPulseSlaBreached",
        "alert_id": f"{0:064x}",
        "practice_id": "practice-w",
        "kind": "sla.breached",
        "staff_pool": "nurse",
        "category": "clinical",
        "severity": "critical",
    }
    assert body["startsAt"] == "2026-01-05T14:01:00.000Z"
    assert body["endsAt"] == "2026-01-05T14:05:00.000Z"  # now + the lifetime
    notes = body["annotations"]
    assert notes["due"] == "2026-01-05 09:00 EST"  # the practice's zone, not UTC
    assert notes["status"] == "raised"
    assert notes["summary"] == (
        "SLA breached: practice practice-w, nurse pool, category clinical; due 2026-01-05 09:00 EST"
    )
    assert "withdrawn" not in notes and "link" not in notes and "generatorURL" not in body


def test_resolution_and_withdrawal_end_the_alert_at_their_instant() -> None:
    raised = sla_alert()
    now = T0 + timedelta(hours=1)
    resolved = build(raised.resolve(T0 + timedelta(minutes=5)), now)
    assert resolved["endsAt"] == "2026-01-05T14:05:00.000Z"
    assert resolved["annotations"]["status"] == "resolved"
    assert resolved["annotations"]["resolved"] == "2026-01-05 09:05 EST"
    withdrawn = build(raised.withdraw(T0 + timedelta(minutes=4)), now)
    assert withdrawn["endsAt"] == "2026-01-05T14:04:00.000Z"
    assert withdrawn["annotations"]["status"] == "withdrawn"
    assert withdrawn["annotations"]["withdrawn"].startswith("withdrawn 2026-01-05 09:04 EST")
    assert withdrawn["labels"] == build(raised, now)["labels"]  # the same Alertmanager alert


def test_an_end_is_never_after_now_nor_before_the_start() -> None:
    raised = sla_alert()
    ahead = build(raised.resolve(T0 + timedelta(minutes=9)), now=T0 + timedelta(minutes=3))
    assert ahead["endsAt"] == "2026-01-05T14:03:00.000Z"  # over now, not minutes later
    before = build(raised.withdraw(T0), now=T0 + timedelta(hours=1))
    assert before["endsAt"] == before["startsAt"]  # Alertmanager refuses an end before a start


def test_no_label_or_annotation_carries_the_patient() -> None:
    alert = followup()
    for version in (alert, alert.resolve(T0 + timedelta(hours=1)), alert.withdraw(T0)):
        body = build(version, link_template="https://dash.example/{practice_id}/{kind}")
        text = json.dumps(body)
        assert PSEUDONYM not in text
        assert "category" not in body["labels"]  # an empty label is omitted
        assert body["labels"]["severity"] == "info"
    assert "thread-0" not in json.dumps(build(sla_alert()))


def test_names_and_severities_for_every_kind() -> None:
    assert [alert_name(k) for k in ALERT_KINDS] == [
        "PortalPulseSlaAtRisk",
        "PortalPulseSlaInternalMissed",
        "PortalPulseSlaBreached",
    ]
    assert [severity(k) for k in ALERT_KINDS] == ["warning", "critical", "critical"]
    assert {severity(k) for k in FOLLOWUP_KINDS} == {"info"}
    assert alert_name("enrollment.invite_not_activated") == (
        "PortalPulseEnrollmentInviteNotActivated"
    )


def test_the_link_template_takes_only_practice_and_kind() -> None:
    body = build(
        sla_alert(practice_id="a b"), link_template="https://d.example/{practice_id}?k={kind}"
    )
    assert body["annotations"]["link"] == "https://d.example/a%20b?k=sla.breached"
    assert body["generatorURL"] == body["annotations"]["link"]
    for bad in ("https://d/{subject_id}", "https://d/{patient_pseudonym}", "https://d/{0}", "{"):
        with pytest.raises(UserError):
            check_link_template(bad)
    with pytest.raises(UserError):
        alertmanager_from_settings(
            Settings(alertmanager_url="http://am:9093", alert_link_template="x/{alert_id}")
        )
    with pytest.raises(UserError):
        alertmanager_from_settings(Settings(alertmanager_url="am:9093"))


def sink(base: str, **kw: Any) -> AlertmanagerSink:
    kw.setdefault("timeout", 2.0)
    kw.setdefault("max_attempts", 4)
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("backoff_max", 0.05)
    return AlertmanagerSink(base, zone_of=lambda _: ZONE, **kw)


def test_delivers_to_the_v2_api_and_resends_only_open_alerts(receiver: Receiver) -> None:
    receiver.script = [(503, {}, 0.0)]  # the first POST fails: retried
    s = sink(receiver.base + "/", resend_seconds=3600)

    async def scenario() -> None:
        await s.start()
        s.submit(sla_alert(1))
        s.submit(sla_alert(2))
        s.submit(sla_alert(2).resolve(T0 + timedelta(minutes=5)))
        assert s.open_alerts == 1
        assert s.resend() == 1
        await s.stop(drain_timeout=10)

    asyncio.run(scenario())
    assert {path for path, _, _ in receiver.requests} == {"/api/v2/alerts"}
    assert s.stats.delivered == 4 and s.stats.failed_attempts == 1
    bodies = receiver.bodies
    assert all(isinstance(b, list) for b in bodies)

    # Alerts 1 and 2 go their own ways (4 senders; alert 1 is retried after back-off), so
    # only each alert's own requests have an order: alert 1's last one is the resend.
    def ids(body: list[dict]) -> list[str]:
        return [a["labels"]["alert_id"] for a in body]

    one = [b for b in bodies if ids(b) == [f"{1:064x}"]]
    two = [b for b in bodies if f"{2:064x}" in ids(b)]
    assert len(one) >= 2, "delivered, then re-sent while open"
    assert one[-1][0]["endsAt"] > datetime.now(UTC).isoformat()  # still active
    # Alert 2's requests: raised, then resolved (one more if the scripted 503 hit it first);
    # the resend holds alert 1 alone.
    assert len(two) == 2 + (len(one) == 2), "the resolved alert is not re-sent"
    assert all(len(ids(b)) == 1 for b in bodies)
    ends = {a["labels"]["alert_id"]: a["endsAt"] for b in bodies for a in b}
    assert ends[f"{2:064x}"] == "2026-01-05T14:05:00.000Z"


def test_the_open_set_is_bounded_to_the_newest(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    s = sink("http://127.0.0.1:9", max_open=2)
    for n in range(3):
        s.submit(sla_alert(n))
    assert (s.open_alerts, s.open_evicted) == (2, 1)
    assert PSEUDONYM not in caplog.text and "thread-" not in caplog.text


def test_a_resend_batch_never_overtakes_an_alerts_later_version(receiver: Receiver) -> None:
    """Y is in flight (answered slowly); a batch with X and Y waits for it, and X's later
    request waits for the batch: the order each alert's requests were queued in holds."""
    receiver.delays = {'"Y"': 0.5}
    sender = AlertSender(receiver.base, name="test", timeout=5, max_attempts=1, concurrency=4)

    async def scenario() -> None:
        await sender.start()
        sender.enqueue(["Y"], "Y", {"id": "Y"})
        await asyncio.sleep(0.1)  # lets a sender take Y (ordering holds either way)
        sender.enqueue(["X", "Y"], "batch", {"id": "batch"})
        sender.enqueue(["X"], "X", {"id": "X"})
        sender.enqueue(["Z"], "Z", {"id": "Z"})
        await sender.stop(drain_timeout=10)

    asyncio.run(scenario())
    order = [b["id"] for b in receiver.bodies]
    assert sorted(order) == ["X", "Y", "Z", "batch"]
    assert order.index("Y") < order.index("batch") < order.index("X")


def test_outcomes_are_counted_per_sink_from_zero(receiver: Receiver) -> None:
    metrics = PipelineMetrics()
    text = metrics.exposition().decode()
    for name in ("alertmanager", "pagerduty"):
        for outcome in ("delivered", "failed_attempt", "gave_up", "dropped", "rejected"):
            line = f'portal_pulse_alert_sink_deliveries_total{{outcome="{outcome}",sink="{name}"}}'
            assert f"{line} 0.0" in text
    settings = Settings(alertmanager_url=receiver.base, webhook_timeout_seconds=2)
    s = alertmanager_from_settings(settings, metrics)
    assert s is not None

    async def scenario() -> None:
        await s.start()
        s.submit(sla_alert())
        await s.stop(drain_timeout=10)

    asyncio.run(scenario())
    text = metrics.exposition().decode()
    assert (
        'portal_pulse_alert_sink_deliveries_total{outcome="delivered",sink="alertmanager"} 1.0'
        in text
    )


def test_a_process_worker_reads_the_alerts_topic_for_alertmanager_alone() -> None:
    settings = Settings(alertmanager_url="http://am:9093")
    assert settings.topics.alerts in topics_read(settings, "process")
    assert Settings().topics.alerts not in topics_read(Settings(), "process")
