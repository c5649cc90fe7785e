"""JSON bytes on the wire, decoded strictly into the topic's registered type.

JSON so that ``kcat`` and any language can produce and read the messages.
Decoding is strict (no type coercion: ``"5"`` is not an integer) and every
failure is a ``DecodeError`` whose ``reason`` names the bad field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from schemas.common import MAX_MESSAGE_BYTES
from schemas.topics import Topic


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class DecodeError(ValueError):
    """A message that is not a valid instance of its topic's type."""

    def __init__(self, topic: str, reason: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(f"{topic}: {reason}")
        self.topic = topic
        self.reason = reason
        self.errors = errors or []


class MessageTooLarge(ValueError):
    pass


def encode(message: BaseModel) -> bytes:
    data = message.model_dump_json().encode("utf-8")
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageTooLarge(
            f"{type(message).__name__} encodes to {len(data)} bytes, "
            f"over the {MAX_MESSAGE_BYTES}-byte message limit"
        )
    return data


def decode(topic: Topic, value: bytes | None) -> Any:
    """The message in ``value``, or ``None`` for a tombstone on a topic that allows them."""
    if value is None:
        if topic.tombstones:
            return None
        raise DecodeError(topic.name, "null value (tombstone) is not allowed on this topic")
    if len(value) > MAX_MESSAGE_BYTES:
        raise DecodeError(
            topic.name, f"message is {len(value)} bytes, over the {MAX_MESSAGE_BYTES}-byte limit"
        )
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DecodeError(topic.name, f"not UTF-8: byte {error.start} is invalid") from None
    try:
        return topic.adapter.validate_json(text, strict=True)
    except ValidationError as error:
        errors = [_field_error(detail) for detail in error.errors(include_url=False)]
        if errors and errors[0].message.startswith("Invalid JSON"):
            raise DecodeError(topic.name, f"not JSON: {errors[0].message}", errors) from None
        reason = "; ".join(f"{e.field}: {e.message}" if e.field else e.message for e in errors)
        raise DecodeError(topic.name, reason, errors) from None


def _field_error(detail: Any) -> FieldError:
    # An empty location is a check across fields; its message names them.
    location = ".".join(str(part) for part in detail["loc"])
    return FieldError(field=location, message=detail["msg"].removeprefix("Value error, "))
