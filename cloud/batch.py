"""``POST /v1/batch``: run each request as if it had been sent alone, in order.

Most items are answered by :mod:`cloud.direct`: the route's own endpoint function, called
without the ASGI stack, many items to one SQLite transaction (a savepoint each). An item
it does not take (no direct route, a parameter or body that does not validate, a nested
batch) goes through the whole application again (routing, token, scopes, validation,
idempotency), marked as a batch item so faults and the rate limit apply to the batch
request once, not to its items. The completed items are committed before such an item
runs, so it sees them as a separate request would.

Both paths build an item's request and its answer with the same functions, in
:mod:`cloud.batch_items`.

The batch request itself is answered without FastAPI too when it can be
(:func:`respond`, for :class:`~cloud.direct_lane.DirectLane`): its per-request cost was
about a millisecond of the cloud's CPU more than a direct request's, paid by every batch
the sink sends. Everything it does not take goes to the endpoint below, which FastAPI
serves as before.
"""

from __future__ import annotations

import asyncio

import orjson
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Scope

from cloud.batch_items import Answer, RawHeaders, answer, is_batch, item_body, item_headers, split_path
from cloud.context import BATCH_ITEM, CloudContext
from cloud.deps import authorise
from cloud.direct import DirectDispatch, media_type
from cloud.errors import ApiError, error_response, unicode_error_response
from cloud.models import BatchBody, BatchItem


def _item_error(status: int, error: str, description: str) -> Answer:
    return {
        "status": status,
        "body": {"error": error, "error_description": description},
        "headers": {},
    }


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


async def respond(
    app: ASGIApp, scope: Scope, context: CloudContext, direct: DirectDispatch, body: bytes
) -> Response | None:
    """The answer to ``POST /v1/batch`` without FastAPI, or ``None`` to leave it to FastAPI.

    What the endpoint gets from FastAPI, in FastAPI's order: the caller (401, 429) before
    anything of the body is used, then the body as :class:`~cloud.models.BatchBody`. A
    body FastAPI would refuse (not ``application/json``, not JSON, not a valid batch: its
    422s are FastAPI's words) is left to FastAPI untouched: validating it here has no
    effect, and the caller is not checked (nor counted by the rate limit) before that. The
    body is parsed by orjson (what it refuses — integers over 64 bits, ``NaN`` — FastAPI
    parses) and validated as FastAPI validates it, from the parsed JSON.
    ``app``: the whole application, for the items that need it (:func:`run_batch`).
    """
    headers = Headers(scope=scope)
    if media_type(headers.get("content-type")) != "application/json":
        return None
    try:
        batch = BatchBody.model_validate(orjson.loads(body))
    except (orjson.JSONDecodeError, ValidationError):
        return None
    try:
        authorise(context, headers.get("authorization"), rate_limited=True)
        return render_answers(await run_batch(app, scope, direct, batch.requests))
    except ApiError as exc:
        return error_response(exc)
    except UnicodeError:
        return unicode_error_response()
