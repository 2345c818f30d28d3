"""The settings every idempotent producer of the project shares, and why each is there.

One request in flight per broker connection. An idempotent producer numbers its batches per
partition, and librdkafka sends up to five requests at once, trusting the broker to refuse a batch
whose predecessor is missing. A broker refuses it only if it already knows the producer on that
partition (Apache Kafka KAFKA-15591): when a new producer's first request to a partition fails
with a retriable error (the partition was created a moment ago and its leader is not ready, or
the broker is restarting) while its second request is accepted, the second is written as if it
were the first, every retry of the first is refused as out of order, and its records are gone
without an error reaching the application. Every worker start is a new producer and every
topic the demo or a test creates is new, so this is not rare: ``tests/integration/
test_producer_first_batches.py`` loses records in about one round in eight with five requests
in flight, and none with one. With one request in flight a failed batch is sent again before
any batch after it, so the broker always sees a partition's batches in order.
"""

from __future__ import annotations

from typing import Any

__all__ = ["IDEMPOTENT_PRODUCER"]

IDEMPOTENT_PRODUCER: dict[str, Any] = {
    "enable.idempotence": True,  # no duplicate from a retry; per-key order through retries
    "max.in.flight.requests.per.connection": 1,  # see above: no silent loss of a first batch
}
