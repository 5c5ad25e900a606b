"""The checked-in JSON Schemas (schemas/jsonschema/) match the models, and describe real messages."""

from __future__ import annotations

import json

import jsonschema_rs
import pytest

from schemas.export import DEFAULT_OUT, EVENT_MODELS, OPERATION_MODELS, export_documents, stale_documents
from schemas.topics import ALL_TOPICS
from tests.factories import user_event


def test_checked_in_schemas_match_the_models() -> None:
    stale = stale_documents(DEFAULT_OUT)
    assert not stale, (
        f"schemas/jsonschema is out of date with the models ({', '.join(stale)}): "
        "run `vudsync schemas export` and commit the result"
    )


def test_one_schema_per_event_operation_and_result_model() -> None:
    documents = export_documents()
    for model in EVENT_MODELS:
        assert f"events/{model.__name__}.json" in documents
    for model in OPERATION_MODELS:
        assert f"operations/{model.__name__}.json" in documents
    assert "results/OperationResult.json" in documents
    assert len(EVENT_MODELS) == 6 and len(OPERATION_MODELS) >= 8


def test_asyncapi_lists_every_catalogue_topic() -> None:
    document = json.loads(export_documents()["asyncapi.json"])
    assert document["asyncapi"].startswith("3.")
    assert {c["address"] for c in document["channels"].values()} >= {t.name for t in ALL_TOPICS}
    for channel in document["channels"].values():
        for message in channel["messages"].values():
            name = message["$ref"].rsplit("/", 1)[-1]
            assert name in document["components"]["messages"]


@pytest.mark.parametrize("name", ["events/UserChanged.json", "events/DirectoryEvent.json"])
def test_a_real_event_validates_against_its_schema(name: str) -> None:
    schema = json.loads((DEFAULT_OUT / name).read_text())
    event = json.loads(user_event(7).model_dump_json())
    validator = jsonschema_rs.validator_for(schema)
    assert validator.is_valid(event), list(validator.iter_errors(event))[:3]
    event["state"]["email"] = 42
    assert not validator.is_valid(event)


def test_what_waits_in_a_topic_survives_a_week_long_outage() -> None:
    """Issue 17: work never silently expires. Topics that hold work (operations, dead letters,
    results, control) keep more than a week; the others are compacted (nothing expires)."""
    from schemas.topics import ALL_TOPICS, DAY_MS

    for spec in ALL_TOPICS:
        assert spec.compacted or spec.retention_ms > 7 * DAY_MS, spec.name
