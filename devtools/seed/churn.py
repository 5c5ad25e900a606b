"""Realistic ongoing changes to a directory store: ``vudsync seed churn``, tests, benchmarks.

The mix: user edits (names, e-mail, language, deactivation), access granted and revoked,
new users (with access), users deleted, company edits. Deciding *what* to change
(:func:`plan_changes`) is pure and deterministic for a seed; applying it goes through a
directory writer (SQLite or PostgreSQL), one transaction per batch.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from devtools.seed.data import (
    APPLICATIONS,
    CATALOGUE,
    COMPANY_KINDS,
    COMPANY_WORDS,
    FIRST_NAMES,
    LAST_NAMES,
    ascii_local,
    make_user,
)

#: (kind, weight): edits dominate, as in a real directory.
MIX: tuple[tuple[str, int], ...] = (
    ("update_user", 40),
    ("grant", 25),
    ("revoke", 10),
    ("create_user", 12),
    ("delete_user", 5),
    ("update_company", 8),
)
_KINDS = [k for k, _ in MIX]
_WEIGHTS = [w for _, w in MIX]
_CATALOGUE_KIND = {"roles": "role", "layout_groups": "layout_group", "modules": "module"}
DOMAINS = tuple(f"{ascii_local(w)}.no" for w in COMPANY_WORDS)


@dataclass(frozen=True, slots=True)
class Change:
    """One change: ``kind`` from :data:`MIX`, ``target`` the user/company id, ``args`` the writer's."""

    kind: str
    target: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class ChurnState:
    """What churn knows about the store: live ids, and which companies each user has access to."""

    users: list[str]
    companies: list[str]
    access: dict[str, set[str]] = field(default_factory=dict)
    next_index: int = 1
    _positions: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._positions = {u: i for i, u in enumerate(self.users)}
        numbers = [int(u[1:]) for u in self.users if u[:1] == "u" and u[1:].isdigit()]
        self.next_index = max([self.next_index - 1, *numbers], default=0) + 1

    def add_user(self, user_id: str) -> None:
        self._positions[user_id] = len(self.users)
        self.users.append(user_id)

    def remove_user(self, user_id: str) -> None:
        """O(1): swap with the last id."""
        index = self._positions.pop(user_id)
        last = self.users.pop()
        if last != user_id:
            self.users[index] = last
            self._positions[last] = index
        self.access.pop(user_id, None)


def _grant_rows(rng: random.Random, user_id: str, company_id: str) -> list[tuple[str, str, str, str, str]]:
    app = rng.choice(APPLICATIONS)
    rows = [(user_id, company_id, app, "role", rng.choice(CATALOGUE[app]["roles"]))]
    if rng.random() < 0.5:
        kind = rng.choice(("layout_groups", "modules"))
        rows.append((user_id, company_id, app, _CATALOGUE_KIND[kind], rng.choice(CATALOGUE[app][kind])))
    return rows


def _plan_one(rng: random.Random, state: ChurnState) -> Change | None:
    kind = rng.choices(_KINDS, _WEIGHTS)[0]
    if kind in ("update_user", "grant", "revoke", "delete_user") and not state.users:
        kind = "create_user"
    if kind in ("grant", "create_user", "update_company") and not state.companies:
        return None
    if kind == "update_user":
        user_id = rng.choice(state.users)
        what = rng.random()
        if what < 0.4:
            fields: dict[str, Any] = {"first_name": rng.choice(FIRST_NAMES)}
        elif what < 0.7:
            fields = {"last_name": rng.choice(LAST_NAMES)}
        elif what < 0.85:
            fields = {"language": rng.choice(("nb", "nn", "en"))}
        elif what < 0.95:
            local = f"{ascii_local(rng.choice(FIRST_NAMES))}.{user_id}"
            fields = {"email": f"{local}@{rng.choice(DOMAINS)}"}
        else:
            fields = {"active": rng.choice((0, 1))}
        return Change("update_user", user_id, fields)
    if kind == "grant":
        user_id = rng.choice(state.users)
        company_id = rng.choice(state.companies)
        state.access.setdefault(user_id, set()).add(company_id)
        return Change("grant", user_id, {"rows": _grant_rows(rng, user_id, company_id)})
    if kind == "revoke":
        user_id = rng.choice(state.users)
        held = sorted(state.access.get(user_id, ()))
        if not held:
            return None
        company_id = rng.choice(held)
        state.access[user_id].discard(company_id)
        return Change("revoke", user_id, {"company_id": company_id})
    if kind == "create_user":
        user = make_user(rng, state.next_index, list(DOMAINS))
        state.next_index += 1
        state.add_user(user["id"])
        company_id = rng.choice(state.companies)
        state.access[user["id"]] = {company_id}
        return Change(
            "create_user", user["id"], {"user": user, "rows": _grant_rows(rng, user["id"], company_id)}
        )
    if kind == "delete_user":
        user_id = rng.choice(state.users)
        state.remove_user(user_id)
        return Change("delete_user", user_id)
    company_id = rng.choice(state.companies)
    if rng.random() < 0.85:
        name = f"{rng.choice(COMPANY_WORDS)} {rng.choice(COMPANY_KINDS)} AS"
        return Change("update_company", company_id, {"name": name})
    return Change("update_company", company_id, {"status": rng.choice(("active", "inactive"))})


def plan_changes(rng: random.Random, state: ChurnState, n: int) -> list[Change]:
    """Decide ``n`` changes (fewer only if the store is empty); updates ``state`` as they will."""
    out: list[Change] = []
    for _ in range(n * 3):
        if len(out) >= n:
            break
        change = _plan_one(rng, state)
        if change is not None:
            out.append(change)
    return out


def apply_change(writer: Any, change: Change) -> None:
    """Apply one change through a directory writer (inside the caller's transaction)."""
    if change.kind == "update_user":
        writer.update_user(change.target, **change.args)
    elif change.kind == "grant":
        writer.grant(change.args["rows"])
    elif change.kind == "revoke":
        writer.revoke(change.target, change.args["company_id"])
    elif change.kind == "create_user":
        writer.upsert_users([change.args["user"]])
        writer.grant(change.args["rows"])
    elif change.kind == "delete_user":
        writer.delete_user(change.target)
    elif change.kind == "update_company":
        writer.update_company(change.target, **change.args)
    else:
        raise ValueError(f"unknown change kind {change.kind!r}")


def load_state(writer: Any) -> ChurnState:
    """Live user and company ids and who has access where, read through the writer's connection."""
    users = [r[0] for r in writer.conn.execute("SELECT id FROM users ORDER BY id").fetchall()]
    companies = [r[0] for r in writer.conn.execute("SELECT id FROM companies ORDER BY id").fetchall()]
    access: dict[str, set[str]] = {}
    for user_id, company_id in writer.conn.execute("SELECT DISTINCT user_id, company_id FROM access"):
        access.setdefault(user_id, set()).add(company_id)
    return ChurnState(users, companies, access)


@dataclass
class ChurnReport:
    changes: Counter[str] = field(default_factory=Counter)
    transactions: int = 0
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.changes.values())

    @property
    def rate(self) -> float:
        return self.total / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "changes": self.total,
            "by_kind": dict(sorted(self.changes.items())),
            "transactions": self.transactions,
            "seconds": round(self.seconds, 3),
            "changes_per_second": round(self.rate, 1),
        }


class Churn:
    """Applies planned changes at a steady rate: every ``tick`` seconds, the changes due since
    the start are written in one transaction (catching up in bigger batches when behind)."""

    def __init__(self, writer: Any, state: ChurnState, *, seed: int = 11) -> None:
        self.writer = writer
        self.state = state
        self.rng = random.Random(seed)
        self.report = ChurnReport()

    def step(self, n: int) -> list[Change]:
        """Plan and apply ``n`` changes in one transaction; returns them."""
        changes = plan_changes(self.rng, self.state, n)
        if changes:
            with self.writer.transaction():
                for change in changes:
                    apply_change(self.writer, change)
            self.report.transactions += 1
            self.report.changes.update(c.kind for c in changes)
        return changes

    def run(
        self,
        rate: float,
        *,
        duration: float | None = None,
        stop: threading.Event | None = None,
        on_tick: Callable[[ChurnReport], None] | None = None,
        tick: float | None = None,
    ) -> ChurnReport:
        """Run at ``rate`` changes/s until ``stop`` is set or ``duration`` seconds have passed.

        Every ``tick`` seconds (default 1/rate, between 5 ms and 1 s) the changes due since the
        start are written in one transaction; a writer that falls behind catches up in bigger
        transactions of at most 100 ms of changes each, and the report says what rate was really
        achieved. (Uncapped, a writer that fell behind on a busy machine wrote ever bigger
        transactions: 8 in 20 s at 5,000 changes/s on PostgreSQL, each committing seconds of
        changes at once, and capture latency measured that, not capture.)"""
        stop = stop or threading.Event()
        tick = tick or max(0.005, min(1.0, 1.0 / rate))
        most = max(1, int(rate * 0.1))
        started = time.monotonic()
        done = 0
        ticks = 0
        while not stop.is_set():
            elapsed = time.monotonic() - started
            if duration is not None and elapsed >= duration:
                break
            due = min(int(rate * elapsed) - done, most)
            if due > 0:
                done += due
                self.step(due)
                if on_tick:
                    on_tick(self.report)
            ticks += 1
            stop.wait(max(0.0, ticks * tick - (time.monotonic() - started)))
        self.report.seconds = time.monotonic() - started
        return self.report
