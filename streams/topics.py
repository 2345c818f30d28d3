"""Every topic the worker reads or writes, declared in one place with its partition count."""

from __future__ import annotations

from dataclasses import dataclass

import faust

from portal_pulse.settings import Settings

__all__ = ["PipelineTopics", "declare_topics"]


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
    raw_kwargs = {"value_serializer": "raw", "key_serializer": "raw"}
    clean_parts = settings.clean_partitions
    return PipelineTopics(
        raw=app.topic(*names.raw.values(), partitions=settings.raw_partitions, **raw_kwargs),
        clean=app.topic(names.clean, partitions=clean_parts, **raw_kwargs),
        dead_letter=app.topic(names.dead_letter, partitions=settings.raw_partitions, **raw_kwargs),
        alerts=app.topic(names.alerts, partitions=clean_parts, **raw_kwargs),
        responses=app.topic(names.responses, partitions=clean_parts, **raw_kwargs),
        live_metrics=app.topic(names.live_metrics, partitions=clean_parts, **raw_kwargs),
    )
