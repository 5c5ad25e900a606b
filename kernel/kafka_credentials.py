"""Check a Kafka client's SASL credentials at once, before a kafka-python client is built.

kafka-python 3.0.12 never reports a refused SASL handshake: the broker's
SASL_AUTHENTICATION_FAILED answer arrives together with the connection's close and is dropped
(``kafka/net/transport.py``, ``_read_from_sock``), and its bootstrap retries every failure until
its deadline (``kafka/net/manager.py``, ``_do_bootstrap``). An ops command with a wrong password
said "no broker answered" after its time-out. aiokafka, a dependency already (under Faust),
reports the refusal on the first connection: :func:`check_credentials` opens one aiokafka
connection — TLS, SASL handshake, authentication — to the first bootstrap address that accepts
one, closes it, and raises :class:`~kernel.errors.KafkaAccessDenied` if the credentials were
refused. Its options come from :meth:`KafkaSecurity.for_aiokafka`, the one translation.

Only the refusal is this module's business: an address that does not answer is skipped, and
a cluster that answers nowhere is left to the kafka-python client that follows (its own
deadline, its own :class:`~kernel.admin.BrokerUnavailable`).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiokafka import errors as aiokafka_errors
from aiokafka.conn import create_conn

from kernel.errors import KafkaAccessDenied
from kernel.kafka_security import KafkaSecurity

#: the broker said no to the credentials (not: did not answer)
_REFUSED = (
    aiokafka_errors.SaslAuthenticationFailed,
    aiokafka_errors.UnsupportedSaslMechanismError,
    aiokafka_errors.IllegalSaslStateError,
)


def _addresses(bootstrap: str) -> list[tuple[str, int]]:
    found = []
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        if port.isdigit():
            found.append((host.strip("[]") or "127.0.0.1", int(port)))
    return found


def refused_hint(security: KafkaSecurity) -> str:
    """What to do when the cluster refuses ``security``'s credentials (never the password)."""
    return (
        f"check VUDSYNC_KAFKA_PASSWORD for the principal {security.username!r} "
        f"(VUDSYNC_KAFKA_USERNAME) and VUDSYNC_KAFKA_SASL_MECHANISM ({security.sasl_mechanism}) "
        "against the cluster's SCRAM user; `kafka-configs --describe --entity-type users` on the "
        "cluster lists them (docs/operations.md, Connecting to a secured cluster)"
    )


#: credentials a cluster accepted in this process (bootstrap, user, mechanism, password digest):
#: an ops command builds several kafka-python clients, and one handshake per process is enough
_accepted: set[tuple[str, str, str, str]] = set()
_accepted_lock = threading.Lock()


def _key(bootstrap: str, security: KafkaSecurity) -> tuple[str, str, str, str]:
    password = security.password.get_secret_value() if security.password else ""
    digest = hashlib.sha256(password.encode()).hexdigest()
    return (bootstrap, security.username or "", str(security.sasl_mechanism), digest)


async def _first_answer(bootstrap: str, security: KafkaSecurity, timeout: float) -> bool:
    """True once an address accepted the credentials; False when none answered."""
    options: dict[str, Any] = security.for_aiokafka()
    for host, port in _addresses(bootstrap):
        try:
            connection = await asyncio.wait_for(
                create_conn(host, port, request_timeout_ms=int(timeout * 1000), **options), timeout
            )
        except _REFUSED as exc:
            raise KafkaAccessDenied(
                f"Kafka at {host}:{port} refused the credentials of {security.username!r} "
                f"({security.sasl_mechanism}): {exc}",
                hint=refused_hint(security),
            ) from exc
        except (TimeoutError, OSError, aiokafka_errors.KafkaError):
            continue  # not answering is the client's business, with its own deadline
        connection.close()
        return True
    return False


def check_credentials(bootstrap: str, security: KafkaSecurity, *, timeout: float = 10.0) -> None:
    """Raise :class:`KafkaAccessDenied` when the cluster at ``bootstrap`` refuses ``security``'s
    SASL credentials; return when it accepts them, when it does not answer, or when there are no
    credentials to check (PLAINTEXT, SSL). ``timeout`` in seconds, per address.

    Runs its own short event loop in a thread of its own: callers may be inside a running one.
    Credentials once accepted are not checked again in this process.
    """
    if not security.sasl:
        return
    key = _key(bootstrap, security)
    with _accepted_lock:
        if key in _accepted:
            return
    with ThreadPoolExecutor(1, thread_name_prefix="vudsync-kafka-credentials") as pool:
        accepted = pool.submit(asyncio.run, _first_answer(bootstrap, security, max(timeout, 1.0))).result()
    if accepted:
        with _accepted_lock:
            _accepted.add(key)
