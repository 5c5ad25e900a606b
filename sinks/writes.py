"""Operations as HTTP writes, and HTTP answers as outcomes: the pure half of the cloud adapter.

A *simple* operation is applied by exactly one write whose path is known without asking the
cloud first (catalogue entries, access, application instances, and users or companies whose
cloud id is known). Simple writes can travel alone or as items of ``POST /v1/batch``: the
same write (method, path, body, idempotency key) either way, so a retry may switch between
the two without a second effect. Everything else (resolve by external id / e-mail /
organisation number, then create or link) is a multi-step operation, decided here once for
both of :mod:`sinks.http_cloud`'s paths: the look-ups (:func:`lookups`), then the writes they
call for (:func:`steps_after_lookup`). Alone, they go one request at a time (and a create
goes on from its answer: :func:`steps_after_create`); batched, in two phases — every
operation's look-ups in one batch, then their writes, one round per step — so an initial
sync of thousands of new users costs a few round trips per batch instead of three requests
per user. Both paths send the same writes with the same keys.

Idempotency keys: the operation id for one-write operations, ``<operation id>:<step>`` for a
step of a multi-step operation (``create``, ``link``, ``update``, ``reactivate`` …).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from kernel.errors import VudsyncError
from schemas.operations import (
    AssignAccess,
    CloudOperation,
    DeactivateUser,
    RegisterApplicationInstance,
    RemoveCatalogueEntry,
    RevokeAccess,
    RevokeAccessEntry,
    UpsertCatalogueEntry,
    UpsertCompany,
    UpsertUser,
)
from sinks.errors import AuthenticationFailed, CloudRejected, CloudUnavailable, RateLimited
from sinks.ports import Applied, BatchOutcome

EXCERPT_CHARS = 300
_SECRET_WORDS = ("secret", "token", "license_key", "password", "authorization")


def excerpt(text: str) -> str:
    """The start of a response body, safe for a dead-letter header or a log line."""
    head = text[:EXCERPT_CHARS]
    return "(response withheld: it names a secret)" if any(w in head.lower() for w in _SECRET_WORDS) else head


def body_text(body: Any) -> str:
    if body is None:
        return ""
    return body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)


def _seg(value: str) -> str:
    """One path segment, percent-encoded (names may hold spaces, '/', '&', 'ø' …)."""
    return quote(value, safe="")


@dataclass(frozen=True, slots=True)
class Write:
    """One idempotent HTTP write. ``ok_statuses``: non-2xx answers that are a normal outcome;
    ``if_match``: its precondition (the ``If-Match`` header), if any."""

    method: str
    path: str
    key: str
    body: Any = None
    ok_statuses: tuple[int, ...] = ()
    if_match: str | None = None

    def batch_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {"idempotency_key": self.key, "method": self.method, "path": self.path}
        if self.body is not None:
            item["body"] = self.body
        if self.if_match is not None:
            item["if_match"] = self.if_match
        return item


def user_fields(op: UpsertUser) -> dict[str, Any]:
    return {
        "username": op.username,
        "email": op.email,
        "first_name": op.first_name,
        "last_name": op.last_name,
        "language": op.language,
    }


def company_fields(op: UpsertCompany) -> dict[str, Any]:
    return {
        "name": op.name,
        "organisation_number": op.organisation_number,
        "country": op.country,
        "status": op.status,
    }


def access_path(op: AssignAccess | RevokeAccess | RevokeAccessEntry) -> str:
    # scope=directory: the operation is the directory's set; what an administrator assigned
    # in the cloud (origin cloud) is kept, never revoked (docs/cloud-api.md)
    user, company = _seg(op.cloud_user_id or ""), _seg(op.cloud_company_id or "")
    return f"/v1/users/{user}/access/{company}?scope=directory"


def directory_part(access: dict[str, Any], app: str) -> dict[str, list[str]]:
    """The directory's own entries of ``app`` in a ``GET …/access/<company>`` body (those of
    origin ``cloud`` the cloud keeps by itself under ``scope=directory``); empty: none."""
    entries = access.get("entries")
    if entries is None:  # no origins: every entry counts as the directory's
        return dict(access.get("services", {}).get(app) or {})
    part: dict[str, list[str]] = {}
    for e in entries:
        if e["service"] == app and e.get("origin") != "cloud":
            part.setdefault(e["kind"], []).append(e["name"])
    return {kind: sorted(names) for kind, names in part.items()}


def access_write(op: AssignAccess, current: dict[str, Any]) -> Write:
    """The write of an assignment: its ``services``, and for each application it ``keep``s
    the directory's part the cloud holds now (``current``: the body of
    ``GET …/access/<company>``, empty when there is none) — never the planned part of a kept
    application. Nothing left: a revoke of the directory's part (404 is fine)."""
    services = {app.value: svc.model_dump(mode="json") for app, svc in op.services.items()}
    for app in op.keep:
        services.pop(app.value, None)
        kept = directory_part(current, app.value)
        if any(kept.values()):
            services[app.value] = kept
    if not services and op.keep:
        return Write("DELETE", access_path(op), op.operation_id, ok_statuses=(404,))
    return Write("PUT", access_path(op), op.operation_id, {"services": services})


#: a per-entry revoke's answer when the entry changed in the cloud since it was read
KEPT_CHANGED_SINCE_READ = "changed in the cloud after it was read (412)"


def entry_revoke(op: RevokeAccessEntry, current: dict[str, Any]) -> Write | Applied:
    """The write of a per-entry revoke, given the body of ``GET …/access/<company>``
    (``current``, empty when there is none), or what it comes to without one: *kept* when the
    cloud changed the entry later than the removal on premise (``unless_changed_after``) — the
    conflict rule gives it to the cloud, whose change the planner then writes back to the
    store; *noop* when the cloud does not hold it (nothing of the rule's to revoke, and a
    revoke sent anyway could remove a grant made since the read).

    The revoke names the entry as read (``If-Match``: its ``etag``), so a change in the cloud
    between the read and the revoke is not lost: the cloud answers 412 and :func:`interpret`
    says *kept*. Without ``unless_changed_after`` it revokes whatever the entry is."""
    user, company = _seg(op.cloud_user_id or ""), _seg(op.cloud_company_id or "")
    entry = f"{_seg(op.application.value)}/{op.catalogue}/{_seg(op.name)}"
    path = f"/v1/users/{user}/access/{company}/{entry}"
    if op.unless_changed_after is None:
        return Write("DELETE", path, op.operation_id, ok_statuses=(404,))
    wanted = (op.application.value, op.catalogue, op.name)
    held = [
        e for e in current.get("entries") or () if (e.get("service"), e.get("kind"), e.get("name")) == wanted
    ]
    if not held:
        return Applied("noop", op.cloud_user_id, details={"reason": "not held in the cloud"})
    if datetime.fromisoformat(held[0]["modified_at"]) > op.unless_changed_after:
        return Applied("kept", op.cloud_user_id, details={"reason": "changed in the cloud later"})
    return Write("DELETE", path, op.operation_id, ok_statuses=(404, 412), if_match=held[0].get("etag"))


def simple_write(op: CloudOperation) -> Write | None:
    """The one write that applies ``op``, or None when it needs the multi-step path."""
    oid = op.operation_id
    if isinstance(op, AssignAccess | RevokeAccess):
        if not (op.cloud_user_id and op.cloud_company_id):
            return None
        if isinstance(op, AssignAccess):
            return None if op.keep else access_write(op, {})
        return Write("DELETE", access_path(op), oid, ok_statuses=(404,))
    if isinstance(op, RevokeAccessEntry):
        if not (op.cloud_user_id and op.cloud_company_id) or op.unless_changed_after is not None:
            return None  # parked; or read the entry first (HttpCloudDirectory: entry_revoke)
        write = entry_revoke(op, {})
        assert isinstance(write, Write)  # no precondition: always a write
        return write
    if isinstance(op, UpsertCatalogueEntry | RemoveCatalogueEntry):
        path = f"/v1/services/{_seg(op.application.value)}/{op.catalogue}/{_seg(op.name)}"
        if isinstance(op, UpsertCatalogueEntry):
            return Write("PUT", path, oid, {"description": op.description})
        return Write("DELETE", path, oid, ok_statuses=(404,))
    if isinstance(op, RegisterApplicationInstance):
        body = {"uri": op.uri, "license_fingerprint": op.license_fingerprint}
        return Write("PUT", f"/v1/application-instances/{_seg(op.application.value)}", oid, body)
    if isinstance(op, UpsertUser) and op.cloud_id:
        return Write("PATCH", f"/v1/users/{_seg(op.cloud_id)}", f"{oid}:update", user_fields(op), (404,))
    if isinstance(op, DeactivateUser) and op.cloud_id:
        return Write("POST", f"/v1/users/{_seg(op.cloud_id)}/deactivate", oid, ok_statuses=(404,))
    if isinstance(op, UpsertCompany) and op.cloud_id:
        return Write(
            "PATCH", f"/v1/companies/{_seg(op.cloud_id)}", f"{oid}:update", company_fields(op), (404,)
        )
    return None


# -- assignments behind their user's upsert -------------------------------------------

UNRESOLVED = "unresolved"  # the effect of an assignment whose user no cloud user is linked to


def resolves_user(op: CloudOperation) -> bool:
    """An assignment the planner sent right behind its user's upsert, before it knew the user's
    cloud id (``processors.planner.needs_of``, ``behind``): the sink finds the user by its
    external id first (:func:`user_lookup`). The two are on one aggregate, applied in order, so
    the upsert has finished by then (created or linked the user, or failed)."""
    return isinstance(op, AssignAccess) and op.cloud_user_id is None and op.cloud_company_id is not None


def user_lookup(op: AssignAccess) -> Lookup:
    return Lookup("users", "external_id", op.user_id)


def with_user(op: AssignAccess, found: dict[str, Any] | None) -> AssignAccess | Applied:
    """``op`` with the cloud id of the user its look-up found (``found``: the first match by
    external id), or, none found, its outcome: *unresolved* — nothing written; the planner
    parks it again until the user's cloud id is known (the user's upsert linked no cloud user:
    a conflict, a dead letter), as it would have waited before it was sent."""
    if found is None:
        return Applied(UNRESOLVED, None, False, {"reason": "no cloud user is linked to this user"})
    return op.model_copy(update={"cloud_user_id": str(found["id"])})


def learned_user(op: CloudOperation, outcome: BatchOutcome) -> tuple[str, str | None] | None:
    """What ``op``'s outcome in this sink teaches about its user's cloud id: (external id,
    cloud id), a cloud id None meaning "forget what you knew", or None: nothing.

    Only what the cloud itself answered for that very external id counts: an upsert that
    applied (created, linked, updated or found it by external id — every such answer names the
    cloud user now linked to the external id), an assignment whose user was found (or known)
    and written. Anything else about the user — a conflict, an error, an unfinished upsert, a
    deactivation, an unresolved or failed assignment — forgets it, so that the next assignment
    behind looks the user up again (:func:`user_lookup`) and may be *unresolved*."""
    if isinstance(op, UpsertUser):
        return op.entity_id, outcome.cloud_id if isinstance(outcome, Applied) else None
    if isinstance(op, DeactivateUser):
        return op.entity_id, None
    if isinstance(op, AssignAccess) and resolves_user(op):
        known = isinstance(outcome, Applied) and outcome.effect == "assigned"
        return op.user_id, outcome.cloud_id if known and isinstance(outcome, Applied) else None
    return None


class KnownUsers:
    """The cloud ids of users this sink has just upserted or found (:func:`learned_user`), so
    that an assignment sent behind its user's upsert (:func:`resolves_user`) skips the look-up
    by external id. An aggregate has one operation in flight and its operations go in order,
    so the upsert's outcome is learned before its assignments are sent. Bounded in number and
    in age (``max_age`` seconds of the caller's monotonic clock, ``now``): the assignments come
    right behind their upsert, and an older id is looked up again rather than trusted — the
    cloud may have unlinked the user since. Forgotten entries cost a look-up, as without it."""

    def __init__(self, limit: int = 20_000, max_age: float = 30.0) -> None:
        self.limit = limit
        self.max_age = max_age
        self._ids: OrderedDict[str, tuple[str, float]] = OrderedDict()  # oldest first

    def __len__(self) -> int:
        return len(self._ids)

    def learn(self, op: CloudOperation, outcome: BatchOutcome, now: float) -> None:
        learned = learned_user(op, outcome)
        if learned is None:
            return
        external_id, cloud_id = learned
        self._ids.pop(external_id, None)
        if cloud_id is not None:
            self._ids[external_id] = (cloud_id, now)
        while self._ids and (
            len(self._ids) > self.limit or now - next(iter(self._ids.values()))[1] > self.max_age
        ):
            self._ids.popitem(last=False)

    def resolve(self, op: AssignAccess, now: float) -> AssignAccess | None:
        """``op`` with its user's known cloud id, or None: not known (or too old), look it up."""
        known = self._ids.get(op.user_id)
        if known is None or now - known[1] > self.max_age:
            return None
        return op.model_copy(update={"cloud_user_id": known[0]})


# -- multi-step operations in two batched phases ---------------------------------------

MULTI_STEP = (UpsertUser, DeactivateUser, UpsertCompany)
"""Operations resolved in the cloud (by external id, then e-mail / organisation number) first."""


@dataclass(frozen=True, slots=True)
class Lookup:
    """One ``GET /v1/<collection>?<param>=<value>`` (the first match is what counts)."""

    collection: str
    param: str
    value: str

    def batch_item(self) -> dict[str, Any]:
        return {"method": "GET", "path": f"/v1/{self.collection}?{urlencode({self.param: self.value})}"}


def lookups(op: CloudOperation) -> tuple[Lookup, Lookup]:
    """What a multi-step operation needs to know first: (by external id, by the natural key)."""
    if isinstance(op, UpsertUser | DeactivateUser):
        return Lookup("users", "external_id", op.entity_id), Lookup("users", "email", op.email)
    if isinstance(op, UpsertCompany):
        return (
            Lookup("companies", "external_id", op.entity_id),
            Lookup("companies", "organisation_number", op.organisation_number),
        )
    raise ValueError(f"{op.kind} is not resolved by look-ups")


@dataclass(frozen=True, slots=True)
class Steps:
    """The writes that finish a multi-step operation once its look-ups are known, in order,
    and what they amount to. ``cloud_id`` None: the create's answer tells it."""

    writes: tuple[Write, ...]
    effect: str
    cloud_id: str | None
    details: dict[str, Any]
    creates: bool = False  # the one write is a create (a 409 means: created meanwhile)


def _then(effect: str, step: str) -> str:
    return step if effect == "noop" else f"{effect}+{step}"


def _user_steps(op: UpsertUser, user: dict[str, Any], effect: str, *, link: bool, update: bool) -> Steps:
    """Link (if ``link``), update the fields that differ (if ``update``), then (re)activate if
    the active flag differs — the writes for ``user``, the cloud's copy, in this order."""
    oid, uid = op.operation_id, str(user["id"])
    writes: list[Write] = []
    if link:
        writes.append(
            Write("POST", f"/v1/users/{_seg(uid)}/link", f"{oid}:link", {"external_id": op.entity_id})
        )
        effect = _then(effect, "linked")
    fields = user_fields(op)
    if update and any(user.get(k) != v for k, v in fields.items()):
        writes.append(Write("PATCH", f"/v1/users/{_seg(uid)}", f"{oid}:update", fields))
        effect = "updated" if effect == "noop" else effect  # after a link: "linked" says enough
    if bool(user.get("active", True)) != op.active:
        action = "reactivate" if op.active else "deactivate"
        writes.append(Write("POST", f"/v1/users/{_seg(uid)}/{action}", f"{oid}:{action}"))
        effect = _then(effect, f"{action}d")
    return Steps(tuple(writes), effect, uid, {})


def create_steps(op: CloudOperation) -> Steps:
    """The create of a user or company its look-ups did not find (``<operation id>:create``)."""
    if isinstance(op, UpsertUser):
        body = {"external_id": op.entity_id, **user_fields(op)}
        create = Write("POST", "/v1/users", f"{op.operation_id}:create", body, ok_statuses=(409,))
    elif isinstance(op, UpsertCompany):
        body = {"external_id": op.entity_id, **company_fields(op)}
        create = Write("POST", "/v1/companies", f"{op.operation_id}:create", body, ok_statuses=(409,))
    else:
        raise ValueError(f"{op.kind} is never created")
    return Steps((create,), "created", None, {}, creates=True)


CONFLICT = "conflict"  # the effect of an operation whose match was refused: nothing written


def _refuse_match(external_id: str, found: dict[str, Any]) -> Applied | None:
    """Matching by e-mail (users) or organisation number (companies) links only a cloud object
    that is linked to no other on-premise id and is not a customer administrator; else a
    conflict, with the ids only (docs/operations.md, "Conflicts")."""
    linked_to = found.get("external_id")
    if linked_to and linked_to != external_id:
        why = "linked_to_another"
    elif found.get("customer_admin"):
        why = "customer_administrator"
    else:
        return None
    details = {"conflict": why, "cloud_id": str(found["id"])}
    if linked_to:
        details["linked_to"] = str(linked_to)
    return Applied(CONFLICT, None, False, details)


def link_intent(op: CloudOperation, plan: Steps) -> dict[str, Any] | None:
    """The write-ahead intent to record durably *before* ``plan``'s writes are sent, or None.

    A company link is what raises a review (:mod:`processors.reviews`), and it is the one step
    whose effect a retry cannot see: once applied, the retry's look-up finds the company by
    external id, which alone says "nothing to do". So the sink records "operation <id> is
    linking company <cloud id>" (the ledger entry the finished operation would get) first,
    and a retry that finds the company by external id reports what the first attempt did
    (:func:`steps_after_lookup`'s ``intent``). Users linked by e-mail raise no review: none.
    """
    if isinstance(op, UpsertCompany) and plan.effect == "linked" and plan.cloud_id is not None:
        return {"cloud_id": plan.cloud_id, "effect": plan.effect, "details": dict(plan.details)}
    return None


def reads_intent(op: CloudOperation, by_id: dict[str, Any] | None) -> bool:
    """Whether :func:`steps_after_lookup` reads a recorded intent for these look-ups (a
    company found by external id: linked by an earlier attempt of this operation?)."""
    return isinstance(op, UpsertCompany) and by_id is not None


def steps_after_lookup(
    op: CloudOperation,
    by_id: dict[str, Any] | None,
    by_key: dict[str, Any] | None,
    *,
    intent: dict[str, Any] | None = None,
) -> Steps | Applied | None:
    """What a multi-step operation does, given its look-ups: the decisions of both paths.

    ``by_id`` / ``by_key``: the first match by external id / by e-mail or organisation number
    (``by_key`` is not read when ``by_id`` matched). ``intent``: the write-ahead intent an
    earlier attempt of this operation recorded (:func:`link_intent`), if any — a company found
    by external id that this operation was linking is ``linked`` (replayed, with the intent's
    details: its review), as if that attempt had finished; never a silent ``noop``.
    Returns the writes to send
    (:class:`Steps`), the outcome when nothing needs writing (:class:`Applied`), or None for a
    new user that must be created inactive: its deactivation needs the create's answer
    (:func:`steps_after_create`), so the batched path hands it to the one-at-a-time path,
    which sends :func:`create_steps` and goes on from the answer.
    """
    oid = op.operation_id
    if isinstance(op, UpsertUser):
        user, matched = (by_id, False) if by_id is not None else (by_key, by_key is not None)
        if user is None:
            return create_steps(op) if op.active else None
        if matched and (refused := _refuse_match(op.entity_id, user)) is not None:
            return refused
        link = matched or user.get("external_id") != op.entity_id
        steps = _user_steps(op, user, "noop", link=link, update=True)
        return steps if steps.writes else Applied("noop", steps.cloud_id, False)
    if isinstance(op, DeactivateUser):
        # only the cloud user linked to this on-premise user: never "whoever has that e-mail"
        user = by_id
        if user is None:
            reason = "no cloud user is linked to this user" + (
                ": the one with its e-mail was left alone" if by_key is not None else ""
            )
            return Applied("noop", None, False, {"reason": reason})
        uid = str(user["id"])
        return Steps((Write("POST", f"/v1/users/{_seg(uid)}/deactivate", oid),), "deactivated", uid, {})
    if isinstance(op, UpsertCompany):
        fields = company_fields(op)
        if by_id is not None:
            cid = str(by_id["id"])
            if intent is not None and intent.get("cloud_id") == cid:
                # an earlier attempt linked it, then stopped before its outcome was recorded
                return Applied("linked", cid, True, dict(intent.get("details") or {}))
            if any(by_id.get(k) != v for k, v in fields.items()):
                return Steps(
                    (Write("PATCH", f"/v1/companies/{_seg(cid)}", f"{oid}:update", fields),),
                    "updated",
                    cid,
                    {},
                )
            return Applied("noop", cid, False)
        if by_key is None:
            return create_steps(op)
        if (refused := _refuse_match(op.entity_id, by_key)) is not None:
            return refused
        # link to the cloud company with the same organisation number; never create a second
        cid = str(by_key["id"])
        differing = sorted(k for k in ("name", "country", "status") if by_key.get(k) != fields[k])
        link = Write("POST", f"/v1/companies/{_seg(cid)}/link", f"{oid}:link", {"external_id": op.entity_id})
        return Steps((link,), "linked", cid, {"review": differing} if differing else {})
    raise ValueError(f"{op.kind} is not resolved by look-ups")


def steps_after_create(op: CloudOperation, created: dict[str, Any]) -> Steps:
    """What is left once a create succeeded (``created``: its answer, the new object).

    The create sent the external id and every field, so nothing is linked or updated (the
    cloud's normalised e-mail must not cost an update); a user whose active flag differs from
    ``op.active`` — a new inactive user, as the cloud creates users active — is (de)activated
    under ``<operation id>:deactivate``. Used by the one-at-a-time path only: the batched path
    sends no create for an inactive user (see :func:`steps_after_lookup`) and takes a create's
    answer as final, which for an active user it is (the cloud creates users active).
    """
    if isinstance(op, UpsertUser):
        return _user_steps(op, created, "created", link=False, update=False)
    if isinstance(op, UpsertCompany):
        return Steps((), "created", str(created["id"]), {})
    raise ValueError(f"{op.kind} is never created")


def steps_after_patch(op: UpsertUser, user: dict[str, Any]) -> Steps:
    """What is left when the known-id ``PATCH`` (:func:`simple_write`) answered with ``user``
    but :func:`interpret` found its external id or active flag still differs: link, then
    (re)activate, with the effect starting as "updated" (the fields were just sent)."""
    return _user_steps(op, user, "updated", link=user.get("external_id") != op.entity_id, update=False)


def interpret(op: CloudOperation, status: int, body: Any, replayed: bool) -> Applied | None:
    """What a 2xx (or ``ok_statuses``) answer to ``simple_write(op)`` means.

    None: the write alone did not finish the operation (a stale cloud id → 404; a user
    whose external id or active flag still differs) — apply it through the multi-step
    path, which re-sends this write first (a replay) and goes on from its answer.
    """
    if isinstance(op, AssignAccess):
        return Applied("assigned", op.cloud_user_id, replayed)
    if isinstance(op, RevokeAccessEntry) and status == 412:  # the entry changed since it was read
        return Applied("kept", op.cloud_user_id, replayed, {"reason": KEPT_CHANGED_SINCE_READ})
    if isinstance(op, RevokeAccess | RevokeAccessEntry):
        return Applied("noop" if status == 404 else "revoked", op.cloud_user_id, replayed)
    if isinstance(op, UpsertCatalogueEntry):
        return Applied("published", None, replayed)
    if isinstance(op, RemoveCatalogueEntry):
        return Applied("noop" if status == 404 else "removed", None, replayed)
    if isinstance(op, RegisterApplicationInstance):
        details = {"uri": op.uri, "license_fingerprint": op.license_fingerprint}
        return Applied("registered", None, replayed, details)
    if status == 404 or not isinstance(body, dict):
        return None
    if isinstance(op, UpsertUser):
        if body.get("external_id") != op.entity_id or bool(body.get("active", True)) != op.active:
            return None
        return Applied("updated", str(body["id"]), replayed)
    if isinstance(op, DeactivateUser):
        return Applied("deactivated", str(body["id"]), replayed)
    if isinstance(op, UpsertCompany):
        return Applied("updated", str(body["id"]), replayed)
    return None


def error_for(what: str, status: int, body_excerpt: str, retry_after: float | None) -> VudsyncError:
    """The vudsync error of a non-2xx answer (every status is translated here, once)."""
    if status in (401, 403):
        detail = "refused the access token" if status == 401 else "refused a scope (directory:write?)"
        return AuthenticationFailed(
            f"{what}: the cloud {detail} ({status})",
            retry_after=retry_after,
            hint="check VUDSYNC_CLOUD_CLIENT_ID / VUDSYNC_CLOUD_CLIENT_SECRET and the client's scopes",
        )
    if status == 429:
        return RateLimited(f"{what}: rate limited (429)", retry_after=retry_after)
    if status == 408 or status >= 500:
        reason = "timeout" if status in (408, 504) else "server_error"
        return CloudUnavailable(f"{what}: {status}", reason=reason, retry_after=retry_after, status=status)
    return CloudRejected(f"{what}: {status} {body_excerpt}", status=status, excerpt=body_excerpt)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form; an HTTP date → None)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
