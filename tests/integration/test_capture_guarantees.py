"""Change capture's guarantees on real stores (SQLite and PostgreSQL) and the real broker:
a snapshot taken while the directory changes loses nothing, and a producer killed with
SIGKILL resumes without missing a change (duplicates only as re-sends of the same versions)."""

from __future__ import annotations

import threading

import pytest

from devtools.processes import wait_until
from devtools.seed.churn import Churn, load_state
from devtools.seed.data import sample_directory, write_sample
from devtools.seed.writer import open_writer
from kernel.settings import Settings
from producers.capture import ChangeCapture
from schemas.directory import EntityType
from schemas.topics import DIRECTORY_TOPICS
from tests.capture_check import (
    assert_only_resends,
    assert_topics_match_store,
    caught_up,
    checkpoint,
    drain,
    read_topics,
    snapshot_position,
)
from tests.integration.conftest import MakeCapture
from tests.pipeline import alive_or_fail, components
from vudsync.topics import ensure_catalogue

KEY = b"test-fingerprint-key"


class Writer:
    """Churn in a background thread (its own store connection); errors fail the test."""

    def __init__(self, url: str, rate: float, seed: int) -> None:
        self.writer = open_writer(url)
        self.churn = Churn(self.writer, load_state(self.writer), seed=seed)
        self.rate = rate
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="churn", daemon=True)

    def _run(self) -> None:
        try:
            self.churn.run(self.rate, stop=self.stop)
        except BaseException as exc:
            self.error = exc

    @property
    def changes(self) -> int:
        if self.error:
            raise AssertionError(f"the writer thread failed: {self.error!r}")
        return self.churn.report.total

    def wait_for_more(self, n: int, timeout: float = 60) -> None:
        target = self.changes + n
        wait_until(lambda: self.changes >= target, timeout, interval=0.01, what=f"{n} more changes")

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        self.writer.close()
        if self.error:
            raise AssertionError(f"the writer thread failed: {self.error!r}")


@pytest.fixture
def seeded(store_url: str) -> str:
    writer = open_writer(store_url)
    try:
        write_sample(writer, sample_directory(120, 6, seed=1))
    finally:
        writer.close()
    return store_url


@pytest.fixture
def capture(
    seeded: str, kafka_settings: Settings, kafka_bootstrap: str, make_capture: MakeCapture
) -> ChangeCapture:
    ensure_catalogue(kafka_settings, kafka_bootstrap)
    return make_capture(kafka_settings, seeded, batch_size=25, fingerprint_key=KEY)


def _directory_topics(settings: Settings) -> list[str]:
    return [settings.topic(spec.name) for spec in DIRECTORY_TOPICS.values()]


def test_snapshot_while_another_thread_writes_loses_nothing(
    seeded: str, capture: ChangeCapture, kafka_settings: Settings, kafka_bootstrap: str
) -> None:
    writer = Writer(seeded, rate=150, seed=2)
    writer.thread.start()
    try:
        # every snapshot batch waits for more committed changes: they interleave for certain
        position = capture.snapshot(progress=lambda _entity, _done, _total: writer.wait_for_more(4))
        after = position
        for _ in range(10):  # stream while the writer goes on
            writer.wait_for_more(10)
            after = capture.poll_once(after).last_seq
    finally:
        writer.finish()
    assert writer.changes > 100

    after = drain(capture, after, seeded, 120)
    records = read_topics(kafka_bootstrap, _directory_topics(kafka_settings))
    seen = assert_topics_match_store(
        records, seeded, kafka_settings.topic_prefix, snapshot_position=position, fingerprint_key=KEY
    )
    changed_users = {k for k, h in seen.items() if k[0] is EntityType.USER and max(h.versions) > position}
    assert len(changed_users) > 20  # the writer's changes really went through streaming
    assert checkpoint(seeded) == ("streaming", after)


def test_sigkill_mid_stream_then_restart_misses_no_change(
    seeded: str, kafka_settings: Settings, kafka_bootstrap: str
) -> None:
    settings = kafka_settings.model_copy(update={"store_url": seeded})
    ensure_catalogue(settings, kafka_bootstrap)
    writer = Writer(seeded, rate=120, seed=3)
    writer.thread.start()
    try:
        with components(settings, kafka_bootstrap, "producer", VUDSYNC_CAPTURE_BATCH_SIZE="15") as procs:
            producer = procs["producer"]
            for _round in range(2):
                start = checkpoint(seeded)
                floor = start[1] if start and start[0] == "streaming" else 0

                def advanced(floor: int = floor) -> bool:
                    alive_or_fail(procs)
                    cp = checkpoint(seeded)
                    return cp is not None and cp[0] == "streaming" and cp[1] > floor + 30

                wait_until(advanced, 120, what="the producer streaming past a few batches")
                producer.kill()  # SIGKILL: no batch finished, no checkpoint saved
                writer.wait_for_more(40)  # changes made while no producer runs
                producer.start()
            writer.wait_for_more(40)
            writer.finish()
            wait_until(lambda: alive_or_fail(procs) and caught_up(seeded), 120, what="capture caught up")
    finally:
        if writer.thread.is_alive():
            writer.finish()
    records = read_topics(kafka_bootstrap, _directory_topics(settings))
    prefix = settings.topic_prefix
    seen = assert_topics_match_store(
        records,
        seeded,
        prefix,
        snapshot_position=snapshot_position(records, prefix),
        fingerprint_key=settings.fingerprint_key.get_secret_value().encode(),
    )
    assert_only_resends(seen)  # re-sends do happen here (typically 5-20 records per run)
    log = producer.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
