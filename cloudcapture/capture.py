"""cloud-capture's loop: follow the cloud's change feed, publish each access it names.

Commit order (per page): read a page of the feed → map its items (users and companies first:
their external ids; then each access) → publish every event → ``flush`` (every record
acknowledged by the broker, acks=all) → save the page's cursor. A crash anywhere before the
save reads the page again from the saved cursor: the same items, the same event ids (at least
once; each event is a whole state, so a repeated one changes nothing). The feed gives each item
its resource's state *now*, so a page read again may carry, under an id already sent, a state
newer than the first time; that state also comes with the later feed position that changed it,
so a consumer that ignores the repeat (its ``feed_seq`` seen) loses nothing.

Full read (first start without a cursor; ``410 cursor_expired``): take a cursor of *now*
**first** (``GET /v1/changes``), then read every company and every linked user's access, page
by page, and publish each access with ``full_read=True`` at the cursor's position, then each
linked user's end-of-read marker (:class:`~schemas.cloud_changes.CloudAccessRead`: the cloud
companies its access was found in — the planner revokes the cloud-origin access the store holds
in any other, which the cloud removed whole while the feed could not say so); when all is
acknowledged, journal the read (a result on ``vud.cloud.results``, :mod:`cloudcapture.journal`),
save that cursor and follow the feed from it. A change made during the read comes again through
the feed, never missed. A full read stopped or failed halfway saves nothing and starts again
from a new cursor.

Nothing escapes the loop: a failure is logged, counted in the readiness facts and tried again
after a back-off (``kernel.retry.Backoff``), the stop event cutting any wait short. Stopping
(SIGTERM) finishes the page in flight, flush and cursor included.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from cloudcapture.journal import full_read_result
from cloudcapture.mapping import (
    Mapped,
    Unlinked,
    access_read_event,
    feed_access_event,
    full_read_events,
    parse_time,
)
from cloudcapture.metrics import CaptureMetrics
from cloudcapture.ports import (
    Body,
    CloudFeed,
    CloudUnreachable,
    CursorExpired,
    CursorStore,
    FeedPage,
    SavedCursor,
)
from kernel.errors import RetryableError, VudsyncError
from kernel.publishing import RecordPublisher
from kernel.retry import Backoff
from schemas.codec import encode
from schemas.results import result_headers
from schemas.topics import CLOUD_CHANGES, RESULTS

log = logging.getLogger(__name__)

IdKey = tuple[str, str]  # ("user" | "company", cloud id)
REFRESH_IDLE_CURSOR = 60.0  # seconds: an idle feed's cursor is saved at most this often


@dataclass(frozen=True)
class CloudCaptureConfig:
    name: str = "cloud-capture"  # the cursor's row in capture_checkpoint
    topic_prefix: str = ""
    page_limit: int = 500  # items per feed page (the API allows 1000)
    poll_interval: float = 1.0  # seconds between polls while the feed has no more changes
    read_page: int = 1000  # users per page of a full read


@dataclass
class Health:
    """What readiness reads (plain values, written by the loop's thread only)."""

    last_poll: float | None = None  # time.monotonic() of the last successful answer of the feed
    error: str | None = None  # the last failure (cloud, broker or store), None after a success
    phase: str = "starting"  # starting | full_read | streaming


class CloudCapture:
    """Drives the cloud's change feed into ``vud.cloud.changes``."""

    def __init__(
        self,
        feed: CloudFeed,
        cursors: CursorStore,
        publisher: RecordPublisher,
        metrics: CaptureMetrics,
        config: CloudCaptureConfig,
        *,
        clock: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
    ) -> None:
        self.feed = feed
        self.cursors = cursors
        self.publisher = publisher
        self.metrics = metrics
        self.config = config
        self.clock = clock
        self.backoff = backoff or Backoff(base=0.5, cap=30.0)
        self.health = Health()
        self.topic = config.topic_prefix + CLOUD_CHANGES.name
        self.results = config.topic_prefix + RESULTS.name  # the journal's full reads
        self._ids: dict[IdKey, str | None] = {}  # cloud id → on-premise id (None: not linked)
        # the ids known not linked, saved with each cursor (SavedCursor.unlinked): a link after
        # the cursor is followed by a read of their access, after a restart too
        self._unlinked_ids: set[IdKey] = set()
        self._unlinked_saved: frozenset[str] | None = None  # its text, until it changes
        self._reported: set[IdKey] = set()  # unlinked ids logged once
        self._saved: SavedCursor | None = None
        self._saved_at = 0.0  # time.monotonic() of the last save
        self.metrics.last_advance.set(clock())  # a fresh start has the alert's whole window

    # -- the loop -----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Follow the feed until ``stop`` is set; the page in flight is finished first."""
        loaded = False
        reason = "first_start"
        expired: int | None = None  # the position of the cursor the feed expired
        failures = 0
        while not stop.is_set():
            try:
                if not loaded:  # in the loop: a store that does not answer yet is waited for
                    self._saved = self.cursors.load(self.config.name)
                    loaded = True
                    if self._saved is not None:
                        self._remember_unlinked(self._saved.unlinked)
                        log.info(
                            "cloud-capture: following the feed from position %d (%d users or companies "
                            "known unlinked there)",
                            self._saved.position,
                            len(self._saved.unlinked),
                        )
                if self._saved is None:
                    if self.full_read(reason, stop, expired):
                        failures = 0
                    continue
                page = self.poll_once()
                failures = 0
                if not page.more:
                    stop.wait(self.config.poll_interval)
            except CursorExpired:
                log.warning(
                    "cloud-capture: the feed's cursor at position %d expired (410 cursor_expired): "
                    "reading the cloud in full from a new cursor",
                    self._saved.position if self._saved else -1,
                )
                expired = self._saved.position if self._saved else expired
                self._saved = None
                reason = "cursor_expired"  # until a full read completes (one that fails is repeated)
            except VudsyncError as exc:
                failures += 1
                self._failed(exc)
                stop.wait(self.backoff.delay(failures, getattr(exc, "retry_after", None)))
            except Exception as exc:  # a defect: logged by class and retried, never a dead loop
                failures += 1
                log.exception("cloud-capture: unexpected %s; trying again", type(exc).__name__)
                self.health.error = f"unexpected {type(exc).__name__}"
                stop.wait(self.backoff.delay(failures))

    def _failed(self, exc: VudsyncError) -> None:
        reachable = not isinstance(exc, CloudUnreachable)
        self.metrics.cloud_reachable.set(1 if reachable else 0)
        self.health.error = str(exc) if isinstance(exc, RetryableError) else type(exc).__name__
        log.warning("cloud-capture: %s%s", exc, f" ({exc.hint})" if exc.hint else "")

    def _answered(self) -> None:
        self.metrics.cloud_reachable.set(1)
        self.health.error = None
        self.health.last_poll = time.monotonic()

    # -- streaming ----------------------------------------------------------------------

    def poll_once(self) -> FeedPage:
        """Read one page after the saved cursor, publish it, save its cursor after the acks."""
        assert self._saved is not None, "poll_once follows a saved cursor (run reads one in full first)"
        page = self.feed.changes(self._saved.cursor, self.config.page_limit)
        self._answered()
        self.health.phase = "streaming"
        if page.items:
            linked, companies = self._resolve(page.items)
            published = self._publish(self._linked_access(linked))
            published += self._publish(self._company_access(companies))
            published += self._publish(self._events(page.items))
            self._acknowledge(published)
        self._save(self._cursor(page.cursor, page.position))
        newest = max((parse_time(i["at"]) for i in page.items), default=None)
        if not page.more:
            self.metrics.feed_lag.set(0)
        elif newest is not None:
            self.metrics.feed_lag.set(max(0.0, self.clock() - newest.timestamp()))
        return page

    def _resolve(self, items: Iterable[Body]) -> tuple[dict[str, int], dict[str, int]]:
        """Learn the external ids the page's user and company items carry (their current
        state), then look up any other user or company an access item names. Returns the users
        and the companies this page linked that capture knew as unlinked (cloud id → the
        item's seq): their access was counted and not published, and may not change again."""
        linked: dict[str, dict[str, int]] = {"user": {}, "company": {}}
        for item in items:
            kind = item["resource_type"]
            self.metrics.changes_read.labels(resource=kind).inc()
            if kind in ("user", "company"):
                key = (kind, str(item["resource_id"]))
                known = key in self._ids and self._ids[key] is None
                self._learn(key, (item.get("state") or {}).get("external_id") or None)
                if known and self._ids[key] is not None:
                    linked[kind][key[1]] = int(item["seq"])
        for item in items:
            if item["resource_type"] != "access":
                continue
            user, _, company = str(item["resource_id"]).partition("/")
            self._lookup("user", user)
            self._lookup("company", company)
        return linked["user"], linked["company"]

    def _linked_access(self, linked: dict[str, int]) -> list[Mapped | Unlinked]:
        """The whole access of users just linked, at the feed position of their link (before
        the page's own access items, which are at least as new)."""
        if not linked:
            return []
        access = self.feed.access(list(linked))
        for bodies in access.values():
            for body in bodies:
                self._lookup("company", str(body["company_id"]))
        return [
            event
            for uid, bodies in access.items()
            for event in full_read_events(bodies, self._ids, linked[uid], full_read=False)
        ]

    def _company_access(self, linked: dict[str, int]) -> list[Mapped | Unlinked]:
        """The access of every linked user in companies just linked, at the feed position of
        their link. The cloud lists access per user only: one pass over every user (pages of
        ``read_page``, access in batches), for all the companies a page linked together —
        companies are linked rarely (a company created on premise matched to one an
        administrator made in the cloud)."""
        if not linked:
            return []
        log.info("cloud-capture: %d companies linked: reading their access again", len(linked))
        events: list[Mapped | Unlinked] = []
        after: int | None = 0
        while after is not None:
            users, _, after = self._users_page(after)
            for bodies in self.feed.access(users).values():
                for body in bodies:
                    seq = linked.get(str(body["company_id"]))
                    if seq is not None:
                        events.extend(full_read_events([body], self._ids, seq, full_read=False))
        return events

    def _users_page(self, after: int) -> tuple[list[str], list[str], int | None]:
        """A page of every cloud user, their external ids learned: the linked ones, the
        unlinked ones (cloud ids) and the next page's start (None: the last)."""
        page = self.feed.users(after, self.config.read_page)
        linked: list[str] = []
        unlinked: list[str] = []
        for user in page.items:
            key = ("user", str(user["id"]))
            self._learn(key, user.get("external_id") or None)
            (linked if self._ids[key] is not None else unlinked).append(key[1])
        return linked, unlinked, page.next_after

    def _learn(self, key: IdKey, external_id: str | None) -> None:
        """What the cloud says ``key`` is linked to now (None: not linked)."""
        self._ids[key] = external_id
        if (external_id is None) != (key in self._unlinked_ids):
            self._unlinked_saved = None
            if external_id is None:
                self._unlinked_ids.add(key)
            else:
                self._unlinked_ids.discard(key)

    def _remember_unlinked(self, saved: frozenset[str]) -> None:
        """The ids the saved cursor knew unlinked (``user:<id>``, ``company:<id>``): known
        unlinked again, so that a link the feed brings after the cursor reads their access."""
        for text in saved:
            kind, _, cloud_id = text.partition(":")
            if kind in ("user", "company") and cloud_id:
                self._learn((kind, cloud_id), None)

    def _cursor(self, cursor: str, position: int) -> SavedCursor:
        """The cursor to save, with the ids known unlinked at it."""
        if self._unlinked_saved is None:
            self._unlinked_saved = frozenset(f"{k}:{i}" for k, i in self._unlinked_ids)
        return SavedCursor(cursor, position, self._unlinked_saved)

    def _lookup(self, kind: str, cloud_id: str) -> None:
        if (kind, cloud_id) in self._ids:
            return
        body = self.feed.user(cloud_id) if kind == "user" else self.feed.company(cloud_id)
        self._learn((kind, cloud_id), (body or {}).get("external_id") or None)

    def _events(self, items: Iterable[Body]) -> list[Mapped | Unlinked]:
        return [feed_access_event(i, self._ids) for i in items if i["resource_type"] == "access"]

    # -- full read ----------------------------------------------------------------------

    def full_read(self, reason: str, stop: threading.Event, expired: int | None = None) -> bool:
        """Publish the cloud's whole access from a cursor taken first; True when it completed
        and its cursor is saved (False: stopped halfway, nothing saved). After each linked
        user's access, its end-of-read marker (:class:`~schemas.cloud_changes.CloudAccessRead`):
        the planner revokes the cloud-origin access the store holds in any other company —
        removed whole while the feed could not say so, after a restart too. A completed read
        is journalled (:mod:`cloudcapture.journal`; ``expired``: the position of the cursor
        the feed expired) before its cursor is saved."""
        self.metrics.full_reads.labels(reason=reason).inc()
        self.health.phase = "full_read"
        start = self.feed.changes(None, 1)  # the cursor of now, before reading anything
        read_at = datetime.fromtimestamp(self.clock(), UTC)
        self._answered()
        log.warning("cloud-capture: full read (%s) from feed position %d", reason, start.position)
        after: int | None = 0
        while after is not None:
            page = self.feed.companies(after, self.config.read_page)
            for company in page.items:
                self._learn(("company", str(company["id"])), company.get("external_id") or None)
            after = page.next_after
        published = unlinked_users = read_users = 0
        after = 0
        while after is not None:
            if stop.is_set():
                log.info("cloud-capture: stopped during the full read; it starts again on restart")
                return False
            linked, unlinked, after = self._users_page(after)
            for uid in unlinked:
                self._unlinked(Unlinked("user", uid))
            unlinked_users += len(unlinked)
            access = self.feed.access(linked)
            bodies = [body for uid in linked for body in access.get(uid, ())]
            count = self._publish(full_read_events(bodies, self._ids, start.position))
            for uid in linked:  # after the user's access events: the planner reads them first
                on_premise = str(self._ids[("user", uid)])
                marker = access_read_event(uid, on_premise, access.get(uid, ()), start.position, read_at)
                self.publisher.publish(self.topic, on_premise, marker.model_dump_json().encode())
            self._acknowledge(count)  # the markers with them (counted apart: they are no access)
            published += count
            read_users += len(linked)
            self._answered()
            self.metrics.last_advance.set(self.clock())  # a full read's progress is progress
        entry = full_read_result(
            name=self.config.name,
            reason=reason,
            expired_position=expired,
            position=start.position,
            access=published,
            users=read_users,
            started_at=read_at,
            now=datetime.fromtimestamp(self.clock(), UTC),
        )
        self.publisher.publish(self.results, entry.entity_id, encode(entry), result_headers(entry))
        self._acknowledge(0)
        self._save(self._cursor(start.cursor, start.position))
        self.metrics.feed_lag.set(0)
        log.warning(
            "cloud-capture: full read (%s) done: %d access published, %d linked users read (each "
            "ended with its marker), %d users not linked; following the feed from position %d",
            reason,
            published,
            read_users,
            unlinked_users,
            start.position,
        )
        return True

    # -- publishing ---------------------------------------------------------------------

    def _publish(self, results: Iterable[Mapped | Unlinked]) -> int:
        """Queue each event (key: the on-premise user id); count and report what cannot go."""
        queued = 0
        for result in results:
            if isinstance(result, Unlinked):
                self._unlinked(result)
                continue
            event = result.event
            for entry in result.skipped:
                self._skipped(event.cloud_user_id, event.cloud_company_id, entry)
            self.publisher.publish(self.topic, event.user_id, event.model_dump_json().encode())
            queued += 1
        return queued

    def _acknowledge(self, queued: int) -> None:
        """Wait until the broker acknowledged every queued event (raises otherwise): only then
        may a cursor cover them."""
        self.publisher.flush()
        self.metrics.published.inc(queued)

    def _save(self, cursor: SavedCursor) -> None:
        """Save a cursor that moved. An idle feed answers a new cursor at the same position on
        every poll (the cloud stamps when it was issued): that one is saved once a minute, not
        once a poll — often enough that a saved cursor never ages into expiry while capture
        runs, rarely enough that an idle poll costs the store no write."""
        now = time.monotonic()
        moved = (
            self._saved is None
            or cursor.position != self._saved.position
            or cursor.unlinked != self._saved.unlinked
        )
        if moved or (cursor != self._saved and now - self._saved_at >= REFRESH_IDLE_CURSOR):
            self.cursors.save(self.config.name, cursor)
            self._saved, self._saved_at = cursor, now
            self.metrics.position.set(cursor.position)
        self.metrics.last_advance.set(self.clock())

    def _unlinked(self, unlinked: Unlinked) -> None:
        """Counted every time; logged once per id, with ids only (no personal data)."""
        self.metrics.unlinked.labels(resource=unlinked.resource).inc()
        key = (unlinked.resource, unlinked.cloud_id)
        if key not in self._reported:
            self._reported.add(key)
            log.warning(
                "cloud-capture: cloud %s %s is not linked to the directory (no external id): its "
                "access is not published",
                unlinked.resource,
                unlinked.cloud_id,
            )

    def _skipped(self, cloud_user: str, cloud_company: str, entry: str) -> None:
        self.metrics.unlinked.labels(resource="service").inc()
        key = ("service", entry.split("/", 1)[0])
        if key not in self._reported:
            self._reported.add(key)
            log.warning(
                "cloud-capture: access %s/%s names %s, of a service the directory does not hold: left out",
                cloud_user,
                cloud_company,
                entry,
            )
