"""SPEC §6 enrollment follow-ups, driven the way the worker and the replay host drive a machine."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portal_pulse.domain.enrollment import Enrollment
from portal_pulse.domain.followups import (
    APP_NOT_INSTALLED,
    DORMANT,
    INVITE_NOT_ACTIVATED,
    NO_FIRST_LOGIN,
    FollowupMachine,
    Followups,
    estimate_state_bytes,
    followup_alert_id,
    pack,
    state_bytes,
    unpack,
)
from portal_pulse.domain.instants import to_us
from portal_pulse.domain.machine import KeyedMachine, State
from portal_pulse.domain.practices import StaleThresholds
from portal_pulse.domain.records import Alert, ResponseFact
from schemas.model import CleanEvent

T0 = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)


def us(at: datetime) -> int:
    return to_us(at)


SEC = timedelta(seconds=1)
DAY = timedelta(days=1)
PATIENT = "0123456789abcdef0123456789abcdef"
DEFAULTS = StaleThresholds()


def ev(
    event_type: str, at: datetime, patient: str = PATIENT, practice: str = "p1", **details: Any
) -> CleanEvent:
    return CleanEvent(
        event_id=f"{practice}/{patient}/{event_type}@{at.isoformat()}",
        event_type=event_type,
        occurred_at=at,
        practice_id=practice,
        patient_pseudonym=patient,
        details=details,
    )


def invited(at: datetime, **kw: Any) -> CleanEvent:
    return ev("portal.invited", at, method="email", **kw)


def enrolled(at: datetime, **kw: Any) -> CleanEvent:
    return ev("portal.enrolled", at, **kw)


def login(at: datetime, channel: str = "web", **kw: Any) -> CleanEvent:
    return ev("portal.login", at, channel=channel, **kw)


def installed(at: datetime, **kw: Any) -> CleanEvent:
    return ev("app.installed", at, platform="ios", **kw)


@dataclass
class Collector:
    alerts: list[Alert] = field(default_factory=list)

    def alert(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def response(self, fact: ResponseFact) -> None:
        raise AssertionError("follow-ups emit no response facts")

    def of(self, kind: str) -> list[Alert]:
        return [a for a in self.alerts if a.kind == kind]


@dataclass
class Host:
    """A tiny host: event-time clock, deadline index by next_due, storage as the machine's bytes."""

    machine: KeyedMachine
    out: Collector = field(default_factory=Collector)
    store: dict[str, bytes] = field(default_factory=dict)

    def state(self, key: str) -> State | None:
        raw = self.store.get(key)
        return None if raw is None else self.machine.loads(key, raw)

    def _put(self, key: str, state: State | None) -> None:
        if state is None:
            self.store.pop(key, None)
        else:
            self.store[key] = self.machine.dumps(state)

    def advance(self, now: datetime) -> None:
        for key in list(self.store):
            state = self.state(key)
            assert state is not None
            due = self.machine.next_due(state)
            if due is not None and due < us(now):
                self._put(key, self.machine.advance(state, us(now), self.out))

    def feed(self, events: Iterable[CleanEvent], until: datetime | None = None) -> Collector:
        """Per event: advance the clock to its time, then apply it; finally advance to ``until``."""
        for event in events:
            self.advance(event.occurred_at)
            key = self.machine.key_for(event)
            if key is not None:
                self._put(key, self.machine.apply(self.state(key), event, self.out))
        if until is not None:
            self.advance(until)
        return self.out


def thresholds(**by_practice: StaleThresholds) -> Callable[[str], StaleThresholds]:
    return lambda practice_id: by_practice.get(practice_id, DEFAULTS)


def run(
    events: Iterable[CleanEvent],
    until: datetime,
    thresholds_for: Callable[[str], StaleThresholds] | None = None,
    in_time_order: bool = True,
) -> Collector:
    host = Host(FollowupMachine(thresholds_for or thresholds()))
    ordered = sorted(events, key=lambda e: e.occurred_at) if in_time_order else list(events)
    return host.feed(ordered, until)


# ---------------------------------------------------------------------------- keys


def test_keys_only_enrollment_events_per_practice_and_patient() -> None:
    machine = FollowupMachine(thresholds())
    for event in (invited(T0), enrolled(T0), login(T0), installed(T0)):
        assert machine.key_for(event) == f"p1|{PATIENT}"
    assert machine.key_for(ev("message.sent", T0, thread_id="t", category="other")) is None
    assert machine.key_for(ev("patient.seen", T0, encounter_id="e")) is None
    assert machine.name == "followups"


# ---------------------------------------------------------------------------- invite_not_activated


@pytest.mark.parametrize(("offset", "fires"), [(-SEC, False), (timedelta(0), False), (SEC, True)])
def test_invite_not_activated_fires_strictly_after_threshold(
    offset: timedelta, fires: bool
) -> None:
    due = T0 + 7 * DAY
    out = run([invited(T0)], until=due + offset)
    assert len(out.of(INVITE_NOT_ACTIVATED)) == int(fires)
    assert len(out.alerts) == int(fires)


def test_invite_not_activated_record() -> None:
    due = T0 + 7 * DAY
    (alert,) = run([invited(T0)], until=due + SEC).alerts
    assert alert.kind == INVITE_NOT_ACTIVATED
    assert alert.practice_id == "p1"
    assert alert.subject_id == alert.patient_pseudonym == PATIENT
    assert alert.category is None
    assert alert.staff_pool == "front_desk"
    assert alert.due_at == alert.raised_at == alert.updated_at == due
    assert alert.resolved_at is None and alert.response_business_minutes is None
    raw = f"{INVITE_NOT_ACTIVATED}|p1|{PATIENT}|{T0.isoformat()}"
    assert alert.alert_id == hashlib.sha256(raw.encode()).hexdigest()[:32]


@pytest.mark.parametrize(
    ("activation", "fires"),
    [(7 * DAY - SEC, False), (7 * DAY, False), (7 * DAY + SEC, True)],
)
def test_enrollment_around_the_due_time(activation: timedelta, fires: bool) -> None:
    out = run([invited(T0), enrolled(T0 + activation)], until=T0 + 30 * DAY)
    assert len(out.of(INVITE_NOT_ACTIVATED)) == (2 if fires else 0)


def test_enrollment_resolves_invite_not_activated() -> None:
    activated = T0 + 9 * DAY
    raised, resolved = run([invited(T0), enrolled(activated)], until=T0 + 10 * DAY).of(
        INVITE_NOT_ACTIVATED
    )
    assert resolved.alert_id == raised.alert_id
    assert resolved.resolved_at == activated
    assert resolved.updated_at == activated
    assert resolved.due_at == raised.due_at == T0 + 7 * DAY
    assert resolved.response_business_minutes is None


def test_first_login_also_resolves_invite_not_activated() -> None:
    first = T0 + 8 * DAY
    out = run([invited(T0), login(first)], until=T0 + 8 * DAY + SEC)
    raised, resolved = out.of(INVITE_NOT_ACTIVATED)
    assert resolved.alert_id == raised.alert_id
    assert resolved.resolved_at == first
    assert out.of(NO_FIRST_LOGIN) == []


def test_repeated_invitation_does_not_move_the_pending_due_time() -> None:
    events = [invited(T0), invited(T0 + 3 * DAY), invited(T0 + 6 * DAY)]
    out = run(events, until=T0 + 7 * DAY + SEC)
    (alert,) = out.alerts
    assert alert.due_at == T0 + 7 * DAY
    # And a further invitation after the alert raises nothing new.
    out = run([*events, invited(T0 + 8 * DAY)], until=T0 + 20 * DAY)
    assert len(out.alerts) == 1


def test_invitation_after_enrollment_raises_nothing() -> None:
    out = run([enrolled(T0), login(T0 + DAY, "mobile_app"), invited(T0 + 2 * DAY)], T0 + 30 * DAY)
    assert out.alerts == []


# ---------------------------------------------------------------------------- no_first_login


@pytest.mark.parametrize(("offset", "fires"), [(-SEC, False), (timedelta(0), False), (SEC, True)])
def test_no_first_login_fires_strictly_after_threshold(offset: timedelta, fires: bool) -> None:
    out = run([enrolled(T0)], until=T0 + 7 * DAY + offset)
    assert len(out.of(NO_FIRST_LOGIN)) == int(fires)


@pytest.mark.parametrize(
    ("first", "fires"), [(7 * DAY - SEC, False), (7 * DAY, False), (7 * DAY + SEC, True)]
)
def test_first_login_around_the_due_time(first: timedelta, fires: bool) -> None:
    out = run([enrolled(T0), login(T0 + first)], until=T0 + 8 * DAY)
    assert len(out.of(NO_FIRST_LOGIN)) == (2 if fires else 0)


def test_first_login_resolves_no_first_login() -> None:
    first = T0 + 10 * DAY
    raised, resolved = run([enrolled(T0), login(first)], until=first + SEC).of(NO_FIRST_LOGIN)
    assert raised.due_at == T0 + 7 * DAY and raised.resolved_at is None
    assert resolved.alert_id == raised.alert_id
    assert resolved.resolved_at == first


def test_implied_enrollment_by_first_login() -> None:
    """A first login with no enrollment: no no_first_login, dormancy counted from that login."""
    out = run([login(T0)], until=T0 + 200 * DAY)
    assert out.of(NO_FIRST_LOGIN) == []
    assert out.of(INVITE_NOT_ACTIVATED) == []
    (dormant,) = out.of(DORMANT)
    assert dormant.due_at == T0 + 90 * DAY
    # The web login implies enrollment, so the app follow-up runs from it too.
    (app,) = out.of(APP_NOT_INSTALLED)
    assert app.due_at == T0 + 14 * DAY


# ---------------------------------------------------------------------------- app_not_installed


@pytest.mark.parametrize(("offset", "fires"), [(-SEC, False), (timedelta(0), False), (SEC, True)])
def test_app_not_installed_fires_strictly_after_threshold(offset: timedelta, fires: bool) -> None:
    out = run([enrolled(T0), login(T0 + DAY)], until=T0 + 14 * DAY + offset)
    assert len(out.of(APP_NOT_INSTALLED)) == int(fires)
    assert out.of(NO_FIRST_LOGIN) == []


@pytest.mark.parametrize(
    ("install", "fires"), [(14 * DAY - SEC, False), (14 * DAY, False), (14 * DAY + SEC, True)]
)
def test_install_around_the_due_time(install: timedelta, fires: bool) -> None:
    out = run([enrolled(T0), login(T0 + DAY), installed(T0 + install)], until=T0 + 20 * DAY)
    assert len(out.of(APP_NOT_INSTALLED)) == (2 if fires else 0)


def test_install_resolves_app_not_installed() -> None:
    at = T0 + 20 * DAY
    raised, resolved = run([enrolled(T0), login(T0 + DAY), installed(at)], until=at + DAY).of(
        APP_NOT_INSTALLED
    )
    assert raised.due_at == T0 + 14 * DAY
    assert resolved.alert_id == raised.alert_id and resolved.resolved_at == at


def test_mobile_login_resolves_app_not_installed() -> None:
    at = T0 + 20 * DAY
    events = [enrolled(T0), login(T0 + DAY), login(at, "mobile_app")]
    raised, resolved = run(events, until=at + DAY).of(APP_NOT_INSTALLED)
    assert resolved.alert_id == raised.alert_id
    assert resolved.resolved_at == at


def test_mobile_login_at_the_due_time_prevents_app_not_installed() -> None:
    events = [enrolled(T0), login(T0 + DAY), login(T0 + 14 * DAY, "mobile_app")]
    assert run(events, until=T0 + 30 * DAY).of(APP_NOT_INSTALLED) == []


def test_install_before_enrollment_means_no_app_alert() -> None:
    events = [installed(T0 - DAY), enrolled(T0), login(T0 + DAY)]
    assert run(events, until=T0 + 60 * DAY).of(APP_NOT_INSTALLED) == []


def test_out_of_order_install_arriving_after_enrollment() -> None:
    """The install happened first but reaches the machine after the enrollment."""
    events = [enrolled(T0), installed(T0 - DAY), login(T0 + DAY)]
    out = run(events, until=T0 + 60 * DAY, in_time_order=False)
    assert out.of(APP_NOT_INSTALLED) == []


# ---------------------------------------------------------------------------- dormant


@pytest.mark.parametrize(("offset", "fires"), [(-SEC, False), (timedelta(0), False), (SEC, True)])
def test_dormant_fires_strictly_after_threshold(offset: timedelta, fires: bool) -> None:
    last = T0 + 5 * DAY
    out = run([enrolled(T0), login(T0 + DAY), login(last)], until=last + 90 * DAY + offset)
    assert len(out.of(DORMANT)) == int(fires)


@pytest.mark.parametrize(
    ("gap", "fires"), [(90 * DAY - SEC, False), (90 * DAY, False), (90 * DAY + SEC, True)]
)
def test_login_around_the_dormancy_due_time(gap: timedelta, fires: bool) -> None:
    out = run([login(T0, "mobile_app"), login(T0 + gap, "mobile_app")], until=T0 + gap + SEC)
    assert len(out.of(DORMANT)) == (2 if fires else 0)


def test_enrolled_without_login_is_never_dormant() -> None:
    out = run([enrolled(T0)], until=T0 + 400 * DAY)
    assert out.of(DORMANT) == []
    assert len(out.of(NO_FIRST_LOGIN)) == 1


def test_every_login_starts_a_new_dormancy_period() -> None:
    events = [login(T0, "mobile_app"), login(T0 + 50 * DAY, "mobile_app")]
    assert run(events, until=T0 + 90 * DAY + SEC).of(DORMANT) == []
    (alert,) = run(events, until=T0 + 140 * DAY + SEC).of(DORMANT)
    assert alert.due_at == T0 + 140 * DAY


def test_dormant_resolves_and_recurs_as_a_new_episode() -> None:
    back = T0 + 100 * DAY
    events = [login(T0, "mobile_app"), login(back, "mobile_app")]
    first, resolved, second = run(events, until=back + 90 * DAY + SEC).of(DORMANT)
    assert first.due_at == T0 + 90 * DAY
    assert resolved.alert_id == first.alert_id and resolved.resolved_at == back
    assert second.alert_id != first.alert_id
    assert second.due_at == back + 90 * DAY and second.resolved_at is None
    assert second.alert_id == followup_alert_id(DORMANT, "p1", PATIENT, back)


def test_late_login_inside_an_open_dormancy_resolves_it_at_the_login_time() -> None:
    """A delayed login that happened after the dormancy started still ends it."""
    host = Host(FollowupMachine(thresholds()))
    host.feed([login(T0, "mobile_app")], until=T0 + 120 * DAY)
    late = T0 + 95 * DAY
    out = host.feed([login(late, "mobile_app")])
    raised, resolved = out.of(DORMANT)
    assert resolved.alert_id == raised.alert_id
    assert resolved.resolved_at == late
    assert resolved.updated_at == late
    # An older, late-arriving login changes nothing.
    before = len(out.alerts)
    host.feed([login(T0 - DAY, "mobile_app")])
    assert len(out.alerts) == before


# ---------------------------------------------------------------------------- per practice, ids


def test_thresholds_per_practice() -> None:
    quick = StaleThresholds(
        invite_not_activated_days=2,
        no_first_login_days=3,
        app_not_installed_days=4,
        dormant_days=5,
    )
    events = [
        invited(T0, practice="fast"),
        invited(T0, practice="slow"),
        enrolled(T0, patient="b" * 32, practice="fast"),
        enrolled(T0, patient="b" * 32, practice="slow"),
        login(T0, patient="c" * 32, practice="fast"),
        login(T0, patient="c" * 32, practice="slow"),
    ]
    out = run(events, until=T0 + 6 * DAY, thresholds_for=thresholds(fast=quick))
    due = {(a.practice_id, a.kind): a.due_at for a in out.alerts}
    assert due == {
        ("fast", INVITE_NOT_ACTIVATED): T0 + 2 * DAY,
        ("fast", NO_FIRST_LOGIN): T0 + 3 * DAY,
        ("fast", APP_NOT_INSTALLED): T0 + 4 * DAY,
        ("fast", DORMANT): T0 + 5 * DAY,
    }
    later = run(events, until=T0 + 15 * DAY, thresholds_for=thresholds(fast=quick))
    slow = sorted((a.kind, a.due_at) for a in later.alerts if a.practice_id == "slow")
    assert slow == sorted(
        [
            (INVITE_NOT_ACTIVATED, T0 + 7 * DAY),
            (NO_FIRST_LOGIN, T0 + 7 * DAY),
            (APP_NOT_INSTALLED, T0 + 14 * DAY),
            (APP_NOT_INSTALLED, T0 + 14 * DAY),
        ]
    )


def test_non_positive_threshold_disables_that_follow_up() -> None:
    off = StaleThresholds(app_not_installed_days=0, dormant_days=-1)
    out = run([login(T0)], until=T0 + 400 * DAY, thresholds_for=lambda _: off)
    assert out.alerts == []


def test_alert_ids_are_deterministic_and_each_alert_is_raised_once() -> None:
    events = [invited(T0), enrolled(T0 + 10 * DAY), login(T0 + 30 * DAY)]
    a = run(events, until=T0 + 200 * DAY)
    b = run(events, until=T0 + 200 * DAY)
    assert a.alerts == b.alerts
    raised = [x for x in a.alerts if x.resolved_at is None]
    assert len({x.alert_id for x in raised}) == len(raised)
    assert sorted(x.kind for x in raised) == sorted(
        [INVITE_NOT_ACTIVATED, NO_FIRST_LOGIN, APP_NOT_INSTALLED, DORMANT]
    )


def test_advancing_again_raises_nothing_new() -> None:
    machine = FollowupMachine(thresholds())
    out = Collector()
    state = machine.apply(None, enrolled(T0), out)
    assert state is not None
    for now in (T0 + 15 * DAY, T0 + 16 * DAY, T0 + 400 * DAY):
        state = machine.advance(state, us(now), out)
        assert state is not None
    assert sorted(a.kind for a in out.alerts) == sorted([NO_FIRST_LOGIN, APP_NOT_INSTALLED])
    assert machine.next_due(state) is None


def test_advance_fires_due_alerts_earliest_first() -> None:
    machine = FollowupMachine(thresholds())
    out = Collector()
    state = machine.apply(None, enrolled(T0), out)
    assert state is not None
    machine.advance(state, us(T0 + 100 * DAY), out)
    assert [a.kind for a in out.alerts] == [NO_FIRST_LOGIN, APP_NOT_INSTALLED]


def test_next_due_is_the_earliest_unfired_deadline() -> None:
    machine = FollowupMachine(thresholds())
    out = Collector()
    state = machine.apply(None, invited(T0), out)
    assert state is not None
    assert machine.next_due(state) == us(T0 + 7 * DAY)
    state = machine.apply(state, login(T0 + DAY), out)
    assert state is not None
    assert machine.next_due(state) == us(
        T0 + 15 * DAY
    )  # app_not_installed from the implied enrollment
    state = machine.apply(state, installed(T0 + 2 * DAY), out)
    assert state is not None
    assert machine.next_due(state) == us(T0 + 91 * DAY)  # only dormancy is left
    state = machine.advance(state, us(T0 + 92 * DAY), out)
    assert state is not None
    assert machine.next_due(state) is None  # dormant raised; waits for a login


def test_unrelated_event_leaves_state_alone() -> None:
    machine = FollowupMachine(thresholds())
    out = Collector()
    state = machine.apply(None, enrolled(T0), out)
    assert machine.apply(state, ev("message.sent", T0, thread_id="t"), out) is state


# ---------------------------------------------------------------------------- state size


def test_state_is_a_few_packed_integers() -> None:
    host = Host(FollowupMachine(thresholds()))
    host.feed(
        [invited(T0), enrolled(T0 + DAY), login(T0 + 2 * DAY), login(T0 + 40 * DAY)],
        until=T0 + 200 * DAY,
    )
    (state,) = (host.state(k) for k in host.store)
    assert state is not None
    worst = state_bytes(state)  # all facts but the app, two alerts open
    typical = estimate_state_bytes()
    print(f"follow-up state: typical {typical} B, with two open alerts {worst} B")
    assert typical <= 2 + 5 * 8  # mask, three instants, one open alert's start and due
    assert worst <= 2 + 7 * 8
    assert host.machine.loads(f"p1|{PATIENT}", host.store[f"p1|{PATIENT}"]) == state


instants_us = st.one_of(st.none(), st.integers(-(2**62), 2**62))
pairs = st.tuples(st.integers(-(2**62), 2**62), st.integers(-(2**62), 2**62))


@given(
    st.tuples(*[instants_us] * 5),
    st.dictionaries(st.sampled_from(["i", "f", "a", "d"]), pairs),
)
def test_packed_state_round_trips(fields: tuple[int | None, ...], opened: dict) -> None:
    state = Followups("p|1", PATIENT, Enrollment(*fields), opened)
    data = b"header" + pack(state)
    assert unpack("p|1", PATIENT, data, 6) == state
    machine = FollowupMachine(thresholds())
    assert machine.loads(f"p|1|{PATIENT}", data, 6) == state  # the key's last field is the patient


_us = st.none() | st.integers(0, 2**60)


@given(
    st.builds(Enrollment, _us, _us, _us, _us, _us),
    st.dictionaries(st.sampled_from("ifad"), st.tuples(st.integers(0, 2**60), st.integers(0, 2**60))),
    st.builds(
        StaleThresholds,
        st.integers(-1, 60), st.integers(-1, 60), st.integers(-1, 60), st.integers(-1, 60),
    ),
)  # fmt: skip
def test_next_due_is_the_earliest_pending_deadline(
    record: Enrollment, opened: dict[str, tuple[int, int]], limits: StaleThresholds
) -> None:
    """The engine's wake-up: the first condition to come due that holds and is not raised."""
    machine = FollowupMachine(lambda practice_id: limits)
    state = Followups("p1", "a" * 32, record, opened)
    dues = [due for _, _, due in machine._pending(state)]
    assert machine.next_due(state) == (min(dues) if dues else None)
