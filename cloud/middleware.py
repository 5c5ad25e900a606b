"""ASGI middleware: count every request, and carry out injected faults on ``/v1``.

Faults are decided by :mod:`cloud.faults` before the request reaches its handler. Only
``drop`` with ``drop_after_effect`` lets the handler run (and commit) first, then drops
the connection: the client sees a lost response for a request that had its effect; and
``latency_after_effect`` holds a handled request's answer back instead of the request.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud.context import BATCH_ITEM
from cloud.faults import FaultDecision, FaultInjector, FaultKind
from cloud.ratelimit import retry_after_header
from cloud.stats import Stats

log = logging.getLogger(__name__)

# counted by name; anything else is "OTHER" (clients choose methods: keep labels bounded)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_template(scope: Scope, routes: Sequence[BaseRoute]) -> str:
    """``"METHOD /path/{param}"`` for counting; ``unmatched`` when no route has the path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path is None:
        for candidate in routes:
            match, _ = candidate.matches(scope)
            if match is not Match.NONE:
                path = getattr(candidate, "path", None)
                if match is Match.FULL:
                    break
    method = scope["method"] if scope["method"] in _METHODS else "OTHER"
    return f"{method} {path or 'unmatched'}"


async def _send_json(
    send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    payload = json.dumps(body).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


def _held_back(send: Send, seconds: float) -> Send:
    """A ``send`` that waits ``seconds`` before the answer's first message: the handler has
    run (and committed) by then, so the client waits for an answer to a write already made."""
    waited = False

    async def held(message: Message) -> None:
        nonlocal waited
        if not waited and message["type"] == "http.response.start":
            waited = True
            await asyncio.sleep(seconds)
        await send(message)

    return held


async def drop_connection(receive: Receive, send: Send) -> None:
    """Close the connection without a response (a lost response, as the client sees it).

    Under uvicorn the transport is reached through ``receive``'s bound cycle and
    aborted before a byte is written. Elsewhere: promise a body and never send it.
    """
    cycle = getattr(receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is not None and hasattr(transport, "abort"):
        transport.abort()
        await asyncio.sleep(0)  # lets the server see the connection is gone
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
        }
    )
    await send({"type": "http.response.body", "body": b"{", "more_body": True})


async def read_body(receive: Receive) -> tuple[Receive, bytes, bool]:
    """Read the request body now: a ``receive`` that replays it, the body, and whether it is whole.

    When the client went away before the end, the replay says more is to come and then
    hands on the disconnect, so the application sees what it would have seen.
    """
    chunks: list[bytes] = []
    complete = False
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            complete = True
            break
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": not complete}
        return await receive()

    return replay, body, complete


async def _buffered(receive: Receive) -> Receive:
    """Read the whole request body now; the returned ``receive`` replays it."""
    replay, _, _ = await read_body(receive)
    return replay


class TrafficMiddleware:
    """Counts requests in :class:`~cloud.stats.Stats`; applies faults to ``/v1`` requests."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        faults: FaultInjector,
        stats: Stats,
        routes: Callable[[], Sequence[BaseRoute]],
    ) -> None:
        self.app = app
        self.faults = faults
        self.stats = stats
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        batch_item = bool(scope.get(BATCH_ITEM))
        status = "dropped"

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
            await send(message)

        try:
            if batch_item or not scope["path"].startswith("/v1/"):
                await self.app(scope, receive, counting_send)
            else:
                decision = self.faults.next_decision()
                if decision.kind is FaultKind.NONE and not decision.latency_seconds:
                    await self.app(scope, receive, counting_send)
                else:
                    await self._faulty(decision, scope, receive, counting_send)
        finally:
            template = route_template(scope, self.routes())
            self.stats.record_request(template, status, batch_item=batch_item)

    async def _faulty(self, decision: FaultDecision, scope: Scope, receive: Receive, send: Send) -> None:
        if decision.latency_seconds and not decision.latency_after:
            await asyncio.sleep(decision.latency_seconds)
        # what a handler answers; with latency_after_effect it goes out that much later
        answer = _held_back(send, decision.latency_seconds) if decision.latency_after else send
        kind = decision.kind
        if kind is not FaultKind.NONE:
            self.stats.record_fault(kind.value)
            log.debug("injecting %s on %s %s", kind.value, scope["method"], scope["path"])
        if kind is FaultKind.NONE:
            await self.app(scope, receive, answer)
        elif kind is FaultKind.ERROR:
            assert decision.status is not None
            await _send_json(
                send,
                decision.status,
                {"error": "injected_fault", "error_description": "injected server error"},
            )
        elif kind is FaultKind.RATE_LIMIT:
            wait = decision.retry_after_seconds or 0.0
            await _send_json(
                send,
                429,
                {
                    "error": "rate_limited",
                    "error_description": "injected rate limit",
                    "retry_after_seconds": wait,
                },
                {"Retry-After": retry_after_header(wait)},
            )
        elif kind is FaultKind.DROP_BEFORE:
            await drop_connection(receive, send)
        elif kind is FaultKind.DROP_AFTER:

            async def swallow(message: Message) -> None:
                return None

            await self.app(scope, receive, swallow)
            if decision.latency_after:
                await asyncio.sleep(decision.latency_seconds)
            await drop_connection(receive, send)
        elif kind is FaultKind.TIMEOUT:
            replay = await _buffered(receive)
            await asyncio.sleep(decision.hold_seconds)
            await self.app(scope, replay, answer)
