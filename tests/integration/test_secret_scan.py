"""Secret scan: after a real capture run, no license key from the store and none of the run's
secrets (fingerprint key, cloud client secret, admin token — all in the producer's environment)
appears in any topic of the catalogue, in the producer's log (at debug level), in its /metrics
output, in `vudsync status --json`, or in the store's own change log."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from devtools.broker import free_port
from devtools.processes import ComponentProcess, wait_until
from devtools.seed.data import sample_directory, write_sample
from devtools.seed.writer import open_writer
from kernel.settings import SECRET_FIELDS, Settings
from schemas.directory import EntityType
from schemas.topics import ALL_TOPICS, DIRECTORY_DLQ, DIRECTORY_TOPICS
from tests.capture_check import caught_up, read_topics, store_query
from tests.pipeline import alive_or_fail, component_env
from vudsync.cli import _register, cli
from vudsync.topics import ensure_catalogue


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'directory.db'}"
    return str(request.getfixturevalue("postgres_url"))


def _flatten(record: object) -> bytes:
    key = getattr(record, "key", None) or b""
    value = getattr(record, "value", None) or b""
    headers = b"".join(k.encode() + (v or b"") for k, v in getattr(record, "headers", None) or ())
    return key + b"\0" + value + b"\0" + headers


def test_no_license_key_in_topics_logs_metrics_or_change_log(
    store_url: str, kafka_settings: Settings, kafka_bootstrap: str
) -> None:
    settings = kafka_settings.model_copy(update={"store_url": store_url})
    ensure_catalogue(settings, kafka_bootstrap)
    sample = sample_directory(40, 3, seed=4)
    keys = [key for _app, _uri, key in sample.instances]
    writer = open_writer(store_url)
    write_sample(writer, sample)
    port = free_port()
    producer = ComponentProcess(
        "producer",
        ["-vv", "run", "producer", "--metrics-port", str(port)],
        env=component_env(settings, kafka_bootstrap),
        log_dir=Path(settings.home) / "logs",
    ).start()
    procs = {"producer": producer}
    try:
        wait_until(lambda: alive_or_fail(procs) and caught_up(store_url), 120, what="snapshot captured")
        # rotate a key, add a second instance of a type (dead-lettered), delete an instance
        keys += ["LIC-ROTATED-000000000042", "LIC-SECOND-INSTANCE-777"]
        writer.set_application_instance("reporting", "https://reporting.vud.local", keys[-2])
        writer.add_application_instance("business", "https://business-2.vud.local", keys[-1])
        with writer.transaction():
            writer.conn.execute(
                f"DELETE FROM application_instances WHERE application = {writer.placeholder}",
                ("document_center",),
            )
        wait_until(lambda: alive_or_fail(procs) and caught_up(store_url), 120, what="changes captured")
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        _register()
        status = CliRunner().invoke(
            cli,
            ["status", "--json"],
            env=component_env(
                settings, kafka_bootstrap, VUDSYNC_STATUS_METRICS=f"producer=http://127.0.0.1:{port}/metrics"
            ),
            catch_exceptions=False,
        )
    finally:
        producer.stop()
        writer.close()

    topics = [settings.topic(spec.name) for spec in ALL_TOPICS]
    records = read_topics(kafka_bootstrap, topics)
    blob = b"\n".join(_flatten(r) for rs in records.values() for r in rs)
    log = producer.log_path.read_text(errors="replace")
    change_log = "\n".join(map(str, store_query(store_url, "SELECT * FROM change_log")))
    secrets = [*keys, *(settings.require_secret(name) for name in SECRET_FIELDS)]
    for secret in secrets:
        assert secret.encode() not in blob, f"a secret reached a topic: {secret[:6]}…"
        assert secret not in log, f"a secret reached the producer log: {secret[:6]}…"
        assert secret not in metrics, f"a secret reached /metrics: {secret[:6]}…"
        assert secret not in status.output, f"a secret reached status --json: {secret[:6]}…"
        assert secret not in change_log, f"a secret was copied into the change log: {secret[:6]}…"

    # the scan looked at real material: fingerprints, a dead letter, debug logs, metrics
    instances = records[settings.topic(DIRECTORY_TOPICS[EntityType.APPLICATION_INSTANCE].name)]
    assert sum(1 for r in instances if r.value and b"hmac-sha256:" in r.value) >= 4
    assert any(r.value is None for r in instances)  # the deleted instance's tombstone
    assert records[settings.topic(DIRECTORY_DLQ.name)], "the second instance was not dead-lettered"
    assert " DEBUG " in log and len(log.splitlines()) > 10
    assert 'vudsync_source_changes_captured_total{entity="application_instance"}' in metrics
    assert '"producer"' in status.output and status.exit_code in (0, 1), status.output
