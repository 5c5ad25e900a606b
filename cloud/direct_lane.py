"""The ASGI middleware that sends ``/v1`` requests with a direct route past the rest of the stack."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from cloud.context import BATCH_ITEM
from cloud.direct import DirectDispatch
from cloud.middleware import read_body


class DirectLane:
    """ASGI middleware: ``/v1`` requests with a direct route skip the rest of the stack.

    Installed inside :class:`~cloud.middleware.TrafficMiddleware` (faults and counting
    stay as they are) and outside FastAPI. The body is read first; the request runs in a
    worker thread (SQLite blocks), once; anything :meth:`DirectDispatch.respond` leaves
    to the application goes on to it with the body replayed. An unexpected exception
    goes up to Starlette's server-error handler, as it would from a route.
    """

    def __init__(self, app: ASGIApp, *, direct: DirectDispatch) -> None:
        self.app = app
        self.direct = direct

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not scope["path"].startswith("/v1/")
            or scope.get("root_path")
            or scope.get(BATCH_ITEM)  # left to FastAPI by DirectDispatch.run already
        ):
            await self.app(scope, receive, send)
            return
        replay, body, complete = await read_body(receive)
        response = await run_in_threadpool(self.direct.respond, scope, body) if complete else None
        if response is None:
            await self.app(scope, replay, send)
        else:
            await response(scope, replay, send)
