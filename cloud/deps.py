"""FastAPI dependencies: the context, the caller, its scopes, and the write unit of work.

Order of checks on a ``/v1`` request: (faults, in the middleware) → token (401) →
rate limit (429) → scope (403) → parameters and body (422) → the handler.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from cloud.auth import READ, WRITE, Principal, check_admin_token, require_scope
from cloud.context import BATCH_ITEM, CloudContext
from cloud.errors import ApiError
from cloud.idempotency import StoredResponse, request_fingerprint
from cloud.ratelimit import retry_after_header
from cloud.store import WriteAction, WriteRequest, WriteResult

# declared for the OpenAPI document only; the header is parsed by Authenticator
_bearer = HTTPBearer(auto_error=False, description="a token from POST /oauth/token")
_admin_key = APIKeyHeader(name="X-Admin-Token", auto_error=False, description="admin token")

IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]+$"


def get_context(request: Request) -> CloudContext:
    context: CloudContext = request.app.state.cloud
    return context


Context = Annotated[CloudContext, Depends(get_context)]


def authorise(context: CloudContext, authorization: str | None, *, rate_limited: bool) -> Principal:
    """The authenticated caller (401), held to the per-client rate limit (429) if asked.

    Batch items are not rate limited: their batch request was.
    """
    principal = context.auth.authenticate(authorization)
    if rate_limited:
        wait = context.limiter.check(principal.client_id)
        if wait is not None:
            context.stats.record_rate_limited()
            raise ApiError(
                429,
                "rate_limited",
                "too many requests for this client",
                headers={"Retry-After": retry_after_header(wait)},
                retry_after_seconds=round(wait, 3),
            )
    return principal


async def get_principal(
    request: Request,
    context: Context,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The authenticated caller (401), held to the per-client rate limit (429)."""
    return authorise(
        context, request.headers.get("authorization"), rate_limited=not request.scope.get(BATCH_ITEM)
    )


async def get_reader(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    require_scope(principal, READ)
    return principal


async def get_writer(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    require_scope(principal, WRITE)
    return principal


Caller = Annotated[Principal, Depends(get_principal)]
Reader = Annotated[Principal, Depends(get_reader)]
Writer = Annotated[Principal, Depends(get_writer)]


async def check_admin(context: Context, token: Annotated[str | None, Depends(_admin_key)]) -> None:
    check_admin_token(token, context.settings.admin_token.get_secret_value())


def response_headers(response: StoredResponse, *, replayed: bool) -> dict[str, str]:
    """The headers a write answers with (a replay says so)."""
    headers = dict(response.headers)
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return headers


def render(response: StoredResponse, *, replayed: bool = False) -> Response:
    headers = response_headers(response, replayed=replayed)
    if response.body is None:
        return Response(status_code=response.status, headers=headers)
    return JSONResponse(response.body, status_code=response.status, headers=headers)


@dataclass(frozen=True, slots=True)
class Write:
    """One write request, ready to run its action exactly once per idempotency key.

    ``renderer`` turns the stored response into the endpoint's return value: an HTTP
    response, or for a batch item (``cloud.direct``) its answer, without the JSON round
    trip.
    """

    context: CloudContext
    request: WriteRequest
    renderer: Callable[..., Any] = render

    @property
    def origin(self) -> str:
        """Who an access entry written by this request comes from: ``directory`` when the
        integration's client (the configured ``client_id``) writes it, ``cloud`` for anyone
        else (an administrator in the portal, another client)."""
        return "directory" if self.request.client_id == self.context.settings.client_id else "cloud"

    def run(self, action: WriteAction) -> Response:
        result: WriteResult = self.context.store.write(self.request, action)
        if result.replayed:
            self.context.stats.record_replayed()
        rendered: Response = self.renderer(result.response, replayed=result.replayed)
        return rendered


async def get_write(
    request: Request,
    context: Context,
    principal: Annotated[Principal, Depends(get_writer)],
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            pattern=IDEMPOTENCY_KEY_PATTERN,
            description="the same key and request → the original response, no second effect",
        ),
    ] = None,
) -> Write:
    body = await request.body()
    path: str = request.scope["path"]
    return Write(
        context,
        WriteRequest(
            client_id=principal.client_id,
            method=request.method,
            path=path,
            idempotency_key=idempotency_key,
            fingerprint=request_fingerprint(request.method, path, body),
        ),
    )


WriteDep = Annotated[Write, Depends(get_write)]

IfMatch = Annotated[
    str | None,
    Header(alias="If-Match", max_length=64, description="the version (ETag) you last read"),
]
