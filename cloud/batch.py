"""``POST /v1/batch``: run each request as if it had been sent alone, in order.

Each item goes through the whole application again (routing, token, scopes,
validation, idempotency), marked as a batch item so faults and the rate limit apply
to the batch request once, not to its items.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import unquote

from starlette.types import ASGIApp, Message, Scope

from cloud.context import BATCH_ITEM
from cloud.models import BatchItem

# response headers not worth returning per item
_SKIP_HEADERS = frozenset({"content-length", "content-type", "date", "server"})


def _item_error(status: int, error: str, description: str) -> dict[str, Any]:
    return {
        "status": status,
        "body": {"error": error, "error_description": description},
        "headers": {},
    }


async def dispatch(app: ASGIApp, parent: Scope, item: BatchItem) -> dict[str, Any]:
    """Run one batch item through ``app``; returns ``{"status", "body", "headers"}``."""
    raw_path, _, query = item.path.partition("?")
    path = unquote(raw_path)
    if path.rstrip("/") == "/v1/batch":
        return _item_error(422, "invalid_batch_item", "batches do not nest")
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
    ]
    for name, value in parent["headers"]:
        if name in (b"authorization", b"host", b"user-agent"):
            headers.append((name, value))
    if item.idempotency_key is not None:
        headers.append((b"idempotency-key", item.idempotency_key.encode("ascii", "replace")))
    if item.if_match is not None:
        headers.append((b"if-match", str(item.if_match).encode("latin-1", "replace")))
    body = b"" if item.body is None else json.dumps(item.body).encode("utf-8", "surrogatepass")
    headers.append((b"content-length", str(len(body)).encode()))
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": item.method,
        "scheme": parent.get("scheme", "http"),
        "path": path,
        "raw_path": raw_path.encode("latin-1", "replace"),
        "query_string": query.encode("latin-1", "replace"),
        "root_path": "",
        "headers": headers,
        "client": parent.get("client"),
        "server": parent.get("server"),
        "state": {},
        BATCH_ITEM: True,
    }
    done = asyncio.Event()
    body_sent = False
    status = 500
    response_headers: dict[str, str] = {}
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            for name, value in message.get("headers", []):
                key = name.decode("latin-1").lower()
                if key not in _SKIP_HEADERS:
                    response_headers[key] = value.decode("latin-1")
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                done.set()

    await app(scope, receive, send)
    done.set()
    raw = b"".join(chunks)
    parsed: Any = None
    if raw:
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw.decode("utf-8", "replace")
    return {"status": status, "body": parsed, "headers": response_headers}
