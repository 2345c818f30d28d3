"""PagerDuty Events API v2: the events checked against the documented schema, and delivery to a
real HTTP server on loopback standing in for events.pagerduty.com (this machine has no network).

The schema below is written from PagerDuty's public documentation ("Send an Alert Event",
developer.pagerduty.com, Events API v2): ``routing_key`` and ``event_action`` (``trigger``,
``acknowledge``, ``resolve``) required; ``dedup_key`` at most 255 characters; for a trigger,
``payload.summary`` (at most 1024 characters), ``payload.source`` and ``payload.severity``
(``critical``, ``error``, ``warning``, ``info``) required, ``payload.timestamp``, ``component``,
``group``, ``class`` and ``custom_details`` (an object) optional; ``images``, ``links`` (objects
with ``href``, optional ``text``), ``client`` and ``client_url`` optional at the top level.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from portal_pulse.domain.sla import ALERT_KINDS
from portal_pulse.errors import UserError
from portal_pulse.notify.pagerduty import pagerduty_event, pagerduty_from_settings
from portal_pulse.settings import Settings
from tests.unit.notify.conftest import Receiver
from tests.unit.notify.test_alertmanager import PSEUDONYM, T0, ZONE, followup, sla_alert

KEY = "R0UT1NGKEY0123456789abcdef012345"  # 32 characters, as PagerDuty issues them

TOP_LEVEL = {"routing_key", "event_action", "dedup_key", "payload", "images", "links", "client",
             "client_url"}  # fmt: skip
PAYLOAD_REQUIRED = {"summary", "source", "severity"}
PAYLOAD_OPTIONAL = {"timestamp", "component", "group", "class", "custom_details"}
SEVERITIES = {"critical", "error", "warning", "info"}


def check_event(event: dict[str, Any]) -> None:
    """Fails unless ``event`` is a valid Events API v2 alert event (documented shape above)."""
    assert set(event) <= TOP_LEVEL, set(event) - TOP_LEVEL
    assert isinstance(event["routing_key"], str) and event["routing_key"]
    assert event["event_action"] in {"trigger", "acknowledge", "resolve"}
    if "dedup_key" in event:
        assert isinstance(event["dedup_key"], str) and 0 < len(event["dedup_key"]) <= 255
    if event["event_action"] != "trigger":
        assert "dedup_key" in event  # a resolve without one matches nothing
        return
    payload = event["payload"]
    assert PAYLOAD_REQUIRED <= set(payload) <= PAYLOAD_REQUIRED | PAYLOAD_OPTIONAL
    assert isinstance(payload["summary"], str) and 0 < len(payload["summary"]) <= 1024
    assert isinstance(payload["source"], str) and payload["source"]
    assert payload["severity"] in SEVERITIES
    if "timestamp" in payload:
        datetime.fromisoformat(payload["timestamp"])
    for name in ("component", "group", "class"):
        assert isinstance(payload.get(name, ""), str)
    assert isinstance(payload.get("custom_details", {}), dict)
    for link in event.get("links", []):
        assert set(link) <= {"href", "text"} and link["href"]


def test_a_raise_is_a_documented_trigger_keyed_by_the_alert() -> None:
    alert = sla_alert()
    event = pagerduty_event(alert, KEY, zone=ZONE, link_template="https://d.example/{kind}")
    check_event(event)
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == alert.alert_id
    assert event["links"] == [{"href": "https://d.example/sla.breached", "text": "Portal Pulse"}]
    payload = event["payload"]
    assert payload["severity"] == "critical"
    assert payload["group"] == "practice-w"
    assert payload["class"] == "sla.breached"
    assert payload["component"] == "nurse"
    assert payload["timestamp"] == "2026-01-05T14:01:00.000Z"
    assert payload["summary"].endswith("due 2026-01-05 09:00 EST")
    assert payload["custom_details"]["due"] == "2026-01-05 09:00 EST"
    assert payload["custom_details"]["alert_id"] == alert.alert_id


@pytest.mark.parametrize("end", ["resolve", "withdraw"])
def test_a_resolution_or_withdrawal_resolves_the_same_dedup_key(end: str) -> None:
    alert = sla_alert()
    version = getattr(alert, end)(T0 + timedelta(minutes=5))
    event = pagerduty_event(version, KEY, zone=ZONE)
    check_event(event)
    assert event == {"routing_key": KEY, "event_action": "resolve", "dedup_key": alert.alert_id}


def test_severities_and_no_patient_anywhere() -> None:
    levels = [pagerduty_event(sla_alert(kind=k), KEY, zone=ZONE)["payload"]["severity"]
              for k in ALERT_KINDS]  # fmt: skip
    assert levels == ["warning", "error", "critical"]
    event = pagerduty_event(followup(), KEY, zone=ZONE)
    check_event(event)
    assert event["payload"]["severity"] == "info"
    assert PSEUDONYM not in json.dumps(event)
    assert "thread-0" not in json.dumps(pagerduty_event(sla_alert(), KEY, zone=ZONE))


def test_delivery_retries_a_rate_limit_and_never_logs_the_key(
    receiver: Receiver, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.default = 202  # PagerDuty accepts an event with 202
    receiver.script = [(429, {"Retry-After": "0"}, 0.0)]
    key_file = tmp_path / "pagerduty_key"
    key_file.write_text(KEY + "\n")
    settings = Settings(
        pagerduty_routing_key_file=key_file,
        pagerduty_url=receiver.base + "/v2/enqueue",
        webhook_timeout_seconds=2,
        practices_file=None,
    )
    assert KEY not in json.dumps(settings.safe_dump())
    sink = pagerduty_from_settings(settings)
    assert sink is not None
    alert = sla_alert()

    async def scenario() -> None:
        await sink.start()
        sink.submit(alert)
        sink.submit(alert.withdraw(T0 + timedelta(minutes=2)))
        await sink.stop(drain_timeout=10)

    asyncio.run(scenario())
    assert sink.stats.delivered == 2 and sink.stats.failed_attempts == 1
    assert {path for path, _, _ in receiver.requests} == {"/v2/enqueue"}
    actions = [b["event_action"] for b in receiver.bodies]
    assert actions == ["trigger", "trigger", "resolve"]  # the 429, its retry, then the resolve
    for body in receiver.bodies:
        check_event(body)
        assert body["routing_key"] == KEY
    assert KEY not in caplog.text and PSEUDONYM not in caplog.text


def test_the_key_never_crosses_plain_http_beyond_loopback() -> None:
    with pytest.raises(UserError):
        pagerduty_from_settings(
            Settings(pagerduty_routing_key=KEY, pagerduty_url="http://pd.example/v2/enqueue")
        )
    assert pagerduty_from_settings(Settings()) is None
