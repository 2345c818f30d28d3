"""Per-key event-time order with corrections (SPEC §7.1): what the engine keeps beside a state.

The truth is event time: a key's events applied in ``order_key`` order. When every event of a
key arrives in that order the machine folds them one by one, as it always did. When one arrives
behind the key's last applied event, the key is worked out again from its *log* — the events of
the horizon, kept beside the state — and only the difference from what was already emitted is
sent: alerts withdrawn, alerts raised late, versions changed, response facts rewritten.

A key's ``Envelope`` holds:
- ``state``: the machine's state after every logged event (as the incremental path left it);
- ``base``: the machine's state before the first logged event (events older than the horizon
  are folded into it and can no longer be corrected);
- ``floor``: the instant folded up to (an event before it is *beyond the horizon*);
- ``log``: the events since, in ``order_key`` order, compactly;
- ``emitted``: a digest of the last version emitted of each alert and response fact of the key,
  so a recomputation sends only what changed, and withdraws only what was sent.

Everything here is pure: no I/O, no wall clock.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from portal_pulse import json_text
from portal_pulse.domain.instants import from_us, to_us
from portal_pulse.domain.records import Alert, ResponseFact
from schemas.model import CleanEvent

__all__ = [
    "TIE_ORDER",
    "WITHDRAWN",
    "Collected",
    "Envelope",
    "digest",
    "event_of",
    "logged",
    "order_key",
]

TIE_ORDER: tuple[str, ...] = (
    "patient.seen", "portal.invited", "portal.enrolled", "portal.login", "app.installed",
    "message.sent", "message.replied", "result.posted", "result.viewed",
    "result.staff_contacted", "appointment.booked", "payment.made", "phone.call",
    "refill.requested", "record.viewed", "survey.response",
)  # fmt: skip
"""SPEC §2's table order: events of one key at one instant apply in this order (a message before
its reply, an enrollment before a login), then by event_id (SPEC §7.1)."""
_RANK = {name: n for n, name in enumerate(TIE_ORDER)}

OrderKey = tuple[int, int, str]


def order_key(event: CleanEvent) -> OrderKey:
    """Where an event stands in its key's event-time order (worker and replay alike)."""
    return to_us(event.occurred_at), _RANK.get(event.event_type, len(TIE_ORDER)), event.event_id


# A logged event: [occurred µs, type rank, event_id, event_type, pseudonym, details].
Logged = list[Any]


def logged(event: CleanEvent) -> Logged:
    t, rank, event_id = order_key(event)
    return [t, rank, event_id, event.event_type, event.patient_pseudonym, event.details]


def logged_key(entry: Logged) -> OrderKey:
    return entry[0], entry[1], entry[2]


def event_of(entry: Logged, practice_id: str) -> CleanEvent:
    return CleanEvent(
        event_id=entry[2],
        event_type=entry[3],
        occurred_at=from_us(entry[0]),
        practice_id=practice_id,
        patient_pseudonym=entry[4],
        details=dict(entry[5]),
    )


def _instant(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


#: ``json.dumps(obj, default=str)``, built once (a digest is taken of every output).
_DIGEST_TEXT = json.JSONEncoder(default=str).encode


def digest(record: Alert | ResponseFact) -> str:
    """What identifies a version for the difference: every field a user reads, but not the
    bookkeeping instants (``updated_at``), which a correction moves on by construction."""
    if isinstance(record, Alert):
        parts = (
            record.kind, record.subject_id, record.patient_pseudonym, record.category,
            record.staff_pool, record.due_at, record.raised_at, record.resolved_at,
            record.response_business_minutes,
        )  # fmt: skip
    else:
        parts = tuple(
            getattr(record, name)
            for name in (
                "thread_id", "patient_pseudonym", "category", "routed_pool", "replied_by_pool",
                "first_message_at", "clock_started_at", "replied_at", "messages_answered",
                "response_business_minutes", "response_wall_minutes", "internal_due_at",
                "external_due_at", "met_internal_target", "met_external_promise",
            )
        )  # fmt: skip
    text = _DIGEST_TEXT([_instant(p) for p in parts])
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def output_id(record: Alert | ResponseFact) -> str:
    """``a<alert_id>`` or ``f<response_id>``: one namespace for a key's emitted versions.

    Ids are 32 hex digits; the first 16 identify a version among one key's few outputs and
    keep the stored digest map small."""
    if isinstance(record, Alert):
        return "a" + record.alert_id[:16]
    return "f" + record.response_id[:16]


@dataclass
class Collected:
    """Outputs of one key's (re)computation, latest version per id, in first-seen order."""

    latest: dict[str, Alert | ResponseFact] = field(default_factory=dict)

    def alert(self, alert: Alert) -> None:
        self.latest[output_id(alert)] = alert

    def response(self, fact: ResponseFact) -> None:
        self.latest[output_id(fact)] = fact


_LENGTHS = struct.Struct("<IIq")
_NO_LOG = -(2**63)
WITHDRAWN = "-"
"""The ``emitted`` mark of an output whose last version sent was a withdrawal."""


@dataclass
class Envelope:
    """One key's state with its horizon log (see the module docstring)."""

    state: Any
    base: Any = None
    floor: int | None = None
    log: list[Logged] = field(default_factory=list)
    emitted: dict[str, str] = field(default_factory=dict)
    #: the latest instant a clock-driven advance changed ``state`` at: an event before it
    #: cannot simply be folded in on top (something fired after it), it is a correction
    ticked: int | None = None
    #: the latest ``updated_at`` (µs) of a correction: every later version of the key is
    #: stamped after it, so the latest version always wins (None: never corrected)
    stamp: int | None = None

    def last_key(self) -> OrderKey | None:
        return logged_key(self.log[-1]) if self.log else None

    def insert(self, entry: Logged) -> bool:
        """Put ``entry`` in order; False if the log holds that event already."""
        key = logged_key(entry)
        lo, hi = 0, len(self.log)
        while lo < hi:
            mid = (lo + hi) // 2
            if logged_key(self.log[mid]) < key:
                lo = mid + 1
            else:
                hi = mid
        if lo < len(self.log) and logged_key(self.log[lo]) == key:
            return False
        self.log.insert(lo, entry)
        return True

    def record(self, outputs: Iterable[Alert | ResponseFact]) -> None:
        """Remember what was sent: a version's digest, or ``WITHDRAWN``."""
        for record in outputs:
            withdrawn = record.withdrawn_at is not None
            self.emitted[output_id(record)] = WITHDRAWN if withdrawn else digest(record)

    # -- bytes -------------------------------------------------------------------------------

    def dumps(self, state_bytes: bytes | None, base_bytes: bytes | None) -> bytes:
        """``<state len><base len><first logged instant>`` + state + base + JSON [floor, log,
        emitted, ticked, stamp]; a length of 0xFFFFFFFF is an absent state."""
        none = 0xFFFFFFFF
        tail = json_text.compact_bytes(
            [self.floor, self.log, self.emitted, self.ticked, self.stamp]
        )
        return (
            _LENGTHS.pack(
                none if state_bytes is None else len(state_bytes),
                none if base_bytes is None else len(base_bytes),
                self.log[0][0] if self.log else _NO_LOG,
            )
            + (state_bytes or b"")
            + (base_bytes or b"")
            + tail
        )

    @staticmethod
    def peek(data: bytes, start: int) -> tuple[bytes | None, int | None]:
        """The state bytes and the first logged instant, without decoding the log: all a
        deadline index needs to know when the key next wants the clock."""
        n_state, _, first = _LENGTHS.unpack_from(data, start)
        at = start + _LENGTHS.size
        state = None if n_state == 0xFFFFFFFF else data[at : at + n_state]
        return state, None if first == _NO_LOG else first

    @staticmethod
    def split(data: bytes, start: int) -> tuple[bytes | None, bytes | None, list[Any]]:
        """``dumps``' parts: state bytes, base bytes, [floor, log, emitted, ticked, stamp]."""
        none = 0xFFFFFFFF
        n_state, n_base, _ = _LENGTHS.unpack_from(data, start)
        at = start + _LENGTHS.size
        state = None if n_state == none else data[at : at + n_state]
        at += 0 if n_state == none else n_state
        base = None if n_base == none else data[at : at + n_base]
        at += 0 if n_base == none else n_base
        return state, base, json_text.loads(data[at:])


def differences(
    before: dict[str, Alert | ResponseFact],
    after: dict[str, Alert | ResponseFact],
    emitted: dict[str, str],
) -> tuple[list[Alert | ResponseFact], list[Alert | ResponseFact]]:
    """(withdrawn, changed): what was emitted and is gone, and what is new or different.

    ``withdrawn`` holds the versions to withdraw (from ``before``: only what was emitted can be
    withdrawn); ``changed`` the versions of ``after`` whose digest differs from the emitted one
    (absent: never emitted)."""
    withdrawn = [
        record
        for oid, record in before.items()
        if oid not in after and emitted.get(oid, WITHDRAWN) != WITHDRAWN
    ]
    changed = [record for oid, record in after.items() if emitted.get(oid) != digest(record)]
    return withdrawn, changed
