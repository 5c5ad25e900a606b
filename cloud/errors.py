"""The one error type of the API: raised anywhere below a route, rendered once in ``app``."""

from __future__ import annotations

from typing import Any


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
