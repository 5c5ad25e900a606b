"""The facts ``vudsync connect`` publishes from a cloud readout (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.results import FactKind
from vudsync.commands.connect import CloudReadout, cloud_facts, connected_fact, registry_fact

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
FP = "hmac-sha256:" + "ab" * 32


def test_a_readout_gives_one_fact_per_registry_entry_catalogue_entry_company_and_user() -> None:
    readout = CloudReadout(
        customer="Acme",
        client_id="admin",
        registry={"payroll": {"uri": "https://payroll.example", "license_fingerprint": FP}, "hrm": None},
        catalogue=["payroll:roles:clerk"],
        companies={"c2": "cloud-c2", "c1": "cloud-c1"},
        users={"u1": "cloud-u1"},
    )
    facts = list(cloud_facts(readout, AT))
    assert [(f.key, f.present, f.cloud_id, f.uri, f.license_fingerprint) for f in facts] == [
        ("registry:payroll", True, None, "https://payroll.example", FP),
        ("registry:hrm", False, None, None, None),
        ("catalogue:payroll:roles:clerk", True, None, None, None),
        ("company:c1", True, "cloud-c1", None, None),  # companies and users in key order
        ("company:c2", True, "cloud-c2", None, None),
        ("user:u1", True, "cloud-u1", None, None),
    ]
    assert {(f.source, f.observed_at) for f in facts} == {("connect", AT)}


def test_registry_fact_is_what_the_readout_would_say_and_connected_fact_comes_from_connect() -> None:
    assert registry_fact("hrm", None, AT) == next(
        iter(cloud_facts(CloudReadout(customer="Acme", client_id="admin", registry={"hrm": None}), AT))
    )
    connected = connected_fact(AT)
    assert (connected.kind, connected.present, connected.source, connected.observed_at) == (
        FactKind.CONNECT,
        True,
        "connect",
        AT,
    )
