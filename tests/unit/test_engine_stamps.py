"""A re-read input is a no-op for keys whose restored state already holds it (crash safety)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from portal_pulse.domain.live import LiveMetrics
from portal_pulse.domain.practices import Practices
from portal_pulse.domain.records import Alert, ResponseFact
from portal_pulse.engine import DictStore, Engine
from portal_pulse.pipeline import build_machines
from schemas.model import CleanEvent


class Out:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.responses: list[ResponseFact] = []

    def alert(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def response(self, fact: ResponseFact) -> None:
        self.responses.append(fact)


def ev(n: int, kind: str, at: datetime, **details: object) -> CleanEvent:
    return CleanEvent(f"e{n}", kind, at, "P1", "a" * 32, dict(details))


def engine() -> tuple[Engine, Out]:
    machines = build_machines(Practices.from_mapping(None))
    out = Out()
    return Engine(machines, {m.name: DictStore() for m in machines}, out), out


SENT = ev(1, "message.sent", datetime(2026, 1, 5, 15, tzinfo=UTC), thread_id="t",
          message_id="m", category="clinical")  # fmt: skip
REPLY = ev(2, "message.replied", datetime(2026, 1, 5, 16, tzinfo=UTC), thread_id="t",
           message_id="r", staff_pool="nurse")  # fmt: skip


def test_an_input_the_key_already_holds_is_skipped() -> None:
    eng, out = engine()
    eng.on_event(SENT, 0, offset=7)
    eng.on_event(REPLY, 0, offset=8)
    assert len(out.responses) == 1
    eng.on_event(REPLY, 0, offset=8)  # read again after a restart: already in state
    eng.on_event(SENT, 0, offset=7)
    assert len(out.responses) == 1
    assert eng.peek("sla", "P1|t")[1] == 8


def test_without_offsets_nothing_is_skipped() -> None:
    eng, out = engine()
    eng.on_event(SENT)
    eng.on_event(REPLY)
    later = ev(4, "message.sent", datetime(2026, 1, 5, 17, tzinfo=UTC), thread_id="t",
               message_id="m2", category="clinical")  # fmt: skip
    eng.on_event(later, 0, offset=None)  # a new message on the thread: a new clock
    assert len(out.responses) == 1
    assert eng.peek("sla", "P1|t")[2]["clock"] is not None


def test_live_counters_count_a_reread_input_once() -> None:
    live = LiveMetrics(DictStore(), lambda practice, at: at.date())
    eng, _ = engine()
    eng.on_change = live.on_state_change  # last logins come from the follow-up states
    login = ev(3, "portal.login", datetime(2026, 1, 5, 15, tzinfo=UTC), channel="web")
    for event, offset in ((login, 5), (login, 5), (SENT, 6), (SENT, 6)):
        eng.on_event(event, 2, offset)
        live.apply(event, 2, offset)
    row = live.row("P1", 2, datetime(2026, 1, 5, 18, tzinfo=UTC))
    assert row.day == date(2026, 1, 5)
    assert row.today["logins"] == 1
    assert row.today["patient_messages"] == 1
    assert row.today["active_patients"] == 1
    assert row.open_by_pool["nurse"] == 1


def test_live_derived_figures_are_rebuilt_per_partition() -> None:
    store = DictStore()
    live = LiveMetrics(store, lambda practice, at: at.date())
    live.apply(SENT, 1, offset=1)
    restored = LiveMetrics(store, lambda practice, at: at.date())  # after a restart
    restored.rebuild(1)
    assert restored.row("P1", 1, SENT.occurred_at).open_by_pool["nurse"] == 1
    assert restored.row("P1", 0, SENT.occurred_at).open_by_pool["nurse"] == 0
