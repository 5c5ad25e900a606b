"""Event JSON for users and companies without building pydantic models (the fast path).

Contract: :meth:`EventEncoder.encode` returns what :func:`producers.mapping.record_to_event`
followed by ``event.model_dump_json()`` returns, byte for byte — the same JSON for a valid
entity, the same rejections (reasons included) for an invalid one. The pydantic models stay the
contract; this module only avoids building ~6 nested models per user when the row is plainly
valid (that was half of a snapshot's CPU, docs/benchmarks.md "Change capture").

How it stays exact:

* **Conservative checks.** The fast path accepts a row only when every field has exactly the
  type and bounds the models require (e-mail checked with the models' own ``Email`` type, via a
  ``TypeAdapter``). On any doubt — an unusual type, a missing column, an unknown company, an
  invalid e-mail — it hands the row to the pydantic path, which decides and words the reason.
  So a row can be rejected only by pydantic, and the fast path is never more lenient.
* **The same serialiser output.** Keys in the models' field order, every default written, the
  datetimes formatted by pydantic itself; orjson escapes strings as pydantic does (tested over
  every code point). ``tests/unit/test_capture_encoding.py`` compares both paths on seeded and
  hostile rows.
* **A tripwire on the models.** :data:`MIRRORED` pins a digest of each mirrored event model
  (JSON Schema + validator functions). If a model changes, the fast path for it switches off
  (with a warning) and the unit test fails until this module is reviewed and the digest updated.

Pure: no I/O; the clock and the fingerprint key come in as arguments.
"""

from __future__ import annotations

import hashlib
import json
import logging
import typing
from datetime import UTC, datetime
from functools import cache
from typing import Any

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from producers.mapping import RowRejected, SourceInfo, record_to_event, row_ref
from producers.model import EntityRecord
from schemas.directory import ApplicationType, Email, EntityType
from schemas.events import EVENT_BY_ENTITY, Op, event_id_for

log = logging.getLogger(__name__)

# Digest of each event model the fast path mirrors (see model_digest). Update only after
# checking the fast path below against the changed model.
MIRRORED: dict[EntityType, str] = {
    EntityType.USER: "0e6e9f01e8a1b914",
    EntityType.COMPANY: "22d93c8e84f7dac7",
}

_APPLICATIONS = frozenset(a.value for a in ApplicationType)
_KIND_FIELD = {"role": "roles", "layout_group": "layout_groups", "module": "modules"}
_COMPANY_COLUMNS = frozenset({"id", "name", "organisation_number", "country", "status"})
_COMPANY_STATUS = frozenset({"active", "inactive"})
_STORES = frozenset({"sqlite", "postgresql"})
_ID_MAX = 200  # schemas.directory.EntityId
# enum → JSON text without the (slow) ``.value`` property on every event
_ENTITY_TEXT = {e: e.value for e in EntityType}
_OP_TEXT = {o: o.value for o in Op}


def _models_in(model: type[BaseModel]) -> list[type[BaseModel]]:
    """``model`` and every model nested in its fields' annotations, depth first."""
    seen: list[type[BaseModel]] = []

    def visit(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation in seen:
                return
            seen.append(annotation)
            for field in annotation.model_fields.values():
                visit(field.annotation)
        for arg in typing.get_args(annotation):
            visit(arg)

    visit(model)
    return seen


def model_digest(model: type[BaseModel]) -> str:
    """A digest of what decides validity and JSON output of ``model``: its JSON Schema (types,
    bounds, patterns, defaults, field order, extra fields) plus the validator functions, which
    the JSON Schema does not show."""
    validators: list[str] = []
    for m in _models_in(model):
        for name, field in m.model_fields.items():
            for item in field.metadata:
                func = getattr(item, "func", None)
                if func is not None:
                    validators.append(f"{m.__name__}.{name}:{type(item).__name__}:{func.__qualname__}")
        decorators = m.__pydantic_decorators__
        for kind in ("validators", "field_validators", "root_validators", "model_validators"):
            validators.extend(f"{m.__name__}:{kind}:{n}" for n in getattr(decorators, kind))
        for kind in ("field_serializers", "model_serializers", "computed_fields"):
            validators.extend(f"{m.__name__}:{kind}:{n}" for n in getattr(decorators, kind))
    text = json.dumps(model.model_json_schema(), sort_keys=True) + "\n" + "\n".join(validators)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@cache
def _fast_entities() -> frozenset[EntityType]:
    """The entity types whose model still matches what the fast path mirrors (computed once)."""
    ok: set[EntityType] = set()
    for entity, digest in MIRRORED.items():
        actual = model_digest(EVENT_BY_ENTITY[entity])
        if actual == digest:
            ok.add(entity)
        else:
            log.warning(
                "event model %s changed (digest %s, fast path mirrors %s): encoding its events "
                "through pydantic only until producers/encoding.py is reviewed",
                EVENT_BY_ENTITY[entity].__name__,
                actual,
                digest,
            )
    return frozenset(ok)


@cache
def _email_adapter() -> TypeAdapter[str]:
    return TypeAdapter(Email)


@cache
def _datetime_adapter() -> TypeAdapter[datetime]:
    return TypeAdapter(datetime)


def _is_id(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= _ID_MAX


class EventEncoder:
    """Encodes entity records as event JSON (bytes), through the fast path where it applies.

    One per capture; not thread-safe (it keeps the last formatted datetimes).
    """

    def __init__(self, source: SourceInfo, fingerprint_key: bytes, *, fast: bool = True) -> None:
        self.source = source
        self.fingerprint_key = fingerprint_key
        # the envelope's source is the same for every event: checked once here
        source_ok = source.store in _STORES and type(source.db) is str
        self._fast = _fast_entities() if fast and source_ok else frozenset()
        self._email = _email_adapter().validate_python
        self._format_dt = _datetime_adapter().dump_python
        self._last_now: tuple[datetime, str] | None = None
        self._last_committed: tuple[float, str] | None = None
        self.fast_encoded = 0  # counters for the benchmark's breakdown
        self.slow_encoded = 0

    # -- the reference path ------------------------------------------------------------------

    def _slow(
        self,
        record: EntityRecord,
        op: Op,
        version: int,
        seq: int,
        committed_at: float,
        now: datetime,
        snapshot: bool,
    ) -> tuple[bytes | None, list[RowRejected]]:
        self.slow_encoded += 1
        event, rejections = record_to_event(
            record,
            op=op,
            version=version,
            seq=seq,
            committed_at=committed_at,
            source=self.source,
            now=now,
            fingerprint_key=self.fingerprint_key,
            snapshot=snapshot,
        )
        if event is None:
            return None, rejections
        try:
            return event.model_dump_json().encode(), rejections
        except Exception as exc:  # a valid model that does not serialise: reject the row, go on
            rejection = RowRejected(
                record.entity,
                record.entity_id,
                f"{type(exc).__name__} while encoding the event",
                row_ref(record.entity, record.entity_id),
                version,
                type(exc).__name__,
            )
            return None, [*rejections, rejection]

    # -- the fast path -----------------------------------------------------------------------

    def encode(
        self,
        record: EntityRecord,
        *,
        op: Op,
        version: int,
        seq: int,
        committed_at: float,
        now: datetime,
        snapshot: bool = False,
    ) -> tuple[bytes | None, list[RowRejected]]:
        """``(event JSON or None, rejections)``, exactly as the pydantic path would give them."""
        entity = record.entity
        entity_id = record.entity_id
        if (
            entity in self._fast
            and type(entity_id) is str
            and entity_id
            and type(version) is int
            and version >= 0
            and type(seq) is int
            and seq >= 0
        ):
            try:
                state = self._user_state(record) if entity is EntityType.USER else _company_state(record.row)
            except Exception:  # an unusual row: the pydantic path decides (and rejects, if it must)
                state = None
            if state is not None:
                try:
                    value = orjson.dumps(
                        {
                            "event_id": event_id_for(entity, entity_id, version, op),
                            "entity_id": entity_id,
                            "version": version,
                            "op": _OP_TEXT[op],
                            "ts": self._now_text(now),
                            "source": {
                                "store": self.source.store,
                                "db": self.source.db,
                                "seq": seq,
                                "snapshot": snapshot,
                                "committed_at": self._committed_text(committed_at),
                            },
                            "repair": None,  # only verify's repairs carry one
                            "entity": _ENTITY_TEXT[entity],
                            "state": state,
                            **(
                                {"access_changed_at": self._entry_times(record.access_times)}
                                if entity is EntityType.USER
                                else {}
                            ),
                        }
                    )
                except Exception:  # any doubt: let pydantic decide and word it
                    pass
                else:
                    self.fast_encoded += 1
                    return value, []
        return self._slow(record, op, version, seq, committed_at, now, snapshot)

    def _now_text(self, now: datetime) -> str:
        last = self._last_now
        if last is not None and last[0] is now:
            return last[1]
        text = str(self._format_dt(now, mode="json"))
        self._last_now = (now, text)
        return text

    def _committed_text(self, committed_at: float) -> str:
        last = self._last_committed
        if last is not None and last[0] == committed_at:
            return last[1]
        text = str(self._format_dt(datetime.fromtimestamp(committed_at, UTC), mode="json"))
        self._last_committed = (committed_at, text)
        return text

    def _entry_times(self, times: tuple[tuple[str, float], ...]) -> dict[str, str]:
        """``access_changed_at`` as pydantic writes it (producers.mapping._entry_times)."""
        return {
            key: str(self._format_dt(datetime.fromtimestamp(at, UTC), mode="json"))
            for key, at in sorted(times)
        }

    def _user_state(self, record: EntityRecord) -> dict[str, Any] | None:
        """The ``UserState`` JSON fields, or None when pydantic must decide."""
        row = record.row
        try:
            user_id = row["id"]
            username = row["username"]
            email = row["email"]
            first_name = row["first_name"]
            last_name = row["last_name"]
            language = row["language"]
            active = bool(row["active"])  # as producers.mapping._state converts it
        except (KeyError, TypeError, ValueError):
            return None
        if not (
            _is_id(user_id)
            and type(username) is str
            and username
            and type(email) is str
            and type(first_name) is str
            and type(last_name) is str
            and type(language) is str
        ):
            return None
        try:
            self._email(email)
        except ValidationError:
            return None
        if record.cloud_access:  # rare (written back from the cloud): the pydantic path
            return None
        access = _access_json(record.access)
        if access is None:
            return None
        return {
            "id": user_id,
            "username": username,
            "email": email,
            "first_name": first_name,
            "last_name": last_name,
            "language": language,
            "active": active,
            "access": access,
        }


def _access_json(access: tuple[tuple[str, str, str, str], ...]) -> list[dict[str, Any]] | None:
    """The ``CompanyAccess`` list: sorted by company, application, then names within a kind;
    every kind written (empty lists included), in the model's field order. None when a row is
    unusual (unknown application or kind, a non-string value): the pydantic path reports it."""
    grants: list[dict[str, Any]] = []
    if not access:
        return grants
    company: Any = None
    application: Any = None
    services: dict[str, dict[str, list[str]]] = {}
    lists: dict[str, list[str]] = {}
    try:
        for company_id, app, kind, name in sorted(access):
            if company_id != company:
                if type(company_id) is not str or not 0 < len(company_id) <= _ID_MAX:
                    return None
                company, application = company_id, None
                services = {}
                grants.append({"company_id": company_id, "services": services, "cloud_origin": {}})
            if app != application:
                if type(app) is not str or app not in _APPLICATIONS:
                    return None
                application = app
                lists = {"roles": [], "layout_groups": [], "modules": []}
                services[app] = lists
            if type(name) is not str or type(kind) is not str:
                return None
            lists[_KIND_FIELD[kind]].append(name)
    except (TypeError, KeyError):  # incomparable values, an unknown kind
        return None
    return grants


def _company_state(row: dict[str, Any]) -> dict[str, Any] | None:
    """The ``CompanyState`` JSON fields, or None when pydantic must decide."""
    if row.keys() != _COMPANY_COLUMNS:
        return None
    company_id = row["id"]
    name = row["name"]
    number = row["organisation_number"]
    country = row["country"]
    status = row["status"]
    if not (
        _is_id(company_id)
        and type(name) is str
        and name
        and type(number) is str
        and number
        and type(country) is str
        and len(country) == 2
        and type(status) is str
        and status in _COMPANY_STATUS
    ):
        return None
    return {
        "id": company_id,
        "name": name,
        "organisation_number": number,
        "country": country,
        "status": status,
    }
