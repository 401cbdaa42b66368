"""The dashboard in a real headless Chromium, on a running simulated network."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import aiohttp
import pytest

from branchnet.simulate import SimulationConfig, simulate
from tests.dashboard.browser import Browser, chromium_path

ARTIFACTS = Path(os.environ.get("BRANCHNET_ARTIFACTS", Path(__file__).parents[2] / "artifacts"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _number(text: str | None) -> int:
    return int((text or "0").replace(",", "") or 0)


@pytest.mark.slow
async def test_an_operator_sees_live_numbers_and_alerts(tmp_path: Path) -> None:
    if os.environ.get("BRANCHNET_BROWSER_TESTS") == "0":
        pytest.skip("browser tests turned off (BRANCHNET_BROWSER_TESTS=0)")
    binary = chromium_path()
    assert binary, "chromium is missing: scripts/system-packages installs it"
    port, metrics_port = free_port(), free_port()
    config = SimulationConfig(
        branches=3,
        terminals=3,
        duration_s=40,
        data_dir=tmp_path,
        dashboard_port=port,
        metrics_port=metrics_port,
    )
    run = asyncio.create_task(simulate(config))
    try:
        async with Browser(binary) as browser:
            async with asyncio.timeout(30):
                while True:  # the dashboard listens once the network is up
                    try:
                        await browser.goto(f"http://127.0.0.1:{port}/")
                        if await browser.wait_for("!!document.getElementById('kpi-requests')", 5):
                            break
                    except (RuntimeError, TimeoutError):
                        if run.done():
                            run.result()  # the simulation failed: say why
                        await asyncio.sleep(0.5)
            read_requests = "document.getElementById('kpi-requests').textContent"
            first = _number(await browser.wait_for(f"{read_requests} !== '0' && {read_requests}"))
            later = _number(
                await browser.wait_for(
                    f"Number({read_requests}.replace(/,/g, '')) > {first} && {read_requests}"
                )
            )
            assert later > first > 0
            assert await browser.wait_for(
                "document.getElementById('feed').className === 'feed live'"
            )
            alert = await browser.wait_for(
                "(document.querySelector('#alerts li.alert') || {}).textContent"
            )
            assert any(word in alert for word in ("large cash", "PIN locked", "security"))
            results = await browser.wait_for("document.getElementById('results').textContent")
            assert "approved" in results
            branches = await browser.evaluate("document.getElementById('branches').textContent")
            assert all(b in branches for b in ("0001", "0002", "0003"))
            nodes = await browser.evaluate("document.getElementById('nodes').textContent")
            assert "host" in nodes and "up" in nodes
            await _check_metrics(metrics_port)
            await asyncio.sleep(3)  # a few more seconds of chart for the screenshot
            await browser.screenshot(ARTIFACTS / "dashboard.png")
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000


async def _check_metrics(port: int) -> None:
    """The same network's Prometheus endpoint: ready, with host and branch series."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
            assert response.status == 200, await response.text()
        async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
            text = await response.text()
    assert 'branchnet_requests_total{kind="deposit",result="00"}' in text
    assert 'branchnet_branch_requests_total{branch="0003",result="00"}' in text
    assert 'branchnet_stage_seconds_count{stage="journal_commit"}' in text
    assert 'branchnet_frames_total{outcome="handled"}' in text
