"""Drift between the directory store and the cloud, and the operations that repair it. Pure.

:func:`compare` takes the full state of both sides and reports, per object type, what is
**missing** in the cloud, what is **extra** there, and what is **different** (field by field).
What the cloud should hold follows the planner's rules (docs/domain.md): users and companies
matched by external id; a user or company removed on premise stays in the cloud, inactive;
a user's access per company is exactly its non-empty services; catalogue entries by
(service, kind, name); application instances by service, compared by URI and license
fingerprint (the values of fingerprints are never shown).

What ``--repair`` asks of the planner for a report is :mod:`vudsync.ops.repair_plan`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from schemas.directory import (
    ApplicationInstanceState,
    ApplicationType,
    CompanyState,
    ServiceAccess,
    UserState,
)

CatalogueKey = tuple[str, str, str]  # (service, kind, name)
CatalogueKind = Literal["roles", "layout_groups", "modules"]
ServicesView = dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]]

OBJECT_TYPES = ("company", "user", "access", "catalogue", "application_instance")


@dataclass(frozen=True)
class DirectoryState:
    """Everything the directory store holds now, as the producer reads it."""

    version: int  # change-log position when read
    users: Mapping[str, UserState]
    companies: Mapping[str, CompanyState]
    catalogue: Mapping[CatalogueKey, str]  # description
    instances: Mapping[ApplicationType, ApplicationInstanceState]
    # rows capture rejects (invalid e-mail …; they are in the dead-letter topic), by type
    rejected_users: frozenset[str] = frozenset()
    rejected_companies: frozenset[str] = frozenset()
    rejected_other: int = 0  # catalogue entries and instances

    @property
    def rejected(self) -> int:
        return len(self.rejected_users) + len(self.rejected_companies) + self.rejected_other


@dataclass(frozen=True)
class CloudState:
    """Everything the cloud holds now, as its API returns it."""

    users: Sequence[Mapping[str, Any]]
    companies: Sequence[Mapping[str, Any]]
    access: Mapping[str, Sequence[Mapping[str, Any]]]  # cloud user id -> access items
    catalogue: Mapping[CatalogueKey, str | None]
    instances: Mapping[str, Mapping[str, Any]]  # service -> instance


class DriftKind(StrEnum):
    MISSING = "missing"  # in the directory, not in the cloud
    EXTRA = "extra"  # in the cloud, not (or no longer) in the directory
    DIFFERENT = "different"


@dataclass(frozen=True)
class FieldDiff:
    field: str
    directory: Any
    cloud: Any


@dataclass(frozen=True)
class Drift:
    object_type: str
    key: str
    kind: DriftKind
    fields: tuple[FieldDiff, ...] = ()
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "object_type": self.object_type,
            "key": self.key,
            "kind": self.kind.value,
            "fields": [{"field": f.field, "directory": f.directory, "cloud": f.cloud} for f in self.fields],
            "note": self.note,
        }

    def digest(self) -> str:
        """Stable over runs that see the same drift: seeds the repair's operation id."""
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True, default=str).encode()).hexdigest()[
            :16
        ]


@dataclass(frozen=True)
class DriftReport:
    drifts: tuple[Drift, ...]
    checked: Mapping[str, tuple[int, int]]  # object type -> (directory count, cloud count)
    rejected: int = 0  # directory rows capture rejects
    # of those, the ones the cloud holds: reported, never "extra", never repaired
    rejected_in_cloud: tuple[str, ...] = ()  # "user:<id>", "company:<id>"
    # access an administrator assigned in the cloud (origin cloud): kept, never drift, never
    # repaired; "<user>/<company>: <service>/<kind>/<name>"
    cloud_origin: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        return not self.drifts

    def counts(self) -> dict[str, dict[str, int]]:
        out = {t: {k.value: 0 for k in DriftKind} for t in OBJECT_TYPES}
        for d in self.drifts:
            out[d.object_type][d.kind.value] += 1
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "drift": len(self.drifts),
            "by_type": self.counts(),
            "checked": {t: {"directory": a, "cloud": b} for t, (a, b) in self.checked.items()},
            "drifts": [d.as_dict() for d in self.drifts],
            "rejected_rows": self.rejected,
            "rejected_in_cloud": list(self.rejected_in_cloud),
            "cloud_origin_entries": list(self.cloud_origin),
        }


def _s(value: Any) -> Any:
    return "" if value is None else value


def _diff(pairs: Sequence[tuple[str, Any, Any]]) -> tuple[FieldDiff, ...]:
    return tuple(FieldDiff(name, ours, theirs) for name, ours, theirs in pairs if _s(ours) != _s(theirs))


def services_from_state(services: Mapping[ApplicationType, ServiceAccess]) -> ServicesView:
    return {
        app.value: (tuple(sorted(s.roles)), tuple(sorted(s.layout_groups)), tuple(sorted(s.modules)))
        for app, s in services.items()
        if not s.is_empty()
    }


def _services_from_cloud(services: Mapping[str, Mapping[str, Any]]) -> ServicesView:
    out: ServicesView = {}
    for app, s in services.items():
        view = tuple(tuple(sorted(s.get(k) or ())) for k in ("roles", "layout_groups", "modules"))
        if any(view):
            out[app] = view  # type: ignore[assignment]
    return out


def directory_part(item: Mapping[str, Any]) -> tuple[ServicesView, list[str]]:
    """A cloud access item without the entries whose origin is the cloud (an administrator's:
    not the directory's to compare or repair), and those entries as "service/kind/name". A
    cloud that keeps no origins: every entry is the directory's."""
    services: Mapping[str, Mapping[str, Any]] = item.get("services") or {}
    from_cloud = {
        (e["service"], e["kind"], e["name"]) for e in item.get("entries") or () if e.get("origin") == "cloud"
    }
    if not from_cloud:
        return _services_from_cloud(services), []
    ours = {
        app: {
            k: [n for n in s.get(k) or () if (app, k, n) not in from_cloud]
            for k in ("roles", "layout_groups", "modules")
        }
        for app, s in services.items()
    }
    return _services_from_cloud(ours), sorted("/".join(key) for key in from_cloud)


def _user_fields(state: UserState, cloud: Mapping[str, Any]) -> tuple[FieldDiff, ...]:
    return _diff(
        [
            ("username", state.username, cloud.get("username")),
            ("email", state.email, cloud.get("email")),
            ("first_name", state.first_name, cloud.get("first_name")),
            ("last_name", state.last_name, cloud.get("last_name")),
            ("language", state.language, cloud.get("language")),
            ("active", state.active, bool(cloud.get("active", True))),
        ]
    )


def _company_fields(state: CompanyState, cloud: Mapping[str, Any]) -> tuple[FieldDiff, ...]:
    return _diff(
        [
            ("name", state.name, cloud.get("name")),
            ("organisation_number", state.normalised_organisation_number, cloud.get("organisation_number")),
            ("country", state.country, cloud.get("country")),
            ("status", state.status, cloud.get("status")),
        ]
    )


def compare(directory: DirectoryState, cloud: CloudState) -> DriftReport:
    """Full comparison of both sides (see the module docstring for the rules)."""
    drifts: list[Drift] = []
    cloud_companies = {c["external_id"]: c for c in cloud.companies if c.get("external_id")}
    cloud_users = {u["external_id"]: u for u in cloud.users if u.get("external_id")}
    company_ext = {c["id"]: c.get("external_id") for c in cloud.companies}

    # companies
    for cid, state in sorted(directory.companies.items()):
        found = cloud_companies.get(cid)
        if found is None:
            drifts.append(Drift("company", cid, DriftKind.MISSING))
        elif diffs := _company_fields(state, found):
            drifts.append(Drift("company", cid, DriftKind.DIFFERENT, diffs))
    rejected_in_cloud: list[str] = []
    for cid, found in sorted(cloud_companies.items()):
        if cid in directory.rejected_companies:  # on premise, but capture cannot read it
            rejected_in_cloud.append(f"company:{cid}")
        elif cid not in directory.companies and found.get("status") == "active":
            drifts.append(
                Drift("company", cid, DriftKind.EXTRA, note="removed on premise: expected inactive")
            )

    # users
    for uid, user in sorted(directory.users.items()):
        found = cloud_users.get(uid)
        if found is None:
            drifts.append(Drift("user", uid, DriftKind.MISSING))
        elif diffs := _user_fields(user, found):
            drifts.append(Drift("user", uid, DriftKind.DIFFERENT, diffs))
    for uid, found in sorted(cloud_users.items()):
        if uid in directory.rejected_users:
            rejected_in_cloud.append(f"user:{uid}")
        elif uid not in directory.users and found.get("active", True):
            drifts.append(
                Drift("user", uid, DriftKind.EXTRA, note="removed on premise: expected deactivated")
            )

    # access: per (user, company); entries assigned in the cloud apart
    access_checked = 0
    cloud_origin: list[str] = []
    for uid in sorted((set(directory.users) | set(cloud_users)) - directory.rejected_users):
        user_state = directory.users.get(uid)
        expected = (
            {a.company_id: services_from_state(a.services) for a in user_state.access} if user_state else {}
        )
        expected = {k: v for k, v in expected.items() if v}
        access_checked += len(expected)
        found_user = cloud_users.get(uid)
        actual: dict[str, ServicesView] = {}
        if found_user is not None:
            for item in cloud.access.get(found_user["id"], ()):
                ext = company_ext.get(item.get("company_id")) or f"cloud:{item.get('company_id')}"
                view, from_cloud = directory_part(item)
                cloud_origin += [f"{uid}/{ext}: {entry}" for entry in from_cloud]
                if view:
                    actual[ext] = view
        for company in sorted(set(expected) | set(actual)):
            if company in directory.rejected_companies:
                continue  # what the directory grants there is unknown: never "extra"
            key = f"{uid}/{company}"
            ours, theirs = expected.get(company), actual.get(company)
            if theirs is None:
                note = "the user is not in the cloud yet" if found_user is None else ""
                drifts.append(Drift("access", key, DriftKind.MISSING, note=note))
            elif ours is None:
                drifts.append(Drift("access", key, DriftKind.EXTRA))
            elif ours != theirs:
                apps = sorted(set(ours) | set(theirs))
                diffs = tuple(
                    FieldDiff(app, _pretty(ours.get(app)), _pretty(theirs.get(app)))
                    for app in apps
                    if ours.get(app) != theirs.get(app)
                )
                drifts.append(Drift("access", key, DriftKind.DIFFERENT, diffs))

    # catalogue
    for ckey in sorted(set(directory.catalogue) | set(cloud.catalogue)):
        label = "/".join(ckey)
        if ckey not in cloud.catalogue:
            drifts.append(Drift("catalogue", label, DriftKind.MISSING))
        elif ckey not in directory.catalogue:
            drifts.append(Drift("catalogue", label, DriftKind.EXTRA))
        elif diffs := _diff([("description", directory.catalogue[ckey], cloud.catalogue[ckey])]):
            drifts.append(Drift("catalogue", label, DriftKind.DIFFERENT, diffs))

    # application instances
    for app in sorted(set(a.value for a in directory.instances) | set(cloud.instances)):
        ours_i = (
            directory.instances.get(ApplicationType(app))
            if app in ApplicationType._value2member_map_
            else None
        )
        theirs_i = cloud.instances.get(app)
        if theirs_i is None:
            drifts.append(Drift("application_instance", app, DriftKind.MISSING))
        elif ours_i is None:
            drifts.append(Drift("application_instance", app, DriftKind.EXTRA))
        else:
            diffs = _diff([("uri", ours_i.uri, theirs_i.get("uri"))])
            if ours_i.license_fingerprint != theirs_i.get("license_fingerprint"):
                diffs += (FieldDiff("license key", "(fingerprint differs)", "(fingerprint differs)"),)
            if diffs:
                drifts.append(Drift("application_instance", app, DriftKind.DIFFERENT, diffs))

    checked = {
        "company": (len(directory.companies), len(cloud_companies)),
        "user": (len(directory.users), len(cloud_users)),
        "access": (access_checked, sum(len(v) for v in cloud.access.values())),
        "catalogue": (len(directory.catalogue), len(cloud.catalogue)),
        "application_instance": (len(directory.instances), len(cloud.instances)),
    }
    return DriftReport(
        tuple(drifts), checked, directory.rejected, tuple(rejected_in_cloud), tuple(cloud_origin)
    )


def _pretty(view: tuple[tuple[str, ...], ...] | None) -> str | None:
    if view is None:
        return None
    roles, groups, modules = view
    return f"roles={list(roles)} layout_groups={list(groups)} modules={list(modules)}"
