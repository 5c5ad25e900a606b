"""The pipeline's consumer groups and topics as operators name them. Pure.

Three groups, each a member of ``vudsync status`` and each offered by ``vudsync replay``: the
planner's (Faust app id, reads the directory topics), the sink's (reads ``vud.cloud.operations``)
and the directory sink's (the writeback's, reads ``vud.directory.operations``). Topics are named
by their short name (``users``, ``operations``; the writeback's ``directory-operations``: its
last word is the sink's topic's), their catalogue name (``vud.directory.users``) or their full
name with this installation's prefix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from kernel.errors import ConfigurationError, VudsyncError
from kernel.settings import Settings
from schemas.topics import DIRECTORY_OPERATIONS, DIRECTORY_TOPICS, OPERATIONS, RESULTS


class Role(StrEnum):
    PLANNER = "planner"
    SINK = "sink"
    DIRECTORY_SINK = "directory-sink"


#: what ``--group`` offers: each role, and ``both`` (planner and sink: the cloud-bound path)
GROUP_CHOICES = (*(role.value for role in Role), "both")


def roles_for(choice: str) -> tuple[Role, ...]:
    """``planner`` | ``sink`` | ``directory-sink`` | ``both`` → the roles, planner first."""
    if choice == "both":
        return (Role.PLANNER, Role.SINK)
    return (Role(choice),)


def group_id(role: Role, settings: Settings) -> str:
    """The consumer group of a role, as the components name it."""
    if role is Role.PLANNER:
        from processors.app import app_id  # imports faust: only when asked

        return app_id(settings)
    if role is Role.DIRECTORY_SINK:
        from sinks.directory_service import directory_sink_group

        return directory_sink_group(settings)
    from sinks.service import sink_group

    return sink_group(settings)


#: short names that are not the catalogue name's last word (that one is taken)
_SHORT = {DIRECTORY_OPERATIONS.name: "directory-operations"}


def topic_aliases(settings: Settings) -> dict[str, str]:
    """Short and catalogue names → full topic names with this installation's prefix."""
    specs = [*DIRECTORY_TOPICS.values(), OPERATIONS, RESULTS, DIRECTORY_OPERATIONS]
    aliases: dict[str, str] = {}
    for spec in specs:
        full = settings.topic(spec.name)
        aliases[_SHORT.get(spec.name, spec.name.rsplit(".", 1)[-1])] = full
        aliases[spec.name] = full
        aliases[full] = full
    return aliases


def default_topics(role: Role, settings: Settings) -> list[str]:
    """What a replay of a role rewinds unless ``--topics`` says otherwise."""
    if role is Role.PLANNER:
        return [settings.topic(spec.name) for spec in DIRECTORY_TOPICS.values()]
    if role is Role.DIRECTORY_SINK:
        return [settings.topic(DIRECTORY_OPERATIONS.name)]
    return [settings.topic(OPERATIONS.name)]


def resolve_topics(names: Iterable[str], settings: Settings) -> list[str]:
    """Operator names → full topic names, in the order given, without duplicates."""
    aliases = topic_aliases(settings)
    out: list[str] = []
    for name in names:
        key = name.strip()
        if not key:
            continue
        if key not in aliases:
            short = sorted(k for k in aliases if "." not in k)
            raise ConfigurationError(f"unknown topic {key!r}", hint=f"choose from: {', '.join(short)}")
        if aliases[key] not in out:
            out.append(aliases[key])
    return out


def topics_for_role(role: Role, chosen: Sequence[str], settings: Settings) -> list[str]:
    """The topics of ``chosen`` that this role's group reads (all its topics when none chosen)."""
    mine = default_topics(role, settings)
    if not chosen:
        return mine
    readable = [*mine, settings.topic(RESULTS.name)] if role is Role.PLANNER else mine
    return [t for t in chosen if t in readable]


@dataclass(frozen=True)
class GroupMember:
    """A live member of a consumer group, as the group coordinator describes it."""

    client_id: str
    host: str
    member_id: str

    def describe(self) -> str:
        return f"{self.client_id} on {self.host.lstrip('/')}"


def members_from_description(description: Mapping[str, Any]) -> list[GroupMember]:
    """kafka-python's ``describe_groups`` entry → members (empty for an empty or dead group)."""
    return [
        GroupMember(
            client_id=str(m.get("client_id") or "?"),
            host=str(m.get("client_host") or "?"),
            member_id=str(m.get("member_id") or ""),
        )
        for m in description.get("members") or []
    ]


class GroupHasLiveMembers(VudsyncError):
    """A consumer group cannot be rewound while consumers are in it."""

    def __init__(self, role: Role, group: str, members: Sequence[GroupMember]) -> None:
        names = "; ".join(m.describe() for m in members)
        super().__init__(
            f"the {role.value} group {group!r} has {len(members)} live member(s): {names}",
            hint=(
                f"stop every {role.value} worker first (SIGTERM; `vudsync run {role.value}` stops "
                "gracefully), then replay; a worker killed without leaving the group stays listed "
                "until its session times out (about a minute)"
            ),
        )
        self.role = role
        self.group = group
        self.members = tuple(members)
