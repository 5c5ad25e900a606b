"""Cloud changes: what an administrator changed in the cloud, on its way back to the directory.

The writeback path (issue 16) is the mirror of the directory path: ``vudsync run
cloud-capture`` follows the cloud's change feed (``GET /v1/changes``) and publishes one
:class:`CloudAccessChanged` per access item of the feed on ``vud.cloud.changes``; the planner
decides which of them the directory must hold and plans :class:`DirectoryOperation`\\ s on
``vud.directory.operations``; the directory sink applies those to the store.

Each event carries the **whole** access of one user in one company as the cloud holds it now
(event-carried state, like a directory event), with each entry's origin and modification
time, so applying an event twice, or an older one after a newer one, is harmless: a consumer
that has seen feed position ``feed_seq`` for a (user, company) ignores any event at or below it.

The key on ``vud.cloud.changes`` is the **on-premise user id**, partitioned as
``vud.directory.users`` is, so the planner reads a user's cloud changes on the partition that
holds its directory state. Items for users or companies that are not linked to an on-premise
id (no ``external_id`` in the cloud) cannot reach the directory: cloud-capture journals them
as ``unlinked`` and counts them; it never guesses a link.

A full read (first start, ``410 cursor_expired``) reads what exists, so it cannot publish an
access removed whole while the cursor was expired. After the access of each linked user it
publishes :class:`CloudAccessRead` (the end-of-read marker for that user): the cloud companies
in which the cloud held the user's access. The planner revokes, through the conflict rule, the
**cloud-origin** entries the store holds for that user in any other linked company
(``processors.full_reads``); directory-origin entries are never revoked by it.

Entries whose origin is ``directory`` were written by vudsync itself; they are carried so that
the planner sees the whole set, but the planner never writes them back (that would be an echo).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, TypeAdapter

from schemas.base import Message
from schemas.directory import ApplicationType

#: the directory's word for each kind (the store's ``access.kind``); the cloud says ``roles``,
#: ``layout_groups``, ``modules``
AccessKind = Literal["role", "layout_group", "module"]
Origin = Literal["directory", "cloud"]


class CloudAccessEntry(Message):
    """One role, layout group or module the cloud holds for the user in the company."""

    application: ApplicationType
    kind: AccessKind
    name: str = Field(min_length=1)
    origin: Origin = Field(description="directory: written by vudsync; cloud: by anyone else")
    modified_at: datetime = Field(description="when the cloud last changed this entry")


class CloudAccessChanged(Message):
    """The cloud's current access of one linked user in one linked company."""

    event_id: str = Field(description="deterministic: cloud-access|<feed_seq>|<user>|<company>")
    feed_seq: int = Field(ge=0, description="the feed position of the change (the audit seq)")
    user_id: str = Field(min_length=1, description="on-premise user id (the cloud user's external_id)")
    company_id: str = Field(min_length=1, description="on-premise company id (external_id)")
    cloud_user_id: str
    cloud_company_id: str
    deleted: bool = Field(default=False, description="the cloud removed every entry of the pair")
    entries: tuple[CloudAccessEntry, ...] = Field(
        default=(), description="every entry the cloud holds now, sorted (application, kind, name)"
    )
    changed_at: datetime = Field(description="the feed item's time (the cloud's commit time)")
    full_read: bool = Field(
        default=False, description="emitted by a full read (first start, or after 410 cursor_expired)"
    )

    @staticmethod
    def make_event_id(feed_seq: int, user_id: str, company_id: str) -> str:
        return f"cloud-access|{feed_seq}|{user_id}|{company_id}"


class CloudAccessRead(Message):
    """A full read read the whole access of one linked user: the end-of-read marker of that user.

    ``cloud_companies`` are the cloud companies in which the cloud held access of the user when
    the read found it, linked or not; any access of the user in another company was removed
    whole before ``read_at``. Published after the user's ``CloudAccessChanged`` of the same read,
    with the same key (the on-premise user id), so the planner handles it after them."""

    type: Literal["access_read"] = "access_read"
    event_id: str = Field(description="deterministic: cloud-read|<feed_seq>|<user>")
    feed_seq: int = Field(ge=0, description="the full read's feed position (the cursor taken first)")
    user_id: str = Field(min_length=1, description="on-premise user id (the cloud user's external_id)")
    cloud_user_id: str
    cloud_companies: tuple[str, ...] = Field(
        default=(), description="the cloud companies holding access of the user, sorted"
    )
    read_at: datetime = Field(description="when the full read took its cursor")

    @staticmethod
    def make_event_id(feed_seq: int, user_id: str) -> str:
        return f"cloud-read|{feed_seq}|{user_id}"


#: what ``vud.cloud.changes`` carries
CloudChange = CloudAccessChanged | CloudAccessRead
CLOUD_CHANGE_ADAPTER: TypeAdapter[CloudChange] = TypeAdapter(CloudChange)
