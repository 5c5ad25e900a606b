"""A throwaway PostgreSQL server from the Debian binaries, for tests and benchmarks.

``LocalPostgresServer(root).start()`` runs ``initdb`` into ``<root>/data`` and starts
``postgres`` as a direct child process listening on 127.0.0.1:<free port> (unix socket in
``<root>/sock``), trust authentication for the ``vudsync`` superuser. ``stop()`` signals
exactly that pid (fast shutdown, SIGKILL after a grace period) and waits until it is gone.

PostgreSQL refuses to run as root: when this process is root, ``initdb`` and ``postgres``
run as the ``postgres`` system user (``user=``/``group=`` of :class:`subprocess.Popen`, the
same as ``runuser -u postgres --``), and ``root`` is handed to that user.

Binaries are looked up on PATH, then in ``/usr/lib/postgresql/<version>/bin`` (newest).
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import logging
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from devtools.broker import free_port
from kernel.errors import ConfigurationError, VudsyncError

log = logging.getLogger(__name__)

INSTALL_HINT = "install the Debian package: apt-get install -y postgresql (or set VUDSYNC_TEST_POSTGRES_URL)"

#: Settings for a disposable cluster on a small shared machine: durability off (the data
#: is thrown away), few connections, small memory.
FAST_OPTIONS: dict[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "100",
    "shared_buffers": "128MB",
    "max_wal_size": "1GB",
}


class PostgresStartError(VudsyncError):
    """The throwaway server could not be created or did not come up."""


def find_binary(name: str) -> str:
    """Path of a PostgreSQL server binary (``initdb``, ``postgres``); ConfigurationError if absent."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if candidates:
        return candidates[-1]
    raise ConfigurationError(f"PostgreSQL server binary {name!r} not found", hint=INSTALL_HINT)


def _die_with_parent() -> None:
    """In the child (after the uid change, which would clear it): SIGTERM when the parent dies."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class LocalPostgresServer:
    """One disposable PostgreSQL cluster under ``root``."""

    superuser = "vudsync"

    def __init__(
        self,
        root: Path,
        *,
        port: int | None = None,
        options: dict[str, str] | None = None,
        bind_to_parent: bool = True,
    ) -> None:
        self.root = Path(root)
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log_path = self.root / "postgres.log"
        self.port = port or free_port()
        self.options = {**FAST_OPTIONS, **(options or {})}
        self.bind_to_parent = bind_to_parent
        self._proc: subprocess.Popen[bytes] | None = None

    # -- identity ---------------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/{dbname}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _run_as(self) -> dict[str, Any]:
        """Popen arguments that drop root to the ``postgres`` user (PostgreSQL refuses root)."""
        if os.geteuid() != 0:
            return {}
        try:
            account = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise ConfigurationError(
                "running as root and there is no 'postgres' user to run PostgreSQL as",
                hint=INSTALL_HINT,
            ) from exc
        return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    # -- life cycle -------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> LocalPostgresServer:
        initdb, postgres = find_binary("initdb"), find_binary("postgres")
        as_user = self._run_as()
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if as_user:
            os.chmod(self.root, 0o755)
            for path in (self.root, self.socket_dir):
                os.chown(path, as_user["user"], as_user["group"])
        env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "HOME": str(self.root)}
        if not (self.data_dir / "PG_VERSION").exists():
            result = subprocess.run(
                [initdb, "-D", str(self.data_dir), "-U", self.superuser, "--auth=trust",
                 "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
                capture_output=True, text=True, env=env, cwd=self.root, check=False, **as_user,
            )  # fmt: skip
            if result.returncode != 0:
                raise PostgresStartError(
                    f"initdb failed ({result.returncode}): {result.stderr.strip()[-2000:]}",
                    hint=INSTALL_HINT,
                )
        args = [postgres, "-D", str(self.data_dir), "-p", str(self.port), "-k", str(self.socket_dir),
                "-c", "listen_addresses=127.0.0.1"]  # fmt: skip
        for key, value in self.options.items():
            args += ["-c", f"{key}={value}"]
        with self.log_path.open("ab") as out:
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                cwd=self.root, start_new_session=True, close_fds=True,
                preexec_fn=_die_with_parent if self.bind_to_parent else None, **as_user,
            )  # fmt: skip
        self._wait_ready(timeout)
        log.info("postgres: pid %d at %s", self._proc.pid, self.url())
        return self

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise PostgresStartError(
                    f"postgres exited during start-up:\n{self.tail()}", hint=INSTALL_HINT
                )
            try:
                with psycopg.connect(self.url(), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                last = exc
                time.sleep(0.1)
        self.stop()
        raise PostgresStartError(f"postgres did not accept connections within {timeout:.0f}s: {last}")

    def stop(self, grace: float = 20.0) -> None:
        """Fast shutdown of our pid (SIGINT), SIGKILL after ``grace`` seconds; waits for the exit."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def create_database(self, name: str) -> str:
        """Create an empty database; returns its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def __enter__(self) -> LocalPostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
