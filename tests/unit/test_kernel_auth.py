"""kernel.auth.ClientCredentials: one token, refreshed before expiry and on a 401; refusals
remembered; the secret never shown. A mock transport and an injected clock, no sockets."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from pydantic import SecretStr

from kernel.auth import ClientCredentials
from kernel.errors import AuthenticationFailed, RetryableError
from tests.fakes import FakeClock

SECRET = "s3cret-never-shown"


class Cloud:
    """Tokens t1, t2, … valid for ``ttl`` seconds; ``revoked`` tokens answer 401."""

    def __init__(self, *, secret_ok: bool = True, token_status: int = 200) -> None:
        self.secret_ok = secret_ok
        self.token_status = token_status
        self.tokens = 0
        self.revoked: set[str] = set()
        self.calls: list[str] = []

    async def handle_async(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != "/oauth/token":
            await asyncio.sleep(0)  # let concurrent requests interleave
        return self(request)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"{request.method} {request.url.path}")
        if request.url.path == "/oauth/token":
            if self.token_status != 200:
                return httpx.Response(self.token_status, headers={"Retry-After": "3"})
            if not self.secret_ok:
                return httpx.Response(401, json={"error": "invalid_client"})
            self.tokens += 1
            return httpx.Response(200, json={"access_token": f"t{self.tokens}", "expires_in": 120})
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if not token or token in self.revoked:
            return httpx.Response(401, json={"error": "invalid_token"})
        return httpx.Response(200, json={"token": token})


def credentials(clock: FakeClock, cooldown: float = 0.0) -> ClientCredentials:
    return ClientCredentials(
        "http://cloud/oauth/token",
        "vudsync",
        SecretStr(SECRET),
        scope="directory:read",
        cooldown=cooldown,
        clock=clock,
    )


def client(cloud: Cloud, auth: ClientCredentials) -> httpx.Client:
    return httpx.Client(base_url="http://cloud", transport=httpx.MockTransport(cloud), auth=auth)


def test_one_token_until_shortly_before_it_expires() -> None:
    cloud, clock = Cloud(), FakeClock()
    with client(cloud, credentials(clock)) as c:
        assert [c.get("/v1/me").json()["token"] for _ in range(3)] == ["t1", "t1", "t1"]
        clock.now += 89  # 120 s tokens are renewed 30 s early
        assert c.get("/v1/me").json()["token"] == "t1"
        clock.now += 2
        assert c.get("/v1/me").json()["token"] == "t2"
    assert cloud.calls.count("POST /oauth/token") == 2


def test_a_401_refreshes_the_token_once_and_resends() -> None:
    cloud, clock = Cloud(), FakeClock()
    with client(cloud, credentials(clock)) as c:
        c.get("/v1/me")
        cloud.revoked.add("t1")
        assert c.get("/v1/me").json()["token"] == "t2"
        cloud.revoked.add("t2")
        cloud.revoked.add("t3")  # a fresh token refused too: the 401 is the answer, no loop
        assert c.get("/v1/me").status_code == 401
    assert cloud.calls.count("POST /oauth/token") == 3


def test_concurrent_401s_cost_one_token_request() -> None:
    async def run() -> None:
        cloud = Cloud()
        auth = credentials(FakeClock())
        async with httpx.AsyncClient(
            base_url="http://cloud", transport=httpx.MockTransport(cloud.handle_async), auth=auth
        ) as c:
            await c.get("/v1/me")
            cloud.revoked.add("t1")
            answers = await asyncio.gather(*(c.get("/v1/me") for _ in range(10)))
        assert {a.json()["token"] for a in answers} == {"t2"}
        assert cloud.tokens == 2 and auth.token_requests == 2

    asyncio.run(run())


def test_refused_credentials_are_remembered_for_the_cooldown_without_a_request() -> None:
    cloud, clock = Cloud(secret_ok=False), FakeClock()
    auth = credentials(clock, cooldown=30.0)
    with client(cloud, auth) as c:
        for _ in range(5):
            with pytest.raises(AuthenticationFailed) as raised:
                c.get("/v1/me")
            assert SECRET not in str(raised.value) and raised.value.retry_after
        assert cloud.calls == ["POST /oauth/token"]
        clock.now += 31
        with pytest.raises(AuthenticationFailed):
            c.get("/v1/me")
    assert cloud.calls == ["POST /oauth/token"] * 2
    assert SECRET not in repr(auth)


def test_a_failing_token_endpoint_is_retryable_with_its_retry_after() -> None:
    cloud = Cloud(token_status=503)
    with client(cloud, credentials(FakeClock())) as c, pytest.raises(RetryableError) as raised:
        c.get("/v1/me")
    assert not isinstance(raised.value, AuthenticationFailed) and raised.value.retry_after == 3.0
