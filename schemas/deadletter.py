"""Dead-letter error context, carried as Kafka headers (Debezium/Kafka Connect style)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

HEADER_REASON = "vudsync.error.reason"
HEADER_STAGE = "vudsync.error.stage"
HEADER_EXCEPTION = "vudsync.error.exception"
HEADER_TOPIC = "vudsync.error.topic"
HEADER_PARTITION = "vudsync.error.partition"
HEADER_OFFSET = "vudsync.error.offset"
HEADER_SOURCE_ROW = "vudsync.error.source_row"
HEADER_ATTEMPTS = "vudsync.error.attempts"
HEADER_HTTP_STATUS = "vudsync.error.http_status"
HEADER_RESPONSE = "vudsync.error.response"
HEADER_TS = "vudsync.error.ts"
# what each header carries, as the AsyncAPI document of the dead-letter topics describes it
HEADER_DESCRIPTIONS: dict[str, str] = {
    HEADER_REASON: "why the message was dead-lettered (no secrets)",
    HEADER_STAGE: "capture | planner | sink",
    HEADER_EXCEPTION: "exception class",
    HEADER_TOPIC: "original topic",
    HEADER_PARTITION: "original partition",
    HEADER_OFFSET: "original offset",
    HEADER_SOURCE_ROW: "source row reference <entity>:<id> (capture)",
    HEADER_ATTEMPTS: "attempts made (sink)",
    HEADER_HTTP_STATUS: "last HTTP status (sink)",
    HEADER_RESPONSE: "last response body, truncated (sink)",
    HEADER_TS: "when it was dead-lettered",
}

_MAX_HEADER = 2000


def error_headers(
    *,
    reason: str,
    stage: str,
    exception: str = "",
    topic: str = "",
    partition: int | None = None,
    offset: int | None = None,
    extra: Mapping[str, str] | None = None,
) -> list[tuple[str, bytes]]:
    """The headers of a dead letter. Values are truncated; callers must pass no secrets."""
    pairs: dict[str, str] = {
        HEADER_REASON: reason,
        HEADER_STAGE: stage,
        HEADER_EXCEPTION: exception,
        HEADER_TOPIC: topic,
        HEADER_PARTITION: "" if partition is None else str(partition),
        HEADER_OFFSET: "" if offset is None else str(offset),
    }
    pairs.update(extra or {})
    return [(k, v[:_MAX_HEADER].encode()) for k, v in pairs.items() if v != ""]


def headers_dict(headers: Sequence[tuple[str, bytes | None]] | None) -> dict[str, str]:
    return {k: (v or b"").decode(errors="replace") for k, v in headers or ()}
