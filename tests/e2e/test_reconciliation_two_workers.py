"""Reconciliation at scale, on real parts: SQLite → producer → Kafka → two Faust planner workers
→ Kafka → sink → the cloud API. One planner worker is SIGKILLed mid-stream; the other takes its
partitions over (tables recovered from their changelog) and the cloud ends up equal to the
directory, with no operation applied twice.

Mid-stream by construction: the sink starts only after the kill, so every assignment is still
parked — in the killed worker's table too — when it dies; only the survivor, with the tables it
recovered, can release them as the results come in. Changes made while the worker is dead touch
every partition.

The data exercises every rule on the way: a company whose organisation number is written
differently on premise (``"923 609 016"``) than in the cloud (``"923609016"``, created there
before connecting, under another name) is linked, not duplicated, with a review journal entry,
and its assignments wait until the operator accepts it (`vudsync review accept`);
a user whose e-mail differs only in case from an existing cloud user is matched, not created;
access waits (parked) until its user, company and roles exist in the cloud; one application
instance is registered, the other matches the cloud's registry.
"""

from __future__ import annotations

import collections
import json
import logging
import random
import socket
from contextlib import ExitStack
from typing import Any

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from devtools.processes import wait_until
from devtools.seed.data import organisation_number
from kernel.scrape import total
from kernel.settings import Settings
from processors.app import app_id
from schemas.codec import decode_operation
from schemas.directory import EntityType
from schemas.results import OperationResult, ResultOutcome
from schemas.topics import DIRECTORY_TOPICS, OPERATIONS, OPERATIONS_DLQ, PLANNER_CONTROL, RESULTS
from tests.fixtures.cloud import CloudReader, fingerprint
from tests.kafka_read import read_all
from tests.pipeline import alive_or_fail, components, directory_writer, metrics_of, vudsync_cli
from vudsync.topics import ensure_catalogue

USERS = 24
COMPANIES = ["c000", "c001", "c002", "c003"]
# deletions settle for 0.5 s, not the default 5 s: the gate is on, the test waits less
PLANNER_ENV = {"VUDSYNC_PLANNER_SESSION_TIMEOUT": "10", "VUDSYNC_PLANNER_DELETES_SETTLE": "0.5"}


class Directory:
    """The on-premise directory, written as VUD does, and what the cloud must end up with."""

    def __init__(self, settings: Settings) -> None:
        self.writer = directory_writer(settings)
        self.users: dict[str, dict[str, Any]] = {}
        self.access: dict[str, dict[str, dict[str, set[str]]]] = {}  # user -> company -> app -> roles
        self.companies: dict[str, dict[str, Any]] = {}

    def company(self, cid: str, name: str, org: str) -> None:
        self.companies[cid] = {"id": cid, "name": name, "organisation_number": org}
        self.writer.upsert_companies([self.companies[cid]])

    def user(self, uid: str, **fields: Any) -> None:
        self.users[uid] = {**self.users.get(uid, {"id": uid, "active": 1}), **fields}
        self.writer.upsert_users([self.users[uid]])
        self.access.setdefault(uid, {})

    def grant(self, uid: str, cid: str, app: str, role: str) -> None:
        self.writer.grant([(uid, cid, app, "role", role)])
        self.access[uid].setdefault(cid, {}).setdefault(app, set()).add(role)

    def revoke(self, uid: str, cid: str) -> None:
        self.writer.revoke(uid, cid)
        self.access[uid].pop(cid, None)

    def delete(self, uid: str) -> None:
        self.writer.delete_user(uid)
        self.users[uid] = {**self.users[uid], "deleted": True}
        self.access[uid] = {}


def _expected_access(d: Directory, uid: str, cloud: CloudReader) -> dict[str, dict[str, list[str]]] | None:
    out: dict[str, dict[str, list[str]]] = {}
    for cid, apps in d.access[uid].items():
        company = cloud.company(cid)
        if company is None:
            return None  # not there yet
        out[company["id"]] = {app: sorted(roles) for app, roles in apps.items()}
    return out


def _cloud_access(cloud: CloudReader, cloud_user_id: str) -> dict[str, dict[str, list[str]]]:
    return {
        a["company_id"]: {app: sorted(kinds.get("roles", [])) for app, kinds in a["services"].items()}
        for a in cloud.access(cloud_user_id)
    }


def mismatches(d: Directory, cloud: CloudReader) -> list[str]:
    """What still differs between the directory and the cloud (empty: converged)."""
    out: list[str] = []
    for cid, c in d.companies.items():
        company = cloud.company(cid)
        if company is None or company["organisation_number"] != c["organisation_number"].replace(" ", ""):
            out.append(f"company {cid}")
    for uid, u in d.users.items():
        user = cloud.user(uid)
        if user is None:
            out.append(f"user {uid} missing")
            continue
        if u.get("deleted"):
            if user["active"] or cloud.access(user["id"]):
                out.append(f"user {uid} not deactivated")
            continue
        if (user["email"], user["first_name"], user["active"]) != (
            u["email"],
            u["first_name"],
            bool(u["active"]),
        ):
            out.append(f"user {uid} fields")
        elif _cloud_access(cloud, user["id"]) != _expected_access(d, uid, cloud):
            out.append(f"user {uid} access")
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stable_members(settings: Settings, bootstrap: str) -> int:
    logging.getLogger("kafka.admin").setLevel(logging.ERROR)  # faust's member metadata: not decodable
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        group = admin.describe_groups([app_id(settings)])[app_id(settings)]
    except KafkaError:  # no coordinator for the group yet
        return 0
    finally:
        admin.close()
    return len(group.get("members") or ()) if group.get("group_state") == "Stable" else 0


def _diagnosis(settings: Settings, bootstrap: str, ids: set[str]) -> str:
    """What the results and dead-letter topics say (for a failure message)."""
    results = [
        OperationResult.model_validate_json(r.value)
        for r in read_all(bootstrap, settings.topic(RESULTS.name), timeout=30)
    ]
    outcomes = collections.Counter((r.kind, r.outcome.value) for r in results)
    waiting = [
        (r.entity_id, r.details.get("waiting_for"))
        for r in results
        if r.outcome in (ResultOutcome.PARKED, ResultOutcome.BLOCKED)
    ]
    dlq = read_all(bootstrap, settings.topic(OPERATIONS_DLQ.name), timeout=10)
    control = [
        f"p{r.partition}@{r.offset}:{r.value.decode()[:160]}"
        for r in read_all(bootstrap, settings.topic(PLANNER_CONTROL.name), timeout=10)
    ]
    changelog = {
        json.loads(r.key): (r.partition, r.offset, r.value[:300] if r.value else None)
        for r in read_all(bootstrap, f"{app_id(settings)}-state-changelog", timeout=30)
    }
    state = {
        k: v for k, v in changelog.items() if "deletion" in k or k.startswith("g|") or k.split(":")[-1] in ids
    }
    operations = [
        (r.partition, r.offset, o.kind, o.entity_id, o.source_version)
        for r in read_all(bootstrap, settings.topic(OPERATIONS.name), timeout=30)
        if (o := decode_operation(r.value)).entity_id in ids
    ]
    # what tells most first: a CI log keeps the start and the end of a long failure message
    return (
        f"planner lag (committed/end): {_planner_lag(settings, bootstrap)}\n"
        f"outcomes: {dict(outcomes)}\noperations dead-lettered: {len(dlq)}\n"
        f"control: {control}\nwaiting: {waiting[:20]}\n"
        f"state: {str(state)[:4000]}\noperations: {str(operations)[:2000]}"
    )


def _planner_lag(settings: Settings, bootstrap: str) -> dict[str, str]:
    """The planner group's committed offset and the end offset of every input partition that
    has records left (for a failure message: a partition stuck behind its end is a stall)."""
    from kafka import KafkaConsumer

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        committed = admin.list_group_offsets({app_id(settings): None}).get(app_id(settings), {})
        ends = consumer.end_offsets(list(committed))
        return {
            f"{tp.topic}[{tp.partition}]": f"{meta.offset}/{ends.get(tp)}"
            for tp, meta in sorted(committed.items())
            if ends.get(tp) != meta.offset
        }
    except KafkaError as exc:
        return {"error": str(exc)}
    finally:
        consumer.close()
        admin.close()


def _one_user_per_partition(settings: Settings, bootstrap: str) -> list[str]:
    """A user (not u000) on each partition of the users topic, as the producer partitioned them
    (its partitioner is its own business: librdkafka's is not the Java client's)."""
    records = read_all(bootstrap, settings.topic(DIRECTORY_TOPICS[EntityType.USER].name), timeout=60)
    chosen: dict[int, str] = {}
    for r in sorted(records, key=lambda r: r.key):
        if r.key != b"u000":
            chosen.setdefault(r.partition, r.key.decode())
    assert len(chosen) == settings.topic_partitions
    return [chosen[p] for p in range(settings.topic_partitions)]


def test_two_planner_workers_one_killed_mid_stream_converge_without_applying_anything_twice(
    pipeline_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    settings = pipeline_settings
    ensure_catalogue(settings, kafka_bootstrap)
    api = cloud.client
    # in the cloud before connecting: the same company (organisation number without spaces,
    # another name), a user with the same e-mail in other case, the Business instance
    pre_company = cloud.company_before_vudsync()
    pre_user = api.post(
        "/v1/users",
        json={"email": "Kari.Nordmann@Fjord.NO", "username": "kari", "first_name": "Kari", "last_name": "N"},
    ).json()
    cloud.register_instance("business", "https://vb.fjord.local", fingerprint(settings, "VB-1"))

    d = Directory(settings)
    d.writer.add_application_instance("business", "https://vb.fjord.local", "VB-1")
    d.writer.add_application_instance("reporting", "https://rep.fjord.local", "REP-1")
    d.writer.upsert_catalogue(
        "roles",
        [("business", "Regnskap", "Regnskap"), ("business", "Lønn", "Lønn"), ("reporting", "Leser", "Leser")],
    )
    d.company("c000", "Fjord AS", "923 609 016")
    for i, cid in enumerate(COMPANIES[1:], start=1):
        d.company(cid, f"Fjord {i} AS", organisation_number(random.Random(i)))
    for i in range(USERS):
        uid = f"u{i:03d}"
        email = "kari.nordmann@fjord.no" if i == 0 else f"bruker{i}@fjord.no"
        d.user(uid, username=f"bruker{i}", email=email, first_name="Åse", last_name="Brækken")
        d.grant(uid, COMPANIES[i % 4], "business", "Regnskap")
        if i % 3 == 0:
            d.grant(uid, COMPANIES[(i + 1) % 4], "reporting", "Leser")

    ports = {"planner:worker-1": _free_port(), "planner:worker-2": _free_port()}
    ops_topic = settings.topic(OPERATIONS.name)
    with (
        components(
            settings,
            kafka_bootstrap,
            "planner:worker-1",
            "planner:worker-2",
            metrics_ports=ports,
            **PLANNER_ENV,
        ) as procs,
        ExitStack() as later,
    ):
        # both workers share the partitions before anything flows; then connect (facts and the
        # snapshot) and the producer — but no sink yet: every assignment stays parked, in the
        # tables of both workers, waiting for results only the sink will bring
        wait_until(
            lambda: alive_or_fail(procs) and _stable_members(settings, kafka_bootstrap) == 2,
            180,
            what="two planner workers",
        )
        connected = vudsync_cli(settings, kafka_bootstrap, "connect")
        assert connected.returncode == 0, connected.stderr
        procs.update(later.enter_context(components(settings, kafka_bootstrap, "producer")))
        first_wave = USERS + len(COMPANIES) + 3  # upserts of users, companies and roles
        read_all(
            kafka_bootstrap,
            ops_topic,
            timeout=180,
            until=lambda rs: alive_or_fail(procs) and len(rs) >= first_wave,
        )
        wait_until(
            lambda: total(metrics_of(ports["planner:worker-1"]), "vudsync_planner_messages_total") > 0,
            60,
            what="worker-1 planning",
        )
        assert mismatches(d, cloud), "the kill must land mid-stream"
        procs["planner:worker-1"].kill()
        survivors = {n: p for n, p in procs.items() if n != "planner:worker-1"}
        # the directory keeps changing while the worker is dead and its partitions move: one
        # change on every partition, so that worker-2 must plan on those worker-1 owned
        on = _one_user_per_partition(settings, kafka_bootstrap)
        d.user(on[0], first_name="Åse Marie")
        d.revoke(on[1], COMPANIES[int(on[1][1:]) % 4])
        d.grant(on[1], COMPANIES[(int(on[1][1:]) + 2) % 4], "business", "Lønn")
        d.delete(on[2])
        d.user(on[0], email=d.users[on[0]]["email"].capitalize(), active=0)
        survivors.update(later.enter_context(components(settings, kafka_bootstrap, "sink")))

        # c000 was linked to the company that existed: its assignments wait for an operator's review
        def waits_for_review() -> bool:
            alive_or_fail(survivors)
            listed = vudsync_cli(settings, kafka_bootstrap, "review", "list", "--json")
            waiting = json.loads(listed.stdout)["companies"] if listed.stdout else []
            return listed.returncode == 1 and [c["company_id"] for c in waiting] == ["c000"]

        wait_until(waits_for_review, 180, interval=2, what="c000 waiting for review")
        accepted = vudsync_cli(settings, kafka_bootstrap, "review", "accept", "c000", "--yes")
        assert accepted.returncode == 0, accepted.stderr
        try:
            wait_until(
                lambda: alive_or_fail(survivors) and not mismatches(d, cloud),
                240,
                what="the cloud equal to the directory",
            )
        except TimeoutError as exc:
            raise AssertionError(
                f"{exc}; still different: {mismatches(d, cloud)}\n"
                + _diagnosis(settings, kafka_bootstrap, {m.split()[1] for m in mismatches(d, cloud)})
                + "".join(f"\n--- {n}\n{p.tail(60)}" for n, p in survivors.items())
            ) from None

    # linked by organisation number and by e-mail: nothing created twice
    assert cloud.company("c000")["id"] == pre_company["id"]
    assert cloud.user("u000")["id"] == pre_user["id"]
    companies = cloud.client.get("/v1/companies", params={"limit": 1000}).json()["items"]
    assert len(companies) == len(COMPANIES)
    users = cloud.client.get("/v1/users", params={"limit": 1000}).json()["items"]
    assert len(users) == USERS
    # one effect per idempotency key, one creation per resource
    assert cloud.applied_twice() == []
    registry = {i["service"] for i in cloud.client.get("/v1/application-instances").json()["items"]}
    assert registry == {"business", "reporting"}, "the instance the cloud lacked was registered"

    # the journal asks to review the linked company before activating services
    results = read_all(
        kafka_bootstrap,
        settings.topic(RESULTS.name),
        timeout=60,
        until=lambda rs: any(b"journal.company_review" in r.value for r in rs),
    )
    review = next(
        OperationResult.model_validate_json(r.value) for r in results if b"journal.company_review" in r.value
    )
    assert review.outcome is ResultOutcome.REVIEW and review.entity_id == "c000"
    assert "name" in review.details["message"]
    d.writer.close()
