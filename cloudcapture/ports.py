"""Ports of cloud-capture: the cloud's change feed and reads, and where the cursor is kept."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kernel.errors import RetryableError

Body = dict[str, Any]


class CloudUnreachable(RetryableError):
    """The cloud did not answer at all (connection refused or lost, timeout)."""


class CursorExpired(RetryableError):
    """The feed answered ``410 cursor_expired``: it no longer holds the changes after the cursor.
    Read the cloud in full again, from a new cursor."""


@dataclass(frozen=True)
class FeedPage:
    """One answer of ``GET /v1/changes``: its items (oldest first, each resource once), the
    cursor to read on with, whether to read on at once (``more``), and ``position``: the feed
    position the cursor stands at (every item after it has a higher ``seq``)."""

    items: tuple[Body, ...]
    cursor: str
    more: bool
    position: int


@dataclass(frozen=True)
class Page:
    """One page of a collection (``GET /v1/users``, ``/v1/companies``); ``next_after`` None: the last."""

    items: tuple[Body, ...]
    next_after: int | None


class CloudFeed(Protocol):
    """What cloud-capture reads in the cloud, with the integration's credentials (read scope).
    Failures are :class:`~kernel.errors.RetryableError` (network, 5xx, 429, refused
    credentials) or :class:`CursorExpired`."""

    def changes(self, cursor: str | None, limit: int) -> FeedPage:
        """A page of the feed after ``cursor``; None: no items and the cursor of now."""

    def user(self, cloud_id: str) -> Body | None:
        """The cloud user, None if there is none."""

    def company(self, cloud_id: str) -> Body | None:
        """The cloud company, None if there is none."""

    def users(self, after: int, limit: int) -> Page:
        """A page of every cloud user, in creation order."""

    def companies(self, after: int, limit: int) -> Page:
        """A page of every cloud company, in creation order."""

    def access(self, cloud_user_ids: Sequence[str]) -> dict[str, list[Body]]:
        """Every access body (one per company) of each of these users."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class SavedCursor:
    """The feed's cursor, its position, and the cloud users and companies cloud-capture knew
    as **not linked** there (``user:<cloud id>``, ``company:<cloud id>``): their access was
    counted, not published, so a link after the cursor must be followed by a read of it — after
    a restart too (the feed item of the link gives only the state *now*: linked)."""

    cursor: str
    position: int
    unlinked: frozenset[str] = frozenset()

    def unlinked_json(self) -> str:
        """``unlinked`` as the store keeps it (a sorted JSON list)."""
        return json.dumps(sorted(self.unlinked))

    @staticmethod
    def unlinked_from(raw: str | None) -> frozenset[str]:
        """The unlinked ids a store kept (none in a row saved before the column existed)."""
        return frozenset(json.loads(raw)) if raw else frozenset()


class CursorStore(Protocol):
    """Where the feed cursor is kept: durably, written only after the broker acknowledged
    every event read before it."""

    store_kind: str  # 'sqlite' | 'postgresql'

    def load(self, name: str) -> SavedCursor | None:
        """The saved cursor of the named capture; None before the first full read."""

    def save(self, name: str, cursor: SavedCursor) -> None:
        """Record the cursor and its unlinked ids durably, in one write (replacing the ones
        before)."""

    def close(self) -> None: ...
