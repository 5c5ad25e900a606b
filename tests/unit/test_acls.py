"""The components' ACLs: least privilege, and the operator's documentation lists them all."""

from __future__ import annotations

from pathlib import Path

from devtools.broker.acls import component_acls, kafka_acls_commands, principal
from kernel.settings import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def test_docs_list_every_acl_command() -> None:
    docs = DOCS.read_text()
    for command in kafka_acls_commands(Settings(home=Path("/nonexistent"))):
        assert command in docs, command


def test_the_producer_writes_directory_topics_only() -> None:
    grants = [g for g in component_acls(Settings(topic_prefix="p-")) if g.principal == principal("producer")]
    assert [(g.resource, g.name, g.pattern, g.operations) for g in grants] == [
        ("TOPIC", "p-vud.directory.", "PREFIXED", ("WRITE", "DESCRIBE"))
    ]


def test_the_sink_reads_operations_and_writes_results_and_its_dlq() -> None:
    grants = [g for g in component_acls(Settings()) if g.principal == principal("sink")]
    writes = {g.name for g in grants if "WRITE" in g.operations}
    reads = {g.name for g in grants if g.resource == "TOPIC" and "READ" in g.operations}
    assert writes == {"vud.cloud.results", "vud.cloud.operations.dlq"}
    assert reads == {"vud.cloud.operations"}


def test_cloud_capture_writes_the_cloud_changes_only() -> None:
    grants = [
        g for g in component_acls(Settings(topic_prefix="p-")) if g.principal == principal("cloud-capture")
    ]
    assert [(g.resource, g.name, g.pattern, g.operations) for g in grants] == [
        ("TOPIC", "p-vud.cloud.changes", "LITERAL", ("WRITE", "DESCRIBE"))
    ]


def test_the_planner_in_staging_mode_writes_and_creates_the_staged_topic_only() -> None:
    grants = [g for g in component_acls(Settings(topic_prefix="p-")) if g.principal == principal("planner")]
    staged = [g for g in grants if g.name == "p-vud.cloud.operations.staged"]
    assert [(g.pattern, g.operations) for g in staged] == [("LITERAL", ("WRITE", "DESCRIBE", "CREATE"))]
