"""Thin Kafka admin helpers (kafka-python), shared by every component and by the tests.

Contracts:

* :func:`ensure_topics` is idempotent: it asks the broker which of the topics exist first
  (a metadata request: ``DESCRIBE``, which a component's ACLs allow on its own topics) and asks
  to create only the missing ones — a create request for a topic that exists is still checked
  against ``CREATE`` per topic, and the brokers' authorizer logs each refusal. A topic created
  meanwhile is fine (``TOPIC_ALREADY_EXISTS`` is swallowed, every other per-topic error is
  raised); it returns only when every requested topic is visible in the broker's metadata with
  a leader for each partition. :func:`ensure_missing_topics` describes the cluster (for the
  replication) only when something is missing.
* :func:`delete_topics` is idempotent too: an unknown topic is fine.
* :func:`wait_for_broker` returns the cluster description once a metadata request
  succeeds, or raises :class:`BrokerUnavailable` at its deadline.

kafka-python errors never leave this module: they become :class:`kernel.errors.RetryableError`
(the error is marked retriable by Kafka, or is a time-out / connection failure) or
:class:`kernel.errors.PermanentError` (everything else).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple

from kafka import KafkaAdminClient
from kafka import errors as kafka_errors
from kafka.admin import ConfigResource, ConfigResourceType

from kernel.errors import KafkaAccessDenied, PermanentError, RetryableError, VudsyncError
from kernel.kafka_credentials import check_credentials
from kernel.kafka_security import PLAINTEXT, KafkaSecurity
from kernel.replication import ClusterSize, replication_for, too_few_brokers_hint
from kernel.retry import Backoff

log = logging.getLogger(__name__)

#: back-off ceiling for admin connections; kafka-python's default (30 s, exponential) makes
#: a client created while the broker is still starting wait far longer than needed.
_RECONNECT_BACKOFF_MAX_MS = 500


class TopicSpec(NamedTuple):
    """One topic to create. A plain ``(name, partitions, replication, config)`` tuple works too."""

    name: str
    partitions: int = 1
    replication: int = 1
    config: Mapping[str, str] | None = None


class BrokerUnavailable(RetryableError):
    """No broker answered a metadata request before the deadline."""


class TopicError(PermanentError):
    """The broker refused to create or delete a topic (invalid name, config, replication…)."""


#: the cluster refused the credentials, or an ACL forbids the request
_DENIED = (kafka_errors.SaslAuthenticationFailedError, kafka_errors.AuthorizationError)
_DENIED_HINT = (
    "check VUDSYNC_KAFKA_USERNAME / VUDSYNC_KAFKA_PASSWORD and the component's ACLs (docs/operations.md)"
)


def translate(exc: BaseException, what: str) -> VudsyncError:
    """Map a kafka-python error onto the vudsync error tree (``what`` says what was attempted)."""
    if isinstance(exc, VudsyncError):
        return exc
    message = f"{what}: {type(exc).__name__}: {exc}"
    if isinstance(exc, _DENIED):
        return KafkaAccessDenied(message, hint=_DENIED_HINT)
    if isinstance(exc, kafka_errors.KafkaError) and exc.retriable:
        return RetryableError(message)
    if isinstance(exc, (OSError, TimeoutError, kafka_errors.KafkaConnectionError)):
        return RetryableError(message)
    return PermanentError(message)


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Errors of the Kafka client raised in the block become vudsync errors (:func:`translate`),
    chained to the original; vudsync errors pass as they are."""
    try:
        yield
    except VudsyncError:
        raise
    except Exception as exc:
        raise translate(exc, what) from exc


#: kafka-python options whose values are secrets
_SECRET_OPTIONS = frozenset({"sasl_plain_password", "ssl_password"})


def _masked(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: "**********" if k in _SECRET_OPTIONS and v else v for k, v in value.items()}
    return value


class HideClientSecrets(logging.Filter):
    """kafka-python's ``KafkaAdminClient`` logs its whole configuration at DEBUG — the SASL
    password included (found by the secured run's secret scan): the copy logged has the
    secret options masked. The client itself keeps them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, Mapping):  # logging's form for a single mapping argument
            record.args = _masked(record.args)
        elif isinstance(record.args, tuple):
            record.args = tuple(_masked(arg) for arg in record.args)
        return True


_HIDE_CLIENT_SECRETS = HideClientSecrets()


def hide_client_secrets() -> None:
    """Put :class:`HideClientSecrets` on kafka-python's admin logger (once; idempotent)."""
    logger = logging.getLogger("kafka.admin.client")
    if _HIDE_CLIENT_SECRETS not in logger.filters:
        logger.addFilter(_HIDE_CLIENT_SECRETS)


@contextmanager
def admin_client(
    bootstrap: str, *, security: KafkaSecurity = PLAINTEXT, timeout: float = 30.0
) -> Iterator[KafkaAdminClient]:
    """A short-lived ``KafkaAdminClient``; bootstrap failures become :class:`BrokerUnavailable`,
    refused credentials :class:`KafkaAccessDenied` at once (:func:`check_credentials`:
    kafka-python itself would retry them until its deadline)."""
    timeout_ms = max(int(timeout * 1000), 1000)
    hide_client_secrets()
    check_credentials(bootstrap, security, timeout=min(timeout, 10.0))
    try:
        client = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="vudsync-admin",
            request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
            reconnect_backoff_max_ms=_RECONNECT_BACKOFF_MAX_MS,
            **security.for_kafka_python(),
        )
    except _DENIED as exc:
        raise translate(exc, f"connect to Kafka at {bootstrap} as {security.username}") from exc
    except Exception as exc:
        raise BrokerUnavailable(
            f"no Kafka broker answers at {bootstrap}: {type(exc).__name__}: {exc}",
            hint="start one with `vudsync kafka up`, or set VUDSYNC_KAFKA_BOOTSTRAP",
        ) from exc
    try:
        yield client
    finally:
        client.close()


def tcp_answers(bootstrap: str, timeout: float) -> bool:
    """True when at least one bootstrap address accepts a TCP connection."""
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout):
                return True
        except (OSError, ValueError):
            continue
    return False


def wait_for_broker(
    bootstrap: str, timeout: float = 30.0, *, security: KafkaSecurity = PLAINTEXT
) -> dict[str, Any]:
    """Block until a broker at ``bootstrap`` answers a metadata request; ``timeout`` in seconds.

    Polls a plain TCP connect first (cheap, no client back-off), then asks for the cluster
    description. Returns it (``cluster_id``, ``controller_id``, ``brokers``).
    """
    deadline = time.monotonic() + timeout
    last_error = "the port never accepted a connection"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrokerUnavailable(
                f"no Kafka broker answered at {bootstrap} within {timeout:.0f} s ({last_error})",
                hint="start one with `vudsync kafka up`, or check VUDSYNC_KAFKA_BOOTSTRAP",
            )
        if tcp_answers(bootstrap, timeout=min(1.0, remaining)):
            try:
                with admin_client(
                    bootstrap, security=security, timeout=min(5.0, max(remaining, 1.0))
                ) as admin:
                    cluster: dict[str, Any] = admin.describe_cluster()
                if cluster.get("brokers"):
                    return cluster
                last_error = "metadata lists no broker yet"
            except KafkaAccessDenied:
                raise  # wrong credentials do not get better by waiting
            except Exception as exc:
                last_error = f"{type(exc).__name__}: {exc}"
        time.sleep(min(0.1, max(deadline - time.monotonic(), 0)))


def cluster_size(
    bootstrap: str, *, security: KafkaSecurity = PLAINTEXT, timeout: float = 30.0
) -> ClusterSize:
    """What the cluster says of its brokers (:class:`kernel.replication.ClusterSize`).

    Asked through :func:`wait_for_broker`, which tries again until ``timeout``: a component
    starting while one broker of a cluster is down (its metadata still names it, so the first
    request may go to it) waits for an answer from another instead of exiting. The quorum's
    voters are asked too, and counted when the brokers are combined broker/controller nodes;
    a principal that may not describe the cluster gets the registered brokers alone."""
    brokers = wait_for_broker(bootstrap, timeout, security=security).get("brokers") or []
    registered = tuple(sorted(int(b["broker_id"]) for b in brokers))
    fenced = tuple(sorted(int(b["broker_id"]) for b in brokers if b.get("is_fenced")))
    live = [b for b in registered if b not in fenced]
    return ClusterSize(registered, fenced, _combined_voters(bootstrap, security, timeout, live[:1]))


def _combined_voters(
    bootstrap: str, security: KafkaSecurity, timeout: float, live: list[int]
) -> tuple[int, ...]:
    """The quorum's voter ids if broker ``live[0]`` is also a controller, else ()."""
    if not live:
        return ()
    try:
        with admin_client(bootstrap, security=security, timeout=timeout) as admin:
            asked = ConfigResource(ConfigResourceType.BROKER, str(live[0]), configs={"process.roles": None})
            # "all": the default filter ("modified") leaves out a static broker setting
            configs = admin.describe_configs([asked], config_filter="all")
            roles = str(configs["broker"][str(live[0])]["process.roles"]["value"] or "")
            if "controller" not in roles.split(","):
                return ()
            quorum: dict[str, Any] = admin.describe_metadata_quorum()
    except Exception as exc:  # not allowed, or not KRaft: the registered brokers decide alone
        log.info(
            "cannot read the controller quorum (%s): counting registered brokers only", type(exc).__name__
        )
        return ()
    return tuple(
        sorted(
            int(voter["replica_id"])
            for topic in quorum.get("topics") or []
            for partition in topic.get("partitions") or []
            for voter in partition.get("current_voters") or []
        )
    )


def replication_factor(
    bootstrap: str, configured: int = 0, *, security: KafkaSecurity = PLAINTEXT, timeout: float = 30.0
) -> int:
    """``configured`` when set (> 0); else from the cluster's *configured* size, brokers that
    are down included (:func:`kernel.replication.replication_for`): 3 on a cluster of three or
    more brokers, so a topic created while one is down gets as many replicas as its siblings."""
    if configured > 0:
        return configured
    size = cluster_size(bootstrap, security=security, timeout=timeout)
    replication = replication_for(size)
    down = [b for b in size.missing if b in size.registered]
    never = [b for b in size.missing if b not in size.registered]
    if down:
        log.warning(
            "Kafka brokers %s of %s are not live: topics created now get %d replicas and stay "
            "under-replicated until those brokers are back",
            down,
            list(size.known),
            replication,
        )
    if never:
        log.warning(
            "Kafka nodes %s of %s have never run as brokers: topics with %d replicas cannot be "
            "created until they have",
            never,
            list(size.known),
            replication,
        )
    return replication


def replicas_of(
    bootstrap: str, topic: str, *, security: KafkaSecurity = PLAINTEXT, timeout: float = 30.0
) -> int | None:
    """How many replicas ``topic`` has (its first partition's); None when it is missing or this
    principal may not describe it. One metadata request — ``DESCRIBE`` on the topic, where
    :func:`replication_factor` needs the cluster's (which a component's ACLs do not grant, and
    the brokers' authorizer logs each refusal)."""
    what = f"describe topic {topic}"
    with admin_client(bootstrap, security=security, timeout=timeout) as admin, translated(what):
        described = admin.describe_topics([topic])
    for found in described:
        partitions = found.get("partitions") or []
        if found.get("name") == topic and found.get("error_code") == 0 and partitions:
            return len(partitions[0].get("replica_nodes") or []) or None
    return None


def _as_specs(specs: Iterable[TopicSpec | tuple[Any, ...]]) -> list[TopicSpec]:
    return [spec if isinstance(spec, TopicSpec) else TopicSpec(*spec) for spec in specs]


def ensure_topics(
    bootstrap: str,
    specs: Iterable[TopicSpec | tuple[Any, ...]],
    *,
    security: KafkaSecurity = PLAINTEXT,
    timeout: float = 30.0,
    denied_ok: bool = False,
) -> list[str]:
    """Create the topics that do not exist yet; return the names this call created.

    Existing topics are left as they are (a partition count that differs from the spec is
    logged, not changed). Returns once every requested topic has a leader for each partition.
    A topic the cluster's ACLs do not let this client create raises :class:`KafkaAccessDenied`,
    or with ``denied_ok`` is logged and not waited for (a component starting with least
    privilege: the operator's principal creates the topics).
    """
    wanted = _as_specs(specs)
    if not wanted:
        return []
    # a broker of the cluster may be down (its metadata still names it): try again, with a new
    # client, until the deadline — a component starting then waits instead of exiting
    deadline = time.monotonic() + timeout
    backoff = Backoff(base=0.2, cap=2.0)
    attempt = 0
    while True:
        try:
            return _ensure_once(bootstrap, wanted, security, max(1.0, deadline - time.monotonic()), denied_ok)
        except RetryableError as exc:
            attempt += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            log.warning("create topics: %s; trying again", exc)
            time.sleep(min(backoff.delay(attempt), left))


class _Described(NamedTuple):
    """What a metadata request says of some topics: ``existing`` (name → partitions),
    ``missing`` (unknown to the cluster), ``hidden`` (this principal may not describe them)."""

    existing: dict[str, int]
    missing: list[str]
    hidden: list[str]


def _describe(admin: KafkaAdminClient, names: list[str]) -> _Described:
    """One metadata request for ``names`` (kafka-python asks it without auto-creation)."""
    with translated(f"describe topics {sorted(names)}"):
        topics = admin.describe_topics(names)
    by_name = {t.get("name"): t for t in topics}
    out = _Described({}, [], [])
    for name in names:
        error = kafka_errors.for_code(int((by_name.get(name) or {"error_code": 3})["error_code"]))
        if error is kafka_errors.UnknownTopicOrPartitionError:
            out.missing.append(name)
        elif issubclass(error, _DENIED):
            out.hidden.append(name)
        else:  # known; a leader may still be on its way (LEADER_NOT_AVAILABLE): waited for below
            out.existing[name] = len(by_name[name].get("partitions") or [])
    return out


def missing_topics(
    bootstrap: str, names: Iterable[str], *, security: KafkaSecurity = PLAINTEXT, timeout: float = 30.0
) -> list[str]:
    """Those of ``names`` not known to exist: missing, or not describable by this principal."""
    names = list(names)
    if not names:
        return []
    with admin_client(bootstrap, security=security, timeout=timeout) as admin:
        described = _describe(admin, names)
    return [*described.missing, *described.hidden]


def ensure_missing_topics(
    bootstrap: str,
    specs: Callable[[int], Iterable[TopicSpec]],
    configured_replication: int = 0,
    *,
    security: KafkaSecurity = PLAINTEXT,
    timeout: float = 30.0,
    denied_ok: bool = False,
) -> list[str]:
    """:func:`ensure_topics` for ``specs(replicas)``, where the replicas come from
    ``configured_replication`` or else the cluster (:func:`replication_factor`) — asked only
    when a topic is missing. When every topic exists nothing but one metadata request is made
    (a component's start: no cluster description, no create request its ACLs would refuse)."""
    names = [spec.name for spec in _as_specs(specs(1))]
    if not missing_topics(bootstrap, names, security=security, timeout=timeout):
        return []
    replication = replication_factor(bootstrap, configured_replication, security=security, timeout=timeout)
    return ensure_topics(
        bootstrap, specs(replication), security=security, timeout=timeout, denied_ok=denied_ok
    )


def _ensure_once(
    bootstrap: str, wanted: list[TopicSpec], security: KafkaSecurity, timeout: float, denied_ok: bool
) -> list[str]:
    replicas = {spec.name: spec.replication for spec in wanted}
    created: list[str] = []
    with admin_client(bootstrap, security=security, timeout=timeout) as admin:
        described = _describe(admin, [spec.name for spec in wanted])
        request = {
            spec.name: {
                "num_partitions": spec.partitions,
                "replication_factor": spec.replication,
                "configs": {k: str(v) for k, v in (spec.config or {}).items()},
            }
            for spec in wanted
            if spec.name in described.missing
        }
        response: dict[str, Any] = {"topics": []}
        if request:
            with translated(f"create topics {sorted(request)}"):
                response = admin.create_topics(request, timeout_ms=int(timeout * 1000), raise_errors=False)
        denied: list[str] = list(described.hidden)  # not even described: not asked to create either
        for result in response["topics"]:
            error = kafka_errors.for_code(result["error_code"])
            if error is kafka_errors.NoError:
                created.append(result["name"])
            elif error is kafka_errors.TopicAlreadyExistsError:
                continue  # created since it was described: fine
            elif issubclass(error, _DENIED):
                denied.append(result["name"])
            elif error is kafka_errors.InvalidReplicationFactorError:
                raise TopicError(
                    f"create topic {result['name']}: {result.get('error_message')}",
                    hint=too_few_brokers_hint(replicas[result["name"]]),
                )
            elif error.retriable:
                raise RetryableError(
                    f"create topic {result['name']}: {error.__name__}: {result.get('error_message')}"
                )
            else:
                raise TopicError(
                    f"create topic {result['name']}: {error.__name__}: {result.get('error_message')}"
                )
        if denied and not denied_ok:
            raise KafkaAccessDenied(
                f"not allowed to describe or create topics {sorted(denied)}", hint=_DENIED_HINT
            )
        if denied:
            log.warning(
                "not allowed to describe or create topics %s: left to `vudsync topics ensure`", sorted(denied)
            )
        visible = [spec.name for spec in wanted if spec.name not in denied]
        with translated(f"wait for topics {sorted(visible)}"):
            admin.wait_for_topics(visible, timeout_ms=int(timeout * 1000))
    _warn_on_partition_mismatch(described.existing, [s for s in wanted if s.name in described.existing])
    if created:
        log.info("created topics %s", created)
    return created


def _warn_on_partition_mismatch(partitions: Mapping[str, int], specs: list[TopicSpec]) -> None:
    for spec in specs:
        have = partitions.get(spec.name, 0)
        if have and have != spec.partitions:
            log.warning(
                "topic %s exists with %d partitions, spec asks for %d: left unchanged",
                spec.name,
                have,
                spec.partitions,
            )


def delete_topics(
    bootstrap: str, names: Iterable[str], *, security: KafkaSecurity = PLAINTEXT, timeout: float = 30.0
) -> list[str]:
    """Delete topics; unknown ones are fine. Returns the names this call deleted."""
    names = list(names)
    if not names:
        return []
    deleted: list[str] = []
    what = f"delete topics {names}"
    with admin_client(bootstrap, security=security, timeout=timeout) as admin, translated(what):
        response = admin.delete_topics(names, timeout_ms=int(timeout * 1000), raise_errors=False)
    for result in response["topics"]:
        error = kafka_errors.for_code(result["error_code"])
        if error is kafka_errors.NoError:
            deleted.append(result["name"])
        elif error is not kafka_errors.UnknownTopicOrPartitionError:
            kind = RetryableError if error.retriable else TopicError
            raise kind(f"delete topic {result['name']}: {error.__name__}")
    return deleted


def list_topics(bootstrap: str, *, security: KafkaSecurity = PLAINTEXT, timeout: float = 30.0) -> list[str]:
    """Names of every topic in the cluster (internal ones included)."""
    with admin_client(bootstrap, security=security, timeout=timeout) as admin, translated("list topics"):
        return sorted(admin.list_topics())
