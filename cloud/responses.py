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


def error_doc(description: str, **extra: Any) -> dict[str, Any]:
    return {**_ERROR, "description": description, **extra}


TOO_LARGE = error_doc("the request body is larger than the server accepts (cloud.limits)")
TOKEN_LIMITED = error_doc("too many token requests from this address", headers=_RETRY_AFTER)

V1: Responses = {
    400: error_doc("the body could not be parsed"),
    401: error_doc("missing, unknown or expired bearer token"),
    403: error_doc("the token lacks the scope this operation needs"),
    413: TOO_LARGE,
    422: error_doc("invalid parameters or body, or an Idempotency-Key reused for another request"),
    429: error_doc("rate limited (real or injected)", headers=_RETRY_AFTER),
    "5XX": error_doc("server error (injected faults included; they never have an effect)"),
}
NOT_FOUND: Responses = {404: error_doc("not found")}
CONFLICT: Responses = {409: error_doc("conflicts with an existing resource (see existing_id)")}
PRECONDITION: Responses = {412: error_doc("If-Match does not name the current version")}
ADMIN: Responses = {
    400: error_doc("the body could not be parsed"),
    401: error_doc("missing or wrong X-Admin-Token"),
    413: TOO_LARGE,
    422: error_doc("invalid body"),
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
