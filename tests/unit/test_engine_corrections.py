"""SPEC §7.1 on the engine: whatever order a key's events arrive in (within the horizon), the
standing alerts and response facts equal event-time order's; within the hold, nothing is
withdrawn; a reply before its message is not lost; beyond the horizon nothing changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portal_pulse.domain.practices import Practices
from portal_pulse.domain.records import Alert, ResponseFact
from portal_pulse.engine import BEYOND_HORIZON, CORRECTED, DictStore, Engine
from portal_pulse.keylog import digest, order_key
from portal_pulse.pipeline import build_machines
from schemas.model import CleanEvent

T0 = datetime(2026, 1, 5, 13, 0, tzinfo=UTC)  # a Monday, 08:00 in New York
HORIZON = timedelta(days=30)
PRACTICES = Practices.load(None)


@dataclass
class Emitted:
    """Every version in emission order; ``standing`` is what a latest-version table holds."""

    versions: list[Alert | ResponseFact] = field(default_factory=list)

    def alert(self, alert: Alert) -> None:
        self.versions.append(alert)

    def response(self, fact: ResponseFact) -> None:
        self.versions.append(fact)

    def latest(self) -> dict[str, Alert | ResponseFact]:
        out: dict[str, Alert | ResponseFact] = {}
        for record in self.versions:
            ident = record.alert_id if isinstance(record, Alert) else "f" + record.response_id
            previous = out.get(ident)
            if previous is not None and previous.updated_at and record.updated_at:
                # a later version must never look older than the one it replaces
                assert record.updated_at >= previous.updated_at, (previous, record)
            out[ident] = record
        return out

    def standing(self) -> dict[str, tuple[Any, ...]]:
        return {
            ident: _user_fields(record)
            for ident, record in self.latest().items()
            if record.withdrawn_at is None
        }

    def alert_withdrawals(self) -> int:
        """Alerts withdrawn: what SPEC §7.1 rules out when every event arrives within the hold.
        A response fact may still be withdrawn then (its id names its first message, and a
        message that arrives late but within the hold can be the thread's first)."""
        return sum(1 for r in self.versions if isinstance(r, Alert) and r.withdrawn_at is not None)


def _user_fields(record: Alert | ResponseFact) -> tuple[Any, ...]:
    if isinstance(record, Alert):
        return (
            record.kind, record.subject_id, record.patient_pseudonym, record.category,
            record.staff_pool, record.due_at, record.resolved_at, record.response_business_minutes,
        )  # fmt: skip
    data = record.as_dict()
    data.pop("updated_at", None)
    data.pop("withdrawn_at", None)
    return tuple(sorted(data.items()))


def _engine(out: Emitted, *, horizon: timedelta | None, hold: timedelta) -> Engine:
    machines = build_machines(PRACTICES)
    return Engine(
        machines,
        {m.name: DictStore() for m in machines},
        out,
        horizon=horizon,
        holds={m.name: hold for m in machines},
    )


def truth(events: list[CleanEvent], until: datetime) -> Emitted:
    """``replay``'s way: every event in event-time order, the clock at each event, then on."""
    out = Emitted()
    engine = _engine(out, horizon=None, hold=timedelta(0))
    for event in sorted(events, key=order_key):
        engine.advance(event.occurred_at)
        engine.on_event(event)
    engine.advance(until)
    return out


def arrive(events: list[CleanEvent], hold: timedelta, until: datetime) -> tuple[Emitted, Engine]:
    """The worker's way: in arrival order, the clock the latest instant seen (a watermark)."""
    out = Emitted()
    engine = _engine(out, horizon=HORIZON, hold=hold)
    clock: datetime | None = None
    for event in events:
        clock = event.occurred_at if clock is None else max(clock, event.occurred_at)
        engine.advance(clock)
        engine.on_event(event)
    engine.advance(until + hold)
    return out, engine


# -- events ------------------------------------------------------------------------------------

_minutes = st.integers(min_value=0, max_value=3 * 24 * 60)


@st.composite
def thread_events(draw: st.DrawFn) -> list[CleanEvent]:
    """One or two threads of one patient: messages and replies at random minutes over 3 days
    (including nights, a weekend-free Monday to Wednesday), some at the same instant."""
    events = []
    n = draw(st.integers(min_value=1, max_value=7))
    for i in range(n):
        thread = draw(st.sampled_from(["t1", "t2"]))
        sent = draw(st.booleans()) or i == 0
        at = T0 + timedelta(minutes=draw(_minutes))
        details: dict[str, Any] = {"thread_id": thread, "message_id": f"m{i}"}
        if sent:
            details["category"] = draw(
                st.sampled_from(["clinical", "administrative", "billing", "other"])
            )
        else:
            details["staff_pool"] = "nurse"
            details["automated"] = draw(st.booleans()) and draw(st.booleans())
        events.append(
            CleanEvent(
                f"e{i}", "message.sent" if sent else "message.replied", at, "P1", "pat", details
            )
        )
    return events


@st.composite
def patient_events(draw: st.DrawFn) -> list[CleanEvent]:
    """Enrollment, logins and app installs of one or two patients over 20 days."""
    kinds = [
        ("portal.invited", {"method": "email"}),
        ("portal.enrolled", {"method": "self"}),
        ("portal.login", {"channel": "web"}),
        ("portal.login", {"channel": "mobile_app"}),
        ("app.installed", {"platform": "ios"}),
    ]
    events = []
    n = draw(st.integers(min_value=1, max_value=6))
    for i in range(n):
        kind, details = draw(st.sampled_from(kinds))
        at = T0 + timedelta(minutes=draw(st.integers(min_value=0, max_value=20 * 24 * 60)))
        patient = draw(st.sampled_from(["pa", "pb"]))
        events.append(CleanEvent(f"p{i}", kind, at, "P1", patient, dict(details)))
    return events


def _until(events: list[CleanEvent]) -> datetime:
    return max(e.occurred_at for e in events) + timedelta(days=15)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), events=st.one_of(thread_events(), patient_events()))
def test_any_arrival_order_converges_on_the_event_time_result(
    data: st.DataObject, events: list[CleanEvent]
) -> None:
    arrival = data.draw(st.permutations(events))
    hold = data.draw(st.sampled_from([timedelta(0), timedelta(seconds=60), timedelta(hours=1)]))
    until = _until(events)
    expected = truth(events, until).standing()
    got, _ = arrive(list(arrival), hold, until)
    assert got.standing() == expected


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), events=st.one_of(thread_events(), patient_events()))
def test_events_within_the_hold_withdraw_nothing(
    data: st.DataObject, events: list[CleanEvent]
) -> None:
    hold = timedelta(hours=1)
    lags = [
        data.draw(st.integers(min_value=0, max_value=int(hold.total_seconds()))) for _ in events
    ]
    arrival = [
        e for _, e in sorted(
            ((e.occurred_at + timedelta(seconds=lag), n), e)
            for n, (e, lag) in enumerate(zip(events, lags, strict=True))
        )
    ]  # fmt: skip
    until = _until(events)
    got, _ = arrive(arrival, hold, until)
    assert got.alert_withdrawals() == 0
    assert got.standing() == truth(events, until).standing()


def test_a_reply_before_its_message_still_makes_one_response_fact() -> None:
    sent = CleanEvent("s", "message.sent", T0 + timedelta(hours=1), "P1", "pat",
                      {"thread_id": "t", "message_id": "m", "category": "clinical"})  # fmt: skip
    reply = CleanEvent("r", "message.replied", T0 + timedelta(hours=2), "P1", "pat",
                       {"thread_id": "t", "message_id": "x", "staff_pool": "nurse"})  # fmt: skip
    got, _ = arrive([reply, sent], timedelta(seconds=60), T0 + timedelta(days=3))
    facts = [r for r in got.latest().values() if isinstance(r, ResponseFact)]
    assert len(facts) == 1 and facts[0].replied_at == reply.occurred_at


def test_a_page_later_data_disproves_is_withdrawn_and_says_which_event() -> None:
    sent = CleanEvent("s", "message.sent", T0, "P1", "pat",
                      {"thread_id": "t", "message_id": "m", "category": "clinical"})  # fmt: skip
    # Replied within the internal target (same business day), but delivered two days later.
    reply = CleanEvent("r", "message.replied", T0 + timedelta(hours=3), "P1", "pat",
                       {"thread_id": "t", "message_id": "x", "staff_pool": "nurse"})  # fmt: skip
    out = Emitted()
    engine = _engine(out, horizon=HORIZON, hold=timedelta(seconds=60))
    engine.advance(T0)
    engine.on_event(sent)
    engine.advance(T0 + timedelta(days=2))  # the at-risk and internal alerts fire
    fired = {r.kind for r in out.versions if isinstance(r, Alert)}
    assert {"sla.at_risk", "sla.internal_missed"} <= fired
    engine.on_event(reply)
    assert engine.last_outcome == CORRECTED
    assert {(kind, action) for kind, action, _ in engine.last_corrections} >= {
        ("sla.at_risk", "withdrawn"),
        ("sla.internal_missed", "withdrawn"),
    }
    assert not [r for r in out.standing() if r.startswith("sla")]
    assert out.standing() == truth([sent, reply], T0 + timedelta(days=2)).standing()


def test_an_event_beyond_the_horizon_changes_no_alert() -> None:
    sent = CleanEvent("s", "message.sent", T0, "P1", "pat",
                      {"thread_id": "t", "message_id": "m", "category": "clinical"})  # fmt: skip
    reply = CleanEvent("r", "message.replied", T0 + timedelta(hours=1), "P1", "pat",
                       {"thread_id": "t", "message_id": "x", "staff_pool": "nurse"})  # fmt: skip
    out = Emitted()
    engine = _engine(out, horizon=HORIZON, hold=timedelta(seconds=60))
    engine.advance(T0)
    engine.on_event(sent)
    engine.advance(T0 + HORIZON + timedelta(days=1))
    before = out.standing()
    engine.on_event(reply)
    assert engine.last_outcome == BEYOND_HORIZON
    assert out.standing() == before


def test_an_output_digest_is_what_earlier_versions_stored() -> None:
    """Digests are kept in every stored envelope (``emitted``): another formula would make
    each key's next correction see all its outputs as changed and send them again."""
    at = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
    alert = Alert(
        alert_id="a1", kind="sla_breach", practice_id="P001", subject_id="th-1",
        patient_pseudonym="ab" * 16, category="clinical", staff_pool="nurse",
        due_at=at, raised_at=at, updated_at=at,
    )  # fmt: skip
    assert digest(alert) == "c2fbfbdb20ea"


def test_a_message_late_within_the_hold_rewrites_the_response_fact_but_withdraws_no_alert() -> None:
    """Found by the property above: a reply at 15:30, a message of 15:30 (ordered before the reply
    at the same instant) and one of 15:29 arriving a minute late. The fact first names the 15:30
    message, then the 15:29 one: the first fact is withdrawn (SPEC §7.1: "a fact that no longer
    exists is withdrawn"); no alert is, and the result is replay's."""

    def sent(n: int, at: datetime) -> CleanEvent:
        details = {"thread_id": "t1", "message_id": f"m{n}", "category": "clinical"}
        return CleanEvent(f"e{n}", "message.sent", at, "P1", "pat", details)

    def replied(n: int, at: datetime) -> CleanEvent:
        details = {
            "thread_id": "t1",
            "message_id": f"m{n}",
            "staff_pool": "nurse",
            "automated": False,
        }
        return CleanEvent(f"e{n}", "message.replied", at, "P1", "pat", details)

    at_13, at_1529, at_1530 = (
        T0.replace(hour=13),
        T0.replace(hour=15, minute=29),
        T0.replace(hour=15, minute=30),
    )
    events = [sent(0, at_13), replied(1, at_13), replied(2, at_13), replied(3, at_1530)]
    events += [sent(4, at_1530), sent(5, at_1529)]  # in arrival order: e5 a minute late
    until = _until(events)
    got, _ = arrive(events, timedelta(hours=1), until)
    assert got.alert_withdrawals() == 0
    assert sum(1 for r in got.versions if r.withdrawn_at is not None) == 1  # the 15:30 fact
    assert got.standing() == truth(events, until).standing()
