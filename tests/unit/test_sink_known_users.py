"""The sink's memory of the users it has just upserted or found (:class:`sinks.writes.KnownUsers`):
an assignment sent behind its user's upsert skips the look-up by external id only when this
sink's own upsert or look-up of that very user told its cloud id; otherwise it looks up as
before, and a user with no cloud user linked stays *unresolved*."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from schemas.directory import EntityType
from schemas.operations import AssignAccess, CloudOperation, DeactivateUser
from sinks.errors import CloudRejected, CloudUnavailable
from sinks.http_cloud import HttpCloudDirectory
from sinks.ports import Applied
from sinks.writes import CONFLICT, UNRESOLVED, KnownUsers, learned_user, resolves_user, with_user
from tests.factories import access_op, planned, user_upsert


def behind(uid: str = "u1", op_id: str | None = None) -> AssignAccess:
    """An assignment the planner sent right behind its user's upsert: no cloud user id."""
    op = access_op(3, uid=uid, cloud_user=None, cloud_company="cc-1")
    assert isinstance(op, AssignAccess) and resolves_user(op)
    return op if op_id is None else op.model_copy(update={"operation_id": op_id})


def deactivation(uid: str) -> DeactivateUser:
    return DeactivateUser(**planned(EntityType.USER, uid, 4, f"op-d-{uid}"), email=f"{uid}@fjord.no")


def test_what_an_outcome_teaches_about_its_users_cloud_id() -> None:
    upsert = user_upsert("u1")
    assert learned_user(upsert, Applied("created", "cu-1")) == ("u1", "cu-1")
    assert learned_user(upsert, Applied("noop", "cu-1")) == ("u1", "cu-1")
    # a refused match, an error, an unfinished upsert: forget whatever was known
    refused = Applied(CONFLICT, None, details={"conflict": "linked_to_another"})
    assert learned_user(upsert, refused) == ("u1", None)
    assert learned_user(upsert, CloudUnavailable("503", reason="server_error")) == ("u1", None)
    assert learned_user(upsert, None) == ("u1", None)
    assert learned_user(deactivation("u1"), Applied("deactivated", "cu-1")) == ("u1", None)
    # an assignment behind: written under the id its look-up found, or nothing learned
    assert learned_user(behind(), Applied("assigned", "cu-1")) == ("u1", "cu-1")
    assert learned_user(behind(), Applied(UNRESOLVED, None)) == ("u1", None)
    assert learned_user(behind(), CloudRejected("404", status=404, excerpt="")) == ("u1", None)
    # the planner's own knowledge is not this sink's: an assignment with its cloud ids teaches nothing
    assert learned_user(access_op(3), Applied("assigned", "cu-1")) is None


def test_known_users_hold_only_what_was_learned_for_that_exact_external_id() -> None:
    known = KnownUsers(limit=2, max_age=30.0)
    assert known.resolve(behind("u1"), 0.0) is None  # nothing learned: look it up
    known.learn(user_upsert("u1"), Applied("created", "cu-1"), 0.0)
    resolved = known.resolve(behind("u1"), 1.0)
    assert resolved is not None and resolved.cloud_user_id == "cu-1"
    assert resolved == with_user(behind("u1"), {"id": "cu-1"}), "the same operation as after a look-up"
    assert known.resolve(behind("u10"), 1.0) is None and known.resolve(behind("U1"), 1.0) is None
    known.learn(user_upsert("u1"), Applied(CONFLICT, None), 2.0)  # linked no more: forgotten
    assert known.resolve(behind("u1"), 2.0) is None
    # bounded: the least recently learned goes first
    for uid in ("u1", "u2", "u3"):
        known.learn(user_upsert(uid), Applied("created", f"cu-{uid}"), 3.0)
    assert len(known) == 2 and known.resolve(behind("u1"), 3.0) is None
    assert known.resolve(behind("u3"), 3.0) is not None
    # and in age: an id learned longer ago than max_age is looked up again, then dropped
    assert known.resolve(behind("u3"), 33.0) is not None and known.resolve(behind("u3"), 33.1) is None
    known.learn(user_upsert("u4"), Applied("created", "cu-u4"), 40.0)
    assert len(known) == 1 and known.resolve(behind("u4"), 40.0) is not None


class Cloud:
    """The cloud's answers to a user ``u1`` (cloud id cu-1) and its access in cc-1; ``linked``:
    whether a look-up by external id finds it. Records every request (a batch's items too)."""

    def __init__(self, *, linked: bool = True) -> None:
        self.linked = linked
        self.failing = False  # the user's PATCH answers 503
        self.requests: list[str] = []

    def answer(self, method: str, target: str) -> tuple[int, Any]:
        self.requests.append(f"{method} {target}")
        url = urlsplit(target)
        if method == "GET" and url.path == "/v1/users":
            assert parse_qs(url.query) == {"external_id": ["u1"]}
            return 200, {"items": [{"id": "cu-1", "external_id": "u1"}] if self.linked else []}
        if method == "PATCH" and url.path == "/v1/users/cu-1":
            if self.failing:
                return 503, {"error": "injected_fault"}
            return 200, {"id": "cu-1", "external_id": "u1", "active": True}
        if method == "PUT" and url.path == "/v1/users/cu-1/access/cc-1":
            return 200, {}
        return 404, {"error": "not_found"}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
        if request.url.path == "/v1/batch":
            self.requests.append("batch")
            answers = []
            for item in json.loads(request.content)["requests"]:
                status, body = self.answer(item["method"], item["path"])
                answers.append({"status": status, "body": body, "headers": {}})
            return httpx.Response(200, json={"responses": answers})
        target = request.url.path + (f"?{request.url.query.decode()}" if request.url.query else "")
        status, body = self.answer(request.method, target)
        return httpx.Response(status, json=body)


async def apply(cloud: HttpCloudDirectory, ops: list[CloudOperation], batched: bool) -> list[Any]:
    return await cloud.apply_batch(ops) if batched else [await cloud.apply(op) for op in ops]


@pytest.mark.parametrize("batched", [False, True])
async def test_an_assignment_behind_the_upsert_this_sink_applied_is_not_looked_up(batched: bool) -> None:
    fake = Cloud()
    cloud = HttpCloudDirectory("http://cloud", "c", "s", transport=httpx.MockTransport(fake))
    (updated,) = await apply(cloud, [user_upsert("u1", cloud_id="cu-1")], batched)
    assert isinstance(updated, Applied) and updated.cloud_id == "cu-1"
    fake.requests.clear()
    out = await apply(cloud, [behind("u1")], batched)
    assert out == [Applied("assigned", "cu-1", False)]
    assert not any(r.startswith("GET /v1/users") for r in fake.requests), "no look-up"
    assert [r for r in fake.requests if r != "batch"] == ["PUT /v1/users/cu-1/access/cc-1?scope=directory"]
    await cloud.aclose()


@pytest.mark.parametrize("batched", [False, True])
async def test_without_its_own_answer_the_sink_looks_the_user_up_unresolved_if_none(batched: bool) -> None:
    fake = Cloud(linked=False)
    cloud = HttpCloudDirectory("http://cloud", "c", "s", transport=httpx.MockTransport(fake))
    # nothing learned yet: looked up, none linked → unresolved, nothing written
    (out,) = await apply(cloud, [behind("u1")], batched)
    assert isinstance(out, Applied) and (out.effect, out.cloud_id) == (UNRESOLVED, None)
    assert [r for r in fake.requests if r != "batch"] == ["GET /v1/users?external_id=u1"]
    # a look-up that found the user teaches its id: the next assignment of u1 goes at once
    fake.linked = True
    (first,) = await apply(cloud, [behind("u1", "op-a")], batched)
    assert first == Applied("assigned", "cu-1", False)
    fake.requests.clear()
    (second,) = await apply(cloud, [behind("u1", "op-b")], batched)
    assert second == Applied("assigned", "cu-1", False)
    assert not any(r.startswith("GET") for r in fake.requests)
    # the user's upsert ends in an error: forgotten, the next assignment looks it up again
    fake.failing = True
    if batched:
        (failed,) = await cloud.apply_batch([user_upsert("u1", cloud_id="cu-1")])
        assert isinstance(failed, CloudUnavailable)
    else:
        with pytest.raises(CloudUnavailable):
            await cloud.apply(user_upsert("u1", cloud_id="cu-1"))
    fake.failing = False
    fake.requests.clear()
    (third,) = await apply(cloud, [behind("u1", "op-c")], batched)
    assert third == Applied("assigned", "cu-1", False)
    assert "GET /v1/users?external_id=u1" in fake.requests
    await cloud.aclose()
