"""Fetch: the broker's run-time jars, from Maven Central through the checked-in ``pom.xml``.

The jars land in a cache shared by every vudsync home: ``<cache root>/<version>/libs``, where
the cache root is ``$VUDSYNC_KAFKA_CACHE`` or ``~/.cache/vudsync/kafka``. A ``COMPLETE`` marker
says a fetch finished; several processes may fetch at once (a file lock, and the jars land in a
temporary folder renamed at the end).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from kernel.errors import ConfigurationError, RetryableError, VudsyncError

log = logging.getLogger(__name__)

#: the repository's pom.xml (``devtools/broker/`` → the checkout's root)
DEFAULT_POM = Path(__file__).resolve().parents[2] / "pom.xml"
_MARKER = "COMPLETE"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class FetchError(RetryableError):
    """Maven could not fetch the broker's jars (network, or a version Maven Central lacks)."""


def default_cache_root() -> Path:
    """``$VUDSYNC_KAFKA_CACHE`` or ``~/.cache/vudsync/kafka``: jar caches shared by every home."""
    configured = os.environ.get("VUDSYNC_KAFKA_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache/vudsync/kafka"


def require(program: str, hint: str) -> str:
    """The path of ``program`` on PATH, or a :class:`ConfigurationError` saying what to install."""
    found = shutil.which(program)
    if not found:
        raise ConfigurationError(f"`{program}` is not on PATH", hint=hint)
    return found


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if missing), held for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class JarCache:
    """The jars of one Kafka version in the shared cache."""

    def __init__(
        self, version: str, *, cache_root: Path | None = None, pom: Path | None = None, mvn: str = "mvn"
    ) -> None:
        self.version = version
        self.dir = (cache_root or default_cache_root()).resolve() / version
        self.pom = pom or DEFAULT_POM
        self.mvn = mvn

    @property
    def libs_dir(self) -> Path:
        return self.dir / "libs"

    def is_fetched(self) -> bool:
        return (self.dir / _MARKER).is_file() and any(self.libs_dir.glob(f"kafka_2.13-{self.version}.jar"))

    def fetch(self, *, force: bool = False) -> Path:
        """Copy the broker's run-time jars from Maven Central into the cache; return the libs folder.

        Skipped when the cache's marker says a previous fetch completed. Safe to run from several
        processes at once (a file lock; the jars land in a temporary folder renamed at the end).
        """
        if self.is_fetched() and not force:
            return self.libs_dir
        mvn = require(self.mvn, "install Apache Maven (Debian: `apt-get install maven`) and a Java 17+ JDK")
        if not self.pom.is_file():
            raise ConfigurationError(
                f"no pom.xml at {self.pom}",
                hint="run from a vudsync checkout, or pass the pom's path explicitly",
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        with locked(self.dir / ".lock"):
            if self.is_fetched() and not force:
                return self.libs_dir
            staging = self.dir / f"libs.tmp-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            command = [
                mvn,
                "-q",
                "-B",
                "-Dstyle.color=never",
                "-f",
                str(self.pom),
                "dependency:copy-dependencies",
                f"-Dkafka.version={self.version}",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={staging}",
            ]
            started = time.monotonic()
            log.info("fetching Kafka %s jars: %s", self.version, " ".join(command))
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            (self.dir / "fetch.log").write_text(result.stdout + result.stderr)
            if result.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
                shutil.rmtree(staging, ignore_errors=True)
                raise self._failure(result)
            shutil.rmtree(self.libs_dir, ignore_errors=True)
            staging.rename(self.libs_dir)
            jars = sorted(p.name for p in self.libs_dir.glob("*.jar"))
            (self.dir / _MARKER).write_text(
                json.dumps({"version": self.version, "jars": jars, "fetched_at": time.time()})
            )
            log.info("fetched %d jars in %.1f s", len(jars), time.monotonic() - started)
        return self.libs_dir

    def _failure(self, result: subprocess.CompletedProcess[str]) -> VudsyncError:
        output = _ANSI.sub("", result.stdout + result.stderr)
        message = f"maven could not fetch Kafka {self.version} (exit {result.returncode})"
        if "Could not find artifact" in output or "was not found in" in output:
            return ConfigurationError(
                f"{message}: Maven Central has no Kafka {self.version}",
                hint="set VUDSYNC_KAFKA_VERSION to a released 4.x version",
            )
        errors = [line for line in output.splitlines() if line.startswith("[ERROR] ")]
        return FetchError(
            message + ":\n" + "\n".join(errors[:5] or output.splitlines()[-10:]),
            hint=f"check that this machine reaches Maven Central; full output in {self.dir / 'fetch.log'}",
        )
