"""``vudsync cloud …``: run the reference cloud directory API and steer it while it runs.

``serve`` runs the server in this process (until Ctrl-C / SIGTERM); ``faults``,
``rate-limit`` and ``stats`` talk to a running server's ``/admin`` endpoints with the
admin token. Defaults come from ``Settings``: ``cloud_url`` (host and port),
``cloud_client_id``, ``cloud_client_secret``, ``cloud_admin_token`` and ``home``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import httpx
from pydantic import SecretStr, ValidationError

from kernel.errors import ConfigurationError, RetryableError, VudsyncError
from kernel.settings import Settings, load_settings


def _latency(_: click.Context, __: click.Parameter, value: str | None) -> tuple[int, int] | None:
    from cloud.faults import parse_latency

    if value is None:
        return None
    try:
        return parse_latency(value)
    except ValueError:
        raise click.BadParameter("MIN,MAX in milliseconds, e.g. 10,50") from None


def _fault_options(func: Any) -> Any:
    """The fault-injection options shared by ``serve`` and ``faults``."""
    options = [
        click.option("--error-rate", type=click.FloatRange(0, 1), help="share of /v1 requests answered 5xx"),
        click.option(
            "--rate-limit-rate", type=click.FloatRange(0, 1), help="share answered 429 with Retry-After"
        ),
        click.option("--retry-after-seconds", type=click.FloatRange(0), help="Retry-After of injected 429s"),
        click.option(
            "--latency-ms",
            callback=_latency,
            metavar="MIN,MAX",
            help="added latency per request, uniform in [MIN, MAX] ms",
        ),
        click.option(
            "--latency-after-effect/--latency-before-effect",
            default=None,
            help="add the latency after the request was handled (a slow answer to a write already made)",
        ),
        click.option(
            "--drop-rate", type=click.FloatRange(0, 1), help="share whose connection is closed unanswered"
        ),
        click.option(
            "--drop-after-effect/--drop-before-effect",
            default=None,
            help="drop after the write was applied (a lost response) or before it",
        ),
        click.option(
            "--timeout-rate", type=click.FloatRange(0, 1), help="share held --timeout-seconds, then answered"
        ),
        click.option("--timeout-seconds", type=click.FloatRange(0), help="set above the client's timeout"),
        click.option("--seed", type=int, help="seed of the fault RNG (reproducible runs)"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _given_faults(values: dict[str, Any]) -> dict[str, Any]:
    from cloud.faults import FaultConfig  # each field has its option in _fault_options

    return {k: values[k] for k in FaultConfig.model_fields if values.get(k) is not None}


def _host_port(settings: Settings) -> tuple[str, int]:
    parts = urlsplit(settings.cloud_url)
    return parts.hostname or "127.0.0.1", parts.port or 8700


@click.group()
def cloud() -> None:
    """The reference cloud directory API: the cloud of the demo, the tests and the benchmarks.

    A real HTTP service with its own SQLite database (OAuth2 client credentials,
    idempotency keys, versions, audit of effects, rate limiting and fault injection).
    The API is described at <url>/openapi.json (and <url>/docs with --docs).
    """


@cloud.command()
@click.option("--host", help="interface to listen on [default: host of VUDSYNC_CLOUD_URL]")
@click.option("--port", type=int, help="0 = any free port [default: port of VUDSYNC_CLOUD_URL]")
@click.option("--port-file", type=click.Path(path_type=Path), help="write the bound port to this file")
@click.option("--db", type=click.Path(path_type=Path), help="SQLite file [default: <home>/cloud.db]")
@click.option("--customer-name", default="Demo customer", show_default=True)
@click.option("--client-id", help="the configured client (a customer administrator) [default: settings]")
@click.option(
    "--client-secret",
    envvar="VUDSYNC_CLOUD_CLIENT_SECRET",
    show_envvar=True,
    help="its secret; prefer the environment variable over the command line",
)
@click.option("--admin-token", envvar="VUDSYNC_CLOUD_ADMIN_TOKEN", show_envvar=True, help="X-Admin-Token")
@click.option("--token-ttl", type=click.FloatRange(min=0, min_open=True), default=3600.0, show_default=True)
@click.option(
    "--rate-limit-per-second",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="token bucket per client on /v1; 0 = off",
)
@click.option("--rate-limit-burst", type=click.FloatRange(min=0, min_open=True), help="default max(1, rate)")
@_fault_options
@click.option(
    "--synchronous",
    type=click.Choice(["NORMAL", "FULL"]),
    default="NORMAL",
    show_default=True,
    help="SQLite synchronous mode (FULL: fsync every commit)",
)
@click.option("--access-log", is_flag=True, help="log every request (query strings carry e-mails)")
@click.option("--docs", is_flag=True, help="serve the Swagger UI at /docs (off: less to attack)")
def serve(**values: Any) -> None:
    """Run the cloud API in the foreground until Ctrl-C or SIGTERM (graceful)."""
    from cloud.faults import FaultConfig
    from cloud.server import serve as run_server
    from cloud.settings import CloudSettings

    settings = load_settings()
    default_host, default_port = _host_port(settings)
    try:
        cloud_settings = CloudSettings(
            db_path=values["db"] or settings.home / "cloud.db",
            customer_name=values["customer_name"],
            client_id=values["client_id"] or settings.cloud_client_id,
            client_secret=SecretStr(
                values["client_secret"] or settings.require_secret("cloud_client_secret")
            ),
            admin_token=SecretStr(values["admin_token"] or settings.require_secret("cloud_admin_token")),
            token_ttl_seconds=values["token_ttl"],
            rate_limit_per_second=values["rate_limit_per_second"],
            rate_limit_burst=values["rate_limit_burst"],
            faults=FaultConfig(**_given_faults(values)),
            sqlite_synchronous=values["synchronous"],
            docs=values["docs"],
        )
    except ValidationError as exc:
        raise ConfigurationError(f"invalid cloud settings: {exc.errors()[0]['msg']}") from exc
    host = values["host"] or default_host
    port = values["port"] if values["port"] is not None else default_port
    where = f"http://{host}:{port}" if port else f"{host}, any free port (uvicorn logs it)"
    click.echo(f"cloud API on {where} (database {cloud_settings.db_path})", err=True)
    run_server(cloud_settings, host, port, port_file=values["port_file"], access_log=values["access_log"])


def _admin(url: str | None, admin_token: str | None) -> tuple[str, dict[str, str]]:
    settings = load_settings()
    token = admin_token or settings.require_secret("cloud_admin_token")
    return (url or settings.cloud_url).rstrip("/"), {"X-Admin-Token": token}


def _call(method: str, url: str, headers: dict[str, str], body: Any = None) -> Any:
    try:
        response = httpx.request(method, url, headers=headers, json=body, timeout=10.0)
    except httpx.HTTPError as exc:
        raise RetryableError(
            f"cannot reach the cloud API at {url}: {type(exc).__name__}",
            hint="start it with `vudsync cloud serve` or check VUDSYNC_CLOUD_URL",
        ) from exc
    if response.status_code == 401:
        raise ConfigurationError(
            "the cloud API refused the admin token", hint="set VUDSYNC_CLOUD_ADMIN_TOKEN or --admin-token"
        )
    if response.status_code >= 400:
        try:
            detail = response.json().get("error_description") or response.text
        except ValueError:
            detail = response.text
        raise VudsyncError(f"{method} {url}: {response.status_code} {detail}")
    return response.json()


_url_option = click.option("--url", help="the cloud API [default: VUDSYNC_CLOUD_URL]")
_token_option = click.option(
    "--admin-token", envvar="VUDSYNC_CLOUD_ADMIN_TOKEN", help="[default: VUDSYNC_CLOUD_ADMIN_TOKEN]"
)


@cloud.command()
@_url_option
@_token_option
@_fault_options
@click.option("--keep", is_flag=True, help="keep the current values of options not given")
@click.option("--clear", is_flag=True, help="turn every fault off")
def faults(url: str | None, admin_token: str | None, keep: bool, clear: bool, **values: Any) -> None:
    """Show or set the faults a running cloud API injects into /v1 requests.

    Without options: print the current configuration. With options: replace it (options
    not given are off, unless --keep). Injected 5xx and 429 answers never have an effect;
    --drop-after-effect drops the connection after the write was applied.

    Example: vudsync cloud faults --error-rate 0.2 --latency-ms 5,50 --seed 7
    """
    base, headers = _admin(url, admin_token)
    given = _given_faults(values)
    if clear:
        config: Any = _call("PUT", f"{base}/admin/faults", headers, {})
    elif given:
        current = _call("GET", f"{base}/admin/faults", headers) if keep else {}
        config = _call("PUT", f"{base}/admin/faults", headers, {**current, **given})
    else:
        config = _call("GET", f"{base}/admin/faults", headers)
    click.echo(json.dumps(config, sort_keys=True))


@cloud.command("rate-limit")
@_url_option
@_token_option
@click.option("--per-second", type=click.FloatRange(0), help="requests per second per client; 0 = off")
@click.option("--burst", type=click.FloatRange(min=0, min_open=True), help="default max(1, rate)")
def rate_limit(
    url: str | None, admin_token: str | None, per_second: float | None, burst: float | None
) -> None:
    """Show or set the real per-client rate limit (a token bucket) of a running cloud API."""
    base, headers = _admin(url, admin_token)
    if per_second is None:
        config = _call("GET", f"{base}/admin/rate-limit", headers)
    else:
        body = {"rate_limit_per_second": per_second, "burst": burst}
        config = _call("PUT", f"{base}/admin/rate-limit", headers, body)
    click.echo(json.dumps(config, sort_keys=True))


@cloud.command()
@_url_option
@_token_option
def stats(url: str | None, admin_token: str | None) -> None:
    """Print request counts (by route and status), token requests and injected faults."""
    base, headers = _admin(url, admin_token)
    click.echo(json.dumps(_call("GET", f"{base}/admin/stats", headers), indent=2, sort_keys=True))
