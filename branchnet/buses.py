"""Opening a bus for a node: RabbitMQ when a URL is given, else the embedded broker."""

from __future__ import annotations

from common.bus import Bus
from common.embedded_bus import EmbeddedBroker


def open_bus(amqp_url: str | None, *, embedded: EmbeddedBroker | None, name: str) -> Bus:
    """A not yet connected bus named ``name`` (the connection name the broker shows).

    Args:
        amqp_url: a RabbitMQ URL; None selects ``embedded``.
        embedded: the in-process broker the nodes of one simulation share.
        name: the node's name, e.g. ``host`` or ``branch-0001``.
    """
    if amqp_url is not None:
        from common.amqp_bus import AmqpBus

        return AmqpBus(amqp_url, name=f"branchnet-{name}")
    if embedded is None:
        raise ValueError("an embedded broker is needed when no AMQP URL is given")
    return embedded.connect()
