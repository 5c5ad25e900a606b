"""The batch's direct dispatch reads items exactly as FastAPI reads requests (pure, no server).

``cloud.direct_routes`` works out once, per route, what FastAPI works out per request; these
tests hold its answers against FastAPI's own functions on the app's real routes.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

import pytest
from fastapi import Cookie, Depends, FastAPI, Query, Request
from fastapi.dependencies.utils import request_params_to_args
from fastapi.routing import APIRoute
from starlette.datastructures import Headers, QueryParams

from cloud import api_admin, api_directory, api_oauth, api_services
from cloud.direct_routes import Param, direct_endpoint
from cloud.idempotency import json_fingerprint, request_fingerprint

BODIES: list[Any] = [
    None,
    {},
    {"email": "kari@example.no", "username": "kari"},
    {"b": [3, 1, {"z": None, "a": True}], "a": "Ærlig ørret å"},
    {"s": "a\ud800b", "ctl": "\x00\n\t\u2028", "quote": '"\\'},
    {"n": [0, -0.0, 1.5, 1e16, 2**70, -(2**63)], "inf": math.inf, "nan": math.nan},
    [1, "two"],
    "text",
    0,
    False,
]


@pytest.mark.parametrize("body", BODIES)
def test_json_fingerprint_is_the_fingerprint_of_the_serialised_body(body: Any) -> None:
    raw = b"" if body is None else json.dumps(body).encode("utf-8", "surrogatepass")
    for method, path in (("POST", "/v1/users"), ("patch", "/v1/users/ø")):
        assert json_fingerprint(method, path, body) == request_fingerprint(method, path, raw)


def _routes() -> list[APIRoute]:
    routers = (api_oauth.router, api_directory.router, api_services.router, api_admin.router)
    return [route for router in routers for route in router.routes if isinstance(route, APIRoute)]


def test_every_v1_route_but_the_batch_is_direct() -> None:
    direct = {f"{sorted(r.methods)[0]} {r.path}" for r in _routes() if direct_endpoint(r) is not None}
    v1 = {f"{sorted(r.methods)[0]} {r.path}" for r in _routes() if r.path.startswith("/v1/")}
    assert direct == v1 - {"POST /v1/batch"}
    assert not any(direct_endpoint(r) for r in _routes() if not r.path.startswith("/v1/"))


QUERIES = [
    b"",
    b"limit=5",
    b"limit=0",
    b"limit=10001",
    b"limit=abc",
    b"limit=",
    b"email=a%40b.no&email=c%40d.no",
    b"email=" + b"x" * 300,
    b"external_id=&organisation_number=NO%20923%20609",
    b"after_seq=-1&idempotency_key=k",
    b"after_seq=3&resource_id=u%2Fc&limit=1000",
    b"unknown=1",
]
HEADERS = [
    [],
    [(b"idempotency-key", b"op-1")],
    [(b"idempotency-key", b"has space")],
    [(b"idempotency-key", b"")],
    [(b"idempotency-key", b"k" * 256)],
    [(b"idempotency-key", b"a"), (b"idempotency-key", b"b")],
    [(b"if-match", b'"3"'), (b"idempotency-key", b"?")],
    [(b"if-match", b"x" * 65)],
    [(b"If-Match", b'W/"1"')],
]
PATHS = ["u1", "", "x" * 64, "x" * 65, "x" * 201, "business", "ø/æ"]


def _fastapi(fields: list[Any], received: Any) -> tuple[dict[str, Any], bool]:
    values, errors = request_params_to_args(fields, received)
    return values, not errors


def _direct(params: list[Param], received: Any) -> tuple[dict[str, Any], bool]:
    values: dict[str, Any] = {}
    ok = all(p.take(received, values) for p in params)
    return values, ok


def test_parameters_are_read_as_fastapi_reads_them() -> None:
    checked = 0
    for route in _routes():
        endpoint = direct_endpoint(route)
        if endpoint is None:
            continue
        dependant = route.dependant
        cases: list[tuple[list[Any], list[Param], Any]] = []
        for path in PATHS:
            values = dict.fromkeys((f.name for f in dependant.path_params), path)
            cases.append((dependant.path_params, list(endpoint.path_params), values))
        for query in QUERIES:
            cases.append((dependant.query_params, list(endpoint.query_params), QueryParams(query)))
        for raw in HEADERS:
            headers = Headers(raw=raw)
            cases.append((dependant.header_params, list(endpoint.header_params), headers))
            if endpoint.key_param is not None:
                cases.append(([endpoint.key_param.field], [endpoint.key_param], headers))
        for fields, params, received in cases:
            expected, valid = _fastapi(fields, received)
            got, ok = _direct(params, received)
            assert ok == valid, (route.path, received)
            if valid:
                assert got == expected, (route.path, received)
            checked += 1
    assert checked > 500


def test_a_route_with_what_direct_does_not_know_is_left_to_fastapi() -> None:
    app = FastAPI()

    def other_dependency() -> str:
        return "x"

    @app.get("/v1/plain")
    def plain(q: Annotated[str | None, Query()] = None) -> None:
        del q

    @app.get("/v1/cookie")
    def cookie(session: Annotated[str | None, Cookie()] = None) -> None:
        del session

    @app.get("/v1/list")
    def many(ids: Annotated[list[str] | None, Query()] = None) -> None:
        del ids

    @app.get("/v1/request")
    def with_request(request: Request) -> None:
        del request

    @app.get("/v1/other")
    def with_other(value: Annotated[str, Depends(other_dependency)]) -> None:
        del value

    @app.get("/v1/async")
    async def asynchronous() -> None:
        return None

    routes = {r.path: r for r in app.routes if isinstance(r, APIRoute)}
    assert direct_endpoint(routes["/v1/plain"]) is not None
    for path in ("/v1/cookie", "/v1/list", "/v1/request", "/v1/other", "/v1/async"):
        assert direct_endpoint(routes[path]) is None, path
