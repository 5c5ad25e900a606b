"""The components' ACLs: least privilege, and the operator's documentation lists them all."""

from __future__ import annotations

from pathlib import Path

from devtools.broker.acls import Grant, component_acls, kafka_acls_commands, principal
from kernel.settings import Settings
from vudsync.topics import COMPONENT_TOPICS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def test_docs_list_every_acl_command() -> None:
    docs = DOCS.read_text()
    for command in kafka_acls_commands(Settings(home=Path("/nonexistent"))):
        assert command in docs, command


def test_each_component_may_describe_every_topic_its_start_checks() -> None:
    """A component's start describes the topics it uses (``vudsync.topics.COMPONENT_TOPICS``)
    before it asks to create any: on the secured cluster that is allowed for each, so a start
    where they exist leaves no denial in the brokers' authorizer log."""
    s = Settings(topic_prefix="p-")
    grants = component_acls(s)

    def may_describe(who: str, topic: str) -> bool:
        return any(
            g.principal == who
            and g.resource == "TOPIC"
            and (g.name == topic if g.pattern == "LITERAL" else topic.startswith(g.name))
            and {"DESCRIBE", "READ", "WRITE", "ALL"} & set(g.operations)
            for g in grants
        )

    for component, specs in COMPONENT_TOPICS.items():
        for spec in specs:
            assert may_describe(principal(component), s.topic(spec.name)), (component, spec.name)


def test_the_producer_writes_directory_topics_only() -> None:
    grants = [g for g in component_acls(Settings(topic_prefix="p-")) if g.principal == principal("producer")]
    assert {(g.resource, g.pattern, g.operations) for g in grants} == {
        ("TOPIC", "LITERAL", ("WRITE", "DESCRIBE"))
    }
    assert {g.name for g in grants} == {
        "p-vud.directory.companies",
        "p-vud.directory.users",
        "p-vud.directory.roles",
        "p-vud.directory.layout-groups",
        "p-vud.directory.modules",
        "p-vud.directory.application-instances",
        "p-vud.directory.dlq",
    }


def test_only_the_planner_writes_directory_operations_and_only_the_directory_sink_reads_them() -> None:
    """vud.directory.operations shares the directory topics' prefix: a producer (or anyone else)
    able to write it could make the directory sink write the store."""
    grants = component_acls(Settings(topic_prefix="p-"))

    def covers(name: str, g: Grant) -> bool:
        return g.name == name if g.pattern == "LITERAL" else name.startswith(g.name)

    name = "p-vud.directory.operations"
    writers = {
        g.principal
        for g in grants
        if g.resource == "TOPIC" and covers(name, g) and {"WRITE", "ALL"} & set(g.operations)
    }
    readers = {
        g.principal
        for g in grants
        if g.resource == "TOPIC" and covers(name, g) and {"READ", "ALL"} & set(g.operations)
    }
    assert writers == {principal("planner"), principal("ops")}
    assert principal("directory-sink") in readers and principal("producer") not in readers | writers


def test_the_sink_reads_operations_and_writes_results_and_its_dlq() -> None:
    grants = [g for g in component_acls(Settings()) if g.principal == principal("sink")]
    writes = {g.name for g in grants if "WRITE" in g.operations}
    reads = {g.name for g in grants if g.resource == "TOPIC" and "READ" in g.operations}
    assert writes == {"vud.cloud.results", "vud.cloud.operations.dlq"}
    assert reads == {"vud.cloud.operations"}


def test_cloud_capture_writes_the_cloud_changes_and_its_full_reads_to_the_journal_only() -> None:
    grants = [
        g for g in component_acls(Settings(topic_prefix="p-")) if g.principal == principal("cloud-capture")
    ]
    assert [(g.resource, g.name, g.pattern, g.operations) for g in grants] == [
        ("TOPIC", "p-vud.cloud.changes", "LITERAL", ("WRITE", "DESCRIBE")),
        ("TOPIC", "p-vud.cloud.results", "LITERAL", ("WRITE", "DESCRIBE")),
    ]


def test_the_planner_in_staging_mode_writes_and_creates_the_staged_topic_only() -> None:
    grants = [g for g in component_acls(Settings(topic_prefix="p-")) if g.principal == principal("planner")]
    staged = [g for g in grants if g.name == "p-vud.cloud.operations.staged"]
    assert [(g.pattern, g.operations) for g in staged] == [("LITERAL", ("WRITE", "DESCRIBE", "CREATE"))]
