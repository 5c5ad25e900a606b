"""``POST /oauth/token`` (client credentials, RFC 6749 §4.4) and ``GET /healthz``."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import parse_qs, unquote

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from cloud import models
from cloud.deps import Context
from cloud.errors import ApiError
from cloud.responses import TOKEN_LIMITED, TOO_LARGE

router = APIRouter()

_FORM_SCHEMA = {
    "type": "object",
    "required": ["grant_type"],
    "properties": {
        "grant_type": {"type": "string", "enum": ["client_credentials"]},
        "client_id": {"type": "string", "description": "or use HTTP Basic"},
        "client_secret": {"type": "string", "format": "password", "writeOnly": True},
        "scope": {
            "type": "string",
            "description": "space-separated, e.g. 'directory:read directory:write'; "
            "default: every scope of the client",
        },
    },
}


@router.get("/healthz", response_model=models.Health, tags=["health"])
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


def _oauth_error(status: int, error: str, description: str) -> ApiError:
    return ApiError(status, error, description)


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise _oauth_error(401, "invalid_client", "malformed Basic credentials") from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise _oauth_error(401, "invalid_client", "malformed Basic credentials")
    return unquote(client_id), unquote(secret)


@router.post(
    "/oauth/token",
    response_model=models.TokenResponse,
    responses={
        400: {"model": models.OAuthError, "description": "invalid request, grant type or scope"},
        401: {"model": models.OAuthError, "description": "invalid client credentials"},
        413: TOO_LARGE,
        429: TOKEN_LIMITED,
    },
    tags=["oauth"],
    summary="Client credentials grant: a bearer token",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": _FORM_SCHEMA}},
        }
    },
)
async def token(request: Request, context: Context) -> JSONResponse:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise _oauth_error(400, "invalid_request", "the body must be application/x-www-form-urlencoded")
    raw = await request.body()
    try:
        form = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as exc:
        raise _oauth_error(400, "invalid_request", "the body is not UTF-8") from exc
    values = {key: vals[-1] for key, vals in form.items()}
    grant_type = values.get("grant_type")
    if not grant_type:
        raise _oauth_error(400, "invalid_request", "grant_type is required")
    if grant_type != "client_credentials":
        raise _oauth_error(400, "unsupported_grant_type", "only client_credentials is supported")
    basic = _basic_credentials(request.headers.get("authorization"))
    client_id, secret = basic if basic else (values.get("client_id"), values.get("client_secret"))
    if not client_id or secret is None:
        raise _oauth_error(401, "invalid_client", "client_id and client_secret are required")
    body = await run_in_threadpool(context.auth.issue_token, client_id, secret, values.get("scope"))
    return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})
