"""Per-run secrets for the demo, the benchmarks and the tests.

Production settings have no default secret (``Settings.require_secret``); what vudsync starts
for itself — the demo, devtools, the test fixtures — generates random ones per run and passes
them to the processes it starts (``devtools.processes.component_env``).
"""

from __future__ import annotations

import secrets
from typing import Any

from pydantic import SecretStr

from kernel.settings import SECRET_FIELDS, Settings


def random_secret() -> str:
    """A fresh random secret (URL-safe, 192 bits)."""
    return secrets.token_urlsafe(24)


def with_run_secrets(settings: Settings) -> Settings:
    """``settings`` with a random value for every secret left unset; set ones are kept."""
    missing: dict[str, Any] = {
        name: SecretStr(random_secret()) for name in SECRET_FIELDS if getattr(settings, name) is None
    }
    return settings.model_copy(update=missing) if missing else settings
