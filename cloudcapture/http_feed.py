"""httpx adapter of :class:`cloudcapture.ports.CloudFeed`: the cloud's change feed and reads.

Tokens come from :class:`kernel.auth.ClientCredentials` (the integration's client, read scope).
httpx errors and HTTP statuses become vudsync errors here, once, with no secret in them:
network failures are :class:`~cloudcapture.ports.CloudUnreachable`, 5xx and 429
:class:`CloudFailing` (both retryable; ``Retry-After`` kept), ``410 cursor_expired`` is
:class:`~cloudcapture.ports.CursorExpired`, refused credentials stay
:class:`~kernel.errors.AuthenticationFailed` (retryable after a cool-down: an operator fixes
the secret, capture goes on), anything else is a :class:`~kernel.errors.PermanentError`.

Access of many users is read through ``POST /v1/batch`` (500 GETs per request), as verify does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
from pydantic import SecretStr

from cloudcapture.ports import Body, CloudUnreachable, CursorExpired, FeedPage, Page
from kernel.auth import reading_client
from kernel.errors import PermanentError, RetryableError, VudsyncError

_BATCH = 500


class CloudFailing(RetryableError):
    """The cloud answered, with a failure another try may cure (5xx, 429)."""


def cursor_position(cursor: str) -> int:
    """The feed position a cursor stands at. The feed's cursor is opaque to clients except for
    this: the reference cloud writes ``c1.<epoch>.<seq>.<issued>`` (``cloud/directory/changes.py``),
    and the full read's events need the position of the cursor taken before it (their
    ``feed_seq``, so that a consumer orders them against the feed's own items)."""
    parts = cursor.split(".")
    if len(parts) != 4 or parts[0] != "c1" or not parts[2].isdigit():
        raise PermanentError(
            "the cloud's change feed gave a cursor of an unknown format",
            hint="cloud-capture reads cursors of the form c1.<epoch>.<seq>.<issued>",
        )
    return int(parts[2])


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


def _error(response: httpx.Response, what: str) -> VudsyncError:
    status = response.status_code
    if status == 410:
        return CursorExpired(f"{what}: 410 cursor_expired")
    if status == 429 or status >= 500:
        return CloudFailing(
            f"{what}: {status}", retry_after=_retry_after(response), hint="the cloud fails: capture retries"
        )
    return PermanentError(f"{what}: {status}")


class HttpCloudFeed:
    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: SecretStr,
        *,
        timeout: float = 10.0,
        auth_cooldown: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._client = reading_client(
            base_url,
            client_id,
            client_secret,
            timeout=timeout,
            token_error=lambda r: _error(r, "POST /oauth/token"),
            cooldown=auth_cooldown,
            transport=transport,
        )

    def close(self) -> None:
        self._client.close()

    def _request(self, method: str, path: str, *, what: str | None = None, **kw: Any) -> httpx.Response:
        what = what or f"{method} {path}"
        try:
            return self._client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise CloudUnreachable(
                f"{what}: {type(exc).__name__}", hint="is the cloud reachable? check VUDSYNC_CLOUD_URL"
            ) from None

    def _get(self, path: str, params: dict[str, Any] | None = None, *, what: str | None = None) -> Any:
        response = self._request("GET", path, params=params, what=what)
        if response.status_code >= 300:
            raise _error(response, what or f"GET {path}")
        return response.json()

    def _get_or_none(self, path: str, what: str) -> Body | None:
        response = self._request("GET", path, what=what)
        if response.status_code == 404:
            return None
        if response.status_code >= 300:
            raise _error(response, what)
        body: Body = response.json()
        return body

    def changes(self, cursor: str | None, limit: int) -> FeedPage:
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        page = self._get("/v1/changes", params)
        return FeedPage(
            items=tuple(page["items"]),
            cursor=str(page["cursor"]),
            more=bool(page["more"]),
            position=cursor_position(str(page["cursor"])),
        )

    def user(self, cloud_id: str) -> Body | None:
        return self._get_or_none(f"/v1/users/{cloud_id}", "GET /v1/users/{id}")

    def company(self, cloud_id: str) -> Body | None:
        return self._get_or_none(f"/v1/companies/{cloud_id}", "GET /v1/companies/{id}")

    def users(self, after: int, limit: int) -> Page:
        page = self._get("/v1/users", {"after": after, "limit": limit})
        return Page(tuple(page["items"]), page.get("next_after"))

    def companies(self, after: int, limit: int) -> Page:
        page = self._get("/v1/companies", {"after": after, "limit": limit})
        return Page(tuple(page["items"]), page.get("next_after"))

    def access(self, cloud_user_ids: Sequence[str]) -> dict[str, list[Body]]:
        out: dict[str, list[Body]] = {}
        for i in range(0, len(cloud_user_ids), _BATCH):
            chunk = list(cloud_user_ids[i : i + _BATCH])
            requests = [{"method": "GET", "path": f"/v1/users/{uid}/access"} for uid in chunk]
            response = self._request("POST", "/v1/batch", json={"requests": requests})
            if response.status_code >= 300:
                raise _error(response, "POST /v1/batch")
            for uid, answer in zip(chunk, response.json()["responses"], strict=True):
                status = int(answer["status"])
                if status == 404:  # users are never deleted; a race with nothing: no access
                    out[uid] = []
                elif status >= 300:
                    raise CloudFailing(f"GET /v1/users/{{id}}/access in a batch: {status}")
                else:
                    out[uid] = list(answer["body"]["items"])
        return out
