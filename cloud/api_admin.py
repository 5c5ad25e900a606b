"""``/admin``: faults, rate limit, statistics, clients and reset (``X-Admin-Token``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from cloud import models
from cloud.deps import Context, check_admin
from cloud.directory import changes, users
from cloud.faults import FaultConfig
from cloud.responses import ADMIN, CONFLICT, merge

router = APIRouter(prefix="/admin", dependencies=[Depends(check_admin)], tags=["admin"])


@router.get("/faults", response_model=FaultConfig, responses=ADMIN)
def get_faults(context: Context) -> JSONResponse:
    return JSONResponse(context.faults.config.model_dump(mode="json"))


@router.put(
    "/faults",
    response_model=FaultConfig,
    responses=ADMIN,
    summary="Replace the fault configuration (omitted fields = off); the RNG restarts",
)
def put_faults(config: FaultConfig, context: Context) -> JSONResponse:
    context.faults.configure(config)
    return JSONResponse(config.model_dump(mode="json"))


@router.get("/rate-limit", response_model=models.RateLimitConfig, responses=ADMIN)
def get_rate_limit(context: Context) -> JSONResponse:
    limiter = context.limiter
    burst = limiter.burst if limiter.rate > 0 else None
    return JSONResponse({"rate_limit_per_second": limiter.rate, "burst": burst})


@router.put(
    "/rate-limit",
    response_model=models.RateLimitConfig,
    responses=ADMIN,
    summary="Set the per-client token bucket (0 = off); buckets restart full",
)
def put_rate_limit(config: models.RateLimitConfig, context: Context) -> JSONResponse:
    context.limiter.configure(config.rate_limit_per_second, config.burst)
    return JSONResponse(config.model_dump(mode="json"))


@router.get(
    "/stats",
    response_model=models.Stats,
    responses=ADMIN,
    summary="Request counts by route template and status, token requests, faults",
)
def get_stats(context: Context) -> JSONResponse:
    return JSONResponse(context.stats.snapshot())


@router.post(
    "/clients",
    status_code=201,
    response_model=models.ClientInfo,
    responses=merge(ADMIN, CONFLICT),
    summary="Add a client (customer administrator or not)",
)
async def add_client(body: models.ClientCreate, context: Context) -> JSONResponse:
    await run_in_threadpool(
        context.auth.add_client,
        body.client_id,
        body.client_secret,
        is_customer_admin=body.is_customer_admin,
        scopes=body.scopes,
    )
    info = {
        "client_id": body.client_id,
        "is_customer_admin": body.is_customer_admin,
        "scopes": sorted(set(body.scopes)),
    }
    return JSONResponse(info, status_code=201)


@router.post(
    "/reset",
    response_model=models.ResetResult,
    responses=ADMIN,
    summary="Wipe directory data, audit, idempotency keys and statistics (clients stay)",
)
def reset(context: Context) -> JSONResponse:
    context.store.reset()
    context.stats.reset()
    return JSONResponse({"status": "reset"})


@router.post(
    "/changes/expire",
    response_model=models.ChangesEpoch,
    responses=ADMIN,
    summary="Expire every change-feed cursor issued so far (their next read answers 410)",
)
def expire_changes(context: Context) -> JSONResponse:
    with context.store.transaction() as conn:
        return JSONResponse({"epoch": changes.expire(conn)})


@router.put(
    "/users/{user_id}/customer-admin",
    response_model=models.User,
    responses=ADMIN,
    summary="Make a cloud user a customer administrator, or not (the portal's role)",
)
def put_customer_admin(user_id: str, body: models.CustomerAdmin, context: Context) -> JSONResponse:
    with context.store.transaction() as conn:
        done = users.set_customer_admin(conn, context.clock(), user_id, body.customer_admin)
    return JSONResponse(done.body, status_code=done.status)
