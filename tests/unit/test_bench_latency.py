"""The live phase's latency breakdown (``devtools.bench.latency``): per kind, ungated, gated."""

from __future__ import annotations

import math

from devtools.bench.latency import Applied, breakdown, table


def _applied() -> list[Applied]:
    return [
        Applied("user.upsert", 0.0, 0.2),
        Applied("user.upsert", 0.0, 0.4),
        Applied("access.assign", 0.0, 0.3),
        Applied("user.deactivate", 0.0, 9.0, gated=True, held_seconds=8.5),
        Applied("access.revoke_entry", 0.0, 7.0, gated=True, held_seconds=6.0),
        Applied("access.revoke_entry", 0.0, 3.0, gated=True, held_seconds=None),
    ]


def test_figures_per_kind_add_up_to_every_operation() -> None:
    report = breakdown(_applied())
    by_kind = report["latency_by_kind"]
    assert list(by_kind) == ["access.assign", "access.revoke_entry", "user.deactivate", "user.upsert"]
    assert sum(f["operations"] for f in by_kind.values()) == 6
    assert by_kind["user.upsert"]["latency_max_ms"] == 400.0
    assert by_kind["access.revoke_entry"]["latency_max_ms"] == 7000.0


def test_gated_operations_apart_and_without_the_time_the_gate_held_them() -> None:
    report = breakdown(_applied())
    assert report["ungated"]["operations"] == 3 and report["ungated"]["latency_max_ms"] == 400.0
    gated = report["gated"]
    assert gated["operations"] == 3 and gated["latency_max_ms"] == 9000.0
    assert gated["operations_by_kind"] == {"access.revoke_entry": 2, "user.deactivate": 1}
    assert gated["held_unknown"] == 1  # its decision was not found: no held time, not guessed
    assert gated["held_by_gate"]["operations"] == gated["without_gate_hold"]["operations"] == 2
    assert gated["held_by_gate"]["latency_max_ms"] == 8500.0
    assert gated["without_gate_hold"]["latency_max_ms"] == 1000.0  # 7.0 - 6.0 s
    assert "vud.planner.control" in report["gated_basis"]


def test_no_operations_give_empty_figures() -> None:
    report = breakdown([])
    assert report["latency_by_kind"] == {}
    assert report["ungated"]["operations"] == report["gated"]["operations"] == 0
    assert math.isnan(report["gated"]["latency_p99_ms"])


def test_the_human_table_names_each_group_and_kind() -> None:
    applied = _applied()
    live = {"operations_applied": len(applied), **breakdown(applied)}
    live |= {"latency_p50_ms": 400.0, "latency_p99_ms": 9000.0, "latency_max_ms": 9000.0}
    text = "\n".join(table(live))
    for label in ("ungated (the path)", "gated, without the gate's hold", "user.deactivate", "1 gated"):
        assert label in text
