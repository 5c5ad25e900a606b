"""The connection: nothing goes to the cloud before ``vudsync connect`` has succeeded. Pure.

``vudsync connect`` checks the Customer administrator's credentials, publishes what the cloud
holds as facts, and — last, so that a partition that has it has every other fact of that run —
a *connect* fact (``PlannerFact(kind=connect, subject="installation", present=True)``) to
every partition. Each partition keeps its copy under ``k|<p>|connect:installation``
(``{"present", "at"}``; a later ``observed_at`` wins).

While a partition has no such copy, or its copy says ``present=False`` (what a disconnect would
publish), every operation it plans or releases waits for the need ``connect:installation``
(:func:`processors.planner.needs_of`): parked, with a *parked* result naming the need. The
connect fact releases them (:mod:`processors.facts`). Operations sent before a disconnect are
not recalled; those planned after it wait again.

The journal says it once per installation, not once per partition: a partition that parks the
first operation on ``connect`` marks its copy (``asked``) and tells the gate's partition
(:class:`~processors.control.ConnectAwaited`, to partition 0), which journals "waiting for
connect" once (``said``) for the connection state it has — again only after a disconnect.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from processors import journal, keys
from processors.control import GATE_PARTITION, ConnectAwaited
from processors.effects import Effects, Tx
from processors.keys import Known
from processors.model import JournalEntry, Planned
from processors.needs import CONNECT_SUBJECT


def state_key(partition: int) -> str:
    return keys.known_key(partition, Known.CONNECT, CONNECT_SUBJECT)


def is_connected(tx: Tx, partition: int) -> bool:
    raw = tx.get(state_key(partition))
    return raw is not None and bool(raw["present"])


def newer(old: Any, present: bool, at: float) -> dict[str, Any] | None:
    """The partition's new copy after a connect fact saying ``present`` at ``at`` (None: the
    fact is not newer than what the copy holds). The marks of the state it replaces go."""
    if old is not None and old["at"] >= at:
        return None
    return {"present": present, "at": at}


def mark(tx: Tx, partition: int, flag: str) -> bool:
    """Set ``flag`` (``asked`` or ``said``) on the unconnected copy of ``partition``; False
    when it was set already (said once per connection state) or the partition is connected."""
    key = state_key(partition)
    raw = tx.get(key) or {"present": False, "at": 0.0}
    if raw["present"] or raw.get(flag):
        return False
    tx.set(key, {**raw, flag: True})
    return True


def awaited(tx: Tx, fx: Effects, partition: int, op: Planned) -> None:
    """``op`` parked on ``connect`` on ``partition``: the first time in this connection state,
    tell the gate's partition (which journals it once for the installation)."""
    if mark(tx, partition, "asked"):
        msg = ConnectAwaited(
            partition=partition,
            entity=op.entity,
            entity_id=op.entity_id,
            version=op.source_version,
            committed_at=op.source_committed_at,
        )
        fx.send("control", CONNECT_SUBJECT, msg, GATE_PARTITION)


def say_waiting(tx: Tx, fx: Effects, partition: int, msg: ConnectAwaited, now: datetime) -> None:
    """On the gate's partition: journal "waiting for connect" once per connection state (not
    at all when this partition is connected: the fact is on its way to the one that asked)."""
    if not mark(tx, partition, "said"):
        return
    entry = JournalEntry(
        msg.entity,
        msg.entity_id,
        "waiting_for_connect",
        "nothing is sent to the cloud before `vudsync connect` has succeeded for this installation: "
        f"operations wait for it (the first: {msg.entity.value} {msg.entity_id}); run `vudsync connect` "
        "with a Customer administrator's credentials",
        "warning",
        msg.version,
        msg.committed_at,
    )
    journal.record(fx, entry, now)
