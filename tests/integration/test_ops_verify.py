"""``vudsync verify`` on a real SQLite directory store and the real cloud API over HTTP; the
repair goes through a real planner and sink worker on the real broker."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from devtools.secrets import random_secret
from devtools.seed.writer import open_writer
from kernel.settings import SECRET_FIELDS, Settings
from producers.service import open_change_log
from tests.factories import store_users
from tests.fixtures.cloud import CloudReader
from tests.pipeline import alive_or_fail, components, run_cli
from vudsync.cli import _register, cli
from vudsync.topics import ensure_catalogue

USERS = store_users(1, 2, 3)


run = run_cli


def test_verify_reports_drift_by_type_and_repair_removes_it(
    pipeline_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    s = pipeline_settings
    writer = open_writer(s.resolved_store_url())
    writer.upsert_catalogue("roles", [("business", "Regnskap", "Regnskap og lønn")])
    writer.upsert_companies([{"id": "c1", "name": "Fjord AS", "organisation_number": "923 609 016"}])
    writer.upsert_users(USERS)
    writer.grant([("u1", "c1", "business", "role", "Regnskap")])
    # the cloud as the pipeline leaves it
    api = httpx.Client(base_url=cloud.server.url, headers=cloud.server.auth_headers(), timeout=10)
    api.put(
        "/v1/services/business/roles/Regnskap", json={"description": "Regnskap og lønn"}
    ).raise_for_status()
    c1 = api.post(
        "/v1/companies",
        json={"external_id": "c1", "name": "Fjord AS", "organisation_number": "923609016", "country": "NO"},
    ).json()["id"]
    ids = {
        u["id"]: api.post(
            "/v1/users",
            json={
                "external_id": u["id"],
                "email": u["email"],
                "username": u["username"],
                "first_name": u["first_name"],
                "last_name": u["last_name"],
                "language": "nb",
            },
        ).json()["id"]
        for u in USERS
    }
    grant = {"services": {"business": {"roles": ["Regnskap"], "layout_groups": [], "modules": []}}}
    api.put(f"/v1/users/{ids['u1']}/access/{c1}", json=grant).raise_for_status()

    clean = run(s, kafka_bootstrap, "verify", "--json")
    assert clean.exit_code == 0, clean.output
    report = json.loads(clean.stdout)["report"]
    assert report["clean"] and report["checked"]["user"] == {"directory": 3, "cloud": 3}
    assert report["checked"]["access"] == {"directory": 1, "cloud": 1}

    # drift: changed behind our back, an access removed in the cloud, a stray user, a new one
    api.patch(f"/v1/users/{ids['u2']}", json={"first_name": "Kåre"}).raise_for_status()
    api.delete(f"/v1/users/{ids['u1']}/access/{c1}").raise_for_status()
    api.post("/v1/users", json={"external_id": "ghost", "email": "ghost@fjord.no"}).raise_for_status()
    writer.upsert_user(id="u4", username="ny", email="ny@fjord.no", first_name="Ny", last_name="Bruker")

    drifted = run(s, kafka_bootstrap, "verify", "--json")
    assert drifted.exit_code == 1
    report = json.loads(drifted.stdout)["report"]
    assert report["by_type"]["user"] == {"missing": 1, "extra": 1, "different": 1}
    assert report["by_type"]["access"] == {"missing": 1, "extra": 0, "different": 0}
    different = next(d for d in report["drifts"] if d["kind"] == "different")
    assert different["fields"] == [{"field": "first_name", "directory": "Åse", "cloud": "Kåre"}]
    text = run(s, kafka_bootstrap, "verify")
    assert "missing   user:u4" in text.stdout and "4 drift(s)." in text.stdout

    # repair through the planner (its gates) and the normal apply path: the sink, its ledger,
    # the cloud's idempotency keys
    ensure_catalogue(s, kafka_bootstrap)
    assert run(s, kafka_bootstrap, "connect").exit_code == 0
    with components(s, kafka_bootstrap, "planner", "sink") as procs:
        repaired = run(s, kafka_bootstrap, "verify", "--repair", "--yes", "--json", "--timeout", "3m")
        alive_or_fail(procs)
    assert repaired.exit_code == 0, repaired.output
    result = json.loads(repaired.stdout)
    assert result["repair"]["plan"]["by_kind"] == {
        "access.assign": 1,
        "user.deactivate": 1,
        "user.upsert": 2,
    }
    assert len(result["repair"]["operation_ids"]) == 4
    assert set(result["repair"]["outcomes"].values()) == {"applied"}
    assert result["after_repair"]["clean"]
    assert cloud.user("ghost")["active"] is False and cloud.user("u2")["first_name"] == "Åse"
    assert cloud.applied_twice(creations=False) == []
    api.close()
    writer.close()


def _secrets_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Everything configured but the store: the refusal below is the store's."""
    for name in SECRET_FIELDS:
        monkeypatch.setenv(f"VUDSYNC_{name.upper()}", random_secret())


def test_verify_from_a_wrong_working_directory_is_refused_and_creates_no_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mistake: ``vudsync verify --repair`` run from the wrong folder. The default store is
    ``./var/directory.db``; opening it used to create it, empty — and the repair then
    deactivated every cloud user. Refused before the cloud or Kafka is asked anything."""
    monkeypatch.chdir(tmp_path)
    for name in ("VUDSYNC_HOME", "VUDSYNC_STORE_URL"):
        monkeypatch.delenv(name, raising=False)
    _secrets_in_environment(monkeypatch)
    _register()
    for args in (["verify"], ["verify", "--repair"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, result.output
        assert "no directory store at" in result.stderr and "VUDSYNC_STORE_URL" in result.stderr
    assert list(tmp_path.iterdir()) == [], "verify created files"


def test_verify_refuses_a_store_that_holds_no_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store that exists but is empty (a fresh migration, the wrong database) is refused too,
    and the store is opened read-only: its bytes are unchanged after verify."""
    store = tmp_path / "directory.db"
    writer = open_writer(f"sqlite:///{store}")
    writer.upsert_companies([{"id": "c1", "name": "Fjord AS", "organisation_number": "923 609 016"}])
    writer.close()
    before = store.read_bytes()
    monkeypatch.setenv("VUDSYNC_STORE_URL", f"sqlite:///{store}")
    monkeypatch.setenv("VUDSYNC_HOME", str(tmp_path / "home"))
    _secrets_in_environment(monkeypatch)
    _register()
    result = CliRunner().invoke(cli, ["verify", "--repair"])
    assert result.exit_code == 2, result.output
    assert "holds no users" in result.stderr
    assert store.read_bytes() == before
    assert not (tmp_path / "home").exists()


def test_verify_on_postgresql_refuses_a_database_that_is_no_store_or_holds_no_users_and_writes_nothing(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The same mistakes on PostgreSQL: the wrong database (no change log) and an empty store are
    refused, and verify's session is read-only — it cannot even save a checkpoint."""
    import psycopg

    monkeypatch.setenv("VUDSYNC_STORE_URL", postgres_url)
    monkeypatch.setenv("VUDSYNC_HOME", str(tmp_path / "home"))
    _secrets_in_environment(monkeypatch)
    _register()
    wrong = CliRunner().invoke(cli, ["verify", "--repair"])
    assert wrong.exit_code == 2 and "is not a directory store" in wrong.stderr, wrong.output
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT to_regclass('change_log')").fetchone() == (None,), "verify migrated it"

    writer = open_writer(postgres_url)  # a store now (migrated), with a company and no user
    writer.upsert_companies([{"id": "c1", "name": "Fjord AS", "organisation_number": "923 609 016"}])
    writer.close()
    empty = CliRunner().invoke(cli, ["verify", "--repair"])
    assert empty.exit_code == 2 and "holds no users" in empty.stderr, empty.output

    log = open_change_log(postgres_url, read_only=True)
    try:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            log.save_checkpoint("verify", "stream", 1)
    finally:
        log.close()
