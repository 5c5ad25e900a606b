"""Operations as writes and answers as outcomes (pure), and the httpx adapter's error
translation with ``httpx.MockTransport`` (no socket)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from schemas.directory import ApplicationType, EntityType, ServiceAccess
from schemas.operations import (
    AssignAccess,
    DeactivateUser,
    RevokeAccess,
    RevokeAccessEntry,
    UpsertCatalogueEntry,
    UpsertUser,
)
from sinks.errors import AuthenticationFailed, CloudRejected, CloudUnavailable, RateLimited
from sinks.http_cloud import HttpCloudDirectory
from sinks.policy import SinkPolicy, Step
from sinks.ports import Applied
from sinks.writes import (
    KEPT_CHANGED_SINCE_READ,
    Steps,
    Write,
    access_write,
    create_steps,
    entry_revoke,
    error_for,
    excerpt,
    interpret,
    lookups,
    simple_write,
    steps_after_create,
    steps_after_lookup,
    steps_after_patch,
    user_fields,
)
from tests.factories import company_upsert, in_company, planned

T = datetime(2026, 11, 27, 12, tzinfo=UTC)
COMMON: dict[str, Any] = {
    "source_version": 3,
    "source_committed_at": T,
    "planned_at": T,
}


def assign(op_id: str = "op-1", role: str = "Regnskap") -> AssignAccess:
    return AssignAccess(
        **planned(EntityType.USER, "u1", 3, op_id, T),
        **in_company(),
        services={ApplicationType.BUSINESS: ServiceAccess(roles=(role,))},
    )


def upsert_user(cloud_id: str | None = "cu-1", active: bool = True) -> UpsertUser:
    return UpsertUser(
        **planned(EntityType.USER, "u1", 3, "op-u", T),
        cloud_id=cloud_id,
        username="kari",
        email="kari@fjord.no",
        first_name="Kari",
        last_name="Ødegård",
        language="nb",
        active=active,
    )


def test_simple_operations_map_to_one_idempotent_write() -> None:
    write = simple_write(assign())
    assert write is not None
    assert (write.method, write.path, write.key) == (
        "PUT",
        "/v1/users/cu-1/access/cc-1?scope=directory",
        "op-1",
    )
    assert write.body == {
        "services": {"business": {"roles": ["Regnskap"], "layout_groups": [], "modules": []}}
    }
    entry = UpsertCatalogueEntry(
        operation_id="op-c",
        aggregate="role:business:Lønn & HR",
        entity=EntityType.ROLE,
        entity_id="business:Lønn & HR",
        application=ApplicationType.BUSINESS,
        catalogue="roles",
        name="Lønn & HR/2",
        **COMMON,
    )
    write = simple_write(entry)
    assert write is not None and write.path == "/v1/services/business/roles/L%C3%B8nn%20%26%20HR%2F2"
    user = simple_write(upsert_user())
    assert user is not None and (user.method, user.key) == ("PATCH", "op-u:update")
    assert user.ok_statuses == (404,)


def test_operations_without_a_known_cloud_id_are_multi_step() -> None:
    assert simple_write(upsert_user(cloud_id=None)) is None
    company = company_upsert(operation_id="op-co", organisation_number="974760673", **COMMON)
    assert simple_write(company) is None
    parked = RevokeAccess(
        operation_id="op-r", aggregate="user:u1", entity=EntityType.USER, entity_id="u1",
        user_id="u1", company_id="c1", **COMMON,
    )  # fmt: skip
    assert simple_write(parked) is None


def test_answers_become_outcomes_or_ask_for_the_full_path() -> None:
    assert interpret(assign(), 200, {}, True) == Applied("assigned", "cu-1", True)
    user_body = {"id": "cu-1", "external_id": "u1", "active": True}
    assert interpret(upsert_user(), 200, user_body, False) == Applied("updated", "cu-1", False)
    # stale cloud id, other external id, or the active flag differs: the full path finishes it
    assert interpret(upsert_user(), 404, {"error": "not_found"}, False) is None
    assert interpret(upsert_user(), 200, {**user_body, "external_id": "x"}, False) is None
    assert interpret(upsert_user(active=True), 200, {**user_body, "active": False}, False) is None


@pytest.mark.parametrize(
    ("status", "error", "retry_after"),
    [
        (500, CloudUnavailable, None),
        (503, CloudUnavailable, 2.0),
        (429, RateLimited, 1.0),
        (401, AuthenticationFailed, None),
        (403, AuthenticationFailed, None),
        (422, CloudRejected, None),
        (409, CloudRejected, None),
    ],
)
def test_statuses_are_translated_once(status: int, error: type[Exception], retry_after: float | None) -> None:
    exc = error_for("PUT /v1/x", status, "body", retry_after)
    assert isinstance(exc, error)
    if retry_after is not None:
        assert getattr(exc, "retry_after", None) == retry_after


def test_excerpts_never_carry_secrets() -> None:
    assert excerpt('{"error":"validation_error"}') == '{"error":"validation_error"}'
    assert "withheld" in excerpt('{"client_secret":"hunter2"}')
    assert "withheld" in excerpt('{"license_key": "ABC"}')
    assert len(excerpt("x" * 5000)) == 300


# -- the adapter over a mock transport ------------------------------------------------


class FakeCloud:
    """Answers like the cloud API would; counts requests per path."""

    def __init__(self, *, secret_ok: bool = True, batch_answers: list[dict[str, Any]] | None = None) -> None:
        self.secret_ok = secret_ok
        self.batch_answers = batch_answers
        self.calls: list[str] = []
        self.tokens = 0
        self.reject_token: str | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"{request.method} {request.url.path}")
        if request.url.path == "/oauth/token":
            if not self.secret_ok:
                return httpx.Response(401, json={"error": "invalid_client"})
            self.tokens += 1
            return httpx.Response(200, json={"access_token": f"t{self.tokens}", "expires_in": 3600})
        if request.headers.get("authorization") == f"Bearer {self.reject_token}":
            return httpx.Response(401, json={"error": "invalid_token"})
        if request.url.path == "/v1/batch":
            items = json.loads(request.content)["requests"]
            answers = self.batch_answers or [{"status": 200, "body": {}, "headers": {}} for _ in items]
            return httpx.Response(200, json={"responses": answers})
        if request.url.path.endswith("/access/cc-1"):
            return httpx.Response(200, json={}, headers={"Idempotent-Replayed": "true"})
        return httpx.Response(503, json={"error": "injected_fault"}, headers={"Retry-After": "2"})


def adapter(fake: FakeCloud) -> HttpCloudDirectory:
    return HttpCloudDirectory("http://cloud", "vudsync", "s3cret", transport=httpx.MockTransport(fake))


async def test_a_401_refreshes_the_token_once() -> None:
    fake = FakeCloud()
    cloud = adapter(fake)
    await cloud.apply(assign())
    fake.reject_token = "t1"  # the first token is revoked
    applied = await cloud.apply(assign("op-2"))
    assert applied.replayed and fake.tokens == 2
    assert fake.calls.count("POST /oauth/token") == 2
    await cloud.aclose()


async def test_refused_credentials_are_remembered_no_request_storm() -> None:
    fake = FakeCloud(secret_ok=False)
    cloud = adapter(fake)
    for _ in range(20):
        with pytest.raises(AuthenticationFailed) as raised:
            await cloud.apply(assign())
        assert "s3cret" not in str(raised.value)
        assert raised.value.retry_after is not None and raised.value.retry_after > 0
    assert fake.calls == ["POST /oauth/token"]  # one token request, then the cool-down
    await cloud.aclose()


async def test_server_errors_carry_retry_after() -> None:
    cloud = adapter(FakeCloud())
    with pytest.raises(CloudUnavailable) as raised:
        await cloud.apply(upsert_user())
    assert raised.value.retry_after == 2.0 and raised.value.status == 503
    await cloud.aclose()


async def test_connection_errors_and_timeouts_are_retryable() -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 60})
        raise httpx.ReadTimeout("slow", request=request)

    cloud = HttpCloudDirectory("http://cloud", "c", "s", transport=httpx.MockTransport(boom))
    with pytest.raises(CloudUnavailable) as raised:
        await cloud.apply(assign())
    assert raised.value.reason == "timeout"
    await cloud.aclose()


async def test_batch_items_get_their_own_outcomes() -> None:
    answers = [
        {"status": 200, "body": {}, "headers": {"idempotent-replayed": "true"}},
        {"status": 422, "body": {"error": "unknown_catalogue_entry"}, "headers": {}},
        {"status": 500, "body": {"error": "internal_error"}, "headers": {}},
        {"status": 404, "body": {"error": "not_found"}, "headers": {}},
    ]
    fake = FakeCloud(batch_answers=answers)
    cloud = adapter(fake)
    outcomes = await cloud.apply_batch([assign("a"), assign("b", "Nope"), assign("c"), upsert_user()])
    assert outcomes[0] == Applied("assigned", "cu-1", True)
    assert isinstance(outcomes[1], CloudRejected) and outcomes[1].status == 422
    assert "unknown_catalogue_entry" in outcomes[1].excerpt
    assert isinstance(outcomes[2], CloudUnavailable)
    assert outcomes[3] is None  # stale cloud id: apply it alone, through the full path
    assert fake.calls == ["POST /oauth/token", "POST /v1/batch"]
    await cloud.aclose()


# -- multi-step operations in batched phases ----------------------------------------------


def test_steps_after_lookup_make_the_one_at_a_time_decisions() -> None:
    new = steps_after_lookup(upsert_user(cloud_id=None), None, None)
    assert isinstance(new, Steps) and new.creates and new.effect == "created" and new.cloud_id is None
    assert [(w.method, w.path, w.key) for w in new.writes] == [("POST", "/v1/users", "op-u:create")]
    # new and inactive: the deactivation needs the create's answer, so it is applied alone
    assert steps_after_lookup(upsert_user(cloud_id=None, active=False), None, None) is None
    # matched by e-mail only: link, then update what differs
    cloud_user = {"id": "cu 9", "external_id": None, "email": "kari@fjord.no", "active": True}
    linked = steps_after_lookup(upsert_user(cloud_id=None), None, cloud_user)
    assert isinstance(linked, Steps) and linked.effect == "linked" and linked.cloud_id == "cu 9"
    assert [(w.method, w.path, w.key) for w in linked.writes] == [
        ("POST", "/v1/users/cu%209/link", "op-u:link"),
        ("PATCH", "/v1/users/cu%209", "op-u:update"),
    ]
    same = {"id": "cu-1", "external_id": "u1", "active": True, **user_fields(upsert_user())}
    assert steps_after_lookup(upsert_user(cloud_id=None), same, None) == Applied("noop", "cu-1", False)
    gone = DeactivateUser(
        operation_id="op-d", aggregate="user:u1", entity=EntityType.USER, entity_id="u1",
        email="kari@fjord.no", **COMMON,
    )  # fmt: skip
    assert steps_after_lookup(gone, None, None) == Applied(
        "noop", None, False, {"reason": "no cloud user is linked to this user"}
    )
    company = company_upsert(operation_id="op-co", **COMMON)
    other = {"id": "cc-7", "name": "Fjord Regnskap AS", "country": "NO", "status": "active"}
    link = steps_after_lookup(company, None, other)
    assert isinstance(link, Steps) and link.effect == "linked" and link.details == {"review": ["name"]}
    assert [w.key for w in link.writes] == ["op-co:link"]
    # matching never takes over: linked to another on-premise id, or a customer administrator
    taken = {"id": "cc-8", "external_id": "c9", "name": "Fjord AS", "country": "NO", "status": "active"}
    assert steps_after_lookup(company, None, taken) == Applied(
        "conflict", None, False, {"conflict": "linked_to_another", "cloud_id": "cc-8", "linked_to": "c9"}
    )
    someone = {"id": "cu-5", "external_id": "u9", "email": "kari@fjord.no", "active": True}
    assert steps_after_lookup(upsert_user(cloud_id=None), None, someone) == Applied(
        "conflict", None, False, {"conflict": "linked_to_another", "cloud_id": "cu-5", "linked_to": "u9"}
    )
    admin = {"id": "cu-6", "external_id": None, "email": "kari@fjord.no", "customer_admin": True}
    assert steps_after_lookup(upsert_user(cloud_id=None), None, admin) == Applied(
        "conflict", None, False, {"conflict": "customer_administrator", "cloud_id": "cu-6"}
    )
    assert lookups(company)[1].batch_item() == {
        "method": "GET",
        "path": "/v1/companies?organisation_number=923609016",
    }


def test_the_steps_only_the_one_at_a_time_path_takes() -> None:
    """What only the one-at-a-time path decides: after a create, and after a known-id PATCH
    that found the user unlinked or (in)active. Keys: ``<operation id>:<step>``."""
    inactive = upsert_user(cloud_id=None, active=False)
    create = create_steps(inactive)
    assert create == steps_after_lookup(upsert_user(cloud_id=None), None, None)
    assert create.creates and [(w.method, w.key) for w in create.writes] == [("POST", "op-u:create")]
    created = {
        "id": "cu new",
        "external_id": "u1",
        "active": True,
        **user_fields(inactive),
        "email": "KARI@fjord.no",
    }
    after = steps_after_create(inactive, created)
    # no link, no update (the cloud's normalised e-mail is no reason): only the deactivation
    assert (after.effect, after.cloud_id) == ("created+deactivated", "cu new")
    assert [(w.method, w.path, w.key) for w in after.writes] == [
        ("POST", "/v1/users/cu%20new/deactivate", "op-u:deactivate")
    ]
    assert steps_after_create(upsert_user(cloud_id=None), created) == Steps((), "created", "cu new", {})
    unlinked = {"id": "cu-1", "external_id": None, "active": False}
    patched = steps_after_patch(upsert_user(), unlinked)
    assert patched.effect == "updated+linked+reactivated"
    assert [w.key for w in patched.writes] == ["op-u:link", "op-u:reactivate"]
    assert steps_after_patch(upsert_user(), {**unlinked, "external_id": "u1", "active": True}).writes == ()


async def test_a_failed_step_stops_the_operation_before_its_next_write() -> None:
    """Batched, a multi-step operation's writes go one per round, each only after the one
    before succeeded — as on the one-at-a-time path (no update of a user we could not link)."""
    sent: list[list[str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
        items = json.loads(request.content)["requests"]
        sent.append([f"{i['method']} {i['path']}" for i in items])
        if items[0]["method"] == "GET":  # the look-ups: nothing by id, a user by e-mail
            kari = {"id": "cu-9", "external_id": None, "email": "kari@fjord.no", "active": True}
            answers = [{"status": 200, "body": {"items": []}, "headers": {}},
                       {"status": 200, "body": {"items": [kari]}, "headers": {}}]  # fmt: skip
        else:  # the link is refused: that user is linked to another directory object
            answers = [{"status": 409, "body": {"error": "external_id_taken"}, "headers": {}}]
        return httpx.Response(200, json={"responses": answers})

    cloud = HttpCloudDirectory("http://cloud", "c", "s", transport=httpx.MockTransport(handler))
    (outcome,) = await cloud.apply_batch([upsert_user(cloud_id=None)])
    await cloud.aclose()
    assert isinstance(outcome, CloudRejected) and outcome.status == 409
    assert sent == [
        ["GET /v1/users?external_id=u1", "GET /v1/users?email=kari%40fjord.no"],
        ["POST /v1/users/cu-9/link"],
    ]


def _keeping_reporting(services: dict[ApplicationType, ServiceAccess]) -> AssignAccess:
    return assign().model_copy(update={"services": services, "keep": (ApplicationType.REPORTING,)})


def test_an_assignment_keeping_a_blocked_application_writes_the_cloud_s_part_of_it_back() -> None:
    business = {ApplicationType.BUSINESS: ServiceAccess(roles=("Regnskap",))}
    op = _keeping_reporting(business)
    assert simple_write(op) is None  # it reads the access first: never batched blind
    current = {  # GET …/access/cc-1: Reporting's Analyse is the directory's, Ad hoc an admin's
        "services": {"reporting": {"roles": ["Ad hoc", "Analyse"]}, "business": {"roles": ["Gammel"]}},
        "entries": [
            {"service": "reporting", "kind": "roles", "name": "Analyse", "origin": "directory"},
            {"service": "reporting", "kind": "roles", "name": "Ad hoc", "origin": "cloud"},
            {"service": "business", "kind": "roles", "name": "Gammel", "origin": "directory"},
        ],
    }
    write = access_write(op, current)
    assert (write.method, write.path, write.key) == (
        "PUT",
        "/v1/users/cu-1/access/cc-1?scope=directory",
        "op-1",
    )
    # Business as planned; Reporting's directory part as the cloud has it (the admin's entry
    # the cloud keeps by itself under scope=directory: not claimed for the directory)
    assert write.body == {
        "services": {
            "business": {"roles": ["Regnskap"], "layout_groups": [], "modules": []},
            "reporting": {"roles": ["Analyse"]},
        }
    }
    # nothing of Reporting in the cloud: nothing of it is written (the planner's part is not sent)
    with_reporting = _keeping_reporting(business | {ApplicationType.REPORTING: ServiceAccess(roles=("X",))})
    assert set(access_write(with_reporting, {}).body["services"]) == {"business"}
    # nothing left at all: a revoke of the rest, 404 included
    emptied = access_write(_keeping_reporting({}), {})
    assert (emptied.method, emptied.ok_statuses) == ("DELETE", (404,))


async def test_an_assignment_keeping_an_application_reads_the_access_then_writes_it() -> None:
    sent: list[tuple[str, str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
        body = json.loads(request.content) if request.content else None
        sent.append((request.method, request.url.path, body))
        if request.method == "GET":
            entry = {"service": "reporting", "kind": "roles", "name": "Analyse", "origin": "directory"}
            services = {"reporting": {"roles": ["Analyse"]}}
            return httpx.Response(200, json={"services": services, "entries": [entry], "version": 4})
        return httpx.Response(200, json={"services": body["services"], "version": 5})

    cloud = HttpCloudDirectory("http://cloud", "c", "s", transport=httpx.MockTransport(handler))
    applied = await cloud.apply(
        _keeping_reporting({ApplicationType.BUSINESS: ServiceAccess(roles=("Lønn",))})
    )
    await cloud.aclose()
    assert applied.effect == "assigned"
    assert [(m, p) for m, p, _ in sent] == [
        ("GET", "/v1/users/cu-1/access/cc-1"),
        ("PUT", "/v1/users/cu-1/access/cc-1"),
    ]
    assert sent[1][2]["services"]["reporting"] == {"roles": ["Analyse"]}
    assert sent[1][2]["services"]["business"]["roles"] == ["Lønn"]


def revoke_entry(name: str = "Lønn & HR", **kw: Any) -> RevokeAccessEntry:
    fields = {
        **planned(EntityType.USER, "u1", 3, "op-e", T),
        **in_company(),
        "application": ApplicationType.BUSINESS,
        "catalogue": "roles",
        "name": name,
    }
    return RevokeAccessEntry(**(fields | kw))


def test_an_entry_revoked_on_premise_is_one_delete_of_that_entry_alone() -> None:
    revoke = revoke_entry()
    write = simple_write(revoke)
    assert write is not None
    assert (write.method, write.path, write.key, write.body) == (
        "DELETE",
        "/v1/users/cu-1/access/cc-1/business/roles/L%C3%B8nn%20%26%20HR",
        "op-e",
        None,
    )
    assert interpret(revoke, 200, {}, False) == Applied("revoked", "cu-1", False)
    assert simple_write(revoke.model_copy(update={"cloud_company_id": None})) is None  # parked until known


def test_a_per_entry_revoke_yields_to_a_later_change_of_the_entry_in_the_cloud() -> None:
    """The conflict rule at the last moment: the removal on premise (at ``unless_changed_after``)
    revokes the entry only if the cloud did not change it later."""
    revoke = revoke_entry("Lønn", unless_changed_after=T)
    assert simple_write(revoke) is None  # read first: never in a batch

    def access(modified: datetime) -> dict[str, Any]:
        entry = {"service": "business", "kind": "roles", "name": "Lønn", "origin": "cloud"}
        tag = f'"cloud@{modified.isoformat()}"'
        return {"entries": [{**entry, "modified_at": modified.isoformat(), "etag": tag}]}

    later, earlier = access(T + timedelta(seconds=1)), access(T)
    assert entry_revoke(revoke, later) == Applied(
        "kept", "cu-1", details={"reason": "changed in the cloud later"}
    )
    delete = entry_revoke(revoke, earlier)
    assert isinstance(delete, Write)
    assert delete.method == "DELETE" and delete.path.endswith("/business/roles/L%C3%B8nn")
    # the revoke names the entry as it was read: a change in the cloud since is answered 412
    assert delete.if_match == f'"cloud@{T.isoformat()}"' and 412 in delete.ok_statuses
    # not held: nothing to revoke, and a DELETE sent anyway could remove a grant made since the read
    assert entry_revoke(revoke, {}) == Applied("noop", "cu-1", details={"reason": "not held in the cloud"})


def test_a_per_entry_revoke_the_cloud_refuses_412_keeps_the_entry_it_is_no_failure() -> None:
    """The entry changed in the cloud between the sink's read and its revoke (an administrator
    granted it again): the cloud answers 412, the sink records *kept* — a result the journal
    shows, never a dead letter or a retry."""
    revoke = revoke_entry("Lønn", unless_changed_after=T)
    kept = interpret(revoke, 412, {"error": "precondition_failed"}, False)
    assert kept == Applied("kept", "cu-1", False, {"reason": KEPT_CHANGED_SINCE_READ})
    assert SinkPolicy().next_step(kept, attempts=1, waited=0.0, circuit_open=False) is Step.RECORD
    assert interpret(revoke, 404, None, False) == Applied("noop", "cu-1", False)  # the access is gone
