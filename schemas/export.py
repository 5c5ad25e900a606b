"""JSON Schema and AsyncAPI export of the contract, checked in under ``schemas/jsonschema/``.

``export_documents()`` renders, from the pydantic models and the topic catalogue:

* ``events/<Model>.json`` — one JSON Schema (draft 2020-12) per directory event, plus
  ``events/DirectoryEvent.json`` (the union, discriminated by ``entity``);
* ``operations/<Model>.json`` — one per cloud operation, plus ``operations/CloudOperation.json``
  (the union, discriminated by ``kind``);
* ``results/OperationResult.json``;
* ``asyncapi.json`` — an AsyncAPI 3.0 document of the topic catalogue: every topic with its
  key, cleanup policy, messages and the dead-letter headers.

Pure: no file is read or written here except by :func:`write_documents` and
:func:`stale_documents`. The output is deterministic, so a test can compare it with the
checked-in files (``vudsync schemas export`` rewrites them).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from schemas import topics
from schemas.cloud_changes import CloudAccessChanged, CloudAccessRead
from schemas.deadletter import HEADER_DESCRIPTIONS, HEADER_REASON, HEADER_STAGE
from schemas.directory_operations import DirectoryOperation
from schemas.events import DirectoryEvent
from schemas.operations import CloudOperation
from schemas.results import OperationResult

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID_BASE = "https://vudsync.example/schemas/"
DEFAULT_OUT = Path(__file__).resolve().parent / "jsonschema"


def _members(union: Any) -> list[type[BaseModel]]:
    """The models of an ``Annotated[A | B | …, Field(discriminator=…)]`` union."""
    inner = get_args(union)[0]
    return list(get_args(inner))


EVENT_MODELS: list[type[BaseModel]] = _members(DirectoryEvent)
OPERATION_MODELS: list[type[BaseModel]] = _members(CloudOperation)
RESULT_MODELS: list[type[BaseModel]] = [OperationResult]
DIRECTORY_OPERATION_MODELS: list[type[BaseModel]] = _members(DirectoryOperation)


def _dump(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _model_schema(model: type[BaseModel], folder: str) -> dict[str, Any]:
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"{SCHEMA_ID_BASE}{folder}/{model.__name__}.json",
        **model.model_json_schema(),
    }


def _union_schema(name: str, union: Any, folder: str) -> dict[str, Any]:
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"{SCHEMA_ID_BASE}{folder}/{name}.json",
        "title": name,
        **TypeAdapter(union).json_schema(),
    }


# -- AsyncAPI ----------------------------------------------------------------------------

_CAPTURE_REJECTION = {
    "type": "object",
    "title": "CaptureRejection",
    "description": "A directory row that failed validation, with the reason; never carries secrets.",
    "properties": {
        "entity": {"type": "string"},
        "entity_id": {"type": "string"},
        "version": {"type": "integer", "minimum": 0},
        "reason": {"type": "string"},
        "source_row": {"type": "string", "description": "<entity>:<id>"},
        "store": {"type": "string", "enum": ["sqlite", "postgresql"]},
        "db": {"type": "string"},
    },
    "required": ["entity", "entity_id", "version", "reason", "source_row", "store", "db"],
}


def _topic_bindings(spec: topics.TopicSpec) -> dict[str, Any]:
    config: dict[str, Any] = {"cleanup.policy": ["compact"] if spec.compacted else ["delete"]}
    if not spec.compacted:
        config["retention.ms"] = spec.retention_ms
    return {"kafka": {"topic": spec.name, "topicConfiguration": config, "bindingVersion": "0.5.0"}}


def _message(name: str, payload: dict[str, Any], key: str, summary: str, dlq: bool = False) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": name,
        "title": name,
        "summary": summary,
        "contentType": "application/json",
        "payload": payload,
        "bindings": {"kafka": {"key": {"type": "string", "description": key}, "bindingVersion": "0.5.0"}},
    }
    if dlq:
        message["headers"] = {
            "type": "object",
            "properties": {h: {"type": "string", "description": d} for h, d in HEADER_DESCRIPTIONS.items()},
            "required": [HEADER_REASON, HEADER_STAGE],
        }
    return message


def asyncapi_document(version: str = "0.1.0") -> dict[str, Any]:
    """The topic catalogue as an AsyncAPI 3.0 document (payload schemas under components)."""
    models: list[type[BaseModel]] = [
        *EVENT_MODELS,
        *OPERATION_MODELS,
        *RESULT_MODELS,
        CloudAccessChanged,
        CloudAccessRead,
        *DIRECTORY_OPERATION_MODELS,
    ]
    _, definitions = models_json_schema(
        [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
    )
    schemas: dict[str, Any] = dict(sorted(definitions.get("$defs", {}).items()))
    schemas["CaptureRejection"] = _CAPTURE_REJECTION

    def ref(model: type[BaseModel]) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}

    def channel(spec: topics.TopicSpec, names: list[str], sender: str) -> None:
        channels[spec.name] = {
            "address": spec.name,
            "title": spec.name,
            "description": spec.description,
            "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in names},
            "bindings": _topic_bindings(spec),
        }
        operations[f"{sender}.send.{spec.name}"] = {
            "action": "send",
            "title": f"{sender} → {spec.name}",
            "channel": {"$ref": f"#/channels/{spec.name}"},
            "messages": [{"$ref": f"#/channels/{spec.name}/messages/{n}"} for n in names],
        }

    def commands(spec: topics.TopicSpec, models: Sequence[type[BaseModel]], sender: str) -> None:
        """A topic of operations: one message per model, titled by its docstring's first line."""
        for model in models:
            title = (model.__doc__ or model.__name__).strip().splitlines()[0]
            messages[model.__name__] = _message(model.__name__, ref(model), spec.key, title)
        channel(spec, [m.__name__ for m in models], sender)

    messages["Tombstone"] = _message(
        "Tombstone",
        {"type": "null"},
        "entity id",
        "null value after a delete event, so that compaction can drop the key",
    )
    for entity, spec in topics.DIRECTORY_TOPICS.items():
        model = next(m for m in EVENT_MODELS if m.model_fields["entity"].default == entity)
        messages[model.__name__] = _message(
            model.__name__, ref(model), spec.key, f"{entity.value} state (op r/c/u/d), version = source seq"
        )
        channel(spec, [model.__name__, "Tombstone"], "producer")
    messages["CaptureRejection"] = _message(
        "CaptureRejection", {"$ref": "#/components/schemas/CaptureRejection"}, topics.DIRECTORY_DLQ.key,
        "invalid directory row", dlq=True,
    )  # fmt: skip
    channel(topics.DIRECTORY_DLQ, ["CaptureRejection"], "producer")
    commands(topics.OPERATIONS, OPERATION_MODELS, "planner")
    operation_names = [m.__name__ for m in OPERATION_MODELS]
    for model in OPERATION_MODELS:
        messages[f"Failed{model.__name__}"] = _message(
            f"Failed{model.__name__}",
            ref(model),
            topics.OPERATIONS_DLQ.key,
            f"dead-lettered {model.__name__}",
            dlq=True,
        )
    channel(topics.OPERATIONS_DLQ, [f"Failed{n}" for n in operation_names], "sink")
    messages["OperationResult"] = _message(
        "OperationResult", ref(OperationResult), topics.RESULTS.key, "what became of an operation"
    )
    channel(topics.RESULTS, ["OperationResult"], "sink")
    messages["CloudAccessChanged"] = _message(
        "CloudAccessChanged",
        ref(CloudAccessChanged),
        topics.CLOUD_CHANGES.key,
        "the cloud's access of a user in a company",
    )
    messages["CloudAccessRead"] = _message(
        "CloudAccessRead",
        ref(CloudAccessRead),
        topics.CLOUD_CHANGES.key,
        "a full read's end-of-read marker of a user: the companies it found the user's access in",
    )
    channel(topics.CLOUD_CHANGES, ["CloudAccessChanged", "CloudAccessRead"], "cloud-capture")
    commands(topics.DIRECTORY_OPERATIONS, DIRECTORY_OPERATION_MODELS, "planner")
    # topics without a message model of their own here (e.g. the planner's): described by
    # their catalogue entry, payload any JSON object (or a tombstone on compacted topics)
    for spec in (*topics.ALL_TOPICS, *topics.PLANNER_TOPICS):
        if spec.name in channels:
            continue
        name = "".join(part.title() for part in spec.name.replace("-", ".").split(".")[1:]) + "Record"
        payload: dict[str, Any] = {"type": ["object", "null"] if spec.compacted else "object"}
        messages[name] = _message(name, payload, spec.key, spec.description)
        sender = spec.name.split(".")[1] if spec.name.count(".") >= 2 else "vudsync"
        channel(spec, [name], sender)
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "vudsync",
            "version": version,
            "description": (
                "Visma User Directory → cloud over Apache Kafka: the topic catalogue. Directory topics "
                "are compacted with days of history and keyed by entity id; a delete event is "
                "followed by a tombstone."
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


# -- files ---------------------------------------------------------------------------------


def export_documents() -> dict[str, str]:
    """Relative path → file content of every exported document."""
    out: dict[str, str] = {}
    for folder, models in (
        ("events", EVENT_MODELS),
        ("operations", OPERATION_MODELS),
        ("results", RESULT_MODELS),
        ("directory_operations", DIRECTORY_OPERATION_MODELS),
    ):
        for model in models:
            out[f"{folder}/{model.__name__}.json"] = _dump(_model_schema(model, folder))
    out["events/DirectoryEvent.json"] = _dump(_union_schema("DirectoryEvent", DirectoryEvent, "events"))
    out["operations/CloudOperation.json"] = _dump(
        _union_schema("CloudOperation", CloudOperation, "operations")
    )
    out["directory_operations/DirectoryOperation.json"] = _dump(
        _union_schema("DirectoryOperation", DirectoryOperation, "directory_operations")
    )
    out["asyncapi.json"] = _dump(asyncapi_document())
    return dict(sorted(out.items()))


def write_documents(out_dir: Path = DEFAULT_OUT) -> list[str]:
    """Write every document; delete exported files no model produces any more. Returns the
    relative paths written or removed."""
    documents = export_documents()
    changed: list[str] = []
    for relative, content in documents.items():
        path = out_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != content:
            path.write_text(content)
            changed.append(relative)
    if out_dir.exists():
        for path in sorted(out_dir.rglob("*.json")):
            relative = path.relative_to(out_dir).as_posix()
            if relative not in documents:
                path.unlink()
                changed.append(relative)
    return changed


def stale_documents(out_dir: Path = DEFAULT_OUT) -> list[str]:
    """Relative paths whose checked-in content differs from the models (missing, changed or extra)."""
    documents = export_documents()
    stale = [
        r
        for r, content in documents.items()
        if not (out_dir / r).exists() or (out_dir / r).read_text() != content
    ]
    if out_dir.exists():
        stale += sorted(
            p.relative_to(out_dir).as_posix()
            for p in out_dir.rglob("*.json")
            if p.relative_to(out_dir).as_posix() not in documents
        )
    return stale
