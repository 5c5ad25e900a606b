"""A batch item's request and its answer, built the same way on both of the batch's paths.

:mod:`cloud.direct` (the endpoint called directly) and :mod:`cloud.batch` (the item run
through the whole application) both read an item's path (:func:`split_path`), give it the
batch's headers (:func:`item_headers`) and answer it as ``{"status", "body", "headers"}``
(:func:`answer`, :func:`parsed_answer`) with the functions here, so that an item's answer
does not depend on the path that served it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

import orjson

from cloud.models import BatchItem

Answer = dict[str, Any]
RawHeaders = list[tuple[bytes, bytes]]

# response headers not worth returning per item
BATCH_PATH = "/v1/batch"  # the batch endpoint (cloud.api_services), answered on the direct lane too

_SKIP_HEADERS = frozenset({"content-length", "content-type", "date", "server"})
# request headers an item inherits from the batch request
_INHERITED = (b"authorization", b"host", b"user-agent")


def split_path(item: BatchItem) -> tuple[str, str, str]:
    """``(path, raw_path, query)``: the item's path as routing sees it (percent-decoded)."""
    raw_path, _, query = item.path.partition("?")
    return unquote(raw_path), raw_path, query


def is_batch(path: str) -> bool:
    return path.rstrip("/") == BATCH_PATH


def item_body(item: BatchItem) -> bytes:
    """The item's body as the bytes of a request (empty when it has none)."""
    return b"" if item.body is None else json.dumps(item.body).encode("utf-8", "surrogatepass")


def item_headers(parent: Iterable[tuple[bytes, bytes]], item: BatchItem) -> RawHeaders:
    """The item's request headers: the batch's token, and its own key and ``If-Match``.

    ``content-length`` is left to :func:`cloud.batch.dispatch`, which serialises the body.
    """
    headers: RawHeaders = [(b"content-type", b"application/json")]
    headers += [(name, value) for name, value in parent if name in _INHERITED]
    if item.idempotency_key is not None:
        headers.append((b"idempotency-key", item.idempotency_key.encode("ascii", "replace")))
    if item.if_match is not None:
        headers.append((b"if-match", str(item.if_match).encode("latin-1", "replace")))
    return headers


def answer(status: int, raw_headers: Iterable[tuple[bytes, bytes]], raw_body: bytes) -> Answer:
    """``{"status", "body", "headers"}`` of one item from its response as sent."""
    headers: dict[str, str] = {}
    for name, value in raw_headers:
        key = name.decode("latin-1").lower()
        if key not in _SKIP_HEADERS:
            headers[key] = value.decode("latin-1")
    parsed: Any = None
    if raw_body:
        try:
            parsed = orjson.loads(raw_body)
        except ValueError:  # not JSON, or what orjson refuses (integers over 64 bits)
            try:
                parsed = json.loads(raw_body)
            except ValueError:
                parsed = raw_body.decode("utf-8", "replace")
    return {"status": status, "body": parsed, "headers": headers}


def parsed_answer(status: int, headers: Mapping[str, str], body: Any) -> Answer:
    """What :func:`answer` makes of a JSON response with these headers and this body.

    For a body of JSON values only (what the store keeps), whose JSON round trip is
    itself: a write item's answer without rendering and parsing it again.
    """
    kept = {name.lower(): value for name, value in headers.items() if name.lower() not in _SKIP_HEADERS}
    return {"status": status, "body": body, "headers": kept}
