"""cloud-capture's loop against a fake cloud (issue 16): the cursor is saved only after the
broker acknowledged the page; first start and an expired cursor read everything in full from a
cursor taken first; unlinked access is counted, never published; failures are retried."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from cloudcapture.capture import CloudCapture, CloudCaptureConfig
from cloudcapture.metrics import CaptureMetrics
from cloudcapture.ports import Body, CloudUnreachable, CursorExpired, FeedPage, Page, SavedCursor
from kernel.errors import RetryableError
from kernel.http_status import registry_by_label, registry_total
from kernel.retry import Backoff
from schemas.results import OperationResult, ResultOutcome
from tests.fakes import FakePublisher

TOPIC = "t.vud.cloud.changes"
RESULTS = "t.vud.cloud.results"
AT = "2026-12-05T20:00:00Z"


class FakeCloudFeed:
    """A cloud with users, companies, access and an audit-backed feed, as cloud/directory/changes.py:
    each page names each resource changed after the cursor once, with its current state."""

    def __init__(self) -> None:
        self.user_rows: dict[str, Body] = {}
        self.company_rows: dict[str, Body] = {}
        self.access_rows: dict[tuple[str, str], dict[str, str]] = {}  # (u, c) -> "svc/kind/name" -> origin
        self.audit: list[tuple[int, str, str]] = []  # seq, resource type, resource id
        self.epoch = 0
        self.fail_next: list[Exception] = []
        self.stamp = False  # True: each cursor carries a new issue time, as the real feed's do
        self.issued = 0
        self.calls: list[str] = []

    def _log(self, kind: str, rid: str) -> None:
        self.audit.append((len(self.audit) + 1, kind, rid))

    def add_user(self, cid: str, external_id: str | None) -> None:
        self.user_rows[cid] = {"id": cid, "external_id": external_id}
        self._log("user", cid)

    def add_company(self, cid: str, external_id: str | None) -> None:
        self.company_rows[cid] = {"id": cid, "external_id": external_id}
        self._log("company", cid)

    def link_user(self, cid: str, external_id: str) -> None:
        self.user_rows[cid]["external_id"] = external_id
        self._log("user", cid)

    def link_company(self, cid: str, external_id: str) -> None:
        self.company_rows[cid]["external_id"] = external_id
        self._log("company", cid)

    def grant(self, user: str, company: str, name: str, origin: str = "cloud") -> None:
        self.access_rows.setdefault((user, company), {})[f"business/roles/{name}"] = origin
        self._log("access", f"{user}/{company}")

    def revoke_all(self, user: str, company: str) -> None:
        del self.access_rows[(user, company)]
        self._log("access", f"{user}/{company}")

    def _body(self, user: str, company: str) -> Body | None:
        row = self.access_rows.get((user, company))
        if row is None:
            return None
        entries = []
        for key, origin in sorted(row.items()):
            service, kind, name = key.split("/")
            entry = {"service": service, "kind": kind, "name": name, "origin": origin}
            entries.append({**entry, "modified_at": AT})
        return {"user_id": user, "company_id": company, "entries": entries, "updated_at": AT}

    def _maybe_fail(self, call: str) -> None:
        self.calls.append(call)
        if self.fail_next:
            raise self.fail_next.pop(0)

    def changes(self, cursor: str | None, limit: int) -> FeedPage:
        self._maybe_fail("changes")
        head = len(self.audit)
        self.issued += self.stamp
        if cursor is None:
            return FeedPage((), f"c1.{self.epoch}.{head}.{self.issued}", False, head)
        _, epoch, after, _ = cursor.split(".")
        if int(epoch) != self.epoch:
            raise CursorExpired("GET /v1/changes: 410 cursor_expired")
        rows = [r for r in self.audit if r[0] > int(after)][: limit + 1]
        more, rows = len(rows) > limit, rows[:limit]
        latest: dict[tuple[str, str], int] = {}
        for seq, kind, rid in rows:
            latest.pop((kind, rid), None)
            latest[(kind, rid)] = seq
        items = []
        for (kind, rid), seq in latest.items():
            if kind == "access":
                state = self._body(*rid.split("/"))
            else:
                state = (self.user_rows if kind == "user" else self.company_rows).get(rid)
            items.append(
                {
                    "seq": seq,
                    "at": AT,
                    "resource_type": kind,
                    "resource_id": rid,
                    "change": "deleted" if state is None else "upserted",
                    "origin": "cloud",
                    "state": state,
                }
            )
        position = rows[-1][0] if rows else int(after)
        return FeedPage(tuple(items), f"c1.{self.epoch}.{position}.{self.issued}", more, position)

    def user(self, cloud_id: str) -> Body | None:
        self._maybe_fail("user")
        return self.user_rows.get(cloud_id)

    def company(self, cloud_id: str) -> Body | None:
        self._maybe_fail("company")
        return self.company_rows.get(cloud_id)

    def _page(self, items: dict[str, Body], after: int, limit: int) -> Page:
        values = list(items.values())[after : after + limit]
        nxt = after + limit if after + limit < len(items) else None
        return Page(tuple(values), nxt)

    def users(self, after: int, limit: int) -> Page:
        self._maybe_fail("users")
        return self._page(self.user_rows, after, limit)

    def companies(self, after: int, limit: int) -> Page:
        self._maybe_fail("companies")
        return self._page(self.company_rows, after, limit)

    def access(self, cloud_user_ids: Sequence[str]) -> dict[str, list[Body]]:
        self._maybe_fail("access")
        out: dict[str, list[Body]] = {}
        for uid in cloud_user_ids:
            out[uid] = [b for (u, c) in self.access_rows if u == uid if (b := self._body(u, c)) is not None]
        return out

    def close(self) -> None:
        pass


class MemoryCursors:
    store_kind = "memory"

    def __init__(self, events: list[str]) -> None:
        self.saved: dict[str, SavedCursor] = {}
        self.events = events

    def load(self, name: str) -> SavedCursor | None:
        return self.saved.get(name)

    def save(self, name: str, cursor: SavedCursor) -> None:
        self.saved[name] = cursor
        self.events.append(f"cursor saved {cursor.position}")

    def close(self) -> None:
        pass


class Rig:
    def __init__(self, feed: FakeCloudFeed | None = None, **config: Any) -> None:
        self.events: list[str] = []
        self.feed = feed or FakeCloudFeed()
        self.cursors = MemoryCursors(self.events)
        self.publisher = FakePublisher("broker", self.events)
        self.capture = self._started(CloudCaptureConfig(topic_prefix="t.", **config))

    def _started(self, config: CloudCaptureConfig) -> CloudCapture:
        """A capture process over this rig's feed, cursor store and broker (fresh metrics)."""
        self.registry = CollectorRegistry()
        return CloudCapture(
            self.feed,
            self.cursors,
            self.publisher,
            CaptureMetrics(self.registry),
            config,
            clock=lambda: 1_000_000.0,
            backoff=Backoff(base=0.0, cap=0.0),
        )

    def restart(self) -> None:
        """A new process: nothing remembered but what the cursor store holds."""
        self.capture = self._started(self.capture.config)

    def published(self, markers: bool = False) -> list[tuple[str, dict[str, Any]]]:
        """The acknowledged access events; with ``markers``, the full reads' end-of-read
        markers among them too."""
        acked = [record for batch in self.publisher.batches for record in batch]
        events = [(key, json.loads(value or b"")) for topic, key, value in acked if topic == TOPIC]
        return [(k, e) for k, e in events if markers or e.get("type") != "access_read"]

    def journal(self) -> list[OperationResult]:
        """The acknowledged journal entries (results) of the capture."""
        acked = [record for batch in self.publisher.batches for record in batch]
        return [OperationResult.model_validate_json(v or b"") for t, _, v in acked if t == RESULTS]

    def metric(self, name: str, label: str | None = None) -> Any:
        return registry_by_label(self.registry, name, label) if label else registry_total(self.registry, name)

    def run_until_idle(self, rounds: int = 50) -> None:
        """Run the loop until the feed answered ``more: false`` (the fake has nothing more)."""
        stop = threading.Event()
        real = self.capture.poll_once

        def poll() -> FeedPage:
            page = real()
            if not page.more:
                stop.set()
            return page

        self.capture.poll_once = poll  # type: ignore[method-assign]
        self.capture.run(stop)


def _linked_cloud() -> FakeCloudFeed:
    feed = FakeCloudFeed()
    feed.add_company("cc1", "c1")
    feed.add_user("cu1", "u1")
    feed.add_user("cu2", "u2")
    return feed


def test_first_start_takes_a_cursor_reads_in_full_then_follows_the_feed() -> None:
    feed = _linked_cloud()
    feed.grant("cu1", "cc1", "Regnskap", origin="directory")
    rig = Rig(feed)
    rig.run_until_idle()
    assert feed.calls[0] == "changes"  # the cursor is taken before anything is read
    assert [(k, e["feed_seq"], e["full_read"]) for k, e in rig.published()] == [("u1", 4, True)]
    assert rig.cursors.saved["cloud-capture"] == SavedCursor("c1.0.4.0", 4)
    assert rig.metric("vudsync_writeback_full_reads_total", "reason") == {
        "first_start": 1.0,
        "cursor_expired": 0.0,
    }

    feed.grant("cu1", "cc1", "Lønn")
    feed.grant("cu2", "cc1", "Innkjøp")
    rig.run_until_idle()
    later = rig.published()[1:]
    assert [(k, e["event_id"], [x["name"] for x in e["entries"]]) for k, e in later] == [
        ("u1", "cloud-access|5|u1|c1", ["Lønn", "Regnskap"]),
        ("u2", "cloud-access|6|u2|c1", ["Innkjøp"]),
    ]
    assert all(not e["full_read"] and e["cloud_company_id"] == "cc1" for _, e in later)
    assert rig.metric("vudsync_writeback_published_total") == 3.0
    assert rig.metric("vudsync_writeback_feed_lag_seconds") == 0.0
    assert rig.metric("vudsync_writeback_feed_position") == 6.0


def test_the_cursor_is_saved_only_after_the_broker_acknowledged_the_page() -> None:
    feed = _linked_cloud()
    rig = Rig(feed)
    rig.run_until_idle()
    rig.events.clear()
    feed.grant("cu1", "cc1", "Lønn")
    real = rig.publisher.flush
    failed: list[int] = []

    def flush_failing_once(timeout: float = 60.0) -> int:
        if not failed:
            failed.append(1)
            raise RetryableError("broker did not acknowledge 1 record(s): test")
        return real(timeout)

    rig.publisher.flush = flush_failing_once  # type: ignore[method-assign]
    rig.run_until_idle()
    # the failed flush saved nothing; the page was read again and sent again (the first send
    # still queued in the client): a duplicate, of the same id and state
    assert rig.events == ["broker flushed 2", "cursor saved 4"]
    first, again = rig.published()
    assert first == again and first[1]["event_id"] == "cloud-access|4|u1|c1"
    assert feed.calls.count("changes") >= 3


def test_a_revoked_access_is_published_deleted() -> None:
    feed = _linked_cloud()
    feed.grant("cu1", "cc1", "Lønn")
    rig = Rig(feed)
    rig.run_until_idle()
    feed.revoke_all("cu1", "cc1")
    rig.run_until_idle()
    key, last = rig.published()[-1]
    assert key == "u1" and last["deleted"] and last["entries"] == []


def test_unlinked_access_is_counted_and_logged_once_never_published(caplog: Any) -> None:
    feed = _linked_cloud()
    rig = Rig(feed)
    rig.run_until_idle()
    feed.add_user("cu9", None)  # an administrator's own user, not in the directory
    feed.add_company("cc9", None)
    feed.grant("cu9", "cc1", "Lønn")
    feed.grant("cu1", "cc9", "Lønn")
    rig.run_until_idle()
    feed.grant("cu9", "cc1", "Regnskap")
    rig.run_until_idle()
    assert rig.published() == []
    assert rig.metric("vudsync_writeback_unlinked_total", "resource") == {
        "user": 2.0,
        "company": 1.0,
        "service": 0.0,
    }
    said = [r.getMessage() for r in caplog.records if "is not linked" in r.getMessage()]
    assert len(said) == 2 and "cu9" in said[0] and "cc9" in said[1]


def test_a_user_linked_after_its_access_was_counted_unlinked_has_it_published() -> None:
    feed = _linked_cloud()
    rig = Rig(feed)
    rig.run_until_idle()
    feed.add_user("cu9", None)  # an administrator's user, granted access before it is linked
    feed.grant("cu9", "cc1", "Lønn")
    rig.run_until_idle()
    assert rig.published() == [] and rig.metric("vudsync_writeback_unlinked_total") == 1.0
    feed.link_user("cu9", "u9")  # the integration links it (a user created on premise)
    rig.run_until_idle()
    [(key, event)] = rig.published()
    assert key == "u9" and event["feed_seq"] == 6 and not event["full_read"]
    assert [e["name"] for e in event["entries"]] == ["Lønn"]


def test_a_company_linked_after_its_access_was_counted_unlinked_has_it_published() -> None:
    feed = _linked_cloud()
    rig = Rig(feed, read_page=1)  # the pass over the users is paged too
    rig.run_until_idle()
    feed.add_company("cc9", None)  # an administrator's company, access granted before it is linked
    feed.add_user("cu8", None)
    feed.grant("cu1", "cc9", "Lønn")
    feed.grant("cu2", "cc9", "Regnskap")
    feed.grant("cu8", "cc9", "Lønn")  # a user not linked either: stays out
    feed.grant("cu2", "cc1", "Innkjøp")
    rig.run_until_idle()
    assert [k for k, _ in rig.published()] == ["u2"]
    assert rig.metric("vudsync_writeback_unlinked_total", "resource")["company"] == 2.0
    feed.link_company("cc9", "c9")  # the integration links it (a company created on premise)
    rig.run_until_idle()
    later = [
        (k, e["company_id"], e["feed_seq"], [x["name"] for x in e["entries"]]) for k, e in rig.published()[1:]
    ]
    assert sorted(later) == [("u1", "c9", 10, ["Lønn"]), ("u2", "c9", 10, ["Regnskap"])]
    assert not any(e["full_read"] for _, e in rig.published())
    # a company item of a company known linked reads nothing again
    calls = len(feed.calls)
    feed.link_company("cc9", "c9")
    rig.run_until_idle()
    assert "users" not in feed.calls[calls:] and len(rig.published()) == 3


def test_a_company_and_a_user_linked_while_capture_was_down_have_their_access_read_after_the_restart() -> (
    None
):
    feed = _linked_cloud()
    rig = Rig(feed, read_page=1)
    rig.run_until_idle()
    feed.add_company("cc9", None)  # an administrator's company and user, granted before linked
    feed.add_user("cu7", None)
    feed.grant("cu1", "cc9", "Lønn")
    feed.grant("cu7", "cc1", "Innkjøp")
    rig.run_until_idle()
    assert rig.published() == []
    saved = rig.cursors.saved["cloud-capture"]
    assert saved.unlinked == {"company:cc9", "user:cu7"}  # saved with the cursor, after the acks
    # capture stops; the integration links both; capture starts again
    feed.link_company("cc9", "c9")
    feed.link_user("cu7", "u7")
    rig.restart()
    rig.run_until_idle()
    got = sorted((k, e["company_id"], [x["name"] for x in e["entries"]]) for k, e in rig.published())
    assert got == [("u1", "c9", ["Lønn"]), ("u7", "c1", ["Innkjøp"])]
    assert rig.cursors.saved["cloud-capture"].unlinked == frozenset()  # linked now: forgotten
    # a company known linked when the cursor was saved is not read again after a restart
    rig.restart()
    calls = len(feed.calls)
    feed.link_company("cc9", "c9")
    rig.run_until_idle()
    assert "users" not in feed.calls[calls:] and len(rig.published()) == 2


def test_an_access_item_of_a_user_seen_before_capture_started_is_looked_up() -> None:
    feed = _linked_cloud()
    rig = Rig(feed)
    rig.run_until_idle()
    rig.capture._ids.clear()  # a restart: the cache is empty, the users are not on the page
    feed.grant("cu2", "cc1", "Lønn")
    rig.run_until_idle()
    assert [k for k, _ in rig.published()] == ["u2"]
    assert {"user", "company"} <= set(feed.calls)


def test_an_expired_cursor_reads_in_full_from_a_new_cursor() -> None:
    feed = _linked_cloud()
    feed.grant("cu1", "cc1", "Regnskap")
    rig = Rig(feed)
    rig.run_until_idle()
    feed.grant("cu2", "cc1", "Lønn")
    feed.epoch += 1  # POST /admin/changes/expire
    rig.run_until_idle()
    full = [(k, e["feed_seq"]) for k, e in rig.published() if e["full_read"]]
    assert full == [("u1", 4), ("u1", 5), ("u2", 5)]
    assert rig.cursors.saved["cloud-capture"] == SavedCursor("c1.1.5.0", 5)
    assert rig.metric("vudsync_writeback_full_reads_total", "reason")["cursor_expired"] == 1.0
    # journalled: the first start, then the expiry with the position the feed could not go on from
    first, expired = rig.journal()
    assert (first.kind, first.details["reason"], first.outcome) == (
        "journal.writeback_full_read",
        "first_start",
        ResultOutcome.APPLIED,
    )
    assert (expired.details["reason"], expired.details["expired_position"]) == ("cursor_expired", 4)
    assert (expired.details["position"], expired.details["access"], expired.details["users"]) == (5, 2, 2)
    assert "410 cursor_expired" in expired.details["message"] and expired.entity_id == "cloud-capture"
    # published before the cursor was saved (the order of the capture's commit)
    assert rig.events[-2:] == ["broker flushed 1", "cursor saved 5"]


def test_a_full_read_ends_each_linked_user_with_the_companies_it_found_access_in() -> None:
    feed = _linked_cloud()
    feed.add_user("cu9", "u9")
    feed.grant("cu1", "cc1", "Regnskap")
    feed.grant("cu2", "cc1", "Lønn")
    feed.grant("cu9", "cc1", "Lønn")
    rig = Rig(feed)
    rig.run_until_idle()
    feed.epoch += 1  # expired; meanwhile u1's access is removed whole and u9 is unlinked
    feed.revoke_all("cu1", "cc1")
    feed.user_rows["cu9"]["external_id"] = None
    rig = Rig(feed)  # a restart: nothing remembered of what was published before
    rig.run_until_idle()
    published = rig.published(markers=True)
    after = [(k, e.get("type", "access"), e.get("cloud_companies"), e["feed_seq"]) for k, e in published]
    # each user's marker after its access events (one key, one partition: the planner reads
    # them in order); u9, no longer linked, is not read: nothing said of it
    assert after == [
        ("u2", "access", None, 8),
        ("u1", "access_read", [], 8),
        ("u2", "access_read", ["cc1"], 8),
    ]
    markers = [e for _, e in published if e.get("type") == "access_read"]
    assert all(m["read_at"] == "1970-01-12T13:46:40Z" for m in markers)  # when the cursor was taken
    assert not any(e.get("deleted") for _, e in published)  # never a guessed removal


def test_an_idle_feed_costs_the_store_no_write_per_poll() -> None:
    feed = _linked_cloud()
    feed.stamp = True
    rig = Rig(feed)
    rig.run_until_idle()
    rig.events.clear()
    for _ in range(5):  # five idle polls, each answered with a new cursor at the same position
        rig.run_until_idle()
    assert rig.events == [] and rig.cursors.saved["cloud-capture"].position == 3
    assert rig.metric("vudsync_writeback_feed_last_advance_timestamp_seconds") == 1_000_000.0
    feed.grant("cu1", "cc1", "Lønn")
    rig.run_until_idle()
    assert rig.events == ["broker flushed 1", "cursor saved 4"]


def test_failures_are_retried_and_a_full_read_that_failed_starts_again() -> None:
    feed = _linked_cloud()
    feed.grant("cu1", "cc1", "Regnskap")
    feed.fail_next = [CloudUnreachable("GET /v1/changes: ConnectError")]
    rig = Rig(feed)
    rig.run_until_idle()
    assert [k for k, _ in rig.published()] == ["u1"]
    assert rig.capture.health.error is None and rig.capture.health.phase == "streaming"
    assert rig.metric("vudsync_writeback_cloud_reachable") == 1.0


def test_a_stop_finishes_the_page_in_flight() -> None:
    feed = _linked_cloud()
    rig = Rig(feed)
    rig.run_until_idle()
    for i in range(5):
        feed.grant("cu1", "cc1", f"R{i}")
        feed.grant("cu2", "cc1", f"R{i}")
    stop = threading.Event()
    real = rig.publisher.flush

    def flush(timeout: float = 60.0) -> int:
        stop.set()  # SIGTERM while the first page waits for its acks
        return real(timeout)

    rig.publisher.flush = flush  # type: ignore[method-assign]
    rig.capture.config = CloudCaptureConfig(topic_prefix="t.", page_limit=4)
    rig.capture.run(stop)
    assert rig.events[-2:] == ["broker flushed 2", "cursor saved 7"]
    assert rig.cursors.saved["cloud-capture"].position == 7
