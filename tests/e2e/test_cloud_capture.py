"""cloud-capture on real parts (issue 16): the Kafka broker, the reference cloud API over HTTP,
the directory store (SQLite and PostgreSQL) and ``vudsync run cloud-capture`` as a process.

An administrator (a second OAuth client, as the portal) grants and revokes roles; what
reaches ``vud.cloud.changes`` must be the cloud's state keyed by the on-premise user id, on the
partition of that user's directory events; unlinked users counted, never published; a SIGKILL
mid-stream loses nothing (duplicates only as identical events); an expired cursor (410) reads
in full and converges."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from devtools.broker.configure import free_port
from kernel.settings import SECRET_FIELDS, Settings
from producers.service import open_store_migrations
from schemas.cloud_changes import CloudAccessChanged
from schemas.directory import EntityType
from schemas.topics import CLOUD_CHANGES, DIRECTORY_TOPICS
from tests.capture_check import store_query
from tests.fixtures.cloud import PORTAL, CloudReader, Pair, Portal
from tests.kafka_read import read_all
from tests.pipeline import business_directory, components, gauge, wait_for
from vudsync.topics import ensure_catalogue

pytestmark = pytest.mark.e2e

ROLES = ("Regnskap", "Lønn", "Innkjøp", "Attestasjon")
KIND = {"roles": "role", "layout_groups": "layout_group", "modules": "module"}

State = frozenset[tuple[str, str, str, str]]  # (application, kind, name, origin)


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
    return [(r, CloudAccessChanged.model_validate_json(r.value)) for r in records]


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


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_killed_mid_stream_it_loses_nothing_and_a_repeat_hides_no_state(
    request: pytest.FixtureRequest,
    store: str,
    pipeline_settings: Settings,
    kafka_bootstrap: str,
    cloud: CloudReader,
    portal: Portal,
) -> None:
    settings = pipeline_settings
    if store == "postgresql":
        settings = settings.model_copy(update={"store_url": request.getfixturevalue("postgres_url")})
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
        records = _converged(settings, kafka_bootstrap, cloud, users)
    saved = _saved_cursor(url)
    # persisted, and advanced past the kill (converged may come before the head is read: each
    # item carries its resource's state now)
    assert first is not None and saved is not None and saved[1] > at_kill[1] > first[1]
    _assert_repeats_lose_nothing(records)
    assert len(_last_states(records)) == len(users)


def test_an_expired_cursor_reads_in_full_and_converges(
    pipeline_settings: Settings, kafka_bootstrap: str, cloud: CloudReader, portal: Portal
) -> None:
    settings = pipeline_settings
    url = settings.resolved_store_url()
    ensure_catalogue(settings, kafka_bootstrap)
    open_store_migrations(url)  # `vudsync store init`
    users, company = _linked(cloud, 5)
    port = free_port()
    with components(
        settings, kafka_bootstrap, "cloud-capture", metrics_ports={"cloud-capture": port}
    ) as procs:
        wait_for(procs, lambda: _saved_cursor(url) is not None, 60, "first full read")
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
