"""CPU cost of the AMQP bus per message: published (and confirmed), and consumed and acked.

Needs a RabbitMQ (``--url``, default ``BRANCHNET_AMQP_URL``). Prints one JSON object: the
client process's CPU microseconds per message (``time.process_time``, the best of
``--repeat`` runs, so a busy shared machine inflates the figures less). Run::

    .venv/bin/python bench/busbench.py --url amqp://guest:guest@127.0.0.1:5672/

Nothing here asserts a time; the figures are for before/after comparisons on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import time
from collections.abc import Awaitable, Callable

from common.amqp_bus import AmqpBus
from common.bus import Delivery, Message
from common.topology import DEFAULT_EXCHANGE, QueueSpec, Topology

QUEUE = "bench.bus"
QUORUM = "bench.bus.quorum"
BODY = bytes(300)


async def _best(run: Callable[[], Awaitable[float]], repeat: int) -> float:
    return round(min([await run() for _ in range(repeat)]), 2)


async def _drain(bus: AmqpBus, queue: str) -> None:
    async def take(delivery: Delivery) -> None:
        await delivery.ack()

    while (await bus.queue_stats(queue)).messages:
        subscription = await bus.consume(queue, take, prefetch=1000)
        await asyncio.sleep(0.5)
        await subscription.cancel()


#: What is published: persistent (confirmed after the broker's fsync, for a durable queue),
#: transient (confirmed), and events (transient and not mandatory: not confirmed).
KINDS = {
    "persistent": Message(DEFAULT_EXCHANGE, QUEUE, BODY),
    "transient": Message(DEFAULT_EXCHANGE, QUEUE, BODY, transient=True),
    "event": Message(DEFAULT_EXCHANGE, QUEUE, BODY, transient=True, mandatory=False),
}


async def publish_cost(bus: AmqpBus, message: Message, *, per_call: int, count: int) -> float:
    """CPU µs per message, publishing ``count`` copies of ``message`` in calls of ``per_call``."""
    batch = [message] * per_call
    calls = max(1, count // per_call)
    started = time.process_time()
    for _ in range(calls):
        await bus.publish(batch)
    spent = time.process_time() - started
    await _drain(bus, message.routing_key)
    return spent / (calls * per_call) * 1e6


async def consume_cost(bus: AmqpBus, queue: str, *, count: int, ack_every: int) -> float:
    """CPU µs per message consumed and acked; acks go out ``ack_every`` at a time, in order,
    as a consumer that answers batches of deliveries does."""
    batch = [Message(DEFAULT_EXCHANGE, queue, BODY, transient=True)] * 100
    for _ in range(count // 100):
        await bus.publish(batch)
    done = asyncio.Event()
    held: list[Delivery] = []
    seen, started = 0, 0.0

    async def handle(delivery: Delivery) -> None:
        nonlocal seen, started
        if not seen:
            started = time.process_time()  # the consumer's setup is not per message
        seen += 1
        held.append(delivery)
        if len(held) >= ack_every or seen >= count:
            for one in held:
                await one.ack()
            held.clear()
        if seen >= count:
            done.set()

    subscription = await bus.consume(queue, handle, prefetch=max(64, ack_every))
    await done.wait()
    spent = time.process_time() - started
    await subscription.cancel()
    return spent / (count - 1) * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("BRANCHNET_AMQP_URL"))
    parser.add_argument("--count", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if not args.url:
        parser.error("--url or BRANCHNET_AMQP_URL is needed")
    bus = AmqpBus(args.url, name="busbench")
    await bus.connect()
    try:
        await bus.declare(
            Topology(
                queues=(
                    QueueSpec(QUEUE, max_length=1_000_000),
                    QueueSpec(QUORUM, quorum=True, single_active_consumer=True),
                )
            )
        )
        await _drain(bus, QUEUE)
        await _drain(bus, QUORUM)
        results: dict[str, float] = {}
        n, r = args.count, args.repeat
        for per_call in (1, 16):
            for kind, message in KINDS.items():
                count = n // (4 if per_call == 1 else 1)
                results[f"publish_{per_call}_{kind}_us"] = await _best(
                    functools.partial(publish_cost, bus, message, per_call=per_call, count=count),
                    r,
                )
        for ack_every in (1, 16):
            results[f"consume_ack_{ack_every}_us"] = await _best(
                functools.partial(consume_cost, bus, QUEUE, count=n, ack_every=ack_every), r
            )
        results["consume_quorum_ack_16_us"] = await _best(
            functools.partial(consume_cost, bus, QUORUM, count=n, ack_every=16), r
        )
        print(json.dumps(results))
    finally:
        await bus.close()


if __name__ == "__main__":
    asyncio.run(main())
