"""Reads the components' Prometheus ``/metrics`` endpoints for ``vudsync status`` (httpx).

Endpoints come from ``VUDSYNC_STATUS_METRICS``: ``producer=http://127.0.0.1:9101/metrics,
planner=http://…,sink-1=http://…,sink-2=http://…``. A name's part before the first ``-`` is
its component (``sink-2`` is a sink).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import httpx

from kernel.errors import ConfigurationError
from kernel.scrape import Samples, ScrapeFailed
from kernel.scrape import scrape as scrape_one

_DASHED = ("cloud-capture", "directory-sink", "lag-exporter")


@dataclass(frozen=True)
class Endpoint:
    name: str
    url: str

    @property
    def component(self) -> str:
        """The component an endpoint's name says (``sink-2`` → ``sink``); a component whose
        own name has a dash keeps it (``cloud-capture``, ``cloud-capture-2``, ``directory-sink-2``)."""
        for dashed in _DASHED:
            if self.name == dashed or self.name.startswith(dashed + "-"):
                return dashed
        return self.name.split("-", 1)[0]


@dataclass(frozen=True)
class Scrape:
    """One endpoint's samples (``name{labels}`` → value), or the error that kept them away."""

    endpoint: Endpoint
    samples: Samples = field(default_factory=dict)
    error: str | None = None

    def total(self, name: str) -> float | None:
        values = [v for _, v in self.samples.get(name, [])]
        return sum(values) if values else None


def parse_endpoints(text: str) -> list[Endpoint]:
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, url = item.partition("=")
        if not sep or not url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"not a name=url item in VUDSYNC_STATUS_METRICS: {item!r}",
                hint="e.g. producer=http://127.0.0.1:9101/metrics,sink=http://127.0.0.1:9103/metrics",
            )
        out.append(Endpoint(name.strip(), url.strip()))
    return out


def scrape(endpoints: Iterable[Endpoint], timeout: float = 2.0) -> list[Scrape]:
    out = []
    with httpx.Client(timeout=timeout) as client:
        for ep in endpoints:
            try:
                out.append(Scrape(ep, scrape_one(ep.url, client=client)))
            except ScrapeFailed as exc:
                out.append(Scrape(ep, error=str(exc)))
    return out
