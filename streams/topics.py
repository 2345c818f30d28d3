"""Every topic the worker reads or writes, declared in one place with its partition count."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import AppT, Message

from portal_pulse.settings import Settings

__all__ = ["BytesEvent", "PipelineTopics", "RawBytesSchema", "declare_topics"]


class BytesEvent(faust.Event):
    """A Faust event whose headers stay as Kafka gave them, ``(name, bytes)`` pairs: Faust
    copies them into a dict per record, which nothing here needs (``streams.watermark`` reads
    either form)."""

    def __init__(self, app: AppT, key: Any, value: Any, headers: Any, message: Message) -> None:
        self.app = app
        self.key = key
        self.value = value
        self.message = message
        self.headers = headers if headers is not None else ()
        self.acked = False


class RawBytesSchema(faust.Schema):
    """Keys and values exactly as Kafka holds them, without Faust's codec registry.

    Every topic here is read as raw bytes; the agents decode them themselves. Faust's generic
    path (codec lookup and error wrapping for key and value, then ``app.conf.Event``) cost
    almost a tenth of the worker's time for an identity function. Events are ``BytesEvent``.
    """

    def __init__(self) -> None:
        super().__init__(key_serializer="raw", value_serializer="raw")

    def compile(
        self, app: AppT, *, default_propagate: bool = False, **_: Any
    ) -> Callable[..., Awaitable[Any]]:
        make_event = BytesEvent

        async def decode(message: Message, *, propagate: bool = default_propagate) -> Any:
            return make_event(app, message.key, message.value, message.headers, message)

        return decode


@dataclass
class PipelineTopics:
    raw: faust.TopicT
    clean: faust.TopicT
    dead_letter: faust.TopicT
    alerts: faust.TopicT
    responses: faust.TopicT
    live_metrics: faust.TopicT


def declare_topics(app: faust.App, settings: Settings) -> PipelineTopics:
    names = settings.topics
    raw_kwargs = {"schema": RawBytesSchema()}
    clean_parts = settings.clean_partitions
    return PipelineTopics(
        raw=app.topic(*names.raw.values(), partitions=settings.raw_partitions, **raw_kwargs),
        clean=app.topic(names.clean, partitions=clean_parts, **raw_kwargs),
        dead_letter=app.topic(names.dead_letter, partitions=settings.raw_partitions, **raw_kwargs),
        alerts=app.topic(names.alerts, partitions=clean_parts, **raw_kwargs),
        responses=app.topic(names.responses, partitions=clean_parts, **raw_kwargs),
        live_metrics=app.topic(names.live_metrics, partitions=clean_parts, **raw_kwargs),
    )
