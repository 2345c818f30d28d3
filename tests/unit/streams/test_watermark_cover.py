"""Watermarks from several ingest workers: each speaks for its raw partitions (streams/watermark)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from faust.types import TP

from streams.watermark import combine, cover_value, raw_index, read_cover

T0 = datetime(2026, 1, 5, 12, tzinfo=UTC)


def test_cover_round_trip() -> None:
    index = raw_index(["raw.b", "raw.a"], 2)
    assert list(index) == [TP("raw.a", 0), TP("raw.a", 1), TP("raw.b", 0), TP("raw.b", 1)]
    value = cover_value([TP("raw.a", 1), TP("raw.b", 1)], index, caught_up=True)
    assert read_cover({"pp-wm-cover": value}) == (0b1010, True)
    assert read_cover({}) is None


def test_one_worker_covering_everything_is_followed_as_is() -> None:
    latest, done = [-1] * 4, [False] * 4
    for minutes in (1, 5, 9):
        at = T0 + timedelta(minutes=minutes)
        assert combine(latest, done, at, (0b1111, False)) == at
        assert combine(latest, done, at, None) == at  # a header without a cover: everything
    at = T0 + timedelta(minutes=20)
    assert combine(latest, done, at, (0b1111, True)) == at


def test_a_fast_worker_does_not_move_the_clock_past_a_slow_one() -> None:
    latest, done = [-1] * 4, [False] * 4
    slow, fast = T0, T0 + timedelta(days=3)
    assert combine(latest, done, fast, (0b0011, False)) is None  # the others unknown: hold
    assert combine(latest, done, slow, (0b1100, False)) == slow
    assert combine(latest, done, fast + timedelta(days=1), (0b0011, False)) == slow
    later = slow + timedelta(hours=5)
    assert combine(latest, done, later, (0b1100, False)) == later
    # A worker says the pipeline is caught up (it checked the others' commits): the highest.
    assert combine(latest, done, later, (0b1100, True)) == fast + timedelta(days=1)
    assert done == [True] * 4
    # A record from the other worker afterwards: new input, so back to the lowest.
    assert combine(latest, done, fast + timedelta(days=2), (0b0011, False)) == later
    assert done == [False, False, True, True]


def test_records_from_a_fast_worker_never_pass_a_slow_one() -> None:
    """Worker A (bits 0-1) announced the pipeline caught up; then new records arrive on both
    workers' partitions and B (bits 2-3) reads far ahead: the clock stays at A's time until A's
    own records say how far it has got."""
    latest, done = [-1] * 4, [False] * 4
    a_time = T0 + timedelta(hours=2)
    assert combine(latest, done, T0, (0b1100, False)) is None
    assert combine(latest, done, a_time, (0b0011, True)) == a_time  # caught up: the highest
    for hours in (3, 30, 300):
        assert combine(latest, done, T0 + timedelta(hours=hours), (0b1100, False)) == a_time
    assert combine(latest, done, T0 + timedelta(hours=400), (0b0011, False)) == T0 + timedelta(
        hours=300
    )
