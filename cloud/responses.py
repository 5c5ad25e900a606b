"""The documented responses of each kind of operation (for the OpenAPI document)."""

from __future__ import annotations

from typing import Any

from cloud.models import ErrorBody

Responses = dict[int | str, dict[str, Any]]

_ERROR = {"model": ErrorBody}
_RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}},
}
ETAG_HEADER = {"ETag": {"description": "the version, quoted", "schema": {"type": "string"}}}


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return {**_ERROR, "description": description, **extra}


TOO_LARGE = _error("the request body is larger than the server accepts (cloud.limits)")
TOKEN_LIMITED = _error("too many token requests from this address", headers=_RETRY_AFTER)

V1: Responses = {
    400: _error("the body could not be parsed"),
    401: _error("missing, unknown or expired bearer token"),
    403: _error("the token lacks the scope this operation needs"),
    413: TOO_LARGE,
    422: _error("invalid parameters or body, or an Idempotency-Key reused for another request"),
    429: _error("rate limited (real or injected)", headers=_RETRY_AFTER),
    "5XX": _error("server error (injected faults included; they never have an effect)"),
}
NOT_FOUND: Responses = {404: _error("not found")}
CONFLICT: Responses = {409: _error("conflicts with an existing resource (see existing_id)")}
PRECONDITION: Responses = {412: _error("If-Match does not name the current version")}
ADMIN: Responses = {
    400: _error("the body could not be parsed"),
    401: _error("missing or wrong X-Admin-Token"),
    413: TOO_LARGE,
    422: _error("invalid body"),
}


def merge(*parts: Responses) -> Responses:
    merged: Responses = {}
    for part in parts:
        merged.update(part)
    return merged


def ok(status: int, description: str, *, etag: bool = False) -> Responses:
    """A success response other than the route's default model."""
    entry: dict[str, Any] = {"description": description}
    if etag:
        entry["headers"] = ETAG_HEADER
    return {status: entry}
