"""`vudsync demo` as a user runs it: exits 0 with non-zero applied counts and a matching cloud."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_demo_syncs_the_sample_directory(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "VUDSYNC_HOME": str(tmp_path),
        "VUDSYNC_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "VUDSYNC_CONFIG": "/nonexistent/vudsync.toml",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "vudsync",
            "demo",
            "--users",
            "40",
            "--companies",
            "4",
            "--changes",
            "12",
            "--timeout",
            "120",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["applied"] > 0 and report["planned"] >= report["applied"]
    assert report["users_in_cloud"] == report["users_in_store"] > 0
    assert report["dead_lettered"] == 0 and report["parked"] == 0
    assert report["end_to_end_p99_seconds"] is not None
    # the live changes are reported apart from the initial sync that queued behind the snapshot
    assert report["live_changes_applied"] > 0
    assert report["live_end_to_end_p99_seconds"] is not None
