"""Retention of the topics that hold raw patient ids (portal_pulse/kafka_admin.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from portal_pulse.kafka_admin import retention_configs
from portal_pulse.settings import Settings

HOUR_MS = 3_600_000


def test_raw_and_dead_letter_topics_are_kept_a_week_and_two_by_default() -> None:
    settings = Settings(topic_prefix="t")
    configs = retention_configs(settings)
    assert set(configs) == {*settings.topics.raw.values(), settings.topics.dead_letter}
    for topic in settings.topics.raw.values():
        assert configs[topic] == {"retention.ms": str(168 * HOUR_MS)}
    assert configs["t.events.deadletter"] == {"retention.ms": str(336 * HOUR_MS)}


def test_retention_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTAL_PULSE_RAW_RETENTION_HOURS", "24")
    monkeypatch.setenv("PORTAL_PULSE_DEADLETTER_RETENTION_HOURS", "72")
    settings = Settings(topic_prefix="t")
    configs = retention_configs(settings)
    assert configs["t.raw.portal"] == {"retention.ms": str(24 * HOUR_MS)}
    assert configs["t.events.deadletter"] == {"retention.ms": str(72 * HOUR_MS)}


@pytest.mark.parametrize("hours", ["0", "-1", "soon"])
def test_retention_must_be_a_positive_number_of_hours(
    monkeypatch: pytest.MonkeyPatch, hours: str
) -> None:
    monkeypatch.setenv("PORTAL_PULSE_RAW_RETENTION_HOURS", hours)
    with pytest.raises(ValidationError):
        Settings()
