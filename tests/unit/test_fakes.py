"""The fakes of ``tests/fakes.py`` behave as the ports they stand in for."""

import pytest

from kernel.errors import RetryableError
from tests.fakes import FakePublisher


def test_a_failed_flush_keeps_the_queue_and_the_retry_acknowledges_it() -> None:
    publisher = FakePublisher(fail_flush=1)
    publisher.publish("t", "k", b"v")
    with pytest.raises(RetryableError):
        publisher.flush()
    assert publisher.flush() == 1  # a retry under back-off used to fail forever
    assert publisher.acked == [("t", "k")]
