"""The API's request and response bodies (they are also its OpenAPI document).

Request bodies forbid unknown fields: a typo, or a ``license_key``, is a 422, never
silently dropped.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

SERVICES: tuple[str, ...] = ("business", "document_center", "reporting")
KINDS: tuple[str, ...] = ("roles", "layout_groups", "modules")
ServiceName = Literal["business", "document_center", "reporting"]
Scope = Literal["directory:read", "directory:write"]
_ALL_SCOPES: tuple[Scope, ...] = ("directory:read", "directory:write")

ExternalId = Annotated[str, Field(min_length=1, max_length=255)]
Name = Annotated[str, Field(min_length=1, max_length=255)]
OrgNumber = Annotated[
    str,
    Field(min_length=1, max_length=64, pattern="[0-9]", description="any form; digits are kept"),
]
Country = Annotated[str, Field(pattern="^[A-Za-z]{2}$", description="ISO 3166-1 alpha-2")]
Email = Annotated[str, Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")]
Language = Annotated[str, Field(min_length=1, max_length=35)]
CatalogueName = Annotated[str, Field(min_length=1, max_length=200)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- errors ------------------------------------------------------------------------


class ErrorBody(BaseModel):
    """Every error: a machine-readable ``error`` plus optional context."""

    error: str
    error_description: str | None = None
    existing_id: str | None = Field(default=None, description="409: the resource in the way")
    current_version: int | None = Field(default=None, description="412: the current version")
    retry_after_seconds: float | None = Field(default=None, description="429")
    detail: list[dict[str, Any]] | None = Field(default=None, description="422: what failed")


class OAuthError(BaseModel):
    error: Literal["invalid_request", "invalid_client", "unsupported_grant_type", "invalid_scope"]
    error_description: str


class Health(BaseModel):
    status: Literal["ok"]


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"]
    expires_in: int
    scope: str


class Me(BaseModel):
    customer_id: str
    customer_name: str
    client_id: str
    is_customer_admin: bool
    scopes: list[Scope]


# -- companies ---------------------------------------------------------------------


class CompanyCreate(_Request):
    external_id: ExternalId | None = None
    name: Name
    organisation_number: OrgNumber
    country: Country | None = None
    status: Literal["active", "inactive"] = "active"


class CompanyPatch(_Request):
    """Fields to change; absent = unchanged; null clears ``country``, other nulls = unchanged."""

    name: Name | None = None
    organisation_number: OrgNumber | None = None
    country: Country | None = None
    status: Literal["active", "inactive"] | None = None


class Link(_Request):
    external_id: ExternalId


class Company(BaseModel):
    id: str
    external_id: str | None
    name: str
    organisation_number: str
    country: str | None
    status: Literal["active", "inactive"]
    version: int
    created_at: datetime
    updated_at: datetime


class CompanyList(BaseModel):
    items: list[Company]
    next_after: int | None = Field(description="pass as after for the next page; null: the last page")


# -- users -------------------------------------------------------------------------


class UserCreate(_Request):
    external_id: ExternalId | None = None
    email: Email
    username: Name | None = None
    first_name: Name | None = None
    last_name: Name | None = None
    language: Language | None = None


class UserPatch(_Request):
    """Fields to change; absent = unchanged; null clears a field, except ``email`` (unchanged)."""

    email: Email | None = None
    username: Name | None = None
    first_name: Name | None = None
    last_name: Name | None = None
    language: Language | None = None


class User(BaseModel):
    id: str
    external_id: str | None
    email: str
    username: str | None
    first_name: str | None
    last_name: str | None
    language: str | None
    active: bool
    customer_admin: bool = Field(
        default=False, description="a customer administrator: never linked by matching its e-mail"
    )
    version: int
    created_at: datetime
    updated_at: datetime


class UserList(BaseModel):
    items: list[User]
    next_after: int | None = Field(description="pass as after for the next page; null: the last page")


# -- services ----------------------------------------------------------------------


class CatalogueEntryBody(_Request):
    description: str | None = Field(default=None, max_length=2000)


class CatalogueEntry(BaseModel):
    service: ServiceName
    kind: Literal["roles", "layout_groups", "modules"]
    name: str
    description: str | None
    version: int
    updated_at: datetime


class CatalogueItem(BaseModel):
    name: str
    description: str | None


class ServiceCatalogue(BaseModel):
    service: ServiceName
    roles: list[CatalogueItem]
    layout_groups: list[CatalogueItem]
    modules: list[CatalogueItem]


class ServiceList(BaseModel):
    items: list[ServiceCatalogue]


# -- application instances ---------------------------------------------------------


class ApplicationInstanceBody(_Request):
    """Never a clear license key: a body with ``license_key`` is refused (422)."""

    uri: str = Field(min_length=1, max_length=2048)
    license_fingerprint: str = Field(
        min_length=1, max_length=512, description="keyed fingerprint of the license key"
    )


class ApplicationInstance(BaseModel):
    service: ServiceName
    uri: str
    license_fingerprint: str
    version: int
    updated_at: datetime


class ApplicationInstanceList(BaseModel):
    items: list[ApplicationInstance]


# -- access ------------------------------------------------------------------------


NameList = Annotated[list[CatalogueName], Field(max_length=1000)]


class ServiceAssignment(_Request):
    roles: NameList = Field(default_factory=list)
    layout_groups: NameList = Field(default_factory=list)
    modules: NameList = Field(default_factory=list)


class AccessBody(_Request):
    services: dict[ServiceName, ServiceAssignment]


KindName = Literal["roles", "layout_groups", "modules"]


class AccessEntry(BaseModel):
    """One assignment, with who wrote it: ``directory`` (the integration's client) or
    ``cloud`` (anyone else, e.g. an administrator in the portal)."""

    service: ServiceName
    kind: KindName
    name: str
    origin: Literal["directory", "cloud"]
    modified_at: datetime
    etag: str = Field(
        description="the entry's tag: `If-Match` on its DELETE revokes it only as it was read (412 otherwise)"
    )


class Access(BaseModel):
    user_id: str
    company_id: str
    services: dict[ServiceName, ServiceAssignment]
    entries: list[AccessEntry]
    version: int
    updated_at: datetime


class AccessList(BaseModel):
    items: list[Access]


# -- audit -------------------------------------------------------------------------


class AuditEntry(BaseModel):
    seq: int
    at: datetime
    idempotency_key: str | None
    client_id: str
    method: str
    path: str
    resource_type: str
    resource_id: str
    effect: str


class Change(BaseModel):
    seq: int
    at: datetime
    resource_type: Literal["user", "company", "access"]
    resource_id: str = Field(description="the cloud id; access: <user id>/<company id>")
    change: Literal["upserted", "deleted"]
    origin: Literal["directory", "cloud"] = Field(description="who made the resource's last change")
    state: dict[str, Any] | None = Field(description="the resource as it is now; null when deleted")


class ChangesPage(BaseModel):
    items: list[Change]
    cursor: str = Field(description="pass as cursor to read on")
    more: bool = Field(description="true: read again at once; false: no more changes yet")


class CustomerAdmin(BaseModel):
    customer_admin: bool


class ChangesEpoch(BaseModel):
    epoch: int = Field(description="cursors of an older epoch are answered 410")


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_after_seq: int = Field(description="pass as after_seq to read on")


# -- batch -------------------------------------------------------------------------


class BatchItem(_Request):
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    path: str = Field(pattern="^/v1/", max_length=2048, description="under /v1, not /v1/batch")
    body: Any = None
    if_match: StrictStr | StrictInt | None = None


class BatchBody(_Request):
    requests: list[BatchItem] = Field(max_length=500)


class BatchResponseItem(BaseModel):
    status: int
    body: Any
    headers: dict[str, str] = Field(description="lower-case names")


class BatchResponse(BaseModel):
    responses: list[BatchResponseItem]


# -- admin -------------------------------------------------------------------------


class ClientCreate(_Request):
    client_id: str = Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")
    client_secret: str = Field(min_length=8, max_length=512, json_schema_extra={"writeOnly": True})
    is_customer_admin: bool = False
    scopes: list[Scope] = Field(default_factory=lambda: list(_ALL_SCOPES))


class ClientInfo(BaseModel):
    client_id: str
    is_customer_admin: bool
    scopes: list[Scope]


class RateLimitConfig(_Request):
    rate_limit_per_second: float = Field(ge=0, description="per client; 0 = off")
    burst: float | None = Field(default=None, gt=0, description="default max(1, rate)")


class Stats(BaseModel):
    total_requests: int
    requests: dict[str, dict[str, int]] = Field(description='"METHOD /template" → status → n')
    token_requests: int
    batch_items: dict[str, dict[str, int]]
    faults_injected: dict[str, int]
    rate_limited: int
    idempotent_replays: int


class ResetResult(BaseModel):
    status: Literal["reset"]
