"""When a partition counts as caught up: the basis of the idle clock and of --exit-when-idle."""

from __future__ import annotations

from types import SimpleNamespace

from faust.types import TP

from streams.progress import Progress

TP0 = TP("clean", 0)


def app_with(highwater: int | None, committed: int | None = None) -> SimpleNamespace:
    consumer = SimpleNamespace(highwater=lambda tp: highwater, _committed_offset={TP0: committed})
    return SimpleNamespace(consumer=consumer)


def test_caught_up_once_the_last_offset_is_processed() -> None:
    progress = Progress(["clean"])
    assert progress.caught_up(app_with(0), TP0), "an empty partition"
    assert not progress.caught_up(app_with(10), TP0)
    progress.done(TP0, 8)
    assert not progress.caught_up(app_with(10), TP0)
    progress.done(TP0, 9)
    assert progress.caught_up(app_with(10), TP0)
    assert not progress.caught_up(app_with(None), TP0), "high-water mark not known yet"


def test_after_a_restart_with_nothing_new_the_committed_offset_decides() -> None:
    progress = Progress(["clean"])
    assert progress.caught_up(app_with(10, committed=10), TP0)
    assert not progress.caught_up(app_with(10, committed=7), TP0)
    assert not progress.caught_up(app_with(10, committed=None), TP0)
