"""The directory objects of Visma User Directory, as event-carried state.

Each model is the *full current state* of one entity, as the producer read it from the
directory store. License keys never appear here: an application instance carries a keyed
fingerprint of its key (see :func:`schemas.fingerprint.license_fingerprint`).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, Field

from schemas.base import Message


class ApplicationType(StrEnum):
    """The on-premise applications VUD administers; one instance of each at most."""

    BUSINESS = "business"
    DOCUMENT_CENTER = "document_center"
    REPORTING = "reporting"


class EntityType(StrEnum):
    COMPANY = "company"
    USER = "user"
    ROLE = "role"
    LAYOUT_GROUP = "layout_group"
    MODULE = "module"
    APPLICATION_INSTANCE = "application_instance"


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _check_email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError("malformed e-mail address")
    return value


def normalise_organisation_number(value: str) -> str:
    """Digits only: ``"923 609 016"`` and ``"923609016"`` are the same company."""
    return "".join(ch for ch in value if ch.isdigit())


Email = Annotated[str, AfterValidator(_check_email)]
EntityId = Annotated[str, Field(min_length=1, max_length=200)]


class CompanyState(Message):
    id: EntityId
    name: str = Field(min_length=1)
    organisation_number: str = Field(min_length=1, description="as typed on premise")
    country: str = Field(default="NO", min_length=2, max_length=2)
    status: str = Field(default="active", pattern=r"^(active|inactive)$")

    @property
    def normalised_organisation_number(self) -> str:
        return normalise_organisation_number(self.organisation_number)


class ServiceAccess(Message):
    """What a user holds in one application within one company. Lists are sorted."""

    roles: tuple[str, ...] = ()
    layout_groups: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        return not (self.roles or self.layout_groups or self.modules)


class CompanyAccess(Message):
    """A user's access to one company: per application, its roles, layout groups, modules.

    ``services`` is the directory's own access (origin ``directory``): what the planner sends
    to the cloud as the directory's set. ``cloud_origin`` holds, apart, the entries the store
    holds because an administrator granted them in the cloud (origin ``cloud``, written by the
    directory sink, issue 16): the cloud keeps them by itself, so they are never sent as the
    directory's — which is what keeps a writeback from echoing back to the cloud."""

    company_id: EntityId
    services: dict[ApplicationType, ServiceAccess] = Field(default_factory=dict)
    cloud_origin: dict[ApplicationType, ServiceAccess] = Field(
        default_factory=dict, description="entries of origin cloud (written back from the cloud)"
    )


class UserState(Message):
    id: EntityId
    username: str = Field(min_length=1)
    email: Email
    first_name: str = ""
    last_name: str = ""
    language: str = "nb"
    active: bool = True
    access: tuple[CompanyAccess, ...] = Field(
        default=(), description="the user's complete access list, sorted by company id"
    )


class RoleState(Message):
    id: EntityId = Field(description="<application>:<name>")
    application: ApplicationType
    name: str = Field(min_length=1)
    description: str = ""


class LayoutGroupState(Message):
    id: EntityId = Field(description="<application>:<name>")
    application: ApplicationType
    name: str = Field(min_length=1)
    description: str = ""


class ModuleState(Message):
    id: EntityId = Field(description="<application>:<code>")
    application: ApplicationType
    code: str = Field(min_length=1)
    name: str = ""


class ApplicationInstanceState(Message):
    id: EntityId = Field(description="the application type: one instance per type")
    application: ApplicationType
    uri: str = Field(min_length=1)
    license_fingerprint: str = Field(
        pattern=r"^hmac-sha256:[0-9a-f]{64}$", description="keyed fingerprint, never the key"
    )
