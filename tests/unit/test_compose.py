"""The compose stack, checked without a Docker engine: it names the same images, ports,
commands and environment the code reads.

``docker compose config`` (the real validation of the file) runs when the compose plugin
answers; without it that one test is skipped with the reason, and the structure is checked here
against the subset of the Compose specification this file uses.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml

from cloud.__main__ import build_parser as cloud_parser
from cloud.server import ADMIN_TOKEN_ENV, SECRET_ENV
from kernel.settings import Settings
from vudsync.cli import _register, cli

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
PROMETHEUS_YML = COMPOSE_DIR / "prometheus" / "prometheus.yml"
GRAFANA_PROVISIONING = REPO / "dashboards" / "provisioning"

#: the keys of the Compose specification this stack may use (a subset of compose-spec.json)
_TOP_LEVEL = {"name", "services", "volumes", "networks", "configs", "secrets", "include"}
_SERVICE_KEYS = {
    "image", "build", "command", "entrypoint", "environment", "env_file", "ports", "expose",
    "volumes", "depends_on", "healthcheck", "restart", "profiles", "deploy", "labels", "user",
    "working_dir", "stop_grace_period", "stop_signal", "networks", "init", "tmpfs", "ulimits",
}  # fmt: skip
_DEPENDS_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
_RESTART = {"no", "always", "on-failure", "unless-stopped"}
_HEALTHCHECK_KEYS = {"test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"}


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _services() -> dict[str, dict[str, Any]]:
    return _compose()["services"]


def _run_components() -> dict[str, click.Command]:
    """``vudsync run <component>``: every long-running component the CLI has."""
    _register()
    run = cli.commands["run"]
    assert isinstance(run, click.Group)
    return dict(run.commands)


def _vudsync_command(args: list[str]) -> tuple[str, ...]:
    """Parse a ``vudsync …`` command line with the real CLI; returns the command path."""
    assert args[0] == "vudsync", args
    _register()
    command: click.Command = cli
    path: list[str] = []
    rest = list(args[1:])
    while isinstance(command, click.Group):
        name = rest.pop(0)
        found = command.commands.get(name)
        assert found is not None, f"`vudsync {' '.join([*path, name])}` does not exist"
        path.append(name)
        command = found
    command.make_context(" ".join(path), rest)  # raises on an option the command does not have
    return tuple(path)


def _option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


# -- structure ----------------------------------------------------------------------------


def test_the_file_is_yaml_with_the_compose_structure_it_needs() -> None:
    compose = _compose()
    assert set(compose) <= _TOP_LEVEL | {k for k in compose if k.startswith("x-")}
    declared_volumes = set(compose.get("volumes") or {})
    services = compose["services"]
    for name, service in services.items():
        unknown = set(service) - _SERVICE_KEYS
        assert not unknown, f"{name}: keys outside the Compose spec subset: {unknown}"
        assert "image" in service or "build" in service, name
        assert service.get("restart", "no") in _RESTART, name
        env = service.get("environment") or {}
        assert isinstance(env, dict) and all(isinstance(v, str | int | float | bool) for v in env.values()), (
            name
        )
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert spec["condition"] in _DEPENDS_CONDITIONS, name
        for port in service.get("ports", []):
            assert re.fullmatch(r"(127\.0\.0\.1:)?\d+:\d+", str(port)), f"{name}: port {port!r}"
        for volume in service.get("volumes", []):
            source, _, target = str(volume).partition(":")
            assert target.startswith("/"), f"{name}: {volume}"
            if source.startswith("."):
                assert (COMPOSE_DIR / source).resolve().exists(), f"{name}: {source} does not exist"
            else:
                assert source in declared_volumes, f"{name}: volume {source} is not declared"
        if "healthcheck" in service:
            assert set(service["healthcheck"]) <= _HEALTHCHECK_KEYS, name
        if "build" in service:
            build = service["build"]
            assert (COMPOSE_DIR / build["context"] / build["dockerfile"]).is_file(), name


def test_the_stack_has_every_service_the_issue_asks_for() -> None:
    services = _services()
    assert {"kafka", "postgres", "producer", "planner", "sink", "cloud", "prometheus", "grafana"} <= set(
        services
    )
    assert services["cloud"]["profiles"] == ["cloud"]  # the reference cloud API as a profile
    for scalable in ("planner", "sink"):  # several workers: no fixed name, no host port
        assert "container_name" not in services[scalable] and "ports" not in services[scalable]
    assert services["sink"]["deploy"]["replicas"] >= 1


# -- the environment the code reads ---------------------------------------------------------


def test_every_vudsync_variable_is_a_settings_field() -> None:
    fields = {f"VUDSYNC_{name.upper()}" for name in Settings.model_fields}
    text = COMPOSE_FILE.read_text()
    named = set(re.findall(r"\$\{(VUDSYNC_\w+)", text))  # interpolations
    for service in _services().values():
        named |= {k for k in (service.get("environment") or {}) if k.startswith("VUDSYNC_")}
    assert named, "the stack configures vudsync through VUDSYNC_* variables"
    assert named <= fields, f"not fields of kernel.settings.Settings: {sorted(named - fields)}"


def test_the_environment_points_at_the_services_of_the_stack() -> None:
    services = _services()
    env = services["producer"]["environment"]
    kafka = services["kafka"]["environment"]
    assert f"PLAINTEXT://{env['VUDSYNC_KAFKA_BOOTSTRAP']}" in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"] and "broker" in kafka["KAFKA_PROCESS_ROLES"]  # KRaft

    store = urlsplit(re.sub(r"\$\{\w+:\?[^}]*\}", "secret", env["VUDSYNC_STORE_URL"]))  # as interpolated
    postgres = services["postgres"]["environment"]
    assert store.scheme == "postgresql" and store.hostname == "postgres"
    assert (store.username, store.path.lstrip("/")) == (postgres["POSTGRES_USER"], postgres["POSTGRES_DB"])

    cloud_url = urlsplit(re.sub(r"\$\{\w+:-(.*)\}", r"\1", env["VUDSYNC_CLOUD_URL"]))
    cloud = cloud_parser().parse_args(services["cloud"]["command"][3:])  # after `python -m cloud`
    assert services["cloud"]["command"][:3] == ["python", "-m", "cloud"]
    assert (cloud_url.hostname, cloud_url.port) == ("cloud", cloud.port) and cloud.host == "0.0.0.0"
    assert f"127.0.0.1:{cloud.port}:{cloud.port}" in services["cloud"]["ports"]
    # the cloud's secrets come from its environment, never from its command line
    assert {SECRET_ENV, ADMIN_TOKEN_ENV} <= set(services["cloud"]["environment"])
    assert cloud.client_secret is None and cloud.admin_token is None


#: what must be reached from outside the host; every other published port is loopback only
PUBLIC_PORTS = {"grafana": {"3000:3000"}}
#: every secret the stack takes, by the variable compose reads it from
SECRET_VARIABLES = {
    "POSTGRES_PASSWORD",
    "VUDSYNC_CLOUD_CLIENT_SECRET",
    "VUDSYNC_CLOUD_ADMIN_TOKEN",
    "VUDSYNC_FINGERPRINT_KEY",
    "GRAFANA_ADMIN_PASSWORD",
}


def test_no_secret_has_a_default_and_compose_requires_each() -> None:
    text = COMPOSE_FILE.read_text()
    interpolated = set(re.findall(r"\$\{(\w+)", text))
    assert interpolated >= SECRET_VARIABLES, "a secret the stack needs is not read"
    for name in SECRET_VARIABLES:
        for form in re.findall(rf"\$\{{{name}(:[?-]|[?-]|)", text):
            assert form == ":?", f"${{{name}}} must be required with ${{{name}:?…}}, not {form!r}"
    # the Settings fields that hold secrets: none has a default, each is required above
    for field in ("cloud_client_secret", "fingerprint_key"):
        assert Settings.model_fields[field].default is None
        assert f"VUDSYNC_{field.upper()}" in SECRET_VARIABLES


def test_only_what_must_be_reached_from_outside_is_published_beyond_loopback() -> None:
    for name, service in _services().items():
        for port in map(str, service.get("ports", [])):
            if port not in PUBLIC_PORTS.get(name, set()):
                assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every address"


def test_images_are_the_versions_the_code_uses() -> None:
    services = _services()
    assert services["kafka"]["image"] == f"apache/kafka:{Settings.model_fields['kafka_version'].default}"
    vudsync_images = {s["image"] for s in services.values() if "build" in s}
    assert vudsync_images == {"vudsync:local"}, "one image, built once, for every vudsync service"


# -- commands, ports and the scrape configuration --------------------------------------------


def test_every_component_runs_with_its_metrics_port_and_prometheus_scrapes_it() -> None:
    services = _services()
    jobs = {job["job_name"]: job for job in yaml.safe_load(PROMETHEUS_YML.read_text())["scrape_configs"]}
    components = _run_components()
    seen: set[str] = set()
    ports: set[str] = set()
    for name, service in services.items():
        command = service.get("command")
        if not command or command[0] != "vudsync":
            continue
        path = _vudsync_command(command)
        if path[0] != "run":
            continue
        component = path[1]
        seen.add(component)
        port = _option(command, "--metrics-port")
        ports.add(port)
        assert service["environment"]["VUDSYNC_METRICS_HOST"] == "0.0.0.0", name
        job = jobs[f"vudsync-{component}"]
        (sd,) = job["dns_sd_configs"]  # DNS: every replica of a scaled service is a target
        assert sd["names"] == [name] and str(sd["port"]) == port, f"{name}: scrape config {sd}"
    assert seen == set(components), f"components not in the stack: {sorted(set(components) - seen)}"
    assert len(ports) == len(seen), "one metrics port per component"


def test_every_component_is_health_checked_on_its_readiness_endpoint() -> None:
    """Docker's health of a component is its ``/readyz`` (kernel.http_status), on the port it
    serves ``--metrics-port`` on; urllib raises on a 503, so not ready is unhealthy."""
    for name, service in _services().items():
        command = service.get("command")
        if not command or command[0] != "vudsync" or _vudsync_command(command)[0] != "run":
            continue
        port = _option(command, "--metrics-port")
        test = service.get("healthcheck", {}).get("test")
        assert test, f"{name}: no health check"
        assert test[:3] == ["CMD", "python", "-c"], f"{name}: {test}"
        assert f"urlopen('http://127.0.0.1:{port}/readyz'" in test[3], f"{name}: {test}"
        assert "timeout=" in test[3], f"{name}: a probe without a time-out can hang"


def test_the_other_commands_exist() -> None:
    for service in _services().values():
        command = service.get("command")
        if command and command[0] == "vudsync":
            _vudsync_command(command)


def test_prometheus_gets_its_config_and_rules_and_grafana_its_provisioning() -> None:
    services = _services()
    prometheus = services["prometheus"]
    mounts = dict(str(v).split(":")[:2] for v in prometheus["volumes"])
    config_dir = mounts["./prometheus"]
    assert f"--config.file={config_dir}/prometheus.yml" in prometheus["command"]
    for rule_file in yaml.safe_load(PROMETHEUS_YML.read_text())["rule_files"]:
        assert (PROMETHEUS_YML.parent / rule_file).is_file(), rule_file
    listen = _option_value(prometheus["command"], "--web.listen-address")
    prometheus_port = listen.rsplit(":", 1)[1]

    grafana = services["grafana"]
    mounts = dict(str(v).split(":")[:2] for v in grafana["volumes"])
    assert mounts["../dashboards/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((GRAFANA_PROVISIONING / "dashboards" / "vudsync.yml").read_text())["providers"][
        0
    ]
    assert mounts["../dashboards"] == provider["options"]["path"]
    datasource = yaml.safe_load((GRAFANA_PROVISIONING / "datasources" / "vudsync.yml").read_text())
    url_variable = re.fullmatch(r"\$\{(\w+)\}", datasource["datasources"][0]["url"])
    assert url_variable is not None
    url = urlsplit(grafana["environment"][url_variable.group(1)])
    assert (url.hostname, str(url.port)) == ("prometheus", prometheus_port)
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (REPO / "dashboards" / Path(home).name).is_file()


def _option_value(command: list[str], name: str) -> str:
    return next(arg.split("=", 1)[1] for arg in command if arg.startswith(f"{name}="))


# -- the image --------------------------------------------------------------------------------


#: developer tools (local broker, seed data, demo, benchmarks): never in the production image
DEV_ONLY = {"devtools"}


def test_the_dockerfile_installs_every_runtime_package_and_no_dev_tool() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]
    assert set(packages) >= DEV_ONLY
    copied = set(re.findall(r"^COPY (\S+) ", dockerfile, re.M))
    for package in set(packages) - DEV_ONLY:
        assert package in copied, f"the Dockerfile does not copy {package}/"
    assert not copied & DEV_ONLY, "the production image leaves the developer tools out"
    assert "pyproject.toml" in dockerfile and re.search(r"pip install .*\.", dockerfile)
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert not ignored & {*packages, "pyproject.toml", "README.md"}, "the build context needs them"


# -- docker compose config --------------------------------------------------------------------


def _compose_plugin() -> str | None:
    """Why ``docker compose`` cannot run here, or None when it can."""
    if not shutil.which("docker"):
        return "no docker CLI"
    try:
        result = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker compose version failed: {exc}"
    if result.returncode != 0:
        return f"no compose plugin: {(result.stderr or result.stdout).strip().splitlines()[0]}"
    return None


def test_docker_compose_config_accepts_the_file() -> None:
    """``docker compose config`` validates against the full Compose specification (it needs the
    compose plugin, not a running engine)."""
    reason = _compose_plugin()
    if reason:
        pytest.skip(f"docker compose config not run: {reason}")
    for profile in ([], ["--profile", "cloud"]):
        result = subprocess.run(
            ["docker", "compose", "-f", str(COMPOSE_FILE), *profile, "config", "--quiet"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
