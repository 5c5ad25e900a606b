"""`vudsync instances`: the verdict per application, from the store's instance and the cloud's
registration (pure), the same function the planner uses."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.fingerprint import license_fingerprint
from schemas.results import FactKind, PlannerFact
from vudsync.commands.instances import assess

NOW = datetime(2026, 12, 5, tzinfo=UTC)


def _fp(key: str) -> str:
    return license_fingerprint(key, b"test-key")


def _seen(app: str, uri: str, fp: str) -> PlannerFact:
    return PlannerFact(
        kind=FactKind.INSTANCE,
        subject=app,
        uri=uri,
        license_fingerprint=fp,
        version=7,
        observed_at=NOW,
        source="connect",
    )


def _cloud(uri: str, fp: str) -> dict[str, object]:
    return {"uri": uri, "license_fingerprint": fp}


def test_each_application_gets_the_planners_verdict_with_the_differing_field_named() -> None:
    rows = {
        r.application: r
        for r in assess(
            {
                "business": _seen("business", "https://vb", _fp("fp-new")),
                "reporting": _seen("reporting", "https://rep-new", _fp("fp-r")),
                "document_center": _seen("document_center", "https://dc", _fp("fp-d")),
            },
            {
                "business": _cloud("https://vb", _fp("fp-old")),
                "reporting": _cloud("https://rep", _fp("fp-r")),
                "document_center": None,
            },
        )
    }
    assert (rows["business"].verdict, rows["business"].differing, rows["business"].blocked) == (
        "mismatch",
        ("license key",),
        True,
    )
    assert rows["business"].says() == "mismatch: license key differ"
    assert rows["reporting"].differing == ("uri",) and rows["reporting"].cloud_uri == "https://rep"
    assert (rows["document_center"].verdict, rows["document_center"].blocked) == ("register", False)


def test_no_instance_on_premise_is_never_held() -> None:
    rows = assess(
        {}, {"business": _cloud("https://vb", _fp("fp")), "reporting": None, "document_center": None}
    )
    assert {(r.application, r.verdict, r.blocked, r.on_premise_uri) for r in rows} == {
        ("business", "ok", False, None),
        ("reporting", "ok", False, None),
        ("document_center", "ok", False, None),
    }
