"""Each topic's message type as a JSON Schema document, for other languages and tools."""

from __future__ import annotations

from typing import Any

from schemas.topics import Topic


def topic_schema(topic: Topic) -> dict[str, Any]:
    schema = topic.adapter.json_schema()
    tombstone = " A null value (tombstone) is allowed." if topic.tombstones else ""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:llm-twin:topic:{topic.name}",
        "title": topic.name,
        "description": f"{topic.description} Key: {topic.key}.{tombstone} Encoding: UTF-8 JSON.",
        "x-kafka": {
            "key": topic.key,
            "partitions": topic.partitions,
            "cleanup.policy": topic.cleanup_policy,
            "retention.ms": topic.retention_ms,
            "tombstones": topic.tombstones,
        },
        **schema,
    }
