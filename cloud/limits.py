"""Limits that keep the reference cloud up under abuse, as ASGI middleware (the outermost).

* **Request body size**: a body larger than ``CloudSettings.max_body_bytes`` is answered 413
  before any handler, fault injection or direct dispatch sees it. A declared
  ``Content-Length`` is checked up front (the server reads no more than it declares); a body
  without one (chunked) is counted while it is read, and refused once it passes the limit.
* **``POST /oauth/token`` per client address**: a token bucket per peer address
  (``CloudSettings.token_rate_per_address`` per second, ``token_burst_per_address`` saved
  up); beyond it, 429 with ``Retry-After``, before the secret is hashed. Guessing client
  secrets, or just burning the server's CPU on PBKDF2, costs an attacker time per address.
  The address is the TCP peer (no ``X-Forwarded-For``: behind a proxy, limit there).

Both answer in the API's error shape (``error``, ``error_description``).
"""

from __future__ import annotations

import contextlib

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud.ratelimit import RateLimiter, retry_after_header

TOKEN_PATH = "/oauth/token"


class BodyTooLarge(Exception):
    """Raised from ``receive`` once a request body without a length passes the limit."""


class _CountingReceive:
    """Counts the body bytes handed on; raises :class:`BodyTooLarge` past ``limit``.

    ``transport`` is the server's, so that fault injection can still abort the connection
    through ``receive.__self__.transport`` (cloud.middleware.drop_connection)."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self._limit = limit
        self._seen = 0
        self.exceeded = False
        self.transport = getattr(getattr(receive, "__self__", None), "transport", None)

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self._seen += len(message.get("body", b""))
            if self._seen > self._limit:
                self.exceeded = True
                raise BodyTooLarge
        return message


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length itself
    return None


class RequestLimits:
    """The body size limit and the per-address limit on ``/oauth/token`` (module docstring)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, token_limiter: RateLimiter) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.token_limiter = token_limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == TOKEN_PATH and scope["method"] == "POST":
            client = scope.get("client")
            wait = self.token_limiter.check(client[0] if client else "unknown")
            if wait is not None:
                await _too_many(wait)(scope, receive, send)
                return
        declared = _declared_length(scope)
        if declared is not None:
            if declared > self.max_body_bytes:
                await self._too_large()(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        await self._counted(scope, receive, send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A body of unknown length: the application's answer is dropped once the body passed
        the limit (it would be a 400 for a body cut short), and 413 sent instead."""
        counting = _CountingReceive(receive, self.max_body_bytes)
        started = False

        async def guarded(message: Message) -> None:
            nonlocal started
            if counting.exceeded:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        with contextlib.suppress(BodyTooLarge):  # or the handler's own error for a cut-off body
            await self.app(scope, counting.receive, guarded)
        if counting.exceeded and not started:
            await self._too_large()(scope, receive, send)

    def _too_large(self) -> JSONResponse:
        return JSONResponse(
            {
                "error": "payload_too_large",
                "error_description": f"the request body is larger than {self.max_body_bytes} bytes",
            },
            status_code=413,
            headers={"Connection": "close"},
        )


def _too_many(wait: float) -> JSONResponse:
    return JSONResponse(
        {
            "error": "rate_limited",
            "error_description": "too many token requests from this address",
            "retry_after_seconds": round(wait, 3),
        },
        status_code=429,
        headers={"Retry-After": retry_after_header(wait)},
    )
