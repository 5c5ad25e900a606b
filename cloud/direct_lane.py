"""The ASGI middleware that sends ``/v1`` requests with a direct route past the rest of the stack."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from cloud import batch
from cloud.batch_items import BATCH_PATH
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

    ``POST /v1/batch`` is answered by :func:`cloud.batch.respond` on the event loop (its
    runs of direct items go to a worker thread, as from the endpoint), counted under its
    route.
    """

    def __init__(self, app: ASGIApp, *, direct: DirectDispatch, batch_route: BaseRoute) -> None:
        self.app = app
        self.direct = direct
        self.batch_route = batch_route  # the route POST /v1/batch is counted under

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
        if not complete:
            response = None
        elif scope["path"] == BATCH_PATH and scope["method"] == "POST":
            application = scope["app"]  # the whole application (Starlette sets it first)
            response = await batch.respond(application, scope, application.state.cloud, self.direct, body)
            if response is not None:
                scope["route"] = self.batch_route
        else:
            response = await run_in_threadpool(self.direct.respond, scope, body)
        if response is None:
            await self.app(scope, replay, send)
        else:
            await response(scope, replay, send)
