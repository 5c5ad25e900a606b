"""Two-way access, the cloud's side (issue 16, item 1): every access entry carries its origin
(``directory``: the integration's client; ``cloud``: anyone else, here an administrator in the
portal, simulated with a second OAuth client) and its modification time; one entry can be
granted or revoked without touching the others; and ``GET /v1/changes`` is an incremental feed
of users, companies and access with cursors, pages and expiry (410). Over real HTTP, against a
``python -m cloud`` subprocess."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloud.server import CloudServer
from cloud.store import Store
from devtools.processes import wait_until
from schemas.directory import ApplicationType, EntityType
from schemas.operations import RevokeAccessEntry
from sinks.http_cloud import HttpCloudDirectory
from sinks.writes import KEPT_CHANGED_SINCE_READ

pytestmark = pytest.mark.integration

PORTAL = ("portal-admin", "portal-admin-secret-1")


@pytest.fixture(scope="module")
def server() -> Iterator[CloudServer]:
    cloud = CloudServer(customer_name="Fjellvik AS", token_rate_per_address=0, secret_hash_iterations=1000)
    with cloud:
        httpx.post(
            f"{cloud.url}/admin/clients",
            headers=cloud.admin_headers(),
            json={"client_id": PORTAL[0], "client_secret": PORTAL[1], "is_customer_admin": True},
        ).raise_for_status()
        yield cloud
    cloud.cleanup()


def _client(server: CloudServer, who: tuple[str, str] | None = None) -> httpx.Client:
    if who is None:
        headers = server.auth_headers()
    else:
        headers = {"Authorization": f"Bearer {server.token(client_id=who[0], client_secret=who[1])}"}
    return httpx.Client(base_url=server.url, headers=headers, timeout=30.0)


@pytest.fixture()
def integration(server: CloudServer) -> Iterator[httpx.Client]:
    with _client(server) as client:
        yield client


@pytest.fixture()
def portal(server: CloudServer) -> Iterator[httpx.Client]:
    with _client(server, PORTAL) as client:
        yield client


def _ok(response: httpx.Response) -> Any:
    assert response.status_code < 300, response.text
    return response.json() if response.content else None


def _user_and_company(api: httpx.Client) -> tuple[str, str]:
    for role in ("Regnskap", "Lønn", "Innkjøp"):
        _ok(api.put(f"/v1/services/business/roles/{role}", json={"description": role}))
    user = _ok(api.post("/v1/users", json={"email": f"u.{uuid.uuid4().hex[:8]}@fjord.no"}))["id"]
    digits = f"{uuid.uuid4().int % 10**9:09d}"
    company = _ok(api.post("/v1/companies", json={"name": "Fjord AS", "organisation_number": digits}))["id"]
    return user, company


def _origins(access: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["origin"] for e in access["entries"]}


def test_each_entry_keeps_its_origin_and_one_entry_changes_alone(
    integration: httpx.Client, portal: httpx.Client
) -> None:
    user, company = _user_and_company(integration)
    path = f"/v1/users/{user}/access/{company}"
    first = _ok(integration.put(path, json={"services": {"business": {"roles": ["Regnskap"]}}}))
    assert _origins(first) == {"Regnskap": "directory"}

    # an administrator grants a role in the portal: one entry, the others untouched
    granted = _ok(portal.put(f"{path}/business/roles/Lønn"))
    assert _origins(granted) == {"Regnskap": "directory", "Lønn": "cloud"}
    assert granted["services"]["business"]["roles"] == ["Lønn", "Regnskap"]
    (regnskap,) = (e for e in granted["entries"] if e["name"] == "Regnskap")
    (first_regnskap,) = first["entries"]
    assert regnskap["modified_at"] == first_regnskap["modified_at"], "an untouched entry keeps its time"
    again = _ok(portal.put(f"{path}/business/roles/Lønn"))
    assert again["version"] == granted["version"], "granting a held entry changes nothing"

    # the integration grants and revokes its own entries one by one; the cloud's stays
    _ok(integration.put(f"{path}/business/roles/Innkjøp"))
    after = _ok(integration.delete(f"{path}/business/roles/Regnskap"))
    assert _origins(after) == {"Lønn": "cloud", "Innkjøp": "directory"}
    assert _ok(integration.get(path))["entries"] == after["entries"]

    unknown = integration.put(f"{path}/business/roles/Finnes-ikke")
    assert unknown.status_code == 422 and unknown.json()["error"] == "unknown_catalogue_entry"
    assert integration.put(f"/v1/users/{user}/access/nope/business/roles/Lønn").status_code == 404


def test_the_feed_gives_each_change_once_with_its_origin_page_by_page(
    integration: httpx.Client, portal: httpx.Client
) -> None:
    start = _ok(integration.get("/v1/changes"))
    assert start["items"] == [] and start["more"] is False

    user, company = _user_and_company(integration)
    path = f"/v1/users/{user}/access/{company}"
    _ok(integration.put(path, json={"services": {"business": {"roles": ["Regnskap"]}}}))
    _ok(portal.put(f"{path}/business/roles/Lønn"))  # the same access changed twice: one item

    items: list[dict[str, Any]] = []
    cursor, pages = start["cursor"], 0
    while True:
        page = _ok(integration.get("/v1/changes", params={"cursor": cursor, "limit": 1}))
        items += page["items"]
        cursor, pages = page["cursor"], pages + 1
        if not page["more"]:
            break
    assert pages >= 3, "one change per page"
    ours = [i for i in items if i["resource_id"] in (user, company, f"{user}/{company}")]
    by_type = {i["resource_type"]: i for i in ours}
    assert by_type["user"]["origin"] == "directory" and by_type["user"]["state"]["id"] == user
    assert by_type["company"]["change"] == "upserted"
    assert by_type["access"]["origin"] == "cloud", "the last change of the access was the portal's"
    assert _origins(by_type["access"]["state"]) == {"Regnskap": "directory", "Lønn": "cloud"}

    # all at once: each resource once, where it last changed
    whole = _ok(integration.get("/v1/changes", params={"cursor": start["cursor"], "limit": 1000}))
    keys = [(i["resource_type"], i["resource_id"]) for i in whole["items"]]
    assert len(keys) == len(set(keys)) and ("access", f"{user}/{company}") in keys

    # no more changes yet, then the next one only
    quiet = _ok(integration.get("/v1/changes", params={"cursor": cursor}))
    assert quiet["items"] == [] and quiet["more"] is False
    _ok(integration.delete(f"{path}/business/roles/Regnskap"))
    (revoked,) = _ok(integration.get("/v1/changes", params={"cursor": quiet["cursor"]}))["items"]
    assert revoked["resource_id"] == f"{user}/{company}" and _origins(revoked["state"]) == {"Lønn": "cloud"}


def test_an_expired_cursor_is_answered_410_and_a_new_one_works(
    server: CloudServer, integration: httpx.Client
) -> None:
    old = _ok(integration.get("/v1/changes"))["cursor"]
    _ok(httpx.post(f"{server.url}/admin/changes/expire", headers=server.admin_headers()))
    expired = integration.get("/v1/changes", params={"cursor": old})
    assert expired.status_code == 410 and expired.json()["error"] == "cursor_expired"
    fresh = _ok(integration.get("/v1/changes"))["cursor"]
    assert _ok(integration.get("/v1/changes", params={"cursor": fresh}))["items"] == []
    bad = integration.get("/v1/changes", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_cursor"


def test_a_cursor_unused_past_the_retention_expires(tmp_path: Path) -> None:
    with (
        CloudServer(
            db_path=tmp_path / "cloud.db",
            secret_hash_iterations=1000,
            extra_args=("--changes-retention", "1"),
        ) as short,
        _client(short) as api,
    ):
        cursor = _ok(api.get("/v1/changes"))["cursor"]
        wait_until(
            lambda: api.get("/v1/changes", params={"cursor": cursor}).status_code == 410,
            30,
            what="the cursor to expire after its retention",
        )


def test_a_database_of_an_older_version_gains_the_entries_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE access (user_id TEXT NOT NULL, company_id TEXT NOT NULL, services TEXT NOT NULL,"
            " version INTEGER NOT NULL, updated_at TEXT NOT NULL, PRIMARY KEY (user_id, company_id))"
        )
        old.execute("INSERT INTO access VALUES ('u', 'c', '{}', 1, '2026-01-01T00:00:00Z')")
    old.close()
    store = Store(path, clock=lambda: 0.0)
    store.open()
    try:
        (row,) = store.reader().execute("SELECT entries FROM access").fetchall()
        assert row[0] == "{}"
    finally:
        store.close()


def test_the_directorys_set_keeps_the_clouds_entries_and_claims_those_it_names(
    integration: httpx.Client, portal: httpx.Client
) -> None:
    user, company = _user_and_company(integration)
    path = f"/v1/users/{user}/access/{company}"
    directory = {"scope": "directory"}
    _ok(integration.put(path, params=directory, json={"services": {"business": {"roles": ["Regnskap"]}}}))
    _ok(portal.put(f"{path}/business/roles/Lønn"))
    _ok(portal.put(f"{path}/business/roles/Innkjøp"))

    # the directory's whole set now: Regnskap out, Innkjøp in (the directory changed that entry too)
    now = _ok(
        integration.put(path, params=directory, json={"services": {"business": {"roles": ["Innkjøp"]}}})
    )
    assert _origins(now) == {"Lønn": "cloud", "Innkjøp": "directory"}
    same = _ok(
        integration.put(path, params=directory, json={"services": {"business": {"roles": ["Innkjøp"]}}})
    )
    assert same["version"] == now["version"], "the same set again: no effect"

    # a revoke of everything the directory holds leaves the cloud's entries
    assert integration.delete(path, params=directory).status_code == 204
    assert _origins(_ok(integration.get(path))) == {"Lønn": "cloud"}
    assert integration.delete(path, params={"scope": "everything"}).status_code == 422
    assert integration.delete(path).status_code == 204, "scope=all (the default) revokes everything"
    assert integration.get(path).status_code == 404


def _entry(access: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((e for e in access["entries"] if e["name"] == name), None)


def test_a_revoke_naming_the_entry_as_read_is_refused_412_once_it_changed(
    integration: httpx.Client, portal: httpx.Client
) -> None:
    """Issue 16: the per-entry revoke can name the entry as it was read (``If-Match``: the
    entry's ``etag``); an administrator's revoke and grant again in between gives the entry a
    new tag, and the revoke is refused (412) in the write's own transaction — the grant stays."""
    user, company = _user_and_company(integration)
    path = f"/v1/users/{user}/access/{company}"
    _ok(integration.put(path, json={"services": {"business": {"roles": ["Regnskap"]}}}))
    read = _entry(_ok(portal.put(f"{path}/business/roles/Lønn")), "Lønn")
    assert read is not None and read["etag"] == f'"cloud@{read["modified_at"]}"'
    # the administrator revokes it and grants it again after the integration read it
    _ok(portal.delete(f"{path}/business/roles/Lønn"))
    regranted = _entry(_ok(portal.put(f"{path}/business/roles/Lønn")), "Lønn")
    assert regranted is not None and regranted["etag"] != read["etag"]

    refused = integration.delete(f"{path}/business/roles/Lønn", headers={"If-Match": read["etag"]})
    assert refused.status_code == 412 and refused.json()["error"] == "precondition_failed", refused.text
    assert _entry(_ok(integration.get(path)), "Lønn") == regranted, "the grant made since the read stays"

    # named as it is now (a weak tag too), the revoke goes; an entry no longer held refuses any tag
    revoked = _ok(
        integration.delete(f"{path}/business/roles/Lønn", headers={"If-Match": f"W/{regranted['etag']}"})
    )
    assert _entry(revoked, "Lønn") is None and _origins(revoked) == {"Regnskap": "directory"}
    gone = integration.delete(f"{path}/business/roles/Lønn", headers={"If-Match": regranted["etag"]})
    assert gone.status_code == 412
    # without If-Match the revoke is unconditional, as before
    assert _origins(_ok(integration.delete(f"{path}/business/roles/Regnskap"))) == {}


async def test_the_sink_keeps_an_entry_the_cloud_changed_between_its_read_and_its_revoke(
    server: CloudServer, integration: httpx.Client, portal: httpx.Client
) -> None:
    """The race rule 6 left open: the sink reads the entry (older than the removal on premise:
    the directory wins), an administrator grants it again in the cloud, then the sink revokes.
    The revoke names the entry as read: the cloud answers 412 and the sink records *kept*."""
    user, company = _user_and_company(integration)
    path = f"/v1/users/{user}/access/{company}"
    _ok(portal.put(f"{path}/business/roles/Lønn"))
    removed_on_premise = datetime.now(UTC)  # later than the grant: the directory's change wins

    def regrant_after_the_read(request: httpx.Request) -> None:
        if request.method == "GET" and request.url.path == path:
            _ok(portal.delete(f"{path}/business/roles/Lønn"))
            _ok(portal.put(f"{path}/business/roles/Lønn"))

    def revoke(version: int) -> RevokeAccessEntry:
        return RevokeAccessEntry(
            operation_id=f"op-revoke-{uuid.uuid4().hex}",
            aggregate="user:u1",
            entity=EntityType.USER,
            entity_id="u1",
            source_version=version,
            source_committed_at=removed_on_premise,
            planned_at=removed_on_premise,
            user_id="u1",
            company_id="c1",
            cloud_user_id=user,
            cloud_company_id=company,
            application=ApplicationType.BUSINESS,
            catalogue="roles",
            name="Lønn",
            unless_changed_after=removed_on_premise,
        )

    racing = HttpCloudDirectory(
        server.url, server.client_id, server.client_secret, transport=_After(regrant_after_the_read)
    )
    try:
        kept = await racing.apply(revoke(7))
    finally:
        await racing.aclose()
    assert (kept.effect, kept.details) == ("kept", {"reason": KEPT_CHANGED_SINCE_READ})
    assert _origins(_ok(integration.get(path))) == {"Lønn": "cloud"}, "the administrator's grant stays"

    # no race, and the entry older than the removal: revoked (the regrant above is later: kept)
    _ok(portal.delete(f"{path}/business/roles/Lønn"))
    _ok(portal.put(f"{path}/business/roles/Lønn"))
    later = datetime.now(UTC)
    plain = HttpCloudDirectory(server.url, server.client_id, server.client_secret)
    try:
        applied = await plain.apply(revoke(8).model_copy(update={"unless_changed_after": later}))
    finally:
        await plain.aclose()
    assert applied.effect == "revoked" and _origins(_ok(integration.get(path))) == {}


class _After(httpx.AsyncBaseTransport):
    """Real HTTP, and ``then(request)`` once each request was answered (a change made by
    someone else between two of the sink's calls)."""

    def __init__(self, then: Callable[[httpx.Request], None]) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._then = then

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        await response.aread()
        self._then(request)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()
