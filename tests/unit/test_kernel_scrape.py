"""kernel.scrape: the one /metrics reader, against a mock transport."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from kernel.scrape import ScrapeFailed, scrape, total


def test_samples_by_name_and_totals_by_label() -> None:
    registry = CollectorRegistry()
    ops = Counter("vudsync_sink_operations_total", "ops", ["kind", "outcome"], registry=registry)
    ops.labels("user.upsert", "applied").inc(3)
    ops.labels("user.upsert", "failed").inc()
    ops.labels("company.upsert", "applied").inc(2)
    text = generate_latest(registry).decode()

    def metrics(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=text)

    with httpx.Client(transport=httpx.MockTransport(metrics)) as client:
        samples = scrape("http://sink/metrics", client=client)
    assert total(samples, "vudsync_sink_operations_total") == 6
    assert total(samples, "vudsync_sink_operations_total", outcome="applied") == 5
    assert total(samples, "vudsync_nothing_total") == 0


@pytest.mark.parametrize("fault", ["refused", "status"])
def test_an_endpoint_that_does_not_serve_metrics_fails_as_scrape_failed(fault: str) -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        if fault == "refused":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(503, text="starting")

    with httpx.Client(transport=httpx.MockTransport(broken)) as client, pytest.raises(ScrapeFailed) as raised:
        scrape("http://sink/metrics", client=client)
    assert str(raised.value) == ("ConnectError" if fault == "refused" else "HTTPStatusError")
