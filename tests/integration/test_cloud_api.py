"""The reference cloud API over real HTTP: a ``python -m cloud`` subprocess per module/test.

Data is per test (random organisation numbers, e-mails and keys), so the module shares
one server; tests that change faults, rate limits or the token TTL start their own. The
store's batch transaction is tested on its own SQLite file at the end.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from click.testing import CliRunner

from cloud.errors import ApiError
from cloud.faults import FaultConfig
from cloud.server import CloudServer
from cloud.store import Effect, Outcome, Store, WriteRequest
from tests.sqlite_files import rows_in_main_file, threads_named
from vudsync.commands.cloud import cloud as cloud_cli

pytestmark = pytest.mark.integration

LICENSE_KEY = "LK-7f3a-SECRET-LICENSE"


# -- helpers -----------------------------------------------------------------------


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def org_number() -> str:
    digits = f"{uuid.uuid4().int % 10**9:09d}"
    return f"{digits[:3]} {digits[3:6]} {digits[6:]}"


def email() -> str:
    return f"User.{uuid.uuid4().hex[:10]}@Example.NO"


def key() -> str:
    return f"op-{uuid.uuid4()}"


def effects(api: httpx.Client, idempotency_key: str) -> list[dict[str, Any]]:
    response = api.get("/v1/audit", params={"idempotency_key": idempotency_key})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def client_for(server: CloudServer, scope: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=server.auth_headers(scope), timeout=30.0)


def admin(server: CloudServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=server.admin_headers(), timeout=30.0)


# -- fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[CloudServer]:
    # every test takes a token from this one server, as fast as the machine runs them: the
    # per-address limit on /oauth/token is off here and tested in test_cloud_limits.py
    cloud = CloudServer(customer_name="Fjellvik AS", token_rate_per_address=0)
    with cloud:
        yield cloud
    cloud.cleanup()


@pytest.fixture()
def api(server: CloudServer) -> Iterator[httpx.Client]:
    with client_for(server) as client:
        yield client


@pytest.fixture()
def fresh_server() -> Iterator[Callable[..., CloudServer]]:
    """Start a server of its own (faults, TTL, rate limits); stopped by pid afterwards."""
    started: list[CloudServer] = []

    def start(**options: Any) -> CloudServer:
        cloud = CloudServer(**options)
        started.append(cloud)
        return cloud.start()

    yield start
    for cloud in started:
        cloud.stop()
        cloud.cleanup()


def create_user(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = api.post("/v1/users", json={"email": email(), **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def create_company(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = api.post(
        "/v1/companies", json={"name": "Fjellvik AS", "organisation_number": org_number(), **fields}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


# -- health, OpenAPI, auth ---------------------------------------------------------


def test_health_needs_no_token_and_openapi_lists_every_path(server: CloudServer) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    for path in (
        "/oauth/token",
        "/v1/me",
        "/v1/companies/{company_id}/link",
        "/v1/users/{user_id}/access/{company_id}",
        "/v1/services/{service}/{kind}/{name}",
        "/v1/application-instances/{service}",
        "/v1/audit",
        "/v1/batch",
        "/admin/faults",
        "/admin/stats",
        "/admin/clients",
        "/admin/reset",
    ):
        assert path in paths


def test_wrong_secret_is_invalid_client_and_never_echoed(server: CloudServer) -> None:
    response = httpx.post(
        f"{server.url}/oauth/token",
        data={"grant_type": "client_credentials", "client_id": server.client_id, "client_secret": "nope-x1"},
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert "nope-x1" not in response.text
    unknown = httpx.post(
        f"{server.url}/oauth/token",
        data={"grant_type": "client_credentials", "client_id": "who", "client_secret": "x"},
    )
    assert unknown.status_code == 401


def test_token_response_and_basic_auth(server: CloudServer) -> None:
    response = httpx.post(
        f"{server.url}/oauth/token",
        data={"grant_type": "client_credentials", "scope": "directory:read directory:write"},
        auth=(server.client_id, server.client_secret),
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "directory:read directory:write"
    assert response.headers["cache-control"] == "no-store"


def test_bad_grant_type_and_scope_are_400(server: CloudServer) -> None:
    form = {"client_id": server.client_id, "client_secret": server.client_secret}
    bad_grant = httpx.post(f"{server.url}/oauth/token", data={**form, "grant_type": "password"})
    assert (bad_grant.status_code, bad_grant.json()["error"]) == (400, "unsupported_grant_type")
    bad_scope = httpx.post(
        f"{server.url}/oauth/token", data={**form, "grant_type": "client_credentials", "scope": "root"}
    )
    assert (bad_scope.status_code, bad_scope.json()["error"]) == (400, "invalid_scope")


@pytest.mark.parametrize(
    ("headers", "description"),
    [
        ({}, "missing bearer token"),
        ({"Authorization": "Bearer not-a-token"}, "unknown token"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "the Authorization header is not a bearer token"),
    ],
)
def test_v1_without_a_valid_token_is_401(
    server: CloudServer, headers: dict[str, str], description: str
) -> None:
    response = httpx.get(f"{server.url}/v1/me", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "invalid_token", "error_description": description}
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_expired_token_is_401_token_expired(fresh_server: Callable[..., CloudServer]) -> None:
    cloud = fresh_server(token_ttl_seconds=1)
    headers = cloud.auth_headers()
    assert httpx.get(f"{cloud.url}/v1/me", headers=headers).status_code == 200
    response = wait_until(
        lambda: (r := httpx.get(f"{cloud.url}/v1/me", headers=headers)).status_code == 401 and r,
        timeout=5,
        what="the token to expire",
    )
    assert response.json() == {"error": "invalid_token", "error_description": "token expired"}


def test_write_without_write_scope_is_403(server: CloudServer) -> None:
    with client_for(server, scope="directory:read") as reader:
        assert reader.get("/v1/companies").status_code == 200
        response = reader.post("/v1/companies", json={"name": "X", "organisation_number": org_number()})
        assert response.status_code == 403
        assert response.json()["error"] == "insufficient_scope"
    with client_for(server, scope="directory:write") as writer:
        assert writer.get("/v1/companies").status_code == 403


def test_me_tells_customer_administrators_apart(server: CloudServer, api: httpx.Client) -> None:
    me = api.get("/v1/me").json()
    assert me["customer_name"] == "Fjellvik AS"
    assert (me["client_id"], me["is_customer_admin"]) == (server.client_id, True)
    client_id = f"helpdesk-{uuid.uuid4().hex[:6]}"
    with admin(server) as admin_api:
        created = admin_api.post(
            "/admin/clients",
            json={"client_id": client_id, "client_secret": "helpdesk-secret", "is_customer_admin": False},
        )
        assert created.status_code == 201, created.text
        assert "helpdesk-secret" not in created.text
        again = admin_api.post(
            "/admin/clients", json={"client_id": client_id, "client_secret": "helpdesk-secret"}
        )
        assert again.status_code == 409
    token = server.token(client_id=client_id, client_secret="helpdesk-secret")
    other = httpx.get(f"{server.url}/v1/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert other["customer_id"] == me["customer_id"]
    assert (other["client_id"], other["is_customer_admin"]) == (client_id, False)


def test_admin_endpoints_need_the_admin_token(server: CloudServer) -> None:
    assert httpx.get(f"{server.url}/admin/stats").status_code == 401
    wrong = httpx.get(f"{server.url}/admin/stats", headers={"X-Admin-Token": "guess"})
    assert wrong.status_code == 401


# -- companies ---------------------------------------------------------------------


def test_org_number_is_normalised_and_a_duplicate_written_differently_is_409(api: httpx.Client) -> None:
    digits = f"{uuid.uuid4().int % 10**9:09d}"
    spaced = f"{digits[:3]} {digits[3:6]} {digits[6:]}"
    first = api.post(
        "/v1/companies",
        json={"external_id": key(), "name": "Fjellvik AS", "organisation_number": spaced, "country": "no"},
    )
    assert first.status_code == 201, first.text
    company = first.json()
    assert company["organisation_number"] == digits
    assert (company["country"], company["status"], company["version"]) == ("NO", "active", 1)
    assert first.headers["etag"] == '"1"'
    duplicate = api.post("/v1/companies", json={"name": "Other", "organisation_number": digits})
    assert duplicate.status_code == 409
    assert duplicate.json()["existing_id"] == company["id"]
    found = api.get("/v1/companies", params={"organisation_number": f"NO{spaced}MVA"}).json()["items"]
    assert [c["id"] for c in found] == [company["id"]]
    by_external = api.get("/v1/companies", params={"external_id": company["external_id"]}).json()
    assert [c["id"] for c in by_external["items"]] == [company["id"]]
    assert api.get(f"/v1/companies/{company['id']}").json() == company
    assert api.get(f"/v1/companies/{uuid.uuid4()}").status_code == 404


def test_patch_with_if_match(api: httpx.Client) -> None:
    company = create_company(api)
    path = f"/v1/companies/{company['id']}"
    stale = api.patch(path, json={"name": "New"}, headers={"If-Match": '"7"'})
    assert stale.status_code == 412
    assert stale.json()["current_version"] == 1
    updated = api.patch(path, json={"name": "New", "status": "inactive"}, headers={"If-Match": '"1"'})
    assert updated.status_code == 200, updated.text
    assert (updated.json()["name"], updated.json()["status"], updated.json()["version"]) == (
        "New",
        "inactive",
        2,
    )
    assert updated.headers["etag"] == '"2"'
    again = api.patch(path, json={"name": "New"}, headers={"If-Match": "1"})
    assert again.status_code == 412
    unchanged = api.patch(path, json={"name": "New"})
    assert (unchanged.status_code, unchanged.json()["version"]) == (200, 2)


def test_link_company_to_an_external_id(api: httpx.Client) -> None:
    company = create_company(api)
    external = key()
    linked = api.post(f"/v1/companies/{company['id']}/link", json={"external_id": external})
    assert (linked.status_code, linked.json()["external_id"]) == (200, external)
    same = api.post(f"/v1/companies/{company['id']}/link", json={"external_id": external})
    assert (same.status_code, same.json()["version"]) == (200, linked.json()["version"])
    other = api.post(f"/v1/companies/{company['id']}/link", json={"external_id": key()})
    assert other.status_code == 409


# -- users -------------------------------------------------------------------------


def test_email_is_unique_case_insensitively(api: httpx.Client) -> None:
    address = email()
    user = create_user(api, email=address, username="kari", language="nb")
    duplicate = api.post("/v1/users", json={"email": address.lower()})
    assert duplicate.status_code == 409
    assert duplicate.json()["existing_id"] == user["id"]
    found = api.get("/v1/users", params={"email": address.upper()}).json()["items"]
    assert [u["id"] for u in found] == [user["id"]]
    assert user["active"] is True


def test_deactivate_and_reactivate_are_idempotent_state_changes(api: httpx.Client) -> None:
    user = create_user(api)
    path = f"/v1/users/{user['id']}"
    first = api.post(f"{path}/deactivate")
    assert (first.status_code, first.json()["active"], first.json()["version"]) == (200, False, 2)
    second = api.post(f"{path}/deactivate")
    assert (second.status_code, second.json()["version"]) == (200, 2)
    assert api.post(f"{path}/reactivate").json()["active"] is True
    audit = api.get("/v1/audit", params={"resource_id": user["id"]}).json()["items"]
    assert [a["effect"] for a in audit] == ["created", "deactivated", "noop", "reactivated"]


def test_patch_user_if_match_and_email_conflict(api: httpx.Client) -> None:
    taken = create_user(api)
    user = create_user(api)
    path = f"/v1/users/{user['id']}"
    assert api.patch(path, json={"first_name": "Ola"}, headers={"If-Match": "5"}).status_code == 412
    conflict = api.patch(path, json={"email": taken["email"].upper()})
    assert (conflict.status_code, conflict.json()["existing_id"]) == (409, taken["id"])
    ok = api.patch(path, json={"first_name": "Ola", "language": None}, headers={"If-Match": "1"})
    assert (ok.status_code, ok.json()["first_name"], ok.json()["version"]) == (200, "Ola", 2)


# -- idempotency -------------------------------------------------------------------


def test_same_key_twice_has_one_effect_and_the_same_answer(api: httpx.Client) -> None:
    op = key()
    body = {"email": email(), "username": "same"}
    first = api.post("/v1/users", json=body, headers={"Idempotency-Key": op})
    second = api.post("/v1/users", json=body, headers={"Idempotency-Key": op})
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.content == first.content
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert second.headers["etag"] == first.headers["etag"]
    [effect] = effects(api, op)
    assert (effect["effect"], effect["resource_id"]) == ("created", first.json()["id"])


def test_same_key_with_another_body_is_422_and_has_no_effect(api: httpx.Client) -> None:
    op = key()
    assert api.post("/v1/users", json={"email": email()}, headers={"Idempotency-Key": op}).status_code == 201
    reused = api.post("/v1/users", json={"email": email()}, headers={"Idempotency-Key": op})
    assert reused.status_code == 422
    assert reused.json()["error"] == "idempotency_key_reused"
    assert len(effects(api, op)) == 1


def test_a_refused_write_stores_nothing_so_the_key_works_after_the_fix(api: httpx.Client) -> None:
    user, company = create_user(api), create_company(api)
    role = f"Role-{uuid.uuid4().hex[:6]}"
    op = key()
    body = {"services": {"business": {"roles": [role]}}}
    path = f"/v1/users/{user['id']}/access/{company['id']}"
    refused = api.put(path, json=body, headers={"Idempotency-Key": op})
    assert refused.status_code == 422
    assert api.put(f"/v1/services/business/roles/{role}", json={"description": "d"}).status_code == 201
    fixed = api.put(path, json=body, headers={"Idempotency-Key": op})
    assert fixed.status_code == 200, fixed.text
    assert [e["effect"] for e in effects(api, op)] == ["assigned"]


# -- services, instances, access ---------------------------------------------------


def test_catalogue_upsert_delete_and_unknown_service(api: httpx.Client) -> None:
    name = f"Lønn-{uuid.uuid4().hex[:6]}"
    path = f"/v1/services/reporting/layout_groups/{name}"
    created = api.put(path, json={"description": "Salary"})
    assert (created.status_code, created.json()["version"]) == (201, 1)
    updated = api.put(path, json={"description": "Salaries"})
    assert (updated.status_code, updated.json()["version"]) == (200, 2)
    services = {s["service"]: s for s in api.get("/v1/services").json()["items"]}
    assert set(services) == {"business", "document_center", "reporting"}
    assert {"name": name, "description": "Salaries"} in services["reporting"]["layout_groups"]
    assert api.put("/v1/services/payroll/roles/x", json={}).status_code == 404
    assert api.put("/v1/services/business/widgets/x", json={}).status_code == 404
    assert api.get("/v1/services/payroll").status_code == 404
    assert api.delete(path).status_code == 204
    assert api.get(path).status_code == 404
    assert api.delete(path).status_code == 404


def test_application_instance_never_takes_a_clear_license_key(server: CloudServer, api: httpx.Client) -> None:
    refused = api.put(
        "/v1/application-instances/business",
        json={"uri": "https://vbs.example.no", "license_key": LICENSE_KEY},
    )
    assert refused.status_code == 422
    assert refused.json()["error"] == "license_key_rejected"
    assert LICENSE_KEY not in refused.text
    fingerprint = f"hmac-sha256:{uuid.uuid4().hex}"
    stored = api.put(
        "/v1/application-instances/document_center",
        json={"uri": "https://vdc.example.no", "license_fingerprint": fingerprint},
    )
    assert stored.status_code in (200, 201), stored.text
    items = api.get("/v1/application-instances").json()["items"]
    [instance] = [i for i in items if i["service"] == "document_center"]
    assert (instance["uri"], instance["license_fingerprint"]) == ("https://vdc.example.no", fingerprint)
    assert (
        api.put("/v1/application-instances/nope", json={"uri": "u", "license_fingerprint": "f"}).status_code
        == 404
    )
    assert LICENSE_KEY not in server.log_path.read_text()


def test_access_replace_get_list_delete(api: httpx.Client) -> None:
    user, company = create_user(api), create_company(api)
    role, module = f"Regnskap-{uuid.uuid4().hex[:6]}", f"M{uuid.uuid4().hex[:6]}"
    assert api.put(f"/v1/services/business/roles/{role}", json={}).status_code == 201
    assert api.put(f"/v1/services/business/modules/{module}", json={}).status_code == 201
    path = f"/v1/users/{user['id']}/access/{company['id']}"
    unknown = api.put(path, json={"services": {"business": {"roles": [role, "Nonexistent"]}}})
    assert unknown.status_code == 422
    assert unknown.json()["error"] == "unknown_catalogue_entry"
    assert [d["name"] for d in unknown.json()["detail"]] == ["Nonexistent"]
    body = {"services": {"business": {"roles": [role, role], "modules": [module]}}}
    assigned = api.put(path, json=body)
    assert assigned.status_code == 200, assigned.text
    assert assigned.json()["services"] == {
        "business": {"roles": [role], "layout_groups": [], "modules": [module]}
    }
    assert api.get(path).json() == assigned.json()
    listed = api.get(f"/v1/users/{user['id']}/access").json()["items"]
    assert [a["company_id"] for a in listed] == [company["id"]]
    assert api.put(f"/v1/users/{uuid.uuid4()}/access/{company['id']}", json=body).status_code == 404
    assert api.put(f"/v1/users/{user['id']}/access/{uuid.uuid4()}", json=body).status_code == 404
    # removing a role from the catalogue takes it out of the assignment
    assert api.delete(f"/v1/services/business/roles/{role}").status_code == 204
    assert api.get(path).json()["services"]["business"]["roles"] == []
    assert api.delete(path).status_code == 204
    assert api.get(path).status_code == 404
    assert api.delete(path).status_code == 404
    assert [
        a["effect"]
        for a in api.get("/v1/audit", params={"resource_id": f"{user['id']}/{company['id']}"}).json()["items"]
    ] == ["assigned", "revoked"]


# -- batch -------------------------------------------------------------------------


def test_batch_applies_each_item_as_if_sent_alone(server: CloudServer, api: httpx.Client) -> None:
    keys = [key() for _ in range(3)]
    address = email()
    requests = [
        {"idempotency_key": keys[0], "method": "POST", "path": "/v1/users", "body": {"email": address}},
        {
            "idempotency_key": keys[1],
            "method": "POST",
            "path": "/v1/companies",
            "body": {"name": "B", "organisation_number": org_number()},
        },
        {
            "idempotency_key": keys[2],
            "method": "POST",
            "path": "/v1/users",
            "body": {"email": address.upper()},
        },
        {"method": "GET", "path": f"/v1/users?email={address}"},
        {"method": "POST", "path": "/v1/batch", "body": {"requests": []}},
    ]
    first = api.post("/v1/batch", json={"requests": requests})
    assert first.status_code == 200, first.text
    responses = first.json()["responses"]
    assert [r["status"] for r in responses] == [201, 201, 409, 200, 422]
    user_id = responses[0]["body"]["id"]
    assert responses[0]["headers"]["etag"] == '"1"'
    assert responses[2]["body"]["existing_id"] == user_id
    assert [u["id"] for u in responses[3]["body"]["items"]] == [user_id]
    replay = api.post("/v1/batch", json={"requests": requests[:2]}).json()["responses"]
    assert [r["status"] for r in replay] == [201, 201]
    assert all(r["headers"]["idempotent-replayed"] == "true" for r in replay)
    assert replay[0]["body"] == responses[0]["body"]
    assert [len(effects(api, k)) for k in keys] == [1, 1, 0]
    with client_for(server, scope="directory:read") as reader:
        denied = reader.post(
            "/v1/batch",
            json={"requests": [{"method": "POST", "path": "/v1/users", "body": {"email": email()}}]},
        )
        assert denied.json()["responses"][0]["status"] == 403


def test_batch_of_more_than_500_is_refused(api: httpx.Client) -> None:
    requests = [{"method": "GET", "path": "/v1/me"}] * 501
    assert api.post("/v1/batch", json={"requests": requests}).status_code == 422


# Batch items are mostly answered by cloud.direct (the endpoint called without the ASGI
# stack); the rest go through the whole application. Either way an item must answer
# exactly as the same request sent alone: these tests hold the two side by side.

_SKIPPED_HEADERS = {"content-length", "content-type", "date", "server"}


def alone(api: httpx.Client, item: dict[str, Any]) -> dict[str, Any]:
    """``item`` sent as a request of its own, answered in the shape of a batch item."""
    headers = {"Content-Type": "application/json"}
    if item.get("idempotency_key") is not None:
        headers["Idempotency-Key"] = item["idempotency_key"]
    if item.get("if_match") is not None:
        headers["If-Match"] = str(item["if_match"])
    body = item.get("body")
    content = b"" if body is None else json.dumps(body).encode()
    response = api.request(item["method"], item["path"], content=content, headers=headers)
    try:
        parsed = response.json() if response.content else None
    except ValueError:
        parsed = response.text
    kept = {k.lower(): v for k, v in response.headers.items() if k.lower() not in _SKIPPED_HEADERS}
    return {"status": response.status_code, "body": parsed, "headers": kept}


def in_batch(api: httpx.Client, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # json.dumps escapes a lone surrogate (httpx's json= would refuse to encode it)
    content = json.dumps({"requests": items}).encode()
    response = api.post("/v1/batch", content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    answers: list[dict[str, Any]] = response.json()["responses"]
    assert len(answers) == len(items)
    return answers


def replayed(answer: dict[str, Any]) -> dict[str, Any]:
    return {**answer, "headers": {**answer["headers"], "idempotent-replayed": "true"}}


def test_batch_items_answer_as_if_sent_alone(server: CloudServer, api: httpx.Client) -> None:
    user, company = create_user(api, first_name="Kari"), create_company(api)
    role = f"Rolle-{uuid.uuid4().hex[:6]}"
    assert api.put(f"/v1/services/business/roles/{role}", json={"description": "r"}).status_code == 201
    uid, cid = user["id"], company["id"]
    no_effect: list[dict[str, Any]] = [
        {"method": "GET", "path": f"/v1/users/{uid}"},
        {"method": "GET", "path": f"/v1/users/{quote(uid)}"},
        {"method": "GET", "path": f"/v1/users?email={quote(user['email'].upper())}&limit=5"},
        {"method": "GET", "path": f"/v1/users?email=nobody%40x.no&email={quote(user['email'])}"},
        {"method": "GET", "path": "/v1/users?limit=0"},
        {"method": "GET", "path": "/v1/users?limit=abc"},
        {"method": "GET", "path": f"/v1/users?external_id={'x' * 300}"},
        {"method": "GET", "path": f"/v1/companies/{cid}"},
        {"method": "GET", "path": f"/v1/companies?organisation_number=NO{company['organisation_number']}MVA"},
        {"method": "GET", "path": f"/v1/companies/{uuid.uuid4()}"},
        {"method": "GET", "path": f"/v1/companies/{'x' * 65}"},
        {"method": "GET", "path": "/v1/me"},
        {"method": "GET", "path": "/v1/services"},
        {"method": "GET", "path": "/v1/services/business"},
        {"method": "GET", "path": "/v1/services/payroll"},
        {"method": "GET", "path": f"/v1/services/business/roles/{role}"},
        {"method": "GET", "path": "/v1/services/business/widgets/x"},
        {"method": "GET", "path": "/v1/application-instances"},
        {"method": "GET", "path": f"/v1/audit?resource_id={uid}"},
        {"method": "GET", "path": "/v1/audit?after_seq=-1"},
        {"method": "GET", "path": f"/v1/users/{uid}/access"},
        {"method": "GET", "path": f"/v1/users/{uid}/access/{cid}"},
        {"method": "GET", "path": "/v1/nope"},
        {"method": "GET", "path": "/v1/users/"},
        {"method": "DELETE", "path": "/v1/me"},
        {"method": "PATCH", "path": f"/v1/users/{uid}", "if_match": '"7"', "body": {"first_name": "X"}},
        {"method": "PATCH", "path": f"/v1/users/{uid}", "if_match": 7, "body": {"first_name": "X"}},
        {"method": "PATCH", "path": f"/v1/users/{uid}", "if_match": "x" * 65, "body": {"first_name": "X"}},
        {"method": "PATCH", "path": f"/v1/users/{uuid.uuid4()}", "body": {"first_name": "X"}},
        {"method": "POST", "path": "/v1/users", "body": {"email": user["email"].upper()}},
        {"method": "POST", "path": "/v1/users", "body": {"email": "not-an-address"}},
        {"method": "POST", "path": "/v1/users", "body": {"email": email(), "extra": 1}},
        {"method": "POST", "path": "/v1/users", "body": ["a list"]},
        {"method": "POST", "path": "/v1/users"},
        {"method": "POST", "path": "/v1/users", "body": {"email": "a\ud800b@example.no"}},
        {"method": "POST", "path": "/v1/users", "idempotency_key": "has space", "body": {"email": email()}},
        {
            "method": "POST",
            "path": "/v1/companies",
            "body": {"name": "X", "organisation_number": "no digits"},
        },
        {
            "method": "PUT",
            "path": "/v1/application-instances/business",
            "body": {"uri": "u", "license_key": LICENSE_KEY},
        },
        {
            "method": "PUT",
            "path": "/v1/application-instances/nope",
            "body": {"uri": "u", "license_fingerprint": "f"},
        },
        {
            "method": "PUT",
            "path": f"/v1/users/{uid}/access/{cid}",
            "body": {"services": {"business": {"roles": ["Nope"]}}},
        },
        {"method": "PUT", "path": f"/v1/users/{uid}/access/{cid}", "body": {"services": {"payroll": {}}}},
        {"method": "PUT", "path": f"/v1/services/business/roles/{'x' * 201}", "body": {}},
        {"method": "DELETE", "path": f"/v1/users/{uid}/access/{cid}"},
        {"method": "DELETE", "path": "/v1/services/business/roles/never-there"},
        {"method": "POST", "path": f"/v1/users/{uuid.uuid4()}/deactivate"},
    ]
    in_batch_answers = in_batch(api, no_effect)
    for item, answer in zip(no_effect, in_batch_answers, strict=True):
        assert answer == alone(api, item), item
    assert LICENSE_KEY not in json.dumps(in_batch_answers)

    # writes with an effect: once in a batch and once alone, in both orders
    def write(method: str, path: str, body: Any = None, **extra: Any) -> dict[str, Any]:
        return {"idempotency_key": key(), "method": method, "path": path, "body": body, **extra}

    batch_first = [
        write("POST", "/v1/users", {"email": email(), "username": "kari"}),
        write("PUT", f"/v1/services/reporting/modules/M{uuid.uuid4().hex[:6]}", {"description": "m"}),
        write("PUT", f"/v1/users/{uid}/access/{cid}", {"services": {"business": {"roles": [role, role]}}}),
        write("PATCH", f"/v1/users/{uid}", {"last_name": "Nordmann"}, if_match='"1"'),
        write("POST", f"/v1/users/{uid}/deactivate"),
        write("POST", f"/v1/users/{uid}/deactivate"),  # already inactive: a noop, still keyed
        write("DELETE", f"/v1/users/{uid}/access/{cid}"),
    ]
    answers = in_batch(api, batch_first)
    assert [a["status"] for a in answers] == [201, 201, 200, 200, 200, 200, 204]
    for item, answer in zip(batch_first, answers, strict=True):
        assert alone(api, item) == replayed(answer), item
        assert len(effects(api, item["idempotency_key"])) == 1
    alone_first = [
        write("POST", "/v1/companies", {"name": "Fjord AS", "organisation_number": org_number()}),
        write("POST", f"/v1/users/{uid}/reactivate"),
        write("POST", f"/v1/companies/{cid}/link", {"external_id": key()}),
    ]
    singles = [alone(api, item) for item in alone_first]
    assert [a["status"] for a in singles] == [201, 200, 200]
    assert in_batch(api, alone_first) == [replayed(a) for a in singles]


def test_batch_items_see_the_items_before_them(api: httpx.Client) -> None:
    address, role, op = email(), f"Rolle-{uuid.uuid4().hex[:6]}", key()
    company = create_company(api)
    answers = in_batch(
        api,
        [
            {"idempotency_key": op, "method": "POST", "path": "/v1/users", "body": {"email": address}},
            {"method": "GET", "path": "/v1/nope"},  # through the whole application: commits what came before
            {"method": "GET", "path": f"/v1/users?email={quote(address)}"},
            {"idempotency_key": op, "method": "POST", "path": "/v1/users", "body": {"email": address}},
            {"idempotency_key": op, "method": "POST", "path": "/v1/users", "body": {"email": email()}},
        ],
    )
    assert [a["status"] for a in answers] == [201, 404, 200, 201, 422]
    user_id = answers[0]["body"]["id"]
    assert [u["id"] for u in answers[2]["body"]["items"]] == [user_id]
    assert answers[3] == replayed(answers[0])
    assert answers[4]["body"]["error"] == "idempotency_key_reused"
    # refused, then fixed further on in the same batch: the key applies once
    access_op = key()
    assign = {
        "idempotency_key": access_op,
        "method": "PUT",
        "path": f"/v1/users/{user_id}/access/{company['id']}",
        "body": {"services": {"business": {"roles": [role]}}},
    }
    fixed = in_batch(
        api,
        [assign, {"method": "PUT", "path": f"/v1/services/business/roles/{role}", "body": {}}, assign],
    )
    assert [a["status"] for a in fixed] == [422, 201, 200]
    assert "idempotent-replayed" not in fixed[2]["headers"]
    assert [e["effect"] for e in effects(api, access_op)] == ["assigned"]
    assert [e["effect"] for e in effects(api, op)] == ["created"]


def test_a_key_twice_in_one_run_of_batch_items_applies_once(api: httpx.Client) -> None:
    """The run's keys are looked up together; a key stored earlier in the same run is found too."""
    user = create_user(api)
    done, op, other = key(), key(), key()
    patch = {"method": "PATCH", "path": f"/v1/users/{user['id']}"}
    in_batch(api, [{**patch, "idempotency_key": done, "body": {"first_name": "Kari"}}])
    answers = in_batch(
        api,
        [
            {**patch, "idempotency_key": done, "body": {"first_name": "Kari"}},  # stored before the batch
            {**patch, "idempotency_key": done, "body": {"first_name": "Ola"}},
            {**patch, "idempotency_key": op, "body": {"first_name": "Per"}},
            {**patch, "idempotency_key": op, "body": {"first_name": "Per"}},  # stored earlier in this run
            {**patch, "idempotency_key": op, "body": {"first_name": "Pål"}},
            {**patch, "idempotency_key": other, "body": {"first_name": "Kari"}, "if_match": '"2"'},
            {**patch, "idempotency_key": other, "body": {"first_name": "Kari"}, "if_match": '"3"'},
            {"method": "GET", "path": f"/v1/audit?idempotency_key={op}"},  # sees the rows before it
        ],
    )
    assert [a["status"] for a in answers] == [200, 422, 200, 200, 422, 412, 200, 200]
    assert answers[0]["headers"]["idempotent-replayed"] == "true"
    assert answers[1]["body"]["error"] == answers[4]["body"]["error"] == "idempotency_key_reused"
    assert answers[3] == replayed(answers[2])
    assert answers[2]["body"]["version"] == 3 and answers[6]["body"]["version"] == 4
    assert [e["effect"] for e in answers[7]["body"]["items"]] == ["updated"]
    assert [len(effects(api, k)) for k in (done, op, other)] == [1, 1, 1]
    assert api.get(f"/v1/users/{user['id']}").json() == answers[6]["body"]


def test_batch_items_are_counted_per_route(fresh_server: Callable[..., CloudServer]) -> None:
    cloud = fresh_server()
    with client_for(cloud) as api, admin(cloud) as admin_api:
        user = create_user(api)
        items = [
            {"method": "GET", "path": f"/v1/users/{user['id']}"},
            {"method": "POST", "path": "/v1/users", "body": {"email": email()}, "idempotency_key": "k-1"},
            {"method": "POST", "path": "/v1/users", "body": {"email": "bad"}},
            {"method": "GET", "path": "/v1/nope"},
        ]
        in_batch(api, items)
        in_batch(api, items[1:2])
        stats = admin_api.get("/admin/stats").json()
        assert stats["batch_items"] == {
            "GET /v1/users/{user_id}": {"200": 1},
            "POST /v1/users": {"201": 2, "422": 1},
            "GET unmatched": {"404": 1},
        }
        assert stats["idempotent_replays"] == 1
        assert stats["requests"]["POST /v1/batch"] == {"200": 2}


# The direct dispatch (cloud.direct) against the whole FastAPI stack (--no-direct): the
# same script on two fresh servers must get the same answers, ids and times aside.

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def _script(cloud: CloudServer) -> list[Any]:
    """A fixed conversation with a fresh server; returns every answer in order."""
    seen: list[Any] = []
    with client_for(cloud) as api, client_for(cloud, "directory:read") as reader:

        def send(method: str, path: str, *, client: httpx.Client = api, **kwargs: Any) -> httpx.Response:
            response = client.request(method, path, **kwargs)
            headers = {k: v for k, v in response.headers.items() if k not in ("date", "content-length")}
            seen.append((method, path, response.status_code, response.text, headers))
            return response

        user = send("POST", "/v1/users", json={"email": "Kari@Example.no", "username": "kari"}).json()
        send("POST", "/v1/users", json={"email": "kari@example.NO"})
        send("POST", "/v1/users", json={"email": "ola@example.no"}, headers={"Idempotency-Key": "k-1"})
        send("POST", "/v1/users", json={"email": "ola@example.no"}, headers={"Idempotency-Key": "k-1"})
        send("POST", "/v1/users", json={"email": "per@example.no"}, headers={"Idempotency-Key": "k-1"})
        send("POST", "/v1/users", json={"email": "x@example.no"}, headers={"Idempotency-Key": "bad key"})
        send("POST", "/v1/users", json={"email": "nope"})
        send("POST", "/v1/users", json={"email": "x@example.no", "typo": 1})
        send(
            "POST",
            "/v1/users",
            content=b'{"email": "x@example.no"',
            headers={"Content-Type": "application/json"},
        )
        send(
            "POST", "/v1/users", content=b'{"email": "t@example.no"}', headers={"Content-Type": "text/plain"}
        )
        send(
            "POST",
            "/v1/users",
            content=b'{"email": "c@example.no"}',
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        send("POST", "/v1/users", content=b"null", headers={"Content-Type": "application/json"})
        send("POST", "/v1/users")
        send("POST", "/v1/users", client=reader, json={"email": "r@example.no"})
        send("GET", "/v1/users", client=httpx.Client(base_url=cloud.url))
        send("GET", "/v1/me", headers={"Authorization": "Bearer nope"})
        uid = user["id"]
        send("GET", f"/v1/users/{uid}")
        send("GET", f"/v1/users/{uid}", client=reader)
        send("GET", "/v1/users", params={"email": "KARI@example.no", "limit": "5"})
        send("GET", "/v1/users", params={"limit": "0"})
        send("GET", "/v1/users?email=a%40b.no&email=kari%40example.no")
        send("PATCH", f"/v1/users/{uid}", json={"first_name": "Kari"}, headers={"If-Match": '"9"'})
        send("PATCH", f"/v1/users/{uid}", json={"first_name": "Kari"}, headers={"If-Match": 'W/"1"'})
        send("PATCH", f"/v1/users/{uid}", json={"first_name": "Kari"}, headers={"If-Match": "x" * 70})
        send("PATCH", f"/v1/users/{uid}", json={"email": "OLA@example.no"})
        send("POST", f"/v1/users/{uid}/deactivate", headers={"Idempotency-Key": "k-2"})
        send("POST", f"/v1/users/{uid}/deactivate", content=b"ignored", headers={"Idempotency-Key": "k-2"})
        send("POST", f"/v1/users/{uid}/reactivate")
        send("POST", f"/v1/users/{uid}/link", json={"external_id": "ext-1"})
        send("POST", f"/v1/users/{uuid.uuid4()}/link", json={"external_id": "ext-2"})
        company = send(
            "POST", "/v1/companies", json={"name": "Fjellvik AS", "organisation_number": "923 609 016"}
        )
        cid = company.json()["id"]
        send("POST", "/v1/companies", json={"name": "Other", "organisation_number": "NO923609016MVA"})
        send("GET", "/v1/companies", params={"organisation_number": "923609016"})
        send("PATCH", f"/v1/companies/{cid}", json={"country": "no"}, headers={"If-Match": "1"})
        send("POST", f"/v1/companies/{cid}/link", json={"external_id": "c-1"})
        send("PUT", "/v1/services/business/roles/Regnskap", json={"description": "r"})
        send("PUT", "/v1/services/business/roles/Regnskap", json={"description": "r"})
        send("PUT", "/v1/services/payroll/roles/x", json={})
        send("PUT", f"/v1/users/{uid}/access/{cid}", json={"services": {"business": {"roles": ["Nope"]}}})
        send("PUT", f"/v1/users/{uid}/access/{cid}", json={"services": {"business": {"roles": ["Regnskap"]}}})
        send("GET", f"/v1/users/{uid}/access")
        send("GET", "/v1/services")
        send("GET", "/v1/services/reporting")
        send("PUT", "/v1/application-instances/business", json={"uri": "u", "license_key": LICENSE_KEY})
        send("PUT", "/v1/application-instances/business", json={"uri": "u", "license_fingerprint": "f"})
        send("DELETE", "/v1/services/business/roles/Regnskap")
        send("DELETE", f"/v1/users/{uid}/access/{cid}")
        send("DELETE", "/v1/me")
        send("HEAD", "/v1/me")
        send("GET", "/v1/nope")
        send("GET", "/v1/me")
        items = [
            {
                "idempotency_key": "b-1",
                "method": "POST",
                "path": "/v1/users",
                "body": {"email": "b@example.no"},
            },
            {"method": "GET", "path": "/v1/users?email=b%40example.no"},
            {
                "idempotency_key": "b-1",
                "method": "POST",
                "path": "/v1/users",
                "body": {"email": "b@example.no"},
            },
            {
                "idempotency_key": "b-1",
                "method": "POST",
                "path": "/v1/users",
                "body": {"email": "z@example.no"},
            },
            {"method": "POST", "path": "/v1/users", "body": {"email": "bad"}},
            {"method": "PATCH", "path": f"/v1/users/{uid}", "if_match": 1, "body": {"last_name": "N"}},
            {"method": "GET", "path": "/v1/audit?limit=3&after_seq=1"},
            {"method": "DELETE", "path": "/v1/me"},
            {"method": "POST", "path": "/v1/batch", "body": {"requests": []}},
        ]
        send("POST", "/v1/batch", json={"requests": items})
        send("POST", "/v1/batch", client=reader, json={"requests": items[:2]})
        # the batch request itself: answered without FastAPI (cloud.batch.respond) or left to it
        send("POST", "/v1/batch", json={"requests": items[:2]}, headers={"Authorization": "Bearer nope"})
        send(
            "POST", "/v1/batch", json={"requests": [{"method": "GET"}]}, headers={"Authorization": "Bearer x"}
        )
        send("POST", "/v1/batch", json={"requests": [{"method": "GET"}]})
        send("POST", "/v1/batch", json={"requests": [{"method": "GET", "path": "/v1/me", "body": 2**70}]})
        send("POST", "/v1/batch", content=b'{"requests": [', headers={"Content-Type": "application/json"})
        send("POST", "/v1/batch", content=b'{"requests": []}', headers={"Content-Type": "text/plain"})
        send("POST", "/v1/batch", content=b'{"requests": []}', headers={"Content-Type": "application/json"})
        send("POST", "/v1/batch")
        send("GET", "/v1/batch")
        send("GET", "/v1/audit", params={"limit": "1000"})
    with admin(cloud) as admin_api:
        seen.append(admin_api.get("/admin/stats").json())
    return seen


def _normalised(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    names: dict[str, str] = {}
    text = _UUID.sub(lambda m: names.setdefault(m.group(0), f"<id{len(names)}>"), text)
    return _TIME.sub("<time>", text)


def test_direct_dispatch_answers_as_the_whole_stack_does(fresh_server: Callable[..., CloudServer]) -> None:
    direct = _script(fresh_server())
    reference = _script(fresh_server(extra_args=("--no-direct",)))
    assert len(direct) == len(reference)
    for ours, theirs in zip(direct, reference, strict=True):
        assert _normalised(ours) == _normalised(theirs)


def test_a_body_cut_short_by_the_client_has_no_effect(fresh_server: Callable[..., CloudServer]) -> None:
    cloud = fresh_server()
    address = email()
    body = json.dumps({"email": address}).encode()  # valid JSON, but fewer bytes than announced
    head = (
        f"POST /v1/users HTTP/1.1\r\nHost: {cloud.host}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {cloud.token()}\r\nIdempotency-Key: cut-1\r\n"
        f"Content-Length: {len(body) + 20}\r\n\r\n"
    ).encode()
    with socket.create_connection((cloud.host, cloud.port), timeout=10) as raw:
        raw.sendall(head + body)
    with client_for(cloud) as api, admin(cloud) as admin_api:
        wait_until(
            lambda: admin_api.get("/admin/stats").json()["requests"].get("POST /v1/users"),
            timeout=20,
            what="the server to give up on the request",
        )
        assert api.get("/v1/users", params={"email": address}).json()["items"] == []
        assert effects(api, "cut-1") == []


# -- the store's batch transaction -------------------------------------------------


def _store_write(store: Store, op: str | None, action: Any) -> Any:
    return store.write(WriteRequest("c", "POST", "/v1/users", op, f"fp-{op}"), action)


def _insert_user(email_address: str) -> Any:
    def action(conn: sqlite3.Connection, now: float) -> Outcome:
        user_id = str(uuid.uuid4())
        conn.execute(
            "INSERT INTO users (id, email, email_key, active, version, created_at, updated_at)"
            " VALUES (?, ?, ?, 1, 1, 'a', 'a')",
            (user_id, email_address, email_address),
        )
        return Outcome(201, {"id": user_id}, Effect("user", user_id, "created"))

    return action


def _refuse(conn: sqlite3.Connection, now: float) -> Outcome:
    conn.execute(
        "INSERT INTO users (id, email, email_key, active, version, created_at, updated_at)"
        " VALUES ('refused', 'r', 'r', 1, 1, 'a', 'a')"
    )
    raise ApiError(409, "conflict", "refused after writing")


def test_store_batch_keeps_each_write_all_or_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "cloud.db", clock=time.time)
    store.open()
    try:
        seen_inside: list[int] = []
        with pytest.raises(RuntimeError, match="boom"), store.batch():
            first = _store_write(store, "k1", _insert_user("a@x.no"))
            with pytest.raises(ApiError):
                _store_write(store, "k2", _refuse)
            seen_inside.append(store.reader().execute("SELECT count(*) FROM users").fetchone()[0])
            with pytest.raises(RuntimeError, match="wait for itself"), store.transaction():
                pass
            with pytest.raises(ZeroDivisionError):  # an unexpected error half-way through a write
                _store_write(store, "k3", lambda conn, now: (_insert_user("c@x.no")(conn, now), 1 / 0))
            raise RuntimeError("boom")
        assert seen_inside == [1]  # the batch's own write, not the refused one
        other = sqlite3.connect(tmp_path / "cloud.db")
        users = [r[0] for r in other.execute("SELECT email FROM users")]
        keys = [r[0] for r in other.execute("SELECT key FROM idempotency")]
        audited = [r[0] for r in other.execute("SELECT idempotency_key FROM audit")]
        other.close()
        # the completed write was committed even though the block raised afterwards
        assert (users, keys, audited) == (["a@x.no"], ["k1"], ["k1"])
        assert first.replayed is False
        assert _store_write(store, "k1", _insert_user("a@x.no")).replayed is True
    finally:
        store.close()


def test_store_batch_looks_keys_up_set_wise_and_writes_its_rows_before_reads(tmp_path: Path) -> None:
    store = Store(tmp_path / "cloud.db", clock=time.time)
    store.open()
    try:
        _store_write(store, "k0", _insert_user("a@x.no"))
        other = WriteRequest("c", "POST", "/v1/users", "k1", "fp-other")
        with store.batch(keys=["k0", "k1", "k2"]):
            assert _store_write(store, "k0", _insert_user("never@x.no")).replayed is True
            first = _store_write(store, "k1", _insert_user("b@x.no"))
            assert _store_write(store, "k1", _insert_user("never@x.no")).replayed is True
            with pytest.raises(ApiError, match="different request"):
                store.write(other, _insert_user("never@x.no"))
            with pytest.raises(ApiError):
                _store_write(store, "k2", _refuse)
            _store_write(store, "k9", _insert_user("c@x.no"))  # not declared: looked up on its own
            audited_inside = [r[0] for r in store.reader().execute("SELECT idempotency_key FROM audit")]
            _store_write(store, "k2", _insert_user("d@x.no"))  # refused before, applies now
        assert first.replayed is False
        assert audited_inside == ["k0", "k1", "k9"]
        conn = sqlite3.connect(tmp_path / "cloud.db")
        users = [r[0] for r in conn.execute("SELECT email FROM users ORDER BY rowid")]
        audited = [r[0] for r in conn.execute("SELECT idempotency_key FROM audit ORDER BY seq")]
        keys = sorted(r[0] for r in conn.execute("SELECT key FROM idempotency"))
        conn.close()
        assert users == ["a@x.no", "b@x.no", "c@x.no", "d@x.no"]
        assert audited == ["k0", "k1", "k9", "k2"]
        assert keys == ["k0", "k1", "k2", "k9"]
    finally:
        store.close()


def test_store_batch_commits_only_at_its_end(tmp_path: Path) -> None:
    store = Store(tmp_path / "cloud.db", clock=time.time)
    store.open()
    counts: list[int] = []

    def count_elsewhere() -> None:
        counts.append(store.reader().execute("SELECT count(*) FROM users").fetchone()[0])

    try:
        with store.batch():
            _store_write(store, None, _insert_user("a@x.no"))
            worker = threading.Thread(target=count_elsewhere)
            worker.start()
            worker.join(timeout=30)
        count_elsewhere()
        assert counts == [0, 1]
    finally:
        store.close()


def test_store_wal_is_checkpointed_by_its_own_thread_not_by_a_commit(tmp_path: Path) -> None:
    """The writer never checkpoints (it holds the write lock); the checkpointer thread does."""
    path = tmp_path / "cloud.db"
    before = threads_named("cloud-checkpointer")
    store = Store(path, clock=time.time)
    store.open()
    try:
        assert store.reader().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        with store.transaction() as conn:
            assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        assert threads_named("cloud-checkpointer") == before + 1
        # well past SQLite's 1,000-page automatic checkpoint, in batches as the sink sends them
        for batch in range(20):
            with store.batch():
                for i in range(200):
                    _store_write(store, f"k{batch}-{i}", _insert_user(f"u{batch}-{i}@x.no"))
        # the main database file alone gets every row
        wait_until(lambda: rows_in_main_file(path, "users") == 4000, timeout=30, what="checkpointed rows")
    finally:
        store.close()
    assert threads_named("cloud-checkpointer") == before
    assert not (tmp_path / "cloud.db-wal").exists()  # the last close copied the rest


# -- faults and rate limits --------------------------------------------------------


def test_injected_errors_never_have_an_effect(fresh_server: Callable[..., CloudServer]) -> None:
    cloud = fresh_server(faults=FaultConfig(error_rate=1.0, seed=1))
    with client_for(cloud) as api, admin(cloud) as admin_api:
        ops = [key() for _ in range(20)]
        statuses = {
            api.post("/v1/users", json={"email": email()}, headers={"Idempotency-Key": op}).status_code
            for op in ops
        }
        assert statuses <= {500, 502, 503}
        assert httpx.get(f"{cloud.url}/healthz").status_code == 200  # faults are /v1 only
        assert admin_api.put("/admin/faults", json={}).json()["error_rate"] == 0
        assert all(effects(api, op) == [] for op in ops)
        assert api.get("/v1/audit").json()["items"] == []
        stats = admin_api.get("/admin/stats").json()
        assert stats["faults_injected"]["error"] == 20


def test_injected_rate_limit_is_429_with_retry_after(fresh_server: Callable[..., CloudServer]) -> None:
    cloud = fresh_server(faults=FaultConfig(rate_limit_rate=1.0, retry_after_seconds=2))
    with client_for(cloud) as api, admin(cloud) as admin_api:
        op = key()
        limited = api.post("/v1/users", json={"email": email()}, headers={"Idempotency-Key": op})
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "2"
        admin_api.put("/admin/faults", json={})
        assert effects(api, op) == []


def test_real_rate_limit_per_client(fresh_server: Callable[..., CloudServer]) -> None:
    cloud = fresh_server(rate_limit_per_second=0.5)
    with client_for(cloud) as api, admin(cloud) as admin_api:
        assert api.get("/v1/me").status_code == 200
        limited = api.get("/v1/me")
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.json()["error"] == "rate_limited"
        admin_api.put("/admin/rate-limit", json={"rate_limit_per_second": 0})
        assert api.get("/v1/me").status_code == 200
        assert admin_api.get("/admin/stats").json()["rate_limited"] == 1


def test_lost_response_after_the_effect_then_retry_has_exactly_one_effect(
    fresh_server: Callable[..., CloudServer],
) -> None:
    cloud = fresh_server(faults=FaultConfig(drop_rate=1.0, drop_after_effect=True))
    with client_for(cloud) as api, admin(cloud) as admin_api:
        op = key()
        body = {"email": email()}
        with pytest.raises(httpx.TransportError):
            api.post("/v1/users", json=body, headers={"Idempotency-Key": op})
        admin_api.put("/admin/faults", json={})
        retry = api.post("/v1/users", json=body, headers={"Idempotency-Key": op})
        assert retry.status_code == 201
        assert retry.headers["idempotent-replayed"] == "true"
        [effect] = effects(api, op)
        assert effect["resource_id"] == retry.json()["id"]


def test_latency_after_the_effect_answers_late_for_a_write_already_made(
    fresh_server: Callable[..., CloudServer],
) -> None:
    cloud = fresh_server(faults=FaultConfig(latency_ms=(5000, 5000), latency_after_effect=True))
    op = key()
    body = {"email": email()}
    impatient = httpx.Client(base_url=cloud.url, headers=cloud.auth_headers(), timeout=1.0)
    with impatient, pytest.raises(httpx.ReadTimeout):
        impatient.post("/v1/users", json=body, headers={"Idempotency-Key": op})
    with client_for(cloud) as api, admin(cloud) as admin_api:
        admin_api.put("/admin/faults", json={}).raise_for_status()
        # the client gave up after 1 s of the answer's 5 s: the write was made before the wait
        [effect] = effects(api, op)
        retry = api.post("/v1/users", json=body, headers={"Idempotency-Key": op})
        assert retry.headers["idempotent-replayed"] == "true"
        assert retry.json()["id"] == effect["resource_id"]


def test_dropped_before_the_effect_then_retry_applies_once(
    fresh_server: Callable[..., CloudServer],
) -> None:
    cloud = fresh_server(faults=FaultConfig(drop_rate=1.0))
    with client_for(cloud) as api, admin(cloud) as admin_api:
        op = key()
        body = {"email": email()}
        with pytest.raises(httpx.TransportError):
            api.post("/v1/users", json=body, headers={"Idempotency-Key": op})
        admin_api.put("/admin/faults", json={})
        assert effects(api, op) == []
        retry = api.post("/v1/users", json=body, headers={"Idempotency-Key": op})
        assert (retry.status_code, retry.headers.get("idempotent-replayed")) == (201, None)
        assert len(effects(api, op)) == 1


def test_timeout_applies_late_and_the_retry_is_replayed(fresh_server: Callable[..., CloudServer]) -> None:
    cloud = fresh_server(faults=FaultConfig(timeout_rate=1.0, timeout_seconds=1.0))
    with client_for(cloud) as api, admin(cloud) as admin_api:
        op = key()
        body = {"email": email()}
        with pytest.raises(httpx.ReadTimeout):
            api.post("/v1/users", json=body, headers={"Idempotency-Key": op}, timeout=0.3)
        admin_api.put("/admin/faults", json={})
        wait_until(lambda: effects(api, op), timeout=10, what="the held request to apply")
        retry = api.post("/v1/users", json=body, headers={"Idempotency-Key": op})
        assert retry.headers["idempotent-replayed"] == "true"
        assert len(effects(api, op)) == 1


def test_faults_and_rate_limit_from_the_cli(fresh_server: Callable[..., CloudServer]) -> None:
    cloud = fresh_server()
    runner = CliRunner()
    common = ["--url", cloud.url, "--admin-token", cloud.admin_token]
    result = runner.invoke(cloud_cli, ["faults", *common, "--error-rate", "0.25", "--latency-ms", "1,3"])
    assert result.exit_code == 0, result.output
    with admin(cloud) as admin_api:
        config = admin_api.get("/admin/faults").json()
        assert (config["error_rate"], config["latency_ms"]) == (0.25, [1, 3])
        kept = runner.invoke(cloud_cli, ["faults", *common, "--keep", "--seed", "3"])
        assert kept.exit_code == 0, kept.output
        assert admin_api.get("/admin/faults").json()["error_rate"] == 0.25
        assert runner.invoke(cloud_cli, ["faults", *common, "--clear"]).exit_code == 0
        assert admin_api.get("/admin/faults").json()["error_rate"] == 0
        limited = runner.invoke(cloud_cli, ["rate-limit", *common, "--per-second", "50"])
        assert limited.exit_code == 0, limited.output
        assert admin_api.get("/admin/rate-limit").json()["rate_limit_per_second"] == 50
    wrong = runner.invoke(cloud_cli, ["stats", "--url", cloud.url, "--admin-token", "wrong"])
    assert wrong.exit_code != 0


# -- stats, concurrency, shutdown --------------------------------------------------


def test_stats_count_requests_by_route_template(fresh_server: Callable[..., CloudServer]) -> None:
    cloud = fresh_server()
    with client_for(cloud) as api, admin(cloud) as admin_api:
        users = [create_user(api) for _ in range(5)]
        for user in users:
            api.get(f"/v1/users/{user['id']}")
        api.post("/v1/batch", json={"requests": [{"method": "GET", "path": "/v1/me"}] * 3})
        stats = admin_api.get("/admin/stats").json()
        assert stats["requests"]["POST /v1/users"] == {"201": 5}
        assert stats["requests"]["GET /v1/users/{user_id}"] == {"200": 5}
        assert stats["requests"]["POST /v1/batch"] == {"200": 1}
        assert stats["batch_items"]["GET /v1/me"] == {"200": 3}
        assert stats["token_requests"] == 1
        assert admin_api.post("/admin/reset").json() == {"status": "reset"}
        # counted after it answered: the reset itself is the only request since
        assert admin_api.get("/admin/stats").json()["requests"] == {"POST /admin/reset": {"200": 1}}
        assert api.get(f"/v1/users/{users[0]['id']}").status_code == 404


def test_parallel_writes_do_not_corrupt(server: CloudServer, api: httpx.Client) -> None:
    shared_op, shared_body = key(), {"email": email()}
    barrier = threading.Barrier(10)
    headers = dict(api.headers)

    def write(i: int) -> tuple[int, str]:
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
            if i < 10:
                barrier.wait(timeout=10)
                r = client.post("/v1/users", json=shared_body, headers={"Idempotency-Key": shared_op})
            else:
                r = client.post("/v1/users", json={"email": email()}, headers={"Idempotency-Key": key()})
            return r.status_code, r.json()["id"]

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(write, range(60)))
    assert {status for status, _ in results} == {201}
    assert len({user_id for _, user_id in results[:10]}) == 1
    assert len({user_id for _, user_id in results[10:]}) == 50
    assert len(effects(api, shared_op)) == 1
    db = sqlite3.connect(f"file:{server.db_path}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()


def test_no_secret_in_the_server_log(server: CloudServer, api: httpx.Client) -> None:
    token = api.headers["authorization"].split()[1]
    log = server.log_path.read_text()
    for secret in (server.client_secret, server.admin_token, token, LICENSE_KEY):
        assert secret not in log


def test_sigterm_stops_the_server_gracefully(fresh_server: Callable[..., CloudServer]) -> None:
    cloud = fresh_server()
    pid = cloud.pid
    started = time.monotonic()
    code = cloud.stop(timeout=10)
    assert code in (0, -15), code  # uvicorn re-raises the SIGTERM after its clean shutdown
    assert time.monotonic() - started < 10
    assert "Application shutdown complete" in cloud.log_path.read_text()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
