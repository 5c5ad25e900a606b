"""cloud-capture on real parts (issue 16): the Kafka broker, the reference cloud API over HTTP,
the directory store (SQLite and PostgreSQL) and ``vudsync run cloud-capture`` as a process.

An administrator (a second OAuth client, as the portal) grants and revokes roles; what
reaches ``vud.cloud.changes`` must be the cloud's state keyed by the on-premise user id, on the
partition of that user's directory events; unlinked users counted, never published; a SIGKILL
mid-stream loses nothing (duplicates only as identical events); an expired cursor (410) reads
in full and converges."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from devtools.broker.configure import free_port
from kernel.settings import SECRET_FIELDS, Settings
from producers.service import open_store_migrations
from schemas.cloud_changes import CloudAccessChanged
from schemas.codec import decode_cloud_change
from schemas.directory import EntityType
from schemas.results import OperationResult
from schemas.topics import CLOUD_CHANGES, DIRECTORY_TOPICS, RESULTS
from tests.capture_check import store_query
from tests.e2e.test_writeback import _directory, _integration_writes
from tests.fixtures.cloud import PORTAL, CloudReader, Pair, Portal
from tests.kafka_read import read_all
from tests.pipeline import business_directory, components, gauge, vudsync_cli, wait_for
from vudsync.topics import ensure_catalogue

pytestmark = pytest.mark.e2e

ROLES = ("Regnskap", "Lønn", "Innkjøp", "Attestasjon")
KIND = {"roles": "role", "layout_groups": "layout_group", "modules": "module"}

State = frozenset[tuple[str, str, str, str]]  # (application, kind, name, origin)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_settings(request: pytest.FixtureRequest, pipeline_settings: Settings) -> Settings:
    """The run's settings on each store (PostgreSQL's server started only for its tests)."""
    if request.param == "sqlite":
        return pipeline_settings
    return pipeline_settings.model_copy(update={"store_url": request.getfixturevalue("postgres_url")})


def _linked(cloud: CloudReader, users: int, company: str = "c1") -> tuple[list[str], str]:
    """Cloud users u1…uN and company ``company``, linked (external ids), and the catalogue's
    roles, as the integration writes them; their cloud ids."""
    api = cloud.client
    for role in ROLES:
        api.put(f"/v1/services/business/roles/{role}", json={"description": role}).raise_for_status()
    digits = f"{uuid.uuid4().int % 10**9:09d}"
    made = api.post(
        "/v1/companies", json={"external_id": company, "name": "Fjord AS", "organisation_number": digits}
    )
    made.raise_for_status()
    ids = []
    for n in range(1, users + 1):
        user = api.post("/v1/users", json={"external_id": f"u{n}", "email": f"u{n}.{digits}@fjord.no"})
        user.raise_for_status()
        ids.append(str(user.json()["id"]))
    return ids, str(made.json()["id"])


def _cloud_state(cloud: CloudReader, user_ids: list[str]) -> dict[Pair, State]:
    out: dict[Pair, State] = {}
    for uid in user_ids:
        for access in cloud.access(uid):
            out[(uid, access["company_id"])] = frozenset(
                (e["service"], KIND[e["kind"]], e["name"], e["origin"]) for e in access["entries"]
            )
    return out


def _events(records: list[Any]) -> list[tuple[Any, CloudAccessChanged]]:
    """The access events (a full read's end-of-read markers left out)."""
    decoded = [(r, decode_cloud_change(r.value)) for r in records]
    return [(r, e) for r, e in decoded if isinstance(e, CloudAccessChanged)]


def _last_states(records: list[Any]) -> dict[Pair, State]:
    """The state of each pair in its last event (a user's events share one partition: by offset)."""
    last: dict[Pair, tuple[int, CloudAccessChanged]] = {}
    for record, event in _events(records):
        pair = (event.cloud_user_id, event.cloud_company_id)
        if pair not in last or record.offset > last[pair][0]:
            last[pair] = (record.offset, event)
    return {
        pair: frozenset((e.application.value, e.kind, e.name, e.origin) for e in event.entries)
        for pair, (_, event) in last.items()
    }


def _converged(settings: Settings, bootstrap: str, cloud: CloudReader, users: list[str]) -> list[Any]:
    """Read the topic until the last event of every pair the cloud holds equals the cloud's state."""
    want = {pair: state for pair, state in _cloud_state(cloud, users).items()}
    topic = settings.topic(CLOUD_CHANGES.name)
    return read_all(
        bootstrap,
        topic,
        until=lambda rs: all(_last_states(rs).get(pair) == state for pair, state in want.items()),
        timeout=120,
    )


def _assert_repeats_lose_nothing(records: list[Any]) -> None:
    """A page read again after a crash gives each item its seq within the page but the
    resource's state *now* (the feed's rule), so a repeated event id carries the same state,
    or a newer one that a later feed position of the same pair carries too: a consumer that
    ignores the repeat (its feed_seq seen) loses nothing."""
    events = [e for _, e in _events(records)]
    first: dict[str, CloudAccessChanged] = {}
    for index, event in enumerate(events):
        seen = first.setdefault(event.event_id, event)
        if seen is event or seen.entries == event.entries:
            continue
        later = [
            e.entries
            for e in events[index:]
            if (e.cloud_user_id, e.cloud_company_id) == (event.cloud_user_id, event.cloud_company_id)
            and e.feed_seq > event.feed_seq
        ]
        assert event.entries in later, f"{event.event_id}: a repeat whose state no later event carries"


def _saved_cursor(url: str) -> tuple[str, int] | None:
    rows = store_query(url, "SELECT cursor, seq FROM capture_checkpoint WHERE name = ?", ("cloud-capture",))
    return (str(rows[0][0]), int(rows[0][1])) if rows and rows[0][0] else None


@contextmanager
def _capture_started(
    settings: Settings, bootstrap: str, cloud: CloudReader, users: int
) -> Iterator[tuple[dict[str, Any], int, list[str], str]]:
    """The store and topics made, ``users`` linked users and a company in the cloud, and
    cloud-capture running (its first full read done): its processes, metrics port, the cloud
    ids of the users and of the company."""
    url = settings.resolved_store_url()
    ensure_catalogue(settings, bootstrap)
    open_store_migrations(url)  # `vudsync store init`
    ids, company = _linked(cloud, users)
    port = free_port()
    with components(settings, bootstrap, "cloud-capture", metrics_ports={"cloud-capture": port}) as procs:
        wait_for(procs, lambda: _saved_cursor(url) is not None, 60, "first full read")
        yield procs, port, ids, company


def test_an_administrators_grant_and_revoke_reach_the_users_partition_and_unlinked_is_counted(
    pipeline_settings: Settings, kafka_bootstrap: str, cloud: CloudReader, portal: Portal
) -> None:
    settings = pipeline_settings
    url = settings.resolved_store_url()
    writer = business_directory(settings, kafka_bootstrap, ROLES)
    writer.upsert_companies([{"id": "c1", "name": "Fjord AS", "organisation_number": "923609016"}])
    for n in (1, 2, 3):
        writer.upsert_user(
            id=f"u{n}", username=f"u{n}", email=f"u{n}@fjord.no", first_name="K", last_name="H"
        )
    users, company = _linked(cloud, 3)
    stranger = portal.user("admin.own@fjord.no")
    port = free_port()
    with components(
        settings,
        kafka_bootstrap,
        "producer",
        "cloud-capture",
        metrics_ports={"cloud-capture": port},
        debug=True,  # every log line there is, for the secret scan below
    ) as procs:
        wait_for(procs, lambda: _saved_cursor(url) is not None, 60, "first full read")
        portal.grant((users[0], company), "Lønn")
        portal.grant((users[1], company), "Regnskap")
        portal.grant((users[2], company), "Innkjøp")
        portal.grant((stranger, company), "Lønn")
        _converged(settings, kafka_bootstrap, cloud, users)
        # revoked after the grant was published (the feed gives each resource's current
        # state: a grant and revoke read in one page are one item, the access as it is now)
        portal.revoke((users[0], company), "Lønn")
        _converged(settings, kafka_bootstrap, cloud, users)
        wait_for(
            procs,
            lambda: (gauge(port, "vudsync_writeback_unlinked_total") or 0) >= 1,
            30,
            "the unlinked user counted",
        )
        exposed = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        exposed += httpx.get(f"http://127.0.0.1:{port}/status", timeout=10).text
    records = read_all(kafka_bootstrap, settings.topic(CLOUD_CHANGES.name))
    events = _events(records)
    assert events and all(r.key.decode() == e.user_id for r, e in events)
    assert {e.user_id for _, e in events} == {"u1", "u2", "u3"}
    assert stranger not in {e.cloud_user_id for _, e in events}  # counted, never published
    u1 = [e for _, e in events if e.user_id == "u1"]
    assert [[x.name for x in e.entries] for e in u1][-2:] == [["Lønn"], []]  # granted, then revoked
    assert all(e.company_id == "c1" and not e.full_read for e in u1)
    # the same partition as the user's directory events (the producer's client and partitioner)
    directory = read_all(
        kafka_bootstrap,
        settings.topic(DIRECTORY_TOPICS[EntityType.USER].name),
        until=lambda rs: {r.key.decode() for r in rs} >= {"u1", "u2", "u3"},
    )
    where = {r.key.decode(): r.partition for r in directory}
    assert {r.key.decode(): r.partition for r in records} == {u: where[u] for u in ("u1", "u2", "u3")}
    # no secret of the run in cloud-capture's debug log, its metrics or status, or the topic
    exposed += (settings.home / "logs" / "cloud-capture.log").read_text(errors="replace")
    exposed += b"".join(r.value for r in records).decode()
    assert "&cursor=c1." in exposed and "DEBUG" in exposed  # the debug log, polling
    for name in SECRET_FIELDS:
        secret = getattr(settings, name)
        assert secret is None or secret.get_secret_value() not in exposed, name
    assert PORTAL[1] not in exposed
    writer.close()


def test_killed_mid_stream_it_loses_nothing_and_a_repeat_hides_no_state(
    store_settings: Settings, kafka_bootstrap: str, cloud: CloudReader, portal: Portal
) -> None:
    settings = store_settings
    url = settings.resolved_store_url()
    ensure_catalogue(settings, kafka_bootstrap)
    open_store_migrations(url)  # `vudsync store init`
    users, company = _linked(cloud, 40)
    port = free_port()
    # small pages and a slow cloud (20-40 ms a request): some 80 pages, each published and its
    # cursor saved, still to read when the kill comes after the first 10 events
    small = {"VUDSYNC_WRITEBACK_PAGE_LIMIT": "2"}
    with components(
        settings, kafka_bootstrap, "cloud-capture", metrics_ports={"cloud-capture": port}, **small
    ) as procs:
        wait_for(procs, lambda: _saved_cursor(url) is not None, 60, "first full read")
        first = _saved_cursor(url)
        portal.many([("PUT", (u, company), role) for role in ROLES for u in users])
        head = int(cloud.client.get("/v1/changes").json()["cursor"].split(".")[2])
        cloud.faults(latency_ms=[20, 40])
        wait_for(
            procs, lambda: (gauge(port, "vudsync_writeback_published_total") or 0) >= 10, 60, "publishing"
        )
        procs["cloud-capture"].kill()
        at_kill = _saved_cursor(url)
        assert at_kill is not None and at_kill[1] < head, "killed after the feed was read: not mid-stream"
        # the administrator goes on while it is down, and while it catches up
        portal.many([("DELETE", (u, company), "Lønn") for u in users[::2]])
    with components(settings, kafka_bootstrap, "cloud-capture", **small) as procs:
        portal.many([("PUT", (u, company), "Lønn") for u in users[::4]])
        cloud.faults()
        # the whole feed read: the cursor is saved only after the broker acknowledged its
        # page's events, so from then on the topic holds every event of the feed. (Reading
        # only until the states converge may stop before a repeat's later event: the check of
        # repeats below needs the whole topic.)
        end = int(cloud.client.get("/v1/changes").json()["cursor"].split(".")[2])
        wait_for(procs, lambda: (_saved_cursor(url) or ("", -1))[1] >= end, 120, "the feed's head read")
    records = read_all(kafka_bootstrap, settings.topic(CLOUD_CHANGES.name), timeout=120)
    assert _last_states(records) == _cloud_state(cloud, users)
    saved = _saved_cursor(url)
    # persisted, and advanced past the kill
    assert first is not None and saved is not None and saved[1] > at_kill[1] > first[1]
    _assert_repeats_lose_nothing(records)
    assert len(_last_states(records)) == len(users)


def test_an_expired_cursor_reads_in_full_and_converges(
    pipeline_settings: Settings, kafka_bootstrap: str, cloud: CloudReader, portal: Portal
) -> None:
    settings = pipeline_settings
    url = settings.resolved_store_url()
    with _capture_started(settings, kafka_bootstrap, cloud, 5) as (procs, port, users, company):
        portal.many([("PUT", (u, company), "Regnskap") for u in users])
        _converged(settings, kafka_bootstrap, cloud, users)
        before = _saved_cursor(url)
        httpx.post(
            f"{cloud.server.url}/admin/changes/expire", headers=cloud.server.admin_headers()
        ).raise_for_status()
        portal.many([("PUT", (u, company), "Lønn") for u in users[:3]])
        wait_for(
            procs,
            lambda: (gauge(port, "vudsync_writeback_full_reads_total") or 0) >= 2,
            60,
            "a full read after the 410",
        )
        records = _converged(settings, kafka_bootstrap, cloud, users)
        # SIGTERM: the page in flight is finished, the cursor saved, the process exits cleanly
        assert procs["cloud-capture"].stop() == 0
        after = _saved_cursor(url)
    assert before is not None and after is not None and after[0] != before[0]
    full = [e for _, e in _events(records) if e.full_read]
    assert {e.user_id for e in full} >= {f"u{n}" for n in range(1, 6)}
    assert all(before[1] <= e.feed_seq <= after[1] for e in full)
    log = (settings.home / "logs").glob("cloud-capture*.log")
    text = "".join(p.read_text() for p in log)
    assert "410 cursor_expired" in text
    # journalled, with the reason and the position the feed could not go on from
    journal = vudsync_cli(
        settings, kafka_bootstrap, "journal", "--json", "--kind", "journal.writeback_full_read"
    )
    assert journal.returncode == 0, journal.stdout + journal.stderr
    entries = [json.loads(line) for line in journal.stdout.splitlines() if line.strip()]
    reasons = [(e["outcome"], e["details"]["reason"]) for e in entries]
    assert reasons == [("applied", "first_start"), ("applied", "cursor_expired")]
    # the cursor saved when the feed expired it: the one read before (or one saved after it, the
    # save follows the acks), short of the new one
    assert entries[0]["details"]["expired_position"] is None
    assert before[1] <= entries[1]["details"]["expired_position"] < entries[1]["details"]["position"]
    assert entries[1]["details"]["position"] <= after[1]  # followed from there
    assert "410 cursor_expired" in entries[-1]["reason"]


@pytest.mark.timeout(900)
def test_access_removed_whole_while_the_cursor_was_expired_is_revoked_on_premise_after_a_restart(
    store_settings: Settings, kafka_bootstrap: str, cloud: CloudReader, portal: Portal
) -> None:
    """A full read lists what exists: the removal of a whole access while the cursor was expired
    reaches the store through the read's end-of-read marker — after a restart of cloud-capture,
    which then remembers nothing it published. Only the cloud's own entry is revoked on premise;
    the directory's (removed in the cloud with it) stays: a marker never revokes those."""
    settings = store_settings
    url = settings.resolved_store_url()
    lonn = ("c1", "business", "role", "Lønn", "cloud")
    with _directory(settings, kafka_bootstrap) as writer:  # u1 holds Regnskap (the directory's) in c1
        assert vudsync_cli(settings, kafka_bootstrap, "connect").returncode == 0
        names = ("producer", "planner", "sink", "directory-sink")
        with components(settings, kafka_bootstrap, *names) as procs:
            wait_for(procs, lambda: cloud.origins("u1") == {"Regnskap": "directory"}, 180, "u1 in the cloud")
            user, company = cloud.user("u1"), cloud.company("c1")
            assert user is not None and company is not None
            pair = (str(user["id"]), str(company["id"]))
            with components(settings, kafka_bootstrap, "cloud-capture") as first:
                running = {**procs, **first}
                wait_for(running, lambda: _saved_cursor(url) is not None, 60, "first full read")
                portal.grant(pair, "Lønn")
                wait_for(
                    running, lambda: lonn in writer.access_rows("u1"), 120, "the cloud's grant in the store"
                )
                assert first["cloud-capture"].stop() == 0
            # while cloud-capture is down, the feed's cursor expires and an administrator removes
            # u1's whole access in c1: no feed item will ever say so
            httpx.post(
                f"{cloud.server.url}/admin/changes/expire", headers=cloud.server.admin_headers()
            ).raise_for_status()
            before = writer.change_log_position()
            portal.remove_access(pair)
            removed_at = int(cloud.audit()[-1]["seq"])
            with components(settings, kafka_bootstrap, "cloud-capture") as second:
                running = {**procs, **second}
                wait_for(
                    running,
                    lambda: lonn not in writer.access_rows("u1"),
                    120,
                    "the removal read in full reaching the store",
                )
                assert writer.change_log_origins("u1", before) == ["cloud"]  # one store write
                assert writer.access_rows("u1") == [("c1", "business", "role", "Regnskap", "directory")]
                # a barrier: the integration's next write comes after any echo of the removal
                writer.update_user("u1", first_name="Kari Anne")
                wait_for(
                    running, lambda: (cloud.user("u1") or {}).get("first_name") == "Kari Anne", 120, "barrier"
                )
                writes = _integration_writes(cloud, removed_at)
                assert [w["resource_type"] for w in writes] == ["user"], writes  # no cloud write


def _waits_for_company(bootstrap: str, settings: Settings, user: str, company: str) -> Any:
    """The planner's journal entry for the cloud change of (user, company) that came before it
    knew the company's link (read from ``vud.cloud.results``)."""

    def entries(records: list[Any]) -> list[OperationResult]:
        found = []
        for r in records:
            if r.key is None or r.key.decode() != user or b"writeback_" not in r.value:
                continue
            result = OperationResult.model_validate_json(r.value)
            if result.kind.startswith("journal.writeback_") and result.operation_id.endswith(f":{company}"):
                found.append(result)
        return found

    records = read_all(
        bootstrap, settings.topic(RESULTS.name), until=lambda rs: bool(entries(rs)), timeout=120
    )
    return entries(records)[0]


@pytest.mark.timeout(900)
def test_a_company_linked_late_has_its_access_read_again_and_written_to_the_store_after_a_restart_too(
    pipeline_settings: Settings, kafka_bootstrap: str, cloud: CloudReader, portal: Portal
) -> None:
    """An administrator grants access in a company of their own; the integration links it later
    (a company created on premise, matched to it). Its access is read again and published at the
    link's position — and reaches the planner *before* the planner knows the link (the company
    does not exist on premise yet): the planner holds it until the company's fact arrives, then
    the directory sink writes it to the store, once, with no write back to the cloud. The same
    after a restart of cloud-capture, for a company linked while it was down."""
    settings = pipeline_settings
    url = settings.resolved_store_url()
    with _directory(settings, kafka_bootstrap) as writer:  # u1 holds Regnskap (the directory's) in c1
        assert vudsync_cli(settings, kafka_bootstrap, "connect").returncode == 0
        names = ("producer", "planner", "sink", "directory-sink")
        with components(settings, kafka_bootstrap, *names) as procs:
            wait_for(procs, lambda: cloud.origins("u1") == {"Regnskap": "directory"}, 180, "u1 in the cloud")
            u1 = str((cloud.user("u1") or {})["id"])
            port = free_port()
            with components(
                settings, kafka_bootstrap, "cloud-capture", metrics_ports={"cloud-capture": port}
            ) as first:
                running = {**procs, **first}
                wait_for(running, lambda: _saved_cursor(url) is not None, 60, "first full read")
                nord = portal.company("Nord AS")
                portal.grant((u1, nord), "Lønn")
                wait_for(
                    running,
                    lambda: (gauge(port, "vudsync_writeback_unlinked_total") or 0) >= 1,
                    60,
                    "the unlinked company's access counted",
                )
                cloud.client.post(f"/v1/companies/{nord}/link", json={"external_id": "c9"}).raise_for_status()
                link_seq = int(cloud.audit()[-1]["seq"])
                records = read_all(
                    kafka_bootstrap,
                    settings.topic(CLOUD_CHANGES.name),
                    until=lambda rs: any(e.cloud_company_id == nord for _, e in _events(rs)),
                    timeout=120,
                )
                events = [e for _, e in _events(records) if e.cloud_company_id == nord]
                assert [(e.user_id, e.company_id, [x.name for x in e.entries]) for e in events] == [
                    ("u1", "c9", ["Lønn"])
                ]
                assert all(e.feed_seq == link_seq and not e.full_read for e in events)
                # the planner has it before it knows c9: it waits (a rejection would lose it)
                held = _waits_for_company(kafka_bootstrap, settings, "u1", "c9")
                assert held.kind == "journal.writeback_waiting_for_company", held.kind
                before = writer.change_log_position()
                _company_on_premise(cloud, writer, nord, "c9")
                lonn = ("c9", "business", "role", "Lønn", "cloud")
                wait_for(running, lambda: lonn in writer.access_rows("u1"), 120, "the grant in the store")
                assert writer.change_log_origins("u1", before) == ["cloud"]  # one store write
                _no_cloud_write(running, cloud, writer, "Kari Anne")

                # an administrator's grant in another company of their own, counted unlinked; then
                # cloud-capture stops, and the company is linked while it is down
                sor = portal.company("Sør AS")
                portal.grant((u1, sor), "Innkjøp")
                granted = int(cloud.audit()[-1]["seq"])
                wait_for(
                    running,
                    lambda: (_saved_cursor(url) or ("", 0))[1] >= granted,
                    60,
                    "the cursor past the unlinked grant",
                )
                assert first["cloud-capture"].stop() == 0
            cloud.client.post(f"/v1/companies/{sor}/link", json={"external_id": "c8"}).raise_for_status()
            before = writer.change_log_position()
            _company_on_premise(cloud, writer, sor, "c8")
            with components(settings, kafka_bootstrap, "cloud-capture") as second:
                running = {**procs, **second}
                innkjop = ("c8", "business", "role", "Innkjøp", "cloud")
                wait_for(
                    running, lambda: innkjop in writer.access_rows("u1"), 120, "the grant after the restart"
                )
                assert writer.change_log_origins("u1", before) == ["cloud"]
                _no_cloud_write(running, cloud, writer, "Kari Marie")


def _company_on_premise(cloud: CloudReader, writer: Any, cloud_id: str, company: str) -> None:
    """The on-premise company the cloud company ``cloud_id`` was linked to (same organisation
    number): the pipeline upserts it, and the planner learns the link from its result."""
    body = cloud.client.get(f"/v1/companies/{cloud_id}").json()
    writer.upsert_companies(
        [{"id": company, "name": body["name"], "organisation_number": body["organisation_number"]}]
    )


def _no_cloud_write(running: dict[str, Any], cloud: CloudReader, writer: Any, name: str) -> None:
    """The writeback's store write caused no write in the cloud: the integration's next write,
    after a barrier on the same user (its event comes after the writeback's), is the barrier's."""
    after = int(cloud.audit()[-1]["seq"])
    writer.update_user("u1", first_name=name)
    wait_for(running, lambda: (cloud.user("u1") or {}).get("first_name") == name, 120, "barrier")
    writes = _integration_writes(cloud, after)
    assert [w["resource_type"] for w in writes] == ["user"], writes
