"""The metrics and health endpoint, scraped over HTTP as Prometheus would."""

from __future__ import annotations

import aiohttp
from prometheus_client import CollectorRegistry, Counter

from common.metrics import MetricsServer


async def test_metrics_liveness_and_readiness_over_http() -> None:
    registry = CollectorRegistry()
    served = Counter("branchnet_test_things", "Things.", ["kind"], registry=registry)
    served.labels("a").inc(3)
    server = MetricsServer(0, host="127.0.0.1", registry=registry)
    ready = {"host": False}
    server.ready_when("host", lambda: ready["host"])
    server.ready_when("broken", lambda: 1 / 0 == 0)
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/metrics") as response:
                text = await response.text()
                assert response.status == 200
            assert 'branchnet_test_things_total{kind="a"} 3.0' in text
            async with http.get(f"{base}/livez") as response:
                assert response.status == 200
            async with http.get(f"{base}/readyz") as response:
                assert response.status == 503
                assert (await response.json())["failing"] == ["broken", "host"]
            ready["host"] = True
            server.ready_when("broken", lambda: True)
            async with http.get(f"{base}/readyz") as response:
                assert response.status == 200
    finally:
        await server.stop()
