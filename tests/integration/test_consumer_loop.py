"""The consumer loop on the real broker: every record of an assignment once, from its committed
offset, and a partition's tail of transaction markers counted as read.

A group that has committed offsets hands a worker its partitions in the middle. The loop's first
``consume`` serves the assignment and may already return records for it; that batch is dropped
and the partitions assigned again at their start (``ConsumerLoop._restart_fetch``). Right after
such an ``assign`` librdkafka's ``position`` still answers where the dropped batch ended: a loop
that took it for "read up to here" skipped those records and committed past them (the roles
suite lost a range of a clean partition that way). Here the loop must hand over exactly the
records from the committed offset on, whatever the first ``consume`` returned.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streams.consumer_loop import ConsumerLoop
from streams.records import TP

pytestmark = pytest.mark.integration

RECORDS = 400
PARTITIONS = 2


@pytest.fixture
def topic(kafka_bootstrap: str) -> Iterator[str]:
    name = f"loop-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(name, PARTITIONS, 1)])[name].result(30)
    yield name
    admin.delete_topics([name])[name].result(30)


def _produce(bootstrap: str, topic: str, *, transactional: bool = False) -> dict[int, int]:
    """``RECORDS`` records per partition; in transactions (a commit marker after each 50, so
    every partition ends in a marker) when asked. Returns each partition's end offset."""
    config = {"bootstrap.servers": bootstrap}
    if transactional:
        config["transactional.id"] = f"tx-{topic}"
    producer = Producer(config)
    if transactional:
        producer.init_transactions(30)
    for start in range(0, RECORDS, 50):
        if transactional:
            producer.begin_transaction()
        for i in range(start, start + 50):
            for p in range(PARTITIONS):
                producer.produce(topic, f"{p}:{i}".encode(), partition=p)
        if transactional:
            producer.commit_transaction(30)
    producer.flush(30)
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ends-{topic}"})
    try:
        return {
            p: reader.get_watermark_offsets(TopicPartition(topic, p), 10)[1]
            for p in range(PARTITIONS)
        }
    finally:
        reader.close()


def _commit(bootstrap: str, group: str, offsets: dict[TP, int]) -> None:
    """What an earlier member of the group committed before it let the partitions go."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        c.commit(
            offsets=[TopicPartition(tp.topic, tp.partition, o) for tp, o in offsets.items()],
            asynchronous=False,
        )
    finally:
        c.close()


async def _read_all(
    bootstrap: str, topic: str, group: str, ends: dict[int, int]
) -> tuple[dict[int, list[int]], dict[TP, int]]:
    """Run a loop in ``group`` until it has committed every partition's end: the offsets its feed
    was handed, per partition, and what it committed."""
    loop = ConsumerLoop({"bootstrap.servers": bootstrap, "group.id": group})
    feed = loop.feed("reader", [topic], 100, 0.05)
    seen: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}

    async def agent() -> None:
        async for taken in feed.batches():
            records = feed.current(taken)
            for m in records:
                seen[m.partition()].append(m.offset())  # type: ignore[index]
            feed.done(records)

    task = asyncio.create_task(agent())
    loop.start(asyncio.get_running_loop())
    want = {TP(topic, p): end for p, end in ends.items()}
    try:
        async with asyncio.timeout(120):  # liveness only: the assertions below judge
            while any(loop.committed.get(tp, -1) < end for tp, end in want.items()):
                assert loop.failure is None, loop.failure
                await asyncio.sleep(0.05)
    finally:
        await loop.stop()
        task.cancel()
    return seen, dict(loop.committed)


@pytest.mark.parametrize("round_", range(4))
def test_a_worker_taking_over_reads_on_from_the_committed_offsets(
    kafka_bootstrap: str, topic: str, round_: int
) -> None:
    ends = _produce(kafka_bootstrap, topic)
    group = f"g-{topic}"
    # A different middle each round: the first fetch after the assignment returns the rest at
    # once (all of it is there), which is what the first consume may hand back and drop.
    start = {p: 37 + 61 * round_ + 13 * p for p in range(PARTITIONS)}
    _commit(kafka_bootstrap, group, {TP(topic, p): o for p, o in start.items()})

    seen, committed = asyncio.run(_read_all(kafka_bootstrap, topic, group, ends))

    for p in range(PARTITIONS):
        assert seen[p] == list(range(start[p], ends[p])), (
            f"partition {p}: handed {len(seen[p])} records from {seen[p][:1]}, "
            f"want {ends[p] - start[p]} from {start[p]}"
        )
    assert committed == {TP(topic, p): ends[p] for p in range(PARTITIONS)}


def test_a_tail_of_commit_markers_is_read_and_committed(kafka_bootstrap: str, topic: str) -> None:
    ends = _produce(kafka_bootstrap, topic, transactional=True)
    group = f"g-{topic}"
    # 8 transactions of 50: each commit marker takes an offset, the last one ends the partition.
    assert ends == {p: RECORDS + RECORDS // 50 for p in range(PARTITIONS)}
    start = {p: 51 + 7 * p for p in range(PARTITIONS)}  # after the first marker (offset 50)
    _commit(kafka_bootstrap, group, {TP(topic, p): o for p, o in start.items()})

    seen, committed = asyncio.run(_read_all(kafka_bootstrap, topic, group, ends))

    for p in range(PARTITIONS):
        markers = {50 + 51 * k for k in range(RECORDS // 50)}
        want = [o for o in range(start[p], ends[p]) if o not in markers]
        assert seen[p] == want, f"partition {p}: {len(seen[p])} records, want {len(want)}"
    # Committed past the last marker: the group is caught up, nothing left behind.
    assert committed == {TP(topic, p): ends[p] for p in range(PARTITIONS)}
