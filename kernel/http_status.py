"""Every component's HTTP endpoint: ``/metrics`` next to ``/healthz``, ``/readyz`` and ``/status``.

One small threaded server (standard library) per process, started by the composition root
when ``--metrics-port`` is given:

- ``GET /metrics``: the component's Prometheus registry (text format);
- ``GET /healthz``: liveness, ``200 ok`` while the process serves requests;
- ``GET /readyz``: ``200`` when ready, ``503`` when not, with a JSON body
  ``{"ready": …, "reasons": […]}`` (the rules: :mod:`kernel.health`);
- ``GET /status``: JSON, ``{"component", "worker", "ready", "reasons", "figures"}``; the
  figures are those ``vudsync status --json`` shows for that component, read from its own
  registry.

The component provides the answers as callables; they run on the server's threads, so they
only read plain values (metrics, flags) and never call into an event loop. A callable that
raises makes ``/readyz`` answer 503 with the exception's class as the reason (never its
message: it could carry a secret).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from kernel.admin import tcp_answers
from kernel.health import Readiness
from kernel.settings import Settings

log = logging.getLogger(__name__)

ReadinessFn = Callable[[], Readiness]
FiguresFn = Callable[[], Mapping[str, Any]]


class BrokerCheck:
    """Whether a broker accepts connections at ``bootstrap``, asked at most every ``ttl``
    seconds (probes come often; a TCP connect per probe is enough and cheap)."""

    def __init__(
        self,
        bootstrap: str,
        *,
        ttl: float = 5.0,
        timeout: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        answers: Callable[[str, float], bool] = tcp_answers,
    ) -> None:
        self.bootstrap = bootstrap
        self._ttl = ttl
        self._timeout = timeout
        self._clock = clock
        self._answers = answers
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._reachable = False

    def __call__(self) -> bool:
        with self._lock:
            now = self._clock()
            if self._checked_at is None or now - self._checked_at >= self._ttl:
                self._reachable = self._answers(self.bootstrap, self._timeout)
                self._checked_at = self._clock()
            return self._reachable


def registry_total(registry: CollectorRegistry, name: str) -> float | None:
    """The sum of a metric's samples over its labels; None when it has none."""
    values = [s.value for family in registry.collect() for s in family.samples if s.name == name]
    return float(sum(values)) if values else None


def registry_by_label(registry: CollectorRegistry, name: str, label: str) -> dict[str, float]:
    """A metric's samples summed per value of one label."""
    out: dict[str, float] = {}
    for family in registry.collect():
        for s in family.samples:
            if s.name == name and label in s.labels:
                out[s.labels[label]] = out.get(s.labels[label], 0.0) + s.value
    return out


class StatusServer:
    """The endpoint of one component; :meth:`start` binds and serves on a daemon thread."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        component: str,
        worker: str,
        readiness: ReadinessFn,
        figures: FiguresFn,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.registry = registry
        self.component = component
        self.worker = worker
        self._readiness = readiness
        self._figures = figures
        self._host = host
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the one asked for, or the one chosen for port 0)."""
        if self._server is None:
            raise RuntimeError("the status server is not started")
        return int(self._server.server_address[1])

    def readiness(self) -> Readiness:
        try:
            return self._readiness()
        except Exception as exc:  # a failing check is a reason, never a crashed probe
            log.warning("%s: readiness check failed: %s", self.component, type(exc).__name__)
            return Readiness((f"the readiness check failed: {type(exc).__name__}",))

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"component": self.component, "worker": self.worker}
        out.update(self.readiness().as_dict())
        out["figures"] = dict(self._figures())
        return out

    def start(self) -> StatusServer:
        handler = type("Handler", (_Handler,), {"owner": self})
        self._server = ThreadingHTTPServer((self._host, self._port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"{self.component}-status-http", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def status_server(
    settings: Settings,
    registry: CollectorRegistry,
    port: int,
    component: str,
    readiness: ReadinessFn,
    figures: FiguresFn,
) -> StatusServer:
    """A component's endpoint on ``settings.metrics_host:port``, named by its worker (not started)."""
    return StatusServer(
        registry,
        component=component,
        worker=settings.worker_name,
        readiness=readiness,
        figures=figures,
        host=settings.metrics_host,
        port=port,
    )


class _Handler(BaseHTTPRequestHandler):
    owner: StatusServer

    def do_GET(self) -> None:  # the standard library's name
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(self.owner.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/readyz":
            ready = self.owner.readiness()
            self._json(200 if ready.ready else 503, ready.as_dict())
        elif path == "/status":
            try:
                body = self.owner.status()
            except Exception as exc:
                self._json(500, {"error": type(exc).__name__})
                return
            self._json(200, body)
        else:
            self._send(404, b"not found: try /metrics, /healthz, /readyz, /status\n", "text/plain")

    def _json(self, code: int, body: Mapping[str, Any]) -> None:
        self._send(code, (json.dumps(body, default=str) + "\n").encode(), "application/json")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: quiet
        log.debug("status http: " + format, *args)
