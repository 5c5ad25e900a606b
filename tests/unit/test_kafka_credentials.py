"""The credentials check costs one handshake per process and set of credentials, not one per client."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from kernel import kafka_credentials
from kernel.errors import KafkaAccessDenied
from kernel.kafka_security import KafkaSecurity


def _sasl(password: str) -> KafkaSecurity:
    return KafkaSecurity(
        security_protocol="SASL_PLAINTEXT", username="vudsync-ops", password=SecretStr(password)
    )


@pytest.fixture
def handshakes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Stand in for the broker: "right" is accepted, anything else refused; each handshake logged."""
    seen: list[str] = []

    async def first_answer(bootstrap: str, security: KafkaSecurity, timeout: float) -> bool:
        assert security.password is not None
        seen.append(security.password.get_secret_value())
        if security.password.get_secret_value() != "right":
            raise KafkaAccessDenied("refused", hint="check VUDSYNC_KAFKA_PASSWORD")
        return True

    monkeypatch.setattr(kafka_credentials, "_first_answer", first_answer)
    monkeypatch.setattr(kafka_credentials, "_accepted", set())
    return seen


def test_accepted_credentials_are_checked_once(handshakes: list[str]) -> None:
    for _ in range(3):
        kafka_credentials.check_credentials("127.0.0.1:9092", _sasl("right"))
    assert handshakes == ["right"]


def test_refused_credentials_are_refused_every_time(handshakes: list[str]) -> None:
    for _ in range(2):
        with pytest.raises(KafkaAccessDenied):
            kafka_credentials.check_credentials("127.0.0.1:9092", _sasl("wrong"))
    assert handshakes == ["wrong", "wrong"]


def test_other_credentials_or_another_cluster_are_checked_again(handshakes: list[str]) -> None:
    kafka_credentials.check_credentials("127.0.0.1:9092", _sasl("right"))
    with pytest.raises(KafkaAccessDenied):
        kafka_credentials.check_credentials("127.0.0.1:9092", _sasl("wrong"))
    kafka_credentials.check_credentials("127.0.0.1:9093", _sasl("right"))
    assert handshakes == ["right", "wrong", "right"]
