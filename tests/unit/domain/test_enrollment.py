"""The per-patient enrollment record: SPEC §4 implied enrollment, order-independent folding."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from itertools import permutations
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portal_pulse.domain.enrollment import Enrollment, from_iso, to_iso
from portal_pulse.domain.instants import to_us
from schemas.model import CleanEvent

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def us(at: datetime) -> int:
    return to_us(at)


def ev(event_type: str, at: datetime, **details: Any) -> CleanEvent:
    return CleanEvent(
        event_id=f"{event_type}@{at.isoformat()}",
        event_type=event_type,
        occurred_at=at,
        practice_id="p1",
        patient_pseudonym="a" * 32,
        details=details,
    )


def fold(*events: CleanEvent) -> Enrollment:
    record = Enrollment()
    for event in events:
        record = record.with_event(event)
    return record


def test_first_pending_invitation_is_kept() -> None:
    later = T0 + timedelta(days=3)
    assert fold(ev("portal.invited", T0), ev("portal.invited", later)).invited_at == us(T0)
    # A late-arriving earlier invitation was the first one.
    assert fold(ev("portal.invited", later), ev("portal.invited", T0)).invited_at == us(T0)


def test_enrollment_clears_the_pending_invitation_and_later_invitations_are_ignored() -> None:
    record = fold(ev("portal.invited", T0), ev("portal.enrolled", T0 + timedelta(days=1)))
    assert record.invited_at is None
    assert record.enrolled_at == us(T0 + timedelta(days=1))
    assert record.with_event(ev("portal.invited", T0 + timedelta(days=2))).invited_at is None


def test_first_login_without_enrollment_implies_enrollment() -> None:
    record = fold(
        ev("portal.invited", T0), ev("portal.login", T0 + timedelta(hours=5), channel="web")
    )
    assert record.enrolled_at == us(T0 + timedelta(hours=5))
    assert record.first_login_at == record.last_login_at == us(T0 + timedelta(hours=5))
    assert record.invited_at is None
    assert record.app_installed_at is None


def test_explicit_enrollment_after_an_implied_one_does_not_move_it() -> None:
    login, enrolled = T0, T0 + timedelta(days=1)
    record = fold(ev("portal.login", login, channel="web"), ev("portal.enrolled", enrolled))
    assert record.enrolled_at == us(login)


def test_earlier_explicit_enrollment_arriving_late_wins() -> None:
    login, enrolled = T0 + timedelta(days=1), T0
    record = fold(ev("portal.login", login, channel="web"), ev("portal.enrolled", enrolled))
    assert record.enrolled_at == us(enrolled)


def test_mobile_login_counts_as_app_install_and_web_login_does_not() -> None:
    assert fold(ev("portal.login", T0, channel="web")).app_installed_at is None
    assert fold(ev("portal.login", T0, channel="mobile_app")).app_installed_at == us(T0)
    record = fold(ev("app.installed", T0 + timedelta(days=2), platform="ios"))
    assert record.app_installed_at == us(T0 + timedelta(days=2))
    assert not record.is_enrolled  # installing the app is not enrolling


def test_logins_track_first_and_latest() -> None:
    days = [T0 + timedelta(days=d) for d in (0, 10, 4)]
    record = fold(*(ev("portal.login", d, channel="web") for d in days))
    assert record.first_login_at == us(T0)
    assert record.last_login_at == us(T0 + timedelta(days=10))


def test_fold_is_order_independent() -> None:
    events = [
        ev("portal.enrolled", T0 + timedelta(days=1), method="self"),
        ev("portal.login", T0 + timedelta(days=2), channel="web"),
        ev("app.installed", T0 + timedelta(days=3), platform="android"),
        ev("portal.login", T0 + timedelta(days=9), channel="mobile_app"),
    ]
    results = {fold(*order) for order in permutations(events)}
    assert len(results) == 1


def test_unrelated_events_leave_the_record_unchanged() -> None:
    record = fold(ev("portal.enrolled", T0))
    assert record.with_event(ev("message.sent", T0, thread_id="t")) is record


def test_enrolled_by_is_inclusive() -> None:
    record = fold(ev("portal.enrolled", T0))
    assert not record.enrolled_by(us(T0 - timedelta(seconds=1)))
    assert record.enrolled_by(us(T0))


def test_instants_are_canonical_utc() -> None:
    plus9 = timezone(timedelta(hours=9))
    local = datetime(2026, 1, 5, 18, 0, tzinfo=plus9)
    assert to_iso(local) == "2026-01-05T09:00:00+00:00"
    assert to_iso(to_us(local)) == "2026-01-05T09:00:00+00:00"
    assert from_iso("2026-01-05T18:00:00+09:00") == T0
    assert from_iso(to_iso(local)).tzinfo is UTC


def test_naive_instants_are_rejected() -> None:
    with pytest.raises(ValueError):
        to_iso(datetime(2026, 1, 5, 9, 0))
    with pytest.raises(ValueError):
        from_iso("2026-01-05T09:00:00")
    with pytest.raises(ValueError):
        Enrollment().with_event(ev("portal.enrolled", datetime(2026, 1, 5, 9, 0)))


_instants_us = st.none() | st.integers(0, 2_000_000_000_000_000)
_kinds = st.sampled_from(["portal.invited", "portal.enrolled", "portal.login", "app.installed"])


@given(
    st.builds(Enrollment, _instants_us, _instants_us, _instants_us, _instants_us, _instants_us),
    _kinds,
    st.integers(0, 2_000_000_000),
    st.sampled_from(["web", "mobile_app"]),
)
def test_each_event_changes_exactly_its_fields(
    record: Enrollment, kind: str, seconds: int, channel: str
) -> None:
    """``with_event`` builds the record field by field (no ``dataclasses.replace``): each kind
    sets the fields SPEC §4 names and keeps every other one."""
    at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    t = to_us(at)
    after = record.with_event(ev(kind, at, channel=channel))

    def low(v: int | None) -> int:
        return t if v is None else min(v, t)

    if kind == "portal.invited":
        want = record if record.is_enrolled else replace(record, invited_at=low(record.invited_at))
    elif kind == "portal.enrolled":
        want = replace(record, invited_at=None, enrolled_at=low(record.enrolled_at))
    elif kind == "portal.login":
        app = low(record.app_installed_at) if channel == "mobile_app" else record.app_installed_at
        last = t if record.last_login_at is None else max(record.last_login_at, t)
        want = replace(
            record,
            invited_at=None,
            enrolled_at=low(record.enrolled_at),
            first_login_at=low(record.first_login_at),
            app_installed_at=app,
            last_login_at=last,
        )
    else:
        want = replace(record, app_installed_at=low(record.app_installed_at))
    assert after == want
