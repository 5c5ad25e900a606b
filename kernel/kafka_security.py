"""How every Kafka client of vudsync authenticates and encrypts: one setting, three translations.

vudsync runs three Kafka client libraries: confluent-kafka (librdkafka: the producer's default
publisher, the sink), kafka-python (admin, ops commands, the other publisher) and aiokafka
(under Faust, the planner). Each spells the same connection options differently;
:class:`KafkaSecurity` holds them once and translates them once per library:

* :meth:`KafkaSecurity.for_confluent` — keys of a librdkafka configuration dict;
* :meth:`KafkaSecurity.for_kafka_python` — keyword arguments of ``KafkaProducer``,
  ``KafkaConsumer`` and ``KafkaAdminClient``;
* :meth:`KafkaSecurity.for_aiokafka` — keyword arguments of ``AIOKafkaConsumer`` / producer;
* :meth:`KafkaSecurity.for_faust` — keyword arguments of ``faust.App`` (``broker_credentials``).

``tests/unit/test_kafka_security.py`` sets every field and checks that each translation carries
it, so an option added here cannot be forgotten for one client.

The password is a :class:`~pydantic.SecretStr`: the model's ``repr``/``str`` and its JSON hide it.
The translations hand it to the clients in clear (they need it); never log them.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

from kernel.errors import ConfigurationError

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Mechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]

#: builds the ``ssl.SSLContext`` of aiokafka/Faust from (ca file, cert file, key file)
ContextFactory = Callable[[Path | None, Path | None, Path | None], Any]


def default_ssl_context(
    ca_file: Path | None, cert_file: Path | None, key_file: Path | None
) -> ssl.SSLContext:
    """A client TLS context: verifies the broker (``ca_file``, else the system's CAs) and its host
    name; presents ``cert_file``/``key_file`` when given (mutual TLS)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file) if ca_file else None)
    if cert_file:
        context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    return context


#: each field's option name per client library (aiokafka takes the TLS files as one context)
_CONFLUENT = {
    "security_protocol": "security.protocol",
    "sasl_mechanism": "sasl.mechanism",
    "username": "sasl.username",
    "password": "sasl.password",
    "ca_file": "ssl.ca.location",
    "cert_file": "ssl.certificate.location",
    "key_file": "ssl.key.location",
}
_KAFKA_PYTHON = {
    "security_protocol": "security_protocol",
    "sasl_mechanism": "sasl_mechanism",
    "username": "sasl_plain_username",
    "password": "sasl_plain_password",
    "ca_file": "ssl_cafile",
    "cert_file": "ssl_certfile",
    "key_file": "ssl_keyfile",
}
_AIOKAFKA = {name: option for name, option in _KAFKA_PYTHON.items() if not name.endswith("_file")}


class KafkaSecurity(BaseModel):
    """The security options of a Kafka connection (``VUDSYNC_KAFKA_*`` in :class:`Settings`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    security_protocol: Protocol = "PLAINTEXT"
    sasl_mechanism: Mechanism = "SCRAM-SHA-512"
    username: str | None = None
    password: SecretStr | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSecurity:
        if self.sasl and not (self.username and self.password):
            raise ConfigurationError(
                f"Kafka security protocol {self.security_protocol} needs a user name and a password",
                hint="set VUDSYNC_KAFKA_USERNAME and VUDSYNC_KAFKA_PASSWORD",
            )
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigurationError(
                "a Kafka client certificate needs its key, and a key its certificate",
                hint="set both VUDSYNC_KAFKA_CERT_FILE and VUDSYNC_KAFKA_KEY_FILE, or neither",
            )
        return self

    @property
    def sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def _options(self) -> dict[str, str]:
        """The options that apply to this protocol, by field name, as the clients want them."""
        names = ["security_protocol"]
        if self.sasl:
            names += ["sasl_mechanism", "username", "password"]
        if self.tls:
            names += ["ca_file", "cert_file", "key_file"]
        values = {name: getattr(self, name) for name in names}
        return {
            name: value.get_secret_value() if isinstance(value, SecretStr) else str(value)
            for name, value in values.items()
            if value is not None
        }

    def for_confluent(self) -> dict[str, Any]:
        """librdkafka configuration keys (merge into a ``Producer``/``Consumer`` config)."""
        return {_CONFLUENT[name]: value for name, value in self._options().items()}

    def for_kafka_python(self) -> dict[str, Any]:
        """kafka-python keyword arguments (``KafkaProducer``, ``KafkaConsumer``, ``KafkaAdminClient``)."""
        return {_KAFKA_PYTHON[name]: value for name, value in self._options().items()}

    def for_aiokafka(self, make_context: ContextFactory = default_ssl_context) -> dict[str, Any]:
        """aiokafka keyword arguments; the TLS files go into one ``ssl_context`` (``make_context``)."""
        config: dict[str, Any] = {
            _AIOKAFKA[name]: value for name, value in self._options().items() if name in _AIOKAFKA
        }
        if self.tls:
            config["ssl_context"] = make_context(self.ca_file, self.cert_file, self.key_file)
        return config

    def for_faust(self, make_context: ContextFactory = default_ssl_context) -> dict[str, Any]:
        """``faust.App`` keyword arguments: ``broker_credentials`` (absent for PLAINTEXT).

        Faust hands these to aiokafka (``credentials_to_aiokafka_auth``), so they are built from
        :meth:`for_aiokafka` and give the same options.
        """
        import faust  # here: only the planner loads Faust

        options = self.for_aiokafka(make_context)
        context = options.get("ssl_context")
        if self.sasl:
            return {
                "broker_credentials": faust.SASLCredentials(
                    username=options["sasl_plain_username"],
                    password=options["sasl_plain_password"],
                    mechanism=options["sasl_mechanism"],
                    ssl_context=context,
                )
            }
        if self.tls:
            return {"broker_credentials": faust.SSLCredentials(context)}
        return {}


#: no authentication, no encryption: the local development broker
PLAINTEXT = KafkaSecurity()
