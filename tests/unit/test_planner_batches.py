"""Planning in batches is planning one message at a time (hypothesis).

The planner's agent takes its messages in batches (``take_events``) and plans each batch with
:meth:`Reconciler.on_batch`: one shared read-through transaction, one write per key, the
acknowledgements awaited once. Property: for any input and any split of it into batches, the
batches send the same records — operations with the same ids, in the same order (so in the
same order per aggregate), the same results, facts and control messages — and leave the same
table as the messages handled one at a time, each one's effects performed before the next.

The input is what the planner received in a simulated pipeline run
(tests/unit/test_planner_properties.py: any interleaving of the directory, the sink, the cloud
and the planner, with redeliveries, and with the accidental-delete gate holding deletions until
an operator approves), taped message by message.
"""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from processors.control import DeletionsDecided
from processors.effects import BatchTx, Coords, Effects
from processors.engine import Input, Reconciler
from processors.model import PlannerSettings
from tests.factories import T0
from tests.unit.test_planner_properties import PARTITIONS, PROFILE, Directory, Pipeline, changes


class Taping(Reconciler):
    """The reconciler the pipeline runs, noting every message it is given and what it sent."""

    def __init__(self, table: dict[str, Any], settings: PlannerSettings) -> None:
        super().__init__(table, settings, PARTITIONS, lambda: T0 + timedelta(hours=1))
        self.tape: list[Input] = []
        self.sent: list[tuple[Any, ...]] = []

    def _taped(self, item: Input, fx: Effects) -> Effects:
        self.tape.append(item)
        self.sent += [_record(s) for s in fx.sends]
        return fx

    def on_directory_event(self, ev: Any, coords: Coords, committed: int | None, tx: Any = None) -> Effects:
        fx = super().on_directory_event(ev, coords, committed, tx)
        return fx if tx is not None else self._taped(Input("directory", ev, coords, committed), fx)

    def on_result(self, result: Any, coords: Coords, tx: Any = None) -> Effects:
        fx = super().on_result(result, coords, tx)
        return fx if tx is not None else self._taped(Input("result", result, coords), fx)

    def on_fact(self, fact: Any, coords: Coords, tx: Any = None) -> Effects:
        fx = super().on_fact(fact, coords, tx)
        return fx if tx is not None else self._taped(Input("fact", fact, coords), fx)

    def on_control(self, msg: Any, coords: Coords, tx: Any = None) -> Effects:
        fx = super().on_control(msg, coords, tx)
        return fx if tx is not None else self._taped(Input("control", msg, coords), fx)


def _record(send: Any) -> tuple[Any, ...]:
    return (send.role, send.key, send.partition, send.value.model_dump(mode="json"))


def taped_run(directory: Directory, data: st.DataObject, gate_holds: bool) -> tuple[Taping, dict[str, Any]]:
    pipe = Pipeline(directory)
    settings = PlannerSettings(deletes_threshold=0 if gate_holds else 10_000)
    pipe.planner = taping = Taping(pipe.table, settings)
    for _ in range(data.draw(st.integers(0, 120), label="steps")):
        options = pipe.choices()
        if not options:
            break
        dup = data.draw(st.one_of(st.none(), st.integers(0, 1000)), label="duplicate")
        pipe.step(data.draw(st.sampled_from(options), label="next"), dup)
    pipe.drain()
    if gate_holds:
        pipe.inbox[("control", 0)].append(DeletionsDecided(approve=True, operator="ops", decided_at=T0))
        pipe.drain()
    return taping, dict(pipe.table)


def in_batches(
    tape: list[Input], cuts: list[int], settings: PlannerSettings
) -> tuple[list[Any], dict[str, Any]]:
    """Plan ``tape`` in batches split at ``cuts``; each batch's effects performed before the next."""
    table: dict[str, Any] = {}
    planner = Reconciler(table, settings, PARTITIONS, lambda: T0 + timedelta(hours=1))
    sent: list[Any] = []
    bounds = [0, *sorted({c % (len(tape) + 1) for c in cuts}), len(tape)]
    for start, end in itertools.pairwise(bounds):
        fx = planner.on_batch(tape[start:end])
        assert fx.failed == []
        sent += [_record(s) for s in fx.sends]
        for key, value in fx.writes.items():
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
        assert fx.partitions is not None and set(fx.partitions) == set(fx.writes)
    return sent, table


@PROFILE
@given(changes, st.data(), st.booleans())
def test_any_split_into_batches_plans_what_one_message_at_a_time_plans(
    changes: list[Any], data: st.DataObject, gate_holds: bool
) -> None:
    taping, table = taped_run(Directory.build(changes), data, gate_holds)
    cuts = data.draw(st.lists(st.integers(0, 10_000), max_size=12), label="cuts")
    sent, batched_table = in_batches(taping.tape, cuts, taping.settings)
    assert sent == taping.sent
    assert batched_table == table


@PROFILE
@given(changes, st.data())
def test_one_batch_of_everything_plans_what_one_message_at_a_time_plans(
    changes: list[Any], data: st.DataObject
) -> None:
    taping, table = taped_run(Directory.build(changes), data, False)
    sent, batched_table = in_batches(taping.tape, [], taping.settings)
    assert sent == taping.sent and batched_table == table


def test_a_message_that_fails_leaves_no_effect_and_the_others_go_on() -> None:
    class Failing(Reconciler):
        def on_fact(self, fact: Any, coords: Coords, tx: Any = None) -> Effects:
            assert tx is not None
            tx.set("k|0|user:u9", "half-written")  # then fails: rolled back
            raise RuntimeError("a bug")

    table: dict[str, Any] = {"k|0|user:u9": "before"}
    planner = Failing(table, PlannerSettings(), 1, lambda: T0)
    fx = planner.on_batch(
        [
            Input("fact", None, Coords("facts", 0, 1)),
            Input("result", _unapplied(), Coords("results", 0, 2)),
        ]
    )
    assert [i for i, _ in fx.failed] == [0] and isinstance(fx.failed[0][1], RuntimeError)
    assert fx.writes == {} and fx.sends == []


def _unapplied() -> Any:
    from processors.model import Identities
    from processors.planner import plan
    from schemas.results import OperationResult, ResultOutcome
    from tests.factories import user_event

    op = plan(None, user_event(3), Identities(), PlannerSettings(), now=T0).operations[0]
    return OperationResult.for_operation(op, ResultOutcome.FAILED, T0)


def test_the_batch_transaction_undoes_only_the_current_message() -> None:
    tx = BatchTx({"a": 0})
    tx.begin(1)
    tx.set("a", 1)
    tx.set("k", "known", late=True)
    tx.begin(2)
    tx.set("a", 2)
    tx.set("k", "other")
    tx.set("b", 3, late=True)
    tx.rollback()
    assert (tx.get("a"), tx.get("k"), tx.get("b")) == (1, "known", None)
    assert tx.all_writes() == {"a": 1, "k": "known"} and tx.partitions == {"a": 1, "k": 1}
    assert list(tx.all_writes())[-1] == "k", "late writes go last"
