"""Multi-step operations through the batch endpoint, against the real reference cloud API.

An initial sync is mostly multi-step operations (users and companies the cloud does not
know by id yet: resolve by external id, then by e-mail / organisation number, then create
or link). Batched, they go in phases — look-ups, then writes — and must come out exactly as
the one-at-a-time path would: the same effects, the same review details, the same
idempotency keys, no second effect on a re-run.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloud.server import CloudServer
from schemas.directory import ApplicationType, EntityType
from schemas.operations import (
    AssignAccess,
    CloudOperation,
    DeactivateUser,
    UpsertCatalogueEntry,
    UpsertCompany,
    UpsertUser,
)
from sinks.http_cloud import HttpCloudDirectory
from sinks.ports import Applied, BatchOutcome
from sinks.writes import UNRESOLVED
from tests.factories import access_op, company_upsert

pytestmark = pytest.mark.integration

T = datetime(2026, 11, 27, 12, tzinfo=UTC)
COMMON: dict[str, Any] = {"source_version": 7, "source_committed_at": T, "planned_at": T}


def user(uid: str, email: str, *, first: str = "Kari", active: bool = True) -> UpsertUser:
    return UpsertUser(
        operation_id=f"op-{uid}", aggregate=f"user:{uid}", entity=EntityType.USER, entity_id=uid,
        username=uid, email=email, first_name=first, last_name="Ødegård", language="nb",
        active=active, **COMMON,
    )  # fmt: skip


def company(cid: str, org: str, name: str) -> UpsertCompany:
    return company_upsert(cid, operation_id=f"op-{cid}", name=name, organisation_number=org, **COMMON)


def deactivate(uid: str, email: str) -> DeactivateUser:
    return DeactivateUser(
        operation_id=f"op-d-{uid}", aggregate=f"user:{uid}", entity=EntityType.USER, entity_id=uid,
        email=email, **COMMON,
    )  # fmt: skip


def workload() -> list[CloudOperation]:
    return [
        user("u1", "ny.bruker@fjord.no"),  # unknown: created
        user("u2", "Kari.Lie@Fjord.no", first="Kari"),  # an unlinked cloud user by e-mail: linked + updated
        company("c1", "923 609 016", "Fjord Regnskap AS"),  # same organisation number: linked, review name
        company("c2", "974760673", "Nordlys AS"),  # unknown: created
        deactivate("u3", "per@fjord.no"),  # linked in the cloud: deactivated
        deactivate("u9", "ingen@fjord.no"),  # unknown: nothing to do
        user("u4", "aase@fjord.no", first="Åse"),  # linked, inactive in the cloud: reactivated
        user("u5", "passiv@fjord.no", active=False),  # new and inactive: needs the create's answer first
        UpsertCatalogueEntry(
            operation_id="op-cat",
            aggregate="catalogue:business",
            entity=EntityType.ROLE,
            entity_id="business:role:Regnskap",
            application=ApplicationType.BUSINESS,
            catalogue="roles",
            name="Regnskap",
            description="Regnskap og lønn",
            **COMMON,
        ),
    ]


class CountingTransport(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"{request.method} {request.url.path}")
        return await super().handle_async_request(request)


def prepare(server: CloudServer) -> None:
    """What the cloud has before the sync: users and a company the directory must meet."""
    with httpx.Client(base_url=server.url, headers=server.auth_headers(), timeout=10) as c:

        def write(method: str, path: str, key: str, body: Any = None) -> dict[str, Any]:
            r = c.request(method, path, headers={"Idempotency-Key": key}, json=body)
            r.raise_for_status()
            return dict(r.json()) if r.content else {}

        write("POST", "/v1/users", "pre-1", {"email": "kari.lie@fjord.no", "first_name": "Kari Anne"})
        write(
            "POST", "/v1/users", "pre-2", {"external_id": "u3", "email": "per@fjord.no", "first_name": "Per"}
        )
        aase = write(
            "POST", "/v1/users", "pre-3",
            {"external_id": "u4", "email": "aase@fjord.no", "username": "u4", "first_name": "Åse",
             "last_name": "Ødegård", "language": "nb"},
        )  # fmt: skip
        write("POST", f"/v1/users/{aase['id']}/deactivate", "pre-4")
        write("POST", "/v1/companies", "pre-5", {"name": "Fjord AS", "organisation_number": "923609016"})


@pytest.fixture
def two_clouds(tmp_path: Path) -> Iterator[tuple[CloudServer, CloudServer]]:
    with (
        CloudServer(db_path=tmp_path / "alone.db", secret_hash_iterations=1000) as alone,
        CloudServer(db_path=tmp_path / "batched.db", secret_hash_iterations=1000) as batched,
    ):
        prepare(alone)
        prepare(batched)
        yield alone, batched


def adapter(server: CloudServer, transport: httpx.AsyncBaseTransport | None = None) -> HttpCloudDirectory:
    return HttpCloudDirectory(server.url, server.client_id, server.client_secret, transport=transport)


def shape(outcome: BatchOutcome | Applied) -> tuple[str, bool, dict[str, Any]] | None:
    """What must agree between the paths (cloud ids differ between two clouds)."""
    if outcome is None:
        return None
    assert isinstance(outcome, Applied), outcome
    return (outcome.effect, outcome.replayed, outcome.details)


def audit_keys(server: CloudServer) -> list[str]:
    with httpx.Client(base_url=server.url, headers=server.auth_headers(), timeout=10) as c:
        items = c.get("/v1/audit", params={"limit": 1000}).json()["items"]
    return [i["idempotency_key"] for i in items if str(i.get("idempotency_key", "")).startswith("op-")]


async def test_batched_multi_step_operations_match_the_one_at_a_time_path(
    two_clouds: tuple[CloudServer, CloudServer],
) -> None:
    alone_server, batched_server = two_clouds
    ops = workload()

    alone = adapter(alone_server)
    one_by_one = [await alone.apply(op) for op in ops]
    await alone.aclose()

    counting = CountingTransport()
    batched = adapter(batched_server, counting)
    assert all(batched.batchable(op) for op in ops)
    outcomes = await batched.apply_batch(ops)

    # u5 (new and inactive) needs the create's answer before it can deactivate: applied alone
    assert outcomes[7] is None
    outcomes[7] = await batched.apply(ops[7])
    assert [shape(o) for o in outcomes] == [shape(o) for o in one_by_one]
    effects = {op.entity_id: shape(o)[0] for op, o in zip(ops, outcomes, strict=True)}  # type: ignore[index]
    assert effects == {
        "u1": "created", "u2": "linked", "c1": "linked", "c2": "created", "u3": "deactivated",
        "u9": "noop", "u4": "reactivated", "u5": "created+deactivated", "business:role:Regnskap": "published",
    }  # fmt: skip
    assert shape(outcomes[2])[2] == {"review": ["country", "name"]}  # type: ignore[index]
    # look-ups in one request, then one round per write of the longest operation (u2: link, update)
    batch_calls = [
        c for c in counting.calls[: counting.calls.index("GET /v1/users")] if c == "POST /v1/batch"
    ]
    assert len(batch_calls) == 3, counting.calls
    # the same idempotency keys on both paths, each with one effect
    assert sorted(audit_keys(batched_server)) == sorted(audit_keys(alone_server))
    first_run = audit_keys(batched_server)
    assert len(first_run) == len(set(first_run))

    # a re-run (a redelivery after a crash): no idempotency key has a second effect; what is
    # left to do is done under its own key (c1, linked, is now updated: "linked → update")
    again = await batched.apply_batch(ops)
    await batched.aclose()
    assert all(isinstance(o, Applied) for o in again), again
    assert {op.entity_id: o.effect for op, o in zip(ops, again, strict=True) if isinstance(o, Applied)} == {
        "u1": "noop", "u2": "noop", "c1": "updated", "c2": "noop", "u3": "deactivated",
        "u9": "noop", "u4": "noop", "u5": "noop", "business:role:Regnskap": "published",
    }  # fmt: skip
    assert again[4].replayed and again[8].replayed  # type: ignore[union-attr]
    after = audit_keys(batched_server)
    assert len(after) == len(set(after)) and set(after) - set(first_run) == {"op-c1:update"}
    # the cloud now has each directory object once
    with httpx.Client(base_url=batched_server.url, headers=batched_server.auth_headers()) as c:
        by_org = c.get("/v1/companies", params={"organisation_number": "923609016"}).json()["items"]
        assert [co["external_id"] for co in by_org] == ["c1"]
        kari = c.get("/v1/users", params={"email": "kari.lie@fjord.no"}).json()["items"]
        assert [(u["external_id"], u["first_name"]) for u in kari] == [("u2", "Kari")]


def assign(uid: str, cloud_company_id: str | None) -> AssignAccess:
    """An assignment the planner sent right behind its user's upsert: no cloud user id."""
    op = access_op(7, uid=uid, company="c2", cloud_user=None, cloud_company=cloud_company_id)
    assert isinstance(op, AssignAccess)
    return op.model_copy(update={"operation_id": f"op-a-{uid}"})  # audit_keys: the "op-" keys


async def test_an_assignment_behind_its_users_upsert_finds_the_user_by_external_id(
    two_clouds: tuple[CloudServer, CloudServer],
) -> None:
    """Both paths: the user its upsert created is assigned (under the id the upsert's answer
    told this sink, or, by a sink that did not apply it, found by external id); the user
    whose upsert was refused (a conflict) is not — *unresolved*, nothing written, so that the
    planner parks it again — never the cloud user that has its e-mail."""
    for server, batched in zip(two_clouds, (False, True), strict=True):
        cloud = adapter(server)
        catalogue = workload()[-1]
        first = [user("u1", "ny.bruker@fjord.no"), user("u7", "per@fjord.no")]
        first += [company("c2", "974760673", "N"), catalogue]
        done = await cloud.apply_batch(first) if batched else [await cloud.apply(op) for op in first]
        effects = [o.effect for o in done if isinstance(o, Applied)]
        assert effects == ["created", "conflict", "created", "published"]
        created, company_id = done[0], done[2]
        assert isinstance(created, Applied) and isinstance(company_id, Applied)
        behind = [assign("u1", company_id.cloud_id), assign("u7", company_id.cloud_id)]
        assert all(cloud.batchable(op) for op in behind)
        out = await cloud.apply_batch(behind) if batched else [await cloud.apply(op) for op in behind]
        assert out[0] == Applied("assigned", created.cloud_id, False)
        assert isinstance(out[1], Applied) and (out[1].effect, out[1].cloud_id) == (UNRESOLVED, None)
        again = await cloud.apply_batch(behind) if batched else [await cloud.apply(op) for op in behind]
        assert again[0] == Applied("assigned", created.cloud_id, True), "the same key: replayed"
        await cloud.aclose()
        # a sink that did not apply the upserts (a restart, another worker) looks the users up
        fresh = adapter(server)
        looked_up = await fresh.apply_batch(behind) if batched else [await fresh.apply(op) for op in behind]
        assert looked_up[0] == Applied("assigned", created.cloud_id, True)
        assert isinstance(looked_up[1], Applied) and (looked_up[1].effect, looked_up[1].cloud_id) == (
            UNRESOLVED,
            None,
        )
        await fresh.aclose()
        with httpx.Client(base_url=server.url, headers=server.auth_headers(), timeout=10) as c:
            access = c.get(f"/v1/users/{created.cloud_id}/access/{company_id.cloud_id}").json()
            assert access["services"]["business"]["roles"] == ["Regnskap"]
            per = c.get("/v1/users", params={"email": "per@fjord.no"}).json()["items"]
            assert [u["external_id"] for u in per] == ["u3"]
            assert c.get(f"/v1/users/{per[0]['id']}/access/{company_id.cloud_id}").status_code == 404
        keys = audit_keys(server)
        assert "op-a-u1" in keys and "op-a-u7" not in keys and len(keys) == len(set(keys))


async def test_a_remembered_user_gone_from_the_cloud_is_looked_up_again(
    two_clouds: tuple[CloudServer, CloudServer],
) -> None:
    """Both paths: the sink remembers the cloud id its own upsert told it (``KnownUsers``), and
    that cloud user goes away before the assignment behind the upsert is written (here the
    whole cloud is wiped: ``POST /admin/reset``). The write answers 404; the sink looks the
    user up by external id as if it had never known it — *unresolved* when no cloud user is
    linked to it (the planner parks it again), never a dead letter; written to the cloud user
    linked to it now (created again by someone else), under the same key, when there is one."""

    async def apply(
        cloud: HttpCloudDirectory, batched: bool, ops: list[CloudOperation]
    ) -> list[BatchOutcome]:
        return await cloud.apply_batch(ops) if batched else [await cloud.apply(op) for op in ops]

    for server, batched in zip(two_clouds, (False, True), strict=True):
        cloud = adapter(server)
        catalogue = workload()[-1]
        upserts = [user("u1", "ny.bruker@fjord.no"), user("u5", "eva@fjord.no")]
        done = await apply(cloud, batched, [*upserts, company("c2", "974760673", "N"), catalogue])
        assert [o.effect for o in done if isinstance(o, Applied)] == ["created"] * 3 + ["published"]
        assert len(cloud.known_users) == 2, "both users' cloud ids remembered"
        server.reset()
        # the company and the catalogue entry again (new ids); u5's user again, by another writer
        again = await apply(cloud, batched, [company("c2", "974760673", "N"), catalogue])
        company_id = again[0]
        assert isinstance(company_id, Applied) and company_id.cloud_id is not None
        with httpx.Client(base_url=server.url, headers=server.auth_headers(), timeout=10) as c:
            eva = c.post("/v1/users", json={"external_id": "u5", "email": "eva@fjord.no"})
            eva.raise_for_status()
        behind = [assign("u1", company_id.cloud_id), assign("u5", company_id.cloud_id)]
        out = await apply(cloud, batched, behind)
        assert isinstance(out[0], Applied) and (out[0].effect, out[0].cloud_id) == (UNRESOLVED, None)
        assert out[1] == Applied("assigned", eva.json()["id"], False)
        await cloud.aclose()
        with httpx.Client(base_url=server.url, headers=server.auth_headers(), timeout=10) as c:
            access = c.get(f"/v1/users/{eva.json()['id']}/access/{company_id.cloud_id}").json()
            assert access["services"]["business"]["roles"] == ["Regnskap"]
        keys = audit_keys(server)
        assert "op-a-u5" in keys and "op-a-u1" not in keys and len(keys) == len(set(keys))
