"""OAuth2 client credentials as an ``httpx.Auth``: the one token client of vudsync.

Every component that calls the cloud (the sink's adapter, verify's reader, ``vudsync
connect``) gives its ``httpx.Client`` / ``httpx.AsyncClient`` a :class:`ClientCredentials`:

* the token is fetched once, on the first request, through the same client (its transport,
  its timeouts), and reused until shortly before it expires;
* a 401 refreshes it once and resends the request — only if nobody refreshed it meanwhile:
  concurrent 401s on an async client cost one token request, not N;
* refused credentials (400/401/403 from the token endpoint) raise
  :class:`~kernel.errors.AuthenticationFailed` and, with a ``cooldown``, are remembered that
  long: calls fail at once without a request, so a wrong secret never becomes a request storm.

The client secret is a :class:`~pydantic.SecretStr`; it is sent in the token request's form
body only, never in an error, a log line or a ``repr``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass

import httpx
from pydantic import SecretStr

from kernel.errors import AuthenticationFailed, RetryableError, VudsyncError

CREDENTIALS_HINT = "check VUDSYNC_CLOUD_CLIENT_ID / VUDSYNC_CLOUD_CLIENT_SECRET"


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


def token_endpoint_failed(response: httpx.Response) -> VudsyncError:
    """The default error for a token endpoint that answers neither a token nor a refusal."""
    return RetryableError(
        f"POST {response.request.url.path}: {response.status_code}", retry_after=_retry_after(response)
    )


@dataclass
class _Token:
    value: str | None = None
    expires_at: float = 0.0
    refusal: AuthenticationFailed | None = None  # remembered until refused_until
    refused_until: float = 0.0


class ClientCredentials(httpx.Auth):
    """Bearer tokens from ``token_url`` for ``client_id`` / ``client_secret`` (grant type
    ``client_credentials``, optional ``scope``).

    ``token_error`` builds the error for a token answer that is neither a token nor a refusal
    (5xx, 429): each caller keeps its own error classes. ``clock`` is injectable for tests.
    Async clients share one token request at a time (an ``asyncio.Lock``); a sync client is
    used from one thread at a time.
    """

    requires_response_body = True  # the token answer is read inside the flow

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: SecretStr,
        *,
        scope: str | None = None,
        cooldown: float = 0.0,
        token_error: Callable[[httpx.Response], VudsyncError] = token_endpoint_failed,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url, self._client_id, self._secret = token_url, client_id, client_secret
        self._scope, self._cooldown, self._token_error = scope, cooldown, token_error
        self._clock = clock
        self._token = _Token()
        self._lock = asyncio.Lock()
        self.token_requests = 0

    def __repr__(self) -> str:
        return f"ClientCredentials({self._url!r}, {self._client_id!r})"

    # -- the flow (httpx drives it; sync clients through httpx's own driver) -------------

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        stale: str | None = None
        while True:
            token = self._valid(stale)
            if token is None:
                token = self._accept((yield self._token_request()))
            request.headers["Authorization"] = f"Bearer {token}"
            response = yield request
            if response.status_code != 401 or stale is not None:
                return
            stale = token  # refused: one fresh token, one more try

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """:meth:`auth_flow`, with deciding on and fetching a token under the lock: a task that
        waited for it finds the token another task just fetched."""
        flow = self.auth_flow(request)
        answer: httpx.Response | None = None
        try:
            while True:
                async with self._lock:
                    step = flow.send(answer)  # type: ignore[arg-type]  # None starts the flow
                    while step is not request:  # a token request
                        answer = yield step
                        await answer.aread()
                        step = flow.send(answer)
                answer = yield step
        except StopIteration:
            return

    # -- the token ------------------------------------------------------------------------

    def _valid(self, stale: str | None) -> str | None:
        """The token to use, None if a new one is needed; raises a remembered refusal."""
        now, token = self._clock(), self._token
        if token.refusal is not None and now < token.refused_until:
            raise AuthenticationFailed(
                str(token.refusal), retry_after=token.refused_until - now, hint=token.refusal.hint
            )
        if token.value is not None and token.value != stale and now < token.expires_at:
            return token.value
        return None

    def _token_request(self) -> httpx.Request:
        self.token_requests += 1
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._secret.get_secret_value(),
        }
        if self._scope:
            form["scope"] = self._scope
        return httpx.Request("POST", self._url, data=form)

    def _accept(self, response: httpx.Response) -> str:
        status = response.status_code
        if status in (400, 401, 403):
            refusal = AuthenticationFailed(
                f"the cloud refused the client credentials of {self._client_id!r} ({status})",
                retry_after=self._cooldown or None,
                hint=CREDENTIALS_HINT,
            )
            self._token = _Token(refusal=refusal, refused_until=self._clock() + self._cooldown)
            raise refusal
        if status >= 300:
            raise self._token_error(response)
        body = response.json()
        ttl = float(body.get("expires_in", 300))
        value = str(body["access_token"])
        # refreshed a little before it expires
        self._token = _Token(value, expires_at=self._clock() + ttl - min(30.0, ttl / 4))
        return value


#: the scope of a client that only reads the cloud directory (verify, cloud-capture)
READ_SCOPE = "directory:read"


def cloud_token_url(base_url: str) -> str:
    """The token endpoint of the cloud API at ``base_url``."""
    return f"{base_url.rstrip('/')}/oauth/token"


def reading_client(
    base_url: str,
    client_id: str,
    client_secret: SecretStr,
    *,
    timeout: float,
    token_error: Callable[[httpx.Response], VudsyncError],
    cooldown: float = 0.0,
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """A client of the cloud API at ``base_url`` whose requests carry a token of
    :data:`READ_SCOPE` for ``client_id``: what a reader of the whole directory uses (verify's
    reader, cloud-capture's feed)."""
    auth = ClientCredentials(
        cloud_token_url(base_url),
        client_id,
        client_secret,
        scope=READ_SCOPE,
        cooldown=cooldown,
        token_error=token_error,
    )
    return httpx.Client(base_url=base_url, timeout=timeout, transport=transport, auth=auth)
