"""The ops side of a simulation: the dashboard on the network's own event stream.

On the embedded bus there is no MQTT, so the dashboard reads the events from the embedded
broker (:class:`~dashboard.sources.BusSource`); over RabbitMQ it subscribes over MQTT, as a
dashboard on another machine would, at ``mqtt_url`` or, by default, the MQTT listener of the
AMQP URL's host (port 1883, same user and vhost).
"""

from __future__ import annotations

import contextlib
import sys
import urllib.parse
from collections.abc import AsyncIterator

from branchnet.buses import open_bus
from branchnet.network import Network
from branchnet.observability import Exposed, start_metrics
from dashboard.server import DashboardServer, Source
from dashboard.sources import BusSource, MqttSource

MQTT_PORT = 1883


def mqtt_url_from_amqp(amqp_url: str, port: int = MQTT_PORT) -> str:
    """The MQTT URL reaching the same broker, user and vhost as ``amqp_url``."""
    parts = urllib.parse.urlsplit(amqp_url)
    vhost = urllib.parse.unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    user = urllib.parse.unquote(parts.username or "guest")
    password = urllib.parse.unquote(parts.password or "guest")
    login = user if vhost == "/" else f"{vhost}:{user}"
    quoted = urllib.parse.quote(login, safe="") + ":" + urllib.parse.quote(password, safe="")
    return f"mqtt://{quoted}@{parts.hostname}:{port}"


@contextlib.asynccontextmanager
async def network_dashboard(
    network: Network, port: int | None, *, host: str = "127.0.0.1", mqtt_url: str | None = None
) -> AsyncIterator[DashboardServer | None]:
    """Serve the dashboard for ``network`` while the block runs (nothing when port is None)."""
    if port is None:
        yield None
        return
    bus = None
    source: Source
    if network.embedded is not None:
        bus = open_bus(None, embedded=network.embedded, name="dashboard")
        await bus.connect()
        source = BusSource(bus)
    else:
        amqp_url = network.config.amqp_url
        assert amqp_url is not None
        source = MqttSource(mqtt_url or mqtt_url_from_amqp(amqp_url))
    server = DashboardServer(source, host=host, port=port)
    try:
        await server.start()
        print(f"dashboard: {server.url}", file=sys.stderr, flush=True)
        yield server
    finally:
        await server.stop()
        if bus is not None:
            await bus.close()


@contextlib.asynccontextmanager
async def network_metrics(network: Network, port: int | None) -> AsyncIterator[None]:
    """Serve one metrics and health endpoint for every node of ``network`` (none: no port)."""
    exposed = Exposed(await start_metrics(port))
    try:
        if network.host is not None:
            exposed.node("host", network.host)
        if network.crypto is not None:
            exposed.node("crypto", network.crypto)
        for branch in network.branches:
            exposed.node(f"branch-{branch.branch_id}", branch)
        yield
    finally:
        await exposed.close()
