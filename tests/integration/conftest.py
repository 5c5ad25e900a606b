"""Fixtures the change-capture integration tests share: a store of each dialect, captures of it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from devtools.seed.writer import DirectoryWriter, open_writer
from kernel.publishing.kafka_python import KafkaRecordPublisher
from kernel.settings import Settings
from producers.capture import CaptureConfig, ChangeCapture
from producers.metrics import ProducerMetrics
from producers.service import open_change_log

MakeCapture = Callable[..., ChangeCapture]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store of each dialect (PostgreSQL's server starts only when asked)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'directory.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def writer(store_url: str) -> Iterator[DirectoryWriter]:
    """A writer of the store (it migrates it first)."""
    made = open_writer(store_url)
    yield made
    made.close()


@pytest.fixture
def make_capture(kafka_bootstrap: str) -> Iterator[MakeCapture]:
    """``make(settings, store_url, **config)``: a capture of that store to the test broker
    (kafka-python publisher; ``config`` over ``CaptureConfig``'s, fingerprint key ``b"k"``);
    closed after the test."""
    made: list[ChangeCapture] = []

    def make(settings: Settings, url: str, **config: Any) -> ChangeCapture:
        made.append(
            ChangeCapture(
                open_change_log(url),
                KafkaRecordPublisher(kafka_bootstrap),
                ProducerMetrics(CollectorRegistry()),
                CaptureConfig(**{"topic_prefix": settings.topic_prefix, "fingerprint_key": b"k", **config}),
            )
        )
        return made[-1]

    yield make
    for capture in made:
        capture.publisher.close()
        capture.log.close()
