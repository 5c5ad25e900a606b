"""Start-up settings of the reference cloud directory API.

One :class:`CloudSettings` is built per server process (by ``python -m cloud`` or the
``vudsync cloud serve`` command) and handed to :func:`cloud.app.build_app`. This package
never reads the environment itself outside ``cloud.__main__``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from cloud.faults import FaultConfig
from kernel.errors import ConfigurationError

DEFAULT_SCOPES: tuple[str, ...] = ("directory:read", "directory:write")
#: the demo defaults: good on a loopback address only (:func:`check_listen_address`)
DEFAULT_CLIENT_SECRET = "vudsync-demo-secret"
DEFAULT_ADMIN_TOKEN = "vudsync-admin"


class CloudSettings(BaseModel):
    """Everything the server needs to start. Secrets are ``SecretStr`` so they never print."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    db_path: Path = Field(description="SQLite database file (WAL mode); created if missing")
    customer_name: str = Field(default="Demo customer", min_length=1)
    client_id: str = Field(default="vudsync", min_length=1, description="the configured client")
    client_secret: SecretStr = Field(default=SecretStr(DEFAULT_CLIENT_SECRET))
    client_is_customer_admin: bool = Field(
        default=True, description="the configured client is a customer administrator"
    )
    admin_token: SecretStr = Field(
        default=SecretStr(DEFAULT_ADMIN_TOKEN), description="X-Admin-Token for /admin/*"
    )
    token_ttl_seconds: float = Field(default=3600.0, gt=0)
    rate_limit_per_second: float = Field(
        default=0.0, ge=0, description="token-bucket rate per client on /v1; 0 = off"
    )
    rate_limit_burst: float | None = Field(
        default=None, gt=0, description="bucket size; default max(1, rate)"
    )
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="larger request bodies are answered 413 (cloud.limits)"
    )
    token_rate_per_address: float = Field(
        default=5.0, ge=0, description="POST /oauth/token per second per client address; 0 = off"
    )
    token_burst_per_address: float = Field(
        default=20.0, gt=0, description="token requests an address may make at once"
    )
    changes_retention_seconds: float = Field(
        default=7 * 24 * 3600.0,
        gt=0,
        description="a change-feed cursor not used for this long expires (410: read in full again)",
    )
    docs: bool = Field(default=False, description="serve the Swagger UI at /docs (/openapi.json always)")
    faults: FaultConfig = Field(default_factory=FaultConfig)
    sqlite_synchronous: Literal["NORMAL", "FULL"] = Field(
        default="NORMAL",
        description="NORMAL: a crash of the process loses nothing, a power cut may lose the "
        "last commits (never half of one); FULL: fsync on every commit",
    )
    secret_hash_iterations: int = Field(
        default=100_000, ge=1, description="PBKDF2-SHA256 rounds for client secrets"
    )
    direct_dispatch: bool = Field(
        default=True,
        description="answer /v1 requests and batch items by calling the endpoints directly "
        "(cloud.direct); off: every one goes through the whole FastAPI stack (the reference "
        "the tests compare against, and the slow path of old)",
    )


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback IP address; any other name or address is reachable from outside."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_listen_address(settings: CloudSettings, host: str) -> None:
    """Refuse to listen on a non-loopback ``host`` with a demo default secret.

    Raises :class:`ConfigurationError` naming the variable to set (never the secret).
    """
    if is_loopback(host):
        return
    defaults = {
        "CLOUD_API_ADMIN_TOKEN": settings.admin_token.get_secret_value() == DEFAULT_ADMIN_TOKEN,
        "CLOUD_API_CLIENT_SECRET": settings.client_secret.get_secret_value() == DEFAULT_CLIENT_SECRET,
    }
    unset = [name for name, default in defaults.items() if default]
    if unset:
        raise ConfigurationError(
            f"refusing to listen on {host} with the demo default {' and '.join(unset)}",
            hint=f"set {' and '.join(unset)} to secrets of your own, or listen on 127.0.0.1",
        )
