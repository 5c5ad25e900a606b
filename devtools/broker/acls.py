"""The principals of a secured cluster and the ACLs each needs: least privilege per component.

One table (:func:`component_acls`) feeds both the local secured cluster (created through the
Admin API when it starts) and the operator's documentation (:func:`kafka_acls_commands` prints
the same grants as ``kafka-acls`` commands; docs/operations.md shows them).

Topic names take the installation's prefix; the grants use prefixed patterns where a family
of topics belongs to one writer (``<planner group>-`` are Faust's changelog and internal
topics). The producer's topics are named one by one: ``vud.directory.operations`` (the
writeback's, written by the planner) shares their prefix, and the producer may not write it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kernel.settings import Settings
from processors.app import app_id
from schemas.topics import (
    CLOUD_CHANGES,
    DIRECTORY_DLQ,
    DIRECTORY_OPERATIONS,
    DIRECTORY_TOPICS,
    OPERATIONS,
    OPERATIONS_DLQ,
    OPERATIONS_STAGED,
    PLANNER_CONTROL,
    PLANNER_FACTS,
    RESULTS,
)
from sinks.directory_service import directory_sink_group
from sinks.service import sink_group

Resource = Literal["TOPIC", "GROUP", "CLUSTER"]
Pattern = Literal["LITERAL", "PREFIXED"]

#: one SCRAM user per component, and one for the operator's commands
COMPONENTS: tuple[str, ...] = ("producer", "planner", "sink", "cloud-capture", "directory-sink", "ops")


def principal(component: str) -> str:
    """The SCRAM user name of a component (``vudsync-sink`` …)."""
    return f"vudsync-{component}"


@dataclass(frozen=True)
class Grant:
    """Allow ``principal`` the ``operations`` on one resource pattern."""

    principal: str
    resource: Resource
    name: str
    pattern: Pattern
    operations: tuple[str, ...]


def component_acls(settings: Settings) -> list[Grant]:
    """What each component may do on the cluster."""
    t = settings.topic
    directory = t("vud.directory.")  # every directory topic and the directory DLQ
    planner, sink, ops = principal("planner"), principal("sink"), principal("ops")
    directory_sink = principal("directory-sink")
    group = app_id(settings)
    read = ("READ", "DESCRIBE")
    write = ("WRITE", "DESCRIBE")
    return [
        # producer: writes the directory topics and its DLQ (vud.directory.dlq), nothing else
        # (each by name: vud.directory.operations, the writeback's, is under the same prefix)
        *(
            Grant(principal("producer"), "TOPIC", t(spec.name), "LITERAL", write)
            for spec in (*DIRECTORY_TOPICS.values(), DIRECTORY_DLQ)
        ),
        # planner: reads directory/results/facts/control; writes operations (in staging mode the
        # staged operations)/facts/control/results and the directory DLQ; creates its own facts,
        # control and staged topics; its group; its changelog and Faust's internal topics
        Grant(planner, "TOPIC", directory, "PREFIXED", read),
        Grant(planner, "TOPIC", t(DIRECTORY_DLQ.name), "LITERAL", write),
        Grant(planner, "TOPIC", t(RESULTS.name), "LITERAL", ("READ", "WRITE", "DESCRIBE")),
        Grant(planner, "TOPIC", t(PLANNER_FACTS.name), "LITERAL", ("READ", "WRITE", "DESCRIBE", "CREATE")),
        Grant(planner, "TOPIC", t(PLANNER_CONTROL.name), "LITERAL", ("READ", "WRITE", "DESCRIBE", "CREATE")),
        Grant(planner, "TOPIC", t(OPERATIONS.name), "LITERAL", write),
        # staging mode: what it would send goes to the staged topic (created with its own topics)
        Grant(planner, "TOPIC", t(OPERATIONS_STAGED.name), "LITERAL", ("WRITE", "DESCRIBE", "CREATE")),
        Grant(planner, "TOPIC", f"{group}-", "PREFIXED", ("ALL",)),
        Grant(planner, "GROUP", group, "PREFIXED", ("ALL",)),
        # sink: reads operations; writes results and its DLQ; its group
        Grant(sink, "TOPIC", t(OPERATIONS.name), "LITERAL", read),
        Grant(sink, "TOPIC", t(RESULTS.name), "LITERAL", write),
        Grant(sink, "TOPIC", t(OPERATIONS_DLQ.name), "LITERAL", write),
        Grant(sink, "GROUP", sink_group(settings), "LITERAL", ("READ", "DESCRIBE")),
        # writeback: the planner reads the cloud's changes and writes directory operations
        Grant(planner, "TOPIC", t(CLOUD_CHANGES.name), "LITERAL", read),
        Grant(planner, "TOPIC", t(DIRECTORY_OPERATIONS.name), "LITERAL", write),
        # cloud-capture (writeback): writes the cloud's changes, and its full reads to the journal
        Grant(principal("cloud-capture"), "TOPIC", t(CLOUD_CHANGES.name), "LITERAL", write),
        Grant(principal("cloud-capture"), "TOPIC", t(RESULTS.name), "LITERAL", write),
        # directory sink (writeback): reads directory operations, writes results and its dead
        # letters (vud.directory.dlq: an operation the store cannot apply); its group
        Grant(directory_sink, "TOPIC", t(DIRECTORY_OPERATIONS.name), "LITERAL", read),
        Grant(directory_sink, "TOPIC", t(RESULTS.name), "LITERAL", write),
        Grant(directory_sink, "TOPIC", t(DIRECTORY_DLQ.name), "LITERAL", write),
        Grant(directory_sink, "GROUP", directory_sink_group(settings), "LITERAL", ("READ", "DESCRIBE")),
        # ops commands: create and read every vudsync topic, publish facts, control, repairs and
        # replays, read and move the pipeline's groups' offsets
        Grant(ops, "TOPIC", t("vud."), "PREFIXED", ("ALL",)),
        Grant(ops, "TOPIC", f"{group}-", "PREFIXED", ("DESCRIBE", "DESCRIBE_CONFIGS")),
        Grant(ops, "GROUP", t("vudsync-"), "PREFIXED", ("ALL",)),
        Grant(ops, "CLUSTER", "kafka-cluster", "LITERAL", ("DESCRIBE", "DESCRIBE_CONFIGS")),
    ]


def kafka_acls_commands(settings: Settings, bootstrap: str = "<bootstrap>") -> list[str]:
    """The grants as ``kafka-acls.sh`` commands an operator can run (``--command-config`` is a
    properties file with an administrator's credentials)."""
    option = {"TOPIC": "--topic", "GROUP": "--group", "CLUSTER": "--cluster"}
    lines = []
    for grant in component_acls(settings):
        resource = option[grant.resource] + ("" if grant.resource == "CLUSTER" else f" '{grant.name}'")
        operations = " ".join(f"--operation {op.title().replace('_', '')}" for op in grant.operations)
        pattern = " --resource-pattern-type prefixed" if grant.pattern == "PREFIXED" else ""
        lines.append(
            f"kafka-acls.sh --bootstrap-server {bootstrap} --command-config admin.properties "
            f"--add --allow-principal User:{grant.principal} {operations} {resource}{pattern}"
        )
    return lines
