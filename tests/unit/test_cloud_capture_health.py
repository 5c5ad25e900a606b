"""cloud-capture's readiness rule (kernel.health.cloud_capture_readiness)."""

from __future__ import annotations

from kernel.health import CloudCaptureFacts, cloud_capture_readiness

B, C = "kafka:9092", "https://cloud.example"


def test_ready_when_the_broker_answers_and_the_feed_answered_recently() -> None:
    assert cloud_capture_readiness(CloudCaptureFacts(B, True, C, 0.8, None)).ready


def test_not_ready_says_every_reason() -> None:
    r = cloud_capture_readiness(CloudCaptureFacts(B, False, C, 75.0, "GET /v1/changes: ConnectError"))
    assert r.reasons == (
        "the Kafka broker does not answer at kafka:9092",
        "the last read of the cloud at https://cloud.example and publish failed: "
        "GET /v1/changes: ConnectError",
        "the cloud's change feed last answered 75s ago: the cloud or the broker hangs, or a full "
        "read is under way",
    )


def test_starting_is_not_ready_yet() -> None:
    r = cloud_capture_readiness(CloudCaptureFacts(B, True, C, None, None))
    assert r.reasons == ("the cloud's change feed has not been read yet (starting)",)
    failing = cloud_capture_readiness(CloudCaptureFacts(B, True, C, None, "GET /v1/changes: 503"))
    assert len(failing.reasons) == 1 and "503" in failing.reasons[0]
