"""Instants as integers: microseconds since the Unix epoch, UTC.

The state machines keep every instant in this form. An integer compares, subtracts and
serialises at a fraction of the cost of an aware ``datetime`` or an ISO-8601 string (parsed
back three times per event before), and packs into eight bytes of state. Microseconds, not
milliseconds: a recording replayed from JSON Lines may carry them, and every conversion here is
exact for any aware ``datetime`` (``from_us(to_us(t)) == t``), so alert ids and due times come
out exactly as they would from the ``datetime`` itself.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["DAY_US", "MINUTE_US", "from_us", "iso_of_us", "to_us"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MINUTE_US = 60_000_000
DAY_US = 86_400_000_000


def to_us(at: datetime) -> int:
    """An aware instant → microseconds since the epoch (exact; naive instants are refused)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"instants must be timezone-aware, got {at!r}")
    delta = at - _EPOCH  # exact integer arithmetic, without dividing timedeltas
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    """Microseconds since the epoch → an aware UTC ``datetime``."""
    return _EPOCH + timedelta(microseconds=us)


def iso_of_us(us: int) -> str:
    """The canonical UTC ISO-8601 text of an instant (what alert ids are made from)."""
    return from_us(us).isoformat()
