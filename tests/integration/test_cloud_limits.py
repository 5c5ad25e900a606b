"""The reference cloud under abuse (issue 17 item 6), over real HTTP: a request body size
limit (413, declared or chunked), a per-address limit on /oauth/token (429), /docs off
unless asked for."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from cloud.server import CloudServer

LIMIT = 4096


@pytest.fixture(scope="module")
def server() -> Iterator[CloudServer]:
    cloud = CloudServer(secret_hash_iterations=1000, extra_args=("--max-body-bytes", str(LIMIT)))
    with cloud:
        yield cloud
    cloud.cleanup()


def _users(server: CloudServer, client: httpx.Client) -> int:
    return len(client.get("/v1/users", params={"limit": 1000}).json()["items"])


def test_a_body_over_the_limit_is_413_before_any_handler(server: CloudServer) -> None:
    with httpx.Client(base_url=server.url, headers=server.auth_headers(), timeout=10) as api:
        before = _users(server, api)
        big = {"email": "stor@fjord.no", "first_name": "x" * (LIMIT * 2)}
        declared = api.post("/v1/users", json=big)
        assert declared.status_code == 413, declared.text
        assert declared.json()["error"] == "payload_too_large"
        body = json.dumps(big).encode()
        chunked = api.post(
            "/v1/users",
            content=(body[i : i + 1000] for i in range(0, len(body), 1000)),  # no Content-Length
            headers={"Content-Type": "application/json"},
        )
        assert chunked.status_code == 413, chunked.text
        batch = api.post("/v1/batch", json={"requests": [{"method": "POST", "path": "/v1/users"}] * 200})
        assert batch.status_code == 413
        assert _users(server, api) == before, "a refused body had an effect"
        small = api.post("/v1/users", json={"email": "liten@fjord.no"})
        assert small.status_code == 201, small.text
        streamed = json.dumps({"email": "strom@fjord.no"}).encode()
        chunks = iter([streamed[:5], streamed[5:]])
        ok = api.post("/v1/users", content=chunks, headers={"Content-Type": "application/json"})
        assert ok.status_code == 201, ok.text
    admin = httpx.post(
        f"{server.url}/admin/clients", headers=server.admin_headers(), content=b"{" + b" " * LIMIT + b"}"
    )
    assert admin.status_code == 413


def test_token_requests_are_limited_per_address_and_the_rest_of_the_api_is_not() -> None:
    limited_server = CloudServer(
        secret_hash_iterations=1000,
        token_rate_per_address=0.01,  # one refill per 100 s: the burst is all this test gets
        extra_args=("--token-burst-per-address", "6"),
    )
    with limited_server as server:
        _token_requests_are_limited(server)
    limited_server.cleanup()


def _token_requests_are_limited(server: CloudServer) -> None:
    form = {"grant_type": "client_credentials", "client_id": server.client_id, "client_secret": "wrong-guess"}
    answers = [httpx.post(f"{server.url}/oauth/token", data=form, timeout=10) for _ in range(12)]
    codes = [a.status_code for a in answers]
    assert codes == [401] * 6 + [429] * 6, codes  # guesses, then refused before checking
    limited = answers[-1]
    assert limited.json()["error"] == "rate_limited" and int(limited.headers["Retry-After"]) >= 1
    good = httpx.post(f"{server.url}/oauth/token", data={**form, "client_secret": server.client_secret})
    assert good.status_code == 429, "the right secret waits its turn too"
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_docs_are_off_unless_asked_for(server: CloudServer) -> None:
    assert httpx.get(f"{server.url}/docs").status_code == 404
    assert httpx.get(f"{server.url}/openapi.json").status_code == 200  # the contract stays readable
    with CloudServer(secret_hash_iterations=1000, extra_args=("--docs",)) as documented:
        assert httpx.get(f"{documented.url}/docs").status_code == 200
    documented.cleanup()
