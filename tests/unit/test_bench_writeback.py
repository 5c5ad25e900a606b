"""The writeback bench's figures from the times a change's path records. Pure."""

from __future__ import annotations

from devtools.bench.writeback import stage_figures


def _times(cloud: float, published: float, planned: float, sent: float, applied: float) -> dict[str, float]:
    return {"cloud": cloud, "published": published, "planned": planned, "sent": sent, "applied": applied}


def test_each_stage_is_the_span_between_two_points_and_a_revoke_is_also_given_less_the_settle() -> None:
    # two revokes: 0.5 s capture, 0.05 s plan, the gate's 5 s settle (+ 0.2 / 0.4 s tick), 0.05 s apply
    times = [_times(0.0, 0.5, 0.55, 5.75, 5.8), _times(10.0, 10.5, 10.55, 15.95, 16.0)]
    figures = stage_figures(times, minus=5.0)
    assert figures["count"] == 2
    assert figures["stages"]["capture"] == {"p50_ms": 500.0, "p99_ms": 500.0}
    assert figures["stages"]["gate"]["p50_ms"] == 5200.0 and figures["dominant_stage"] == "gate"
    assert figures["latency_p50_ms"] == 5800.0 and figures["latency_max_ms"] == 6000.0
    assert figures["minus_settle"]["latency_p50_ms"] == 800.0
    assert figures["minus_settle"]["latency_max_ms"] == 1000.0


def test_a_grant_has_no_figures_less_a_settle_and_an_incomplete_path_is_left_out() -> None:
    figures = stage_figures([_times(0.0, 0.5, 0.55, 0.56, 0.6), {"cloud": 1.0, "published": 1.5}])
    assert figures["count"] == 1 and "minus_settle" not in figures
    assert figures["dominant_stage"] == "capture"
