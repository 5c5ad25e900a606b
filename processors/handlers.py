"""The planner's message handlers: decode → load state → plan → send → record.

Thin shells around :mod:`processors.planner`; no business rule lives here. No exception
escapes a handler: a message that cannot be decoded or planned is dead-lettered with its
context (reason, stage, exception, topic/partition/offset), because Faust acks and loses
a message whose agent raises.

Redelivery (at least once): the ``entities`` table keeps, per entity, the state *before*
the last event as well. An event whose version equals the table's is a redelivery: it is
planned again against that earlier state, which yields the very same operations and ids
(the sink's ledger and the cloud's idempotency keys make them no-ops). This closes the
window in which a table write reached the broker but the operations it planned did not.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any

import faust

from processors import planner
from processors.metrics import PlannerMetrics
from processors.planner import EntityView, Identities, Parked, Plan, RegisteredInstance
from processors.tables import PlannerTables
from processors.topics import PlannerTopics
from schemas.codec import DecodeError, decode_event, decode_model, encode
from schemas.deadletter import error_headers
from schemas.directory import ApplicationType, EntityType
from schemas.events import EVENT_BY_ENTITY, DirectoryEvent
from schemas.operations import CLOUD_OPERATION_ADAPTER, AssignAccess, RevokeAccess
from schemas.results import OperationResult, ResultOutcome
from schemas.topics import DIRECTORY_DLQ, entity_for_topic

log = logging.getLogger(__name__)

_STATE_TYPES = {entity: cls.model_fields["state"].annotation for entity, cls in EVENT_BY_ENTITY.items()}
_RESULT_OUTCOME = {
    planner.Outcome.PARKED: ResultOutcome.PARKED,
    planner.Outcome.BLOCKED: ResultOutcome.BLOCKED,
}


class _Lookup(Mapping[str, Any]):
    """A read-only view of the identities table under one key prefix."""

    def __init__(self, table: Mapping[str, Any], prefix: str) -> None:
        self._table, self._prefix = table, prefix

    def __getitem__(self, key: str) -> Any:
        value = self._table.get(self._prefix + key)
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        n = len(self._prefix)
        return (k[n:] for k in self._table if k.startswith(self._prefix))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _instances(table: Mapping[str, Any]) -> dict[ApplicationType, RegisteredInstance]:
    out = {}
    for app in ApplicationType:
        raw = table.get(f"instance:{app.value}")
        if raw:
            data = json.loads(raw)
            out[app] = RegisteredInstance(data["uri"], data["license_fingerprint"])
    return out


def identities_of(table: Mapping[str, Any]) -> Identities:
    return Identities(
        users=_Lookup(table, "user:"),
        companies=_Lookup(table, "company:"),
        instances=_instances(table),
        blocked=frozenset(app for app in ApplicationType if table.get(f"blocked:{app.value}") == "1"),
    )


def _view_to_table(previous: dict[str, Any] | None, view: EntityView) -> dict[str, Any]:
    state = view.state.model_dump(mode="json") if view.state is not None else None  # type: ignore[attr-defined]
    return {
        "v": view.version,
        "d": view.deleted,
        "s": state,
        "pv": previous["v"] if previous else None,
        "pd": previous["d"] if previous else None,
        "ps": previous["s"] if previous else None,
    }


def _view_from_table(raw: dict[str, Any] | None, entity: EntityType, *, before: bool) -> EntityView | None:
    if raw is None:
        return None
    v, d, s = (raw["pv"], raw["pd"], raw["ps"]) if before else (raw["v"], raw["d"], raw["s"])
    if v is None:
        return None
    state_type = _STATE_TYPES[entity]
    return EntityView(v, state_type.model_validate(s) if s is not None else None, bool(d))  # type: ignore[union-attr]


def _parked_to_table(p: Parked) -> dict[str, Any]:
    return {"op": p.operation.model_dump(mode="json"), "needs": [[e.value, i] for e, i in p.needs]}


def _parked_from_table(raw: dict[str, Any]) -> Parked:
    op = CLOUD_OPERATION_ADAPTER.validate_python(raw["op"])
    assert isinstance(op, AssignAccess | RevokeAccess)
    return Parked(op, tuple((EntityType(e), i) for e, i in raw["needs"]))


def _index_key(partition: int) -> str:
    return f"#partition:{partition}"


class PlannerHandlers:
    def __init__(
        self,
        tables: PlannerTables,
        topics: PlannerTopics,
        metrics: PlannerMetrics,
        clock: Callable[[], datetime],
        topic_prefix: str = "",
        partitions: int = 1,
    ) -> None:
        self.tables = tables
        self.topics = topics
        self.metrics = metrics
        self.clock = clock
        self.prefix = topic_prefix
        self.partitions = partitions

    # -- directory events ------------------------------------------------------------

    async def on_directory_event(self, event: faust.EventT) -> None:
        msg = event.message
        try:
            await self._directory_event(msg)
        except Exception as exc:  # no exception may escape an agent
            log.exception("planner failed on %s[%d]@%d", msg.topic, msg.partition, msg.offset)
            await self.dead_letter(msg, f"planning failed: {exc}", "plan", exc)

    async def _directory_event(self, msg: faust.types.Message) -> None:
        expected = entity_for_topic(msg.topic, self.prefix)
        if msg.value is None:
            self.metrics.events.labels(
                entity=expected.value if expected else "unknown", outcome="tombstone"
            ).inc()
            return
        try:
            ev: DirectoryEvent = decode_event(msg.value)
        except DecodeError as exc:
            await self.dead_letter(msg, exc.reason, "decode", exc)
            return
        if expected is not None and ev.entity is not expected:
            await self.dead_letter(
                msg, f"a {ev.entity.value} event on the {expected.value} topic", "decode", None
            )
            return
        key = f"{ev.entity.value}:{ev.entity_id}"
        raw = self.tables.entities.get(key)
        redelivery = raw is not None and ev.version == raw["v"]
        previous = _view_from_table(raw, ev.entity, before=redelivery)
        plan = planner.plan(previous, ev, identities_of(self.tables.identities), self.clock())
        await self._apply_plan(ev, plan, msg.partition)
        if plan.view is not None and not redelivery:
            self.tables.entities[key] = _view_to_table(raw, plan.view)
        outcome = "redelivered" if redelivery else plan.outcome.value
        self.metrics.events.labels(entity=ev.entity.value, outcome=outcome).inc()

    async def _apply_plan(self, ev: DirectoryEvent, plan: Plan, partition: int) -> None:
        for op in plan.operations:
            await self.topics.operations.send(key=op.aggregate.encode(), value=encode(op))
            self.metrics.planned.labels(kind=op.kind).inc()
        if plan.parked:
            self._park(ev.entity_id, plan.parked, partition)
            for p in plan.parked:
                await self._record(
                    p.operation, ResultOutcome.PARKED, {"waiting_for": [f"{e.value}:{i}" for e, i in p.needs]}
                )
        if plan.blocked_update is not None:
            app, blocked = plan.blocked_update
            self.tables.identities[f"blocked:{app.value}"] = "1" if blocked else "0"
            if not blocked:
                await self.wake_all({"application": app.value})
        for entry in plan.journal:
            self.metrics.journal.labels(code=entry.code).inc()
            log.info("journal %s %s:%s %s", entry.code, entry.entity.value, entry.entity_id, entry.message)
            outcome = _RESULT_OUTCOME.get(plan.outcome, ResultOutcome.REVIEW)
            await self.topics.results.send(
                key=ev.entity_id.encode(),
                value=encode(
                    OperationResult(
                        operation_id=f"journal:{entry.code}:{ev.entity.value}:{ev.entity_id}:{ev.version}",
                        kind=f"journal.{entry.code}",
                        aggregate=f"{ev.entity.value}:{ev.entity_id}",
                        entity=ev.entity,
                        entity_id=ev.entity_id,
                        source_version=ev.version,
                        outcome=outcome,
                        error=entry.message if entry.level != "info" else None,
                        details={"code": entry.code, "message": entry.message, "level": entry.level},
                        source_committed_at=ev.source.committed_at,
                        recorded_at=self.clock(),
                    )
                ),
            )

    async def _record(
        self, op: AssignAccess | RevokeAccess, outcome: ResultOutcome, details: dict[str, Any]
    ) -> None:
        result = OperationResult(
            operation_id=op.operation_id,
            kind=op.kind,
            aggregate=op.aggregate,
            entity=op.entity,
            entity_id=op.entity_id,
            source_version=op.source_version,
            outcome=outcome,
            details=details,
            source_committed_at=op.source_committed_at,
            recorded_at=self.clock(),
        )
        await self.topics.results.send(key=op.entity_id.encode(), value=encode(result))

    # -- parking ----------------------------------------------------------------------

    def _park(self, user_id: str, parked: tuple[Parked, ...], partition: int) -> None:
        existing = list(self.tables.parked.get(user_id) or [])
        # a newer plan for the same company supersedes what waited for it
        companies = {p.operation.company_id for p in parked}
        kept = [r for r in existing if r["op"]["company_id"] not in companies]
        self.tables.parked[user_id] = kept + [_parked_to_table(p) for p in parked]
        index_key = _index_key(partition)
        index = list(self.tables.parked.get(index_key) or [])
        if user_id not in index:
            self.tables.parked[index_key] = [*index, user_id]

    async def _release_user(self, user_id: str, ids: Identities) -> bool:
        """Send what waited for this user and can go now; True when nothing waits any more."""
        waiting = [_parked_from_table(r) for r in self.tables.parked.get(user_id) or []]
        if not waiting:
            return True
        still: list[Parked] = []
        for p in waiting:
            op = planner.release(p, ids)
            if op is None:
                still.append(p)
                continue
            # wait for the ack before the table forgets it: nothing released is ever lost
            fut = await self.topics.operations.send(key=op.aggregate.encode(), value=encode(op))
            await fut
            self.metrics.planned.labels(kind=op.kind).inc()
        if len(still) != len(waiting):
            self.tables.parked[user_id] = [_parked_to_table(p) for p in still]
        return not still

    # -- results (cloud identities) ---------------------------------------------------

    async def on_result(self, event: faust.EventT) -> None:
        msg = event.message
        try:
            await self._result(msg)
        except Exception as exc:
            log.exception("planner failed on result %s[%d]@%d", msg.topic, msg.partition, msg.offset)
            await self.dead_letter(msg, f"result handling failed: {exc}", "identities", exc)

    async def _result(self, msg: faust.types.Message) -> None:
        try:
            result = decode_model(OperationResult, msg.value)
        except DecodeError as exc:
            await self.dead_letter(msg, exc.reason, "decode", exc)
            return
        if result.outcome not in (ResultOutcome.APPLIED, ResultOutcome.ALREADY_APPLIED):
            return
        if result.kind == "application_instance.register":
            self.tables.identities[f"instance:{result.entity_id}"] = json.dumps(result.details)
            return
        if result.cloud_id is None or result.entity not in (EntityType.USER, EntityType.COMPANY):
            return
        key = f"{result.entity.value}:{result.entity_id}"
        if self.tables.identities.get(key) == result.cloud_id:
            return
        self.tables.identities[key] = result.cloud_id
        if result.entity is EntityType.USER:
            # results are keyed by user id: this is the partition of the user's parked entry
            await self._release_user(result.entity_id, identities_of(self.tables.identities))
        else:
            await self.wake_all({"company_id": result.entity_id, "cloud_id": result.cloud_id})

    async def wake_all(self, payload: dict[str, str]) -> None:
        body = json.dumps(payload).encode()
        for partition in range(self.partitions):
            fut = await self.topics.wakeups.send(key=b"wakeup", value=body, partition=partition)
            await fut

    async def on_wakeup(self, event: faust.EventT) -> None:
        msg = event.message
        try:
            payload = json.loads(msg.value or b"{}")
            ids = identities_of(self.tables.identities)
            if "company_id" in payload:  # the global table may lag behind the message
                companies = dict(ids.companies)
                companies[payload["company_id"]] = payload["cloud_id"]
                ids = Identities(ids.users, companies, ids.instances, ids.blocked)
            index_key = _index_key(msg.partition)
            users = list(self.tables.parked.get(index_key) or [])
            remaining = [u for u in users if not await self._release_user(u, ids)]
            if remaining != users:
                self.tables.parked[index_key] = remaining
        except Exception as exc:
            log.exception("planner failed on wake-up %s[%d]@%d", msg.topic, msg.partition, msg.offset)
            await self.dead_letter(msg, f"release failed: {exc}", "release", exc)

    def parked_count(self) -> int:
        return sum(len(v or []) for k, v in self.tables.parked.items() if not k.startswith("#"))

    # -- dead letters -----------------------------------------------------------------

    async def dead_letter(
        self, msg: faust.types.Message, reason: str, stage: str, exc: BaseException | None
    ) -> None:
        headers = error_headers(
            reason=reason,
            stage=stage,
            exception=type(exc).__name__ if exc else "",
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
        )
        await self.topics.dlq.send(key=msg.key, value=msg.value, headers=headers)
        self.metrics.dlq.labels(topic=DIRECTORY_DLQ.name).inc()
        log.warning("dead-lettered %s[%d]@%d (%s): %s", msg.topic, msg.partition, msg.offset, stage, reason)
