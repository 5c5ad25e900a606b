"""``POST /v1/batch``: run each request as if it had been sent alone, in order.

Most items are answered by :mod:`cloud.direct`: the route's own endpoint function, called
without the ASGI stack, many items to one SQLite transaction (a savepoint each). An item
it does not take (no direct route, a parameter or body that does not validate, a nested
batch) goes through the whole application again (routing, token, scopes, validation,
idempotency), marked as a batch item so faults and the rate limit apply to the batch
request once, not to its items. The completed items are committed before such an item
runs, so it sees them as a separate request would.

Both paths build an item's request (:func:`item_headers`, :func:`item_body`) and its
answer (:func:`answer`) with the same functions here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Scope

from cloud.context import BATCH_ITEM
from cloud.models import BatchItem

if TYPE_CHECKING:
    from cloud.direct import DirectDispatch

Answer = dict[str, Any]
RawHeaders = list[tuple[bytes, bytes]]

# response headers not worth returning per item
_SKIP_HEADERS = frozenset({"content-length", "content-type", "date", "server"})
# request headers an item inherits from the batch request
_INHERITED = (b"authorization", b"host", b"user-agent")


def _item_error(status: int, error: str, description: str) -> Answer:
    return {
        "status": status,
        "body": {"error": error, "error_description": description},
        "headers": {},
    }


def split_path(item: BatchItem) -> tuple[str, str, str]:
    """``(path, raw_path, query)``: the item's path as routing sees it (percent-decoded)."""
    raw_path, _, query = item.path.partition("?")
    return unquote(raw_path), raw_path, query


def is_batch(path: str) -> bool:
    return path.rstrip("/") == "/v1/batch"


def item_body(item: BatchItem) -> bytes:
    """The item's body as the bytes of a request (empty when it has none)."""
    return b"" if item.body is None else json.dumps(item.body).encode("utf-8", "surrogatepass")


def item_headers(parent: Iterable[tuple[bytes, bytes]], item: BatchItem) -> RawHeaders:
    """The item's request headers: the batch's token, and its own key and ``If-Match``.

    ``content-length`` is left to :func:`dispatch`, which serialises the body.
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


def render_answers(answers: list[Answer]) -> Response:
    """The batch's response body ``{"responses": [...]}``.

    orjson writes it several times faster than the standard library (it is the largest
    body the API sends); the JSON it writes means the same. Anything orjson refuses is
    written by the standard JSONResponse.
    """
    body = {"responses": answers}
    try:
        content = orjson.dumps(body)
    except orjson.JSONEncodeError:
        return JSONResponse(body)
    return Response(content, media_type="application/json")


async def dispatch(app: ASGIApp, parent: Scope, item: BatchItem) -> Answer:
    """Run one batch item through the whole of ``app``; returns ``{"status", "body", "headers"}``."""
    path, raw_path, query = split_path(item)
    if is_batch(path):
        return _item_error(422, "invalid_batch_item", "batches do not nest")
    body = item_body(item)
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
        "headers": [*item_headers(parent["headers"], item), (b"content-length", str(len(body)).encode())],
        "client": parent.get("client"),
        "server": parent.get("server"),
        "state": {},
        BATCH_ITEM: True,
    }
    done = asyncio.Event()
    body_sent = False
    status = 500
    response_headers: RawHeaders = []
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
            response_headers.extend(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                done.set()

    await app(scope, receive, send)
    done.set()
    return answer(status, response_headers, b"".join(chunks))


async def run_batch(
    app: ASGIApp, parent: Scope, direct: DirectDispatch | None, items: list[BatchItem]
) -> list[Answer]:
    """Answer every item, in order.

    Runs of direct items go to a worker thread, one SQLite transaction per run (a
    savepoint per item); an item that needs the whole application runs on the event
    loop after the run before it is committed. Without ``direct`` every item does.
    """
    answers: list[Answer] = []
    index = 0
    while index < len(items):
        if direct is not None:
            index = await run_in_threadpool(
                direct.run_until_indirect, parent["headers"], items, index, answers
            )
        if index < len(items):
            answers.append(await dispatch(app, parent, items[index]))
            index += 1
    return answers
