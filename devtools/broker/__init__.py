"""The local Apache Kafka broker of development, tests, the demo and the benchmarks.

Three steps, a module each: :mod:`~devtools.broker.fetch` (the jars, from Maven Central),
:mod:`~devtools.broker.configure` (ports, ``server.properties``, JVM flags) and
:mod:`~devtools.broker.run` (start, wait, record, stop — :class:`LocalKafkaBroker`).
"""

from devtools.broker.configure import JVM_FLAGS, free_port
from devtools.broker.fetch import FetchError, JarCache, default_cache_root
from devtools.broker.run import BrokerStartError, BrokerStatus, LocalKafkaBroker

__all__ = [
    "JVM_FLAGS",
    "BrokerStartError",
    "BrokerStatus",
    "FetchError",
    "JarCache",
    "LocalKafkaBroker",
    "default_cache_root",
    "free_port",
]
