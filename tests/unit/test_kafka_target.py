"""Where a bench or test pipeline connects, from the settings: a local cluster of the home gives
each component its own principal; any other bootstrap, the settings' own security for all."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import SecretStr

from devtools.broker.cluster import KafkaTarget, LocalKafkaCluster
from kernel.kafka_security import PLAINTEXT
from kernel.settings import Settings


def _secured(home: Path) -> Settings:
    return Settings(
        home=home,
        kafka_security_protocol="SASL_SSL",
        kafka_username="vudsync-ops",
        kafka_password=SecretStr("s3cret-of-the-test"),
    )


def test_a_cluster_elsewhere_connects_every_component_with_the_settings_security(tmp_path: Path) -> None:
    settings = _secured(tmp_path)
    target = KafkaTarget.from_settings(settings, "kafka-1:9093")
    assert target.cluster is None
    assert target.security("sink") == target.security("ops") == settings.kafka_security()
    assert "SASL_SSL, every component as vudsync-ops" in target.describe()
    assert "s3cret-of-the-test" not in target.describe()
    assert KafkaTarget("127.0.0.1:9092").security("sink") == PLAINTEXT


def test_the_home_s_cluster_is_found_as_it_was_made(tmp_path: Path) -> None:
    settings = _secured(tmp_path)
    assert LocalKafkaCluster.found(settings) is None
    folder = tmp_path / "kafka-cluster"
    folder.mkdir()
    ports = [[9001, 9002, 9003], [9004, 9005, 9006], [9007, 9008, 9009]]
    layout = {"brokers": 3, "secure": True, "cluster_id": "x", "ports": ports}
    (folder / "cluster.json").write_text(json.dumps(layout))
    found = LocalKafkaCluster.found(settings)
    assert found is not None and (found.brokers, found.secure) == (3, True)
    # not running: its bootstrap is no answer, the settings' security is used
    assert KafkaTarget.from_settings(settings, found.bootstrap()).cluster is None
