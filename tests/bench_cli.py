"""``vudsync bench …`` run as an operator runs it, for the benchmarks' end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_bench(
    kafka_bootstrap: str, home: Path, *args: str, timeout: float, **env: str
) -> subprocess.CompletedProcess[str]:
    """``vudsync bench <args>`` in a child process with its own home, this test's broker, no
    configuration file and ``env`` (settings for the bench and its workers); its output
    captured, its exit status left to the caller to check."""
    env = {
        **os.environ,
        "VUDSYNC_HOME": str(home),
        "VUDSYNC_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "VUDSYNC_CONFIG": "/nonexistent/vudsync.toml",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "vudsync", "bench", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
