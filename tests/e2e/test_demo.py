"""`vudsync demo` as a user runs it: exits 0 with non-zero applied counts and a matching cloud,
and an administrator's grant in the cloud written back to the store once, without an echo —
on the embedded default's single broker, and on the secured three-node cluster of its home."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from devtools.broker.cluster import LocalKafkaCluster


def _demo(home: Path, bootstrap: str) -> tuple[dict[str, Any], str]:
    """The demo's JSON report and its stderr, or a failure with the stderr's tail."""
    env = {
        **os.environ,
        "VUDSYNC_HOME": str(home),
        "VUDSYNC_KAFKA_BOOTSTRAP": bootstrap,
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
    return json.loads(done.stdout), done.stderr


def _assert_synced(report: dict[str, Any]) -> None:
    assert report["applied"] > 0 and report["planned"] >= report["applied"]
    assert report["users_in_cloud"] == report["users_in_store"] > 0
    assert report["dead_lettered"] == 0 and report["parked"] == 0
    assert report["end_to_end_p99_seconds"] is not None
    # the live changes are reported apart from the initial sync that queued behind the snapshot
    assert report["live_changes_applied"] > 0
    assert report["live_end_to_end_p99_seconds"] is not None
    # the two-way pipeline: an administrator's grant in the cloud reached the store as the
    # cloud's, in one change-log row, and vudsync wrote nothing in the cloud because of it
    grant = report["cloud_grant"]
    assert grant["store_origin"] == "cloud" and grant["change_log_rows"] == 1, grant
    assert grant["cloud_writes_by_vudsync"] == 0 and grant["to_store_seconds"] > 0, grant


def test_demo_syncs_the_sample_directory(kafka_bootstrap: str, tmp_path: Path) -> None:
    report, _ = _demo(tmp_path, kafka_bootstrap)
    _assert_synced(report)


def test_demo_runs_on_the_secured_cluster_of_its_home(secure_cluster: LocalKafkaCluster) -> None:
    """`vudsync kafka up --brokers 3 --secure` then `VUDSYNC_KAFKA_BOOTSTRAP=… vudsync demo`:
    each component as its own principal, the run's topics granted their ACLs."""
    report, stderr = _demo(secure_cluster.settings.home, secure_cluster.bootstrap())
    said = " ".join(stderr.split())  # the console wraps its lines at its width
    assert "secured (SASL_SSL, SCRAM, ACLs), one principal per component" in said
    _assert_synced(report)
