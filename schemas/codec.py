"""Bytes ↔ messages. JSON, UTF-8. A decode failure is a :class:`DecodeError` with a reason."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas.cloud_changes import CLOUD_CHANGE_ADAPTER, CloudChange
from schemas.directory_operations import DIRECTORY_OPERATION_ADAPTER, DirectoryOperation
from schemas.events import DIRECTORY_EVENT_ADAPTER, DirectoryEvent
from schemas.operations import CLOUD_OPERATION_ADAPTER, CloudOperation

T = TypeVar("T")


class DecodeError(ValueError):
    """The bytes are not a valid message; ``reason`` is short and safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode(message: BaseModel) -> bytes:
    """``message.model_dump_json().encode()``, byte for byte, straight from pydantic-core's
    serializer: no ``str`` made and encoded again, no Python frame for the keyword defaults
    (the planner encodes two or three operations per event)."""
    return message.__pydantic_serializer__.to_json(message)


def _decode(adapter: TypeAdapter[T], raw: bytes | None) -> T:
    if raw is None:
        raise DecodeError("tombstone (null value) where a message was expected")
    try:
        return adapter.validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        kind = "not JSON" if first.get("type") == "json_invalid" else "wrong shape"
        raise DecodeError(f"{kind}: {where or '(root)'}: {first.get('msg')}") from None


def decode_event(raw: bytes | None) -> DirectoryEvent:
    return _decode(DIRECTORY_EVENT_ADAPTER, raw)


def decode_operation(raw: bytes | None) -> CloudOperation:
    return _decode(CLOUD_OPERATION_ADAPTER, raw)


def decode_directory_operation(raw: bytes | None) -> DirectoryOperation:
    return _decode(DIRECTORY_OPERATION_ADAPTER, raw)


def decode_cloud_change(raw: bytes | None) -> CloudChange:
    return _decode(CLOUD_CHANGE_ADAPTER, raw)


def decode_model(model: type[T], raw: bytes | None) -> T:
    return _decode(TypeAdapter(model), raw)
