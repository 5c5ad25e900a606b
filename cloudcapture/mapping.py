"""The cloud's access → :class:`CloudAccessChanged`. Pure: no I/O, the ids and the clock given.

An access body of the cloud (``GET /v1/users/{id}/access/{company}``, or a feed item's
``state``) lists its ``entries``: ``{service, kind, name, origin, modified_at}``. The cloud's
words become the directory's: service → :class:`ApplicationType`, ``roles`` → ``role``,
``layout_groups`` → ``layout_group``, ``modules`` → ``module``. An entry of a service that is
no on-premise application cannot reach the directory: it is left out and reported (the caller
counts it), never guessed.

The event is keyed by on-premise ids, the cloud's ``external_id`` of the user and of the
company. Without both there is nothing the directory could hold: :func:`access_event` answers
:class:`Unlinked` naming the side that is not linked, and the caller counts and logs it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from schemas.cloud_changes import AccessKind, CloudAccessChanged, CloudAccessEntry, CloudAccessRead
from schemas.directory import ApplicationType

#: the cloud's kind words → the directory's (schemas.cloud_changes.AccessKind)
KINDS: Mapping[str, AccessKind] = {"roles": "role", "layout_groups": "layout_group", "modules": "module"}
_APPLICATIONS = {a.value: a for a in ApplicationType}

UnlinkedResource = Literal["user", "company"]


@dataclass(frozen=True)
class Unlinked:
    """The access item's user or company has no on-premise id (no ``external_id``)."""

    resource: UnlinkedResource
    cloud_id: str


@dataclass(frozen=True)
class Mapped:
    """The event, and the entries left out because the directory has no such application or
    kind (``service/kind/name`` as the cloud wrote them)."""

    event: CloudAccessChanged
    skipped: tuple[str, ...] = ()


def split_access_id(resource_id: str) -> tuple[str, str]:
    """A feed item's access id ``<cloud user id>/<cloud company id>``."""
    user, sep, company = resource_id.partition("/")
    if not sep or not user or not company:
        raise ValueError(f"not an access id: {resource_id!r}")
    return user, company


def entries_of(state: Mapping[str, Any] | None) -> tuple[tuple[CloudAccessEntry, ...], tuple[str, ...]]:
    """The entries of an access body the directory can hold, sorted (application, kind, name),
    and those it cannot (``service/kind/name``)."""
    if state is None:
        return (), ()
    kept: list[CloudAccessEntry] = []
    skipped: list[str] = []
    for entry in state.get("entries") or ():
        application = _APPLICATIONS.get(str(entry["service"]))
        kind = KINDS.get(str(entry["kind"]))
        if application is None or kind is None:
            skipped.append(f"{entry['service']}/{entry['kind']}/{entry['name']}")
            continue
        kept.append(
            CloudAccessEntry(
                application=application,
                kind=kind,
                name=str(entry["name"]),
                origin="directory" if entry.get("origin") == "directory" else "cloud",
                modified_at=parse_time(entry["modified_at"]),
            )
        )
    kept.sort(key=lambda e: (e.application.value, e.kind, e.name))
    return tuple(kept), tuple(skipped)


def parse_time(value: str | datetime) -> datetime:
    """The cloud's RFC 3339 timestamps (``…Z``) as aware datetimes."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def access_event(
    *,
    cloud_user_id: str,
    cloud_company_id: str,
    user_id: str | None,
    company_id: str | None,
    state: Mapping[str, Any] | None,
    feed_seq: int,
    changed_at: str | datetime,
    full_read: bool = False,
) -> Mapped | Unlinked:
    """One access of the cloud as an event: ``state`` None (the feed's ``change: deleted``) is
    ``deleted=True`` with no entries. ``user_id``/``company_id`` are the on-premise ids (the
    cloud's ``external_id``), None when not linked."""
    if not user_id:
        return Unlinked("user", cloud_user_id)
    if not company_id:
        return Unlinked("company", cloud_company_id)
    entries, skipped = entries_of(state)
    event = CloudAccessChanged(
        event_id=CloudAccessChanged.make_event_id(feed_seq, user_id, company_id),
        feed_seq=feed_seq,
        user_id=user_id,
        company_id=company_id,
        cloud_user_id=cloud_user_id,
        cloud_company_id=cloud_company_id,
        deleted=state is None,
        entries=entries,
        changed_at=parse_time(changed_at),
        full_read=full_read,
    )
    return Mapped(event, skipped)


def feed_access_event(
    item: Mapping[str, Any], external_ids: Mapping[tuple[str, str], str | None]
) -> Mapped | Unlinked:
    """A feed item of ``resource_type: access`` as an event; ``external_ids`` maps
    ``("user"|"company", cloud id)`` to the on-premise id (None: not linked)."""
    cloud_user, cloud_company = split_access_id(str(item["resource_id"]))
    state = None if item.get("change") == "deleted" else item.get("state")
    return access_event(
        cloud_user_id=cloud_user,
        cloud_company_id=cloud_company,
        user_id=external_ids.get(("user", cloud_user)),
        company_id=external_ids.get(("company", cloud_company)),
        state=state,
        feed_seq=int(item["seq"]),
        changed_at=item["at"],
    )


def full_read_events(
    access: Sequence[Mapping[str, Any]],
    external_ids: Mapping[tuple[str, str], str | None],
    position: int,
    *,
    full_read: bool = True,
) -> list[Mapped | Unlinked]:
    """Access bodies read whole (a full read; or a user's access read again when it was
    linked) as events at feed position ``position`` (the cursor taken before a full read, the
    user item's seq for a link), each stamped with the body's ``updated_at``."""
    out: list[Mapped | Unlinked] = []
    for body in access:
        cloud_user, cloud_company = str(body["user_id"]), str(body["company_id"])
        out.append(
            access_event(
                cloud_user_id=cloud_user,
                cloud_company_id=cloud_company,
                user_id=external_ids.get(("user", cloud_user)),
                company_id=external_ids.get(("company", cloud_company)),
                state=body,
                feed_seq=position,
                changed_at=body["updated_at"],
                full_read=full_read,
            )
        )
    return out


def access_read_event(
    cloud_user_id: str, user_id: str, access: Sequence[Mapping[str, Any]], position: int, read_at: datetime
) -> CloudAccessRead:
    """The end-of-read marker of a linked user whose whole access a full read read: the cloud
    companies of its access bodies (linked or not), at the read's position and time."""
    return CloudAccessRead(
        event_id=CloudAccessRead.make_event_id(position, user_id),
        feed_seq=position,
        user_id=user_id,
        cloud_user_id=cloud_user_id,
        cloud_companies=tuple(sorted({str(body["company_id"]) for body in access})),
        read_at=read_at,
    )
