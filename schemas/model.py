"""In-memory event records shared by the worker, the replay and the sinks."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["CleanEvent", "RawEvent"]


@dataclass(frozen=True, slots=True)
class RawEvent:
    """A validated source event; ``patient_id`` is PHI and never leaves ingest."""

    event_id: str
    event_type: str
    occurred_at: datetime
    practice_id: str
    patient_id: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CleanEvent:
    """A pseudonymized event: what every processor and sink sees."""

    event_id: str
    event_type: str
    occurred_at: datetime
    practice_id: str
    patient_pseudonym: str
    details: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str, default: Any = None) -> Any:
        return self.details.get(name, default)
