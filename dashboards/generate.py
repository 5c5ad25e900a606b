"""Writes the Grafana dashboards of vudsync: ``python dashboards/generate.py``.

The ``*.json`` files beside this script are its output, committed, so that Grafana's
provisioning (``dashboards/provisioning/``) needs nothing but the files. Edit this script, run
it, commit both; ``tests/unit/test_dashboards.py`` fails when the JSON drifts from it.

Why a generator rather than hand-edited JSON: every panel gets the datasource by variable
(``${datasource}``, uid ``vudsync-prometheus`` by default), the same layout grid, units and
legends, and the queries are readable here in one place. Metric names are exactly those of
ARCHITECTURE.md (the tests check each name against what the components export).

Dashboards: an overview, and one per component (producer, planner, sink, lag exporter).
Grafana variables used in queries: ``$__rate_interval``, ``$instance`` (component
dashboards), ``$group`` (lag dashboard). Nothing else.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATASOURCE_UID = "vudsync-prometheus"
DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
APPLIED = 'outcome=~"applied|already_applied"'
NOT_APPLIED = 'outcome!~"applied|already_applied"'
# consumer lag comes from the lag exporter only (a component may export a partial view of its own)
LAG_JOB = 'job="vudsync-lag-exporter"'

# --- panels ------------------------------------------------------------------------------


def target(expr: str, legend: str = "__auto", ref: str = "A") -> dict[str, Any]:
    return {"datasource": DS, "refId": ref, "expr": expr, "legendFormat": legend, "range": True}


def _targets(queries: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(queries)]


def _thresholds(steps: list[tuple[float | None, str]]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": color, "value": value} for value, color in steps]}


def timeseries(
    title: str,
    description: str,
    queries: list[tuple[str, str]],
    *,
    unit: str = "short",
    stepped: bool = False,
    width: int = 12,
) -> dict[str, Any]:
    custom: dict[str, Any] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}
    if stepped:
        custom["lineInterpolation"] = "stepAfter"
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": _targets(queries),
        "fieldConfig": {"defaults": {"unit": unit, "min": 0, "custom": custom}, "overrides": []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "_size": (width, 8),
    }


def stat(
    title: str,
    description: str,
    queries: list[tuple[str, str]],
    *,
    unit: str = "short",
    thresholds: list[tuple[float | None, str]] | None = None,
    mappings: list[dict[str, Any]] | None = None,
    width: int = 6,
) -> dict[str, Any]:
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": _targets(queries),
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "thresholds": _thresholds(thresholds or [(None, "green")]),
                "mappings": mappings or [],
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "auto",
            "justifyMode": "auto",
            "orientation": "auto",
        },
        "_size": (width, 4),
    }


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "_size": (24, 1)}


def _circuit_mappings() -> list[dict[str, Any]]:
    return [
        {
            "type": "value",
            "options": {
                "0": {"text": "closed", "color": "green", "index": 0},
                "1": {"text": "OPEN", "color": "red", "index": 1},
            },
        }
    ]


def _quantiles(metric: str, selector: str = "") -> list[tuple[str, str]]:
    return [
        (
            f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{selector}[{RATE}])))",
            f"p{int(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


def _rate_by(label: str, metric: str, selector: str) -> tuple[str, str]:
    """Per second, summed by ``label``, legend the label's value."""
    return f"sum by ({label}) (rate({metric}{{{selector}}}[{RATE}]))", f"{{{{{label}}}}}"


def _up(title: str, description: str, selector: str, *, width: int = 6) -> dict[str, Any]:
    """How many of a job's processes answer the scrape: red at none."""
    return stat(
        title,
        description,
        [(f"sum(up{{{selector}}})", "up")],
        thresholds=[(None, "red"), (1, "green")],
        width=width,
    )


def _dead_letters_last_hour(description: str, selector: str) -> dict[str, Any]:
    return stat(
        "Dead letters (1 h)",
        description,
        [(f"sum(increase(vudsync_dlq_messages_total{{{selector}}}[1h]))", "dead letters")],
        thresholds=[(None, "green"), (1, "orange")],
    )


def _dead_letters(description: str, selector: str) -> dict[str, Any]:
    return timeseries(
        "Dead letters", description, [_rate_by("topic", "vudsync_dlq_messages_total", selector)], unit="ops"
    )


# --- dashboards --------------------------------------------------------------------------


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    panels: list[dict[str, Any]]
    variables: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["vudsync"],
            "timezone": "browser",
            "editable": True,
            "graphTooltip": 1,
            "schemaVersion": 39,
            "version": 1,
            "time": {"from": "now-1h", "to": "now"},
            "refresh": "30s",
            "links": [
                {
                    "type": "dashboards",
                    "title": "vudsync",
                    "tags": ["vudsync"],
                    "asDropdown": True,
                    "includeVars": False,
                    "keepTime": True,
                }
            ],
            "annotations": {"list": []},
            "templating": {"list": [_datasource_variable(), *self.variables]},
            "panels": _layout(self.panels),
        }


def _layout(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Left to right, wrapping at Grafana's 24 columns; ids in order."""
    out: list[dict[str, Any]] = []
    x = y = line_height = 0
    for number, panel in enumerate(panels, start=1):
        panel = dict(panel)
        w, h = panel.pop("_size")
        if x + w > 24:
            x, y, line_height = 0, y + line_height, 0
        out.append({"id": number, "gridPos": {"h": h, "w": w, "x": x, "y": y}, **panel})
        x += w
        line_height = max(line_height, h)
    return out


def _datasource_variable() -> dict[str, Any]:
    return {
        "name": "datasource",
        "label": "Prometheus",
        "type": "datasource",
        "query": "prometheus",
        "current": {"selected": False, "text": "Prometheus (vudsync)", "value": DATASOURCE_UID},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "options": [],
    }


def _label_variable(name: str, label: str, definition: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "definition": definition,
        "query": {"qryType": 1, "query": definition, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "sort": 1,
        "hide": 0,
        "regex": "",
    }


def _instance_variable(job: str) -> dict[str, Any]:
    return _label_variable("instance", "Instance", f'label_values(up{{job="{job}"}}, instance)')


def _selector(job: str) -> str:
    """A component dashboard's selector: its job, the instances picked in ``$instance``."""
    return f'job="{job}", instance=~"$instance"'


def _component(job: str, title: str, description: str, panels: list[dict[str, Any]]) -> Dashboard:
    """A component's dashboard (uid: its job), with the ``$instance`` variable."""
    return Dashboard(job, title, description, panels, [_instance_variable(job)])


def overview() -> Dashboard:
    panels = [
        row("Health"),
        stat(
            "Components up",
            "Scraped targets that answer, per job. 0: the component is down (alert VudsyncComponentDown).",
            [('sum by (job) (up{job=~"vudsync-.*"})', "{{job}}")],
            thresholds=[(None, "red"), (1, "green")],
        ),
        stat(
            "Cloud circuit",
            "OPEN: a sink stopped calling the cloud after repeated failures (alert VudsyncCloudCircuitOpen).",
            [("max(vudsync_cloud_circuit_open)", "circuit")],
            thresholds=[(None, "green"), (1, "red")],
            mappings=_circuit_mappings(),
        ),
        stat(
            "Parked operations",
            "Access assignments waiting for their user and company to exist in the cloud.",
            [("sum(vudsync_parked_operations)", "parked")],
            thresholds=[(None, "green"), (1, "yellow")],
        ),
        stat(
            "Held deletions",
            "Deletions held for an operator's confirmation (accidental-delete protection).",
            [("sum(vudsync_held_deletions)", "held")],
            thresholds=[(None, "green"), (1, "red")],
        ),
        stat(
            "Dead letters (1 h)",
            "Messages dead-lettered in the last hour, per dead-letter topic (alert VudsyncDeadLetters).",
            [("sum by (topic) (increase(vudsync_dlq_messages_total[1h]))", "{{topic}}")],
            thresholds=[(None, "green"), (1, "orange")],
            width=12,
        ),
        stat(
            "Consumer lag",
            "Messages each consumer group still has to read.",
            [(f"sum by (group) (vudsync_consumer_lag_messages{{{LAG_JOB}}})", "{{group}}")],
            thresholds=[(None, "green"), (1000, "orange")],
        ),
        stat(
            "Capture lag",
            "Age of the oldest change in the store's change log not yet emitted (0 when caught up).",
            [("max(vudsync_source_capture_lag_seconds)", "capture lag")],
            unit="s",
            thresholds=[(None, "green"), (60, "orange"), (300, "red")],
        ),
        row("Flow"),
        timeseries(
            "Throughput per stage",
            "Changes captured from the store, directory events planned, operations planned, "
            "operations applied in the cloud (per second).",
            [
                (f"sum(rate(vudsync_source_changes_captured_total[{RATE}]))", "captured"),
                (f"sum(rate(vudsync_planner_events_total[{RATE}]))", "events planned"),
                (f"sum(rate(vudsync_operations_planned_total[{RATE}]))", "operations planned"),
                (f"sum(rate(vudsync_sink_operations_total{{{APPLIED}}}[{RATE}]))", "operations applied"),
            ],
            unit="ops",
        ),
        timeseries(
            "End-to-end latency",
            "From a change committed in the directory store to its operation applied in the cloud.",
            _quantiles("vudsync_end_to_end_seconds"),
            unit="s",
        ),
        timeseries(
            "Errors by reason and outcome",
            "Dead letters per topic, sink operations that did not apply (by outcome), and cloud "
            "calls retried (by reason).",
            [
                (f"sum by (topic) (rate(vudsync_dlq_messages_total[{RATE}]))", "dead letters {{topic}}"),
                (
                    f"sum by (outcome) (rate(vudsync_sink_operations_total{{{NOT_APPLIED}}}[{RATE}]))",
                    "sink {{outcome}}",
                ),
                (f"sum by (reason) (rate(vudsync_sink_retries_total[{RATE}]))", "retried: {{reason}}"),
            ],
            unit="ops",
        ),
        timeseries(
            "Consumer lag",
            "Messages each consumer group still has to read (alerts VudsyncConsumerLagGrowing, "
            "VudsyncSyncStalled).",
            [(f"sum by (group) (vudsync_consumer_lag_messages{{{LAG_JOB}}})", "{{group}}")],
        ),
        timeseries(
            "Waiting operations and held deletions",
            "Operations waiting for prerequisites (parked), for their application (blocked), for an "
            "operator (held operations); deletions waiting for an operator.",
            [
                ("sum(vudsync_parked_operations)", "parked operations"),
                ("sum(vudsync_blocked_operations)", "blocked operations"),
                ("sum(vudsync_held_operations)", "held operations"),
                ("sum(vudsync_held_deletions)", "held deletions"),
            ],
        ),
        timeseries(
            "Cloud circuit (1 = open)",
            "Circuit breaker state of each sink worker.",
            [("max by (instance) (vudsync_cloud_circuit_open)", "{{instance}}")],
            stepped=True,
        ),
        *_writeback_capture_panels(),
        timeseries(
            "Writeback operations",
            "Directory operations planned from the cloud's changes, applied to the store (by "
            "effect), rejected (by reason: the directory cannot hold them), conflicts settled by the "
            "rule, and echoes of vudsync's own writes not written back (per second).",
            [
                (f"sum by (kind) (rate(vudsync_writeback_planned_total[{RATE}]))", "planned {{kind}}"),
                (f"sum by (effect) (rate(vudsync_writeback_applied_total[{RATE}]))", "applied: {{effect}}"),
                (f"sum by (reason) (rate(vudsync_writeback_rejected_total[{RATE}]))", "rejected: {{reason}}"),
                (f"sum(rate(vudsync_writeback_conflicts_total[{RATE}]))", "conflicts"),
                (f"sum(rate(vudsync_writeback_echo_suppressed_total[{RATE}]))", "echoes suppressed"),
            ],
            unit="ops",
        ),
        timeseries(
            "Writeback latency",
            "From a change committed in the cloud to its writeback committed in the directory store.",
            _quantiles("vudsync_writeback_latency_seconds"),
            unit="s",
        ),
    ]
    return Dashboard(
        "vudsync-overview",
        "vudsync — overview",
        "The whole pipeline on one screen: directory store → producer → Kafka → planner → sink → cloud.",
        panels,
    )


def _writeback_capture_panels() -> list[dict[str, Any]]:
    """The writeback row, cloud → directory: what cloud-capture reads from the cloud's change feed."""
    return [
        row("Writeback (cloud → directory)"),
        stat(
            "Feed lag",
            "Now minus the time of the newest item read from the cloud's change feed; 0 when the "
            "feed has no more changes.",
            [("max(vudsync_writeback_feed_lag_seconds)", "feed lag")],
            unit="s",
            thresholds=[(None, "green"), (30, "orange"), (300, "red")],
        ),
        stat(
            "Since the feed last advanced",
            "Seconds since cloud-capture last published a page and saved its cursor, or heard "
            '"no more changes" (alert VudsyncWritebackFeedStalled after 5 minutes).',
            [("time() - max(vudsync_writeback_feed_last_advance_timestamp_seconds)", "since")],
            unit="s",
            thresholds=[(None, "green"), (60, "orange"), (300, "red")],
        ),
        stat(
            "Unlinked (1 h)",
            "Cloud access not published in the last hour: its user or company has no on-premise id "
            "(or the service is no on-premise application).",
            [("sum by (resource) (increase(vudsync_writeback_unlinked_total[1h]))", "{{resource}}")],
            thresholds=[(None, "green"), (1, "yellow")],
        ),
        stat(
            "Full reads (24 h)",
            "Full reads of the cloud's access: first start, or the feed's cursor expired (410).",
            [("sum by (reason) (increase(vudsync_writeback_full_reads_total[24h]))", "{{reason}}")],
            thresholds=[(None, "green"), (1, "yellow")],
        ),
        timeseries(
            "Cloud changes read and published",
            "Items read from the cloud's change feed (per resource) and access events published on "
            "vud.cloud.changes (per second).",
            [
                (
                    f"sum by (resource) (rate(vudsync_writeback_changes_read_total[{RATE}]))",
                    "read {{resource}}",
                ),
                (f"sum(rate(vudsync_writeback_published_total[{RATE}]))", "published"),
            ],
            unit="ops",
        ),
        timeseries(
            "Feed lag and cloud reachable",
            "Feed lag in seconds; 1 while the cloud answers cloud-capture.",
            [
                ("max(vudsync_writeback_feed_lag_seconds)", "feed lag (s)"),
                ("min(vudsync_writeback_cloud_reachable)", "cloud reachable"),
            ],
        ),
    ]


def producer() -> Dashboard:
    sel = _selector("vudsync-producer")
    panels = [
        _up("Up", "Producer processes that answer (one per directory store).", sel),
        stat(
            "Capture lag",
            "Age of the oldest change not yet emitted (alert VudsyncCaptureStalled above 5 min).",
            [(f"max(vudsync_source_capture_lag_seconds{{{sel}}})", "capture lag")],
            unit="s",
            thresholds=[(None, "green"), (60, "orange"), (300, "red")],
        ),
        stat(
            "Checkpoint",
            "Change-log position up to which every change is acknowledged by Kafka.",
            [(f"max(vudsync_source_checkpoint_seq{{{sel}}})", "checkpoint")],
            unit="none",
        ),
        _dead_letters_last_hour(
            "Rows that failed validation and went to the directory dead-letter topic.", sel
        ),
        timeseries(
            "Changes captured by entity",
            "Directory changes emitted to Kafka and acknowledged, per second.",
            [_rate_by("entity", "vudsync_source_changes_captured_total", sel)],
            unit="ops",
        ),
        timeseries(
            "Capture lag",
            "Age of the oldest change in the change log not yet emitted.",
            [(f"max by (instance) (vudsync_source_capture_lag_seconds{{{sel}}})", "{{instance}}")],
            unit="s",
        ),
        timeseries(
            "Snapshot progress",
            "Share of each entity type emitted by the running (or last) snapshot.",
            [
                (
                    f"sum by (entity) (vudsync_source_snapshot_emitted{{{sel}}}) / "
                    f"clamp_min(sum by (entity) (vudsync_source_snapshot_entities{{{sel}}}), 1)",
                    "{{entity}}",
                )
            ],
            unit="percentunit",
        ),
        _dead_letters("Rows rejected by validation, per second.", sel),
        timeseries(
            "Checkpoint position",
            "The durable change-log position; flat while changes wait means capture is stuck.",
            [(f"max by (instance) (vudsync_source_checkpoint_seq{{{sel}}})", "{{instance}}")],
            unit="none",
        ),
    ]
    return _component(
        "vudsync-producer",
        "vudsync — producer (change capture)",
        "Change capture from the directory store to the vud.directory.* topics.",
        panels,
    )


def planner() -> Dashboard:
    sel = _selector("vudsync-planner")
    group = f'{LAG_JOB}, group=~".*vudsync-planner"'
    panels = [
        _up("Workers up", "Planner workers that answer.", sel, width=4),
        stat(
            "Parked operations",
            "Access assignments waiting for their user and company in the cloud.",
            [(f"sum(vudsync_parked_operations{{{sel}}})", "parked")],
            thresholds=[(None, "green"), (1, "yellow")],
            width=5,
        ),
        stat(
            "Oldest parked",
            "How long the oldest parked operation's change has waited to reach the cloud "
            "(alert VudsyncParkedTooLong; `vudsync parked list` names it).",
            [(f"max(vudsync_parked_oldest_age_seconds{{{sel}}})", "oldest")],
            unit="s",
            thresholds=[(None, "green"), (600, "yellow"), (3600, "red")],
            width=5,
        ),
        stat(
            "Held deletions",
            "Deletions waiting for an operator's confirmation (alert VudsyncDeletionsHeld).",
            [(f"sum(vudsync_held_deletions{{{sel}}})", "held")],
            thresholds=[(None, "green"), (1, "red")],
            width=5,
        ),
        stat(
            "Lag",
            "Messages the planner's consumer group still has to read.",
            [(f"sum(vudsync_consumer_lag_messages{{{group}}})", "lag")],
            thresholds=[(None, "green"), (1000, "orange")],
            width=5,
        ),
        stat(
            "Blocked operations",
            "Operations waiting for their application: its on-premise instance does not match the "
            "cloud's registry, or the registry is not known yet (`vudsync instances`, `vudsync connect`).",
            [(f"sum(vudsync_blocked_operations{{{sel}}})", "blocked")],
            thresholds=[(None, "green"), (1, "orange")],
            width=12,
        ),
        stat(
            "Held operations",
            "The operations of the held deletions (deactivations, revokes): one deletion holds one "
            "or more of them (`vudsync deletes list`).",
            [(f"sum(vudsync_held_operations{{{sel}}})", "held")],
            thresholds=[(None, "green"), (1, "red")],
            width=12,
        ),
        timeseries(
            "Events by outcome",
            "planned, no_change, stale (older version), parked, blocked, redelivered, tombstone.",
            [_rate_by("outcome", "vudsync_planner_events_total", sel)],
            unit="ops",
        ),
        timeseries(
            "Events by entity",
            "Directory events handled, per entity type.",
            [_rate_by("entity", "vudsync_planner_events_total", sel)],
            unit="ops",
        ),
        timeseries(
            "Operations planned by kind",
            "Cloud operations sent to vud.cloud.operations.",
            [_rate_by("kind", "vudsync_operations_planned_total", sel)],
            unit="ops",
        ),
        timeseries(
            "Waiting operations and held deletions",
            "Waiting for prerequisites (parked), for their application (blocked), for an operator "
            "(held operations, of the held deletions).",
            [
                (f"sum(vudsync_parked_operations{{{sel}}})", "parked operations"),
                (f"sum(vudsync_blocked_operations{{{sel}}})", "blocked operations"),
                (f"sum(vudsync_held_operations{{{sel}}})", "held operations"),
                (f"sum(vudsync_held_deletions{{{sel}}})", "held deletions"),
            ],
        ),
        timeseries(
            "Waiting for an operator: reviews and blocked applications",
            "Companies linked to existing cloud companies whose assignments wait for `vudsync review "
            "accept`; applications whose instance differs from the cloud's registration (1 = blocked: "
            "the license-change procedure).",
            [
                (f"sum(vudsync_review_waiting_companies{{{sel}}})", "companies waiting for review"),
                (f"max by (application) (vudsync_application_blocked{{{sel}}})", "{{application}} blocked"),
            ],
        ),
        timeseries(
            "Oldest parked operation",
            "Age of each worker's oldest parked operation (alert VudsyncParkedTooLong).",
            [(f"max by (instance) (vudsync_parked_oldest_age_seconds{{{sel}}})", "{{instance}}")],
            unit="s",
        ),
        timeseries(
            "Journal entries by code",
            "What the planner recorded for people: instance mismatches, blocked applications, "
            "companies to review, …",
            [_rate_by("code", "vudsync_journal_entries_total", sel)],
            unit="ops",
        ),
        _dead_letters("Directory events that could not be decoded or planned.", sel),
        timeseries(
            "Lag by topic",
            "Messages the planner's group still has to read, per input topic.",
            [(f"sum by (topic) (vudsync_consumer_lag_messages{{{group}}})", "{{topic}}")],
        ),
        timeseries(
            "Consumption by topic",
            "Committed offsets advancing per second: what the planner's group consumes.",
            [_rate_by("topic", "vudsync_consumer_committed_offset", group)],
            unit="ops",
        ),
    ]
    return _component(
        "vudsync-planner",
        "vudsync — planner (reconciliation)",
        "The Faust planner: directory events in, cloud operations out.",
        panels,
    )


def sink() -> Dashboard:
    sel = _selector("vudsync-sink")
    group = f'{LAG_JOB}, group=~".*vudsync-sink"'
    panels = [
        _up("Workers up", "Sink workers that answer.", sel),
        stat(
            "Cloud circuit",
            "OPEN when any selected worker stopped calling the cloud.",
            [(f"max(vudsync_cloud_circuit_open{{{sel}}})", "circuit")],
            thresholds=[(None, "green"), (1, "red")],
            mappings=_circuit_mappings(),
        ),
        stat(
            "Applied per second",
            "Operations applied (or found already applied) in the cloud.",
            [(f"sum(rate(vudsync_sink_operations_total{{{sel}, {APPLIED}}}[{RATE}]))", "applied")],
            unit="ops",
        ),
        _dead_letters_last_hour("Operations that failed for good and went to vud.cloud.operations.dlq.", sel),
        timeseries(
            "Operations by outcome",
            "applied, already_applied (a replay or a retry the cloud had seen), dead_lettered.",
            [_rate_by("outcome", "vudsync_sink_operations_total", sel)],
            unit="ops",
        ),
        timeseries(
            "Operations by kind",
            "Operations handled, per kind.",
            [_rate_by("kind", "vudsync_sink_operations_total", sel)],
            unit="ops",
        ),
        timeseries(
            "Apply latency",
            "Time to apply one operation to the cloud, retries included.",
            _quantiles("vudsync_sink_apply_seconds", f"{{{sel}}}"),
            unit="s",
        ),
        timeseries(
            "End-to-end latency",
            "Change committed in the store → applied in the cloud (alert VudsyncEndToEndLatencyHigh).",
            _quantiles("vudsync_end_to_end_seconds", f"{{{sel}}}"),
            unit="s",
        ),
        timeseries(
            "Retries by reason",
            "Cloud calls retried: 5xx, 429 (rate limited), time-outs, connection errors.",
            [_rate_by("reason", "vudsync_sink_retries_total", sel)],
            unit="ops",
        ),
        timeseries(
            "Cloud calls by endpoint and result",
            "Requests to the cloud API (a batch counts once): what the cloud answers.",
            [
                (
                    f"sum by (endpoint, result) (rate(vudsync_sink_cloud_calls_total{{{sel}}}[{RATE}]))",
                    "{{endpoint}} {{result}}",
                )
            ],
            unit="reqps",
        ),
        timeseries(
            "Operations in flight",
            "Operations inside a cloud call right now, per worker (one batch call carries several).",
            [(f"sum by (instance) (vudsync_sink_in_flight_operations{{{sel}}})", "{{instance}}")],
        ),
        timeseries(
            "Operations held",
            "Operations each worker took from the topic and has not finished (queued, in flight, "
            "waiting to retry); it takes no more at VUDSYNC_SINK_MAX_OUTSTANDING.",
            [(f"sum by (instance) (vudsync_sink_outstanding_operations{{{sel}}})", "{{instance}}")],
        ),
        timeseries(
            "Cloud circuit and paused partitions (1 = yes)",
            "Circuit breaker open, and partitions paused (held at the limit for "
            "VUDSYNC_SINK_HOLD_TIMEOUT), per worker.",
            [
                (f"max by (instance) (vudsync_cloud_circuit_open{{{sel}}})", "circuit {{instance}}"),
                (f"max by (instance) (vudsync_sink_paused{{{sel}}})", "paused {{instance}}"),
            ],
            stepped=True,
        ),
        _dead_letters("Operations dead-lettered, per second.", sel),
        timeseries(
            "Lag by partition",
            "Operations the sink's group still has to apply, per partition of vud.cloud.operations.",
            [(f"sum by (partition) (vudsync_consumer_lag_messages{{{group}}})", "partition {{partition}}")],
        ),
    ]
    return _component(
        "vudsync-sink",
        "vudsync — sink (cloud apply)",
        "Sink workers: operations applied to the cloud API, idempotently, with retries and a circuit breaker",
        panels,
    )


def lag() -> Dashboard:
    sel = f'{LAG_JOB}, group=~"$group"'
    panels = [
        _up(
            "Exporter up",
            "The lag exporter answers (without it, lag is unknown and lag alerts stay silent).",
            LAG_JOB,
        ),
        stat(
            "Last read",
            "Seconds since the exporter last read the offsets from the broker.",
            [
                (
                    'time() - max(vudsync_consumer_lag_read_timestamp_seconds{job="vudsync-lag-exporter"})',
                    "age",
                )
            ],
            unit="s",
            thresholds=[(None, "green"), (60, "orange")],
        ),
        stat(
            "Failed reads (1 h)",
            "Reads of consumer offsets that failed (broker unreachable or slow).",
            [
                (
                    'sum(increase(vudsync_consumer_lag_read_errors_total{job="vudsync-lag-exporter"}[1h]))',
                    "failed",
                )
            ],
            thresholds=[(None, "green"), (1, "orange")],
        ),
        stat(
            "Total lag",
            "Messages the selected groups still have to read.",
            [(f"sum(vudsync_consumer_lag_messages{{{sel}}})", "lag")],
            thresholds=[(None, "green"), (1000, "orange")],
        ),
        timeseries(
            "Lag by group and topic",
            "Messages still to read (end offset minus committed offset).",
            [(f"sum by (group, topic) (vudsync_consumer_lag_messages{{{sel}}})", "{{group}} · {{topic}}")],
        ),
        timeseries(
            "Consumption by group and topic",
            "Committed offsets advancing per second.",
            [
                (
                    f"sum by (group, topic) (rate(vudsync_consumer_committed_offset{{{sel}}}[{RATE}]))",
                    "{{group}} · {{topic}}",
                )
            ],
            unit="ops",
        ),
        timeseries(
            "Lag by partition",
            "Uneven lag across partitions points at one slow aggregate or a stuck worker.",
            [
                (
                    f"sum by (group, topic, partition) (vudsync_consumer_lag_messages{{{sel}}})",
                    "{{group}} · {{topic}}[{{partition}}]",
                )
            ],
            width=24,
        ),
    ]
    return Dashboard(
        "vudsync-lag",
        "vudsync — consumer lag (lag exporter)",
        "Consumer lag of the planner's and the sink's groups, read from the broker by the lag exporter.",
        panels,
        [
            _label_variable(
                "group", "Consumer group", f"label_values(vudsync_consumer_lag_messages{{{LAG_JOB}}}, group)"
            )
        ],
    )


DASHBOARDS = {
    "vudsync-overview.json": overview,
    "vudsync-producer.json": producer,
    "vudsync-planner.json": planner,
    "vudsync-sink.json": sink,
    "vudsync-lag.json": lag,
}


def render() -> dict[str, str]:
    """File name → the JSON text this script writes for it."""
    return {
        name: json.dumps(build().to_json(), indent=2, ensure_ascii=False) + "\n"
        for name, build in DASHBOARDS.items()
    }


def main() -> int:
    for name, text in render().items():
        (HERE / name).write_text(text, encoding="utf-8")
        print(f"wrote {HERE / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
