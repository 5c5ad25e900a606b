"""verify's cloud reader keeps what compare and repair read, and drops the rest as each page
arrives (at 100,000 users the whole answers were half of verify's memory): the mistake it
must not make is to drop what decides drift — a cloud-origin entry, a field, a version."""

from __future__ import annotations

import json

import httpx
from pydantic import SecretStr

from vudsync.ops.cloud_reader import HttpCloudReader

USER = {
    "id": "U1",
    "external_id": "u1",
    "email": "u1@fjord.no",
    "username": "u1",
    "first_name": "Åse",
    "last_name": "Lie",
    "language": "nb",
    "active": True,
    "customer_admin": False,
    "version": 4,
    "created_at": "2026-12-05T10:00:00Z",
    "updated_at": "2026-12-05T10:00:00Z",
}
ACCESS = {
    "user_id": "U1",
    "company_id": "C1",
    "services": {"business": {"roles": ["Lønn", "Regnskap"], "layout_groups": [], "modules": []}},
    "entries": [
        {
            "service": "business",
            "kind": "roles",
            "name": "Regnskap",
            "origin": "directory",
            "modified_at": "x",
        },
        {"service": "business", "kind": "roles", "name": "Lønn", "origin": "cloud", "modified_at": "x"},
    ],
    "version": 3,
    "updated_at": "2026-12-05T10:00:00Z",
}


def _cloud(request: httpx.Request) -> httpx.Response:
    path = request.url.path
    if path == "/oauth/token":
        return httpx.Response(200, json={"access_token": "t", "token_type": "Bearer", "expires_in": 3600})
    if path == "/v1/users":
        return httpx.Response(200, json={"items": [USER], "next_after": None})
    if path == "/v1/companies":
        return httpx.Response(200, json={"items": [], "next_after": None})
    if path == "/v1/batch":
        body = json.loads(request.content)
        items = [{"status": 200, "body": {"items": [ACCESS]}} for _ in body["requests"]]
        return httpx.Response(200, json={"responses": items})
    return httpx.Response(200, json={"items": []})


def test_the_reader_keeps_what_decides_drift_and_drops_the_rest() -> None:
    reader = HttpCloudReader("http://cloud", "vudsync", SecretStr("s"), transport=httpx.MockTransport(_cloud))
    state = reader.read()
    reader.close()
    (user,) = state.users
    assert user == {k: v for k, v in USER.items() if k not in ("customer_admin", "created_at", "updated_at")}
    (item,) = state.access["U1"]
    assert item == {
        "company_id": "C1",
        "services": {"business": {"roles": ["Lønn", "Regnskap"]}},
        "version": 3,
        "entries": [{"service": "business", "kind": "roles", "name": "Lønn", "origin": "cloud"}],
    }
