"""The one-at-a-time path of multi-step operations over ``httpx.MockTransport`` (no socket).

Each test scripts the cloud's answers and pins what the adapter sends, in order, with its
idempotency keys: the keys must never change (a replay after an upgrade must hit the keys the
first attempt used), and the paths only the one-at-a-time path takes (a create answered 409,
a new inactive user, a known-id PATCH that found the user unlinked or (in)active) are checked
here rather than against the reference cloud, which rarely produces them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from schemas.directory import EntityType
from schemas.operations import DeactivateUser, UpsertCompany, UpsertUser
from sinks.errors import CloudRejected
from sinks.http_cloud import HttpCloudDirectory
from sinks.ports import Applied
from tests.factories import company_upsert

T = datetime(2026, 11, 27, 12, tzinfo=UTC)
COMMON: dict[str, Any] = {"source_version": 3, "source_committed_at": T, "planned_at": T}
REPLAYED = {"Idempotent-Replayed": "true"}

Answer = tuple[int, Any] | tuple[int, Any, dict[str, str]]


def upsert_user(cloud_id: str | None = None, active: bool = True) -> UpsertUser:
    return UpsertUser(
        operation_id="op-u", aggregate="user:u1", entity=EntityType.USER, entity_id="u1",
        cloud_id=cloud_id, username="kari", email="kari@fjord.no", first_name="Kari",
        last_name="Ødegård", language="nb", active=active, **COMMON,
    )  # fmt: skip


def upsert_company() -> UpsertCompany:
    return company_upsert(operation_id="op-c", **COMMON)


def deactivate_user(cloud_id: str | None = None) -> DeactivateUser:
    return DeactivateUser(
        operation_id="op-d", aggregate="user:u1", entity=EntityType.USER, entity_id="u1",
        cloud_id=cloud_id, email="kari@fjord.no", **COMMON,
    )  # fmt: skip


def kari(**changes: Any) -> dict[str, Any]:
    """The cloud's copy of the directory user of :func:`upsert_user`, linked and up to date."""
    return {
        "id": "cu-9", "external_id": "u1", "username": "kari", "email": "kari@fjord.no",
        "first_name": "Kari", "last_name": "Ødegård", "language": "nb", "active": True, **changes,
    }  # fmt: skip


def items(*found: dict[str, Any]) -> Answer:
    return 200, {"items": list(found)}


class ScriptedCloud:
    """Answers each request with the next scripted answer, after checking it is the request
    the script expects; records (request, idempotency key, body) of everything sent."""

    def __init__(self, script: list[tuple[str, Answer]]) -> None:
        self.script = list(script)
        self.sent: list[tuple[str, str | None]] = []
        self.bodies: list[Any] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
        query = "&".join(f"{k}={v}" for k, v in request.url.params.multi_items())
        line = f"{request.method} {request.url.path}" + (f"?{query}" if query else "")
        self.sent.append((line, request.headers.get("idempotency-key")))
        self.bodies.append(json.loads(request.content) if request.content else None)
        assert self.script, f"unexpected request {line}"
        expected, answer = self.script.pop(0)
        assert line == expected, f"sent {line}, expected {expected}"
        status, body, *headers = answer
        return httpx.Response(status, json=body, headers=headers[0] if headers else {})


async def apply(script: list[tuple[str, Answer]], op: Any) -> tuple[Applied, ScriptedCloud]:
    cloud = ScriptedCloud(script)
    adapter = HttpCloudDirectory("http://cloud", "c", "s", transport=httpx.MockTransport(cloud))
    try:
        applied = await adapter.apply(op)
    finally:
        await adapter.aclose()
    assert not cloud.script, f"requests never sent: {cloud.script}"
    return applied, cloud


async def test_a_known_user_is_found_by_external_id_without_an_e_mail_look_up() -> None:
    applied, cloud = await apply(
        [
            ("GET /v1/users?external_id=u1", items(kari(first_name="Kari Anne", active=False))),
            ("PATCH /v1/users/cu-9", (200, kari(active=False), REPLAYED)),
            ("POST /v1/users/cu-9/reactivate", (200, kari(), REPLAYED)),
        ],
        upsert_user(),
    )
    assert applied == Applied("updated+reactivated", "cu-9", True)
    assert [key for _, key in cloud.sent] == [None, "op-u:update", "op-u:reactivate"]
    assert cloud.bodies[1] == {
        "username": "kari", "email": "kari@fjord.no", "first_name": "Kari", "last_name": "Ødegård",
        "language": "nb",
    }  # fmt: skip


async def test_a_user_up_to_date_costs_one_look_up() -> None:
    applied, cloud = await apply([("GET /v1/users?external_id=u1", items(kari()))], upsert_user())
    assert applied == Applied("noop", "cu-9", False)
    assert len(cloud.sent) == 1


async def test_a_user_matched_by_e_mail_is_linked_then_updated() -> None:
    applied, cloud = await apply(
        [
            ("GET /v1/users?external_id=u1", items()),
            ("GET /v1/users?email=kari@fjord.no", items(kari(external_id=None, first_name="K"))),
            ("POST /v1/users/cu-9/link", (200, kari(first_name="K"))),
            ("PATCH /v1/users/cu-9", (200, kari())),
        ],
        upsert_user(),
    )
    assert applied == Applied("linked", "cu-9", False)
    assert [key for _, key in cloud.sent[2:]] == ["op-u:link", "op-u:update"]
    assert cloud.bodies[2] == {"external_id": "u1"}


async def test_a_new_user_is_created_under_the_create_key() -> None:
    applied, cloud = await apply(
        [
            ("GET /v1/users?external_id=u1", items()),
            ("GET /v1/users?email=kari@fjord.no", items()),
            ("POST /v1/users", (201, kari(id="cu-new"), REPLAYED)),
        ],
        upsert_user(),
    )
    assert applied == Applied("created", "cu-new", True)
    assert cloud.sent[2] == ("POST /v1/users", "op-u:create")
    assert cloud.bodies[2] == {
        "external_id": "u1", "username": "kari", "email": "kari@fjord.no", "first_name": "Kari",
        "last_name": "Ødegård", "language": "nb",
    }  # fmt: skip


async def test_a_new_inactive_user_is_created_then_deactivated() -> None:
    applied, cloud = await apply(
        [
            ("GET /v1/users?external_id=u1", items()),
            ("GET /v1/users?email=kari@fjord.no", items()),
            ("POST /v1/users", (201, kari(id="cu-new"))),
            ("POST /v1/users/cu-new/deactivate", (200, kari(id="cu-new", active=False))),
        ],
        upsert_user(active=False),
    )
    assert applied == Applied("created+deactivated", "cu-new", False)
    assert [key for _, key in cloud.sent[2:]] == ["op-u:create", "op-u:deactivate"]


async def test_a_user_created_meanwhile_is_matched_by_e_mail_and_linked() -> None:
    """409 on the create: the user of that e-mail address is ours (created meanwhile by us or
    someone else); the 409 does not count for ``replayed``."""
    applied, cloud = await apply(
        [
            ("GET /v1/users?external_id=u1", items()),
            ("GET /v1/users?email=kari@fjord.no", items()),
            ("POST /v1/users", (409, {"error": "conflict"})),
            ("GET /v1/users?external_id=u1", items()),
            ("GET /v1/users?email=kari@fjord.no", items(kari(active=False))),
            ("POST /v1/users/cu-9/link", (200, kari(active=False), REPLAYED)),
            ("POST /v1/users/cu-9/reactivate", (200, kari(), REPLAYED)),
        ],
        upsert_user(),
    )
    assert applied == Applied("linked+reactivated", "cu-9", True)
    assert [key for _, key in cloud.sent[2:]] == ["op-u:create", None, None, "op-u:link", "op-u:reactivate"]


async def test_a_user_created_meanwhile_under_our_external_id_is_updated_not_rejected() -> None:
    """409 because another worker (a replay, a rebalance) created the user under our external
    id, with the e-mail of an older version: found by external id, updated to this version."""
    older = kari(email="kari.old@fjord.no")
    applied, cloud = await apply(
        [
            ("GET /v1/users?external_id=u1", items()),
            ("GET /v1/users?email=kari@fjord.no", items()),
            (
                "POST /v1/users",
                (409, {"error": "conflict", "description": "a user is linked to this external id"}),
            ),
            ("GET /v1/users?external_id=u1", items(older)),
            ("PATCH /v1/users/cu-9", (200, kari())),
        ],
        upsert_user(),
    )
    assert applied == Applied("updated", "cu-9", False)
    assert [key for _, key in cloud.sent[2:]] == ["op-u:create", None, "op-u:update"]


async def test_a_create_conflict_without_a_match_is_rejected() -> None:
    with pytest.raises(CloudRejected) as raised:
        await apply(
            [
                ("GET /v1/users?external_id=u1", items()),
                ("GET /v1/users?email=kari@fjord.no", items()),
                ("POST /v1/users", (409, {"error": "conflict"})),
                ("GET /v1/users?external_id=u1", items()),
                ("GET /v1/users?email=kari@fjord.no", items()),
            ],
            upsert_user(),
        )
    assert raised.value.status == 409 and "u1" in str(raised.value)


async def test_a_known_id_patch_that_finds_the_user_unlinked_links_and_reactivates() -> None:
    """The known-id PATCH answered with the user, whose external id and active flag differ:
    the operation goes on from that answer (no look-up, no second update)."""
    applied, cloud = await apply(
        [
            ("PATCH /v1/users/cu-9", (200, kari(external_id=None, active=False), REPLAYED)),
            ("POST /v1/users/cu-9/link", (200, kari(active=False), REPLAYED)),
            ("POST /v1/users/cu-9/reactivate", (200, kari(), REPLAYED)),
        ],
        upsert_user(cloud_id="cu-9"),
    )
    assert applied == Applied("updated+linked+reactivated", "cu-9", True)
    assert [key for _, key in cloud.sent] == ["op-u:update", "op-u:link", "op-u:reactivate"]


async def test_a_stale_known_user_id_falls_back_to_the_look_ups() -> None:
    applied, cloud = await apply(
        [
            ("PATCH /v1/users/gone", (404, {"error": "not_found"})),
            ("GET /v1/users?external_id=u1", items(kari())),
        ],
        upsert_user(cloud_id="gone"),
    )
    assert applied == Applied("noop", "cu-9", False)
    assert cloud.sent[0] == ("PATCH /v1/users/gone", "op-u:update")


async def test_deactivate_user_resolves_then_deactivates_under_the_operation_id() -> None:
    applied, cloud = await apply(
        [
            ("POST /v1/users/gone/deactivate", (404, {"error": "not_found"})),
            ("GET /v1/users?external_id=u1", items(kari(external_id="u1"))),
            ("POST /v1/users/cu-9/deactivate", (200, kari(active=False), REPLAYED)),
        ],
        deactivate_user(cloud_id="gone"),
    )
    assert applied == Applied("deactivated", "cu-9", True)
    assert [key for _, key in cloud.sent] == ["op-d", None, "op-d"]
    gone, _ = await apply(
        [("GET /v1/users?external_id=u1", items()), ("GET /v1/users?email=kari@fjord.no", items())],
        deactivate_user(),
    )
    assert gone == Applied("noop", None, False, {"reason": "no cloud user is linked to this user"})


async def test_a_deactivation_never_deactivates_whoever_has_the_e_mail() -> None:
    """The mistake it prevents: a deletion on premise, with no link known, deactivated the cloud
    user that happened to have the same e-mail (not linked, or linked to someone else)."""
    for stranger in (kari(external_id=None), kari(external_id="u77")):
        applied, cloud = await apply(
            [
                ("GET /v1/users?external_id=u1", items()),
                ("GET /v1/users?email=kari@fjord.no", items(stranger)),
            ],
            deactivate_user(),
        )
        assert applied.effect == "noop" and "left alone" in applied.details["reason"]
        assert not any("deactivate" in line for line, _ in cloud.sent)


async def test_a_company_created_meanwhile_is_linked_with_its_differences_for_review() -> None:
    other = {"id": "cc-7", "external_id": None, "name": "Fjord Regnskap AS", "organisation_number":
             "923609016", "country": "SE", "status": "active"}  # fmt: skip
    applied, cloud = await apply(
        [
            ("GET /v1/companies?external_id=c1", items()),
            ("GET /v1/companies?organisation_number=923609016", items()),
            ("POST /v1/companies", (409, {"error": "conflict"})),
            ("GET /v1/companies?external_id=c1", items()),
            ("GET /v1/companies?organisation_number=923609016", items(other)),
            ("POST /v1/companies/cc-7/link", (200, {**other, "external_id": "c1"})),
        ],
        upsert_company(),
    )
    assert applied == Applied("linked", "cc-7", False, {"review": ["country", "name"]})
    assert [key for _, key in cloud.sent] == [None, None, "op-c:create", None, None, "op-c:link"]


async def test_a_known_company_is_updated_or_left_alone() -> None:
    mine = {"id": "cc-1", "external_id": "c1", "name": "Fjord AS", "organisation_number": "923609016",
            "country": "NO", "status": "active"}  # fmt: skip
    same, cloud = await apply([("GET /v1/companies?external_id=c1", items(mine))], upsert_company())
    assert same == Applied("noop", "cc-1", False)
    updated, cloud = await apply(
        [
            ("GET /v1/companies?external_id=c1", items({**mine, "name": "Fjord"})),
            ("PATCH /v1/companies/cc-1", (200, mine)),
        ],
        upsert_company(),
    )
    assert updated == Applied("updated", "cc-1", False)
    assert cloud.sent[-1] == ("PATCH /v1/companies/cc-1", "op-c:update")
    created, cloud = await apply(
        [
            ("GET /v1/companies?external_id=c1", items()),
            ("GET /v1/companies?organisation_number=923609016", items()),
            ("POST /v1/companies", (201, {**mine, "id": "cc-new"})),
        ],
        upsert_company(),
    )
    assert created == Applied("created", "cc-new", False)
    assert cloud.sent[-1] == ("POST /v1/companies", "op-c:create")
