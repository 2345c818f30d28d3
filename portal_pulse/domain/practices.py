"""Per-practice rules (SPEC §3): time zone, opening hours, holidays, SLA targets, follow-up thresholds.

TODO(helper): YAML loading with `default` inheritance and validation goes here.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StaleThresholds"]


@dataclass(frozen=True, slots=True)
class StaleThresholds:
    """SPEC §6 follow-up thresholds, whole days of elapsed time (N × 24 h)."""

    invite_not_activated_days: int = 7
    no_first_login_days: int = 7
    app_not_installed_days: int = 14
    dormant_days: int = 90
