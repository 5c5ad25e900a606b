"""The cloud's faster ways of doing per-item work give exactly the old answers (pure, no server).

* ``canonical_json`` (the bytes every idempotency fingerprint is taken over) writes with
  orjson when it can: its bytes must be the standard library's, or stored fingerprints
  would no longer match their replays.
* ``iso`` formats from a cached whole second: the same text as ``datetime.isoformat``.
* ``DirectRoutes.match`` tries only the routes of the path's shape: the same route
  and parameters as Starlette's first-match scan over every route.
"""

from __future__ import annotations

import json
import math
import random
import string
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.routing import APIRoute

from cloud import api_admin, api_directory, api_oauth, api_services
from cloud.direct_routes import DirectRoutes
from cloud.idempotency import canonical_json
from cloud.store import iso


def _stdlib(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )


_LEAVES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    2**70,
    1.5,
    -0.0,
    1e16,
    1e-5,
    math.inf,
    math.nan,
    "x\ud800",
    'é\n\t"\\\x00\x1f\x7f\u2028',
    "Ærlig ørret å 😀",
]


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.35:
        if rng.random() < 0.5:
            return rng.choice(_LEAVES)
        return "".join(rng.choice(string.printable + "øæå€😀\u2028") for _ in range(rng.randint(0, 6)))
    if roll < 0.65:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["", "a", "B", "ab", "ø", "😀", "\uffff", "\ue000", "a\x00", "roles"]
    return {rng.choice(keys): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))}


@pytest.mark.parametrize("value", [*_LEAVES, {"services": {"b": {"roles": ["x"], "modules": []}}}])
def test_canonical_json_of_a_leaf_is_the_standard_librarys(value: Any) -> None:
    assert canonical_json(value) == _stdlib(value)
    assert canonical_json({"v": [value]}) == _stdlib({"v": [value]})


def test_canonical_json_of_any_json_value_is_the_standard_librarys() -> None:
    rng = random.Random(5)
    for _ in range(5000):
        value = _random_value(rng)
        assert canonical_json(value) == _stdlib(value), value


def test_iso_is_datetime_isoformat_with_z() -> None:
    rng = random.Random(7)
    stamps = [0.0, 1.0, 1.9999995, 1.0000005, 1.0000015, 5e-7, 1764292000.9999995, 1764292000.0000005]
    stamps += [float(rng.randint(0, 4 * 10**9)) + rng.randint(0, 10**6) / 1e6 for _ in range(20000)]
    stamps += [rng.uniform(0, 4e9) for _ in range(20000)]
    for ts in stamps:
        expected = datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
        assert iso.__wrapped__(ts) == expected, repr(ts)


def _linear_match(direct: DirectRoutes, method: str, path: str) -> tuple[str, dict[str, Any]] | None:
    """Starlette's rule over every route, as ``match`` did before it grouped routes by shape."""
    for route, endpoint in direct._routes:
        assert isinstance(route, APIRoute)
        found = route.path_regex.match(path)
        if found is None or (route.methods and method not in route.methods):
            continue
        if endpoint is None:
            return None
        return endpoint.template, {
            k: route.param_convertors[k].convert(v) for k, v in found.groupdict().items()
        }
    return None


def test_match_by_shape_finds_what_a_scan_of_every_route_finds() -> None:
    routers = (api_oauth.router, api_directory.router, api_services.router, api_admin.router)
    direct = DirectRoutes([r for router in routers for r in router.routes])
    segments = ["v1", "users", "companies", "services", "access", "link", "me", "audit", "batch"]
    segments += ["admin", "oauth", "token", "healthz", "application-instances", "u-1", "", "a b", "%2F"]
    rng = random.Random(11)
    found = 0
    for _ in range(20000):
        path = "/" + "/".join(rng.choice(segments) for _ in range(rng.randint(0, 6)))
        for method in ("GET", "PUT", "POST", "PATCH", "DELETE"):
            expected = _linear_match(direct, method, path)
            match = direct.match(method, path)
            assert (None if match is None else (match[0].template, match[1])) == expected, (method, path)
            found += expected is not None
    assert found > 100  # the paths did reach routes
