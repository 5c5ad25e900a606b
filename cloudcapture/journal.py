"""cloud-capture's journal entries: what an operator must see of the feed. Pure.

A full read is published as a result on ``vud.cloud.results`` (``vudsync journal --kind
journal.writeback_full_read``), beside the planner's and the sinks' entries: why it was made
(``first_start``; ``cursor_expired`` — the feed answered ``410``, so its changes since the
expired position could not be read and the cloud was read whole instead), the position the
expired cursor stood at and the one the read continues from, what it published. Outcome
``applied``: the full read is done and its cursor saved (the planner learns nothing from it and
skips it by its headers). A full read that cannot complete shows in readiness (``phase``
``full_read``, the last error) and in the log, and is journalled when it completes.
"""

from __future__ import annotations

from datetime import datetime

from schemas.directory import EntityType
from schemas.results import OperationResult, ResultOutcome

FULL_READ = "writeback_full_read"


def full_read_result(
    *,
    name: str,
    reason: str,
    expired_position: int | None,
    position: int,
    access: int,
    users: int,
    started_at: datetime,
    now: datetime,
) -> OperationResult:
    """The journal entry of a completed full read of capture ``name``; its id is the read's
    position and reason, so an entry published again (a crash before the cursor was saved
    repeats the read at a new position) is another read, and a repeat of the same one is one."""
    if reason == "cursor_expired":
        why = (
            f"the feed's cursor at position {expired_position} expired (410 cursor_expired): the "
            "changes after it could not be read, the cloud was read in full instead"
        )
    else:
        why = "no saved cursor (first start): the cloud was read in full"
    message = (
        f"{why}; {access} access of {users} linked users published, each user's end-of-read "
        f"marker with it; following the feed from position {position}"
    )
    return OperationResult(
        operation_id=f"journal:{FULL_READ}:{name}:{reason}:{position}",
        kind=f"journal.{FULL_READ}",
        aggregate=name,
        entity=EntityType.USER,  # the users' access, read whole
        entity_id=name,
        source_version=position,
        outcome=ResultOutcome.APPLIED,
        effect="full_read",
        details={
            "code": FULL_READ,
            "reason": reason,
            "expired_position": expired_position,
            "position": position,
            "access": access,
            "users": users,
            "message": message,
            "level": "warning" if reason == "cursor_expired" else "info",
        },
        source_committed_at=started_at,
        recorded_at=now,
    )
