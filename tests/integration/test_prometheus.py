"""A real Prometheus scrapes a running pipeline; every dashboard and alert query is checked on it.

What "every query is valid and returns data" means here, honestly:

* **Dashboard panels** (and the selector behind each ``label_values`` variable): the query,
  with Grafana's variables replaced (``$__rate_interval`` → 1m, ``$instance``/``$group`` →
  ``.*``), is accepted by Prometheus and returns at least one sample. A histogram quantile
  over a window without new observations is NaN: that still is a sample (the series exist and
  evaluate), and the pipeline applies operations just before, so it is rarely the case.
* **Alert rules**: the whole expression must be accepted (it is mostly empty, as it should be:
  a healthy pipeline fires no alert). What must return data is each *operand* of the
  condition — the expression with the thresholds, the set operators (``and``/``or``/
  ``unless``) and ``absent()`` taken off (:func:`tests.fixtures.prometheus.alert_operands`):
  ``sum by (group) (vudsync_consumer_lag_messages) > 0 unless sum by (group)
  (increase(vudsync_consumer_committed_offset[5m])) > 0`` must have both sums non-empty. An
  operand that returns nothing is a condition that can never become true — a misspelt metric
  or label, or a metric no component exports — which is exactly what this test catches.
  Whether each alert fires when it should is tested by ``promtool test rules``, on made-up
  series; and one alert is seen firing here for real: the dead letters the test causes raise
  ``VudsyncDeadLetters`` for both dead-letter topics.
* **Rules** loaded by this Prometheus all evaluate without error (``health == "ok"``).
* **The lag exporter** tells the broker's truth: once the sink has applied everything, its
  group's lag in Prometheus is 0 and its committed offsets add up to the operations topic's end
  offsets, asked of the broker by a plain consumer.

To give the error panels real data the test feeds each stage one bad input (a directory row
with a malformed e-mail, a directory event that is not JSON, an operation that cannot be
decoded) and lets the cloud fail 20% of its requests (retries by reason). ``vudsync connect``
runs first: the planner sends nothing before it. For the writeback's panels, an administrator
grants in the cloud a role the directory knows (written back), a role only the cloud knows
(rejected) and access to a user of the cloud's own (unlinked).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import httpx
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from devtools.broker import free_port
from devtools.processes import wait_until
from devtools.seed.data import SampleDirectory, sample_directory, write_sample
from devtools.seed.writer import open_writer
from kernel.settings import Settings
from schemas.directory import EntityType
from schemas.topics import DIRECTORY_DLQ, DIRECTORY_TOPICS, OPERATIONS, OPERATIONS_DLQ
from sinks.service import sink_group
from tests.fixtures.cloud import CloudReader
from tests.fixtures.prometheus import (
    ALERT_RULES,
    ALERT_TESTS,
    PROMETHEUS_CONFIG,
    PrometheusFactory,
    PrometheusServer,
    alert_operands,
    alert_rules,
    dashboard_queries,
)
from tests.pipeline import alive_or_fail, components, vudsync_cli

COMPONENTS = ("producer", "planner", "sink", "lag-exporter", "cloud-capture", "directory-sink")


def _administrator_edits(cloud: CloudReader, sample: SampleDirectory) -> None:
    """What an administrator does in the cloud's portal, for the writeback to read."""
    user_id, company_id = next((a[0], a[1]) for a in sample.access if a[2] == "business" and a[3] == "role")
    held = {a[4] for a in sample.access if a[:4] == (user_id, company_id, "business", "role")}
    known = next(name for app, name, _ in sample.catalogue["roles"] if app == "business" and name not in held)
    user, company = cloud.user(user_id), cloud.company(company_id)
    assert user is not None and company is not None
    cloud.client.put("/v1/services/business/roles/Cloud-only", json={"description": "x"}).raise_for_status()
    with cloud.portal() as admin:
        access = f"/v1/users/{user['id']}/access/{company['id']}/business/roles"
        admin.put(f"{access}/{known}").raise_for_status()  # written back to the directory
        admin.put(f"{access}/Cloud-only").raise_for_status()  # the directory has no such role
        stranger = admin.post("/v1/users", json={"email": "stranger@example.org"})
        stranger.raise_for_status()  # a user of the cloud's own: no external id
        admin.put(
            f"/v1/users/{stranger.json()['id']}/access/{company['id']}/business/roles/{known}"
        ).raise_for_status()


def _promtool(promtool: str, *args: str) -> str:
    result = subprocess.run(
        [promtool, *args], cwd=ALERT_RULES.parent, capture_output=True, text=True, timeout=120, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def test_promtool_accepts_the_config_and_the_rules_and_their_unit_tests_pass(promtool: str) -> None:
    assert "SUCCESS" in _promtool(promtool, "check", "config", PROMETHEUS_CONFIG.name)
    assert "SUCCESS" in _promtool(promtool, "check", "rules", ALERT_RULES.name)
    assert "SUCCESS" in _promtool(promtool, "test", "rules", ALERT_TESTS.name)


def _empty_queries(prom: PrometheusServer) -> list[str]:
    """Every dashboard query and alert operand that returns nothing now (invalid ones raise)."""
    empty = [f"{q.where}: {q.expr}" for q in dashboard_queries() if not prom.query(q.expr)]
    for rule in alert_rules():
        prom.query(rule["expr"])  # the whole condition must be valid (its result may be empty)
        empty += [f"alert {rule['alert']}: {op}" for op in alert_operands(rule["expr"]) if not prom.query(op)]
    return empty


def _in_cloud(cloud: CloudReader, user_id: str) -> bool:
    """The user exists in the cloud (a read failed by the injected faults counts as not yet)."""
    response = cloud.client.get("/v1/users", params={"external_id": user_id})
    return response.status_code == 200 and bool(response.json()["items"])


def _value(prom: PrometheusServer, expr: str) -> float | None:
    samples = prom.query(expr)
    return float(samples[0]["value"][1]) if samples else None


def _end_offsets(bootstrap: str, topic: str) -> int:
    """The sum of the end offsets of ``topic``'s partitions, asked of the broker directly."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum(consumer.end_offsets(partitions).values())
    finally:
        consumer.close()


def _poll(condition: Callable[[], bool], timeout: float, what: str, explain: Callable[[], str]) -> None:
    try:
        wait_until(condition, timeout, interval=1.0, what=what)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{explain()}") from None


def test_prometheus_scrapes_the_pipeline_and_every_dashboard_and_alert_query_returns_data(
    catalogued_settings: Settings,
    kafka_bootstrap: str,
    cloud: CloudReader,
    prometheus_factory: PrometheusFactory,
) -> None:
    settings = catalogued_settings
    sample = sample_directory(users=6, companies=2, seed=11)
    writer = open_writer(settings.resolved_store_url())
    write_sample(writer, sample)
    # a cloud that fails every request until the sink has retried (metrics by reason), then one
    # in five: the sink sends the whole sample in a handful of batch requests, and which of them
    # would meet randomly injected faults depends on timing, so a run could meet none

    def faults(error_rate: float) -> None:
        cloud.faults(error_rate=error_rate, seed=5)

    # nothing is sent before connect; the producer takes the snapshot (its metrics are queried)
    done = vudsync_cli(settings, kafka_bootstrap, "connect", "--no-snapshot")
    assert done.returncode == 0, done.stderr
    faults(1.0)

    ports = {name: free_port() for name in COMPONENTS}
    prom = prometheus_factory({f"vudsync-{name}": [f"127.0.0.1:{port}"] for name, port in ports.items()})
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        with components(
            settings, kafka_bootstrap, *COMPONENTS, metrics_ports=ports, VUDSYNC_LAG_INTERVAL="1"
        ) as procs:

            def targets_up() -> bool:
                alive_or_fail(procs)
                targets = prom.targets()
                return len(targets) == len(COMPONENTS) and all(t["health"] == "up" for t in targets)

            _poll(targets_up, 120, "every component scraped", lambda: str(prom.targets()))
            # bad input at each stage's door, once Prometheus has seen the dead-letter counters at 0
            # (an increase needs a sample before it): a row that fails validation (producer), an
            # event that is not JSON (planner), an operation that cannot be decoded (sink)
            writer.upsert_user(
                id="u-bad", username="bad", email="not-an-e-mail", first_name="B", last_name="Ad"
            )
            users_topic = settings.topic(DIRECTORY_TOPICS[EntityType.USER].name)
            producer.send(users_topic, key=b"x1", value=b"not json")
            producer.send(settings.topic(OPERATIONS.name), key=b"user:x1", value=b"not an operation")
            producer.flush()

            def sink_retried() -> bool:
                alive_or_fail(procs)
                metrics = httpx.get(f"http://127.0.0.1:{ports['sink']}/metrics", timeout=10).text
                return "vudsync_sink_retries_total{" in metrics

            wait_until(sink_retried, 120, interval=1.0, what="the sink retrying a failing cloud")
            faults(0.2)

            def synced() -> bool:
                alive_or_fail(procs)
                return all(_in_cloud(cloud, user["id"]) for user in sample.users)

            wait_until(synced, 180, interval=1.0, what="the sample users in the cloud")
            faults(0.0)
            _administrator_edits(cloud, sample)

            def everything_has_data() -> bool:
                alive_or_fail(procs)
                return not _empty_queries(prom)

            _poll(
                everything_has_data,
                180,
                "every dashboard query and alert operand returning data",
                lambda: "still empty:\n" + "\n".join(_empty_queries(prom)),
            )

            # the exporter's lag is the broker's truth: once the sink has applied everything, its
            # group's committed offsets (as Prometheus has them) are the operations topic's end
            operations = settings.topic(OPERATIONS.name)
            sink = f'job="vudsync-lag-exporter", group="{sink_group(settings)}"'

            def sink_caught_up() -> bool:
                alive_or_fail(procs)
                lag = _value(prom, f"sum(vudsync_consumer_lag_messages{{{sink}}})")
                committed = _value(prom, f"sum(vudsync_consumer_committed_offset{{{sink}}})")
                return lag == 0 and committed == _end_offsets(kafka_bootstrap, operations)

            _poll(
                sink_caught_up,
                120,
                "the sink's lag at 0 and its committed offsets at the end of the operations topic",
                lambda: str(prom.query(f"vudsync_consumer_committed_offset{{{sink}}}")),
            )

            def dead_letters_alerted() -> bool:
                firing = {
                    a["labels"].get("topic")
                    for a in prom.alerts()
                    if a["labels"]["alertname"] == "VudsyncDeadLetters" and a["state"] == "firing"
                }
                return firing >= {DIRECTORY_DLQ.name, OPERATIONS_DLQ.name}

            _poll(
                dead_letters_alerted,
                60,
                "VudsyncDeadLetters firing for both topics",
                lambda: f"alerts: {prom.alerts()}\nsamples: {prom.query('vudsync_dlq_messages_total[10m]')}",
            )
            rules = prom.rules()
            assert {r["name"] for r in rules} == {r["alert"] for r in alert_rules()}
            assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
    finally:
        producer.close()
        writer.close()
