"""The Grafana dashboards and the Prometheus alert rules, checked without any server.

Whether their queries run and return data on a live pipeline: tests/integration/test_prometheus.py.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from cloudcapture.metrics import CaptureMetrics
from processors.metrics import PlannerMetrics
from producers.metrics import ProducerMetrics
from schemas.topics import DIRECTORY_DLQ, OPERATIONS_DLQ
from sinks.directory_metrics import DirectorySinkMetrics
from sinks.metrics import SinkMetrics
from tests.fixtures.prometheus import (
    ALERT_RULES,
    ALERT_TESTS,
    GRAFANA_VARIABLES,
    alert_operands,
    alert_rules,
    dashboard_queries,
)
from vudsync.ops.lag_exporter import LagMetrics

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "dashboards"
RUNBOOK = REPO / "docs" / "operations-metrics.md"

#: the metric names of ARCHITECTURE.md ("names to keep consistent across code, dashboards, alerts")
ARCHITECTURE_METRICS = (
    "vudsync_source_changes_captured_total",
    "vudsync_source_capture_lag_seconds",
    "vudsync_planner_events_total",
    "vudsync_operations_planned_total",
    "vudsync_sink_operations_total",
    "vudsync_sink_apply_seconds",
    "vudsync_end_to_end_seconds",
    "vudsync_consumer_lag_messages",
    "vudsync_parked_operations",
    "vudsync_dlq_messages_total",
    "vudsync_cloud_circuit_open",
)


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dashboards_generate", DASHBOARDS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def _exported_series() -> set[str]:
    """Every series name the components can export, from their metrics modules (one registry
    each, as in the processes): counters as ``_total``, histograms as ``_bucket/_sum/_count``."""
    names = {"up"}
    components = (ProducerMetrics, PlannerMetrics, SinkMetrics, CaptureMetrics, DirectorySinkMetrics)
    for build in (*components, lambda r: LagMetrics(r, max_age=30)):
        registry = CollectorRegistry()
        build(registry)
        for family in registry.collect():
            if family.type == "counter":
                names.add(family.name + "_total")
            elif family.type == "histogram":
                names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
            else:
                names.add(family.name)
    return names


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bvudsync_[a-z0-9_]+\b", expr)) | (
        {"up"} if re.search(r"\bup\{", expr) else set()
    )


# -- dashboards ---------------------------------------------------------------------------


def test_committed_dashboards_are_what_the_generator_writes() -> None:
    rendered = _generator().render()
    assert sorted(rendered) == sorted(_dashboards()), "run: python dashboards/generate.py"
    for name, text in rendered.items():
        assert (DASHBOARDS / name).read_text() == text, f"{name} drifted; run: python dashboards/generate.py"


def test_there_is_an_overview_and_one_dashboard_per_component() -> None:
    uids = [d["uid"] for d in _dashboards().values()]
    assert len(uids) == len(set(uids))
    assert set(uids) == {
        "vudsync-overview",
        "vudsync-producer",
        "vudsync-planner",
        "vudsync-sink",
        "vudsync-lag",
    }
    for dashboard in _dashboards().values():
        assert "vudsync" in dashboard["tags"] and dashboard["title"]


def test_every_panel_reads_the_datasource_by_variable() -> None:
    uid = _generator().DATASOURCE_UID
    for name, dashboard in _dashboards().items():
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        ds = variables["datasource"]
        assert (ds["type"], ds["query"], ds["current"]["value"]) == ("datasource", "prometheus", uid), name
        for panel in dashboard["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            refs = [t["refId"] for t in panel["targets"]]
            assert refs and len(refs) == len(set(refs)), panel["title"]
            for target in panel["targets"]:
                assert target["datasource"] == panel["datasource"] and target["expr"].strip()


def test_panels_fit_the_grid_without_overlapping() -> None:
    for name, dashboard in _dashboards().items():
        taken: set[tuple[int, int]] = set()
        for panel in dashboard["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, (name, panel["title"])
            cells = {
                (x, y)
                for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])
            }
            assert not cells & taken, (name, panel["title"])
            taken |= cells


def test_queries_use_only_variables_the_dashboard_defines() -> None:
    builtin = {"__rate_interval"}
    for name, dashboard in _dashboards().items():
        defined = {v["name"] for v in dashboard["templating"]["list"]} | builtin
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                used = set(re.findall(r"\$(\w+)", target["expr"]))
                assert used <= defined, (name, panel["title"], used - defined)
                assert {f"${u}" for u in used} <= set(GRAFANA_VARIABLES), "the integration test must know it"


def test_every_metric_queried_is_exported_by_a_component() -> None:
    exported = _exported_series()
    queried = [(q.where, q.expr) for q in dashboard_queries()]
    queried += [(f"alert {r['alert']}", r["expr"]) for r in alert_rules()]
    for where, expr in queried:
        unknown = _metric_names(expr) - exported
        assert not unknown, f"{where} queries {sorted(unknown)}, which no component exports"


def test_the_architecture_metrics_are_on_the_dashboards_and_the_overview_has_the_essentials() -> None:
    exprs = " ".join(q.expr for q in dashboard_queries())
    for metric in ARCHITECTURE_METRICS:
        assert metric.removesuffix("_total") in exprs, f"no dashboard shows {metric}"
    overview = " ".join(q.expr for q in dashboard_queries() if q.where.startswith("vudsync-overview.json"))
    for needle in (
        "vudsync_source_changes_captured_total",  # throughput per stage
        "vudsync_operations_planned_total",
        "vudsync_sink_operations_total",
        "histogram_quantile(0.5, sum by (le) (rate(vudsync_end_to_end_seconds_bucket",  # latency quantiles
        "histogram_quantile(0.95, sum by (le) (rate(vudsync_end_to_end_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(vudsync_end_to_end_seconds_bucket",
        "sum by (reason) (rate(vudsync_sink_retries_total",  # errors by reason and outcome
        "sum by (outcome) (rate(vudsync_sink_operations_total",
        "vudsync_consumer_lag_messages",
        "vudsync_dlq_messages_total",
        "vudsync_parked_operations",
        "vudsync_held_deletions",
        "vudsync_cloud_circuit_open",
    ):
        assert needle in overview, needle


def test_grafana_provisioning_points_at_the_dashboards_and_the_datasource_uid() -> None:
    datasources = yaml.safe_load((DASHBOARDS / "provisioning" / "datasources" / "vudsync.yml").read_text())
    (ds,) = datasources["datasources"]
    assert (ds["type"], ds["uid"]) == ("prometheus", _generator().DATASOURCE_UID)
    providers = yaml.safe_load((DASHBOARDS / "provisioning" / "dashboards" / "vudsync.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


# -- alert rules --------------------------------------------------------------------------


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_has_severity_summary_description_and_a_runbook_that_exists() -> None:
    anchors = {_slug(line.lstrip("#")) for line in RUNBOOK.read_text().splitlines() if line.startswith("#")}
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page == "docs/operations-metrics.md" and anchor in anchors, (rule["alert"], anchor)


def test_the_issue_asks_for_these_alerts() -> None:
    exprs = {r["alert"]: r["expr"] for r in alert_rules()}
    assert "up{" in exprs["VudsyncComponentDown"] and "== 0" in exprs["VudsyncComponentDown"]
    assert "vudsync_consumer_lag_messages" in exprs["VudsyncSyncStalled"]
    assert "deriv(vudsync_consumer_lag_messages" in exprs["VudsyncConsumerLagGrowing"]
    assert "histogram_quantile(0.99" in exprs["VudsyncEndToEndLatencyHigh"]
    assert "increase(vudsync_dlq_messages_total" in exprs["VudsyncDeadLetters"]
    assert "vudsync_cloud_circuit_open" in exprs["VudsyncCloudCircuitOpen"]
    assert "vudsync_held_deletions" in exprs["VudsyncDeletionsHeld"]


def test_every_alert_has_a_promtool_test_where_it_fires_and_one_where_it_does_not() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    assert tests["rule_files"] == [ALERT_RULES.name]
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names <= fires, f"never seen firing: {sorted(names - fires)}"
    assert names <= quiet, f"never seen quiet: {sorted(names - quiet)}"


def test_dead_letter_counters_start_at_zero_so_that_the_first_dead_letter_alerts() -> None:
    """``increase()`` needs a sample before the first dead letter: a counter that appears at 1
    never increases for Prometheus, and VudsyncDeadLetters would stay silent."""
    for build, topic in (
        (ProducerMetrics, DIRECTORY_DLQ),
        (PlannerMetrics, DIRECTORY_DLQ),
        (SinkMetrics, OPERATIONS_DLQ),
    ):
        registry = CollectorRegistry()
        build(registry)
        assert registry.get_sample_value("vudsync_dlq_messages_total", {"topic": topic.name}) == 0, build


@pytest.mark.parametrize(
    ("expr", "operands"),
    [
        ("up == 0", ["up"]),
        ('sum(a) > 0 unless sum(b{x=~"p>q"}) > 0', ["sum(a)", 'sum(b{x=~"p>q"})']),
        ('absent(up{job="a"}) or absent(up{job="b"})', ['up{job="a"}', 'up{job="b"}']),
        ("(sum(a) >= 3) and on(g) group_left(h) b", ["sum(a)", "b"]),
        (
            "histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m]))) > 60",
            ["histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m])))"],
        ),
        ("sum(operations_total) / sum(orders) > bool 0.5", ["sum(operations_total) / sum(orders)"]),
    ],
)
def test_alert_operands_take_off_thresholds_set_operators_and_absent(expr: str, operands: list[str]) -> None:
    assert alert_operands(expr) == operands
