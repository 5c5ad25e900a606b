"""``/v1`` companies, users and access: thin routes over :mod:`cloud.directory`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import JSONResponse

from cloud import models
from cloud.api_services import EntryName, Kind, Service
from cloud.deps import Context, IfMatch, Reader, WriteDep
from cloud.directory import access, companies, users
from cloud.directory.writes import Body
from cloud.normalise import etag
from cloud.responses import CONFLICT, ETAG_HEADER, NOT_FOUND, PRECONDITION, V1, merge

router = APIRouter(prefix="/v1", responses=V1)

CompanyId = Annotated[str, Path(min_length=1, max_length=64)]
UserId = Annotated[str, Path(min_length=1, max_length=64)]
Limit = Annotated[int, Query(ge=1, le=10_000, description="at most this many items")]
After = Annotated[int, Query(ge=0, le=2**62, description="the next_after of the previous page")]
_ETAG = {"headers": ETAG_HEADER}


def _with_etag(body: Body) -> JSONResponse:
    return JSONResponse(body, headers={"ETag": etag(body["version"])})


# -- companies ---------------------------------------------------------------------


@router.post(
    "/companies",
    status_code=201,
    response_model=models.Company,
    responses=merge({201: _ETAG}, CONFLICT),
    tags=["companies"],
    summary="Create a company (409 if its organisation number exists)",
)
def create_company(body: models.CompanyCreate, write: WriteDep) -> Response:
    return write.run(lambda conn, now: companies.create_company(conn, now, body))


@router.get(
    "/companies",
    response_model=models.CompanyList,
    tags=["companies"],
    summary="Find companies by organisation number (normalised) or external id",
)
def list_companies(
    context: Context,
    _: Reader,
    organisation_number: Annotated[str | None, Query(max_length=64)] = None,
    external_id: Annotated[str | None, Query(max_length=255)] = None,
    limit: Limit = 1000,
    after: After = 0,
) -> JSONResponse:
    page = companies.find_companies(context.store.reader(), organisation_number, external_id, limit, after)
    return JSONResponse(page)


@router.get(
    "/companies/{company_id}",
    response_model=models.Company,
    responses=merge({200: _ETAG}, NOT_FOUND),
    tags=["companies"],
)
def get_company(company_id: CompanyId, context: Context, _: Reader) -> JSONResponse:
    row = companies.get_company_row(context.store.reader(), company_id)
    return _with_etag(companies.company_body(row))


@router.patch(
    "/companies/{company_id}",
    response_model=models.Company,
    responses=merge({200: _ETAG}, NOT_FOUND, CONFLICT, PRECONDITION),
    tags=["companies"],
    summary="Change some fields (If-Match: version → 412 when it moved on)",
)
def patch_company(
    company_id: CompanyId, body: models.CompanyPatch, write: WriteDep, if_match: IfMatch = None
) -> Response:
    return write.run(lambda conn, now: companies.patch_company(conn, now, company_id, body, if_match))


@router.post(
    "/companies/{company_id}/link",
    response_model=models.Company,
    responses=merge({200: _ETAG}, NOT_FOUND, CONFLICT),
    tags=["companies"],
    summary="Link an existing cloud company to an on-premise company (external id)",
)
def link_company(company_id: CompanyId, body: models.Link, write: WriteDep) -> Response:
    return write.run(lambda conn, now: companies.link_company(conn, now, company_id, body.external_id))


# -- users -------------------------------------------------------------------------


@router.post(
    "/users",
    status_code=201,
    response_model=models.User,
    responses=merge({201: _ETAG}, CONFLICT),
    tags=["users"],
    summary="Create a user (409 if the e-mail exists, case-insensitively)",
)
def create_user(body: models.UserCreate, write: WriteDep) -> Response:
    return write.run(lambda conn, now: users.create_user(conn, now, body))


@router.get(
    "/users",
    response_model=models.UserList,
    tags=["users"],
    summary="Find users by e-mail (case-insensitive) or external id",
)
def list_users(
    context: Context,
    _: Reader,
    email: Annotated[str | None, Query(max_length=254)] = None,
    external_id: Annotated[str | None, Query(max_length=255)] = None,
    limit: Limit = 1000,
    after: After = 0,
) -> JSONResponse:
    return JSONResponse(users.find_users(context.store.reader(), email, external_id, limit, after))


@router.get(
    "/users/{user_id}",
    response_model=models.User,
    responses=merge({200: _ETAG}, NOT_FOUND),
    tags=["users"],
)
def get_user(user_id: UserId, context: Context, _: Reader) -> JSONResponse:
    return _with_etag(users.user_body(users.get_user_row(context.store.reader(), user_id)))


@router.patch(
    "/users/{user_id}",
    response_model=models.User,
    responses=merge({200: _ETAG}, NOT_FOUND, CONFLICT, PRECONDITION),
    tags=["users"],
    summary="Change some fields (If-Match: version → 412 when it moved on)",
)
def patch_user(
    user_id: UserId, body: models.UserPatch, write: WriteDep, if_match: IfMatch = None
) -> Response:
    return write.run(lambda conn, now: users.patch_user(conn, now, user_id, body, if_match))


@router.post(
    "/users/{user_id}/deactivate",
    response_model=models.User,
    responses=merge({200: _ETAG}, NOT_FOUND),
    tags=["users"],
    summary="Deactivate (users are never deleted); an inactive user → 200, no effect",
)
def deactivate_user(user_id: UserId, write: WriteDep) -> Response:
    return write.run(lambda conn, now: users.set_user_active(conn, now, user_id, False))


@router.post(
    "/users/{user_id}/reactivate",
    response_model=models.User,
    responses=merge({200: _ETAG}, NOT_FOUND),
    tags=["users"],
    summary="Reactivate; an active user → 200, no effect",
)
def reactivate_user(user_id: UserId, write: WriteDep) -> Response:
    return write.run(lambda conn, now: users.set_user_active(conn, now, user_id, True))


@router.post(
    "/users/{user_id}/link",
    response_model=models.User,
    responses=merge({200: _ETAG}, NOT_FOUND, CONFLICT),
    tags=["users"],
    summary="Link an existing cloud user to an on-premise user (external id)",
)
def link_user(user_id: UserId, body: models.Link, write: WriteDep) -> Response:
    return write.run(lambda conn, now: users.link_user(conn, now, user_id, body.external_id))


# -- access ------------------------------------------------------------------------

Scope = Annotated[
    str,
    Query(
        pattern="^(all|directory)$",
        description="all: the body is the whole set; directory: the body is the directory's whole "
        "set, and entries of origin cloud are kept",
    ),
]


@router.get(
    "/users/{user_id}/access",
    response_model=models.AccessList,
    responses=NOT_FOUND,
    tags=["access"],
    summary="The user's assignments, one item per company",
)
def list_access(user_id: UserId, context: Context, _: Reader) -> JSONResponse:
    return JSONResponse({"items": access.list_access(context.store.reader(), user_id)})


@router.get(
    "/users/{user_id}/access/{company_id}",
    response_model=models.Access,
    responses=merge({200: _ETAG}, NOT_FOUND),
    tags=["access"],
)
def get_access(user_id: UserId, company_id: CompanyId, context: Context, _: Reader) -> JSONResponse:
    return _with_etag(access.get_access(context.store.reader(), user_id, company_id))


@router.put(
    "/users/{user_id}/access/{company_id}",
    response_model=models.Access,
    responses=merge({200: _ETAG}, NOT_FOUND),
    tags=["access"],
    summary="Replace the user's assignments in the company (422: name not in the catalogue)",
)
def put_access(
    user_id: UserId, company_id: CompanyId, body: models.AccessBody, write: WriteDep, scope: Scope = "all"
) -> Response:
    origin = write.origin
    return write.run(lambda conn, now: access.put_access(conn, now, user_id, company_id, body, origin, scope))


@router.delete(
    "/users/{user_id}/access/{company_id}",
    status_code=204,
    response_class=Response,
    responses=NOT_FOUND,
    tags=["access"],
    summary="Revoke all of the user's access to the company",
)
def delete_access(user_id: UserId, company_id: CompanyId, write: WriteDep, scope: Scope = "all") -> Response:
    return write.run(lambda conn, now: access.delete_access(conn, now, user_id, company_id, scope))


_ENTRY = "/users/{user_id}/access/{company_id}/{service}/{kind}/{name}"


@router.put(
    _ENTRY,
    response_model=models.Access,
    responses=merge({200: _ETAG}, NOT_FOUND),
    tags=["access"],
    summary="Grant one role, layout group or module; every other entry stays as it is",
    description="The entry's origin is `directory` when the integration's client writes it, "
    "`cloud` for any other client (e.g. an administrator in the portal).",
)
def grant_entry(
    user_id: UserId,
    company_id: CompanyId,
    service: Service,
    kind: Kind,
    name: EntryName,
    write: WriteDep,
) -> Response:
    origin = write.origin
    entry = (service, kind, name)
    return write.run(lambda conn, now: access.grant_entry(conn, now, user_id, company_id, entry, origin))


@router.delete(
    _ENTRY,
    response_model=models.Access,
    responses=merge({200: _ETAG}, NOT_FOUND, PRECONDITION),
    tags=["access"],
    summary="Revoke one role, layout group or module; every other entry stays as it is "
    "(If-Match: the entry's etag → 412 when it changed since it was read)",
)
def revoke_entry(
    user_id: UserId,
    company_id: CompanyId,
    service: Service,
    kind: Kind,
    name: EntryName,
    write: WriteDep,
    if_match: IfMatch = None,
) -> Response:
    entry = (service, kind, name)
    return write.run(lambda conn, now: access.revoke_entry(conn, now, user_id, company_id, entry, if_match))
