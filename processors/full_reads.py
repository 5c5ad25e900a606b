"""The end of a full read (:class:`CloudAccessRead`): cloud-origin access the read no longer found. Pure.

A full read of the cloud (first start, ``410 cursor_expired``) publishes what exists; an access
of a user removed *whole* while the feed could not say so (the cursor had expired) produces no
event. After each linked user's access, cloud-capture publishes a :class:`CloudAccessRead`:
the cloud companies in which the read found access of the user. For every company in which the
store holds **cloud-origin** entries of the user (as the user's last directory event shows them,
or as the writeback's operations on their way make them), that is linked on premise (its cloud
id known on this partition) and whose cloud company the read did not find, :func:`swept` gives
the :class:`CloudAccessChanged` that removes exactly those entries:

- it is at the read's feed position and time (``read_at``: the cloud held none of them then);
- every entry of the pair's last known cloud state that the store does *not* hold as the
  cloud's is carried unchanged, so the rule sees no change of it: **directory-origin entries
  are never revoked by a marker**, only what the writeback itself put in the store;
- a pair seen at or after the read's position is left alone (its own event is newer).

:func:`on_access_read` plans each such change through
:meth:`processors.cloud_changes.CloudChanges.on_cloud_change` like any cloud change: the
conflict rule (a directory change of the entry later than ``read_at`` wins), the journal, the
pair's state and the directory operations (``RevokeDirectoryAccess``). A cloud-origin entry the
store holds that the pair's state does not know (the planner's table restored from elsewhere)
is added to the state first as the cloud's, so it is revoked too: the store is the truth.

Not covered: a writeback grant still on its way for a company in which the user's last
directory event shows no entry at all (the pair is found through the user's directory state);
the next full read, or the pair's next change, settles it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from processors import keys
from processors.cloud_changes import CloudChanges
from processors.effects import Coords, Effects, Tx
from processors.keys import Known
from processors.writeback import Change, PairState, held_entries
from schemas.cloud_changes import CloudAccessChanged, CloudAccessEntry, CloudAccessRead
from schemas.directory import ApplicationType, EntityType, UserState

_ORIGINS = ("directory", "cloud")


@dataclass(frozen=True)
class Swept:
    """A pair the read did not find: the cloud change that removes its cloud-origin entries,
    and the state to plan it against (``previous`` with the store's unknown cloud-origin
    entries added; the same object when nothing was added)."""

    change: CloudAccessChanged
    state: PairState


def swept(
    read: CloudAccessRead,
    company_id: str,
    cloud_company_id: str | None,
    held: Mapping[str, str],
    previous: PairState | None,
) -> Swept | None:
    """The removal of the pair's cloud-origin entries, or None when there is nothing to remove:
    the company is not linked (``cloud_company_id`` None), the read found its access, the pair
    was seen at or after the read, or the store holds nothing of the pair as the cloud's.
    ``held``: the store's entries of the pair (entry → origin)."""
    if cloud_company_id is None or cloud_company_id in read.cloud_companies:
        return None
    if previous is not None and previous.seq >= read.feed_seq:
        return None
    state = previous if previous is not None else PairState(0)
    as_cloud = sorted(k for k in held.keys() | state.pending.keys() if state.held_as_cloud(k, held))
    if not as_cloud:
        return None
    unknown = {k: Change(True, read.read_at, "cloud") for k in as_cloud if not _present(state.cloud.get(k))}
    if unknown:
        state = PairState(state.seq, {**state.cloud, **unknown}, state.directory, state.pending, state.seen)
    kept = sorted((key, was) for key, was in state.cloud.items() if was.present and key not in as_cloud)
    entries = tuple(_entry(key, was) for key, was in kept)
    change = CloudAccessChanged(
        event_id=CloudAccessChanged.make_event_id(read.feed_seq, read.user_id, company_id),
        feed_seq=read.feed_seq,
        user_id=read.user_id,
        company_id=company_id,
        cloud_user_id=read.cloud_user_id,
        cloud_company_id=cloud_company_id,
        deleted=not entries,
        entries=entries,
        changed_at=read.read_at,
        full_read=True,
    )
    return Swept(change, state)


def _present(change: Change | None) -> bool:
    return change is not None and change.present


def _entry(key: str, was: Change) -> CloudAccessEntry:
    """An entry carried unchanged: the very change the pair's state holds (same time and
    origin), so the rule sees it as not changed."""
    application, kind, name = key.split("/", 2)
    return CloudAccessEntry.model_validate(
        {
            "application": ApplicationType(application),
            "kind": kind,
            "name": name,
            "origin": was.origin if was.origin in _ORIGINS else "directory",
            "modified_at": was.at,
        }
    )


def on_access_read(cloud: CloudChanges, tx: Tx, read: CloudAccessRead, coords: Coords) -> Effects:
    """Plan the removals a user's end-of-read marker comes to (see the module's docstring)."""
    fx = Effects(entity="cloud_access", outcome="no_change")
    raw: Any = tx.get(keys.entity_key(keys.entity_ref(EntityType.USER, read.user_id)))
    if raw is None or raw["d"] or raw["s"] is None:
        return tx.effects(fx)  # not known on premise: the store holds nothing of it
    user = UserState.model_validate(raw["s"])
    for company_id in sorted({a.company_id for a in user.access}):
        wkey = keys.writeback_key(read.user_id, company_id)
        stored = tx.get(wkey)
        previous = PairState.from_json(stored) if stored is not None else None
        cloud_company = tx.get(keys.known_key(coords.partition, Known.COMPANY, company_id))
        found = swept(read, company_id, cloud_company, held_entries(user, company_id), previous)
        if found is None:
            continue
        if found.state is not previous:
            tx.set(wkey, found.state.to_json())
        done = cloud.on_cloud_change(tx, found.change, coords)
        fx.absorb(done)
        if done.outcome == "planned":
            fx.outcome = "planned"
    return tx.effects(fx)
