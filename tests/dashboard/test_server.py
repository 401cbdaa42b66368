"""The dashboard server on a network over RabbitMQ, reading the events over MQTT."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from branchnet.ops import mqtt_url_from_amqp
from branchnet.simulate import SimulationConfig, simulate
from dashboard.sources import MqttEndpoint
from tests.dashboard.test_browser import free_port


def test_mqtt_urls_name_the_vhost_in_the_user() -> None:
    url = mqtt_url_from_amqp("amqp://bank:s%40cret@broker:5672/bn-test-1")
    assert url == "mqtt://bn-test-1%3Abank:s%40cret@broker:1883"
    endpoint = MqttEndpoint.parse(url)
    assert (endpoint.hostname, endpoint.port) == ("broker", 1883)
    assert (endpoint.username, endpoint.password) == ("bn-test-1:bank", "s@cret")
    assert "s@cret" not in repr(endpoint)
    assert mqtt_url_from_amqp("amqp://guest:guest@localhost:5672/") == (
        "mqtt://guest:guest@localhost:1883"
    )


@pytest.mark.slow
@pytest.mark.rabbitmq
async def test_the_dashboard_follows_a_network_over_mqtt(
    tmp_path: Path, amqp_url: str, mqtt_url: str | None
) -> None:
    if mqtt_url is None:
        pytest.skip("MQTT is reachable on the private test broker only")
    port = free_port()
    config = SimulationConfig(
        branches=2,
        terminals=3,
        duration_s=60,
        max_requests=600,
        data_dir=tmp_path,
        amqp_url=amqp_url,
        mqtt_url=mqtt_url,
        dashboard_port=port,
    )
    run = asyncio.create_task(simulate(config))
    seen: dict[str, Any] = {}
    try:
        # the simulation runs up to 60 s after its start-up: wait for all of it, and then some
        async with aiohttp.ClientSession() as http, asyncio.timeout(120):
            while not (_notable(seen) and _requests(seen) > 0):
                await asyncio.sleep(0.5)
                try:
                    async with http.get(f"http://127.0.0.1:{port}/api/snapshot") as response:
                        seen = await response.json()
                except aiohttp.ClientConnectionError:
                    continue  # not serving yet
        report = await run
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
    assert report["reconciliation"]["ok"]
    assert {n["name"] for n in seen["nodes"]} >= {"host"}
    assert sum(seen["totals"]["by_branch"].values()) > 0
    assert _notable(seen)


def _notable(snapshot: dict[str, Any]) -> bool:
    """An alert the simulation's own traffic raises (large cash or a PIN lockout)."""
    return bool({a["type"] for a in snapshot.get("alerts", [])} & {"large_cash", "pin_lockout"})


def _requests(snapshot: dict[str, Any]) -> int:
    return max((t["requests"] for t in snapshot.get("ticks", [])), default=0)
