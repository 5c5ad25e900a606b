"""Needs: the prerequisites a parked operation waits for. Pure.

A *need* names one prerequisite of an operation:

- ``user:<id>`` / ``company:<id>`` — the cloud id of the user / company is known (from results);
- ``catalogue:<application>:<roles|layout_groups|modules>:<name>`` — the entry exists in the
  cloud's catalogue (an assignment naming a missing entry would be refused with 422);
- ``application:<application>`` — the application's on-premise instance matches the cloud's
  registry (or ``vudsync connect`` has told what the registry holds);
- ``deletion:<candidate>`` — the accidental-delete gate granted (or an operator approved) it;
- ``connect:installation`` — ``vudsync connect`` has succeeded for this installation: nothing
  goes to the cloud before (:mod:`processors.connection`);
- ``on_premise:<user id>`` — the user's directory state reached this partition: a cloud change
  of the writeback waits for it (:mod:`processors.cloud_changes`; found in the user's own
  ``p|`` key by the user's directory event, never indexed);
- ``review:<company id>`` — an operator reviewed the company, which was linked to a cloud
  company that existed before (assignments of access to it only; :mod:`processors.reviews`).

An operation waiting only for facts is *parked*; one waiting for its application is *blocked*
(the application does not match the cloud, which no result will fix — an operator must).

:class:`Need` is the typed form; :meth:`Need.encode` is its string, ``<kind>:<subject>``, as it
stands in the planner's table (a parked item's ``needs``, the ``n|`` index keys) and in a
result's ``waiting_for``. That string must never change: the planner's changelog topics hold
it and an existing installation reads it back. A need on a fact is spelled like the fact's key
(``PlannerFact.key``), so the fact that arrives names the needs it meets.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from schemas.directory import ApplicationType
from schemas.results import FactKind


class NeedKind(StrEnum):
    USER = "user"  # subject: user id
    COMPANY = "company"  # subject: company id
    CATALOGUE = "catalogue"  # subject: <application>:<roles|layout_groups|modules>:<name>
    APPLICATION = "application"  # subject: application
    DELETION = "deletion"  # subject: the gate's candidate, <entity>:<id>:<version>
    CONNECT = "connect"  # subject: "installation"
    REVIEW = "review"  # subject: company id
    ON_PREMISE = "on_premise"  # subject: user id (a writeback cloud change waits for its user)


_OF_FACT = {
    FactKind.USER: NeedKind.USER,
    FactKind.COMPANY: NeedKind.COMPANY,
    FactKind.CATALOGUE: NeedKind.CATALOGUE,
}


@dataclass(frozen=True, slots=True)
class Need:
    """One prerequisite: ``kind`` and what it is about (``subject``, never empty)."""

    kind: NeedKind
    subject: str

    @classmethod
    def user(cls, user_id: str) -> Need:
        return cls(NeedKind.USER, user_id)

    @classmethod
    def company(cls, company_id: str) -> Need:
        return cls(NeedKind.COMPANY, company_id)

    @classmethod
    def catalogue(cls, app: ApplicationType, kind: str, name: str) -> Need:
        return cls(NeedKind.CATALOGUE, f"{app.value}:{kind}:{name}")

    @classmethod
    def application(cls, app: ApplicationType) -> Need:
        return cls(NeedKind.APPLICATION, app.value)

    @classmethod
    def deletion(cls, candidate: str) -> Need:
        return cls(NeedKind.DELETION, candidate)

    @classmethod
    def connect(cls) -> Need:
        return _CONNECT

    @classmethod
    def review(cls, company_id: str) -> Need:
        return cls(NeedKind.REVIEW, company_id)

    @classmethod
    def on_premise(cls, user_id: str) -> Need:
        return cls(NeedKind.ON_PREMISE, user_id)

    @classmethod
    def of_fact(cls, kind: FactKind, subject: str) -> Need | None:
        """The need a fact of ``kind`` about ``subject`` meets (None: it meets none by itself —
        registry and instance facts meet ``application:`` needs through the verdict; connect and
        review facts meet theirs by what they say, :mod:`processors.connection` and
        :mod:`processors.reviews`)."""
        need = _OF_FACT.get(kind)
        return None if need is None else cls(need, subject)

    @property
    def blocks(self) -> bool:
        """Waiting for the application: blocked rather than parked."""
        return self.kind is NeedKind.APPLICATION

    def encode(self) -> str:
        """``<kind>:<subject>``, as stored and as sent in ``waiting_for``."""
        return f"{self.kind.value}:{self.subject}"

    @classmethod
    def decode(cls, text: str) -> Need:
        """The need ``text`` encodes; ValueError when it is none."""
        kind, sep, subject = text.partition(":")
        if not sep or not subject:
            raise ValueError(f"not a need: {text!r}")
        return cls(NeedKind(kind), subject)

    def __str__(self) -> str:
        return self.encode()


CONNECT_SUBJECT = "installation"  # the one subject of connect facts and needs
_CONNECT = Need(NeedKind.CONNECT, CONNECT_SUBJECT)
