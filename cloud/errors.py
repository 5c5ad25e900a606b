"""The one error type of the API: raised anywhere below a route, rendered by :func:`error_response`.

``cloud.app`` installs the renderers as exception handlers; the batch's direct dispatch
(``cloud.direct``) calls the same functions, so an item answers byte for byte as if sent alone.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse


class ApiError(Exception):
    """An answer other than success: ``status`` plus the JSON body ``{"error", ...}``.

    ``error_description`` and ``extra`` must never contain secrets (tokens, client
    secrets, license keys): they are sent to the client as they are.
    """

    def __init__(
        self,
        status: int,
        error: str,
        description: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(f"{status} {error}: {description}")
        self.status = status
        self.error = error
        self.description = description
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error}
        if self.description is not None:
            body["error_description"] = self.description
        body.update(self.extra)
        return body


def not_found(kind: str, ident: str | None = None) -> ApiError:
    del ident  # never echoed: path parameters may be anything a client typed
    return ApiError(404, "not_found", f"{kind} not found")


def error_response(exc: ApiError) -> JSONResponse:
    """The answer to an :class:`ApiError`."""
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def unicode_error_response() -> JSONResponse:
    """The answer when text is not valid Unicode (a lone surrogate cannot be stored)."""
    return JSONResponse(
        {"error": "validation_error", "error_description": "text is not valid Unicode"},
        status_code=422,
    )
