"""What both the worker and the replay run after ingest: the same machines, built one way."""

from __future__ import annotations

from portal_pulse.domain.followups import FollowupMachine
from portal_pulse.domain.machine import KeyedMachine
from portal_pulse.domain.practices import Practices
from portal_pulse.domain.sla import SlaMachine
from portal_pulse.settings import Settings

__all__ = ["build_machines", "load_practices"]


def load_practices(settings: Settings) -> Practices:
    return Practices.load(settings.practices_file)


def build_machines(practices: Practices) -> list[KeyedMachine]:
    """SLA per thread, follow-ups per patient: keyed state, deadlines on the event-time clock."""
    return [
        SlaMachine(practices),
        FollowupMachine(lambda practice_id: practices.for_practice(practice_id).stale),
    ]
