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
import logging
from collections.abc import Sequence

from streams.delivery import DeliveringProducer
from streams.state import ChangelogStore

__all__ = ["Checkpoint"]

logger = logging.getLogger(__name__)


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

    async def complete(self) -> None:
        """Steps 2–3 above for the state changed so far (the caller then does step 4)."""
        await self.delivery.flush()
        if sum(store.write_changes() for store in self.stores):
            await self.delivery.flush()
        if sum(marker.write_changes() for marker in self.markers):
            await self.delivery.flush()
        self.completed += 1
