"""The write-ahead intent of a company link (issue 15 item 6): a sink that stops after the
cloud applied a link, but before its ledger and result said so, must still report the link —
else the planner raises no review and activates services for a company nobody checked.

The attack: the first attempt links cloud company ``cc-7`` (same organisation number) and
dies; the retry's look-up finds ``cc-7`` by external id, which alone says "nothing to do".
Pure decision, the httpx adapter on a stateful mock cloud (both paths), and a real worker
whose ledger fails after the link (the crash), then a second worker on the same ledger.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from schemas.codec import decode_model
from schemas.operations import UpsertCompany
from schemas.results import OperationResult, ResultOutcome
from schemas.topics import RESULTS
from sinks.http_cloud import HttpCloudDirectory
from sinks.ports import Applied
from sinks.worker import SinkFatal
from sinks.writes import Steps, create_steps, link_intent, reads_intent, steps_after_lookup
from tests.factories import company_upsert, user_upsert
from tests.fakes import FakeLedger
from tests.unit.test_sink_worker import Sink

T = datetime(2026, 12, 5, 12, tzinfo=UTC)


def company(op_id: str = "op-co", version: int = 3) -> UpsertCompany:
    return company_upsert("c1", version, operation_id=op_id, source_committed_at=T, planned_at=T)


CLOUD_COMPANY = {"id": "cc-7", "external_id": None, "name": "Fjord Regnskap AS", "country": "NO",
                 "status": "active", "organisation_number": "923609016"}  # fmt: skip
LINKED = Applied("linked", "cc-7", True, {"review": ["name"]})


# -- the pure decision ------------------------------------------------------------------


def test_a_link_has_an_intent_to_record_before_it_is_sent_and_nothing_else_has() -> None:
    link = steps_after_lookup(company(), None, CLOUD_COMPANY)
    assert isinstance(link, Steps) and link.effect == "linked"
    assert link_intent(company(), link) == {
        "cloud_id": "cc-7",
        "effect": "linked",
        "details": {"review": ["name"]},
    }
    assert link_intent(company(), create_steps(company())) is None  # a company vudsync creates: no review
    update = steps_after_lookup(company(), {**CLOUD_COMPANY, "external_id": "c1"}, None)
    assert isinstance(update, Steps) and link_intent(company(), update) is None
    user_link = steps_after_lookup(user_upsert(cloud_id=None), None, {"id": "cu-1", "email": "x@y.no"})
    assert isinstance(user_link, Steps) and user_link.effect.startswith("linked")
    assert link_intent(user_upsert(), user_link) is None  # a user's link raises no review
    assert reads_intent(company(), CLOUD_COMPANY) and not reads_intent(company(), None)
    assert not reads_intent(user_upsert(), {"id": "cu-1"})


def test_a_company_found_by_its_external_id_is_linked_when_this_operation_was_linking_it() -> None:
    linked_now = {**CLOUD_COMPANY, "external_id": "c1"}  # what the retry's look-up finds
    intent = link_intent(company(), steps_after_lookup(company(), None, CLOUD_COMPANY))  # type: ignore[arg-type]
    assert steps_after_lookup(company(), linked_now, None, intent=intent) == LINKED
    # without an intent: an update of the differing fields, as before (no review: the gap)
    plain = steps_after_lookup(company(), linked_now, None)
    assert isinstance(plain, Steps) and plain.effect == "updated"
    same = {**linked_now, "name": "Fjord AS"}
    assert steps_after_lookup(company(), same, None) == Applied("noop", "cc-7", False)
    assert steps_after_lookup(company(), same, None, intent={**intent, "details": {}}) == Applied(  # type: ignore[dict-item]
        "linked", "cc-7", True, {}
    )
    # an intent for another cloud company (linked elsewhere meanwhile): not this one's link
    elsewhere = {**intent, "cloud_id": "cc-other"}  # type: ignore[dict-item]
    assert steps_after_lookup(company(), same, None, intent=elsewhere) == Applied("noop", "cc-7", False)


# -- the adapter on a stateful mock cloud -------------------------------------------------


class Cloud:
    """Companies by id, look-ups by external id / organisation number, links, batches; the
    order of events (with :class:`Intents`' announcements) in ``events``."""

    def __init__(self, events: list[str]) -> None:
        self.companies = {"cc-7": dict(CLOUD_COMPANY)}
        self.events = events

    def answer(self, method: str, path: str, query: str, body: Any) -> tuple[int, Any]:
        if method == "GET" and path == "/v1/companies":
            ((param, (value,)),) = parse_qs(query).items()
            return 200, {"items": [c for c in self.companies.values() if c.get(param) == value]}
        if method == "POST" and path.endswith("/link"):
            self.events.append(f"link {path.split('/')[3]}")
            self.companies[path.split("/")[3]]["external_id"] = body["external_id"]
            return 200, self.companies[path.split("/")[3]]
        if method == "PATCH":
            self.events.append(f"update {path.split('/')[3]}")
            return 200, {**self.companies[path.split("/")[3]], **body}
        return 404, {"error": "not_found"}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
        if request.url.path == "/v1/batch":
            answers = []
            for item in json.loads(request.content)["requests"]:
                path, _, query = item["path"].partition("?")
                status, body = self.answer(item["method"], path, query, item.get("body"))
                answers.append({"status": status, "body": body, "headers": {}})
            return httpx.Response(200, json={"responses": answers})
        body = json.loads(request.content) if request.content else None
        status, answer = self.answer(request.method, request.url.path, request.url.query.decode(), body)
        return httpx.Response(status, json=answer)


class Intents:
    """The ``Intents`` port in a dict, writing its announcements into the cloud's event order."""

    def __init__(self, events: list[str]) -> None:
        self.recorded: dict[str, dict[str, Any]] = {}
        self.events = events

    async def announce(self, intents: Any) -> None:
        self.events.extend(f"intent {oid} {i['cloud_id']}" for oid, i in intents)
        self.recorded.update(intents)

    async def recall(self, operation_ids: Any) -> dict[str, dict[str, Any]]:
        return {oid: self.recorded[oid] for oid in operation_ids if oid in self.recorded}


async def _apply(cloud: HttpCloudDirectory, op: UpsertCompany, batched: bool, intents: Any) -> Any:
    if batched:  # beside another company's operation, as the worker batches them
        other = company("op-other").model_copy(update={"entity_id": "c2", "organisation_number": "1"})
        return (await cloud.apply_batch([op, other], intents))[0]
    return await cloud.apply(op, intents)


@pytest.mark.parametrize("batched", [False, True], ids=["alone", "batched"])
async def test_the_retry_of_an_interrupted_link_reports_the_link_with_its_review(batched: bool) -> None:
    events: list[str] = []
    mock = Cloud(events)
    intents = Intents(events)
    cloud = HttpCloudDirectory("http://cloud", "c", "s", transport=httpx.MockTransport(mock))
    first = await _apply(cloud, company(), batched, intents)
    assert first == Applied("linked", "cc-7", False, {"review": ["name"]})
    assert events[:2] == ["intent op-co cc-7", "link cc-7"]  # durable before the write is sent
    # the worker died here: no ledger entry, no result; the same operation again
    events.clear()
    again = await _apply(cloud, company(), batched, intents)
    assert again == LINKED and events == []  # no write: the link was applied, the review is raised
    # without the intent (the gap this closes): the look-up alone says "update", no review
    plain = await _apply(cloud, company(), batched, None)
    assert isinstance(plain, Applied) and plain.effect == "updated"
    await cloud.aclose()


# -- a real worker: the crash between the link and the ledger --------------------------


async def test_a_worker_that_dies_after_the_link_leaves_an_intent_its_successor_reports() -> None:
    mock = Cloud([])
    http = HttpCloudDirectory("http://cloud", "c", "s", transport=httpx.MockTransport(mock))
    ledger = FakeLedger()
    ledger.fail_with = RuntimeError("killed")  # the ledger write after the link never happens
    crashed = Sink(http, ledger)  # type: ignore[arg-type]
    crashed.feed(0, company())
    with pytest.raises(SinkFatal):
        await crashed.run_until(lambda: False)
    assert mock.companies["cc-7"]["external_id"] == "c1"  # the cloud applied the link
    assert crashed.publisher.on(RESULTS.name) == [] and crashed.consumer.committed == {}
    assert ledger.entries == {} and set(ledger.intent_entries) == {"op-co"}

    ledger.fail_with = None  # a new worker on the same ledger; the record is re-delivered
    successor = Sink(http, ledger)  # type: ignore[arg-type]
    successor.feed(0, company())
    await successor.run_until(successor.all_committed)
    (value,) = [v for _, v, _ in successor.publisher.on(RESULTS.name)]
    result = decode_model(OperationResult, value)
    assert (result.outcome, result.effect, result.cloud_id) == (
        ResultOutcome.ALREADY_APPLIED,
        "linked",
        "cc-7",
    )
    assert result.details == {"review": ["name"]}  # the planner raises review:c1 from this
    assert ledger.entries["op-co"]["effect"] == "linked"
    assert ledger.intent_entries == {}  # the intent ended with the outcome
    await http.aclose()
