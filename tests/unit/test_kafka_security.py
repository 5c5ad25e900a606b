"""The Kafka connection setting and its translation for each client library (no server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faust
import pytest
from pydantic import SecretStr

from kernel.errors import ConfigurationError
from kernel.kafka_security import PLAINTEXT, KafkaSecurity
from kernel.settings import Settings

#: a distinct value per field, so each can be found in a translation
EVERY_FIELD: dict[str, Any] = {
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-256",
    "username": "user-sentinel",
    "password": SecretStr("password-sentinel"),
    "ca_file": Path("/sentinel/ca.pem"),
    "cert_file": Path("/sentinel/client.pem"),
    "key_file": Path("/sentinel/client.key"),
}

#: fields a client library has no option for, with the reason (none today)
NOT_APPLICABLE: dict[str, dict[str, str]] = {"confluent": {}, "kafka_python": {}, "aiokafka": {}, "faust": {}}


def _recording_context(ca: Path | None, cert: Path | None, key: Path | None) -> dict[str, Any]:
    return {"context_ca": ca, "context_cert": cert, "context_key": key}


def _flatten(value: Any) -> list[str]:
    """Every scalar inside a translation (dicts, recorded contexts, Faust credentials)."""
    if isinstance(value, dict):
        return [s for v in value.values() for s in _flatten(v)]
    if isinstance(value, faust.SASLCredentials):
        return [
            value.protocol.value,
            value.mechanism.value,
            str(value.username),
            str(value.password),
            *_flatten(value.ssl_context),
        ]
    if isinstance(value, faust.SSLCredentials):
        return [value.protocol.value, *_flatten(value.context)]
    return [str(value)]


def _translations(security: KafkaSecurity) -> dict[str, list[str]]:
    return {
        "confluent": _flatten(security.for_confluent()),
        "kafka_python": _flatten(security.for_kafka_python()),
        "aiokafka": _flatten(security.for_aiokafka(_recording_context)),
        "faust": _flatten(security.for_faust(_recording_context)),
    }


def _expected(value: Any) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


def test_the_sentinel_sets_every_field() -> None:
    assert set(EVERY_FIELD) == set(KafkaSecurity.model_fields)


@pytest.mark.parametrize("field", sorted(KafkaSecurity.model_fields))
def test_every_field_reaches_every_client(field: str) -> None:
    translations = _translations(KafkaSecurity(**EVERY_FIELD))
    for client, values in translations.items():
        if field in NOT_APPLICABLE[client]:
            continue
        assert _expected(EVERY_FIELD[field]) in values, f"{field} is missing for {client}"


def test_plaintext_needs_nothing() -> None:
    assert PLAINTEXT.for_confluent() == {"security.protocol": "PLAINTEXT"}
    assert PLAINTEXT.for_kafka_python() == {"security_protocol": "PLAINTEXT"}
    assert PLAINTEXT.for_aiokafka() == {"security_protocol": "PLAINTEXT"}
    assert PLAINTEXT.for_faust() == {}


def test_sasl_plaintext_builds_no_tls_context() -> None:
    security = KafkaSecurity(security_protocol="SASL_PLAINTEXT", username="u", password=SecretStr("p"))
    assert "ssl_context" not in security.for_aiokafka(_recording_context)
    assert not any(key.startswith("ssl.") for key in security.for_confluent())
    credentials = security.for_faust(_recording_context)["broker_credentials"]
    assert credentials.protocol.value == "SASL_PLAINTEXT"


def test_ssl_without_sasl_gives_faust_ssl_credentials() -> None:
    security = KafkaSecurity(security_protocol="SSL", ca_file=Path("/ca.pem"))
    credentials = security.for_faust(_recording_context)["broker_credentials"]
    assert isinstance(credentials, faust.SSLCredentials)
    assert "sasl.username" not in security.for_confluent()


def test_sasl_without_a_password_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="user name and a password"):
        KafkaSecurity(security_protocol="SASL_SSL", username="u")


def test_a_certificate_needs_its_key() -> None:
    with pytest.raises(ConfigurationError, match="certificate needs its key"):
        KafkaSecurity(security_protocol="SSL", cert_file=Path("/c.pem"))


def test_the_password_is_hidden_in_repr_and_json() -> None:
    security = KafkaSecurity(**EVERY_FIELD)
    assert "password-sentinel" not in repr(security)
    assert "password-sentinel" not in str(security)
    assert "password-sentinel" not in security.model_dump_json()


def test_settings_read_the_environment_and_the_toml_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = tmp_path / "vudsync.toml"
    toml.write_text('kafka_security_protocol = "SASL_SSL"\nkafka_username = "vudsync-sink"\n')
    monkeypatch.setitem(Settings.model_config, "toml_file", str(toml))
    monkeypatch.setenv("VUDSYNC_KAFKA_PASSWORD", "s3cret")
    monkeypatch.setenv("VUDSYNC_KAFKA_CA_FILE", str(tmp_path / "ca.pem"))
    security = Settings(home=tmp_path).kafka_security()
    assert security.security_protocol == "SASL_SSL"
    assert security.username == "vudsync-sink"
    assert security.password is not None and security.password.get_secret_value() == "s3cret"
    assert security.ca_file == tmp_path / "ca.pem"
    assert security.sasl_mechanism == "SCRAM-SHA-512"


def test_settings_carry_every_field(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A field added to KafkaSecurity needs its VUDSYNC_KAFKA_<FIELD> setting."""
    for field, value in EVERY_FIELD.items():
        monkeypatch.setenv(f"VUDSYNC_KAFKA_{field.upper()}", _expected(value))
    assert Settings(home=tmp_path).kafka_security() == KafkaSecurity(**EVERY_FIELD)
