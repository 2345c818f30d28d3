"""Raw topics → clean topic (keyed by patient) or dead-letter topic. Never stops on bad input.

Every clean record carries the raw-topic watermark and its own raw position in headers; when all
raw partitions are caught up, a timer sends the final watermark as an empty control record to
each clean partition so the processors' clocks reach the newest event time.

Checkpoint order (docs/delivery-guarantees.md): the batch's clean records and dead letters are
delivered, then the ids it added to the de-duplication memory, then the raw offsets are released.
A crash in between re-reads the batch: ids already in the restored memory are duplicates (their
clean record exists), the others are sent again with the same raw position, which the
processors recognise and skip.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import faust

from portal_pulse import json_text
from portal_pulse.ingest import Rejected, Remembered
from schemas.model import CleanEvent
from schemas.serializer import clean_event_to_record
from schemas.validation import is_practice_id
from streams.checkpoint import Checkpoint
from streams.delivery import DeliveringProducer
from streams.group_lag import GroupLag
from streams.records import TP, Message, tp_of
from streams.runtime import Runtime
from streams.state import StateTable
from streams.watermark import (
    COVER_HEADER,
    HEADER,
    SOURCE_HEADER,
    Watermark,
    cover_value,
    header_value,
    raw_index,
    source_value,
)

__all__ = ["DedupChangelog", "Ingest", "clean_key", "entries", "record", "record_key", "register"]

logger = logging.getLogger(__name__)


def clean_key(event: CleanEvent) -> bytes:
    """One patient's events share a key, hence a partition, hence an order."""
    return f"{event.practice_id}|{event.patient_pseudonym}".encode()


class DedupChangelog:
    """The de-duplication memory's changelog records, held until the batch's outputs are out.

    A record's key is ``["<practice_id>", "<event_id>"]`` and its value
    ``[<input partition>, "<16 hex digits of fingerprint>"]``; an eviction is a tombstone. A
    changelog written before practices were part of the key holds ``"<event_id>"`` →
    ``<partition>``: ``entries`` restores those too, and their tombstones keep that key, so
    compaction removes them.
    """

    def __init__(self, topic: str, delivery: DeliveringProducer) -> None:
        self.topic = topic
        self.delivery = delivery
        self._pending: list[tuple[bytes, bytes | None, int]] = []

    def added(self, practice_id: str, event_id: str, partition: int, fingerprint: int) -> None:
        self._pending.append((*record(practice_id, event_id, partition, fingerprint), partition))

    def evicted(self, practice_id: str | None, event_id: str, partition: int) -> None:
        self._pending.append((record_key(practice_id, event_id), None, partition))

    def write_changes(self) -> int:
        pending, self._pending = self._pending, []
        for key, value, partition in pending:
            if value is not None:
                self.delivery.send(self.topic, value, key, partition=partition)
            else:
                self.delivery.send_tombstone(self.topic, key, partition)
        return len(pending)


def record_key(practice_id: str | None, event_id: str) -> bytes:
    """A memory entry's changelog key (``practice_id`` None: an entry from an older version)."""
    if practice_id is None:
        return json_text.string(event_id).encode()
    return f"[{json_text.string(practice_id)},{json_text.string(event_id)}]".encode()


def record(
    practice_id: str, event_id: str, partition: int, fingerprint: int
) -> tuple[bytes, bytes]:
    """A memory entry's changelog key and value."""
    value = f'[{int(partition)},"{fingerprint:016x}"]'.encode()
    return record_key(practice_id, event_id), value


def entries(data: Mapping[Any, Any]) -> Iterator[Remembered]:
    """The memory's entries from the recovered table (keys and values JSON-decoded; Faust makes
    a list key a tuple). Older entries are ``event_id`` → partition. A record of any other
    shape is skipped with a warning: it can only cost a missed duplicate, never a crash."""
    skipped = 0
    for key, value in data.items():
        try:
            yield _entry(key, value)
        except (TypeError, ValueError):
            skipped += 1
    if skipped:
        logger.warning("de-duplication changelog: %d records of an unknown shape skipped", skipped)


def _entry(key: Any, value: Any) -> Remembered:
    if isinstance(key, str) and (value is None or (type(value) is int and 0 <= value < 2**31)):
        return Remembered(None, key, int(value or 0), None)  # written before practices counted
    if (
        isinstance(key, (list, tuple))
        and len(key) == 2
        and is_practice_id(key[0])
        and isinstance(key[1], str)
        and isinstance(value, list)
        and len(value) == 2
        and type(value[0]) is int
        and 0 <= value[0] < 2**31
        and isinstance(value[1], str)
        and len(value[1]) == 16
    ):
        return Remembered(key[0], key[1], value[0], int(value[1], 16))
    raise ValueError("not a de-duplication record")


class WatermarkChangelog:
    """Each raw partition's latest event time, so a restarted worker knows how far its sources
    had got even when nothing is left to read (and can still announce the final watermark)."""

    def __init__(self, topic: str, delivery: DeliveringProducer) -> None:
        self.topic = topic
        self.delivery = delivery
        self._changed: dict[TP, datetime] = {}

    def changed(self, tp: TP, at: datetime) -> None:
        self._changed[tp] = at

    def write_changes(self) -> int:
        changed, self._changed = self._changed, {}
        for tp, at in changed.items():
            key = json.dumps(f"{tp.topic}|{tp.partition}").encode()
            value = json.dumps(int(at.timestamp() * 1000)).encode()
            self.delivery.send(self.topic, value, key, partition=tp.partition)
        return len(changed)


class Ingest:
    """The ingest agent and its watermark timer."""

    name = "ingest"

    def __init__(self, rt: Runtime, delivery: DeliveringProducer) -> None:
        self.rt = rt
        self.loop = rt.loop
        self.delivery = delivery
        self.names = rt.settings.topics
        self.raw_names = set(self.names.raw.values())
        self.feed = rt.loop.feed("ingest", self.raw_names, rt.settings.sink_batch_size, 0.05)
        self.stats = {"clean": 0, "dead_letter": 0, "duplicate": 0}
        self.reasons: dict[str, int] = {}
        self.watermark = Watermark()
        self.announced: tuple[datetime, bytes] | None = None
        self.wm: datetime | None = None
        # The raw partitions this worker's watermark speaks for (streams/watermark.py).
        self.raw_index = raw_index(self.raw_names, rt.settings.raw_partitions)
        self.cover = b""
        # Reads the group's commits on the raw partitions other workers hold (made on first use).
        self.others_lag: GroupLag | None = None
        self.said_caught_up = False  # the last announcement said the pipeline is caught up
        self.quiet = False  # set by ``quiesce``: no more announcements
        self.logged_at = -60.0
        # The de-duplication memory survives restarts: every remembered (practice_id, event_id)
        # is a record in a compacted changelog (partition = the raw partition it came from),
        # evictions are tombstones (DedupChangelog).
        by = frozenset(self.raw_names)
        self.seen_table = rt.loop.table(StateTable(rt.settings.app_id, "dedup", by))
        self.dedup_log = DedupChangelog(self.seen_table.topic, delivery)
        dedup = rt.ingestor.dedup
        dedup.on_add = self.dedup_log.added
        dedup.on_evict = self.dedup_log.evicted
        self.wm_table = rt.loop.table(StateTable(rt.settings.app_id, "watermarks", by))
        self.wm_log = WatermarkChangelog(self.wm_table.topic, delivery)
        self.checkpoint = Checkpoint(delivery, [self.dedup_log, self.wm_log])  # type: ignore[list-item]
        self.restored = False

    def current_watermark(self) -> datetime | None:
        """The watermark for the next clean records' headers, and their cover."""
        wm, self.cover = self._watermark(False, datetime.now(UTC))
        return wm

    def _watermark(self, others_caught_up: bool, now: datetime) -> tuple[datetime | None, bytes]:
        """This worker's watermark and its cover. The cover says "caught up" only for the
        whole pipeline: every raw partition this worker reads is, and so are the others
        (``others_caught_up``, checked by the caller), or there are no others. Records'
        headers never claim the others: only an announcement right after the check does.
        The watermark never passes ``now``, the wall clock (SPEC §7): an event stamped a
        little ahead is accepted but moves no clock past "now"."""
        assigned = self.assigned()
        wm = self.watermark.compute(assigned, self.loop.caught_up, now)
        alone = len(assigned) >= len(self.raw_index)
        done = self.watermark.caught_up and (alone or others_caught_up)
        return wm, cover_value(assigned, self.raw_index, done)

    def settled(self) -> bool:
        """Nothing left to announce: this worker holds no raw partition, or its last
        announcement said the whole pipeline is caught up (``--exit-when-idle`` waits for it)."""
        return not self.assigned() or self.said_caught_up

    def assigned(self) -> list[TP]:
        return [tp for tp in self.loop.assignment if tp.topic in self.raw_names]

    async def others_caught_up(self, assigned: list[TP]) -> bool:
        """Whether the group has committed every raw partition other workers hold up to its
        log end. A commit follows the delivery of that partition's clean records, so an
        announcement sent after this check lands behind all of them in every clean partition."""
        if self.others_lag is None:
            self.others_lag = GroupLag(self.rt.settings, self.rt.bootstrap, self.raw_names)
        try:
            behind = await asyncio.get_running_loop().run_in_executor(None, self.others_lag.behind)
        except Exception as exc:  # broker trouble: not caught up; asked again at the next tick
            logger.debug("group lag of the raw topics unavailable: %s", exc)
            return False
        mine = {(tp.topic, tp.partition) for tp in assigned}
        return all(tp in mine for tp in behind)

    def handle(self, msg: Message, data: bytes) -> None:
        self.said_caught_up = False  # new input: the next announcement says how far it got
        partition: int = msg.partition()  # type: ignore[assignment]
        try:
            result = self.rt.ingestor.ingest(data, partition=partition)
        except Exception as exc:  # a bug, not the record's fault; still one dead letter
            result = Rejected("processing_error", f"ingest failed: {type(exc).__name__}")
        if result is None:
            self.stats["duplicate"] += 1
            # A duplicate still says how far its source has got.
            at = self.rt.ingestor.last_duplicate_at
            if at is not None:
                self.observe(tp_of(msg), at)
        elif isinstance(result, CleanEvent):
            self.observe(tp_of(msg), result.occurred_at)
            self.stats["clean"] += 1
            if self.stats["clean"] % 64 == 1:  # recomputed every 64 events: it asks the consumer
                self.wm = self.current_watermark()
            value = self.rt.clean_codec.encode_record(clean_event_to_record(result))
            headers = {SOURCE_HEADER: source_value(msg.topic(), partition, msg.offset())}  # type: ignore[arg-type]
            if self.wm is not None:
                headers[HEADER] = header_value(self.wm)
                headers[COVER_HEADER] = self.cover
                if self.announced is not None and self.announced[1] != self.cover:
                    self.announced = None  # the processors heard otherwise: say it again
            self.delivery.send(self.names.clean, value, clean_key(result), headers)
        else:
            self.dead_letter(msg, data, result)

    def observe(self, tp: TP, at: datetime) -> None:
        before = self.watermark.latest.get(tp)
        self.watermark.observe(tp, at)
        if before is None or at > before:
            self.wm_log.changed(tp, at)

    def restore(self, tps: frozenset[TP]) -> None:
        """After an assignment, with the tables restored (``streams.consumer_loop``):
        de-duplication memory and the sources' event times as the last checkpoint left them."""
        self.rt.ingestor.dedup.restore(entries(self.seen_table.data))
        self.watermark = Watermark()
        assigned = {(tp.topic, tp.partition) for tp in tps}
        for key, ms in list(self.wm_table.data.items()):
            topic, _, partition = str(key).rpartition("|")
            try:
                tp = TP(topic, int(partition or -1))
                at = datetime.fromtimestamp(int(ms) / 1000, UTC) if ms is not None else None
            except (TypeError, ValueError, OverflowError, OSError) as exc:
                # Not a record WatermarkChangelog wrote: that source's time is learnt again.
                logger.error("ingest: a stored source watermark does not parse (%s)", exc)
                continue
            if (tp.topic, tp.partition) in assigned and at is not None:
                self.watermark.observe(tp, at)
        self.announced = None
        self.restored = True

    def dead_letter(self, msg: Message, data: bytes, result: Rejected) -> None:
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        record = result.dead_letter(data, topic, partition, offset, datetime.now(UTC))  # type: ignore[arg-type]
        # The reason, field and position are logged; never the value (PHI).
        logger.warning(
            "dead letter %s:%d@%d: %s (field %s)",
            topic, partition, offset, result.reason, result.field or "-",
        )  # fmt: skip
        key = (result.event_id or "").encode() or None
        self.delivery.send(
            self.names.dead_letter, self.rt.dead_letter_codec.encode_record(record), key
        )
        self.stats["dead_letter"] += 1
        self.reasons[result.reason] = self.reasons.get(result.reason, 0) + 1

    async def run(self) -> None:
        feed, checkpoint, handle = self.feed, self.checkpoint, self.handle
        async for taken in feed.batches():
            async with checkpoint.batch():
                records = feed.current(taken)
                for msg in records:
                    handle(msg, msg.value() or b"")
                await checkpoint.complete()
                feed.done(records)

    async def announce_watermark(self) -> None:
        assigned = self.assigned()
        if not self.loop.ready or not assigned or self.quiet:
            return
        if not all(self.loop.caught_up(tp) for tp in assigned):
            return
        now = datetime.now(UTC)  # one "now" for both looks: equal unless more was read
        async with self.checkpoint.lock:
            if not self.restored:
                return
            before, cover = self._watermark(True, now)
            if before is None:
                self.said_caught_up = True  # no event time yet anywhere: nothing to announce
                return
            if (before, cover) == self.announced:
                return  # already said, caught up: nothing new from this worker
        everyone = len(assigned) >= len(self.raw_index) or await self.others_caught_up(assigned)
        async with self.checkpoint.lock:
            if not self.restored or self.quiet:
                return
            wm, cover = self._watermark(everyone, now)
            if wm != before:
                return  # read more meanwhile: the other workers are checked again next tick
            # Announced again when only the cover changed: "caught up" must reach the
            # processors even when the time did not move (their idle clocks wait for it).
            if wm is None or (wm, cover) == self.announced:
                return
            for partition in range(self.rt.settings.clean_partitions):
                self.delivery.send(
                    self.names.clean,
                    b"",
                    headers={HEADER: header_value(wm), COVER_HEADER: cover},
                    partition=partition,
                )
            await self.delivery.flush()
            # What the cover just said (``_watermark``): every raw partition is caught up.
            done = self.watermark.caught_up and everyone
            if done and time.monotonic() - self.logged_at >= 60:
                # At most once a minute: a live stream is caught up many times a minute.
                self.logged_at = time.monotonic()
                logger.info("every source caught up: event time %s", wm.isoformat())
            self.said_caught_up = done
            self.announced = (wm, cover)

    async def quiesce(self) -> None:
        """No announcement from now on (``--exit-when-idle`` is about to stop the worker):
        waits for one in flight, which is delivered by the time this returns."""
        async with self.checkpoint.lock:
            self.quiet = True

    def resume(self) -> None:
        self.quiet = False

    async def on_revoked(self, revoked: frozenset[TP]) -> None:
        async with self.checkpoint.lock:  # a batch in flight finishes its checkpoint first
            self.restored = False

    async def on_assigned(self, assigned: frozenset[TP]) -> None:
        async with self.checkpoint.lock:
            self.restore(assigned)


def register(app: faust.App, rt: Runtime) -> Ingest:
    """The ingest agent on its feed, its watermark timer on the app."""
    delivery = DeliveringProducer(rt.settings, rt.bootstrap)
    rt.producers.append(delivery)
    ingest = Ingest(rt, delivery)
    rt.loop.on_assigned.append(ingest.on_assigned)
    rt.loop.on_revoked.append(ingest.on_revoked)
    app.timer(rt.settings.tick_interval_seconds, name="ingest-watermark")(ingest.announce_watermark)
    return ingest
