"""The one checkpoint every agent uses: rows written → outputs delivered → state → done.

Order is the guarantee (docs/delivery-guarantees.md):

1. ClickHouse rows of the batch are inserted (the caller does this, with dedup tokens);
2. the Kafka outputs the batch produced (clean events, dead letters, alerts, facts) are delivered;
3. the changelog records of the state the batch changed are delivered, each key stamped with
   the input offset it reflects; partition markers go last, in a flush of their own;
4. only then does the agent tell its feed the batch is done (``Feed.done``), and only done
   offsets are ever committed (``streams.consumer_loop``).

A stop anywhere in between re-reads inputs whose outputs may already exist: outputs carry
deterministic ids, the state stamps make a re-read event a no-op for keys that already hold it,
and the sinks skip positions they have written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

from streams.delivery import DeliveringProducer
from streams.state import ChangelogStore

__all__ = ["Checkpoint", "CheckpointAbandoned"]

logger = logging.getLogger(__name__)


class CheckpointAbandoned(RuntimeError):
    """A batch was cut short after it changed state: nothing more may be checkpointed."""


class Checkpoint:
    """Serializes state changes with their checkpoint; one per agent that keeps state."""

    def __init__(
        self,
        delivery: DeliveringProducer,
        stores: Sequence[ChangelogStore] = (),
        markers: Sequence[ChangelogStore] = (),
    ) -> None:
        self.delivery = delivery
        self.stores = list(stores)
        self.markers = list(markers)
        # Held while state changes and until their checkpoint is complete: the agent's batch,
        # the timers and a rebalance never interleave inside one.
        self.lock = asyncio.Lock()
        self.completed = 0
        self.abandoned: str | None = None

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        """The lock, for one batch of changes and its checkpoint.

        A batch cut short (cancelled by a stop while it waits for ClickHouse or the broker, a
        sink that gave up) leaves memory ahead of what was written: its state and partition
        markers changed, its rows or outputs maybe not. A later checkpoint (a timer's) would
        write that state, and the next owner would skip the batch's records as done. So from
        then on this checkpoint writes nothing: the records are read again from the last
        commit by whoever owns the partitions next."""
        async with self.lock:
            if self.abandoned is not None:
                raise CheckpointAbandoned(self.abandoned)
            try:
                yield
            except BaseException as exc:
                self.abandoned = f"a batch was cut short ({type(exc).__name__})"
                logger.info("checkpoint abandoned: %s; nothing more is written", self.abandoned)
                raise

    async def complete(self) -> None:
        """Steps 2–3 above for the state changed so far (the caller then does step 4)."""
        if self.abandoned is not None:
            raise CheckpointAbandoned(self.abandoned)
        await self.delivery.flush()
        if sum(store.write_changes() for store in self.stores):
            await self.delivery.flush()
        if sum(marker.write_changes() for marker in self.markers):
            await self.delivery.flush()
        self.completed += 1
