"""The worker's collector settings: young collections far apart, what the app built frozen."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from portal_pulse.worker import GC_YOUNG_THRESHOLD, tune_collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_collector")
def test_tuning_raises_the_young_threshold_and_freezes_what_exists() -> None:
    _, older, oldest = gc.get_threshold()
    built = [object() for _ in range(3)]  # noqa: F841 - alive across the call
    tune_collector()
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, older, oldest)
    assert gc.get_freeze_count() > 0


@pytest.mark.usefixtures("restored_collector")
def test_the_collector_stays_on() -> None:
    """Cycles are still collected, only later: tuning never turns the collector off."""
    tune_collector()
    assert gc.isenabled()
