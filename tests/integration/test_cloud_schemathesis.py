"""Property-based API testing: schemathesis against the live server's ``/openapi.json``.

Runs every phase (examples, coverage, fuzzing, stateful) with every check except
``positive_data_acceptance``: valid random data may rightly be refused here (unknown
ids → 404, duplicates → 409, reused Idempotency-Key → 422). The admin endpoints are
tested without the admin token (so they must answer 401, and never reset or fault the
server). Bounded: ``CLOUD_SCHEMATHESIS_EXAMPLES`` (default 20) examples per operation,
about 2,000 requests, 15-25 s here. ``CLOUD_SCHEMATHESIS_SEED`` picks the seed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.server import CloudServer

pytestmark = pytest.mark.integration

pytest.importorskip("schemathesis", reason="schemathesis is a dev dependency")


@pytest.fixture(scope="module")
def server() -> Iterator[CloudServer]:
    cloud = CloudServer()
    with cloud:
        yield cloud
    cloud.cleanup()


def test_openapi_document_holds_under_schemathesis(server: CloudServer, tmp_path: Path) -> None:
    examples = os.environ.get("CLOUD_SCHEMATHESIS_EXAMPLES", "20")
    seed = os.environ.get("CLOUD_SCHEMATHESIS_SEED", "1")
    command = [
        sys.executable,
        "-c",
        "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
        "run",
        f"{server.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {server.token()}",
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "--max-examples",
        examples,
        "--seed",
        seed,
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--max-failures",
        "20",
        "--no-shrink",
    ]
    started = time.monotonic()
    # cwd: schemathesis and hypothesis keep their databases in the working directory
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False)
    elapsed = time.monotonic() - started
    report = result.stdout[-20_000:] + result.stderr[-4_000:]
    assert result.returncode == 0, f"schemathesis failed after {elapsed:.0f} s:\n{report}"
    assert "passed" in result.stdout
