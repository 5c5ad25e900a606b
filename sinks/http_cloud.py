"""httpx adapter of the ``CloudDirectory`` port for the cloud directory API.

Every write carries an ``Idempotency-Key`` derived from the operation id (and the step, for
multi-step operations), so a re-applied operation (redelivery, replay, a worker killed
mid-request or mid-batch) has no second effect. httpx errors and HTTP statuses are
translated here, once, into the vudsync error tree (:mod:`sinks.errors`).

Tokens: :class:`kernel.auth.ClientCredentials`, one OAuth2 client-credentials token shared by
all calls. A 401 refreshes it once (only if nobody refreshed it meanwhile: concurrent 401s
cost one token request, not N); refused credentials are remembered for ``auth_cooldown``
seconds, during which calls fail at once without a request — a wrong client secret never
becomes a request storm.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import orjson
from pydantic import SecretStr

from kernel.auth import ClientCredentials, cloud_token_url
from kernel.errors import VudsyncError
from schemas.operations import AssignAccess, CloudOperation, RevokeAccessEntry, UpsertUser
from sinks.errors import CloudRejected, CloudUnavailable
from sinks.ports import Applied, BatchOutcome, Intents
from sinks.writes import (
    MULTI_STEP,
    KnownUsers,
    Lookup,
    Steps,
    Write,
    access_path,
    access_write,
    body_text,
    create_steps,
    entry_revoke,
    error_for,
    excerpt,
    interpret,
    link_intent,
    lookups,
    parse_retry_after,
    reads_intent,
    resolves_user,
    simple_write,
    steps_after_create,
    steps_after_lookup,
    steps_after_patch,
    user_lookup,
    with_user,
)

log = logging.getLogger(__name__)

MAX_BATCH = 500  # the cloud's limit per POST /v1/batch


def _first(answer: dict[str, Any]) -> dict[str, Any] | None:
    items = (answer.get("body") or {}).get("items") or []
    return items[0] if items else None


def _lookup_error(answer: dict[str, Any]) -> VudsyncError | None:
    status = int(answer["status"])
    if status < 300:
        return None
    headers = answer.get("headers") or {}
    body = excerpt(body_text(answer.get("body")))
    return error_for("GET (look-up in a batch)", status, body, parse_retry_after(headers.get("retry-after")))


def gone(outcome: BatchOutcome | BaseException) -> bool:
    """A 404 to a write: the cloud user (or company) it names is not there."""
    return isinstance(outcome, CloudRejected) and outcome.status == 404


def _token_error(response: httpx.Response) -> VudsyncError:
    """A token endpoint's 5xx or 429, as any other call's (circuit failure, rate limit)."""
    return error_for(
        "POST /oauth/token", response.status_code, "", parse_retry_after(response.headers.get("Retry-After"))
    )


class _InFlight:
    """One operation's writes in a batched apply: which is next, what the earlier ones said."""

    def __init__(self, steps: Steps, simple: bool = False) -> None:
        self.steps = steps
        self.simple = simple
        self.done: list[tuple[Any, bool]] = []  # (body, replayed) per write answered

    @property
    def next_write(self) -> Write:
        return self.steps.writes[len(self.done)]

    def answered(self, op: CloudOperation, answer: dict[str, Any]) -> tuple[bool, BatchOutcome]:
        """Take the answer to ``next_write``: (finished?, the operation's outcome if so)."""
        write = self.next_write
        status = int(answer["status"])
        headers = answer.get("headers") or {}
        if not (status < 300 or status in write.ok_statuses):
            body = excerpt(body_text(answer.get("body")))
            retry_after = parse_retry_after(headers.get("retry-after"))
            return True, error_for(f"{write.method} {write.path}", status, body, retry_after)
        replayed = headers.get("idempotent-replayed") == "true"
        if self.simple:
            return True, interpret(op, status, answer.get("body"), replayed)
        if self.steps.creates and not self.done and status == 409:
            return True, None  # created meanwhile (by us or someone else): the alone path matches it
        self.done.append((answer.get("body"), replayed))
        if len(self.done) < len(self.steps.writes):
            return False, None
        cloud_id = self.steps.cloud_id
        if cloud_id is None:  # the create's answer names it
            cloud_id = str(self.done[0][0]["id"])
        replayed_all = all(r for _, r in self.done)
        return True, Applied(self.steps.effect, cloud_id, replayed_all, self.steps.details)


class HttpCloudDirectory:
    """Applies operations to the cloud directory API over HTTP (keep-alive, pooled)."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: SecretStr | str,
        *,
        timeout: float = 10.0,
        max_connections: int = 32,
        auth_cooldown: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        known_users: int = 20_000,
    ) -> None:
        self.auth = ClientCredentials(
            cloud_token_url(base_url),
            client_id,
            client_secret if isinstance(client_secret, SecretStr) else SecretStr(client_secret),
            scope="directory:read directory:write",
            cooldown=auth_cooldown,
            token_error=_token_error,
            clock=clock,
        )
        self._client = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
            auth=self.auth,
        )
        # users whose cloud id this sink's own upserts and look-ups just told (their
        # assignments behind the upsert skip the look-up): :class:`sinks.writes.KnownUsers`
        self.known_users = KnownUsers(known_users)
        self._clock = clock

    @property
    def token_requests(self) -> int:
        return self.auth.token_requests

    async def aclose(self) -> None:
        await self._client.aclose()

    def batchable(self, op: CloudOperation) -> bool:
        if resolves_user(op):  # its user's look-up, then its one write (keep: read first, alone)
            return not op.keep  # type: ignore[union-attr]  # resolves_user: an AssignAccess
        return simple_write(op) is not None or isinstance(op, MULTI_STEP)

    # -- transport --------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        json: Any = None,
        content: bytes | None = None,
        params: dict[str, str] | None = None,
        ok_statuses: tuple[int, ...] = (),
        if_match: str | None = None,
    ) -> httpx.Response:
        """One API call; a 401 refreshes the token once (:attr:`auth`). Returns 2xx and
        ``ok_statuses`` answers; raises the translated error for anything else. ``content``: a
        JSON body already encoded."""
        what = f"{method} {path.split('?')[0]}"
        headers = {}
        if key is not None:
            headers["Idempotency-Key"] = key
        if content is not None:
            headers["Content-Type"] = "application/json"
        if if_match is not None:
            headers["If-Match"] = if_match
        try:
            response = await self._client.request(
                method, path, headers=headers, json=json, content=content, params=params
            )
        except httpx.TimeoutException:
            raise CloudUnavailable(f"{what}: timed out", reason="timeout") from None
        except httpx.HTTPError as exc:
            raise CloudUnavailable(f"{what}: {type(exc).__name__}", reason="connection") from None
        status = response.status_code
        if status < 300 or status in ok_statuses:
            return response
        raise error_for(
            what, status, excerpt(response.text), parse_retry_after(response.headers.get("Retry-After"))
        )

    async def _send(self, write: Write) -> httpx.Response:
        return await self.request(
            write.method,
            write.path,
            key=write.key,
            json=write.body,
            ok_statuses=write.ok_statuses,
            if_match=write.if_match,
        )

    @staticmethod
    def _replayed(*responses: httpx.Response) -> bool:
        return bool(responses) and all(r.headers.get("Idempotent-Replayed") == "true" for r in responses)

    async def _find(self, lookup: Lookup) -> dict[str, Any] | None:
        response = await self.request("GET", f"/v1/{lookup.collection}", params={lookup.param: lookup.value})
        items = response.json().get("items", [])
        return items[0] if items else None

    # -- operations -------------------------------------------------------------------

    async def _assign_keeping(self, op: AssignAccess) -> Applied:
        """An assignment that leaves some applications' cloud assignments as they are: read
        the access, then write it with those kept (:func:`access_write`). One aggregate has one
        operation in flight, so nothing of ours moves the access between the two."""
        response = await self.request("GET", access_path(op), ok_statuses=(404,))
        current = response.json() if response.status_code != 404 else {}
        write = access_write(op, current)
        answer = await self._send(write)
        body = answer.json() if answer.content else None
        applied = interpret(op, answer.status_code, body, self._replayed(answer))
        if applied is None:
            raise CloudRejected(f"{op.kind} {op.operation_id}: {answer.status_code}", status=0, excerpt="")
        return applied

    async def _revoke_entry(self, op: RevokeAccessEntry) -> Applied:
        """A per-entry revoke that yields to a later change in the cloud: read the access, then
        revoke the entry unless the cloud changed it after the removal on premise
        (:func:`entry_revoke`). The revoke names the entry as read (``If-Match``): a change in
        the cloud between the two is answered 412, and the entry is kept."""
        response = await self.request("GET", access_path(op), ok_statuses=(404,))
        current = response.json() if response.status_code != 404 else {}
        write = entry_revoke(op, current)
        if isinstance(write, Applied):
            return write
        answer = await self._send(write)
        applied = interpret(op, answer.status_code, None, self._replayed(answer))
        assert applied is not None  # a revoke is always interpreted
        return applied

    async def apply(self, op: CloudOperation, intents: Intents | None = None) -> Applied:
        try:
            applied = await self._apply(op, intents)
        except BaseException:
            self.known_users.learn(op, None, self._clock())  # nothing learned: forget what was known
            raise
        self.known_users.learn(op, applied, self._clock())
        return applied

    async def _apply(self, op: CloudOperation, intents: Intents | None) -> Applied:
        if isinstance(op, AssignAccess) and resolves_user(op):
            known = self.known_users.resolve(op, self._clock())
            rejected: CloudRejected | None = None  # a 404 under the remembered id: the user may be gone
            if known is not None:
                try:
                    return await self._apply_resolved(known, intents)
                except CloudRejected as exc:
                    if not gone(exc):
                        raise
                    rejected = exc
            resolved = with_user(op, await self._find(user_lookup(op)))  # as if never known
            if isinstance(resolved, Applied):
                return resolved
            if rejected is not None and known is not None and resolved.cloud_user_id == known.cloud_user_id:
                raise rejected  # still that user: the 404 is about something else
            op = resolved
        return await self._apply_resolved(op, intents)

    async def _apply_resolved(self, op: CloudOperation, intents: Intents | None) -> Applied:
        """``op`` alone, its user's cloud id known when it needed one."""
        if isinstance(op, AssignAccess) and op.keep and op.cloud_user_id and op.cloud_company_id:
            return await self._assign_keeping(op)
        if isinstance(op, RevokeAccessEntry) and op.cloud_user_id and op.cloud_company_id:
            return await self._revoke_entry(op)
        write = simple_write(op)
        if write is not None:
            response = await self._send(write)
            body = response.json() if response.content else None
            applied = interpret(op, response.status_code, body, self._replayed(response))
            if applied is not None:
                return applied
            if isinstance(op, UpsertUser) and response.status_code != 404 and isinstance(body, dict):
                # the known-id PATCH found the user, still unlinked or (in)active: go on from its
                # answer (no look-up). Batched, such an operation is handed over to here.
                return await self._perform(
                    op, steps_after_patch(op, body), [self._replayed(response)], intents
                )
        return await self._multi_step(op, intents)

    async def apply_batch(
        self, ops: Sequence[CloudOperation], intents: Intents | None = None
    ) -> list[BatchOutcome]:
        try:
            outcomes = await self._apply_batch(ops, intents)
        except BaseException:
            for op in ops:
                self.known_users.learn(op, None, self._clock())
            raise
        for op, outcome in zip(ops, outcomes, strict=True):
            self.known_users.learn(op, outcome, self._clock())
        return outcomes

    async def _apply_batch(
        self, ops: Sequence[CloudOperation], intents: Intents | None
    ) -> list[BatchOutcome]:
        """Operations through ``POST /v1/batch`` (≤ 500), each with its own keys and outcome.

        Simple operations are one write each. Multi-step operations (:data:`MULTI_STEP`) go in
        phases: all their look-ups in one batch, then their writes, one write of each
        operation per round and only after its previous write succeeded — the order and the
        conditions of the one-at-a-time path, with a round trip per phase instead of per
        request. An operation that needs an answer first (a create answered 409: created
        meanwhile) gets None: the worker applies it alone. ``intents``: one recall for the
        look-ups that read one, one announce before the first round of writes. An assignment
        behind its user's upsert (:func:`resolves_user`) has its user looked up by external id
        in the same round trip as those look-ups, then goes as a simple write — or at once,
        when this sink's own upsert or look-up of that user just told its cloud id
        (:class:`KnownUsers`).
        """
        if len(ops) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} operations per batch")
        outcomes: list[BatchOutcome] = [None] * len(ops)
        rounds: dict[int, _InFlight] = {}
        multi: list[int] = []
        behind: list[int] = []  # assignments whose user is looked up first (resolves_user)
        resolved: dict[int, CloudOperation] = {}
        remembered: dict[int, AssignAccess] = {}  # … or whose user's id KnownUsers told
        for i, op in enumerate(ops):
            if resolves_user(op):
                known = self.known_users.resolve(op, self._clock())  # type: ignore[arg-type]  # an AssignAccess
                if known is None:
                    behind.append(i)
                elif (write := simple_write(known)) is not None:
                    resolved[i] = remembered[i] = known
                    rounds[i] = _InFlight(Steps((write,), "", None, {}), simple=True)
                continue
            write = simple_write(op)
            if write is not None:
                rounds[i] = _InFlight(Steps((write,), "", None, {}), simple=True)
            elif isinstance(op, MULTI_STEP):
                multi.append(i)
            else:
                raise ValueError(f"apply_batch cannot apply {op.kind} (no cloud mapping)")
        if multi or behind:
            # every look-up in one round trip: the multi-step operations' (two each), then the
            # users of the assignments behind their upserts (one each; never the same aggregate
            # as a multi-step operation here: one operation per aggregate is in flight)
            found = await self._batch(
                [item.batch_item() for i in multi for item in lookups(ops[i])]
                + [user_lookup(ops[i]).batch_item() for i in behind]  # type: ignore[arg-type]
            )
            for i, answer in zip(behind, found[2 * len(multi) :], strict=True):
                error = _lookup_error(answer)
                user = with_user(ops[i], _first(answer)) if error is None else error  # type: ignore[arg-type]
                write = simple_write(user) if isinstance(user, AssignAccess) else None
                if isinstance(user, AssignAccess) and write is not None:
                    resolved[i] = user
                    rounds[i] = _InFlight(Steps((write,), "", None, {}), simple=True)
                elif not isinstance(user, AssignAccess):
                    outcomes[i] = user
            matches: dict[int, tuple[dict[str, Any] | None, dict[str, Any] | None]] = {}
            for n, i in enumerate(multi):
                id_answer, key_answer = found[2 * n], found[2 * n + 1]
                error = next((e for e in (_lookup_error(id_answer), _lookup_error(key_answer)) if e), None)
                if error is not None:
                    outcomes[i] = error
                else:
                    matches[i] = (_first(id_answer), _first(key_answer))
            recalled = await self._recall(
                intents, [ops[i] for i, (by_id, _) in matches.items() if reads_intent(ops[i], by_id)]
            )
            for i, (by_id, by_key) in matches.items():
                intent = recalled.get(ops[i].operation_id)
                plan = steps_after_lookup(ops[i], by_id, by_key, intent=intent)
                if isinstance(plan, Steps):
                    rounds[i] = _InFlight(plan)
                else:
                    outcomes[i] = plan
            await self._announce(intents, [(ops[i], r.steps) for i, r in rounds.items() if not r.simple])
        await self._rounds(rounds, resolved, ops, outcomes)
        again = {i: op for i, op in remembered.items() if gone(outcomes[i])}
        if again:
            await self._look_up_again(again, ops, outcomes)
        return outcomes

    async def _rounds(
        self,
        rounds: dict[int, _InFlight],
        resolved: dict[int, CloudOperation],
        ops: Sequence[CloudOperation],
        outcomes: list[BatchOutcome],
    ) -> None:
        """Send the writes of ``rounds`` (one of each operation per round trip) until each is
        finished; its outcome into ``outcomes``. ``resolved``: an operation as sent, its user's
        cloud id filled in."""
        while rounds:
            order = list(rounds)
            answers = await self._batch([rounds[i].next_write.batch_item() for i in order])
            for i, answer in zip(order, answers, strict=True):
                finished, outcome = rounds[i].answered(resolved.get(i, ops[i]), answer)
                if finished:
                    outcomes[i] = outcome
                    del rounds[i]

    async def _look_up_again(
        self, sent: dict[int, AssignAccess], ops: Sequence[CloudOperation], outcomes: list[BatchOutcome]
    ) -> None:
        """Assignments sent under the cloud id :class:`KnownUsers` remembered, answered 404
        (:func:`gone`): that cloud user may be gone since. Each user is looked up by external
        id, as if never known (one round trip), then: no cloud user linked — *unresolved*, as
        the look-up would have said at first; another one — its write, under the same key (the
        404 stored nothing); the same one — the 404 was about something else, and stays."""
        found = await self._batch([user_lookup(ops[i]).batch_item() for i in sent])  # type: ignore[arg-type]
        rounds: dict[int, _InFlight] = {}
        resolved: dict[int, CloudOperation] = {}
        for (i, before), answer in zip(sent.items(), found, strict=True):
            error = _lookup_error(answer)
            user = with_user(ops[i], _first(answer)) if error is None else error  # type: ignore[arg-type]
            if not isinstance(user, AssignAccess):
                outcomes[i] = user
            elif user.cloud_user_id != before.cloud_user_id and (write := simple_write(user)) is not None:
                resolved[i] = user
                rounds[i] = _InFlight(Steps((write,), "", None, {}), simple=True)
        await self._rounds(rounds, resolved, ops, outcomes)

    async def _batch(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Items through ``POST /v1/batch`` in order (≤ 500 a request); their answers."""
        answers: list[dict[str, Any]] = []
        for start in range(0, len(items), MAX_BATCH):
            chunk = items[start : start + MAX_BATCH]
            # orjson: a batch's body and answer are the sink's largest JSON documents
            response = await self.request("POST", "/v1/batch", content=orjson.dumps({"requests": chunk}))
            got = orjson.loads(response.content)["responses"]
            if len(got) != len(chunk):
                raise CloudUnavailable(f"POST /v1/batch: {len(got)} answers for {len(chunk)} items")
            answers.extend(got)
        return answers

    @staticmethod
    async def _recall(intents: Intents | None, ops: Sequence[CloudOperation]) -> dict[str, dict[str, Any]]:
        """The intents earlier attempts of ``ops`` announced (:func:`reads_intent` said so)."""
        if intents is None or not ops:
            return {}
        return await intents.recall([op.operation_id for op in ops])

    @staticmethod
    async def _announce(intents: Intents | None, plans: Sequence[tuple[CloudOperation, Steps]]) -> None:
        """Record the write-ahead intents of ``plans`` (:func:`link_intent`) before any of their
        writes is sent: a crash after the cloud applied a link must not lose its review."""
        ahead = [(op.operation_id, i) for op, plan in plans if (i := link_intent(op, plan)) is not None]
        if intents is not None and ahead:
            await intents.announce(ahead)

    async def _decide(
        self,
        op: CloudOperation,
        by_id: dict[str, Any] | None,
        by_key: dict[str, Any] | None,
        intents: Intents | None,
    ) -> Steps | Applied | None:
        """:func:`steps_after_lookup`, with the intent an earlier attempt announced if it reads one."""
        recalled = await self._recall(intents, [op] if reads_intent(op, by_id) else [])
        return steps_after_lookup(op, by_id, by_key, intent=recalled.get(op.operation_id))

    async def _multi_step(self, op: CloudOperation, intents: Intents | None = None) -> Applied:
        """One multi-step operation alone: the look-ups :func:`lookups` names, then
        :func:`steps_after_lookup`, then its writes in order — the decisions of the batched path.

        Where the two paths differ, on purpose: the look-up by e-mail / organisation number is
        only sent when the one by external id found nothing (its answer would not be read;
        batched, both share a round trip anyway), and a new inactive user (None: the batched
        path hands it over) is created here, then deactivated (:meth:`_perform`).
        """
        if not isinstance(op, MULTI_STEP):
            raise CloudRejected(
                f"{op.kind} {op.operation_id}: no cloud mapping (cloud ids missing?)", status=0, excerpt=""
            )
        by_id, by_key = await self._look_up(op)
        plan = await self._decide(op, by_id, by_key, intents)
        if plan is None:  # a new inactive user: create it, then deactivate what the create returns
            plan = create_steps(op)
        if isinstance(plan, Applied):
            return plan
        return await self._perform(op, plan, [], intents)

    async def _look_up(self, op: CloudOperation) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The matches by external id and by e-mail / organisation number (:func:`lookups`).
        :func:`steps_after_lookup` reads the second only when the first is None: alone, it is
        not asked for otherwise."""
        by_id_lookup, by_key_lookup = lookups(op)
        by_id = await self._find(by_id_lookup)
        return by_id, (await self._find(by_key_lookup) if by_id is None else None)

    async def _perform(
        self, op: CloudOperation, plan: Steps, replayed: list[bool], intents: Intents | None = None
    ) -> Applied:
        """Sends ``plan``'s writes in order, each after the one before succeeded (an error is
        raised and stops the operation). ``replayed``: per write already answered for ``op``.

        A create goes on from its answer, which the batched path does not wait for: a 409
        (created meanwhile) → :meth:`_after_conflict`; else :func:`steps_after_create` (a new
        inactive user is deactivated under ``<operation id>:deactivate``). A link's intent is
        announced before its write (:meth:`_announce`).
        """
        if plan.creates:
            (create,) = plan.writes
            response = await self._send(create)
            if response.status_code == 409:
                return await self._after_conflict(op, response, intents)
            replayed.append(self._replayed(response))
            plan = steps_after_create(op, response.json())
        await self._announce(intents, [(op, plan)])
        for write in plan.writes:
            replayed.append(self._replayed(await self._send(write)))
        return Applied(plan.effect, plan.cloud_id, bool(replayed) and all(replayed), plan.details)

    async def _after_conflict(
        self, op: CloudOperation, conflict: httpx.Response, intents: Intents | None
    ) -> Applied:
        """A create answered 409: created meanwhile, by us (a lost answer), another worker or
        someone else — and the cloud says 409 both for "this external id is linked already" and
        for "this e-mail / organisation number exists". So look again the way the operation
        began: by external id (ours: update it), then by e-mail / organisation number (link it,
        update, (re)activate; a company's differences for review). Batched, the 409 hands the
        operation over to the one-at-a-time path, which ends here. The 409 itself does not count
        for ``replayed``."""
        by_id, by_key = await self._look_up(op)
        plan = None if by_id is None and by_key is None else await self._decide(op, by_id, by_key, intents)
        if plan is None:
            by_id_lookup, by_key_lookup = lookups(op)
            raise CloudRejected(
                f"{op.entity.value} {op.entity_id}: create conflict without a match by "
                f"{by_id_lookup.param} or {by_key_lookup.param}",
                status=409,
                excerpt=excerpt(conflict.text),
            )
        if isinstance(plan, Applied):
            return plan
        return await self._perform(op, plan, [], intents)
