"""Serving a node's metrics and health: the glue between nodes and :mod:`common.metrics`.

``BRANCHNET_METRICS_PORT`` (settings ``metrics_port``) turns the endpoint on for
``branchnet host|crypto|branch`` and ``branchnet simulate`` (one endpoint for the process).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from branch_node import Branch
from common.metrics import MetricsServer
from host_node import HostService
from host_node.metrics import HostCollector


class BranchCollector(Collector):
    """Branches' requests by result, timeouts and requests in flight, read at scrape time."""

    def __init__(self) -> None:
        self.branches: list[Branch] = []

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        answered = CounterMetricFamily(
            "branchnet_branch_requests",
            "Requests a branch sent and got answered, by result ('timeout' for none).",
            labels=["branch", "result"],
        )
        in_flight = GaugeMetricFamily(
            "branchnet_branch_in_flight", "Requests awaiting a reply.", labels=["branch"]
        )
        for branch in self.branches:
            stats = branch.statistics()
            for result, count in sorted(stats.by_result.items()):
                answered.add_metric([branch.branch_id, result], count)
            answered.add_metric([branch.branch_id, "timeout"], stats.timeouts)
            in_flight.add_metric([branch.branch_id], stats.in_flight)
        yield answered
        yield in_flight


async def start_metrics(port: int | None) -> MetricsServer | None:
    """Start the endpoint on ``port``; None (and nothing served) when no port is set."""
    if port is None:
        return None
    server = MetricsServer(port)
    await server.start()
    return server


class Exposed:
    """Nodes whose collectors are registered with the process registry; unregistered on close."""

    def __init__(self, server: MetricsServer | None) -> None:
        self.server = server
        self._collectors: list[Collector] = []
        self._ready: dict[str, bool] = {}
        self._branches: BranchCollector | None = None

    def _register(self, collector: Collector) -> None:
        REGISTRY.register(collector)
        self._collectors.append(collector)

    def node(self, name: str, node: object) -> None:
        """Expose ``node`` (started): its collector, and a readiness check until it stops."""
        if self.server is None:
            return
        if isinstance(node, HostService):
            self._register(HostCollector(node.statistics))
        elif isinstance(node, Branch):
            if self._branches is None:
                self._branches = BranchCollector()
                self._register(self._branches)
            self._branches.branches.append(node)
        self._ready[name] = True
        self.server.ready_when(name, lambda: self._ready.get(name, False))

    def stopping(self, name: str) -> None:
        self._ready[name] = False

    async def close(self) -> None:
        for collector in self._collectors:
            REGISTRY.unregister(collector)
        self._collectors.clear()
        if self.server is not None:
            await self.server.stop()
