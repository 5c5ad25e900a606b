"""The deletions the accidental-delete gate holds, read from ``vud.planner.control``.

The gate numbers every deletion it holds and says so on the control topic (``DeletionHeld``
with its number; ``DeletionDecided`` once it is settled). Reading every partition to its end
and counting with :func:`processors.gate.outstanding` gives what is held now, in the gate's
order, with the highest number: what ``vudsync deletes approve --up-to`` names. Nothing is
committed and no group is joined.
"""

from __future__ import annotations

from dataclasses import dataclass

from kernel.settings import Settings
from processors.control import CONTROL_ADAPTER
from processors.gate import HeldDeletion, outstanding
from schemas.topics import PLANNER_CONTROL
from vudsync.ops.kafka_admin import group_admin
from vudsync.ops.kafka_reader import read_ranges


@dataclass(frozen=True)
class HeldNow:
    held: list[HeldDeletion]

    @property
    def count(self) -> int:
        return len(self.held)

    @property
    def high_water(self) -> int | None:
        """The highest number held: ``approve --up-to`` this settles exactly what is listed."""
        return self.held[-1].seq if self.held else None

    def up_to(self, seq: int) -> list[HeldDeletion]:
        return [h for h in self.held if h.seq <= seq]


def read_held(settings: Settings, bootstrap: str, timeout: float = 60.0) -> HeldNow:
    """What the gate holds now (undecodable records are skipped: they are not the gate's)."""
    topic = settings.topic(PLANNER_CONTROL.name)
    security = settings.kafka_security()
    with group_admin(bootstrap, security=security) as admin:
        partitions = admin.partitions([topic])
        start, end = admin.start_offsets(partitions), admin.end_offsets(partitions)
    ranges = {tp: (start.get(tp, 0), end.get(tp, 0)) for tp in partitions}
    messages = []
    for record in read_ranges(
        bootstrap, ranges, timeout=timeout, client_id="vudsync-deletes", security=security
    ):
        try:
            messages.append(CONTROL_ADAPTER.validate_json(record.value or b""))
        except ValueError:
            continue
    return HeldNow(outstanding(messages))
