"""Reading a Prometheus ``/metrics`` endpoint of our own components: the one scraper.

``vudsync status`` (:mod:`vudsync.ops.metrics_scrape`), the demo and the tests read the
components' metrics through it. httpx errors become :class:`ScrapeFailed` here, once.
"""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from kernel.errors import RetryableError

#: samples by metric name: (labels, value) per series
Samples = dict[str, list[tuple[dict[str, str], float]]]


class ScrapeFailed(RetryableError):
    """The endpoint did not answer with metrics (not serving yet, gone, an error status)."""


def parse(text: str) -> Samples:
    """Samples by name from the Prometheus text format."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


def scrape(url: str, *, client: httpx.Client | None = None, timeout: float = 2.0) -> Samples:
    """Samples by name from one ``/metrics`` endpoint (through ``client`` if given)."""
    try:
        response = client.get(url) if client is not None else httpx.get(url, timeout=timeout)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise ScrapeFailed(f"{type(exc).__name__}") from None
    return parse(response.text)


def total(samples: Samples, name: str, **match: str) -> float:
    """Sum of a metric's samples whose labels include ``match`` (0 when there are none)."""
    return sum(v for labels, v in samples.get(name, []) if all(labels.get(k) == m for k, m in match.items()))
