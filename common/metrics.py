"""Prometheus metrics and the health endpoints every node serves.

Names carry the ``branchnet_`` prefix and base units (seconds, messages). The metric objects
below are process-wide (a simulation runs every node in one process and serves one page);
nodes with counters of their own export them through a collector over their ``statistics()``.

:class:`MetricsServer` serves, on ``metrics_port``:

- ``/metrics``: the Prometheus text exposition;
- ``/livez``: 200 while the event loop answers (it serves the request);
- ``/readyz``: 200 when every readiness check registered with :meth:`MetricsServer.ready_when`
  passes, else 503 with the names of those that fail.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from common.logs import get_logger

#: Latency buckets from 0.1 ms to 10 s.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip

REQUESTS = Counter(
    "branchnet_requests",
    "Requests the host answered, by request kind and result code.",
    ["kind", "result"],
)
STAGE_SECONDS = Histogram(
    "branchnet_stage_seconds",
    "Time spent per stage of the host's work: queue_wait (per request frame, received to "
    "unpacked), host_processing, crypto and journal_commit (per batch), replication_ack.",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
REQUEST_SECONDS = Histogram(
    "branchnet_request_seconds",
    "Host latency per request: request frame received to reply frame published.",
    buckets=LATENCY_BUCKETS,
)
EVENTS = Counter(
    "branchnet_events",
    "Ops events by outcome: published (messages), dropped (buffer full or shut down).",
    ["outcome"],
)
RECONNECTS = Counter(
    "branchnet_reconnects",
    "AMQP connections re-established after a drop, by connection name.",
    ["connection"],
)
QUEUE_DEPTH = Gauge(
    "branchnet_queue_depth",
    "Messages waiting in a queue or an in-process buffer, as last sampled.",
    ["node", "queue"],
)

_log = get_logger(__name__)

ReadinessCheck = Callable[[], bool]


class MetricsServer:
    """The HTTP endpoint of one process: metrics, liveness, readiness."""

    def __init__(
        self,
        port: int,
        *,
        host: str = "0.0.0.0",  # scraped from other containers
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.port = port
        self.host = host
        self.registry = registry
        self._checks: dict[str, ReadinessCheck] = {}
        self._runner: web.AppRunner | None = None

    def ready_when(self, name: str, check: ReadinessCheck) -> None:
        """Add a readiness check; ``/readyz`` fails while any check returns False."""
        self._checks[name] = check

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/livez", self._live)
        app.router.add_get("/readyz", self._ready)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            self.port = self._runner.addresses[0][1]
        _log.info("metrics served", port=self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _live(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _ready(self, _request: web.Request) -> web.Response:
        failing = sorted(name for name, check in self._checks.items() if not _passes(check))
        status = 503 if failing else 200
        return web.json_response({"ready": not failing, "failing": failing}, status=status)


def _passes(check: ReadinessCheck) -> bool:
    try:
        return bool(check())
    except Exception:
        return False
