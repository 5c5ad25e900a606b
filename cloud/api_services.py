"""``/v1`` services, application instances, the caller, the audit trail and batches."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from cloud import models
from cloud.batch import render_answers, run_batch
from cloud.deps import Caller, Context, Reader, WriteDep
from cloud.directory import audit_trail, catalogue, changes, instances
from cloud.responses import ETAG_HEADER, NOT_FOUND, V1, error_doc, merge

router = APIRouter(prefix="/v1", responses=V1)

Service = Annotated[str, Path(max_length=64, description="business, document_center, reporting")]
Kind = Annotated[str, Path(max_length=64, description="roles, layout_groups or modules")]
EntryName = Annotated[str, Path(min_length=1, max_length=200)]
_ETAG = {"headers": ETAG_HEADER}


@router.get("/me", response_model=models.Me, tags=["customer"], summary="Who am I")
def me(context: Context, caller: Caller) -> JSONResponse:
    return JSONResponse(
        {
            "customer_id": context.customer_id,
            "customer_name": context.settings.customer_name,
            "client_id": caller.client_id,
            "is_customer_admin": caller.is_customer_admin,
            "scopes": sorted(caller.scopes),
        }
    )


# -- services and their catalogues -------------------------------------------------


@router.get(
    "/services",
    response_model=models.ServiceList,
    tags=["services"],
    summary="The fixed services, each with its roles, layout groups and modules",
)
def list_services(context: Context, _: Reader) -> JSONResponse:
    return JSONResponse({"items": catalogue.list_services(context.store.reader())})


@router.get(
    "/services/{service}",
    response_model=models.ServiceCatalogue,
    responses=NOT_FOUND,
    tags=["services"],
)
def get_service(service: Service, context: Context, _: Reader) -> JSONResponse:
    catalogue.known_service(service)
    items = catalogue.list_services(context.store.reader())
    return JSONResponse(next(s for s in items if s["service"] == service))


@router.get(
    "/services/{service}/{kind}/{name}",
    response_model=models.CatalogueEntry,
    responses=merge({200: _ETAG}, NOT_FOUND),
    tags=["services"],
)
def get_entry(service: Service, kind: Kind, name: EntryName, context: Context, _: Reader) -> JSONResponse:
    body = catalogue.get_entry(context.store.reader(), service, kind, name)
    return JSONResponse(body, headers={"ETag": f'"{body["version"]}"'})


@router.put(
    "/services/{service}/{kind}/{name}",
    response_model=models.CatalogueEntry,
    responses=merge(
        {200: _ETAG, 201: {"model": models.CatalogueEntry, "description": "created", **_ETAG}},
        NOT_FOUND,
    ),
    tags=["services"],
    summary="Create (201) or update (200) a role, layout group or module",
)
def put_entry(
    service: Service,
    kind: Kind,
    name: EntryName,
    body: models.CatalogueEntryBody,
    write: WriteDep,
) -> Response:
    return write.run(lambda conn, now: catalogue.put_entry(conn, now, service, kind, name, body.description))


@router.delete(
    "/services/{service}/{kind}/{name}",
    status_code=204,
    response_class=Response,
    responses=NOT_FOUND,
    tags=["services"],
    summary="Remove a catalogue entry (and take it out of every assignment)",
)
def delete_entry(service: Service, kind: Kind, name: EntryName, write: WriteDep) -> Response:
    return write.run(lambda conn, now: catalogue.delete_entry(conn, now, service, kind, name))


# -- application instances ---------------------------------------------------------


@router.put(
    "/application-instances/{service}",
    response_model=models.ApplicationInstance,
    responses=merge(
        {
            200: _ETAG,
            201: {"model": models.ApplicationInstance, "description": "created", **_ETAG},
        },
        NOT_FOUND,
    ),
    tags=["application instances"],
    summary="Register the one instance of a service: URI and license fingerprint",
    description="A body with a clear `license_key` is refused with 422 "
    "`license_key_rejected`; the cloud only ever stores a fingerprint.",
)
def put_instance(service: Service, body: models.ApplicationInstanceBody, write: WriteDep) -> Response:
    return write.run(lambda conn, now: instances.put_instance(conn, now, service, body))


@router.get(
    "/application-instances",
    response_model=models.ApplicationInstanceList,
    tags=["application instances"],
)
def list_instances(context: Context, _: Reader) -> JSONResponse:
    return JSONResponse({"items": instances.list_instances(context.store.reader())})


# -- audit -------------------------------------------------------------------------


@router.get(
    "/audit",
    response_model=models.AuditPage,
    tags=["audit"],
    summary="Effects of writes, in order (at most one per idempotency key)",
)
def audit(
    context: Context,
    _: Reader,
    idempotency_key: Annotated[str | None, Query(max_length=255)] = None,
    resource_id: Annotated[str | None, Query(max_length=255)] = None,
    after_seq: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONResponse:
    page = audit_trail.audit_page(context.store.reader(), idempotency_key, resource_id, after_seq, limit)
    return JSONResponse(page)


# -- the change feed ---------------------------------------------------------------


@router.get(
    "/changes",
    response_model=models.ChangesPage,
    responses={
        400: error_doc("not a cursor of this feed"),
        410: error_doc("the cursor expired: read the directory in full, then follow from a new cursor"),
    },
    tags=["changes"],
    summary="Users, companies and access changed since a cursor (no cursor: the cursor of now)",
    description=changes.__doc__,
)
def list_changes(
    context: Context,
    _: Reader,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> JSONResponse:
    page = changes.changes_page(
        context.store.reader(),
        cursor,
        limit,
        now=context.clock(),
        retention_seconds=context.settings.changes_retention_seconds,
        integration_client=context.settings.client_id,
    )
    return JSONResponse(page)


# -- batch -------------------------------------------------------------------------


@router.post(
    "/batch",
    response_model=models.BatchResponse,
    tags=["batch"],
    summary="Up to 500 requests, each applied as if sent alone, in order",
    description="Each item carries its own `idempotency_key` and `if_match`; an "
    "Idempotency-Key header on the batch itself is ignored. Faults and the rate limit "
    "apply to the batch request, not to its items. Item headers have lower-case names.",
)
async def batch(body: models.BatchBody, request: Request, _: Caller) -> Response:
    responses = await run_batch(request.app, request.scope, request.app.state.direct, body.requests)
    return render_answers(responses)
