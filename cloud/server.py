"""Running the cloud API: :func:`serve` in this process, :class:`CloudServer` as a child.

``serve`` runs uvicorn until SIGTERM or SIGINT, then finishes in-flight requests
(5 s grace) and closes the database. ``CloudServer`` starts ``python -m cloud`` in a
subprocess on a free port, waits for ``/healthz`` and stops it by pid; tests, the demo
and benchmarks use it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from cloud.app import build_app
from cloud.faults import FaultConfig
from cloud.settings import CloudSettings, check_listen_address

log = logging.getLogger(__name__)

SECRET_ENV = "CLOUD_API_CLIENT_SECRET"
ADMIN_TOKEN_ENV = "CLOUD_API_ADMIN_TOKEN"


class _Server(uvicorn.Server):
    """uvicorn, telling ``port_file`` the port it listens on once it does."""

    def __init__(self, config: uvicorn.Config, port_file: Path | None) -> None:
        super().__init__(config)
        self._port_file = port_file

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self._port_file is None or not self.servers or self.should_exit:
            return
        bound = self.servers[0].sockets[0].getsockname()
        tmp = self._port_file.with_suffix(".tmp")
        tmp.write_text(str(bound[1]))
        tmp.replace(self._port_file)


def serve(
    settings: CloudSettings,
    host: str = "127.0.0.1",
    port: int = 8700,
    *,
    port_file: Path | None = None,
    log_level: str = "info",
    access_log: bool = False,
    loop: str = "auto",
    http: str = "auto",
) -> None:
    """Serve until SIGTERM/SIGINT. ``port=0`` picks a free port (see ``port_file``).

    The access log is off by default: query strings carry e-mail addresses. ``loop`` and
    ``http`` are uvicorn's: ``auto`` takes uvloop and httptools when they are installed
    (about a third less CPU per request here), else asyncio and h11.
    """
    check_listen_address(settings, host)
    app = build_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        loop=loop,
        http=http,
        timeout_graceful_shutdown=5,
        server_header=False,
        lifespan="on",
    )
    _Server(config, port_file).run()


class CloudServerError(RuntimeError):
    """The child server did not start (its log tail is in the message)."""


class CloudServer:
    """The cloud API in a subprocess; a context manager.

    >>> with CloudServer(token_ttl_seconds=60) as cloud:   # doctest: +SKIP
    ...     httpx.get(f"{cloud.url}/v1/me", headers=cloud.auth_headers())
    """

    def __init__(
        self,
        *,
        db_path: Path | str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        customer_name: str = "Demo customer",
        client_id: str = "vudsync",
        client_secret: str | None = None,
        admin_token: str | None = None,
        token_ttl_seconds: float | None = None,
        rate_limit_per_second: float | None = None,
        faults: FaultConfig | None = None,
        secret_hash_iterations: int | None = None,
        token_rate_per_address: float | None = None,
        extra_args: tuple[str, ...] = (),
        startup_timeout: float = 30.0,
        python: str = sys.executable,
    ) -> None:
        # beside the database when one is given (a test's tmp_path, the demo's home), so the log
        # and port file are cleaned up with it; else in the system's temp folder (see cleanup)
        parent = Path(db_path).parent if db_path is not None else None
        self._workdir = Path(tempfile.mkdtemp(prefix="cloud-api-", dir=parent))
        self.db_path = Path(db_path) if db_path is not None else self._workdir / "cloud.db"
        self.host = host
        self._requested_port = port
        self.customer_name = customer_name
        self.client_id = client_id
        # unset: random per server, so no run shares a known secret (read them back from here)
        self.client_secret = client_secret or secrets.token_urlsafe(24)
        self.admin_token = admin_token or secrets.token_urlsafe(24)
        self._options: list[str] = []
        if token_ttl_seconds is not None:
            self._options += ["--token-ttl", str(token_ttl_seconds)]
        if rate_limit_per_second is not None:
            self._options += ["--rate-limit-per-second", str(rate_limit_per_second)]
        if faults is not None:
            self._options += ["--faults-json", faults.model_dump_json()]
        if secret_hash_iterations is not None:
            self._options += ["--secret-hash-iterations", str(secret_hash_iterations)]
        if token_rate_per_address is not None:
            self._options += ["--token-rate-per-address", str(token_rate_per_address)]
        self._options += list(extra_args)
        self._startup_timeout = startup_timeout
        self._python = python
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self.port = 0
        self.log_path = self._workdir / "server.log"

    # -- properties ------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("not started")
        return self._process.pid

    def admin_headers(self) -> dict[str, str]:
        return {"X-Admin-Token": self.admin_token}

    def token(
        self, scope: str | None = None, *, client_id: str | None = None, client_secret: str | None = None
    ) -> str:
        """A fresh access token for the configured client (or the one given)."""
        form = {
            "grant_type": "client_credentials",
            "client_id": client_id or self.client_id,
            "client_secret": client_secret if client_secret is not None else self.client_secret,
        }
        if scope is not None:
            form["scope"] = scope
        response = httpx.post(f"{self.url}/oauth/token", data=form, timeout=30)
        response.raise_for_status()
        return str(response.json()["access_token"])

    def auth_headers(self, scope: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(scope)}"}

    def add_client(self, client_id: str, client_secret: str, *, customer_admin: bool) -> None:
        """Register another OAuth client of the customer (``POST /admin/clients``): a portal
        administrator, a helpdesk that is not an administrator. A client already registered
        with this id is taken when its secret and role are these (a server kept across tests
        keeps its clients); another secret or role is a ``ValueError``."""
        added = httpx.post(
            f"{self.url}/admin/clients",
            headers=self.admin_headers(),
            json={
                "client_id": client_id,
                "client_secret": client_secret,
                "is_customer_admin": customer_admin,
            },
            timeout=30,
        )
        if added.status_code != 409:
            added.raise_for_status()
            return
        taken = ValueError(
            f"client {client_id!r} is registered already with another secret or role: "
            "give this one another id"
        )
        try:
            token = self.token(client_id=client_id, client_secret=client_secret)
        except httpx.HTTPStatusError:
            raise taken from None  # another secret
        me = httpx.get(f"{self.url}/v1/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        if me.status_code != 200 or me.json()["is_customer_admin"] != customer_admin:
            raise taken

    def portal(self, client_id: str, client_secret: str, timeout: float = 30.0) -> httpx.Client:
        """An administrator in the cloud's portal: another OAuth client than the integration, so
        its writes are of origin ``cloud``. Registers it; the caller closes the client."""
        self.add_client(client_id, client_secret, customer_admin=True)
        token = self.token(client_id=client_id, client_secret=client_secret)
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)

    def set_faults(self, **config: Any) -> None:
        """Replace the running cloud's fault injection (``PUT /admin/faults``, fields of
        :class:`~cloud.faults.FaultConfig`); no arguments: a healthy cloud."""
        httpx.put(
            f"{self.url}/admin/faults", headers=self.admin_headers(), json=config, timeout=10
        ).raise_for_status()

    def reset(self) -> None:
        """Wipe the running cloud's directory data, audit and idempotency keys (``POST
        /admin/reset``); its OAuth clients stay."""
        httpx.post(f"{self.url}/admin/reset", headers=self.admin_headers(), timeout=10).raise_for_status()

    def stats(self) -> dict[str, Any]:
        """The running cloud's request counters (``GET /admin/stats``; never faulted)."""
        response = httpx.get(f"{self.url}/admin/stats", headers=self.admin_headers(), timeout=10)
        response.raise_for_status()
        return dict(response.json())

    # -- lifecycle -------------------------------------------------------------------

    def command(self, port_file: Path) -> list[str]:
        return [
            self._python,
            "-m",
            "cloud",
            "--host",
            self.host,
            "--port",
            str(self._requested_port),
            "--port-file",
            str(port_file),
            "--db",
            str(self.db_path),
            "--client-id",
            self.client_id,
            "--customer-name",
            self.customer_name,
            *self._options,
        ]

    def start(self) -> CloudServer:
        port_file = self._workdir / "port"
        port_file.unlink(missing_ok=True)
        env = dict(os.environ)
        env[SECRET_ENV] = self.client_secret
        env[ADMIN_TOKEN_ENV] = self.admin_token
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        self._log_file = self.log_path.open("ab")
        self._process = subprocess.Popen(
            self.command(port_file),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + self._startup_timeout
        try:
            self.port = self._wait_for_port(port_file, deadline)
            self._wait_healthy(deadline)
        except BaseException:
            self.stop()
            raise
        log.info("cloud API pid %d listening on %s", self._process.pid, self.url)
        return self

    def _fail(self, message: str) -> CloudServerError:
        tail = ""
        with contextlib.suppress(OSError):
            tail = self.log_path.read_text(errors="replace")[-4000:]
        return CloudServerError(f"{message}\n--- server log ---\n{tail}")

    def _wait_for_port(self, port_file: Path, deadline: float) -> int:
        assert self._process is not None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise self._fail(f"cloud API exited with {self._process.returncode}")
            with contextlib.suppress(OSError, ValueError):
                return int(port_file.read_text().strip())
            time.sleep(0.02)
        raise self._fail("cloud API did not bind a port in time")

    def _wait_healthy(self, deadline: float) -> None:
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        return
                time.sleep(0.02)
        raise self._fail("cloud API did not become healthy in time")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (graceful), then SIGKILL after ``timeout``. Returns the exit code."""
        process, self._process = self._process, None
        code: int | None = None
        if process is not None:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    os.kill(process.pid, signal.SIGKILL)
                    process.wait(timeout)
            code = process.returncode
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code

    def cleanup(self) -> None:
        """Remove the work folder (database and log) after :meth:`stop`."""
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> CloudServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
