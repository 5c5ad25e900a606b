"""Fixtures the change-capture integration tests share."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from prometheus_client import CollectorRegistry

from kernel.publishing.kafka_python import KafkaRecordPublisher
from kernel.settings import Settings
from producers.capture import CaptureConfig, ChangeCapture
from producers.metrics import ProducerMetrics
from producers.service import open_change_log

MakeCapture = Callable[[Settings, str], ChangeCapture]


@pytest.fixture
def make_capture(kafka_bootstrap: str) -> Iterator[MakeCapture]:
    """``make(settings, store_url)``: a capture of that store to the test broker (kafka-python
    publisher, fingerprint key ``b"k"``); closed after the test."""
    made: list[ChangeCapture] = []

    def make(settings: Settings, url: str) -> ChangeCapture:
        made.append(
            ChangeCapture(
                open_change_log(url),
                KafkaRecordPublisher(kafka_bootstrap),
                ProducerMetrics(CollectorRegistry()),
                CaptureConfig(topic_prefix=settings.topic_prefix, fingerprint_key=b"k"),
            )
        )
        return made[-1]

    yield make
    for capture in made:
        capture.publisher.close()
        capture.log.close()
