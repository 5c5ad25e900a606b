"""No default secret outside the demo: production settings fail with the variable to set; the
demo, devtools and tests generate random ones per run; the reference cloud refuses to listen
beyond loopback with its demo defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from cloud.__main__ import main as cloud_main
from cloud.server import ADMIN_TOKEN_ENV, SECRET_ENV
from cloud.settings import CloudSettings, check_listen_address
from devtools.processes import component_env
from devtools.secrets import with_run_secrets
from kernel.errors import ConfigurationError
from kernel.settings import SECRET_FIELDS, Settings


@pytest.fixture
def bare(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    """Settings as production builds them with no secret in the environment."""
    for name in SECRET_FIELDS:
        monkeypatch.delenv(f"VUDSYNC_{name.upper()}", raising=False)
    monkeypatch.setenv("VUDSYNC_CONFIG", str(tmp_path / "absent.toml"))
    return Settings(home=tmp_path)


@pytest.mark.parametrize("name", SECRET_FIELDS)
def test_a_secret_has_no_default_and_its_absence_names_the_variable(bare: Settings, name: str) -> None:
    assert getattr(bare, name) is None
    with pytest.raises(ConfigurationError, match=f"VUDSYNC_{name.upper()} is not set") as caught:
        bare.require_secret(name)  # type: ignore[arg-type]
    assert caught.value.hint and f"VUDSYNC_{name.upper()}" in caught.value.hint


def test_an_empty_secret_is_not_a_secret(bare: Settings) -> None:
    with pytest.raises(ConfigurationError, match="VUDSYNC_FINGERPRINT_KEY"):
        bare.model_copy(update={"fingerprint_key": SecretStr("")}).require_secret("fingerprint_key")


def test_the_producer_and_the_sink_refuse_to_start_without_their_secret(bare: Settings) -> None:
    from producers.service import build_capture
    from sinks.service import build_sink

    with pytest.raises(ConfigurationError, match="VUDSYNC_FINGERPRINT_KEY"):
        build_capture(bare, "127.0.0.1:1")
    with pytest.raises(ConfigurationError, match="VUDSYNC_CLOUD_CLIENT_SECRET"):
        build_sink(bare, "127.0.0.1:1", CollectorRegistry())
    assert not (bare.home / "directory.db").exists(), "nothing is opened before the check"


def test_run_secrets_are_random_per_run_kept_when_set_and_passed_to_children(bare: Settings) -> None:
    one, two = with_run_secrets(bare), with_run_secrets(bare)
    for name in SECRET_FIELDS:
        assert one.require_secret(name) != two.require_secret(name)
        assert len(one.require_secret(name)) >= 24
    mine = bare.model_copy(update={"fingerprint_key": SecretStr("operator-chosen-key")})
    assert with_run_secrets(mine).require_secret("fingerprint_key") == "operator-chosen-key"
    env = component_env(one, "127.0.0.1:9092")
    for name in SECRET_FIELDS:
        assert env[f"VUDSYNC_{name.upper()}"] == one.require_secret(name)
    assert not any(k.startswith("VUDSYNC_CLOUD_CLIENT_SECRET") for k in component_env(bare, "b:1"))


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_the_cloud_may_use_its_demo_defaults_on_loopback(tmp_path: Path, host: str) -> None:
    check_listen_address(CloudSettings(db_path=tmp_path / "c.db"), host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "cloud.example.com"])
def test_the_cloud_refuses_other_addresses_with_a_default_secret(tmp_path: Path, host: str) -> None:
    defaults = CloudSettings(db_path=tmp_path / "c.db")
    with pytest.raises(ConfigurationError, match="CLOUD_API_ADMIN_TOKEN"):
        check_listen_address(defaults, host)
    own_client = defaults.model_copy(update={"client_secret": SecretStr("x" * 32)})
    with pytest.raises(ConfigurationError, match="CLOUD_API_ADMIN_TOKEN") as caught:
        check_listen_address(own_client, host)
    assert "CLOUD_API_CLIENT_SECRET" not in str(caught.value)
    own = own_client.model_copy(update={"admin_token": SecretStr("y" * 32)})
    check_listen_address(own, host)


def test_python_m_cloud_exits_before_serving_on_0_0_0_0_with_the_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    with pytest.raises(SystemExit, match=r"refusing to listen on 0\.0\.0\.0") as caught:
        cloud_main(["--host", "0.0.0.0", "--port", "0", "--db", str(tmp_path / "cloud.db")])
    assert "vudsync-admin" not in str(caught.value.code)
    assert not (tmp_path / "cloud.db").exists()
