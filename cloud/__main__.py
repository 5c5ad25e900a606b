"""``python -m cloud``: run the reference cloud directory API.

Secrets come from the environment (``CLOUD_API_CLIENT_SECRET``, ``CLOUD_API_ADMIN_TOKEN``)
so they never show in a process list; ``--client-secret``/``--admin-token`` exist for
local experiments only.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from pydantic import SecretStr

from cloud.faults import FaultConfig, parse_latency
from cloud.server import ADMIN_TOKEN_ENV, SECRET_ENV, serve
from cloud.settings import DEFAULT_ADMIN_TOKEN, DEFAULT_CLIENT_SECRET, CloudSettings, check_listen_address
from kernel.errors import ConfigurationError


def latency_argument(text: str) -> tuple[int, int]:
    try:
        return parse_latency(text)
    except ValueError:
        raise argparse.ArgumentTypeError("latency is MIN,MAX in milliseconds") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cloud", description="Run the reference cloud directory API."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8700, help="0 = any free port")
    parser.add_argument("--port-file", type=Path, help="write the bound port here")
    parser.add_argument("--db", type=Path, default=Path("cloud.db"), help="SQLite file")
    parser.add_argument("--customer-name", default="Demo customer")
    parser.add_argument("--client-id", default="vudsync")
    parser.add_argument("--client-secret", help=f"default: ${SECRET_ENV}")
    parser.add_argument("--admin-token", help=f"default: ${ADMIN_TOKEN_ENV}")
    parser.add_argument("--token-ttl", type=float, default=3600.0, help="seconds")
    parser.add_argument("--rate-limit-per-second", type=float, default=0.0)
    parser.add_argument("--rate-limit-burst", type=float)
    parser.add_argument(
        "--max-body-bytes", type=int, default=4 * 1024 * 1024, help="larger request bodies: 413"
    )
    parser.add_argument(
        "--token-rate-per-address", type=float, default=5.0, help="POST /oauth/token per second; 0 = off"
    )
    parser.add_argument("--token-burst-per-address", type=float, default=20.0)
    parser.add_argument("--docs", action="store_true", help="serve the Swagger UI at /docs")
    parser.add_argument(
        "--changes-retention",
        type=float,
        default=7 * 24 * 3600.0,
        help="seconds a change-feed cursor stays valid unused (then 410: read in full again)",
    )
    parser.add_argument("--faults-json", help="a whole fault configuration as JSON")
    parser.add_argument("--error-rate", type=float)
    parser.add_argument("--rate-limit-rate", type=float)
    parser.add_argument("--retry-after-seconds", type=float)
    parser.add_argument("--latency-ms", type=latency_argument, help="MIN,MAX")
    parser.add_argument("--latency-after-effect", action="store_true", default=None)
    parser.add_argument("--drop-rate", type=float)
    parser.add_argument("--drop-after-effect", action="store_true", default=None)
    parser.add_argument("--timeout-rate", type=float)
    parser.add_argument("--timeout-seconds", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--synchronous", choices=["NORMAL", "FULL"], default="NORMAL")
    parser.add_argument("--secret-hash-iterations", type=int, default=100_000)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--access-log", action="store_true")
    parser.add_argument(
        "--no-direct",
        dest="direct_dispatch",
        action="store_false",
        help="send every request and batch item through the whole FastAPI stack (slower; a reference)",
    )
    parser.add_argument(
        "--loop", choices=["auto", "asyncio", "uvloop"], default="auto", help="uvicorn's event loop"
    )
    parser.add_argument(
        "--http", choices=["auto", "h11", "httptools"], default="auto", help="uvicorn's HTTP parser"
    )
    return parser


FAULT_FLAGS = tuple(FaultConfig.model_fields)  # each has its --flag above


def settings_from(args: argparse.Namespace) -> CloudSettings:
    base = FaultConfig.model_validate_json(args.faults_json) if args.faults_json else FaultConfig()
    overrides = {k: getattr(args, k) for k in FAULT_FLAGS if getattr(args, k) is not None}
    faults = FaultConfig.model_validate({**base.model_dump(), **overrides})
    return CloudSettings(
        db_path=args.db,
        customer_name=args.customer_name,
        client_id=args.client_id,
        client_secret=SecretStr(args.client_secret or os.environ.get(SECRET_ENV, DEFAULT_CLIENT_SECRET)),
        admin_token=SecretStr(args.admin_token or os.environ.get(ADMIN_TOKEN_ENV, DEFAULT_ADMIN_TOKEN)),
        token_ttl_seconds=args.token_ttl,
        rate_limit_per_second=args.rate_limit_per_second,
        rate_limit_burst=args.rate_limit_burst,
        max_body_bytes=args.max_body_bytes,
        token_rate_per_address=args.token_rate_per_address,
        token_burst_per_address=args.token_burst_per_address,
        docs=args.docs,
        changes_retention_seconds=args.changes_retention,
        faults=faults,
        sqlite_synchronous=args.synchronous,
        secret_hash_iterations=args.secret_hash_iterations,
        direct_dispatch=args.direct_dispatch,
    )


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = settings_from(args)
    try:
        check_listen_address(settings, args.host)  # before the database is opened
    except ConfigurationError as exc:
        raise SystemExit(f"error: {exc}" + (f" ({exc.hint})" if exc.hint else "")) from None
    serve(
        settings,
        args.host,
        args.port,
        port_file=args.port_file,
        log_level=args.log_level,
        access_log=args.access_log,
        loop=args.loop,
        http=args.http,
    )


if __name__ == "__main__":
    main()
