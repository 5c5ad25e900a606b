"""The planner's cheaper paths build and encode exactly what the slow ones did.

- operations are validated straight through pydantic-core's validator (``_op``), not through
  ``cls(**fields)``: the same models, the same fields set, the same JSON;
- :func:`schemas.codec.encode` goes straight to pydantic-core's serializer: the bytes of
  ``model_dump_json().encode()``, for operations, results and control messages alike.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from devtools.bench.planner import directory_events, known_table
from processors.engine import Coords, Reconciler
from processors.model import PlannerSettings
from schemas.codec import decode_event, decode_operation, encode
from schemas.operations import CLOUD_OPERATION_ADAPTER
from tests.fakes import apply_writes


def _reconcile(events: list[tuple[str, bytes]], table: dict[str, Any], threshold: int) -> list[Any]:
    """Every message sent, and every operation parked (deactivations wait for the gate)."""
    now = datetime(2026, 11, 28, 1, 2, 3, 456789, tzinfo=UTC)
    reconciler = Reconciler(table, PlannerSettings(deletes_threshold=threshold), 1, lambda: now)
    sent: list[Any] = []
    for offset, (_, raw) in enumerate(events):
        fx = reconciler.on_directory_event(decode_event(raw), Coords("users", 0, offset), offset)
        sent.extend(s.value for s in fx.sends)
        apply_writes(table, fx.writes)
    parked = [item["op"] for key, items in table.items() if key.startswith("p|") for item in items]
    return sent + [CLOUD_OPERATION_ADAPTER.validate_python(op) for op in parked]


def _planned() -> list[Any]:
    events = directory_events(1500, seed=5)  # companies, new users, updates, removals; Ø and Å
    known = _reconcile(events, known_table(events), 10**9)
    # half the identities unknown and a low deletion threshold: parked, blocked, held results
    table = known_table(events)
    for key in [k for k in table if not k.endswith("|connect:installation")][::2]:  # still connected
        del table[key]
    return known + _reconcile(events, table, 3)


def test_planned_operations_equal_validated_ones_and_encode_identically() -> None:
    sent = _planned()
    kinds = {type(v).__name__ for v in sent}
    assert {"UpsertUser", "UpsertCompany", "AssignAccess", "RevokeAccess", "DeactivateUser"} <= kinds
    assert {"OperationResult", "DeletionRequested"} <= kinds
    for value in sent:
        assert encode(value) == value.model_dump_json().encode()
        if value.__class__.__name__ in ("OperationResult", "DeletionRequested"):
            continue
        validated = type(value)(**{name: getattr(value, name) for name in value.model_fields_set})
        assert validated == value
        assert validated.model_fields_set == value.model_fields_set
        assert list(validated.__dict__) == list(value.__dict__)  # the JSON follows this order
        assert encode(validated) == encode(value)
        assert decode_operation(encode(value)) == value
