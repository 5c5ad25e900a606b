"""The composition root of the cloud API: :func:`build_app` builds everything from settings."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from cloud import api_admin, api_directory, api_oauth, api_services
from cloud.auth import Authenticator
from cloud.batch_items import BATCH_PATH
from cloud.context import CloudContext
from cloud.direct import DirectDispatch
from cloud.direct_lane import DirectLane
from cloud.errors import ApiError, error_response, unicode_error_response
from cloud.faults import FaultInjector
from cloud.limits import RequestLimits
from cloud.middleware import TrafficMiddleware
from cloud.ratelimit import RateLimiter
from cloud.settings import DEFAULT_SCOPES, CloudSettings
from cloud.stats import Stats
from cloud.store import Store

log = logging.getLogger(__name__)

API_VERSION = "1.0.0"
_STATUS_ERRORS = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}


def _validation_error(exc: RequestValidationError) -> JSONResponse:
    """422 with what failed and where, never the offending input (it may be a secret)."""
    detail: list[dict[str, Any]] = []
    license_key = False
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ())]
        license_key = license_key or "license_key" in loc
        detail.append({"loc": loc, "msg": str(error.get("msg", "")), "type": str(error.get("type", ""))})
    if license_key:
        body = {
            "error": "license_key_rejected",
            "error_description": "the cloud never accepts a clear license key; send license_fingerprint",
            "detail": [d for d in detail if "license_key" in d["loc"]],
        }
    else:
        first = detail[0] if detail else {"loc": [], "msg": "invalid request"}
        where = ".".join(first["loc"])
        body = {
            "error": "validation_error",
            "error_description": f"{where}: {first['msg']}" if where else first["msg"],
            "detail": detail,
        }
    return JSONResponse(body, status_code=422)


def _allowed_methods(request: Request) -> str:
    """Every method of every route with this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        route_methods: set[str] | None = getattr(route, "methods", None)
        if not route_methods:
            continue
        probe = {**request.scope, "method": next(iter(route_methods))}
        if route.matches(probe)[0] is Match.FULL:
            methods |= route_methods
    return ", ".join(sorted(methods))


def _install_error_handlers(app: FastAPI) -> None:
    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc)

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _validation_error(exc)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        error = _STATUS_ERRORS.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request)
        return JSONResponse(
            {"error": error, "error_description": str(exc.detail)},
            status_code=exc.status_code,
            headers=headers,
        )

    async def unicode_error(_: Request, exc: Exception) -> JSONResponse:
        del exc
        return unicode_error_response()

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
        return JSONResponse(
            {"error": "internal_error", "error_description": "unexpected server error"},
            status_code=500,
        )

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(UnicodeError, unicode_error)
    app.add_exception_handler(Exception, internal_error)


def build_context(settings: CloudSettings, clock: Callable[[], float]) -> CloudContext:
    """Open the store, make sure the configured client exists, wire the parts."""
    store = Store(settings.db_path, clock=clock, synchronous=settings.sqlite_synchronous)
    store.open()
    auth = Authenticator(store, clock, settings.token_ttl_seconds, settings.secret_hash_iterations)
    auth.ensure_client(
        settings.client_id,
        settings.client_secret.get_secret_value(),
        is_customer_admin=settings.client_is_customer_admin,
        scopes=DEFAULT_SCOPES,
    )
    customer_id = store.meta("customer_id", lambda: str(uuid.uuid4()))
    return CloudContext(
        settings=settings,
        store=store,
        auth=auth,
        faults=FaultInjector(settings.faults),
        limiter=RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst, clock),
        stats=Stats(),
        customer_id=customer_id,
        clock=clock,
    )


def build_app(settings: CloudSettings, *, clock: Callable[[], float] = time.time) -> FastAPI:
    """The cloud directory API for ``settings`` (opens its database; closed at shutdown)."""
    context = build_context(settings, clock)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            context.store.close()

    app = FastAPI(
        title="Reference cloud directory API",
        version=API_VERSION,
        summary="Companies, users, service catalogues, application instances and access "
        "for one customer; OAuth2 client credentials, idempotency keys, versions, "
        "rate limits and fault injection.",
        lifespan=lifespan,
        redoc_url=None,
        docs_url="/docs" if settings.docs else None,  # off unless asked: less to attack
    )
    app.state.cloud = context
    _install_error_handlers(app)
    routers = (api_oauth.router, api_directory.router, api_services.router, api_admin.router)
    for router in routers:
        app.include_router(router)
    direct: DirectDispatch | None = None
    if settings.direct_dispatch:
        # the same routes, in the same order, called without the ASGI stack (cloud.direct)
        routes = [route for router in routers for route in router.routes]
        direct = DirectDispatch(context, routes)
        (batch_route,) = [r for r in routes if getattr(r, "path", None) == BATCH_PATH]
        # inside TrafficMiddleware: added first
        app.add_middleware(DirectLane, direct=direct, batch_route=batch_route)
    app.state.direct = direct
    app.add_middleware(
        TrafficMiddleware,
        faults=context.faults,
        stats=context.stats,
        routes=lambda: app.router.routes,
    )
    app.add_middleware(  # outermost: nothing else sees a request over these limits
        RequestLimits,
        max_body_bytes=settings.max_body_bytes,
        token_limiter=RateLimiter(settings.token_rate_per_address, settings.token_burst_per_address, clock),
    )
    return app
